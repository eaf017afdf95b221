//! The encoder forward pass without candle.
//!
//! Convolutions are *indirect convolutions* (the scheme of XNNPACK): activations are stored
//! channels-last (HWC) with the channel count padded to whole vectors, and each layer keeps, for
//! every output pixel and kernel tap, the offset of the input pixel it reads (or of a zero block
//! in the padding). A register tile of output pixels × output channels then accumulates straight
//! from the activations, with bias and ReLU fused into its store; a layer whose input has few
//! channels (an image's first) gathers its patches into a scratch matrix first, so its tiles
//! reduce over taps × channels in one run instead of a few values per tap. Written with
//! explicit SIMD and run with the widest vectors the CPU has ([`pulp`] dispatch: AVX-512,
//! AVX2+FMA, NEON).
//!
//! Why this layout: the earlier im2col + vectors-along-pixels version copied 66k values per image
//! and padded the 7×7 and 3×3 outputs of the paper's last two layers to whole vectors (31% and
//! 44% wasted work); vectors along output channels (32, 64, 128: whole vectors) waste nothing
//! and copy nothing. General GEMM libraries (nalgebra's `matrixmultiply`, the `gemm` crate)
//! allocate packing buffers on every call and ran slower at one image's sizes (docs/RESULTS.md).
//! The latent layer is a SIMD matrix-vector product; wider dense layers run as 1x1
//! convolutions whose pixels are samples (`dense`, `batch` say why). ReLU (or the spec's leaky ReLU) after every
//! layer but the latent one.
//!
//! All buffers live in a [`Workspace`] sized once from the [`EncoderSpec`], so encoding a sample
//! allocates nothing (`tests/no_alloc.rs` counts).
//!
//! The room is split by concept: `conv` holds the indirect convolution and its register tiles,
//! `dense` the matrix-vector layers, `int8` an int8 model's integer layers (quantizing, the
//! stack), `batch` many samples at once (the dense layers as one product), `kernels` which code sums their bytes and the weight layout each reads, `vnni`,
//! `avx2`, `sdot` and `portable` those kernels; `aligned` the buffers they load from;
//! `patches` the patch matrix a few-channel layer gathers;
//! `winograd` the convolutions run with fewer multiply-adds where that pays; this module builds
//! and runs the stack.

mod aligned;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod batch;
mod conv;
mod dense;
mod int8;
mod kernels;
mod patches;
mod portable;
#[cfg(target_arch = "aarch64")]
mod sdot;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod vnni;
// Only x86-64 (AVX2, AVX-512) runs it (`winograd` says why), so other targets,
// microcontrollers above all, carry none of its code.
#[cfg(target_arch = "x86_64")]
mod winograd;

use alloc::{format, string::String, vec, vec::Vec};

use dekm_shared::{ConvGeometry, EncoderSpec, Stack, names};

use aligned::Aligned;
pub use batch::{BATCH, BatchWorkspace};
use conv::{Conv, PAD_C, pool_over_pixels, to_channels_last, zero_offset};
use dense::{Dense, dense, hidden_layers};
use int8::Int8Stack;
pub use kernels::Int8Kernel;
#[cfg(target_arch = "x86_64")]
use winograd::Winograd;

use crate::quantize::Int8Tensor;

/// A missing or mis-sized weight, or a sample of the wrong length.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EncoderError {
    /// The layer specification itself is inconsistent.
    #[error("encoder spec: {0}")]
    Spec(dekm_shared::ContractError),
    /// A weight tensor is absent.
    #[error("missing tensor {0}")]
    Missing(String),
    /// A weight tensor or an input has the wrong number of values.
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        /// Tensor name or buffer.
        what: String,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// An int8 kernel asked for that cannot run here.
    #[error("int8 kernel: {0}")]
    Kernel(String),
    /// A weight is NaN or infinite.
    #[error("tensor {name}: value at index {index} is not finite")]
    NotFinite {
        /// Tensor name.
        name: String,
        /// First offending index.
        index: usize,
    },
}

/// How an f32 encoder runs its convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Convolutions {
    /// Winograd's algorithm for the layers where it saves a quarter of the multiply-adds or
    /// more on this CPU, the direct convolution for the others: what [`Encoder::new`] builds.
    /// The two round differently, within a few units in the last place.
    #[default]
    Fastest,
    /// Every layer direct, each output summed tap by tap (for comparing the two).
    Direct,
}

/// One convolution as it runs.
#[derive(Debug, Clone)]
enum ConvLayer {
    Direct(Conv),
    #[cfg(target_arch = "x86_64")]
    Winograd(Winograd),
}

impl ConvLayer {
    /// Layer `g` (exported weight `w`, bias `b`) reading activations whose channel stride is
    /// `in_stride`, with the zero block at `zero`: Winograd's algorithm where `method` allows
    /// it and it pays on this CPU, else direct.
    fn new(
        g: ConvGeometry,
        (w, b): (&[f32], &[f32]),
        activation: dekm_shared::Activation,
        (in_stride, zero): (usize, u32),
        method: Convolutions,
    ) -> Self {
        #[cfg(target_arch = "x86_64")]
        if method == Convolutions::Fastest
            && let Some(layer) = Winograd::plan(g, (w, b), activation, (in_stride, zero))
        {
            return Self::Winograd(layer);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = method;
        Self::Direct(Conv::new(g, (w, b), activation, in_stride, zero))
    }

    fn geometry(&self) -> &ConvGeometry {
        match self {
            Self::Direct(c) => &c.g,
            #[cfg(target_arch = "x86_64")]
            Self::Winograd(w) => &w.g,
        }
    }

    /// The channel stride of its output activations.
    fn out_stride(&self) -> usize {
        match self {
            Self::Direct(c) => c.out_stride,
            #[cfg(target_arch = "x86_64")]
            Self::Winograd(w) => w.out_stride,
        }
    }

    fn pixels(&self) -> usize {
        let g = self.geometry();
        g.output.height * g.output.width
    }

    /// Values of the workspace's scratch part it needs: a direct layer's patch matrix, a
    /// Winograd layer's transformed tiles.
    fn scratch_len(&self) -> usize {
        match self {
            Self::Direct(c) => c.scratch_len(),
            #[cfg(target_arch = "x86_64")]
            Self::Winograd(w) => w.scratch_len(),
        }
    }

    fn forward(&self, x: &[f32], scratch: &mut [f32], out: &mut [f32]) {
        match self {
            Self::Direct(c) => c.forward(x, scratch, out),
            #[cfg(target_arch = "x86_64")]
            Self::Winograd(w) => w.forward(x, scratch, out),
        }
    }

    /// Multiply-adds per sample of its taps, as the model defines the layer (real channels,
    /// not the padding).
    fn taps(&self) -> usize {
        let g = self.geometry();
        g.patch_len() * self.pixels() * g.output.channels
    }

    /// Multiply-adds per sample it runs: [`Self::taps`], but a Winograd layer's products.
    fn multiply_adds(&self) -> usize {
        match self {
            Self::Direct(_) => self.taps(),
            #[cfg(target_arch = "x86_64")]
            Self::Winograd(w) => {
                let g = self.geometry();
                w.products() * g.input.channels * g.output.channels
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Body {
    /// Convolutions, then dense layers on their flattened (or pooled) output, if any.
    Conv {
        convs: Vec<ConvLayer>,
        hidden: Vec<Conv>,
    },
    /// A dense stack's hidden layers.
    Dense(Vec<Conv>),
}

/// How the layers run: in f32, or in integers on an int8 model's bytes.
#[derive(Debug, Clone)]
enum Run {
    F32 {
        body: Body,
        /// The latent layer; for a convolutional body without hidden layers its weight
        /// columns are permuted from the export's CHW flattening to the padded HWC activations
        /// (with hidden layers, the first hidden layer's are).
        latent: Dense,
    },
    Int8(Int8Stack),
}

/// The exported encoder, ready to run.
#[derive(Debug, Clone)]
pub struct Encoder {
    spec: EncoderSpec,
    run: Run,
    /// Length of each f32 activation buffer, and the offset of the zero block (as many zeros
    /// as the widest layer input has channels) at its end that padded taps read.
    sizes: (usize, usize),
    /// Length of the scratch the convolutions need (0 if none does): the patch matrix a layer
    /// with few input channels gathers, a Winograd layer's transformed tiles and sums.
    scratch_len: usize,
}

/// Scratch buffers for one [`Encoder`]: two activation buffers, used in turn, the
/// convolutions' scratch (the patch matrix of a layer with few input channels, a Winograd
/// layer's transformed tiles and sums), and for an int8 encoder its byte activations and
/// integer sums (empty otherwise).
///
/// The three f32 buffers are one allocation (each part on a cache line), so a workspace large
/// enough for huge pages takes one (`encoder/aligned.rs`): on 4 KiB pages its placement, like the
/// weights', set the AVX2 encoder's speed on an AMD Zen 4.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The activation buffers `a` and `b`, then the convolutions' scratch, each part starting
    /// on a line.
    f: Aligned<f32>,
    /// The lengths of an activation buffer and of the scratch.
    lens: (usize, usize),
    q: Vec<u8>,
    acc: Aligned<i32>,
}

/// Floats in a cache line: the parts of [`Workspace::f`] start on multiples of it.
const LINE_FLOATS: usize = 16;

impl Workspace {
    /// The activation buffers and the scratch, apart, then the byte activations and the
    /// integer sums.
    fn parts(&mut self) -> ([&mut [f32]; 3], &mut [u8], &mut [i32]) {
        let (len, patch) = self.lens;
        let stride = len.next_multiple_of(LINE_FLOATS);
        let (a, rest) = self.f.split_at_mut(stride);
        let (b, p) = rest.split_at_mut(stride);
        let f = [&mut a[..len], &mut b[..len], &mut p[..patch]];
        (f, &mut self.q, &mut self.acc)
    }
}

/// The tensor `name` from `get`, copied: present, `len` values, all finite.
pub(super) fn tensor<'a>(
    get: &impl Fn(&str) -> Option<&'a [f32]>,
    name: &str,
    len: usize,
) -> Result<Vec<f32>, EncoderError> {
    checked(get, name, len).map(<[f32]>::to_vec)
}

/// The tensor `name` from `get`, checked as [`tensor`] does, in place.
pub(super) fn checked<'a>(
    get: &impl Fn(&str) -> Option<&'a [f32]>,
    name: &str,
    len: usize,
) -> Result<&'a [f32], EncoderError> {
    let t = get(name).ok_or_else(|| EncoderError::Missing(name.into()))?;
    if t.len() != len {
        return Err(EncoderError::Length {
            what: name.into(),
            expected: len,
            got: t.len(),
        });
    }
    if let Some(index) = t.iter().position(|x| !x.is_finite()) {
        return Err(EncoderError::NotFinite {
            name: name.into(),
            index,
        });
    }
    Ok(t)
}

impl Encoder {
    /// Builds the encoder of `spec` from the tensors `get` returns by export name
    /// (`encoder.conv0.weight`, ...), checking every length and that every value is finite.
    pub fn new<'a>(
        spec: &EncoderSpec,
        get: impl Fn(&str) -> Option<&'a [f32]>,
    ) -> Result<Self, EncoderError> {
        Self::with_convolutions(spec, get, Convolutions::Fastest)
    }

    /// [`Self::new`] with the convolutions run as `method` says.
    pub fn with_convolutions<'a>(
        spec: &EncoderSpec,
        get: impl Fn(&str) -> Option<&'a [f32]>,
        method: Convolutions,
    ) -> Result<Self, EncoderError> {
        spec.validate().map_err(EncoderError::Spec)?;
        let pre = spec.pre_latent_len().map_err(EncoderError::Spec)?;
        let latent = dense(&get, names::LATENT, pre, spec.latent_dim())?;
        let activation = spec.activation();
        let (body, latent, sizes, scratch_len) = match spec.stack() {
            Stack::Conv(input) => {
                let geometry = spec.conv_geometry().map_err(EncoderError::Spec)?;
                // Every activation (the image included, and a pooled summary) fits below the
                // zero block.
                let zero = geometry
                    .iter()
                    .map(|g| {
                        g.output.height * g.output.width * g.output.channels.next_multiple_of(PAD_C)
                    })
                    .fold(spec.input_len().max(pre), usize::max)
                    .max(
                        spec.conv_hidden()
                            .iter()
                            .map(|h| h.next_multiple_of(PAD_C))
                            .max()
                            .unwrap_or(0),
                    );
                // As many zeros as the widest input's padded channels: a Winograd layer reads
                // whole vectors of them.
                let widest_input = geometry
                    .iter()
                    .map(|g| g.input.channels.next_multiple_of(PAD_C))
                    .max()
                    .unwrap_or(0);
                // Tap offsets are 32-bit.
                let len = zero + widest_input;
                let zero32 = zero_offset(zero, len)?;
                let mut in_stride = input.channels;
                let mut convs = Vec::with_capacity(geometry.len());
                for (i, g) in geometry.into_iter().enumerate() {
                    let name = names::conv(i);
                    let (o, r) = (g.output.channels, g.patch_len());
                    let w = tensor(&get, &format!("{name}.weight"), o * r)?;
                    let b = tensor(&get, &format!("{name}.bias"), o)?;
                    let conv = ConvLayer::new(g, (&w, &b), activation, (in_stride, zero32), method);
                    in_stride = conv.out_stride();
                    convs.push(conv);
                }
                // The first dense layer after the convolutions (a hidden one, or the latent)
                // reads their padded HWC output; a pooled encoder's reads one mean per
                // channel, compact.
                let hwc = convs
                    .last()
                    .filter(|_| !spec.pooled())
                    .map(|c| (*c.geometry(), c.out_stride()));
                let first = |d: Dense| match hwc {
                    Some((g, stride)) => d.reading_hwc(&g, stride),
                    None => d,
                };
                let prev = spec.conv_out_len().map_err(EncoderError::Spec)?;
                let hidden = hidden_layers(&get, (prev, spec.conv_hidden()), activation, hwc)?;
                let latent = if hidden.is_empty() {
                    first(latent)
                } else {
                    latent
                };
                let scratch_len = convs.iter().map(ConvLayer::scratch_len).max().unwrap_or(0);
                (
                    Body::Conv { convs, hidden },
                    latent,
                    (len, zero),
                    scratch_len,
                )
            }
            Stack::Dense { input, hidden } => {
                let layers = hidden_layers(&get, (input, hidden), activation, None)?;
                let act = layers.iter().map(|c| c.out_stride).fold(input, usize::max);
                (Body::Dense(layers), latent, (act, act), 0)
            }
        };
        Ok(Self {
            spec: spec.clone(),
            run: Run::F32 { body, latent },
            sizes,
            scratch_len,
        })
    }

    /// Builds the encoder of an int8 model: the weights `get_q` returns (as the bundle stores
    /// them) run in integers ([`Int8Kernel`]), the biases come from `get`. Checks as
    /// [`Self::new`] does, and the scales.
    pub fn quantized<'a, 'b>(
        spec: &EncoderSpec,
        get: impl Fn(&str) -> Option<&'a [f32]>,
        get_q: impl Fn(&str) -> Option<&'b Int8Tensor>,
    ) -> Result<Self, EncoderError> {
        spec.validate().map_err(EncoderError::Spec)?;
        let stack = Int8Stack::new(spec, get, get_q)?;
        let (floats, ..) = stack.buffer_lens();
        Ok(Self {
            spec: spec.clone(),
            run: Run::Int8(stack),
            sizes: (floats, floats),
            scratch_len: 0,
        })
    }

    /// This encoder with its int8 stack run by `kernel` instead of the fastest one the CPU has
    /// (the same bits, at that kernel's speed: for comparing them). Fails for an f32 encoder
    /// and for a kernel this CPU cannot run.
    pub fn with_int8_kernel(self, kernel: Int8Kernel) -> Result<Self, EncoderError> {
        let Run::Int8(stack) = self.run else {
            return Err(EncoderError::Kernel(
                "an f32 encoder has no int8 kernel".into(),
            ));
        };
        let stack = stack.with_kernel(kernel).ok_or_else(|| {
            EncoderError::Kernel(format!("this CPU cannot run the {} kernel", kernel.name()))
        })?;
        Ok(Self {
            run: Run::Int8(stack),
            ..self
        })
    }

    /// The integer kernel an int8 encoder runs with; `None` for an f32 encoder.
    pub fn int8_kernel(&self) -> Option<Int8Kernel> {
        match &self.run {
            Run::F32 { .. } => None,
            Run::Int8(stack) => Some(stack.kernel()),
        }
    }

    /// The layer specification.
    pub fn spec(&self) -> &EncoderSpec {
        &self.spec
    }

    /// Values per (normalised) input sample.
    pub fn input_len(&self) -> usize {
        self.spec.input_len()
    }

    /// Latent dimension.
    pub fn latent_dim(&self) -> usize {
        self.spec.latent_dim()
    }

    /// Floating-point operations (two per multiply-add) of one forward pass as the model
    /// defines it (every convolution's taps), for reporting GFLOP/s against the machine's
    /// peak. Counts the layers' real channels, not the padding.
    pub fn flops_per_sample(&self) -> usize {
        self.count_flops(|c| 2 * c.taps())
    }

    /// [`Self::flops_per_sample`] as this encoder runs them: a Winograd layer's products in
    /// place of its taps (fewer; the figure an FMA rate bounds).
    pub fn executed_flops_per_sample(&self) -> usize {
        self.count_flops(|c| 2 * c.multiply_adds())
    }

    /// The forward pass's FLOPs with `conv` counting each convolution's.
    fn count_flops(&self, conv: impl Fn(&ConvLayer) -> usize) -> usize {
        let (body, latent) = match &self.run {
            Run::F32 { body, latent } => (body, latent),
            Run::Int8(stack) => return stack.flops(),
        };
        let body: usize = match body {
            Body::Conv { convs, .. } => convs.iter().map(conv).sum(),
            Body::Dense(layers) => layers
                .iter()
                .map(|c| 2 * c.g.input.channels * c.g.output.channels)
                .sum(),
        };
        // Dense layers count their trained inputs, not the padded channels they read.
        let mut prev = self.spec.conv_out_len().unwrap_or(0);
        let mut hidden = 0;
        for &h in self.spec.conv_hidden() {
            hidden += 2 * prev * h;
            prev = h;
        }
        let pre = self.spec.pre_latent_len().unwrap_or(latent.input);
        body + hidden + 2 * pre * latent.outputs()
    }

    /// Lengths of the byte and sum buffers (zero for an f32 encoder).
    fn int_lens(&self) -> (usize, usize) {
        match &self.run {
            Run::F32 { .. } => (0, 0),
            Run::Int8(stack) => {
                let (_, bytes, sums) = stack.buffer_lens();
                (bytes, sums)
            }
        }
    }

    /// Buffers for [`Self::encode`], allocated once.
    pub fn workspace(&self) -> Workspace {
        let (len, _) = self.sizes;
        let (bytes, sums) = self.int_lens();
        let stride = len.next_multiple_of(LINE_FLOATS);
        Workspace {
            f: Aligned::new(2 * stride + self.scratch_len),
            lens: (len, self.scratch_len),
            q: vec![0; bytes],
            acc: Aligned::new(sums),
        }
    }

    /// Writes the latent vector of the normalised sample `x` into `z`: the latent layer's
    /// output, its last [`EncoderSpec::softmax_tail`] values passed through a softmax.
    pub fn encode(&self, x: &[f32], ws: &mut Workspace, z: &mut [f32]) -> Result<(), EncoderError> {
        self.linear_latent(x, ws, z)?;
        dekm_shared::softmax_tail(z, self.spec.softmax_tail());
        Ok(())
    }

    /// The latent layer's output for `x`, before any softmax tail.
    fn linear_latent(
        &self,
        x: &[f32],
        ws: &mut Workspace,
        z: &mut [f32],
    ) -> Result<(), EncoderError> {
        let length = |what: &str, expected: usize, got: usize| {
            (expected != got).then(|| EncoderError::Length {
                what: what.into(),
                expected,
                got,
            })
        };
        if let Some(e) = length("input sample", self.input_len(), x.len())
            .or_else(|| length("latent buffer", self.latent_dim(), z.len()))
        {
            return Err(e);
        }
        self.fit(ws);
        let ([a, b, p], q, acc) = ws.parts();
        let (body, latent) = match &self.run {
            Run::F32 { body, latent } => (body, latent),
            Run::Int8(stack) => {
                stack.encode(x, (a, b), q, acc, z);
                return Ok(());
            }
        };
        let (mut cur, mut next) = self.features(body, x, [a, b, p]);
        for layer in body.dense() {
            layer.forward_pixels(cur, next, 1);
            core::mem::swap(&mut cur, &mut next);
        }
        latent.forward(cur, z);
        Ok(())
    }

    /// Replaces `ws` if it was made for another encoder (once; then it is reused).
    fn fit(&self, ws: &mut Workspace) {
        if ws.lens != (self.sizes.0, self.scratch_len)
            || (ws.q.len(), ws.acc.len()) != self.int_lens()
        {
            *ws = self.workspace();
        }
    }

    /// Runs what comes before the dense layers on the sample `x` (its convolutions and
    /// pooling, or nothing for a dense stack) in the workspace's buffers `[a, b, patches]`:
    /// `(cur, next)`, the buffer the first dense layer reads and the free one.
    fn features<'w>(
        &self,
        body: &Body,
        x: &[f32],
        [a, b, p]: [&'w mut [f32]; 3],
    ) -> (&'w mut [f32], &'w mut [f32]) {
        let (mut cur, mut next) = (a, b);
        let Body::Conv { convs, .. } = body else {
            cur[..x.len()].copy_from_slice(x);
            return (cur, next);
        };
        // The zero block: a workspace shared with another encoder of the same buffer length
        // may have written there.
        let zero = self.sizes.1;
        cur[zero..].fill(0.0);
        next[zero..].fill(0.0);
        match (self.spec.conv_input(), convs.is_empty()) {
            (Some(input), false) if input.channels > 1 => {
                to_channels_last(input.channels, x, cur);
            }
            // One channel, or no convolution: the latent layer reads CHW as exported.
            _ => cur[..x.len()].copy_from_slice(x),
        }
        for c in convs {
            c.forward(cur, p, next);
            core::mem::swap(&mut cur, &mut next);
        }
        if let Some(last) = convs.last().filter(|_| self.spec.pooled()) {
            let layout = (
                last.pixels(),
                last.out_stride(),
                last.geometry().output.channels,
            );
            pool_over_pixels(cur, layout, self.spec.pooling(), next);
            core::mem::swap(&mut cur, &mut next);
        }
        (cur, next)
    }
}

impl Body {
    /// The dense layers before the latent one: hidden layers after convolutions, or the
    /// dense stack.
    fn dense(&self) -> &[Conv] {
        match self {
            Self::Conv { hidden, .. } => hidden,
            Self::Dense(layers) => layers,
        }
    }
}

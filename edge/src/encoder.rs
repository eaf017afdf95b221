//! The encoder forward pass without candle.
//!
//! Convolutions are *indirect convolutions* (the scheme of XNNPACK): activations are stored
//! channels-last (HWC) with the channel count padded to whole vectors, and each layer keeps, for
//! every output pixel and kernel tap, the offset of the input pixel it reads (or of a zero block
//! in the padding). A register tile of output pixels × output channels then accumulates straight
//! from the activations, with bias and ReLU fused into its store. Written with explicit SIMD and
//! run with the widest vectors the CPU has ([`pulp`] dispatch: AVX-512, AVX2+FMA, NEON).
//!
//! Why this layout: the earlier im2col + vectors-along-pixels version copied 66k values per image
//! and padded the 7×7 and 3×3 outputs of the paper's last two layers to whole vectors (31% and
//! 44% wasted work); vectors along output channels (32, 64, 128: whole vectors) waste nothing
//! and copy nothing. General GEMM libraries (nalgebra's `matrixmultiply`, the `gemm` crate)
//! allocate packing buffers on every call and ran slower at one image's sizes (docs/RESULTS.md).
//! Dense layers are SIMD matrix-vector products. ReLU after every layer but the latent one.
//!
//! All buffers live in a [`Workspace`] sized once from the [`EncoderSpec`], so encoding a sample
//! allocates nothing (`tests/no_alloc.rs` counts).

use alloc::{format, string::String, vec, vec::Vec};

use dekm_shared::{ConvGeometry, EncoderSpec, POOL_EPS, Stack, TimePooling, names};

/// A missing or mis-sized weight, or a sample of the wrong length.
#[derive(Debug, thiserror::Error, PartialEq)]
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
    /// A weight is NaN or infinite.
    #[error("tensor {name}: value at index {index} is not finite")]
    NotFinite {
        /// Tensor name.
        name: String,
        /// First offending index.
        index: usize,
    },
}

/// `y = W x + b` with `W` row-major `[out, in]` (PyTorch's layout).
#[derive(Debug, Clone)]
struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    input: usize,
}

/// Activations store their channels padded with zeros to a multiple of this (AVX-512's 16
/// lanes), so a register tile always covers whole vectors, whatever the vector width.
const PAD_C: usize = 16;
/// Output pixels per register tile: 6 pixels × 4 vectors of channels = 24 accumulators, plus 4
/// weight vectors and one broadcast, fit AVX-512's 32 registers (AVX2 takes 2 vectors of
/// channels: 12 + 2 + 1 of its 16). [`Conv::forward`] spells out the remainders 1..=5.
const TILE_P: usize = 6;

/// One convolution with its resolved shapes, weights laid out for the register tile.
#[derive(Debug, Clone)]
struct Conv {
    g: ConvGeometry,
    /// Output channels padded to [`PAD_C`]: the channel stride of the output activations.
    out_stride: usize,
    /// `[tap, input channel, output channel]` (taps row-major over the kernel, output channels
    /// padded to `out_stride` with zeros), so one reduction step's weights are contiguous.
    weight: Vec<f32>,
    /// Bias padded with zeros, so padded channels stay zero after ReLU.
    bias: Vec<f32>,
    /// `[output pixel, tap]`: offset of the input pixel's first channel, or of the zero block
    /// where the tap falls into the padding. Computed once per model.
    taps: Vec<u32>,
}

#[derive(Debug, Clone)]
enum Body {
    Conv(Vec<Conv>),
    Dense(Vec<Dense>),
}

/// The exported encoder, ready to run.
#[derive(Debug, Clone)]
pub struct Encoder {
    spec: EncoderSpec,
    body: Body,
    /// The latent layer; for a convolutional body its weight columns are permuted from the
    /// export's CHW flattening to the padded HWC activations.
    latent: Dense,
    /// Length of each activation buffer, and the offset of the zero block (as many zeros as the
    /// widest layer input has channels) at its end that padded taps read.
    sizes: (usize, usize),
}

/// Scratch buffers for one [`Encoder`]: two activation buffers, used in turn.
#[derive(Debug, Clone)]
pub struct Workspace {
    a: Vec<f32>,
    b: Vec<f32>,
}

fn tensor<'a>(
    get: &impl Fn(&str) -> Option<&'a [f32]>,
    name: &str,
    len: usize,
) -> Result<Vec<f32>, EncoderError> {
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
    Ok(t.to_vec())
}

fn dense<'a>(
    get: &impl Fn(&str) -> Option<&'a [f32]>,
    name: &str,
    input: usize,
    output: usize,
) -> Result<Dense, EncoderError> {
    Ok(Dense {
        weight: tensor(get, &format!("{name}.weight"), output * input)?,
        bias: tensor(get, &format!("{name}.bias"), output)?,
        input,
    })
}

impl Dense {
    fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `out = W x + b`, then ReLU when `relu`.
    fn forward(&self, x: &[f32], out: &mut [f32], relu: bool) {
        let out = &mut out[..self.outputs()];
        pulp::Arch::new().dispatch(MatVec {
            w: &self.weight,
            x: &x[..self.input],
            b: &self.bias,
            out,
        });
        if relu {
            for v in out {
                *v = v.max(0.0);
            }
        }
    }

    /// The same layer reading the padded HWC activations of `g`'s output instead of the CHW
    /// flattening it was trained on: column `c·h·w + p` moves to `p·stride + c`; padded channels
    /// get zero weights.
    fn reading_hwc(self, g: &ConvGeometry, stride: usize) -> Self {
        let (channels, pixels) = (g.output.channels, g.output.height * g.output.width);
        let input = pixels * stride;
        let mut weight = vec![0.0; self.outputs() * input];
        for (row, old) in weight
            .chunks_exact_mut(input)
            .zip(self.weight.chunks_exact(self.input))
        {
            for (c, plane) in old.chunks_exact(pixels).enumerate().take(channels) {
                for (p, &w) in plane.iter().enumerate() {
                    row[p * stride + c] = w;
                }
            }
        }
        Self {
            weight,
            bias: self.bias,
            input,
        }
    }
}

/// `out = W x + b` for a row-major `W`: one SIMD dot product per row, four vectors deep to
/// hide the FMA latency. (nalgebra's general product spent 5 µs, a tenth of an image's time, on
/// the paper's 1152→10 latent layer: it is built for larger matrices.)
struct MatVec<'a> {
    w: &'a [f32],
    x: &'a [f32],
    b: &'a [f32],
    out: &'a mut [f32],
}

impl pulp::WithSimd for MatVec<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Self { w, x, b, out } = self;
        let (xv, xt) = S::as_simd_f32s(x);
        for ((o, &b), row) in out.iter_mut().zip(b).zip(w.chunks_exact(x.len())) {
            let (rv, rt) = S::as_simd_f32s(row);
            let mut acc = [simd.splat_f32s(0.0); 4];
            let (r4, x4) = (rv.chunks_exact(4), xv.chunks_exact(4));
            let tail = r4.remainder().iter().zip(x4.remainder());
            for (r, x) in r4.zip(x4) {
                for ((a, &r), &x) in acc.iter_mut().zip(r).zip(x) {
                    *a = simd.mul_add_e_f32s(r, x, *a);
                }
            }
            for (&r, &x) in tail {
                acc[0] = simd.mul_add_e_f32s(r, x, acc[0]);
            }
            let [a0, a1, a2, a3] = acc;
            let sum = simd.add_f32s(simd.add_f32s(a0, a1), simd.add_f32s(a2, a3));
            let tail: f32 = rt.iter().zip(xt).map(|(r, x)| r * x).sum();
            *o = b + simd.reduce_sum_f32s(sum) + tail;
        }
    }
}

impl Conv {
    /// Lays out the exported `[out, in, kh, kw]` weight (`[out, in, k]` for a 1-D layer, the
    /// same values) and the tap offsets of geometry `g` reading activations whose channel stride
    /// is `in_stride`; `zero` is the zero block's offset.
    fn new(g: ConvGeometry, w: &[f32], b: &[f32], in_stride: usize, zero: u32) -> Self {
        let (cin, cout, k) = (g.input.channels, g.output.channels, g.kernel);
        let out_stride = cout.next_multiple_of(PAD_C);
        let mut weight = vec![0.0; k.area() * cin * out_stride];
        for (o, filter) in w.chunks_exact(cin * k.area()).enumerate() {
            for (c, taps) in filter.chunks_exact(k.area()).enumerate() {
                for (t, &v) in taps.iter().enumerate() {
                    weight[(t * cin + c) * out_stride + o] = v;
                }
            }
        }
        let mut bias = b.to_vec();
        bias.resize(out_stride, 0.0);
        let (ih, iw) = (g.input.height, g.input.width);
        let mut taps = Vec::with_capacity(g.output.height * g.output.width * k.area());
        for oy in 0..g.output.height {
            for ox in 0..g.output.width {
                for ki in 0..k.height {
                    let iy = (oy * g.stride + ki)
                        .checked_sub(g.pad.height)
                        .filter(|&i| i < ih);
                    for kj in 0..k.width {
                        let ix = (ox * g.stride + kj)
                            .checked_sub(g.pad.width)
                            .filter(|&i| i < iw);
                        taps.push(match (iy, ix) {
                            (Some(y), Some(x)) => ((y * iw + x) * in_stride) as u32,
                            _ => zero,
                        });
                    }
                }
            }
        }
        Self {
            g,
            out_stride,
            weight,
            bias,
            taps,
        }
    }

    fn pixels(&self) -> usize {
        self.g.output.height * self.g.output.width
    }

    /// `out[pixel, channel] = relu(bias + Σ_tap Σ_c x[taps[pixel, tap] + c] · weight[tap, c, channel])`.
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        pulp::Arch::new().dispatch(ConvKernel { conv: self, x, out });
    }
}

/// [`Conv::forward`] for one instruction set.
struct ConvKernel<'a> {
    conv: &'a Conv,
    x: &'a [f32],
    out: &'a mut [f32],
}

impl pulp::WithSimd for ConvKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Self { conv, x, out } = self;
        if PAD_C.is_multiple_of(S::F32_LANES) {
            conv_tiles(simd, conv, x, out);
        } else {
            // No instruction set pulp knows has vectors that do not divide 16 lanes; should one
            // appear, stay correct with one lane rather than read past the padded channels.
            conv_tiles(pulp::Scalar::new(), conv, x, out);
        }
    }
}

/// Every register tile of one convolution, for vectors that divide [`PAD_C`].
#[inline(always)]
fn conv_tiles<S: pulp::Simd>(simd: S, conv: &Conv, x: &[f32], out: &mut [f32]) {
    let lanes = S::F32_LANES;
    let vectors = conv.out_stride / lanes;
    // AVX2 (8 lanes) has 16 registers: at most 2 vectors of channels per tile.
    let widest = if lanes == 8 { 2 } else { 4 };
    let mut v0 = 0;
    while v0 < vectors {
        let o0 = v0 * lanes;
        match (vectors - v0).min(widest) {
            4.. => {
                strip::<S, 4>(simd, conv, x, out, o0);
                v0 += 4;
            }
            2 | 3 => {
                strip::<S, 2>(simd, conv, x, out, o0);
                v0 += 2;
            }
            _ => {
                strip::<S, 1>(simd, conv, x, out, o0);
                v0 += 1;
            }
        }
    }
}

/// All output pixels for the `NV` vectors of output channels from `o0`.
#[inline(always)]
fn strip<S: pulp::Simd, const NV: usize>(
    simd: S,
    conv: &Conv,
    x: &[f32],
    out: &mut [f32],
    o0: usize,
) {
    let pixels = conv.pixels();
    let mut p0 = 0;
    while p0 + TILE_P <= pixels {
        tile::<S, TILE_P, NV>(simd, conv, x, out, p0, o0);
        p0 += TILE_P;
    }
    match pixels - p0 {
        0 => {}
        1 => tile::<S, 1, NV>(simd, conv, x, out, p0, o0),
        2 => tile::<S, 2, NV>(simd, conv, x, out, p0, o0),
        3 => tile::<S, 3, NV>(simd, conv, x, out, p0, o0),
        4 => tile::<S, 4, NV>(simd, conv, x, out, p0, o0),
        _ => tile::<S, 5, NV>(simd, conv, x, out, p0, o0),
    }
}

/// One register tile: `P` output pixels from `p0` by `NV` vectors of output channels from `o0`.
/// `P` and `NV` are constants so the accumulators live in registers.
#[inline(always)]
fn tile<S: pulp::Simd, const P: usize, const NV: usize>(
    simd: S,
    conv: &Conv,
    x: &[f32],
    out: &mut [f32],
    p0: usize,
    o0: usize,
) {
    let width = NV * S::F32_LANES;
    let (cin, stride) = (conv.g.input.channels, conv.out_stride);
    let taps = conv.g.kernel.area();
    let vectors = |s: &[f32]| -> Option<[S::f32s; NV]> {
        <&[S::f32s; NV]>::try_from(S::as_simd_f32s(s.get(o0..o0 + width)?).0)
            .ok()
            .copied()
    };
    // Channels are padded to whole vectors when the layer is built, so these views always
    // exist; the early returns only keep a broken invariant from indexing out of bounds.
    let Some(bias) = vectors(&conv.bias) else {
        debug_assert!(false, "bias slice {o0}+{width} is not whole vectors");
        return;
    };
    let mut acc = [bias; P];
    let offsets = &conv.taps[p0 * taps..(p0 + P) * taps];
    for (t, w) in conv.weight.chunks_exact(cin * stride).enumerate() {
        let mut src = [&x[..0]; P];
        for (m, s) in src.iter_mut().enumerate() {
            let at = offsets[m * taps + t] as usize;
            *s = &x[at..at + cin];
        }
        for (c, row) in w.chunks_exact(stride).enumerate() {
            let Some(w) = vectors(row) else {
                debug_assert!(false, "weight row slice {o0}+{width} is not whole vectors");
                return;
            };
            for (a, s) in acc.iter_mut().zip(&src) {
                let b = simd.splat_f32s(s[c]);
                for (a, &w) in a.iter_mut().zip(&w) {
                    *a = simd.mul_add_e_f32s(b, w, *a);
                }
            }
        }
    }
    let zero = simd.splat_f32s(0.0);
    for (m, a) in acc.iter().enumerate() {
        let dst = &mut out[(p0 + m) * stride + o0..][..width];
        for (d, &a) in S::as_mut_simd_f32s(dst).0.iter_mut().zip(a.iter()) {
            *d = simd.max_f32s(a, zero);
        }
    }
}

impl Encoder {
    /// Builds the encoder of `spec` from the tensors `get` returns by export name
    /// (`encoder.conv0.weight`, ...), checking every length and that every value is finite.
    pub fn new<'a>(
        spec: &EncoderSpec,
        get: impl Fn(&str) -> Option<&'a [f32]>,
    ) -> Result<Self, EncoderError> {
        spec.validate().map_err(EncoderError::Spec)?;
        let pre = spec.pre_latent_len().map_err(EncoderError::Spec)?;
        let latent = dense(&get, names::LATENT, pre, spec.latent_dim())?;
        let (body, latent, sizes) = match spec.stack() {
            Stack::Conv(input) => {
                let geometry = spec.conv_geometry().map_err(EncoderError::Spec)?;
                // Every activation (the image included, and a pooled summary) fits below the
                // zero block.
                let zero = geometry
                    .iter()
                    .map(|g| {
                        g.output.height * g.output.width * g.output.channels.next_multiple_of(PAD_C)
                    })
                    .fold(spec.input_len().max(pre), usize::max);
                let widest_input = geometry.iter().map(|g| g.input.channels).max().unwrap_or(0);
                // Tap offsets are 32-bit.
                let len = zero + widest_input;
                let zero32 =
                    u32::try_from(len)
                        .map(|_| zero as u32)
                        .map_err(|_| EncoderError::Length {
                            what: "activation buffer (32-bit offsets)".into(),
                            expected: u32::MAX as usize,
                            got: len,
                        })?;
                let mut in_stride = input.channels;
                let mut convs = Vec::with_capacity(geometry.len());
                for (i, g) in geometry.into_iter().enumerate() {
                    let name = names::conv(i);
                    let (o, r) = (g.output.channels, g.patch_len());
                    let w = tensor(&get, &format!("{name}.weight"), o * r)?;
                    let b = tensor(&get, &format!("{name}.bias"), o)?;
                    let conv = Conv::new(g, &w, &b, in_stride, zero32);
                    in_stride = conv.out_stride;
                    convs.push(conv);
                }
                // A pooled encoder's latent layer reads one mean per channel, compact.
                let latent = match convs.last() {
                    Some(last) if !spec.pooled() => latent.reading_hwc(&last.g, last.out_stride),
                    _ => latent,
                };
                (Body::Conv(convs), latent, (len, zero))
            }
            Stack::Dense { input, hidden } => {
                let mut prev = input;
                let mut layers = Vec::with_capacity(hidden.len());
                for (i, &h) in hidden.iter().enumerate() {
                    layers.push(dense(&get, &names::dense(i), prev, h)?);
                    prev = h;
                }
                let act = layers.iter().map(Dense::outputs).fold(input, usize::max);
                (Body::Dense(layers), latent, (act, act))
            }
        };
        Ok(Self {
            spec: spec.clone(),
            body,
            latent,
            sizes,
        })
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
        self.latent.outputs()
    }

    /// Floating-point operations (two per multiply-add) of one forward pass, for reporting
    /// GFLOP/s against the machine's peak. Counts the layers' real channels, not the padding.
    pub fn flops_per_sample(&self) -> usize {
        let body: usize = match &self.body {
            Body::Conv(convs) => convs
                .iter()
                .map(|c| {
                    let g = &c.g;
                    2 * g.patch_len() * c.pixels() * g.output.channels
                })
                .sum(),
            Body::Dense(layers) => layers.iter().map(|d| 2 * d.input * d.outputs()).sum(),
        };
        let pre = self.spec.pre_latent_len().unwrap_or(self.latent.input);
        body + 2 * pre * self.latent.outputs()
    }

    /// Buffers for [`Self::encode`], allocated once.
    pub fn workspace(&self) -> Workspace {
        let (len, _) = self.sizes;
        Workspace {
            a: vec![0.0; len],
            b: vec![0.0; len],
        }
    }

    /// Writes the latent vector of the normalised sample `x` into `z`.
    pub fn encode(&self, x: &[f32], ws: &mut Workspace, z: &mut [f32]) -> Result<(), EncoderError> {
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
        let (len, zero) = self.sizes;
        if ws.a.len() != len || ws.b.len() != len {
            // A workspace made for another encoder: replaced once, then reused.
            *ws = self.workspace();
        }
        let Workspace { a, b } = ws;
        let (mut cur, mut next) = (a, b);
        match &self.body {
            Body::Conv(convs) => {
                // The zero block: a workspace shared with another encoder of the same buffer
                // length may have written there.
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
                    c.forward(cur, next);
                    core::mem::swap(&mut cur, &mut next);
                }
                if let Some(last) = convs.last().filter(|_| self.spec.pooled()) {
                    pool_over_pixels(cur, last, self.spec.pooling(), next);
                    core::mem::swap(&mut cur, &mut next);
                }
            }
            Body::Dense(layers) => {
                cur[..x.len()].copy_from_slice(x);
                for d in layers {
                    d.forward(cur, next, true);
                    core::mem::swap(&mut cur, &mut next);
                }
            }
        }
        self.latent.forward(cur, z, false);
        Ok(())
    }
}

/// Copies the CHW sample `x` of `channels` planes into `out` as HWC, the convolutions' layout.
/// The pooling over time of a 1-D encoder: each channel's mean over the pixels of `conv`'s
/// padded HWC output `x` into `out[..c]`, and for [`TimePooling::MeanStd`] each channel's
/// standard deviation into `out[c..2c]` (two passes, so no cancellation).
fn pool_over_pixels(x: &[f32], conv: &Conv, pooling: TimePooling, out: &mut [f32]) {
    let (pixels, stride, c) = (conv.pixels(), conv.out_stride, conv.g.output.channels);
    let x = &x[..pixels * stride];
    let scale = 1.0 / pixels as f32;
    let (mean, rest) = out.split_at_mut(c);
    mean.fill(0.0);
    for px in x.chunks_exact(stride) {
        for (m, &v) in mean.iter_mut().zip(px) {
            *m += v;
        }
    }
    for m in mean.iter_mut() {
        *m *= scale;
    }
    if pooling == TimePooling::MeanStd {
        let sd = &mut rest[..c];
        sd.fill(0.0);
        for px in x.chunks_exact(stride) {
            for ((s, &v), &m) in sd.iter_mut().zip(px).zip(mean.iter()) {
                *s += (v - m) * (v - m);
            }
        }
        for s in sd {
            *s = crate::head::sqrt(*s * scale + POOL_EPS);
        }
    }
}

fn to_channels_last(channels: usize, x: &[f32], out: &mut [f32]) {
    let pixels = x.len() / channels;
    for (c, plane) in x.chunks_exact(pixels).enumerate() {
        for (p, &v) in plane.iter().enumerate() {
            out[p * channels + c] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use dekm_shared::ImageShape;

    /// Deterministic pseudo-random weights for every tensor of `spec`.
    fn weights(spec: &EncoderSpec) -> BTreeMap<String, Vec<f32>> {
        let mut state = 12345u32;
        let mut next = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        names::encoder_tensors(spec)
            .unwrap()
            .into_iter()
            .map(|t| {
                let n = t.shape.iter().product();
                (t.name, (0..n).map(|_| next() * 0.3).collect())
            })
            .collect()
    }

    /// Direct-loop reference in f64.
    fn reference(spec: &EncoderSpec, w: &BTreeMap<String, Vec<f32>>, x: &[f32]) -> Vec<f64> {
        let mut h: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        for (i, g) in spec.conv_geometry().unwrap().iter().enumerate() {
            let (wt, bs) = (
                &w[&format!("encoder.conv{i}.weight")],
                &w[&format!("encoder.conv{i}.bias")],
            );
            let (ci, ih, iw) = (g.input.channels, g.input.height, g.input.width);
            let (co, oh, ow) = (g.output.channels, g.output.height, g.output.width);
            let (kh, kw) = (g.kernel.height, g.kernel.width);
            let mut out = vec![0f64; co * oh * ow];
            for o in 0..co {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = f64::from(bs[o]);
                        for c in 0..ci {
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let iy = (oy * g.stride + ki) as isize - g.pad.height as isize;
                                    let ix = (ox * g.stride + kj) as isize - g.pad.width as isize;
                                    if iy < 0 || ix < 0 || iy as usize >= ih || ix as usize >= iw {
                                        continue;
                                    }
                                    let xv = h[(c * ih + iy as usize) * iw + ix as usize];
                                    s += xv * f64::from(wt[((o * ci + c) * kh + ki) * kw + kj]);
                                }
                            }
                        }
                        out[(o * oh + oy) * ow + ox] = s.max(0.0);
                    }
                }
            }
            h = out;
        }
        if spec.pooled()
            && let Some(g) = spec.conv_geometry().unwrap().last()
        {
            let steps = g.output.height * g.output.width;
            let mean = |c: &[f64]| c.iter().sum::<f64>() / steps as f64;
            let mut pooled: Vec<f64> = h.chunks_exact(steps).map(mean).collect();
            if spec.pooling() == TimePooling::MeanStd {
                let sd = h.chunks_exact(steps).map(|c| {
                    let m = mean(c);
                    let var = c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / steps as f64;
                    (var + f64::from(POOL_EPS)).sqrt()
                });
                pooled = pooled.clone().into_iter().chain(sd).collect();
            }
            h = pooled;
        }
        if let EncoderSpec::Dense { hidden, .. } = spec {
            for i in 0..hidden.len() {
                h = affine(
                    &w[&format!("encoder.dense{i}.weight")],
                    &w[&format!("encoder.dense{i}.bias")],
                    &h,
                )
                .into_iter()
                .map(|v| v.max(0.0))
                .collect();
            }
        }
        affine(&w["encoder.latent.weight"], &w["encoder.latent.bias"], &h)
    }

    fn affine(w: &[f32], b: &[f32], x: &[f64]) -> Vec<f64> {
        b.iter()
            .zip(w.chunks_exact(x.len()))
            .map(|(&b, row)| {
                f64::from(b)
                    + row
                        .iter()
                        .zip(x)
                        .map(|(&w, &x)| f64::from(w) * x)
                        .sum::<f64>()
            })
            .collect()
    }

    fn check(spec: EncoderSpec) {
        let w = weights(&spec);
        let enc = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
        let mut ws = enc.workspace();
        let mut z = vec![0f32; enc.latent_dim()];
        for s in 0..3 {
            let x: Vec<f32> = (0..enc.input_len())
                .map(|i| ((i * 7 + s * 13) % 17) as f32 / 17.0)
                .collect();
            enc.encode(&x, &mut ws, &mut z).unwrap();
            let want = reference(&spec, &w, &x);
            for (a, b) in z.iter().zip(&want) {
                assert!(
                    (f64::from(*a) - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn paper_conv_encoder_matches_direct_loops() {
        let shape = ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        };
        check(EncoderSpec::paper_conv(shape, 10));
    }

    #[test]
    fn odd_multichannel_images_and_dense_encoders_match_direct_loops() {
        let shape = ImageShape {
            channels: 3,
            height: 13,
            width: 13,
        };
        check(EncoderSpec::paper_conv(shape, 4));
        check(EncoderSpec::Dense {
            input: 12,
            hidden: vec![9, 7],
            latent: 3,
        });
    }

    #[test]
    fn channels_that_are_not_whole_vectors_rectangles_and_no_convolution_match_direct_loops() {
        use dekm_shared::{ConvSpec, Padding};
        let input = ImageShape {
            channels: 2,
            height: 9,
            width: 7,
        };
        let conv = |filters, kernel, stride, padding| ConvSpec {
            filters,
            kernel,
            stride,
            padding,
        };
        check(EncoderSpec::Conv {
            input,
            convs: vec![
                conv(5, 3, 1, Padding::Same),
                conv(17, 2, 2, Padding::Valid),
                conv(40, 3, 1, Padding::Same),
            ],
            latent: 3,
        });
        check(EncoderSpec::Conv {
            input,
            convs: vec![],
            latent: 4,
        });
    }

    #[test]
    fn temporal_encoders_match_direct_loops() {
        use dekm_shared::{ConvSpec, Padding, SeriesShape};
        let series = |channels, length| SeriesShape { channels, length };
        for pooling in [
            TimePooling::Flatten,
            TimePooling::Mean,
            TimePooling::MeanStd,
        ] {
            check(EncoderSpec::paper_conv1d(series(6, 100), pooling, 8));
            check(EncoderSpec::paper_conv1d(series(12, 29), pooling, 4));
            check(EncoderSpec::paper_conv1d(series(1, 3), pooling, 2));
        }
        check(EncoderSpec::Conv1d {
            input: series(3, 17),
            convs: vec![
                ConvSpec {
                    filters: 5,
                    kernel: 4,
                    stride: 3,
                    padding: Padding::Same,
                },
                ConvSpec {
                    filters: 18,
                    kernel: 2,
                    stride: 1,
                    padding: Padding::Valid,
                },
            ],
            pooling: TimePooling::Mean,
            latent: 3,
        });
    }

    /// The one-lane path (what a CPU whose vectors do not divide 16 lanes would run) equals the
    /// dispatched SIMD path layer by layer.
    #[test]
    fn one_lane_and_simd_tiles_agree() {
        let input = ImageShape {
            channels: 3,
            height: 11,
            width: 11,
        };
        let spec = EncoderSpec::paper_conv(input, 4);
        let w = weights(&spec);
        let enc = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
        let Body::Conv(convs) = &enc.body else {
            unreachable!()
        };
        let (len, zero) = enc.sizes;
        let mut x: Vec<f32> = (0..len).map(|i| (i % 13) as f32 / 13.0).collect();
        x[zero..].fill(0.0);
        for conv in convs {
            let (mut simd, mut one) = (vec![0.0; len], vec![0.0; len]);
            conv.forward(&x, &mut simd);
            conv_tiles(pulp::Scalar::new(), conv, &x, &mut one);
            for (a, b) in simd.iter().zip(&one) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
            assert!(simd.iter().any(|&v| v > 0.0));
            x = simd;
        }
    }

    #[test]
    fn missing_or_mis_sized_weights_and_inputs_are_named() {
        let spec = EncoderSpec::paper_dense(6, 2);
        let mut w = weights(&spec);
        w.remove("encoder.latent.bias");
        let err = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap_err();
        assert_eq!(err, EncoderError::Missing("encoder.latent.bias".into()));
        let mut w = weights(&spec);
        w.get_mut("encoder.dense0.weight").unwrap().pop();
        let err = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap_err();
        assert!(
            matches!(err, EncoderError::Length { ref what, .. } if what == "encoder.dense0.weight")
        );
        let mut w = weights(&spec);
        w.get_mut("encoder.dense1.bias").unwrap()[3] = f32::NAN;
        let err = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap_err();
        assert!(matches!(err, EncoderError::NotFinite { index: 3, .. }));
        let w = weights(&spec);
        let enc = Encoder::new(&spec, |n| w.get(n).map(Vec::as_slice)).unwrap();
        let mut ws = enc.workspace();
        let err = enc.encode(&[0.0; 5], &mut ws, &mut [0.0; 2]).unwrap_err();
        assert!(matches!(
            err,
            EncoderError::Length {
                expected: 6,
                got: 5,
                ..
            }
        ));
    }
}

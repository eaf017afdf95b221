//! The encoder of an int8 model run in integers: signed 8-bit weights (as the bundle stores
//! them, one scale per output channel), unsigned 8-bit activations, 32-bit sums.
//!
//! Each layer's input is quantized when it is read, over the whole sample (one scale and zero
//! point per layer and sample, from the values' range with 0 inside it, so a real zero, and the
//! padding, is exactly the zero point; after a ReLU the zero point is 0 and all 256 levels cover
//! the positive range). A layer then sums `w_q · x_q` in i32 and its output is
//! `scale_x · scale_w[o] · (Σ w_q x_q − zp · Σ w_q) + b[o]` in f32, then the activation, as the
//! f32 layer's.
//! Computing on the stored bytes rather than widening them keeps the weights 4x smaller in RAM
//! (what a microcontroller lacks) and lets a CPU with a byte dot product (AVX-512 VNNI's
//! `vpdpbusd`: 64 multiply-adds per instruction, 16 for an f32 FMA) do four times the work per
//! instruction.
//!
//! Layout: every layer is an indirect convolution as in [`super::conv`] (a dense layer is one
//! pixel with one tap), reading its input channels in groups of four bytes: weights are
//! `[tap, input channel / 4, output channel, 4]`, so one group's weights for 16 output channels
//! are one 64-byte vector and the four activation bytes of a group are one broadcast 32-bit
//! word. Input channels are padded to a multiple of 4 with zero weights.
//!
//! The integer sums are exact, and the f32 steps around them (quantizing, the epilogue) are the
//! same operations in the same order on every CPU, so an int8 model gives bit-identical latents
//! on AVX-512 VNNI, AVX2, NEON and a microcontroller; only the speed differs.

use alloc::{format, string::String, vec, vec::Vec};

use dekm_shared::{Activation, EncoderSpec, Stack, TimePooling, names};

use super::EncoderError;
use super::conv::{PAD_C, pool_over_pixels, tap_offsets, to_channels_last, zero_offset};
use super::dense::hwc_columns;
use super::kernels::{Int8Kernel, Packed};
use crate::quantize::Int8Tensor;

/// Input channels are read four bytes at a time (`vpdpbusd`'s group).
pub(super) const GROUP: usize = 4;
/// The most `u8 · i8` products one i32 sum may hold without overflowing:
/// `i32::MAX / (255 · 127)`.
const MAX_TERMS: usize = 66_311;

/// One integer layer: an indirect convolution, or a dense layer as one pixel with one tap.
#[derive(Debug, Clone)]
pub(super) struct QLayer {
    pub(super) pixels: usize,
    pub(super) taps: usize,
    /// Input channels per tap the layer was trained with (for the FLOP count; the kernels
    /// read `groups` words, and a latent layer reading padded HWC activations reads more).
    cin: usize,
    /// Input channels padded to [`GROUP`], divided by it.
    pub(super) groups: usize,
    cout: usize,
    /// Output channels padded to [`PAD_C`]: the output's pixel stride.
    pub(super) out_stride: usize,
    /// The weights, laid out for the kernel that runs them.
    pub(super) packed: Packed,
    /// Per output channel: the weight scale, and the sum of its weights (for the zero point).
    scales: Vec<f32>,
    sums: Vec<i32>,
    bias: Vec<f32>,
    /// `[pixel, tap]`: where the tap's input pixel starts in the byte activations.
    pub(super) offsets: Vec<u32>,
    /// The activation after the sums; `None` on the latent layer.
    activation: Option<Activation>,
}

/// A layer's input after quantizing: `x ≈ scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Quant {
    scale: f32,
    zero_point: u8,
}

impl QLayer {
    /// Lays out `q` (`[cout, cin, taps]` as exported) for the kernels.
    fn new(
        kernel: Int8Kernel,
        q: &Int8Tensor,
        bias: Vec<f32>,
        (cin, taps, pixels): (usize, usize, usize),
        offsets: Vec<u32>,
        activation: Option<Activation>,
    ) -> Result<Self, EncoderError> {
        let cout = bias.len();
        let groups = cin.div_ceil(GROUP);
        if groups * GROUP * taps > MAX_TERMS {
            return Err(EncoderError::Length {
                what: format!("{} (inputs per output for int8 sums)", q.name),
                expected: MAX_TERMS,
                got: groups * GROUP * taps,
            });
        }
        let out_stride = cout.next_multiple_of(PAD_C);
        let mut weight = vec![0i8; taps * groups * out_stride * GROUP];
        let mut sums = vec![0i32; cout];
        for (o, row) in q.values.chunks_exact(cin * taps).enumerate() {
            for (c, per_tap) in row.chunks_exact(taps).enumerate() {
                for (t, &v) in per_tap.iter().enumerate() {
                    weight[((t * groups + c / GROUP) * out_stride + o) * GROUP + c % GROUP] = v;
                    sums[o] += i32::from(v);
                }
            }
        }
        Ok(Self {
            pixels,
            taps,
            cin,
            groups,
            cout,
            out_stride,
            packed: Packed::new(kernel, weight, out_stride),
            scales: q.scales.clone(),
            sums,
            bias,
            offsets,
            activation,
        })
    }

    /// Byte length of the input this layer reads as one vector.
    fn input_bytes(&self) -> usize {
        self.groups * GROUP
    }

    fn flops(&self) -> usize {
        2 * self.pixels * self.taps * self.cin * self.cout
    }

    /// The i32 sums `acc[pixel · out_stride + o] = Σ_tap Σ_c w_q · x_q` of input bytes `x`.
    #[inline(always)]
    fn sums_into(&self, x: &[u8], acc: &mut [i32]) {
        self.packed.sums(self, x, acc);
    }

    /// This layer with its weights packed for `kernel`.
    fn repack(mut self, kernel: Int8Kernel) -> Self {
        self.packed = self.packed.repack(kernel, self.out_stride);
        self
    }

    /// `out[p, o] = act(scale_x · scale_w[o] · (acc − zp · Σ w) + b[o])` for the real
    /// channels, zero in the padded ones (`zp` less the kernel's activation offset: `acc` is
    /// then `Σ w (q − offset)`, and the difference the same integer).
    #[inline(always)]
    fn epilogue(&self, acc: &[i32], input: Quant, out: &mut [f32]) {
        let zp = i32::from(input.zero_point) - self.packed.activation_offset();
        let (n, s) = (self.cout, self.out_stride);
        for (a, o) in acc
            .chunks_exact(s)
            .zip(out.chunks_exact_mut(s))
            .take(self.pixels)
        {
            let (o, pad) = o.split_at_mut(n);
            for ((((o, &a), &sum), &w), &b) in o
                .iter_mut()
                .zip(&a[..n])
                .zip(&self.sums)
                .zip(&self.scales)
                .zip(&self.bias)
            {
                // Wrapping: the difference is Σ w (q − zp), within i32 when `acc` and
                // `zp · Σ w` each are (MAX_TERMS, |q − offset| ≤ 255 and |zp| ≤ 255),
                // whatever the order of the two.
                let v = a.wrapping_sub(zp.wrapping_mul(sum)) as f32 * (input.scale * w) + b;
                *o = match self.activation {
                    Some(_) if v > 0.0 => v,
                    None => v,
                    Some(Activation::Relu) => 0.0,
                    Some(a) => v * a.slope(),
                };
            }
            pad.fill(0.0);
        }
    }
}

/// The `row` input bytes each of a register tile's `P` pixels reads at tap `t` of `taps`
/// (`offsets`: the tile's `[pixel, tap]` offsets), checked once per tap rather than per group; `None` (a bug in
/// the offsets, caught by a debug assertion) when one lies past the activations.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
pub(super) fn tap_rows<'a, const P: usize>(
    x: &'a [u8],
    offsets: &[u32],
    (taps, t): (usize, usize),
    row: usize,
) -> Option<[&'a [u8]; P]> {
    let mut src = [&x[..0]; P];
    for (m, s) in src.iter_mut().enumerate() {
        let at = offsets[m * taps + t] as usize;
        let Some(bytes) = x.get(at..at + row) else {
            debug_assert!(false, "tap offset {at} past the activations");
            return None;
        };
        *s = bytes;
    }
    Some(src)
}

/// Quantizes the first `channels` values of each of `pixels` rows of `src` (row stride
/// `src_stride`) into `dst` (row stride `dst_stride`, the rest of each row set to the zero
/// point), with one scale and zero point from the values' range widened to hold 0.
///
/// The range is taken with `simd`'s vectors (a `f32::min` fold does not vectorise: its NaN
/// rule makes the order matter); the conversion is a plain loop the compiler vectorises inside
/// [`Int8Stack::encode`]'s dispatch.
#[inline(always)]
pub(super) fn quantize<S: pulp::Simd>(
    simd: S,
    src: &[f32],
    (pixels, channels, src_stride): (usize, usize, usize),
    dst: &mut [u8],
    dst_stride: usize,
) -> Quant {
    // Rows stored back to back are one slice to the loops below (a one-channel image would
    // otherwise be 784 rows of one value each, and no loop over them vectorises).
    let flat = src_stride == channels;
    let all = &src[..(pixels * channels).min(src.len())];
    let rows = || {
        let (n, stride, len) = if flat {
            (1, all.len().max(1), all.len())
        } else {
            (pixels, src_stride, channels)
        };
        src.chunks(stride)
            .take(n)
            .map(move |r| r.get(..len).unwrap_or(r))
    };
    let (mut lo, mut hi) = (simd.splat_f32s(0.0), simd.splat_f32s(0.0));
    let (mut lo1, mut hi1) = (0f32, 0f32);
    for r in rows() {
        let (head, tail) = S::as_simd_f32s(r);
        for &v in head {
            lo = simd.min_f32s(lo, v);
            hi = simd.max_f32s(hi, v);
        }
        for &v in tail {
            lo1 = if v < lo1 { v } else { lo1 };
            hi1 = if v > hi1 { v } else { hi1 };
        }
    }
    let lo = simd.reduce_min_f32s(lo).min(lo1);
    let hi = simd.reduce_max_f32s(hi).max(hi1);
    let range = hi - lo;
    let (scale, inv, zp) = if range > 0.0 && range.is_finite() {
        let inv = 255.0 / range;
        // `as u8` saturates: a zero point of -lo·inv rounded, within 0..=255.
        (range / 255.0, inv, (-lo * inv + 0.5) as u8)
    } else {
        (1.0, 1.0, 0)
    };
    let zpf = f32::from(zp);
    // `v · inv + zp` within [0, 255] (NaN to 0), rounded to the nearest byte by adding 2^23,
    // where a float's spacing is 1, and keeping the low mantissa byte: unlike `as u8` this
    // compiles to vector instructions. 0.0 maps exactly to zp.
    let byte = |v: f32| {
        let y = v * inv + zpf;
        let y = if y > 0.0 { y } else { 0.0 };
        let y = if y < 255.0 { y } else { 255.0 };
        (y + 8_388_608.0).to_bits() as u8
    };
    if flat && dst_stride == channels {
        for (d, &v) in dst.iter_mut().zip(all) {
            *d = byte(v);
        }
    } else if channels == 1 {
        let n = (pixels * dst_stride).min(dst.len());
        dst[..n].fill(zp);
        for (d, &v) in dst[..n].iter_mut().step_by(dst_stride.max(1)).zip(all) {
            *d = byte(v);
        }
    } else {
        let rows = src.chunks(src_stride).take(pixels);
        for (r, d) in rows.zip(dst.chunks_mut(dst_stride)) {
            let (d, pad) = d.split_at_mut(channels.min(d.len()));
            for (d, &v) in d.iter_mut().zip(r) {
                *d = byte(v);
            }
            pad.fill(zp);
        }
    }
    Quant {
        scale,
        zero_point: zp,
    }
}

/// How the sample enters the first layer.
#[derive(Debug, Clone, Copy)]
enum Entry {
    /// A convolution reads HWC: `channels` planes of `pixels` values.
    Image { channels: usize, pixels: usize },
    /// A dense layer (or a latent layer with no convolution) reads the values as they come.
    Vector,
}

/// The int8 encoder: its layers (the latent one last), how the sample enters and, for a pooled
/// 1-D encoder, the pooling before the latent layer.
#[derive(Debug, Clone)]
pub(super) struct Int8Stack {
    layers: Vec<QLayer>,
    entry: Entry,
    /// `(layers before the pooling, pooling)`.
    pool: Option<(usize, TimePooling)>,
    kernel: Int8Kernel,
    /// Offset of the zero block in the byte activations (padded taps read it).
    zero: usize,
    /// Lengths of the f32, byte and i32 buffers.
    lens: (usize, usize, usize),
}

/// The int8 tensor `name` from `get`: present, `rows × per_row` bytes, `rows` finite scales.
fn int8_tensor<'a>(
    get: &impl Fn(&str) -> Option<&'a Int8Tensor>,
    name: &str,
    rows: usize,
    per_row: usize,
) -> Result<&'a Int8Tensor, EncoderError> {
    let t = get(name).ok_or_else(|| EncoderError::Missing(name.into()))?;
    let length = |what: String, expected, got| EncoderError::Length {
        what,
        expected,
        got,
    };
    if t.values.len() != rows * per_row {
        return Err(length(name.into(), rows * per_row, t.values.len()));
    }
    if t.scales.len() != rows {
        return Err(length(format!("{name} scales"), rows, t.scales.len()));
    }
    if let Some(index) = t.scales.iter().position(|s| !s.is_finite()) {
        return Err(EncoderError::NotFinite {
            name: format!("{name} scales"),
            index,
        });
    }
    Ok(t)
}

impl Int8Stack {
    /// Builds the layers of `spec` from the int8 weights `get_q` and the f32 biases `get`.
    pub(super) fn new<'a, 'b>(
        spec: &EncoderSpec,
        get: impl Fn(&str) -> Option<&'a [f32]>,
        get_q: impl Fn(&str) -> Option<&'b Int8Tensor>,
    ) -> Result<Self, EncoderError> {
        let bias = |name: &str, n| super::tensor(&get, &format!("{name}.bias"), n);
        let weight = |name: &str, rows, per_row| {
            int8_tensor(&get_q, &format!("{name}.weight"), rows, per_row)
        };
        let pre = spec.pre_latent_len().map_err(EncoderError::Spec)?;
        let latent_dim = spec.latent_dim();
        let kernel = Int8Kernel::detect();
        let activation = Some(spec.activation());
        let mut layers = Vec::new();
        let (entry, pool, latent) = match spec.stack() {
            Stack::Conv(input) => {
                let geometry = spec.conv_geometry().map_err(EncoderError::Spec)?;
                // Byte strides: the image's channels padded to a group, then each layer's
                // padded output channels.
                let mut strides = vec![input.channels.next_multiple_of(GROUP)];
                strides.extend(
                    geometry
                        .iter()
                        .map(|g| g.output.channels.next_multiple_of(PAD_C)),
                );
                let zero = geometry
                    .iter()
                    .zip(&strides)
                    .map(|(g, s)| g.input.height * g.input.width * s)
                    .chain(
                        geometry
                            .last()
                            .zip(strides.last())
                            .map(|(g, s)| g.output.height * g.output.width * s),
                    )
                    .chain(spec.conv_hidden().iter().map(|h| h.next_multiple_of(PAD_C)))
                    .fold(
                        spec.input_len().max(pre).next_multiple_of(GROUP),
                        usize::max,
                    );
                // Tap offsets are 32-bit; a tap reads at most one pixel's stride.
                let widest = strides.iter().copied().fold(PAD_C, usize::max);
                let zero32 = zero_offset(zero, zero + widest)?;
                for (i, (g, &in_stride)) in geometry.iter().zip(&strides).enumerate() {
                    let name = names::conv(i);
                    let (cin, cout, taps) = (g.input.channels, g.output.channels, g.kernel.area());
                    let pixels = g.output.height * g.output.width;
                    let offsets = tap_offsets(g, in_stride, zero32);
                    layers.push(QLayer::new(
                        kernel,
                        weight(&name, cout, cin * taps)?,
                        bias(&name, cout)?,
                        (cin, taps, pixels),
                        offsets,
                        activation,
                    )?);
                }
                // The first dense layer after the convolutions (a hidden one, or the latent)
                // reads their padded HWC output.
                let first = |q: &Int8Tensor, inputs: usize| match (geometry.last(), spec.pooled()) {
                    (Some(last), false) => {
                        let rows = q.scales.len();
                        let stride = last.output.channels.next_multiple_of(PAD_C);
                        let values = hwc_columns(&q.values, inputs, last, stride);
                        Int8Tensor {
                            name: q.name.clone(),
                            shape: vec![rows, values.len() / rows.max(1)],
                            scales: q.scales.clone(),
                            values,
                        }
                    }
                    _ => q.clone(),
                };
                let mut prev = spec.conv_out_len().map_err(EncoderError::Spec)?;
                for (i, &h) in spec.conv_hidden().iter().enumerate() {
                    let name = names::dense(i);
                    let q = weight(&name, h, prev)?;
                    let q = if i == 0 { first(q, prev) } else { q.clone() };
                    let mut layer = QLayer::new(
                        kernel,
                        &q,
                        bias(&name, h)?,
                        (q.values.len() / h, 1, 1),
                        vec![0],
                        activation,
                    )?;
                    layer.cin = prev;
                    layers.push(layer);
                    prev = h;
                }
                let q = weight(names::LATENT, latent_dim, pre)?;
                let latent = if spec.conv_hidden().is_empty() {
                    first(q, pre)
                } else {
                    q.clone()
                };
                let entry = if geometry.is_empty() {
                    Entry::Vector
                } else {
                    Entry::Image {
                        channels: input.channels,
                        pixels: spec.input_len() / input.channels.max(1),
                    }
                };
                let pool = spec
                    .pooled()
                    .then_some((layers.len(), spec.pooling()))
                    .filter(|_| !geometry.is_empty());
                (entry, pool, (latent, zero))
            }
            Stack::Dense { input, hidden } => {
                let mut prev = input;
                for (i, &h) in hidden.iter().enumerate() {
                    let name = names::dense(i);
                    layers.push(QLayer::new(
                        kernel,
                        weight(&name, h, prev)?,
                        bias(&name, h)?,
                        (prev, 1, 1),
                        vec![0],
                        activation,
                    )?);
                    prev = h;
                }
                let q = weight(names::LATENT, latent_dim, pre)?.clone();
                // Every layer's input, and each output as quantized (padded to whole vectors).
                let zero = hidden
                    .iter()
                    .map(|h| h.next_multiple_of(PAD_C))
                    .fold(input.next_multiple_of(GROUP), usize::max);
                (Entry::Vector, None, (q, zero))
            }
        };
        let (q, zero) = latent;
        let inputs = q.values.len() / latent_dim.max(1);
        let mut latent = QLayer::new(
            kernel,
            &q,
            bias(names::LATENT, latent_dim)?,
            (inputs, 1, 1),
            vec![0],
            None,
        )?;
        latent.cin = pre;
        layers.push(latent);
        let floats = layers
            .iter()
            .map(|l| l.pixels * l.out_stride)
            .fold(spec.input_len().max(zero), usize::max);
        let ints = layers
            .iter()
            .map(|l| l.pixels * l.out_stride)
            .fold(0, usize::max);
        let widest = layers.iter().map(QLayer::input_bytes).fold(0, usize::max);
        Ok(Self {
            layers,
            entry,
            pool,
            kernel,
            zero,
            lens: (floats, zero + widest.max(PAD_C), ints),
        })
    }

    pub(super) fn kernel(&self) -> Int8Kernel {
        self.kernel
    }

    /// Runs with `kernel` (the same bits, at its speed), or `None` when this CPU cannot run it.
    pub(super) fn with_kernel(mut self, kernel: Int8Kernel) -> Option<Self> {
        if !kernel.runs_here() {
            return None;
        }
        self.layers = self.layers.into_iter().map(|l| l.repack(kernel)).collect();
        self.kernel = kernel;
        Some(self)
    }

    pub(super) fn flops(&self) -> usize {
        self.layers.iter().map(QLayer::flops).sum()
    }

    pub(super) fn buffer_lens(&self) -> (usize, usize, usize) {
        self.lens
    }

    /// The latent vector `z` of the normalised sample `x`; `f`, `g` are f32 buffers, `q` the
    /// bytes and `acc` the sums, all of [`Self::buffer_lens`]. Runs under [`pulp`]'s dispatch
    /// so that the quantizing, the epilogues and the portable kernel are compiled for the
    /// CPU's widest vectors.
    pub(super) fn encode(
        &self,
        x: &[f32],
        f: (&mut [f32], &mut [f32]),
        q: &mut [u8],
        acc: &mut [i32],
        z: &mut [f32],
    ) {
        struct Encode<'a, 'b> {
            stack: &'a Int8Stack,
            x: &'a [f32],
            f: (&'b mut [f32], &'b mut [f32]),
            q: &'b mut [u8],
            acc: &'b mut [i32],
            z: &'b mut [f32],
        }
        impl pulp::WithSimd for Encode<'_, '_> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: pulp::Simd>(self, simd: S) {
                let Self {
                    stack,
                    x,
                    f,
                    q,
                    acc,
                    z,
                } = self;
                stack.run(simd, x, f, q, acc, z);
            }
        }
        pulp::Arch::new().dispatch(Encode {
            stack: self,
            x,
            f,
            q,
            acc,
            z,
        });
    }

    #[inline(always)]
    fn run<S: pulp::Simd>(
        &self,
        simd: S,
        x: &[f32],
        (f, g): (&mut [f32], &mut [f32]),
        q: &mut [u8],
        acc: &mut [i32],
        z: &mut [f32],
    ) {
        let mut input = match self.entry {
            Entry::Image { channels, pixels } => {
                let stride = channels.next_multiple_of(GROUP);
                if channels > 1 {
                    to_channels_last(channels, x, f);
                    quantize(simd, f, (pixels, channels, channels), q, stride)
                } else {
                    quantize(simd, x, (pixels, 1, 1), q, stride)
                }
            }
            Entry::Vector => {
                let n = x.len();
                quantize(simd, x, (1, n, n), q, n.next_multiple_of(GROUP))
            }
        };
        let (mut cur, mut next) = (f, g);
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            if let Some((at, pooling)) = self.pool.filter(|&(at, _)| at == i)
                && let Some(prev) = i.checked_sub(1).map(|j| &self.layers[j])
            {
                // `cur` holds the last convolution's f32 output.
                pool_over_pixels(
                    cur,
                    (prev.pixels, prev.out_stride, prev.cout),
                    pooling,
                    next,
                );
                core::mem::swap(&mut cur, &mut next);
                let n = if pooling == TimePooling::MeanStd {
                    2
                } else {
                    1
                } * prev.cout;
                debug_assert_eq!(at, last);
                input = quantize(simd, cur, (1, n, n), q, n.next_multiple_of(GROUP));
            }
            // Padded taps read the zero block: the zero point of this input.
            q[self.zero..].fill(input.zero_point);
            let len = l.pixels * l.out_stride;
            l.sums_into(q, &mut acc[..len]);
            if i == last {
                l.epilogue(&acc[..len], input, &mut next[..len]);
                z.copy_from_slice(&next[..z.len()]);
            } else {
                l.epilogue(&acc[..len], input, &mut next[..len]);
                core::mem::swap(&mut cur, &mut next);
                let next_is_pool = self.pool.is_some_and(|(at, _)| at == i + 1);
                if !next_is_pool {
                    input = quantize(simd, cur, (l.pixels, l.cout, l.out_stride), q, l.out_stride);
                }
            }
        }
    }
}

//! One convolution as an indirect convolution over padded channels-last activations, its
//! register tiles for each instruction set, and the pooling over time of a 1-D encoder.

use alloc::{vec, vec::Vec};

use dekm_shared::{Activation, ConvGeometry, Extent, ImageShape, POOL_EPS, TimePooling};

use super::Aligned;
use super::patches::Patches;

/// Activations store their channels padded with zeros to a multiple of this (AVX-512's 16
/// lanes), so a register tile always covers whole vectors, whatever the vector width.
pub(super) const PAD_C: usize = 16;
/// Output pixels per register tile at most: 6 pixels × 4 vectors of channels = 24 accumulators,
/// plus 4 weight vectors and one broadcast, fit AVX-512's 32 registers (AVX2 takes 2 vectors of
/// channels: 12 + 2 + 1 of its 16). [`strip`] evens the tiles out rather than leave a remainder.
pub(super) const TILE_P: usize = 6;
/// Layers whose inputs have fewer channels than this read a gathered patch matrix instead of
/// the activations (see [`Conv::patches`]).
const GATHER_BELOW: usize = PAD_C;

/// One convolution with its resolved shapes, weights laid out for the register tile.
#[derive(Debug, Clone)]
pub(super) struct Conv {
    pub(super) g: ConvGeometry,
    /// Output channels padded to [`PAD_C`]: the channel stride of the output activations.
    pub(super) out_stride: usize,
    /// `[tap, input channel, output channel]` (taps row-major over the kernel, output channels
    /// padded to `out_stride` with zeros), so one reduction step's weights are contiguous.
    weight: Aligned<f32>,
    /// Bias padded with zeros, so padded channels stay zero after the activation.
    bias: Vec<f32>,
    /// The activation fused into the tiles' store.
    activation: Activation,
    /// For a dense layer, the output channels of each weight panel (`[panel, input channel,
    /// panel]`, the last narrower where the channels end): the widest strip the CPU's tiles
    /// run ([`simd_shape`]), so a strip reads one contiguous run of the weights, which
    /// stream from memory. 0: `weight` is `[tap, input channel, out_stride]`.
    panel: usize,
    /// `[output pixel, tap]`: offset of the input pixel's first channel, or of the zero block
    /// where the tap falls into the padding. Computed once per model.
    taps: Vec<u32>,
    /// For inputs with few channels (an image's one or three, a sensor's few): the patch
    /// matrix `[pixel, tap, channel]` gathered before the tiles run, which then read it as a
    /// single tap of `taps × channels` values. Read straight from the activations, such a
    /// layer spends each tap's setup (its pixels' offsets) on one to three multiply-adds:
    /// MNIST's first layer ran at a fifth of the FMA rate on AVX2. The weights' `[tap,
    /// channel]` order is the patch's, so the sums are the same, term for term.
    patches: Option<Patches>,
}

impl Conv {
    /// Lays out the exported `[out, in, kh, kw]` weight (`[out, in, k]` for a 1-D layer, the
    /// same values) and the tap offsets of geometry `g` reading activations whose channel stride
    /// is `in_stride`; `zero` is the zero block's offset. `activation` follows the sums.
    pub(super) fn new(
        g: ConvGeometry,
        (w, b): (&[f32], &[f32]),
        activation: Activation,
        in_stride: usize,
        zero: u32,
    ) -> Self {
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
        let taps = tap_offsets(&g, in_stride, zero);
        let patches = (cin < GATHER_BELOW).then(|| Patches::new(&g, in_stride));
        Self {
            g,
            out_stride,
            weight: weight.into(),
            bias,
            activation,
            panel: 0,
            taps,
            patches,
        }
    }

    /// The dense layer `y = act(W x + b)` (`w` row-major `[outputs, inputs]`) as a 1x1
    /// convolution whose pixels are samples: up to `samples` of them, their inputs `in_stride`
    /// values apart. One sample is one pixel, a batch is a row of them: the register tiles
    /// then hold several samples by four vectors of outputs, each weight vector loaded once
    /// for all of them, and every sample's sums run in the same order (bias, then input by
    /// input) whichever tile it falls in, so a batch has the bits of one sample at a time.
    pub(super) fn dense(
        (w, b): (&[f32], &[f32]),
        activation: Activation,
        in_stride: usize,
        samples: usize,
    ) -> Self {
        let column = |channels| ImageShape {
            channels,
            height: samples,
            width: 1,
        };
        let one = Extent {
            height: 1,
            width: 1,
        };
        let g = ConvGeometry {
            input: column(w.len() / b.len().max(1)),
            output: column(b.len()),
            kernel: one,
            stride: 1,
            pad: Extent {
                height: 0,
                width: 0,
            },
        };
        let (cin, cout) = (g.input.channels, g.output.channels);
        // Outputs padded to whole vectors of this CPU, not to 16 as activations read by
        // convolutions are: on one lane (a microcontroller) not at all.
        let (lanes, panel) = simd_shape();
        let out_stride = cout.next_multiple_of(lanes);
        // `[panel, input, output in the panel]`, straight from the `[output, input]` rows
        // into place (padded outputs stay zero).
        let mut weight = Aligned::new(cin * out_stride);
        let mut at = 0;
        for base in (0..out_stride).step_by(panel) {
            let width = panel.min(out_stride - base);
            for c in 0..cin {
                for (o, v) in (base..base + width).zip(&mut weight[at..at + width]) {
                    if o < cout {
                        *v = w[o * cin + c];
                    }
                }
                at += width;
            }
        }
        let mut bias = b.to_vec();
        bias.resize(out_stride, 0.0);
        Self {
            // No tap reads padding, so no zero block is needed.
            taps: tap_offsets(&g, in_stride, 0),
            g,
            out_stride,
            weight,
            bias,
            activation,
            panel,
            // The patch matrix is for images' few channels.
            patches: None,
        }
    }

    /// Where the weights of the strip of output channels from `o0` lie: the slice whose rows
    /// (one per tap and input channel) hold them, the row length, and the strip's first
    /// column in a row. A strip never crosses a panel: strips are at most a panel wide and
    /// start on multiples of their width.
    #[inline(always)]
    fn weight_rows(&self, o0: usize) -> (&[f32], usize, usize) {
        let panel = self.panel;
        if panel == 0 {
            return (&self.weight, self.out_stride, o0);
        }
        let base = o0 / panel * panel;
        let rows = self.weight.len() / self.out_stride;
        (
            &self.weight[base * rows..],
            panel.min(self.out_stride - base),
            o0 - base,
        )
    }

    /// Scratch values this layer needs to gather its patch matrix (0 when it reads the
    /// activations).
    pub(super) fn scratch_len(&self) -> usize {
        self.patches.as_ref().map_or(0, |p| p.len(&self.g))
    }

    pub(super) fn pixels(&self) -> usize {
        self.g.output.height * self.g.output.width
    }

    /// `out[pixel, channel] = act(bias + Σ_tap Σ_c x[taps[pixel, tap] + c] · weight[tap, c, channel])`;
    /// `scratch` holds at least [`Self::scratch_len`] values.
    pub(super) fn forward(&self, x: &[f32], scratch: &mut [f32], out: &mut [f32]) {
        let x = self.source(x, scratch);
        let pixels = self.pixels();
        pulp::Arch::new().dispatch(ConvKernel {
            conv: self,
            x,
            out,
            pixels,
        });
    }

    /// [`Self::forward`] for the first `pixels` output pixels only (the samples of a
    /// [`Self::dense`] layer), for a layer that reads its activations directly.
    pub(super) fn forward_pixels(&self, x: &[f32], out: &mut [f32], pixels: usize) {
        debug_assert!(self.patches.is_none() && pixels <= self.pixels());
        pulp::Arch::new().dispatch(ConvKernel {
            conv: self,
            x,
            out,
            pixels: pixels.min(self.pixels()),
        });
    }

    /// What the register tiles read: the activations `x`, or the patch matrix gathered from
    /// them in `scratch`.
    pub(super) fn source<'a>(&self, x: &'a [f32], scratch: &'a mut [f32]) -> &'a [f32] {
        match &self.patches {
            Some(p) => p.gather(&self.g, x, scratch),
            None => x,
        }
    }
}

/// `zero` (the zero block's offset) as a 32-bit tap offset, checking that an activation buffer
/// of `len` values is addressable with them.
pub(super) fn zero_offset(zero: usize, len: usize) -> Result<u32, super::EncoderError> {
    u32::try_from(len)
        .map(|_| zero as u32)
        .map_err(|_| super::EncoderError::Length {
            what: "activation buffer (32-bit offsets)".into(),
            expected: u32::MAX as usize,
            got: len,
        })
}

/// `[output pixel, tap]`: where each tap of geometry `g` reads, as the offset of the input
/// pixel's first channel in activations whose pixel stride is `in_stride`, or `zero` (the zero
/// block) where the tap falls into the padding. Shared by the f32 and the int8 layers.
pub(super) fn tap_offsets(g: &ConvGeometry, in_stride: usize, zero: u32) -> Vec<u32> {
    let (ih, iw, k) = (g.input.height, g.input.width, g.kernel);
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
    taps
}

/// [`Conv::forward`] for one instruction set.
struct ConvKernel<'a> {
    conv: &'a Conv,
    x: &'a [f32],
    out: &'a mut [f32],
    /// Output pixels to compute, from the first.
    pixels: usize,
}

impl pulp::WithSimd for ConvKernel<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Self {
            conv,
            x,
            out,
            pixels,
        } = self;
        if PAD_C.is_multiple_of(S::F32_LANES) {
            conv_tiles(simd, conv, x, out, pixels);
        } else {
            // No instruction set pulp knows has vectors that do not divide 16 lanes; should one
            // appear, stay correct with one lane rather than read past the padded channels.
            conv_tiles(pulp::Scalar::new(), conv, x, out, pixels);
        }
    }
}

/// Every register tile of one convolution's first `pixels` output pixels, for vectors that
/// divide [`PAD_C`].
#[inline(always)]
pub(super) fn conv_tiles<S: pulp::Simd>(
    simd: S,
    conv: &Conv,
    x: &[f32],
    out: &mut [f32],
    pixels: usize,
) {
    let lanes = S::F32_LANES;
    let vectors = conv.out_stride / lanes;
    let widest = strip_vectors::<S>();
    let mut v0 = 0;
    if pixels == 1 && conv.panel != 0 {
        v0 = one_sample(simd, conv, x, out);
    }
    while v0 < vectors {
        let o0 = v0 * lanes;
        match (vectors - v0).min(widest) {
            4.. => {
                strip::<S, 4>(simd, conv, x, out, (o0, pixels));
                v0 += 4;
            }
            2 | 3 => {
                strip::<S, 2>(simd, conv, x, out, (o0, pixels));
                v0 += 2;
            }
            _ => {
                strip::<S, 1>(simd, conv, x, out, (o0, pixels));
                v0 += 1;
            }
        }
    }
}

/// A dense layer's outputs for one sample (a single pixel), several weight panels at a time;
/// returns the first output vector it left to the strips (the panels that do not fill a group,
/// the last, narrower one).
///
/// Why: one sample's tile is one pixel by a strip's vectors, 2 accumulators with AVX2 (4 with
/// AVX-512), each a chain of dependent FMAs over thousands of inputs; the FMA's latency, not
/// the weights' bandwidth, then set the pace (a 784-500-500-2000 stack at 28.5 GFLOP/s with
/// AVX2, at parity with onnxruntime). Panels side by side give 12 (16) independent chains.
/// Every output still sums its bias and then its inputs in order, as in any tile, so a batch
/// keeps the bits of one sample at a time.
#[inline(always)]
fn one_sample<S: pulp::Simd>(simd: S, conv: &Conv, x: &[f32], out: &mut [f32]) -> usize {
    let lanes = S::F32_LANES;
    let nv = strip_vectors::<S>();
    if conv.panel != nv * lanes {
        // Weights laid out for other vectors (the one-lane path run on a layer built for
        // SIMD, as a test does): the strips read any layout.
        return 0;
    }
    let full = conv.out_stride / conv.panel;
    let mut panel = 0;
    if nv == 2 {
        while panel + 6 <= full {
            panels::<S, 6, 2>(simd, conv, x, out, panel * conv.panel);
            panel += 6;
        }
    } else if nv == 4 {
        while panel + 4 <= full {
            panels::<S, 4, 4>(simd, conv, x, out, panel * conv.panel);
            panel += 4;
        }
    }
    panel * conv.panel / lanes
}

/// `G` whole panels of `NV` vectors from output `o0`, for sample 0.
#[inline(always)]
fn panels<S: pulp::Simd, const G: usize, const NV: usize>(
    simd: S,
    conv: &Conv,
    x: &[f32],
    out: &mut [f32],
    o0: usize,
) {
    let width = NV * S::F32_LANES;
    debug_assert_eq!(width, conv.panel);
    let cin = conv.g.input.channels;
    let at = conv.taps.first().map_or(0, |&t| t as usize);
    let x = &x[at..at + cin];
    let vectors = |s: &[f32]| -> Option<[S::f32s; NV]> {
        <&[S::f32s; NV]>::try_from(S::as_simd_f32s(s.get(..width)?).0)
            .ok()
            .copied()
    };
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; NV]; G];
    // Each panel's rows as whole vectors: `[input][vector]`.
    let mut rows: [&[[S::f32s; NV]]; G] = [&[]; G];
    for (g, (a, r)) in acc.iter_mut().zip(rows.iter_mut()).enumerate() {
        let o = o0 + g * width;
        let (Some(b), (w, row, 0)) = (vectors(&conv.bias[o..]), conv.weight_rows(o)) else {
            debug_assert!(false, "panel {o} is not whole");
            return;
        };
        debug_assert_eq!(row, width);
        *a = b;
        *r = S::as_simd_f32s(&w[..cin * width]).0.as_chunks::<NV>().0;
    }
    // One bound for every read below.
    let n = rows.iter().fold(x.len(), |n, r| n.min(r.len()));
    for c in 0..n {
        let b = simd.splat_f32s(x[c]);
        for (a, r) in acc.iter_mut().zip(&rows) {
            for (a, &w) in a.iter_mut().zip(&r[c]) {
                *a = simd.mul_add_e_f32s(b, w, *a);
            }
        }
    }
    let act = Activate::new(simd, conv.activation);
    for (g, a) in acc.iter().enumerate() {
        let dst = &mut out[o0 + g * width..][..width];
        for (d, &a) in S::as_mut_simd_f32s(dst).0.iter_mut().zip(a.iter()) {
            *d = act.apply(a);
        }
    }
}

/// The first `pixels` output pixels for the `NV` vectors of output channels from `o0`, in tiles of at most
/// [`TILE_P`] pixels made as even as possible (49 pixels: four of 6 and five of 5, not eight of
/// 6 and one of 1): a tile of one or two pixels has too few accumulators to cover the FMA
/// latency, and costs nearly as long as a full one.
#[inline(always)]
fn strip<S: pulp::Simd, const NV: usize>(
    simd: S,
    conv: &Conv,
    x: &[f32],
    out: &mut [f32],
    (o0, pixels): (usize, usize),
) {
    for (p0, p) in even_tiles(pixels, TILE_P) {
        match p {
            6.. => tile::<S, TILE_P, NV>(simd, conv, x, out, p0, o0),
            5 => tile::<S, 5, NV>(simd, conv, x, out, p0, o0),
            4 => tile::<S, 4, NV>(simd, conv, x, out, p0, o0),
            3 => tile::<S, 3, NV>(simd, conv, x, out, p0, o0),
            2 => tile::<S, 2, NV>(simd, conv, x, out, p0, o0),
            _ => tile::<S, 1, NV>(simd, conv, x, out, p0, o0),
        }
    }
}

/// Vectors of output channels in the widest strip: AVX2 (8 lanes) has 16 registers, at most 2
/// vectors per tile; AVX-512 and NEON have 32, 4.
#[inline(always)]
pub(super) fn strip_vectors<S: pulp::Simd>() -> usize {
    if S::F32_LANES == 8 { 2 } else { 4 }
}

/// The lanes of this CPU's vectors as the tiles run them, and the output channels of their
/// widest strip (16 and 64 with AVX-512, 8 and 16 with AVX2, 4 and 16 with NEON, 1 and 4 on
/// one lane): a dense layer's output padding and weight panel width.
pub(super) fn simd_shape() -> (usize, usize) {
    struct Shape;
    impl pulp::WithSimd for Shape {
        type Output = (usize, usize);
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> (usize, usize) {
            if PAD_C.is_multiple_of(S::F32_LANES) {
                (S::F32_LANES, S::F32_LANES * strip_vectors::<S>())
            } else {
                // What `ConvKernel` runs then: one lane, four at a time.
                (1, 4)
            }
        }
    }
    pulp::Arch::new().dispatch(Shape)
}

/// `pixels` cut into the fewest tiles of at most `most`, as even as possible: `(first pixel,
/// pixels)` of each, the longer ones first.
#[inline(always)]
pub(super) fn even_tiles(pixels: usize, most: usize) -> impl Iterator<Item = (usize, usize)> {
    let tiles = pixels.div_ceil(most.max(1));
    // `long` tiles of `size + 1` pixels, then the rest of `size`.
    let (size, long) = (pixels / tiles.max(1), pixels % tiles.max(1));
    (0..tiles).map(move |i| (i * size + i.min(long), size + usize::from(i < long)))
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
    let stride = conv.out_stride;
    // What one reduction step reads: `cin` channels at each of `taps` offsets per pixel.
    let (cin, taps, reads) = match &conv.patches {
        Some(p) => (conv.g.kernel.area() * conv.g.input.channels, 1, &p.starts),
        None => (conv.g.input.channels, conv.g.kernel.area(), &conv.taps),
    };
    let vectors = |s: &[f32], o0: usize| -> Option<[S::f32s; NV]> {
        <&[S::f32s; NV]>::try_from(S::as_simd_f32s(s.get(o0..o0 + width)?).0)
            .ok()
            .copied()
    };
    // Channels are padded to whole vectors when the layer is built, so these views always
    // exist; the early returns only keep a broken invariant from indexing out of bounds.
    let Some(bias) = vectors(&conv.bias, o0) else {
        debug_assert!(false, "bias slice {o0}+{width} is not whole vectors");
        return;
    };
    let mut acc = [bias; P];
    let offsets = &reads[p0 * taps..(p0 + P) * taps];
    let (weight, row, col) = conv.weight_rows(o0);
    let steps = reads.len() / conv.pixels();
    for (t, w) in weight.chunks_exact(cin * row).take(steps).enumerate() {
        let mut src = [&x[..0]; P];
        for (m, s) in src.iter_mut().enumerate() {
            let at = offsets[m * taps + t] as usize;
            *s = &x[at..at + cin];
        }
        for (c, row) in w.chunks_exact(row).enumerate() {
            let Some(w) = vectors(row, col) else {
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
    let act = Activate::new(simd, conv.activation);
    for (m, a) in acc.iter().enumerate() {
        let dst = &mut out[(p0 + m) * stride + o0..][..width];
        for (d, &a) in S::as_mut_simd_f32s(dst).0.iter_mut().zip(a.iter()) {
            *d = act.apply(a);
        }
    }
}

/// An activation on whole vectors, as every f32 layer stores its sums: ReLU is `max(a, 0)`,
/// leaky ReLU `max(a, slope · a)` (the slope is below one), one `max` either way.
#[derive(Clone, Copy)]
pub(super) struct Activate<S: pulp::Simd> {
    simd: S,
    leaky: bool,
    slope: S::f32s,
    zero: S::f32s,
}

impl<S: pulp::Simd> Activate<S> {
    #[inline(always)]
    pub(super) fn new(simd: S, activation: Activation) -> Self {
        Self {
            simd,
            leaky: activation != Activation::Relu,
            slope: simd.splat_f32s(activation.slope()),
            zero: simd.splat_f32s(0.0),
        }
    }

    #[inline(always)]
    pub(super) fn apply(self, a: S::f32s) -> S::f32s {
        let floor = if self.leaky {
            self.simd.mul_f32s(a, self.slope)
        } else {
            self.zero
        };
        self.simd.max_f32s(a, floor)
    }
}

/// The pooling over time of a 1-D encoder: each of the `c` channels' mean over the `pixels` of
/// a padded HWC output `x` (pixel stride `stride`) into `out[..c]`, and for
/// [`TimePooling::MeanStd`] each channel's standard deviation into `out[c..2c]` (two passes, so
/// no cancellation).
pub(super) fn pool_over_pixels(
    x: &[f32],
    (pixels, stride, c): (usize, usize, usize),
    pooling: TimePooling,
    out: &mut [f32],
) {
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

/// Copies the CHW sample `x` of `channels` planes into `out` as HWC, the convolutions' layout.
pub(super) fn to_channels_last(channels: usize, x: &[f32], out: &mut [f32]) {
    let pixels = x.len() / channels;
    for (c, plane) in x.chunks_exact(pixels).enumerate() {
        for (p, &v) in plane.iter().enumerate() {
            out[p * channels + c] = v;
        }
    }
}

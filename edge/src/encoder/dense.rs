//! Dense layers: the latent layer's SIMD dot products (for one sample, or in register tiles
//! over a batch with the same bits), the hidden layers built as 1x1 convolutions over samples
//! (see [`hidden_layers`]), and the reordering of a layer that reads a convolution's padded
//! channels-last output.

use alloc::{format, vec, vec::Vec};

use dekm_shared::{Activation, ConvGeometry, names};

use super::conv::{Conv, PAD_C};
use super::{BATCH, EncoderError, checked, tensor};

/// `y = W x + b` with `W` row-major `[out, in]` (PyTorch's layout).
#[derive(Debug, Clone)]
pub(super) struct Dense {
    weight: Vec<f32>,
    bias: Vec<f32>,
    pub(super) input: usize,
}

/// The dense layer `name` (`name.weight`, `name.bias`) from `get`, checked.
pub(super) fn dense<'a>(
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
    pub(super) fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// `out = W x + b` (the latent layer: no activation).
    pub(super) fn forward(&self, x: &[f32], out: &mut [f32]) {
        pulp::Arch::new().dispatch(MatVec {
            w: &self.weight,
            x: &x[..self.input],
            b: &self.bias,
            out: &mut out[..self.outputs()],
        });
    }

    /// [`Self::forward`] for `n` samples at once: sample `s` reads `x.0[s · x.1..]` and writes
    /// `out.0[s · out.1..]`, with the same bits as one at a time.
    pub(super) fn forward_rows(&self, x: (&[f32], usize), n: usize, out: (&mut [f32], usize)) {
        pulp::Arch::new().dispatch(MatMat {
            w: &self.weight,
            b: &self.bias,
            input: self.input,
            x,
            n,
            out,
        });
    }

    /// The same layer reading the padded HWC activations of `g`'s output instead of the CHW
    /// flattening it was trained on: column `c·h·w + p` moves to `p·stride + c`; padded channels
    /// get zero weights.
    pub(super) fn reading_hwc(self, g: &ConvGeometry, stride: usize) -> Self {
        let weight = hwc_columns(&self.weight, self.input, g, stride);
        Self {
            input: g.output.height * g.output.width * stride,
            weight,
            bias: self.bias,
        }
    }
}

/// Values from one sample's row to the next in a batch's buffer, for a layer reading `inputs`
/// values: whole vectors, so every row starts on a cache line.
pub(super) fn row_stride(inputs: usize) -> usize {
    inputs.next_multiple_of(PAD_C)
}

/// The hidden dense layers `encoder.dense{i}` of `widths`, after an input of `inputs`
/// values, checked and built in order as the 1x1 convolutions they run as ([`Conv::dense`]):
/// the first reads rows [`row_stride`] apart (the padded HWC map of `hwc`'s convolution,
/// `(geometry, channel stride)`, when it follows convolutions), each later one its
/// predecessor's padded output. Unlike the latent layer (a few outputs: one dot product each,
/// [`MatVec`]), a hidden layer has hundreds of outputs, enough for the register tiles'
/// vectors along them, and so gains the tiles' reuse of each weight vector across a batch's
/// samples. Built from the tensors in place: a microcontroller's heap has no room for a copy.
pub(super) fn hidden_layers<'a>(
    get: &impl Fn(&str) -> Option<&'a [f32]>,
    (inputs, widths): (usize, &[usize]),
    activation: Activation,
    hwc: Option<(ConvGeometry, usize)>,
) -> Result<Vec<Conv>, EncoderError> {
    let mut layers: Vec<Conv> = Vec::with_capacity(widths.len());
    let mut prev = inputs;
    for (i, &h) in widths.iter().enumerate() {
        let name = names::dense(i);
        let w = checked(get, &format!("{name}.weight"), prev * h)?;
        let b = checked(get, &format!("{name}.bias"), h)?;
        let layer = match (layers.last(), hwc) {
            (Some(before), _) => Conv::dense((w, b), activation, before.out_stride, BATCH),
            (None, Some((g, stride))) => {
                let w = hwc_columns(w, prev, &g, stride);
                let input = g.output.height * g.output.width * stride;
                Conv::dense((&w, b), activation, row_stride(input), BATCH)
            }
            (None, None) => Conv::dense((w, b), activation, row_stride(prev), BATCH),
        };
        layers.push(layer);
        prev = h;
    }
    Ok(layers)
}

/// The row-major matrix `weight` (rows of `inputs` values, the CHW flattening of `g`'s output)
/// with its columns moved to read the padded HWC activations instead: column `c·h·w + p` moves
/// to `p·stride + c`, padded channels get zeros. For f32 and int8 weights alike.
pub(super) fn hwc_columns<T: Copy + Default>(
    weight: &[T],
    inputs: usize,
    g: &ConvGeometry,
    stride: usize,
) -> Vec<T> {
    let (channels, pixels) = (g.output.channels, g.output.height * g.output.width);
    let input = pixels * stride;
    let rows = weight.len() / inputs.max(1);
    let mut out = vec![T::default(); rows * input];
    for (row, old) in out.chunks_exact_mut(input).zip(weight.chunks_exact(inputs)) {
        for (c, plane) in old.chunks_exact(pixels).enumerate().take(channels) {
            for (p, &w) in plane.iter().enumerate() {
                row[p * stride + c] = w;
            }
        }
    }
    out
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
        for ((o, &b), row) in out.iter_mut().zip(b).zip(w.chunks_exact(x.len())) {
            let [acc] = dots::<S, 1, 1>(simd, [row], [x]);
            *o = finish(simd, acc[0], (row, x), b);
        }
    }
}

/// `R` rows' dot products with `N` vectors at once (`rows[i] · xs[j]`, all of one length), as
/// four accumulators per pair: vector `v` of the pair is added into accumulator `v mod 4` for
/// the whole groups of four, the rest into the first. The order is the same whatever `R` and
/// `N` are, so a batch's products ([`MatMat`]) have the bits of one sample's ([`MatVec`]);
/// [`finish`] adds the accumulators up and the values past the last whole vector.
#[inline(always)]
fn dots<S: pulp::Simd, const R: usize, const N: usize>(
    simd: S,
    rows: [&[f32]; R],
    xs: [&[f32]; N],
) -> [[[S::f32s; 4]; N]; R] {
    let len = rows[0].len();
    let groups = len / S::F32_LANES / 4;
    let r: [_; R] = core::array::from_fn(|i| quads::<S>(&rows[i][..len], groups));
    let x: [_; N] = core::array::from_fn(|j| quads::<S>(&xs[j][..len], groups));
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[[zero; 4]; N]; R];
    for g in 0..groups {
        for (acc, (r, _)) in acc.iter_mut().zip(&r) {
            let w = &r[g];
            for (a, (x, _)) in acc.iter_mut().zip(&x) {
                let x = &x[g];
                for q in 0..4 {
                    a[q] = simd.mul_add_e_f32s(w[q], x[q], a[q]);
                }
            }
        }
    }
    for (acc, (_, r)) in acc.iter_mut().zip(&r) {
        for (a, (_, x)) in acc.iter_mut().zip(&x) {
            for (&w, &x) in r.iter().zip(*x) {
                a[0] = simd.mul_add_e_f32s(w, x, a[0]);
            }
        }
    }
    acc
}

/// The whole vectors of `s` as `groups` groups of four, and the vectors after them.
#[inline(always)]
fn quads<S: pulp::Simd>(s: &[f32], groups: usize) -> (&[[S::f32s; 4]], &[S::f32s]) {
    let (q, rest) = S::as_simd_f32s(s).0.as_chunks::<4>();
    (&q[..groups], rest)
}

/// One output of [`dots`]' accumulators: `b` plus their sum plus the products of the values
/// past the last whole vector of `row` and `x`.
#[inline(always)]
fn finish<S: pulp::Simd>(simd: S, acc: [S::f32s; 4], (row, x): (&[f32], &[f32]), b: f32) -> f32 {
    let [a0, a1, a2, a3] = acc;
    let sum = simd.add_f32s(simd.add_f32s(a0, a1), simd.add_f32s(a2, a3));
    let rt = S::as_simd_f32s(row).1;
    let xt = S::as_simd_f32s(&x[..row.len()]).1;
    let tail: f32 = rt.iter().zip(xt).map(|(r, x)| r * x).sum();
    b + simd.reduce_sum_f32s(sum) + tail
}

/// `out[s] = W x[s] + b` for `n` samples whose rows lie `stride` values apart in `x` (and in
/// `out`, `out_stride` apart): register tiles of `R` weight rows by `N` samples, so a weight
/// row is read once for every `N` samples and stays in cache for the rest of the batch, where
/// [`MatVec`] streams the whole matrix once a sample (a dense stack of several MB runs from
/// L3 or memory). Each output has the bits [`MatVec`] gives it.
struct MatMat<'a> {
    w: &'a [f32],
    b: &'a [f32],
    input: usize,
    x: (&'a [f32], usize),
    n: usize,
    out: (&'a mut [f32], usize),
}

impl pulp::WithSimd for MatMat<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        // 24 accumulators of AVX-512's (or NEON's) 32 registers; AVX2 has 16.
        if S::F32_LANES == 8 {
            self.rows::<S, 1, 3>(simd);
        } else {
            self.rows::<S, 2, 3>(simd);
        }
    }
}

impl MatMat<'_> {
    /// Every row block of `R` rows (the last rows one by one), each over all samples.
    #[inline(always)]
    fn rows<S: pulp::Simd, const R: usize, const N: usize>(mut self, simd: S) {
        let rows = self.b.len();
        let mut r0 = 0;
        while r0 + R <= rows {
            self.samples::<S, R, N>(simd, r0);
            r0 += R;
        }
        for r in r0..rows {
            self.samples::<S, 1, N>(simd, r);
        }
    }

    /// Rows `r0..r0 + R` for every sample, `N` at a time (the last ones one by one).
    #[inline(always)]
    fn samples<S: pulp::Simd, const R: usize, const N: usize>(&mut self, simd: S, r0: usize) {
        let mut s0 = 0;
        while s0 + N <= self.n {
            self.tile::<S, R, N>(simd, r0, s0);
            s0 += N;
        }
        for s in s0..self.n {
            self.tile::<S, R, 1>(simd, r0, s);
        }
    }

    #[inline(always)]
    fn tile<S: pulp::Simd, const R: usize, const N: usize>(
        &mut self,
        simd: S,
        r0: usize,
        s0: usize,
    ) {
        let input = self.input;
        let (x, stride) = self.x;
        let rows: [&[f32]; R] = core::array::from_fn(|i| &self.w[(r0 + i) * input..][..input]);
        let xs: [&[f32]; N] = core::array::from_fn(|j| &x[(s0 + j) * stride..][..input]);
        let acc = dots::<S, R, N>(simd, rows, xs);
        let (out, out_stride) = (&mut *self.out.0, self.out.1);
        for (i, (acc, row)) in acc.iter().zip(rows).enumerate() {
            for (j, (&a, x)) in acc.iter().zip(xs).enumerate() {
                out[(s0 + j) * out_stride + r0 + i] = finish(simd, a, (row, x), self.b[r0 + i]);
            }
        }
    }
}

//! Dense layers: SIMD matrix-vector products, and the latent layer's reordering to read a
//! convolution's padded channels-last output.

use alloc::{format, vec, vec::Vec};

use dekm_shared::{Activation, ConvGeometry};

use super::{EncoderError, tensor};

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

    /// `out = W x + b`, then the `activation` if any (none on the latent layer).
    pub(super) fn forward(&self, x: &[f32], out: &mut [f32], activation: Option<Activation>) {
        let out = &mut out[..self.outputs()];
        pulp::Arch::new().dispatch(MatVec {
            w: &self.weight,
            x: &x[..self.input],
            b: &self.bias,
            out,
        });
        if let Some(a) = activation {
            for v in out {
                *v = a.apply(*v);
            }
        }
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

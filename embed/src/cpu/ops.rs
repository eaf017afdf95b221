//! The element-wise parts of a BERT layer on the CPU: bias rows, layer normalisation, the
//! exact GELU and the attention softmax, written as plain loops and compiled under [`pulp`]'s
//! dispatch so that they vectorise with the widest instructions the CPU has (AVX-512,
//! AVX2 + FMA, NEON). With the scalar `erff` and `expf` of libm these took a sixth of
//! embedding time (the profile in docs/RESULTS.md, "Texts").

use pulp::{Arch, Simd, WithSimd};

/// Runs the loop `$body` over the named values compiled for the CPU's widest instruction set.
///
/// The body sits in `with_simd`, which pulp inlines into a function built with the target's
/// features, together with every `#[inline(always)]` function it calls: that is what turns
/// `mul_add` into an FMA instruction and lets the loops vectorise. (A closure would not do:
/// it is a function of its own, compiled for the baseline CPU, where `mul_add` is a call to a
/// software `fmaf`.)
macro_rules! vectorised {
    ($($name:ident: $ty:ty = $value:expr),* => $body:block) => {{
        #[allow(non_camel_case_types)]
        struct Op<'a> {
            $($name: $ty,)*
            _life: std::marker::PhantomData<&'a ()>,
        }
        impl WithSimd for Op<'_> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: Simd>(self, _: S) {
                let Op { $($name,)* .. } = self;
                $body
            }
        }
        Arch::new().dispatch(Op { $($name: $value,)* _life: std::marker::PhantomData })
    }};
}

/// The error function, as Eigen's and XLA's float `erf` compute it: a rational function of
/// degree 13/8 on `[-4, 4]` (beyond it `erf` is ±1 in f32), within a few ulp of the exact
/// value, and branch-free so that it vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p.mul_add(x2, 2.770_681_4e-8);
    p = p.mul_add(x2, -2.101_024e-6);
    p = p.mul_add(x2, -5.692_506_4e-5);
    p = p.mul_add(x2, -7.349_906_3e-4);
    p = p.mul_add(x2, -2.9546e-3);
    p = p.mul_add(x2, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5_f32;
    q = q.mul_add(x2, -2.133_740_6e-4);
    q = q.mul_add(x2, -1.682_827e-3);
    q = q.mul_add(x2, -7.373_329_5e-3);
    q = q.mul_add(x2, -1.426_474e-2);
    x * p / q
}

/// `e^x` for `x ≤ 0` (softmax arguments after the row maximum is subtracted): `2^n · e^r` with
/// `|r| ≤ ln 2 / 2` and Cephes' degree-6 polynomial for `e^r` (about 1 ulp); below -87 the
/// result is clamped to about 1e-38, which a softmax sum cannot tell from 0.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = n.mul_add(-0.693_359_4, x);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_2e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let e = (p * r).mul_add(r, r) + 1.0;
    // n ∈ [-126, 0]: a normal power of two.
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Every `width`-wide row of `y` set to `bias` (the start a product accumulates onto).
pub(crate) fn fill_rows(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}

/// `x ← LayerNorm(x + residual)` row by row, with the mean and variance of each row as
/// torch's `LayerNorm` takes them (biased variance, `eps` inside the square root).
pub(crate) fn add_layer_norm(
    x: &mut [f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    vectorised!(x: &'a mut [f32] = x, residual: &'a [f32] = residual, gamma: &'a [f32] = gamma,
        beta: &'a [f32] = beta, eps: f32 = eps => {
        let h = gamma.len();
        for (row, res) in x.chunks_exact_mut(h).zip(residual.chunks_exact(h)) {
            for (v, r) in row.iter_mut().zip(res) {
                *v += r;
            }
            norm_row(row, gamma, beta, eps);
        }
    });
}

/// `x ← LayerNorm(x)` row by row.
pub(crate) fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    vectorised!(x: &'a mut [f32] = x, gamma: &'a [f32] = gamma, beta: &'a [f32] = beta,
        eps: f32 = eps => {
        for row in x.chunks_exact_mut(gamma.len()) {
            norm_row(row, gamma, beta, eps);
        }
    });
}

#[inline(always)]
fn norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let var = squared_deviation(row, mean) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// Lanes a reduction is spread over: the compiler keeps floating-point sums in order, so a
/// sum vectorises only when written as this many independent ones.
const LANES: usize = 16;

#[inline(always)]
fn sum(row: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder().iter().sum::<f32>();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn squared_deviation(row: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum::<f32>();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// The activation of BERT's intermediate layer, in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `x Φ(x)` with the exact normal CDF (`hidden_act: gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    pub(crate) fn apply(self, x: &mut [f32]) {
        vectorised!(act: Activation = self, x: &'a mut [f32] = x => {
            match act {
                Activation::Gelu => {
                    for v in x.iter_mut() {
                        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
                    }
                }
                Activation::GeluTanh => {
                    // tanh(u) = (1 - e^{-2|u|}) / (1 + e^{-2|u|}) with u's sign: never overflows.
                    const C: f32 = 0.797_884_6; // √(2/π)
                    for v in x.iter_mut() {
                        let u = C * (*v + 0.044_715 * *v * *v * *v);
                        let e = exp_nonpositive(-2.0 * u.abs());
                        let t = ((1.0 - e) / (1.0 + e)).copysign(u);
                        *v = 0.5 * *v * (1.0 + t);
                    }
                }
                Activation::Relu => {
                    for v in x.iter_mut() {
                        *v = v.max(0.0);
                    }
                }
            }
        });
    }
}

/// Softmax of `scale · row` for every `width`-wide row of `x`, in place.
pub(crate) fn softmax_rows(x: &mut [f32], width: usize, scale: f32) {
    vectorised!(x: &'a mut [f32] = x, width: usize = width, scale: f32 = scale => {
        for row in x.chunks_exact_mut(width) {
            let top = max(row);
            for v in row.iter_mut() {
                *v = exp_nonpositive((*v - top) * scale);
            }
            let inv = 1.0 / sum(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-20_000..=20_000).map(|i| i as f32 * 6e-4)
    }

    #[test]
    fn erf_is_within_a_few_ulp_of_libm() {
        let worst = grid()
            .map(|x| (erf(x) - libm::erf(f64::from(x)) as f32).abs())
            .fold(0f32, f32::max);
        assert!(worst < 4e-7, "{worst}");
        // Saturated, within an ulp of ±1.
        assert!((erf(9.0) - 1.0).abs() <= f32::EPSILON && erf(-9.0) == -erf(9.0));
    }

    #[test]
    fn exp_is_within_an_ulp_or_two_of_libm() {
        let worst = grid()
            .map(|x| -x.abs() * 4.0)
            .map(|x| {
                let want = libm::exp(f64::from(x));
                ((f64::from(exp_nonpositive(x)) - want) / want).abs()
            })
            .fold(0f64, f64::max);
        assert!(worst < 3e-7, "{worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-37);
    }

    #[test]
    fn activations_match_their_definitions() {
        let xs: Vec<f32> = grid().step_by(97).collect();
        let exact = |x: f32| {
            let x = f64::from(x);
            0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt()))
        };
        let tanh = |x: f32| {
            let x = f64::from(x);
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        };
        for (act, f) in [
            (Activation::Gelu, &exact as &dyn Fn(f32) -> f64),
            (Activation::GeluTanh, &tanh),
            (Activation::Relu, &|x: f32| f64::from(x.max(0.0))),
        ] {
            let mut got = xs.clone();
            act.apply(&mut got);
            for (x, g) in xs.iter().zip(&got) {
                let want = f(*x);
                assert!(
                    (f64::from(*g) - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{act:?}({x}) = {g}, want {want}"
                );
            }
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_keep_the_order() {
        let mut x = vec![1.0, 2.0, 3.0, -1e9, 0.0, 0.0, 0.0, 0.0];
        softmax_rows(&mut x, 4, 0.5);
        let e = [(-1f64).exp(), (-0.5f64).exp(), 1.0];
        let s: f64 = e.iter().sum();
        for (g, w) in x[..3].iter().zip(e) {
            assert!((f64::from(*g) - w / s).abs() < 1e-7, "{x:?}");
        }
        assert!(x[3] < 1e-37, "{x:?}");
        assert_eq!(&x[4..], [0.25; 4]);
    }

    #[test]
    fn layer_norm_centres_and_scales_each_row() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        let res = vec![1.0; 8];
        add_layer_norm(
            &mut x,
            &res,
            &[1.0, 1.0, 2.0, 2.0],
            &[0.0, 0.0, 0.0, 1.0],
            1e-12,
        );
        let inv = 1.0 / 1.25f32.sqrt();
        let want = [
            -1.5 * inv,
            -0.5 * inv,
            2.0 * 0.5 * inv,
            2.0 * 1.5 * inv + 1.0,
        ];
        for (g, w) in x[..4].iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{x:?}");
        }
        // A constant row has no spread: it becomes beta.
        assert_eq!(&x[4..], [0.0, 0.0, 0.0, 1.0]);
    }
}

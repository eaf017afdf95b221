//! Input preprocessing: the affine map from a raw sample to what the encoder sees.
//!
//! One representation serves every data kind: images use offset 0 and scale 1/255, vector data
//! uses per-feature standardisation, or per-feature centring with one shared scale when the
//! features are of one unit. The trainer fits it, the export stores it as the
//! `input.offset` / `input.scale` tensors, and the edge applies it with [`Normalizer::apply`].

use alloc::vec::Vec;

use crate::ContractError;

/// Per-feature `x' = (x - offset) * scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalizer {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

impl Normalizer {
    /// Builds a normaliser, rejecting mismatched lengths and non-finite values.
    pub fn new(offset: Vec<f32>, scale: Vec<f32>) -> Result<Self, ContractError> {
        if offset.len() != scale.len() {
            return Err(ContractError::LengthMismatch {
                what: "normaliser scale",
                expected: offset.len(),
                got: scale.len(),
            });
        }
        check_finite("normaliser offset", &offset)?;
        check_finite("normaliser scale", &scale)?;
        Ok(Self { offset, scale })
    }

    /// Values as they are: for rows that are directions (unit-length sentence embeddings),
    /// which are compared by angle; standardising each feature would weigh the features by
    /// their spread rather than as the embedding model does.
    pub fn identity(len: usize) -> Self {
        Self {
            offset: alloc::vec![0.0; len],
            scale: alloc::vec![1.0; len],
        }
    }

    /// Pixel data stored as 0..=255: scale to `[0, 1]`.
    pub fn pixels(len: usize) -> Self {
        Self {
            offset: alloc::vec![0.0; len],
            scale: alloc::vec![1.0 / 255.0; len],
        }
    }

    /// Per-feature standardisation fitted on row-major `xs` with `dim` columns; a constant
    /// feature keeps scale 1 so it maps to 0 instead of dividing by zero.
    pub fn standardize(xs: &[f32], dim: usize) -> Self {
        let n = xs.len().checked_div(dim).unwrap_or(0);
        let mut mean = alloc::vec![0f64; dim];
        let mut var = alloc::vec![0f64; dim];
        for row in xs.chunks_exact(dim.max(1)).take(n) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        for row in xs.chunks_exact(dim.max(1)).take(n) {
            for ((v, &x), m) in var.iter_mut().zip(row).zip(&mean) {
                *v += (f64::from(x) - m) * (f64::from(x) - m);
            }
        }
        let scale = var
            .iter()
            .map(|v| {
                let sd = libm_sqrt(v / n.max(1) as f64);
                if sd > 1e-12 { (1.0 / sd) as f32 } else { 1.0 }
            })
            .collect();
        Self {
            offset: mean.iter().map(|&m| m as f32).collect(),
            scale,
        }
    }

    /// Per-feature centring with one scale for every feature (the inverse of the root mean
    /// square of the centred values), for features of one unit such as pixels: a feature that
    /// barely varies stays small instead of being blown up to unit spread as
    /// [`Self::standardize`] would (a border pixel lit in a few images would reach z-scores
    /// near 100). All-constant data keep scale 1.
    pub fn standardize_jointly(xs: &[f32], dim: usize) -> Self {
        let per_feature = Self::standardize(xs, dim);
        let n = xs.len().checked_div(dim).unwrap_or(0);
        let mut sum = 0f64;
        for row in xs.chunks_exact(dim.max(1)).take(n) {
            for (&x, &m) in row.iter().zip(&per_feature.offset) {
                sum += (f64::from(x) - f64::from(m)) * (f64::from(x) - f64::from(m));
            }
        }
        let rms = libm_sqrt(sum / (n * dim).max(1) as f64);
        let scale = if rms > 1e-12 { (1.0 / rms) as f32 } else { 1.0 };
        Self {
            scale: alloc::vec![scale; dim],
            offset: per_feature.offset,
        }
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.offset.len()
    }

    /// True for a zero-feature normaliser.
    pub fn is_empty(&self) -> bool {
        self.offset.is_empty()
    }

    /// Offsets, one per feature.
    pub fn offset(&self) -> &[f32] {
        &self.offset
    }

    /// Scales, one per feature.
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// Normalises one raw sample into `out`, rejecting wrong lengths and NaN/Inf.
    pub fn apply(&self, raw: &[f32], out: &mut [f32]) -> Result<(), ContractError> {
        for (what, got) in [("sample", raw.len()), ("output buffer", out.len())] {
            if got != self.len() {
                return Err(ContractError::LengthMismatch {
                    what,
                    expected: self.len(),
                    got,
                });
            }
        }
        check_finite("sample", raw)?;
        for (((o, &x), &m), &s) in out.iter_mut().zip(raw).zip(&self.offset).zip(&self.scale) {
            *o = (x - m) * s;
        }
        Ok(())
    }
}

/// Fails on the first NaN or infinite value.
pub fn check_finite(what: &'static str, xs: &[f32]) -> Result<(), ContractError> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(ContractError::NotFinite { what, index }),
        None => Ok(()),
    }
}

/// `f64::sqrt` is not in `core`; Newton's method is exact enough for a standard deviation.
fn libm_sqrt(x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let mut r = if x > 1.0 { x } else { 1.0 };
    for _ in 0..64 {
        let next = 0.5 * (r + x / r);
        if (next - r).abs() <= f64::EPSILON * r {
            return next;
        }
        r = next;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joint_standardisation_keeps_the_features_relative_spread() {
        // Feature 0 spreads over ±2, feature 1 over ±0.2, feature 2 is constant.
        let xs = [2.0, 0.2, 5.0, -2.0, -0.2, 5.0];
        let n = Normalizer::standardize_jointly(&xs, 3);
        assert_eq!(n.offset(), &[0.0, 0.0, 5.0]);
        // Mean square of the centred values: (4 + 0.04 + 0) * 2 / 6.
        let want = 1.0 / (4.04f32 / 3.0).sqrt();
        for s in n.scale() {
            assert!((s - want).abs() < 1e-6, "{s} vs {want}");
        }
        let mut out = [0.0; 3];
        n.apply(&xs[..3], &mut out).unwrap();
        assert!((out[0] / out[1] - 10.0).abs() < 1e-4, "{out:?}");
        assert_eq!(
            Normalizer::standardize_jointly(&[1.0, 1.0], 2).scale(),
            &[1.0, 1.0]
        );
    }

    #[test]
    fn standardize_centres_and_scales_each_feature() {
        let xs = [1.0, 10.0, 3.0, 10.0, 5.0, 10.0];
        let n = Normalizer::standardize(&xs, 2);
        let mut out = [0.0; 2];
        n.apply(&[5.0, 10.0], &mut out).unwrap();
        let sd = (8.0f32 / 3.0).sqrt();
        assert!((out[0] - 2.0 / sd).abs() < 1e-6, "{out:?}");
        assert_eq!(out[1], 0.0, "constant feature maps to 0");
    }

    #[test]
    fn apply_rejects_wrong_length_and_nan() {
        let n = Normalizer::pixels(3);
        let mut out = [0.0; 3];
        assert_eq!(
            n.apply(&[1.0, 2.0], &mut out),
            Err(ContractError::LengthMismatch {
                what: "sample",
                expected: 3,
                got: 2
            })
        );
        assert_eq!(
            n.apply(&[1.0, f32::NAN, 2.0], &mut out),
            Err(ContractError::NotFinite {
                what: "sample",
                index: 1
            })
        );
    }

    #[test]
    fn sqrt_matches_std() {
        for x in [1e-9, 0.25, 2.0, 1e6] {
            assert!((libm_sqrt(x) - x.sqrt()).abs() <= 1e-12 * x.sqrt().max(1.0));
        }
    }
}

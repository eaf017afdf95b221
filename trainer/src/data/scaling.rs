//! How the features of a vector data set are scaled before the encoder, chosen from the data.
//!
//! Tabular features come in units of their own (a wine's proline in mg/l beside its hue), so
//! each is standardised on its own. Features of one unit (pixels of images given as vectors,
//! lengths all in cm) are not: standardising a border pixel that is 0 in nearly every image
//! blows its rare values up to z-scores near 100, and they dominate the autoencoder's loss
//! (MNIST's 70,000 images as vectors clustered at ACC 0.54 that way, docs/RESULTS.md). Those
//! are centred per feature and scaled by one shared spread, as the DEC family scales pixels.
//! Unit-length rows (sentence embeddings) are directions and stay as they are.

use dekm_shared::Normalizer;
use serde::Serialize;

/// Largest ratio of the widest feature range to the median one for which the features count
/// as one unit. Pixels: 1 (most reach 0..255); iris (all in cm): 2.5; wine: 440.
pub const ONE_UNIT_MAX_RATIO: f64 = 10.0;

/// The scaling chosen for a vector data set, with the figure it was chosen by.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "scaling", rename_all = "kebab-case")]
pub enum VectorScaling {
    /// Rows of unit length: kept as they are.
    UnitRows,
    /// Each feature standardised on its own.
    PerFeature {
        /// Widest feature range over the median range.
        range_ratio: f64,
    },
    /// Centred per feature, one shared scale.
    Joint {
        /// Widest feature range over the median range.
        range_ratio: f64,
    },
}

impl VectorScaling {
    /// The scaling for row-major `xs` with `dim` features.
    pub fn choose(xs: &[f32], dim: usize) -> Self {
        if super::unit_rows(xs, dim) {
            return Self::UnitRows;
        }
        let range_ratio = range_ratio(xs, dim);
        if range_ratio <= ONE_UNIT_MAX_RATIO {
            Self::Joint { range_ratio }
        } else {
            Self::PerFeature { range_ratio }
        }
    }

    /// The normaliser this scaling fits on `xs`.
    pub fn normalizer(self, xs: &[f32], dim: usize) -> Normalizer {
        match self {
            Self::UnitRows => Normalizer::identity(dim),
            Self::PerFeature { .. } => Normalizer::standardize(xs, dim),
            Self::Joint { .. } => Normalizer::standardize_jointly(xs, dim),
        }
    }

    /// One line for `dekm train`: what was chosen and why.
    pub fn explain(self) -> String {
        match self {
            Self::UnitRows => "features kept as they are: every row has unit length".into(),
            Self::PerFeature { range_ratio } => format!(
                "features standardised one by one: their ranges differ (widest {range_ratio:.1}x \
                 the median, over {ONE_UNIT_MAX_RATIO})"
            ),
            Self::Joint { range_ratio } => format!(
                "features centred and scaled together: their ranges are alike (widest \
                 {range_ratio:.1}x the median, at most {ONE_UNIT_MAX_RATIO}), one unit"
            ),
        }
    }
}

/// The widest range (max − min) of the features that vary over their median range; infinite
/// with fewer than two varying features (nothing to compare: standardise).
fn range_ratio(xs: &[f32], dim: usize) -> f64 {
    if dim == 0 || xs.len() < dim {
        return f64::INFINITY;
    }
    let mut lo = xs[..dim].to_vec();
    let mut hi = lo.clone();
    for row in xs.chunks_exact(dim) {
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
            *l = l.min(v);
            *h = h.max(v);
        }
    }
    let mut ranges: Vec<f64> = lo
        .iter()
        .zip(&hi)
        .map(|(l, h)| f64::from(*h) - f64::from(*l))
        .filter(|r| *r > 0.0)
        .collect();
    if ranges.len() < 2 {
        return f64::INFINITY;
    }
    ranges.sort_by(f64::total_cmp);
    ranges[ranges.len() - 1] / ranges[ranges.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_of_one_unit_are_scaled_together_and_mixed_units_one_by_one() {
        // Pixel-like: ranges 255, 255, 200, 3 (a border pixel), and a constant one.
        let pixels = [0.0, 0.0, 0.0, 0.0, 7.0, 255.0, 255.0, 200.0, 3.0, 7.0];
        let s = VectorScaling::choose(&pixels, 5);
        assert_eq!(s, VectorScaling::Joint { range_ratio: 1.0 });
        let n = s.normalizer(&pixels, 5);
        assert!(n.scale().windows(2).all(|w| w[0] == w[1]));
        // Mixed units: a range of 1,000 beside ranges near 1.
        let mixed = [0.0, 0.0, 0.0, 1000.0, 1.0, 2.0];
        let s = VectorScaling::choose(&mixed, 3);
        assert_eq!(s, VectorScaling::PerFeature { range_ratio: 500.0 });
        assert!(s.explain().contains("one by one"));
        // One varying feature: nothing to compare.
        assert!(matches!(
            VectorScaling::choose(&[0.0, 1.0, 5.0, 1.0], 2),
            VectorScaling::PerFeature { .. }
        ));
        // Directions stay directions.
        assert_eq!(
            VectorScaling::choose(&[0.6, 0.8, 1.0, 0.0], 2),
            VectorScaling::UnitRows
        );
    }

    #[test]
    fn the_choice_is_recorded_with_its_figure() {
        let json = serde_json::to_string(&VectorScaling::Joint { range_ratio: 1.5 }).unwrap();
        assert_eq!(json, r#"{"scaling":"joint","range_ratio":1.5}"#);
    }
}

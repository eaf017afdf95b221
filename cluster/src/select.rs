//! Choosing k: k-means for every k in a range, with its inertia (the elbow curve, whose knee is
//! estimated with the Kneedle method of Satopää et al., 2011) and its mean silhouette; the
//! recommendation is the k with the best silhouette, the knee is reported beside it.

use crate::internal::{PairOptions, silhouette};
use crate::kmeans::KMeansConfig;
use crate::{ClusterError, Fit, Points};

/// One k's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KScore {
    /// Number of clusters.
    pub k: usize,
    /// k-means inertia (sum of squared distances to the centres).
    pub inertia: f64,
    /// Mean silhouette (`None` for k = 1, where it is undefined).
    pub silhouette: Option<f64>,
}

/// The scan and what it suggests.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// One entry per k, increasing.
    pub scores: Vec<KScore>,
    /// Knee of the inertia curve, when the curve has one.
    pub knee: Option<usize>,
    /// k with the highest mean silhouette.
    pub best_silhouette: Option<usize>,
    /// Silhouettes were computed on a sample of this many points.
    pub sampled: Option<usize>,
}

/// Runs k-means (`restarts` k-means++ seedings) for every k in `ks`.
pub fn select_k(
    p: &Points<'_>,
    ks: std::ops::RangeInclusive<usize>,
    restarts: usize,
    seed: u64,
    pairs: &PairOptions,
) -> Result<Selection, ClusterError> {
    let (lo, hi) = (*ks.start(), *ks.end());
    if lo == 0 || lo > hi || hi > p.len() {
        return Err(ClusterError::Parameter {
            name: "k range",
            value: format!("{lo}..{hi}"),
            reason: "needs 1 <= from <= to <= samples",
        });
    }
    let mut scores = Vec::new();
    let mut sampled = None;
    for k in ks {
        let km = KMeansConfig {
            restarts,
            seed,
            ..KMeansConfig::new(k)
        }
        .fit(p)?;
        let s = if k >= 2 && k < p.len() {
            let s = silhouette(p, &km.labels, pairs)?;
            sampled = s.sampled;
            Some(s.value)
        } else {
            None
        };
        scores.push(KScore {
            k,
            inertia: km.inertia,
            silhouette: s,
        });
    }
    let best_silhouette = scores
        .iter()
        .filter_map(|s| s.silhouette.map(|v| (s.k, v)))
        .fold(None::<(usize, f64)>, |b, c| match b {
            Some(b) if b.1 >= c.1 => Some(b),
            _ => Some(c),
        })
        .map(|b| b.0);
    let ks: Vec<f64> = scores.iter().map(|s| s.k as f64).collect();
    let inertia: Vec<f64> = scores.iter().map(|s| s.inertia).collect();
    Ok(Selection {
        knee: knee(&ks, &inertia).map(|i| scores[i].k),
        scores,
        best_silhouette,
        sampled,
    })
}

/// Index of the knee of a decreasing curve (Kneedle): after scaling both axes to [0, 1], the
/// point farthest below the chord from the first to the last point. `None` for fewer than
/// three points or a curve with no bend.
pub fn knee(x: &[f64], y: &[f64]) -> Option<usize> {
    if x.len() < 3 || x.len() != y.len() {
        return None;
    }
    let (x0, x1) = (x[0], x[x.len() - 1]);
    let (ymin, ymax) = y
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if x1 == x0 || ymax == ymin {
        return None;
    }
    // For a decreasing convex curve, 1 - y' lies above the diagonal; the knee maximises it.
    let (i, gap) = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| {
            let xs = (a - x0) / (x1 - x0);
            let ys = 1.0 - (b - ymin) / (ymax - ymin);
            ys - xs
        })
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |b, c| if c.1 > b.1 { c } else { b });
    (gap > 1e-9).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knee_of_an_elbow() {
        let x: Vec<f64> = (1..=8).map(f64::from).collect();
        let y = [100.0, 40.0, 10.0, 8.0, 7.0, 6.0, 5.5, 5.0];
        assert_eq!(knee(&x, &y), Some(2));
        assert_eq!(knee(&x, &[5.0; 8]), None);
        assert_eq!(knee(&x[..2], &y[..2]), None);
        // A straight line has no bend.
        let line: Vec<f64> = x.iter().map(|v| 10.0 - v).collect();
        assert_eq!(knee(&x, &line), None);
    }

    #[test]
    fn four_blobs_are_found_by_both_criteria() {
        let mut xs = Vec::new();
        let mut s = 9u32;
        for i in 0..400 {
            let c = i % 4;
            for j in 0..2 {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                let centre = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]][c][j];
                xs.push(centre + noise);
            }
        }
        let p = Points::new(&xs, 2).unwrap();
        let sel = select_k(&p, 1..=8, 3, 0, &PairOptions::default()).unwrap();
        assert_eq!(sel.scores.len(), 8);
        assert_eq!(sel.scores[0].silhouette, None);
        assert_eq!((sel.knee, sel.best_silhouette), (Some(4), Some(4)));
        assert!(select_k(&p, 0..=3, 1, 0, &PairOptions::default()).is_err());
        assert!(
            select_k(
                &p,
                std::ops::RangeInclusive::new(5, 3),
                1,
                0,
                &PairOptions::default()
            )
            .is_err()
        );
    }
}

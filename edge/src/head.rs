//! The clustering head: `y = V z`, nearest centroid in `y` space, margin, outlier score and flag.

use alloc::vec::Vec;
use nalgebra::{ComplexField, DMatrixView, DVectorView, DVectorViewMut};

/// Bad head tensors or a bad latent vector.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HeadError {
    /// A tensor or vector has the wrong length.
    #[error("{what}: expected {expected} values, got {got}")]
    LengthMismatch {
        /// What was passed.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// `k` or the latent dimension is zero.
    #[error("the head needs at least one cluster and one latent dimension")]
    Empty,
    /// The neighbour order is outside 1 to 32 or beyond the number of references.
    #[error(
        "the neighbour score's order {n} must be 1 to 32 and at most the {references} references"
    )]
    Neighbours {
        /// Neighbour order asked for.
        n: usize,
        /// Reference rows given.
        references: usize,
    },
    /// NaN or infinite input.
    #[error("{what}: value at index {index} is not finite")]
    NotFinite {
        /// What was passed.
        what: &'static str,
        /// First offending index.
        index: usize,
    },
}

/// Where one sample landed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment {
    /// Index of the nearest centroid.
    pub cluster: u32,
    /// Euclidean distance to that centroid in `y` space.
    pub distance: f32,
    /// Distance to the second nearest centroid minus `distance` (infinite when `k = 1`); small
    /// margins mark samples between clusters.
    pub margin: f32,
    /// The model's outlier score ([`dekm_shared::OutlierScore`]): `distance` itself, the
    /// Mahalanobis distance to the assigned centroid, or the distance to the `n`-th nearest
    /// reference latent.
    pub score: f32,
    /// `score` exceeds the cluster's calibrated threshold.
    pub outlier: bool,
}

/// Rotation, centroids, outlier score and thresholds of a trained model.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterHead {
    d: usize,
    v: Vec<f32>,
    centroids_y: Vec<f32>,
    thresholds: Vec<f32>,
    scorer: Scorer,
}

/// What [`ClusterHead::assign`] puts in [`Assignment::score`].
#[derive(Debug, Clone, PartialEq)]
enum Scorer {
    /// The Euclidean distance to the assigned centroid.
    Distance,
    /// `[k, d, d]` lower-triangular whitening factors: the Mahalanobis distance.
    Whitened(Vec<f32>),
    /// `[m, d]` reference latents in `y` space and which neighbour's distance is the score.
    Neighbours { references: Vec<f32>, n: usize },
}

/// Bound on the neighbour order, so the running nearest list lives on the stack.
const MAX_NEIGHBOURS: usize = dekm_shared::Neighbours::MAX_NEIGHBOURS as usize;

fn check(what: &'static str, xs: &[f32], expected: usize) -> Result<(), HeadError> {
    if xs.len() != expected {
        return Err(HeadError::LengthMismatch {
            what,
            expected,
            got: xs.len(),
        });
    }
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(HeadError::NotFinite { what, index }),
        None => Ok(()),
    }
}

impl ClusterHead {
    /// `v` is `[d, d]` row-major (rows are eigenvectors), `centroids_y` is `[k, d]`,
    /// `thresholds` is `[k]`; `k` is taken from `thresholds`.
    pub fn new(
        d: usize,
        v: Vec<f32>,
        centroids_y: Vec<f32>,
        thresholds: Vec<f32>,
    ) -> Result<Self, HeadError> {
        let k = thresholds.len();
        if d == 0 || k == 0 {
            return Err(HeadError::Empty);
        }
        check("rotation V", &v, d * d)?;
        check("centroids", &centroids_y, k * d)?;
        // Thresholds may be +inf ("never an outlier") but not NaN.
        if let Some(index) = thresholds.iter().position(|t| t.is_nan()) {
            return Err(HeadError::NotFinite {
                what: "thresholds",
                index,
            });
        }
        Ok(Self {
            d,
            v,
            centroids_y,
            thresholds,
            scorer: Scorer::Distance,
        })
    }

    /// Scores by the Mahalanobis distance: `whitening` is `[k, d, d]` row-major, one
    /// lower-triangular `W` per cluster (entries above the diagonal are ignored), the score of
    /// `y` in cluster `c` is `|W_c (y - mu_c)|`. The thresholds must then be in those units.
    pub fn with_whitening(mut self, whitening: Vec<f32>) -> Result<Self, HeadError> {
        check("whitening", &whitening, self.k() * self.d * self.d)?;
        self.scorer = Scorer::Whitened(whitening);
        Ok(self)
    }

    /// Scores by the distance to the `n`-th nearest of the `references` (`[m, d]` row-major, in
    /// `y` space, `m >= n`, `1 <= n <= 32`). The thresholds must then be in those units.
    pub fn with_references(mut self, references: Vec<f32>, n: usize) -> Result<Self, HeadError> {
        let m = references.len() / self.d;
        check("references", &references, m * self.d)?;
        if n == 0 || n > MAX_NEIGHBOURS || m < n {
            return Err(HeadError::Neighbours { n, references: m });
        }
        self.scorer = Scorer::Neighbours { references, n };
        Ok(self)
    }

    /// The whitening factors when the head scores by the Mahalanobis distance.
    pub fn whitening(&self) -> Option<&[f32]> {
        match &self.scorer {
            Scorer::Whitened(w) => Some(w),
            _ => None,
        }
    }

    /// The reference latents when the head scores by the neighbour distance.
    pub fn references(&self) -> Option<&[f32]> {
        match &self.scorer {
            Scorer::Neighbours { references, .. } => Some(references),
            _ => None,
        }
    }

    /// Distance from `y` (projected, length `d`) to its `n`-th nearest reference, passing over
    /// the `skip` nearest first (1 when `y` is itself a reference: its own zero distance);
    /// `None` when the head has no references or too few for `n + skip`.
    pub fn neighbour_distance(&self, y: &[f32], skip: usize) -> Option<f32> {
        let Scorer::Neighbours { references, n } = &self.scorer else {
            return None;
        };
        nth_nearest(references, y, n + skip)
    }

    /// Latent dimension.
    pub fn latent_dim(&self) -> usize {
        self.d
    }

    /// Number of clusters.
    pub fn k(&self) -> usize {
        self.thresholds.len()
    }

    /// Centroids in `y` space, row-major `[k, d]`.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids_y
    }

    /// Outlier thresholds, one per cluster.
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// Replaces the outlier thresholds (e.g. after recalibration at another quantile).
    pub fn set_thresholds(&mut self, thresholds: Vec<f32>) -> Result<(), HeadError> {
        check("thresholds", &thresholds, self.k())?;
        self.thresholds = thresholds;
        Ok(())
    }

    /// Writes `y = V z` into `y`.
    pub fn project(&self, z: &[f32], y: &mut [f32]) -> Result<(), HeadError> {
        check("latent vector", z, self.d)?;
        if y.len() != self.d {
            return Err(HeadError::LengthMismatch {
                what: "projection buffer",
                expected: self.d,
                got: y.len(),
            });
        }
        // The row-major `V` read column-major is `Vᵀ`, so `y = (Vᵀ)ᵀ z`, written in place.
        let vt = DMatrixView::from_slice(&self.v, self.d, self.d);
        let z = DVectorView::from_slice(z, self.d);
        DVectorViewMut::from_slice(y, self.d).gemv_tr(1.0, &vt, &z, 0.0);
        Ok(())
    }

    /// Assigns the latent vector `z`, using `y` (length `d`) as scratch for the projection.
    pub fn assign(&self, z: &[f32], y: &mut [f32]) -> Result<Assignment, HeadError> {
        self.project(z, y)?;
        let (mut best, mut d1, mut d2) = (0usize, f32::INFINITY, f32::INFINITY);
        for (c, mu) in self.centroids_y.chunks_exact(self.d).enumerate() {
            let dist: f32 = mu.iter().zip(&*y).map(|(m, v)| (m - v) * (m - v)).sum();
            if dist < d1 {
                (d2, d1, best) = (d1, dist, c);
            } else if dist < d2 {
                d2 = dist;
            }
        }
        let distance = sqrt(d1);
        let score = match &self.scorer {
            Scorer::Distance => distance,
            Scorer::Neighbours { references, n } => {
                nth_nearest(references, y, *n).unwrap_or(f32::INFINITY)
            }
            Scorer::Whitened(w) => {
                let (d, mu) = (
                    self.d,
                    &self.centroids_y[best * self.d..(best + 1) * self.d],
                );
                whitened_norm(&w[best * d * d..(best + 1) * d * d], y, mu)
            }
        };
        Ok(Assignment {
            cluster: best as u32,
            distance,
            margin: sqrt(d2) - distance,
            score,
            outlier: score > self.thresholds[best],
        })
    }
}

/// `|W (y - mu)|` for a row-major lower-triangular `w` (`[d, d]`; entries above the diagonal
/// are ignored): the Mahalanobis distance of `y` from `mu` when `W S Wᵀ = I`.
pub fn whitened_norm(w: &[f32], y: &[f32], mu: &[f32]) -> f32 {
    let d = mu.len();
    let mut sum = 0f32;
    for (i, row) in w.chunks_exact(d).enumerate() {
        let s: f32 = row[..=i]
            .iter()
            .zip(&y[..=i])
            .zip(mu)
            .map(|((w, y), m)| w * (y - m))
            .sum();
        sum += s * s;
    }
    sqrt(sum)
}

/// Distance from `y` to its `n`-th nearest row of `references` (`None` for `n` beyond the rows
/// or beyond twice [`MAX_NEIGHBOURS`]). One pass, the running nearest list sorted on the stack:
/// no allocation per sample.
fn nth_nearest(references: &[f32], y: &[f32], n: usize) -> Option<f32> {
    let mut best = [f32::INFINITY; 2 * MAX_NEIGHBOURS];
    if n == 0 || n > best.len() || references.len() < n * y.len() {
        return None;
    }
    let best = &mut best[..n];
    for r in references.chunks_exact(y.len()) {
        let dist: f32 = r.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
        if dist < best[n - 1] {
            let at = best.partition_point(|&b| b <= dist);
            best.copy_within(at..n - 1, at + 1);
            best[at] = dist;
        }
    }
    Some(sqrt(best[n - 1]))
}

/// `f32::sqrt` is not in `core`: nalgebra's scalar trait gives the hardware instruction with
/// std and `libm`'s correctly rounded one without.
pub(crate) fn sqrt(x: f32) -> f32 {
    ComplexField::sqrt(x.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn head() -> ClusterHead {
        // V swaps the two axes.
        ClusterHead::new(
            2,
            vec![0.0, 1.0, 1.0, 0.0],
            vec![0.0, 0.0, 10.0, 0.0],
            vec![1.0, 1.0],
        )
        .unwrap()
    }

    #[test]
    fn assigns_in_rotated_space_with_margin_and_outlier() {
        let h = head();
        let mut y = [0.0; 2];
        // z = (0, 9) -> y = (9, 0): nearest centroid 1 at distance 1.
        let a = h.assign(&[0.0, 9.0], &mut y).unwrap();
        assert_eq!(a.cluster, 1);
        assert!((a.distance - 1.0).abs() < 1e-6);
        assert!((a.margin - 8.0).abs() < 1e-6);
        assert!(!a.outlier);
        let a = h.assign(&[3.0, 0.0], &mut y).unwrap();
        assert_eq!(a.cluster, 0);
        assert!(a.outlier, "distance 3 > threshold 1");
    }

    /// Cluster 0 varies ten times more along the first axis of `y` than along the second:
    /// the same Euclidean distance scores 0.1 along the wide axis and 1 along the narrow one.
    #[test]
    fn mahalanobis_score_weighs_directions_by_the_cluster_spread() {
        let w = vec![0.1, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let h = head().with_whitening(w).unwrap();
        let mut y = [0.0; 2];
        // z = (0, 1) -> y = (1, 0): along the wide axis.
        let wide = h.assign(&[0.0, 1.0], &mut y).unwrap();
        let narrow = h.assign(&[1.0, 0.0], &mut y).unwrap();
        assert_eq!((wide.cluster, narrow.cluster), (0, 0));
        assert!((wide.distance - narrow.distance).abs() < 1e-6);
        assert!((wide.score - 0.1).abs() < 1e-6 && (narrow.score - 1.0).abs() < 1e-6);
        assert!(!wide.outlier && !narrow.outlier, "thresholds are 1");
        // The entry above the diagonal is ignored: only the lower triangle is the factor.
        let upper = head()
            .with_whitening(vec![1.0, 5.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
            .unwrap();
        assert!((upper.assign(&[0.0, 1.0], &mut y).unwrap().score - 1.0).abs() < 1e-6);
        assert_eq!(
            head().with_whitening(vec![1.0; 7]),
            Err(HeadError::LengthMismatch {
                what: "whitening",
                expected: 8,
                got: 7
            })
        );
    }

    /// The neighbour score is the distance to the `n`-th nearest reference, whatever the
    /// centroids; `skip` passes over a sample's own row.
    #[test]
    fn neighbour_score_is_the_nth_nearest_reference() {
        // References in y space along the first axis at 0, 1, 2, 3, 4 and 20.
        let refs = vec![0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 4.0, 0.0, 20.0, 0.0];
        let h = head().with_references(refs.clone(), 3).unwrap();
        let mut y = [0.0; 2];
        // z = (0, 0.5) -> y = (0.5, 0): neighbours at 0.5, 0.5, 1.5, ...
        let a = h.assign(&[0.0, 0.5], &mut y).unwrap();
        assert_eq!(a.cluster, 0);
        assert!((a.score - 1.5).abs() < 1e-6, "{}", a.score);
        assert!(a.outlier, "1.5 > threshold 1");
        // From the reference at 2: distances 0, 1, 1, 2, 2, 18.
        assert_eq!(h.neighbour_distance(&[2.0, 0.0], 0), Some(1.0));
        assert_eq!(h.neighbour_distance(&[2.0, 0.0], 1), Some(2.0));
        assert_eq!(h.neighbour_distance(&[20.0, 0.0], 0), Some(17.0));
        assert_eq!(head().neighbour_distance(&[0.0, 0.0], 0), None);
        // The direct definition, on every sample of a grid.
        for i in 0..50 {
            let q = [i as f32 * 0.5 - 3.0, (i % 7) as f32 - 3.0];
            let mut d: Vec<f32> = refs
                .chunks_exact(2)
                .map(|r| ((r[0] - q[0]).powi(2) + (r[1] - q[1]).powi(2)).sqrt())
                .collect();
            d.sort_by(f32::total_cmp);
            assert!((h.neighbour_distance(&q, 0).unwrap() - d[2]).abs() < 1e-5);
            assert!((h.neighbour_distance(&q, 2).unwrap() - d[4]).abs() < 1e-5);
        }
        for (refs, n) in [(vec![0.0; 4], 3), (vec![0.0; 12], 0), (vec![0.0; 80], 33)] {
            assert!(head().with_references(refs, n).is_err());
        }
        assert!(head().with_references(vec![0.0; 5], 1).is_err());
        assert!(
            head()
                .with_references(vec![0.0, f32::NAN, 0.0, 0.0], 1)
                .is_err()
        );
    }

    #[test]
    fn rejects_bad_shapes_and_nan() {
        let h = head();
        let mut y = [0.0; 2];
        assert_eq!(
            h.assign(&[1.0], &mut y),
            Err(HeadError::LengthMismatch {
                what: "latent vector",
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            h.assign(&[f32::NAN, 0.0], &mut y),
            Err(HeadError::NotFinite {
                what: "latent vector",
                index: 0
            })
        );
        assert_eq!(
            ClusterHead::new(2, vec![1.0; 3], vec![0.0; 2], vec![1.0]),
            Err(HeadError::LengthMismatch {
                what: "rotation V",
                expected: 4,
                got: 3
            })
        );
    }
}

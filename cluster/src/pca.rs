//! Principal component analysis: the leading axes of a cloud of points, to project on.
//!
//! Used where points are too wide or too many-dimensional to look at or lay out whole: the
//! trainer draws the latent space on its first two axes, and the `n2d_starts` study projects a
//! convolutional feature map (1,152 values per 28x28 image) on its 50 leading axes before UMAP,
//! whose exact neighbour search grows with the dimension.

use nalgebra::{DMatrix, SymmetricEigen};
use rayon::prelude::*;

use crate::{ClusterError, Points};

/// Rows per block of the scatter sum: large enough for the matrix product to run at its full
/// rate, small enough that a block of `f64` rows of a wide feature map stays a few tens of MB.
const BLOCK: usize = 2048;

/// The mean and the leading principal axes of a set of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    mean: Vec<f64>,
    /// `[dim, keep]`: column `c` is the axis of the `c`-th largest variance.
    axes: DMatrix<f64>,
    /// Variance along each kept axis, largest first.
    variances: Vec<f64>,
    /// Total variance over all axes.
    total: f64,
}

impl Pca {
    /// Fits the `keep` leading axes of `p` (`1 <= keep <= p.dim()`).
    pub fn fit(p: &Points<'_>, keep: usize) -> Result<Self, ClusterError> {
        let (n, d) = (p.len(), p.dim());
        if keep == 0 || keep > d {
            return Err(ClusterError::Parameter {
                name: "keep",
                value: keep.to_string(),
                reason: "must be between 1 and the points' dimension",
            });
        }
        let mut mean = vec![0f64; d];
        for x in p.as_slice().chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(x) {
                *m += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        // Blocks' scatters are summed in block order, so the result does not depend on the
        // thread schedule.
        let scatter = p
            .as_slice()
            .par_chunks(BLOCK * d)
            .map(|block| {
                let rows = block.len() / d;
                let c = DMatrix::from_fn(rows, d, |i, j| f64::from(block[i * d + j]) - mean[j]);
                c.transpose() * c
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold(DMatrix::zeros(d, d), |acc, s| acc + s);
        let eig = SymmetricEigen::new(scatter / n as f64);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let axes = DMatrix::from_fn(d, keep, |j, c| eig.eigenvectors[(j, order[c])]);
        let variances = order[..keep]
            .iter()
            .map(|&o| eig.eigenvalues[o].max(0.0))
            .collect();
        let total = eig.eigenvalues.iter().map(|v| v.max(0.0)).sum();
        Ok(Self {
            mean,
            axes,
            variances,
            total,
        })
    }

    /// Number of kept axes.
    pub fn components(&self) -> usize {
        self.axes.ncols()
    }

    /// Share of the total variance along the kept axes, in `[0, 1]` (1 for constant points).
    pub fn explained(&self) -> f64 {
        if self.total > 0.0 {
            self.variances.iter().sum::<f64>() / self.total
        } else {
            1.0
        }
    }

    /// The affine map that whitens the kept axes, `y = W (x - mean)` with `W = diag(1/√(λ +
    /// floor · λ_max)) Aᵀ` (`A` the axes, `λ` their variances, `λ_max` the largest): returns `W`
    /// (`[keep, dim]`, row-major) and the mean. The floor, relative to the largest variance,
    /// keeps a direction the points hardly use from being blown up to unit scale. DeepCluster
    /// clusters whitened features; the trainer folds this map into the encoder's last linear
    /// layer, so an exported model's latent space is the whitened one.
    pub fn whitening(&self, floor: f64) -> (Vec<f64>, Vec<f64>) {
        let (d, keep) = (self.mean.len(), self.components());
        // Constant points have no largest variance to be relative to: the floor itself.
        let largest = self.variances.first().copied().filter(|v| *v > 0.0);
        let eps = floor * largest.unwrap_or(1.0);
        let mut w = Vec::with_capacity(keep * d);
        for (c, var) in self.variances.iter().enumerate() {
            let s = 1.0 / (var + eps).sqrt();
            w.extend(self.axes.column(c).iter().map(|a| a * s));
        }
        (w, self.mean.clone())
    }

    /// `p` centred and projected on the kept axes: `[p.len(), self.components()]`, row-major.
    pub fn project(&self, p: &Points<'_>) -> Result<Vec<f32>, ClusterError> {
        let d = self.mean.len();
        if p.dim() != d {
            return Err(ClusterError::Shape {
                what: "points to project (dimension)",
                expected: d,
                got: p.dim(),
            });
        }
        let keep = self.components();
        let blocks: Vec<Vec<f32>> = p
            .as_slice()
            .par_chunks(BLOCK * d)
            .map(|block| {
                let rows = block.len() / d;
                let c =
                    DMatrix::from_fn(rows, d, |i, j| f64::from(block[i * d + j]) - self.mean[j]);
                let y = c * &self.axes;
                (0..rows * keep)
                    .map(|i| y[(i / keep, i % keep)] as f32)
                    .collect()
            })
            .collect();
        Ok(blocks.concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points spread along (1, 1, 0) with a little noise on (1, -1, 0) and none on z: the first
    /// axis is (1, 1, 0)/√2 up to sign, the second (1, -1, 0)/√2, and the variances are the
    /// ones drawn.
    #[test]
    fn finds_the_axes_and_variances_drawn() {
        let n = 4000;
        let mut xs = Vec::with_capacity(n * 3);
        for i in 0..n {
            // Each t twice, once with each s, so that t and s do not correlate.
            let t = ((i / 2) as f32 / (n / 2) as f32 - 0.5) * 20.0; // variance 100/3
            let s = if i % 2 == 0 { 0.5 } else { -0.5 }; // variance 0.25
            xs.extend([t + s + 3.0, t - s - 1.0, 7.0]);
        }
        let p = Points::new(&xs, 3).unwrap();
        let pca = Pca::fit(&p, 2).unwrap();
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let a0 = pca.axes.column(0);
        assert!(
            (a0[0].abs() - h).abs() < 1e-6 && (a0[0] - a0[1]).abs() < 1e-6,
            "{a0}"
        );
        let a1 = pca.axes.column(1);
        assert!(
            (a1[0].abs() - h).abs() < 1e-6 && (a1[0] + a1[1]).abs() < 1e-6,
            "{a1}"
        );
        // Along (1,1,0)/√2 the spread is √2·t, so the variance is twice t's.
        let want = 2.0 * (20.0f64.powi(2) / 12.0);
        assert!(
            (pca.variances[0] - want).abs() / want < 1e-3,
            "{}",
            pca.variances[0]
        );
        assert!(
            (pca.variances[1] - 0.5).abs() < 1e-6,
            "{}",
            pca.variances[1]
        );
        assert!((pca.explained() - 1.0).abs() < 1e-9);

        let y = pca.project(&p).unwrap();
        assert_eq!(y.len(), n * 2);
        // Centred: the projections average to zero; the second one is ±√2·0.5.
        let m0: f64 = y.chunks(2).map(|r| f64::from(r[0])).sum::<f64>() / n as f64;
        assert!(m0.abs() < 1e-3, "{m0}");
        assert!(
            y.chunks(2)
                .all(|r| (r[1].abs() - 0.5 * 2f32.sqrt()).abs() < 1e-4)
        );
    }

    /// Whitened points have unit variance along every kept axis and no correlation.
    #[test]
    fn whitening_gives_unit_uncorrelated_axes() {
        let n = 3000;
        let mut xs = Vec::with_capacity(n * 2);
        for i in 0..n {
            let (a, b) = ((i % 37) as f64 - 18.0, (i % 11) as f64 - 5.0);
            xs.extend([(3.0 * a + b + 4.0) as f32, (a - 0.5 * b) as f32]);
        }
        let p = Points::new(&xs, 2).unwrap();
        let (w, mean) = Pca::fit(&p, 2).unwrap().whitening(0.0);
        let ys: Vec<[f64; 2]> = xs
            .chunks(2)
            .map(|x| {
                let c = [f64::from(x[0]) - mean[0], f64::from(x[1]) - mean[1]];
                [w[0] * c[0] + w[1] * c[1], w[2] * c[0] + w[3] * c[1]]
            })
            .collect();
        let cov = |i: usize, j: usize| ys.iter().map(|y| y[i] * y[j]).sum::<f64>() / n as f64;
        assert!((cov(0, 0) - 1.0).abs() < 1e-9, "{}", cov(0, 0));
        assert!((cov(1, 1) - 1.0).abs() < 1e-9, "{}", cov(1, 1));
        assert!(cov(0, 1).abs() < 1e-9, "{}", cov(0, 1));
    }

    #[test]
    fn rejects_bad_keep_and_foreign_points() {
        let xs = [0.0f32, 1.0, 2.0, 3.0, 4.0, 6.0];
        let p = Points::new(&xs, 2).unwrap();
        for keep in [0, 3] {
            assert!(matches!(
                Pca::fit(&p, keep),
                Err(ClusterError::Parameter { name: "keep", .. })
            ));
        }
        let pca = Pca::fit(&p, 1).unwrap();
        let other = Points::new(&xs, 3).unwrap();
        assert!(matches!(
            pca.project(&other),
            Err(ClusterError::Shape { .. })
        ));
    }
}

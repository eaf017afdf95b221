//! The DEKM rotation: within-cluster scatter `Sw`, its eigendecomposition and `V`.

use nalgebra::{DMatrix, SymmetricEigen};

/// `V` and the eigenvalues of `Sw`, ascending.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    /// Latent dimension.
    pub d: usize,
    /// Row-major `[d, d]`; row `i` is the eigenvector of the `i`-th smallest eigenvalue, so
    /// `y = V z`. Each row's largest-magnitude entry is positive, making `V` unique.
    pub v: Vec<f32>,
    /// Eigenvalues of `Sw`, ascending.
    pub eigenvalues: Vec<f32>,
}

impl Rotation {
    /// Writes `y = V z` into `y` (both of length `d`). The edge head computes the same product;
    /// the export round-trip test pins the two together.
    pub fn project(&self, z: &[f32], y: &mut [f32]) {
        for (yi, row) in y.iter_mut().zip(self.v.chunks_exact(self.d)) {
            *yi = row.iter().zip(z).map(|(a, b)| a * b).sum();
        }
    }
}

/// `Sw = Σ_c Σ_{z in c} (z - mu_c)(z - mu_c)ᵀ`, accumulated in `f64`.
pub fn within_scatter(z: &[f32], d: usize, labels: &[u32], centroids: &[f32]) -> DMatrix<f64> {
    let mut sw = DMatrix::<f64>::zeros(d, d);
    let mut diff = vec![0f64; d];
    for (x, &l) in z.chunks_exact(d).zip(labels) {
        let mu = &centroids[l as usize * d..(l as usize + 1) * d];
        for ((t, &a), &b) in diff.iter_mut().zip(x).zip(mu) {
            *t = f64::from(a) - f64::from(b);
        }
        for i in 0..d {
            for j in 0..=i {
                sw[(i, j)] += diff[i] * diff[j];
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            sw[(j, i)] = sw[(i, j)];
        }
    }
    sw
}

/// Symmetric eigendecomposition of `sw`, eigenvectors sorted by ascending eigenvalue.
pub fn rotation(sw: DMatrix<f64>) -> Rotation {
    let d = sw.nrows();
    let eig = SymmetricEigen::new(sw);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[a].total_cmp(&eig.eigenvalues[b]));
    let mut v = Vec::with_capacity(d * d);
    for &i in &order {
        let col = eig.eigenvectors.column(i);
        let big = col
            .iter()
            .copied()
            .fold(0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        let sign = if big < 0.0 { -1.0 } else { 1.0 };
        v.extend(col.iter().map(|&x| (sign * x) as f32));
    }
    Rotation {
        d,
        v,
        eigenvalues: order.iter().map(|&i| eig.eigenvalues[i] as f32).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;
    use dekm_cluster::kmeans::KMeansConfig;
    use dekm_cluster::{Fit, Points};
    use rand_distr::{Distribution, Normal};

    #[test]
    fn v_is_orthogonal_and_sorted() {
        let mut r = rng(5, 0);
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let d = 10;
        // Anisotropic data: coordinate j has scale j + 1.
        let z: Vec<f32> = (0..2000 * d)
            .map(|i| noise.sample(&mut r) * (1 + i % d) as f32)
            .collect();
        let km = KMeansConfig {
            restarts: 2,
            max_iter: 50,
            seed: 1,
            ..KMeansConfig::new(4)
        }
        .fit(&Points::new(&z, d).unwrap())
        .unwrap();
        let rot = rotation(within_scatter(&z, d, &km.labels, &km.centroids));
        let v = DMatrix::from_row_slice(d, d, &rot.v);
        let err = (v.transpose() * &v - DMatrix::<f32>::identity(d, d))
            .abs()
            .max();
        assert!(err < 1e-5, "VᵀV - I = {err}");
        assert!(rot.eigenvalues.windows(2).all(|w| w[0] <= w[1]));
        // V diagonalises Sw: V Sw Vᵀ = diag(eigenvalues).
        let sw = within_scatter(&z, d, &km.labels, &km.centroids).map(|x| x as f32);
        let diag = &v * sw * v.transpose();
        for i in 0..d {
            assert!(
                (diag[(i, i)] - rot.eigenvalues[i]).abs()
                    <= 1e-3 * rot.eigenvalues[i].abs().max(1.0)
            );
        }
    }
}

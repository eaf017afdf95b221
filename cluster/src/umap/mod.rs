//! UMAP (McInnes, Healy & Melville, 2018): a low-dimensional layout of the points that keeps
//! each point's nearest neighbours near it, for clustering rather than for pictures.
//!
//! Why it is here: on an autoencoder's embedding, k-means' lowest-inertia partition often
//! merges two classes and splits a third (Fashion-MNIST: trousers with dresses, bags in two),
//! and DEKM keeps the partition it starts from. N2D (McConville et al., 2020) showed that a
//! Gaussian mixture on a UMAP layout of the embedding follows the classes far better, since
//! the layout is built from neighbourhoods rather than from distances to a few centres. DEKM's
//! `manifold` start uses exactly that: [`layout`], then a full-covariance GMM.
//!
//! The algorithm is umap-learn's, with its defaults where this module has no setting
//! (local connectivity 1, spread 1, set-operation mix 1, learning rate 1, gradient clip 4),
//! with two differences that are choices, not shortcuts:
//! - neighbours are exact ([`crate::neighbours`]: a k-d tree in the low dimensions of a latent)
//!   rather than approximate (NN-descent);
//! - the layout is optimised by one thread with one seeded random stream, so the result is the
//!   same at every thread count (umap-learn is deterministic only single-threaded).
//!
//! Where the parts live: the neighbour search in [`crate::neighbours`], the spectral start in `spectral`, N2D (layout + mixture) in `n2d`; here the settings, the
//! fuzzy graph and the layout's optimisation.

use rand::Rng;
use rayon::prelude::*;

use crate::{ClusterError, Points, rng};

mod n2d;
mod spectral;
#[cfg(test)]
mod tests;

pub use n2d::{Mixture, N2d, N2dConfig};

use crate::neighbours::{Neighbours, Search, nearest};
use spectral::spectral;

/// UMAP settings. The defaults are N2D's for clustering: 20 neighbours, `min_dist` 0 (points
/// of a cluster may pile up), 200 epochs (umap-learn's for more than 10,000 points).
#[derive(Debug, Clone, Copy)]
pub struct UmapConfig {
    /// Dimension of the layout (N2D: the number of clusters).
    pub components: usize,
    /// Size of each point's neighbourhood, the point itself included (umap-learn's
    /// `n_neighbors`): 2 or more, below the number of points.
    pub neighbors: usize,
    /// Smallest distance between points in the layout, in `[0, 1]` (spread is 1).
    pub min_dist: f32,
    /// Optimisation epochs.
    pub epochs: usize,
    /// Negative samples per positive one.
    pub negative_rate: usize,
    /// Seed of the start and of the negative samples.
    pub seed: u64,
}

impl UmapConfig {
    /// N2D's settings for a layout of `components` dimensions.
    pub fn new(components: usize) -> Self {
        Self {
            components,
            neighbors: 20,
            min_dist: 0.0,
            epochs: 200,
            negative_rate: 5,
            seed: 0,
        }
    }

    fn validate(&self, n: usize) -> Result<(), ClusterError> {
        let bad = |name, value: String, reason| {
            Err(ClusterError::Parameter {
                name,
                value,
                reason,
            })
        };
        if self.components == 0 {
            return bad("components", "0".into(), "must be at least 1");
        }
        if self.neighbors < 2 || self.neighbors >= n {
            return bad(
                "neighbors",
                self.neighbors.to_string(),
                "must be at least 2 and below the number of points",
            );
        }
        if !(0.0..=1.0).contains(&self.min_dist) {
            return bad("min_dist", self.min_dist.to_string(), "must be in [0, 1]");
        }
        if self.epochs == 0 {
            return bad("epochs", "0".into(), "must be at least 1");
        }
        Ok(())
    }
}

/// Membership strengths of one point's neighbours (umap-learn's `smooth_knn_dist`): distances
/// beyond the nearest are scaled by a `sigma` found by bisection so that the strengths sum to
/// log2 of the neighbourhood size. `mean_all` is the mean of all neighbour distances, the
/// fallback scale of a point whose neighbours all coincide with it.
fn strengths(ds: &[f32], neighbors: usize, mean_all: f64, out: &mut [f32]) {
    let target = (neighbors as f64).log2();
    let rho = f64::from(ds.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0));
    let sum = |sigma: f64| -> f64 {
        ds.iter()
            .map(|&d| {
                let t = f64::from(d) - rho;
                if t > 0.0 { (-t / sigma).exp() } else { 1.0 }
            })
            .sum()
    };
    let (mut lo, mut hi, mut sigma) = (0.0f64, f64::INFINITY, 1.0f64);
    for _ in 0..64 {
        let s = sum(sigma);
        if (s - target).abs() < 1e-5 {
            break;
        }
        if s > target {
            hi = sigma;
            sigma = (lo + hi) / 2.0;
        } else {
            lo = sigma;
            sigma = if hi.is_finite() {
                (lo + hi) / 2.0
            } else {
                sigma * 2.0
            };
        }
    }
    let mean_i = ds.iter().map(|&d| f64::from(d)).sum::<f64>() / ds.len() as f64;
    let floor = 1e-3 * if rho > 0.0 { mean_i } else { mean_all };
    let sigma = sigma.max(floor);
    for (o, &d) in out.iter_mut().zip(ds) {
        let t = f64::from(d) - rho;
        *o = if t <= 0.0 {
            1.0
        } else {
            (-t / sigma).exp() as f32
        };
    }
}

/// The fuzzy neighbour graph as directed edges `(from, to, weight)`, both directions of every
/// pair, the weights of a pair combined as a fuzzy union `a + b - ab`, from each point's `m`
/// nearest others (`neighbors = m + 1`, the point itself counted as umap-learn counts it).
fn graph(idx: &[u32], dist: &[f32], neighbors: usize) -> Vec<(u32, u32, f32)> {
    let m = neighbors - 1;
    let mean_all = dist.iter().map(|&d| f64::from(d)).sum::<f64>() / dist.len() as f64;
    let mut w = vec![0f32; dist.len()];
    w.par_chunks_mut(m)
        .zip(dist.par_chunks(m))
        .for_each(|(o, ds)| strengths(ds, neighbors, mean_all, o));
    // Each directed strength keyed by its unordered pair; a pair seen from both ends is
    // combined.
    let mut pairs: Vec<(u32, u32, f32)> = idx
        .iter()
        .enumerate()
        .map(|(e, &j)| {
            let i = (e / m) as u32;
            (i.min(j), i.max(j), w[e])
        })
        .collect();
    pairs.par_sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
    let mut edges = Vec::with_capacity(pairs.len() * 2);
    let mut k = 0;
    while k < pairs.len() {
        let (a, b, x) = pairs[k];
        let mut wt = x;
        if k + 1 < pairs.len() && (pairs[k + 1].0, pairs[k + 1].1) == (a, b) {
            let y = pairs[k + 1].2;
            wt = x + y - x * y;
            k += 1;
        }
        k += 1;
        edges.push((a, b, wt));
        edges.push((b, a, wt));
    }
    edges
}

/// The `(a, b)` of the layout's similarity curve `1 / (1 + a d^(2b))`, fitted by least squares
/// (Gauss-Newton) to the target `1` below `min_dist` and `exp(-(d - min_dist))` above, on 300
/// points of `[0, 3]`, as umap-learn's `find_ab_params` (spread 1).
fn curve(min_dist: f32) -> (f64, f64) {
    let min_dist = f64::from(min_dist);
    let xs: Vec<f64> = (0..300).map(|i| 3.0 * i as f64 / 299.0).collect();
    let target = |x: f64| {
        if x < min_dist {
            1.0
        } else {
            (-(x - min_dist)).exp()
        }
    };
    let (mut a, mut b) = (1.0f64, 1.0f64);
    for _ in 0..200 {
        // Normal equations of the 2-parameter problem.
        let (mut jtj, mut jtr) = ([[0.0f64; 2]; 2], [0.0f64; 2]);
        for &x in xs.iter().filter(|&&x| x > 0.0) {
            let p = x.powf(2.0 * b);
            let f = 1.0 / (1.0 + a * p);
            let r = target(x) - f;
            let ga = -p * f * f;
            let gb = -a * p * 2.0 * x.ln() * f * f;
            let g = [ga, gb];
            for u in 0..2 {
                jtr[u] += g[u] * r;
                for v in 0..2 {
                    jtj[u][v] += g[u] * g[v];
                }
            }
        }
        let det = jtj[0][0] * jtj[1][1] - jtj[0][1] * jtj[1][0];
        if det.abs() < 1e-300 {
            break;
        }
        let da = (jtj[1][1] * jtr[0] - jtj[0][1] * jtr[1]) / det;
        let db = (jtj[0][0] * jtr[1] - jtj[1][0] * jtr[0]) / det;
        // Damped so that both stay positive.
        let (na, nb) = ((a + da).max(a / 2.0), (b + db).max(b / 2.0));
        let done = (na - a).abs() < 1e-12 * a && (nb - b).abs() < 1e-12 * b;
        (a, b) = (na, nb);
        if done {
            break;
        }
    }
    (a, b)
}

fn clip(g: f64) -> f64 {
    g.clamp(-4.0, 4.0)
}

/// A `[n, cfg.components]` row-major UMAP layout of `p`.
pub fn layout(p: &Points<'_>, cfg: &UmapConfig) -> Result<Vec<f32>, ClusterError> {
    layout_with(p, cfg, None)
}

/// [`layout`] from precomputed neighbourhoods (`cfg.neighbors - 1` per point) when given, else
/// from the exact search ([`Search::Auto`]).
pub fn layout_with(
    p: &Points<'_>,
    cfg: &UmapConfig,
    known: Option<&Neighbours>,
) -> Result<Vec<f32>, ClusterError> {
    let n = p.len();
    cfg.validate(n)?;
    let c = cfg.components;
    let m = cfg.neighbors - 1;
    let mut edges = match known {
        Some(k) if k.m() != m || k.parts().0.len() != n * m => {
            return Err(ClusterError::Shape {
                what: "precomputed neighbours",
                expected: n * m,
                got: k.parts().0.len(),
            });
        }
        Some(k) => graph(k.parts().0, k.parts().1, cfg.neighbors),
        None => {
            let found = nearest(p, m, Search::Auto)?;
            graph(found.parts().0, found.parts().1, cfg.neighbors)
        }
    };
    let max_w = edges.iter().map(|e| e.2).fold(0f32, f32::max);
    // Edges too weak to be sampled once in all the epochs are dropped, as umap-learn does.
    edges.retain(|e| e.2 >= max_w / cfg.epochs as f32);
    let (a, b) = curve(cfg.min_dist);

    let mut y = spectral(n, &edges, c, cfg.seed);
    // umap-learn then stretches every coordinate to [0, 10], so that no direction of the start
    // is negligible.
    for k in 0..c {
        let (lo, hi) = y
            .iter()
            .skip(k)
            .step_by(c)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                (l.min(v), h.max(v))
            });
        if hi > lo {
            y.iter_mut()
                .skip(k)
                .step_by(c)
                .for_each(|v| *v = 10.0 * (*v - lo) / (hi - lo));
        }
    }

    // Edge e is sampled every `period[e]` epochs: the strongest every epoch.
    let period: Vec<f64> = edges.iter().map(|e| f64::from(max_w / e.2)).collect();
    let neg_period: Vec<f64> = period
        .iter()
        .map(|p| p / cfg.negative_rate.max(1) as f64)
        .collect();
    let mut next = period.clone();
    let mut next_neg = neg_period.clone();
    let mut r = rng(cfg.seed, 1);
    let mut diff = vec![0f64; c];
    for epoch in 1..=cfg.epochs {
        let t = epoch as f64;
        let alpha = 1.0 - (epoch - 1) as f64 / cfg.epochs as f64;
        for (e, &(i, j, _)) in edges.iter().enumerate() {
            if next[e] > t {
                continue;
            }
            let (i, j) = (i as usize, j as usize);
            let mut d2 = 0.0;
            for (k, g) in diff.iter_mut().enumerate() {
                *g = f64::from(y[i * c + k] - y[j * c + k]);
                d2 += *g * *g;
            }
            if d2 > 0.0 {
                let coeff = -2.0 * a * b * d2.powf(b - 1.0) / (a * d2.powf(b) + 1.0);
                for (k, &g) in diff.iter().enumerate() {
                    let step = (clip(coeff * g) * alpha) as f32;
                    y[i * c + k] += step;
                    y[j * c + k] -= step;
                }
            }
            next[e] += period[e];

            let negatives = ((t - next_neg[e]) / neg_period[e]).floor().max(0.0) as usize;
            for _ in 0..negatives {
                let s = r.random_range(0..n);
                if s == i {
                    continue;
                }
                let mut d2 = 0.0;
                for (k, g) in diff.iter_mut().enumerate() {
                    *g = f64::from(y[i * c + k] - y[s * c + k]);
                    d2 += *g * *g;
                }
                if d2 <= 0.0 {
                    continue;
                }
                let coeff = 2.0 * b / ((0.001 + d2) * (a * d2.powf(b) + 1.0));
                for (k, &g) in diff.iter().enumerate() {
                    y[i * c + k] += (clip(coeff * g) * alpha) as f32;
                }
            }
            next_neg[e] += negatives as f64 * neg_period[e];
        }
    }
    Ok(y)
}

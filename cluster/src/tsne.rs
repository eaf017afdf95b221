//! t-SNE (van der Maaten & Hinton, 2008) for 2-D pictures: Gaussian affinities calibrated to a
//! perplexity, Student-t similarities in the map, gradient descent with early exaggeration and
//! momentum. [`tsne`] is exact, O(n²) time and memory per iteration, so capped at
//! [`MAX_POINTS`]; [`barnes_hut`] (van der Maaten, 2014, through the `bhtsne` crate) keeps each
//! point's 3 x perplexity nearest neighbours and approximates the repulsion with a quadtree,
//! O(n log n), and draws all 70,000 MNIST latents. Both start from the same seeded map.

use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::{ClusterError, Points, rng, sq64};

/// Largest number of points (the affinity matrix is n² `f32`s).
pub const MAX_POINTS: usize = 5_000;

/// t-SNE settings.
#[derive(Debug, Clone, Copy)]
pub struct TsneConfig {
    /// Effective number of neighbours, 5 to 50 usually; must be below n.
    pub perplexity: f64,
    /// Gradient steps.
    pub iterations: usize,
    /// Seed of the initial map.
    pub seed: u64,
}

impl Default for TsneConfig {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            iterations: 750,
            seed: 0,
        }
    }
}

/// Conditional affinities of row `i` at precision `beta`, and their entropy.
fn row(d2: &[f64], i: usize, beta: f64, out: &mut [f64]) -> f64 {
    let mut sum = 0.0;
    for (j, (o, &d)) in out.iter_mut().zip(d2).enumerate() {
        *o = if j == i { 0.0 } else { (-d * beta).exp() };
        sum += *o;
    }
    let sum = sum.max(f64::MIN_POSITIVE);
    let mut h = 0.0;
    for (o, &d) in out.iter_mut().zip(d2) {
        *o /= sum;
        h += beta * d * *o;
    }
    h + sum.ln()
}

/// A 2-D map of `p`, one `(x, y)` per point.
pub fn tsne(p: &Points<'_>, cfg: &TsneConfig) -> Result<Vec<(f32, f32)>, ClusterError> {
    let n = p.len();
    if n > MAX_POINTS {
        return Err(ClusterError::TooMany {
            what: "t-SNE",
            n,
            max: MAX_POINTS,
        });
    }
    if !(cfg.perplexity > 1.0 && cfg.perplexity < n as f64) {
        return Err(ClusterError::Parameter {
            name: "perplexity",
            value: cfg.perplexity.to_string(),
            reason: "must be above 1 and below the number of points",
        });
    }
    // Input affinities, each row calibrated by bisection on its precision.
    let target = cfg.perplexity.ln();
    let cond: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let d2: Vec<f64> = (0..n).map(|j| sq64(p.row(i), p.row(j))).collect();
            let mut out = vec![0f64; n];
            let (mut lo, mut hi, mut beta) = (0f64, f64::INFINITY, 1f64);
            for _ in 0..64 {
                let h = row(&d2, i, beta, &mut out);
                if (h - target).abs() < 1e-5 {
                    break;
                }
                if h > target {
                    lo = beta;
                    beta = if hi.is_finite() {
                        (beta + hi) / 2.0
                    } else {
                        beta * 2.0
                    };
                } else {
                    hi = beta;
                    beta = (beta + lo) / 2.0;
                }
            }
            out
        })
        .collect();
    let mut pij = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            pij[i * n + j] = ((cond[i][j] + cond[j][i]) / (2.0 * n as f64)).max(1e-12) as f32;
        }
    }
    drop(cond);
    let mut y: Vec<[f64; 2]> = start(n, cfg.seed)?
        .chunks_exact(2)
        .map(|c| [c[0], c[1]])
        .collect();
    let mut velocity = vec![[0f64; 2]; n];
    let mut gains = vec![[1f64; 2]; n];
    let lr = (n as f64 / 12.0).max(50.0);
    for it in 0..cfg.iterations {
        let exaggeration = if it < 250 { 12.0 } else { 1.0 };
        let momentum = if it < 250 { 0.5 } else { 0.8 };
        // Student-t kernel and its normaliser.
        let z: f64 = (0..n)
            .into_par_iter()
            .map(|i| {
                (0..n)
                    .filter(|&j| j != i)
                    .map(|j| {
                        1.0 / (1.0 + (y[i][0] - y[j][0]).powi(2) + (y[i][1] - y[j][1]).powi(2))
                    })
                    .sum::<f64>()
            })
            .collect::<Vec<f64>>()
            .iter()
            // Summed in order: a parallel float sum would depend on the thread schedule.
            .sum();
        let grads: Vec<[f64; 2]> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut g = [0f64; 2];
                for j in 0..n {
                    if j == i {
                        continue;
                    }
                    let (dx, dy) = (y[i][0] - y[j][0], y[i][1] - y[j][1]);
                    let w = 1.0 / (1.0 + dx * dx + dy * dy);
                    let m = (exaggeration * f64::from(pij[i * n + j]) - w / z) * w;
                    g[0] += 4.0 * m * dx;
                    g[1] += 4.0 * m * dy;
                }
                g
            })
            .collect();
        for i in 0..n {
            for a in 0..2 {
                let same = (grads[i][a] > 0.0) == (velocity[i][a] > 0.0);
                gains[i][a] = if same {
                    gains[i][a] * 0.8
                } else {
                    gains[i][a] + 0.2
                }
                .max(0.01);
                velocity[i][a] = momentum * velocity[i][a] - lr * gains[i][a] * grads[i][a];
                y[i][a] += velocity[i][a];
            }
        }
        let mean = y.iter().fold([0f64; 2], |m, p| {
            [m[0] + p[0] / n as f64, m[1] + p[1] / n as f64]
        });
        y.iter_mut().for_each(|p| {
            p[0] -= mean[0];
            p[1] -= mean[1];
        });
    }
    Ok(y.into_iter().map(|p| (p[0] as f32, p[1] as f32)).collect())
}

/// Barnes-Hut's accuracy: a quadtree cell is one point when its size over its distance is below
/// this (0.5 is the usual setting; 0 would be exact).
pub const THETA: f32 = 0.5;

/// The seeded start of both versions: each coordinate drawn from N(0, 1e-4).
fn start(n: usize, seed: u64) -> Result<Vec<f64>, ClusterError> {
    let normal = Normal::new(0.0, 1e-4).map_err(|_| ClusterError::Empty)?;
    let mut r = rng(seed, 5000);
    Ok((0..2 * n).map(|_| normal.sample(&mut r)).collect())
}

/// A 2-D map of `p` by Barnes-Hut t-SNE, one `(x, y)` per point, for any number of points
/// above `3 x perplexity + 1`; the same seed gives the same map (it runs on one thread).
pub fn barnes_hut(p: &Points<'_>, cfg: &TsneConfig) -> Result<Vec<(f32, f32)>, ClusterError> {
    let n = p.len();
    let neighbours = 3.0 * cfg.perplexity;
    if !(cfg.perplexity > 1.0 && neighbours + 1.0 < n as f64) {
        return Err(ClusterError::Parameter {
            name: "perplexity",
            value: cfg.perplexity.to_string(),
            reason: "must be above 1, and three times it below the number of points",
        });
    }
    if cfg.iterations == 0 {
        return Err(ClusterError::Parameter {
            name: "iterations",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    let rows: Vec<&[f32]> = (0..n).map(|i| p.row(i)).collect();
    let start: Vec<f32> = start(n, cfg.seed)?.into_iter().map(|v| v as f32).collect();
    // One thread: the crate's parallel sums depend on the thread schedule (two threads gave two
    // maps from one seed), and a seeded picture should be the same picture.
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| ClusterError::Thread(e.to_string()))?;
    let embedding = one.install(|| {
        let mut t: bhtsne::tSNE<f32, &[f32], 2> = bhtsne::tSNE::new(&rows);
        t.perplexity(cfg.perplexity as f32)
            .epochs(cfg.iterations)
            .initial_embedding(start)
            .barnes_hut(THETA, |a, b| {
                a.iter()
                    .zip(b.iter())
                    .map(|(x, y)| (x - y) * (x - y))
                    .sum::<f32>()
                    .sqrt()
            });
        t.embedding()
    });
    Ok(embedding.chunks_exact(2).map(|c| (c[0], c[1])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Either version of t-SNE.
    type Map = fn(&Points<'_>, &TsneConfig) -> Result<Vec<(f32, f32)>, ClusterError>;

    #[test]
    fn separated_blobs_stay_separated_in_the_map() {
        // Three blobs in 10-d; in the map each point's nearest neighbour is in its own blob.
        let mut xs = Vec::new();
        let mut s = 5u32;
        for i in 0..150 {
            for j in 0..10 {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                xs.push(if j == i % 3 { 10.0 } else { 0.0 } + noise);
            }
        }
        let p = Points::new(&xs, 10).unwrap();
        let cfg = TsneConfig {
            perplexity: 15.0,
            iterations: 400,
            seed: 1,
        };
        for (name, f) in [("exact", tsne as Map), ("Barnes-Hut", barnes_hut as Map)] {
            check_blobs(name, &p, &cfg, f);
        }
    }

    fn check_blobs(name: &str, p: &Points<'_>, cfg: &TsneConfig, f: Map) {
        let map = f(p, cfg).unwrap();
        let hits = (0..150)
            .filter(|&i| {
                let nn = (0..150)
                    .filter(|&j| j != i)
                    .min_by(|&a, &b| {
                        let d = |k: usize| {
                            (map[i].0 - map[k].0).powi(2) + (map[i].1 - map[k].1).powi(2)
                        };
                        d(a).total_cmp(&d(b))
                    })
                    .unwrap();
                nn % 3 == i % 3
            })
            .count();
        assert_eq!(hits, 150, "{name}");
        assert_eq!(map, f(p, cfg).unwrap(), "{name}: seeded");
        let bad = TsneConfig {
            perplexity: 200.0,
            ..*cfg
        };
        assert!(f(p, &bad).is_err(), "{name}");
    }
}

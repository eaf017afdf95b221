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
//! - neighbours are exact (brute force, O(n² d) time: N2D on 70,000 points of dimension 10
//!   takes about a minute on two cores, all steps included) rather than approximate
//!   (NN-descent);
//! - the layout is optimised by one thread with one seeded random stream, so the result is the
//!   same at every thread count (umap-learn is deterministic only single-threaded).

use rand::Rng;
use rayon::prelude::*;

use crate::{ClusterError, Fit, Fitted, Points, rng};

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

/// Every point's `m` nearest other points, found elsewhere (a GPU's batched distance products):
/// what UMAP's graph is built on, checked so the layout never sees a malformed neighbourhood.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    m: usize,
    idx: Vec<u32>,
    dist: Vec<f32>,
}

impl Neighbours {
    /// `idx` and `dist` row-major `[n, m]`: each row the indices of point `i`'s neighbours
    /// (never `i`, each below `n`) and their Euclidean distances, finite, non-negative and
    /// ascending.
    pub fn new(n: usize, m: usize, idx: Vec<u32>, dist: Vec<f32>) -> Result<Self, ClusterError> {
        for (what, got) in [
            ("neighbour indices", idx.len()),
            ("neighbour distances", dist.len()),
        ] {
            if m == 0 || got != n * m {
                return Err(ClusterError::Shape {
                    what,
                    expected: n * m.max(1),
                    got,
                });
            }
        }
        let bad = |i: usize, reason: &'static str| ClusterError::Parameter {
            name: "neighbours",
            value: format!("row {i}"),
            reason,
        };
        for (i, (js, ds)) in idx.chunks_exact(m).zip(dist.chunks_exact(m)).enumerate() {
            if js.iter().any(|&j| j as usize >= n || j as usize == i) {
                return Err(bad(i, "indices must name other points"));
            }
            if ds.iter().any(|d| !(d.is_finite() && *d >= 0.0))
                || ds.windows(2).any(|w| w[0] > w[1])
            {
                return Err(bad(
                    i,
                    "distances must be finite, non-negative and ascending",
                ));
            }
        }
        Ok(Self { m, idx, dist })
    }

    /// Neighbours per point.
    pub fn m(&self) -> usize {
        self.m
    }

    /// The indices and distances, row-major `[n, m]`.
    pub fn parts(&self) -> (&[u32], &[f32]) {
        (&self.idx, &self.dist)
    }
}

/// The exact `m` nearest other points of every point: indices and Euclidean distances, each
/// row sorted by distance (then index), row-major `[n, m]`. The search UMAP's graph is built
/// on, for callers that need the same neighbourhoods (it grows with n²).
pub fn nearest_neighbours(p: &Points<'_>, m: usize) -> Result<(Vec<u32>, Vec<f32>), ClusterError> {
    if m == 0 || m >= p.len() {
        return Err(ClusterError::Parameter {
            name: "neighbours",
            value: m.to_string(),
            reason: "must be at least 1 and less than the number of points",
        });
    }
    Ok(neighbours(p, m))
}

/// [`nearest_neighbours`] without the check (`0 < m < n`).
fn neighbours(p: &Points<'_>, m: usize) -> (Vec<u32>, Vec<f32>) {
    let n = p.len();
    let rows: Vec<Vec<(f32, u32)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let x = p.row(i);
            let mut best: Vec<(f32, u32)> = Vec::with_capacity(m + 1);
            for (j, y) in p.rows().enumerate() {
                if j == i {
                    continue;
                }
                let d2: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
                if best.len() == m && d2 >= best[m - 1].0 {
                    continue;
                }
                let at = best.partition_point(|&(e, _)| e <= d2);
                best.insert(at, (d2, j as u32));
                best.truncate(m);
            }
            best
        })
        .collect();
    let mut idx = Vec::with_capacity(n * m);
    let mut dist = Vec::with_capacity(n * m);
    for row in rows {
        for (d2, j) in row {
            idx.push(j);
            dist.push(d2.sqrt());
        }
    }
    (idx, dist)
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

/// The start of the layout, as umap-learn's: the eigenvectors of the graph's normalised
/// adjacency `D^-1/2 W D^-1/2` with the largest eigenvalues after the first (the smoothest
/// functions on the graph, so linked points start near each other and separate components
/// apart), scaled to a largest coordinate of 10, plus a little noise.
///
/// Found by Chebyshev-filtered subspace iteration with Rayleigh-Ritz (a block of eight vectors
/// more than needed): the wanted eigenvalues of a clustered graph lie within 1e-3 of each
/// other and of the unwanted ones near 1, where plain subspace iteration had not converged
/// after 500 products, and the layouts it started from clustered worse on Fashion-MNIST
/// (docs/RESULTS.md). A degree-20 filter that damps `[-1, cut]`, `cut` being the block's
/// lowest Ritz value, settles the wanted values to 1e-9 in a handful of rounds.
const FILTER_DEGREE: usize = 20;
const FILTER_ROUNDS: usize = 40;

fn spectral(n: usize, edges: &[(u32, u32, f32)], c: usize, seed: u64) -> Vec<f32> {
    // CSR of the graph, rows by source.
    let mut start = vec![0usize; n + 1];
    for e in edges {
        start[e.0 as usize + 1] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut cols = vec![0u32; edges.len()];
    let mut vals = vec![0f64; edges.len()];
    for &(i, j, w) in edges {
        let at = &mut fill[i as usize];
        cols[*at] = j;
        vals[*at] = f64::from(w);
        *at += 1;
    }
    let inv_sqrt_deg: Vec<f64> = (0..n)
        .map(|i| {
            let deg: f64 = vals[start[i]..start[i + 1]].iter().sum();
            if deg > 0.0 { 1.0 / deg.sqrt() } else { 0.0 }
        })
        .collect();
    for i in 0..n {
        for e in start[i]..start[i + 1] {
            vals[e] *= inv_sqrt_deg[i] * inv_sqrt_deg[cols[e] as usize];
        }
    }
    let s = (c + 1 + 8).min(n);
    // Column-major blocks: vector v is q[v * n..(v + 1) * n]. `step` writes
    // out = alpha * B cur + beta * cur + gamma * prev, B the normalised adjacency.
    let step = |cur: &[f64], prev: &[f64], out: &mut [f64], alpha: f64, beta: f64, gamma: f64| {
        out.par_chunks_mut(n)
            .zip(cur.par_chunks(n).zip(prev.par_chunks(n)))
            .for_each(|(o, (x, p))| {
                for i in 0..n {
                    let bx: f64 = (start[i]..start[i + 1])
                        .map(|e| vals[e] * x[cols[e] as usize])
                        .sum();
                    o[i] = alpha * bx + beta * x[i] + gamma * p[i];
                }
            });
    };
    let apply = |q: &[f64], out: &mut [f64]| step(q, q, out, 1.0, 0.0, 0.0);
    let mut r = rng(seed, 2);
    let normal = rand_distr::StandardNormal;
    let mut q: Vec<f64> = (0..n * s).map(|_| r.sample::<f64, _>(normal)).collect();
    orthonormalise(&mut q, n);
    let (mut y0, mut y1) = (vec![0f64; n * s], vec![0f64; n * s]);
    let mut ritz = rayleigh_ritz(&mut q, &mut y0, n, &apply);
    // A block as wide as the graph spans it, and its Ritz vectors are already exact.
    let rounds = if s == n { 0 } else { FILTER_ROUNDS };
    for _ in 0..rounds {
        // Chebyshev filter of degree FILTER_DEGREE, damping the spectrum in [-1, cut] (cut:
        // the lowest Ritz value of the block) and amplifying what lies above it. The interval
        // never closes: a bipartite graph has -1 in its spectrum.
        let cut = ritz[s - 1].clamp(-1.0 + 1e-9, 1.0 - 1e-9);
        let (centre, half) = ((cut - 1.0) / 2.0, (cut + 1.0) / 2.0);
        step(&q, &q, &mut y1, 1.0 / half, -centre / half, 0.0);
        std::mem::swap(&mut y0, &mut q); // y0 = q (the degree-0 term)
        for _ in 1..FILTER_DEGREE {
            step(&y1, &y0, &mut q, 2.0 / half, -2.0 * centre / half, -1.0);
            std::mem::swap(&mut y0, &mut y1);
            std::mem::swap(&mut y1, &mut q);
        }
        std::mem::swap(&mut q, &mut y1);
        orthonormalise(&mut q, n);
        let next = rayleigh_ritz(&mut q, &mut y0, n, &apply);
        let settled = next
            .iter()
            .zip(&ritz)
            .take(c + 1)
            .all(|(a, b)| (a - b).abs() < 1e-9);
        ritz = next;
        if settled {
            break;
        }
    }
    // Columns 1..=c, the first being the trivial (degree) vector.
    let max = q[n..n * (c + 1).min(s)]
        .iter()
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let noise = rand_distr::Normal::new(0.0, 1e-4).unwrap_or_else(|_| unreachable!());
    let mut y = vec![0f32; n * c];
    for i in 0..n {
        for k in 0..c {
            let v = if k + 1 < s { q[(k + 1) * n + i] } else { 0.0 };
            y[i * c + k] = (10.0 * v / max + r.sample::<f64, _>(noise)) as f32;
        }
    }
    y
}

/// Modified Gram-Schmidt on the column-major `[n, s]` block `q`; a column that vanishes is
/// left at zero.
fn orthonormalise(q: &mut [f64], n: usize) {
    let s = q.len() / n;
    for v in 0..s {
        let (done, rest) = q.split_at_mut(v * n);
        let col = &mut rest[..n];
        for u in done.chunks_exact(n) {
            let dot: f64 = u.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
            col.iter_mut().zip(u).for_each(|(x, a)| *x -= dot * a);
        }
        let norm = col.iter().map(|x| x * x).sum::<f64>().sqrt();
        let scale = if norm > 1e-300 { 1.0 / norm } else { 0.0 };
        col.iter_mut().for_each(|x| *x *= scale);
    }
}

/// Rotates the orthonormal block `q` onto the Ritz vectors of `apply`, in decreasing order of
/// Ritz value, and returns the values. `z` is scratch of the same size.
fn rayleigh_ritz(
    q: &mut [f64],
    z: &mut [f64],
    n: usize,
    apply: &(impl Fn(&[f64], &mut [f64]) + Sync),
) -> Vec<f64> {
    let s = q.len() / n;
    apply(q, z);
    let h = nalgebra::DMatrix::from_fn(s, s, |a, b| {
        q[a * n..(a + 1) * n]
            .iter()
            .zip(&z[b * n..(b + 1) * n])
            .map(|(x, y)| x * y)
            .sum::<f64>()
    });
    let h = (&h + h.transpose()) * 0.5;
    let eig = h.symmetric_eigen();
    let mut order: Vec<usize> = (0..s).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    z.par_chunks_mut(n).enumerate().for_each(|(v, out)| {
        out.iter_mut().for_each(|x| *x = 0.0);
        let col = order[v];
        for u in 0..s {
            let w = eig.eigenvectors[(u, col)];
            out.iter_mut()
                .zip(&q[u * n..(u + 1) * n])
                .for_each(|(o, x)| *o += w * x);
        }
    });
    q.copy_from_slice(z);
    order.iter().map(|&v| eig.eigenvalues[v]).collect()
}

/// Which mixture on the layout N2D keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixture {
    /// EM once, from the lowest-inertia of 10 k-means++ starts (see
    /// [`GmmConfig::restarts`](crate::gmm::GmmConfig::restarts)): for layouts of a few tight
    /// clusters (a 10-d latent), where the best k-means start is the right partition and the
    /// likelihood was not always the judge to trust (it kept a merged pair on 2 of 5 layouts of
    /// the demo's sensor data).
    BestStart,
    /// EM from each of this many single k-means++ starts, the likeliest mixture kept
    /// ([`fit_likeliest`](crate::gmm::fit_likeliest)): for layouts with many local optima of
    /// about the same fit (a convolutional feature map).
    Likeliest(u64),
}

/// N2D's clustering (McConville et al., 2020): a full-covariance Gaussian mixture of `k`
/// components on a `k`-dimensional UMAP layout of the points (N2D's settings,
/// [`UmapConfig::new`]), kept as `mixture` says. N2D's own mixture starts from a single k-means
/// run; on these layouts that merged two clusters and split a third often enough to undo what
/// the layout gains.
///
/// [`GmmConfig::new`]: crate::gmm::GmmConfig::new
/// [`GmmConfig::restarts`]: crate::gmm::GmmConfig::restarts
/// [`fit_likeliest`]: crate::gmm::fit_likeliest
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct N2dConfig<'a> {
    /// Clusters (and the layout's dimension).
    pub k: usize,
    /// Seed of the layout and the mixture's starts.
    pub seed: u64,
    /// Which mixture is kept.
    pub mixture: Mixture,
    /// Each point's nearest others when already found (a GPU's distance products; there must be
    /// [`N2dConfig::neighbours_needed`] per point), else the exact search runs.
    pub neighbours: Option<&'a Neighbours>,
}

impl N2dConfig<'_> {
    /// The neighbours per point N2D's graph is built on for `n` points and `k` clusters.
    pub fn neighbours_needed(n: usize, k: usize) -> usize {
        UmapConfig::new(k).neighbors.min(n.saturating_sub(1)).max(2) - 1
    }
}

/// N2D's partition of the points it was fitted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct N2d {
    /// Each point's component.
    pub labels: Vec<u32>,
}

impl Fit for N2dConfig<'_> {
    type Model = N2d;

    fn fit(&self, p: &Points<'_>) -> Result<N2d, ClusterError> {
        let k = self.k;
        if k == 0 || k > p.len() {
            return Err(ClusterError::BadK { k, n: p.len() });
        }
        let cfg = UmapConfig {
            seed: self.seed,
            neighbors: Self::neighbours_needed(p.len(), k) + 1,
            ..UmapConfig::new(k)
        };
        let y = layout_with(p, &cfg, self.neighbours)?;
        let y = Points::new(&y, k)?;
        let gmm = crate::gmm::GmmConfig {
            seed: self.seed,
            ..crate::gmm::GmmConfig::new(k, crate::gmm::Covariance::Full)
        };
        let fitted = match self.mixture {
            Mixture::BestStart => gmm.fit(&y)?,
            Mixture::Likeliest(starts) => crate::gmm::fit_likeliest(&y, &gmm, starts)?,
        };
        Ok(N2d {
            labels: fitted.labels,
        })
    }
}

impl Fitted for N2d {
    fn assignments(&self) -> Vec<Option<u32>> {
        self.labels.iter().copied().map(Some).collect()
    }
}

fn clip(g: f64) -> f64 {
    g.clamp(-4.0, 4.0)
}

/// A `[n, cfg.components]` row-major UMAP layout of `p`.
pub fn layout(p: &Points<'_>, cfg: &UmapConfig) -> Result<Vec<f32>, ClusterError> {
    layout_with(p, cfg, None)
}

/// [`layout`] from precomputed neighbourhoods (`cfg.neighbors - 1` per point) when given, else
/// from the exact search.
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
        Some(k) if k.m != m || k.idx.len() != n * m => {
            return Err(ClusterError::Shape {
                what: "precomputed neighbours",
                expected: n * m,
                got: k.idx.len(),
            });
        }
        Some(k) => graph(&k.idx, &k.dist, cfg.neighbors),
        None => {
            let (idx, dist) = neighbours(p, m);
            graph(&idx, &dist, cfg.neighbors)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmeans::KMeansConfig;
    use crate::metrics::accuracy;

    fn n2d(
        p: &Points<'_>,
        k: usize,
        seed: u64,
        mixture: Mixture,
    ) -> Result<Vec<u32>, ClusterError> {
        Ok(N2dConfig {
            k,
            seed,
            mixture,
            neighbours: None,
        }
        .fit(p)?
        .labels)
    }
    use rand_distr::{Distribution, Normal};

    /// Two parallel strokes 20 long and 3 apart, `per` points each: k-means with k = 2 cuts
    /// them across (left half against right half has the lower inertia), while every point's
    /// neighbours lie on its own stroke.
    fn strokes(per: usize) -> (Vec<f32>, Vec<u32>) {
        let mut r = rng(7, 0);
        let noise = Normal::new(0.0f32, 0.05).unwrap();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for s in 0..2u32 {
            for i in 0..per {
                xs.push(20.0 * i as f32 / per as f32 + noise.sample(&mut r));
                xs.push(3.0 * s as f32 + noise.sample(&mut r));
                ys.push(s);
            }
        }
        (xs, ys)
    }

    fn two_means(xs: &[f32], d: usize) -> Vec<u32> {
        let cfg = KMeansConfig {
            restarts: 5,
            max_iter: 100,
            ..KMeansConfig::new(2)
        };
        cfg.fit(&Points::new(xs, d).unwrap()).unwrap().labels
    }

    #[test]
    fn the_layout_keeps_strokes_apart_that_kmeans_cuts_across() {
        let (xs, truth) = strokes(200);
        let p = Points::new(&xs, 2).unwrap();
        assert!(accuracy(&two_means(&xs, 2), &truth) < 0.75);
        let cfg = UmapConfig {
            neighbors: 10,
            ..UmapConfig::new(2)
        };
        let y = layout(&p, &cfg).unwrap();
        assert_eq!(y.len(), 400 * 2);
        assert!(y.iter().all(|v| v.is_finite()));
        // In the layout, every point's nearest neighbours are on its own stroke, so the two
        // strokes are the two branches of the single-linkage tree.
        let (idx, _) = neighbours(&Points::new(&y, 2).unwrap(), 5);
        for (i, row) in idx.chunks(5).enumerate() {
            assert!(
                row.iter().all(|&j| truth[j as usize] == truth[i]),
                "point {i}"
            );
        }
        let tree = crate::hierarchy::linkage(
            &Points::new(&y, 2).unwrap(),
            crate::hierarchy::Linkage::Single,
        )
        .unwrap();
        assert_eq!(accuracy(&tree.cut(2).unwrap(), &truth), 1.0);
        // Same seed, same layout, to the bit; another seed, another layout.
        assert_eq!(layout(&p, &cfg).unwrap(), y);
        assert_ne!(layout(&p, &UmapConfig { seed: 1, ..cfg }).unwrap(), y);
    }

    #[test]
    fn a_mixture_on_the_layout_of_blobs_finds_them() {
        let mut r = rng(3, 0);
        let noise = Normal::new(0.0f32, 1.0).unwrap();
        let (mut xs, mut truth) = (Vec::new(), Vec::new());
        for i in 0..600 {
            let c = i % 4;
            for j in 0..6 {
                xs.push(if j == c { 12.0 } else { 0.0 } + noise.sample(&mut r));
            }
            truth.push(c as u32);
        }
        let y = layout(&Points::new(&xs, 6).unwrap(), &UmapConfig::new(4)).unwrap();
        let cfg = crate::gmm::GmmConfig::new(4, crate::gmm::Covariance::Full);
        let g = cfg.fit(&Points::new(&y, 4).unwrap()).unwrap();
        assert_eq!(accuracy(&g.labels, &truth), 1.0);
        // N2D whole, with either choice of mixture: where one partition stands out both find
        // it.
        let p = Points::new(&xs, 6).unwrap();
        for mixture in [Mixture::BestStart, Mixture::Likeliest(5)] {
            assert_eq!(
                accuracy(&n2d(&p, 4, 0, mixture).unwrap(), &truth),
                1.0,
                "{mixture:?}"
            );
        }
    }

    #[test]
    fn a_path_graph_of_three_points_gets_a_finite_layout() {
        // Each point's one neighbour makes the path 0 - 2 - 1: bipartite, so -1 is in its
        // spectrum, and the 3-column block spans the whole graph. Both once made NaN.
        let xs = [0.0f32, 0.0, 5.0, 5.0, 0.5, 0.2];
        let p = Points::new(&xs, 2).unwrap();
        let cfg = UmapConfig {
            neighbors: 2,
            ..UmapConfig::new(2)
        };
        let y = layout(&p, &cfg).unwrap();
        assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
        for mixture in [Mixture::BestStart, Mixture::Likeliest(3)] {
            assert_eq!(n2d(&p, 2, 0, mixture).unwrap().len(), 3);
        }
    }

    #[test]
    fn neighbours_are_the_nearest_others_in_order() {
        // Points on a line at 0, 1, 3, 6, 10.
        let xs = [0.0f32, 1.0, 3.0, 6.0, 10.0];
        let p = Points::new(&xs, 1).unwrap();
        let (idx, dist) = nearest_neighbours(&p, 2).unwrap();
        assert_eq!(idx, [1, 2, 0, 2, 1, 0, 2, 4, 3, 2]);
        assert_eq!(dist, [1.0, 3.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 7.0]);
        // Every point has 4 others: asking for none or for 5 is an error, not ragged rows.
        for m in [0, 5] {
            match nearest_neighbours(&p, m) {
                Err(ClusterError::Parameter { name, .. }) => assert_eq!(name, "neighbours"),
                other => panic!("m = {m}: {other:?}"),
            }
        }
    }

    #[test]
    fn strengths_sum_to_log2_of_the_neighbourhood() {
        let ds = [0.5f32, 0.9, 1.4, 2.0, 2.2, 3.5];
        let mut out = [0f32; 6];
        strengths(&ds, 7, 1.0, &mut out);
        // The nearest neighbour is fully connected; the rest fall off with distance.
        assert_eq!(out[0], 1.0);
        assert!(out.windows(2).all(|w| w[0] >= w[1]));
        let sum: f32 = out.iter().sum();
        assert!((sum - 7f32.log2()).abs() < 1e-4, "{sum}");
    }

    #[test]
    fn precomputed_neighbours_give_the_exact_searchs_layout_and_bad_ones_are_refused() {
        let (xs, _) = strokes(100);
        let p = Points::new(&xs, 2).unwrap();
        let cfg = UmapConfig {
            neighbors: 10,
            ..UmapConfig::new(2)
        };
        let (idx, dist) = nearest_neighbours(&p, 9).unwrap();
        let known = Neighbours::new(p.len(), 9, idx.clone(), dist.clone()).unwrap();
        assert_eq!(
            layout_with(&p, &cfg, Some(&known)).unwrap(),
            layout(&p, &cfg).unwrap()
        );
        let n2d_known = N2dConfig {
            k: 2,
            seed: 0,
            mixture: Mixture::BestStart,
            neighbours: None,
        };
        let needed = N2dConfig::neighbours_needed(p.len(), 2);
        let (idx2, dist2) = nearest_neighbours(&p, needed).unwrap();
        let known2 = Neighbours::new(p.len(), needed, idx2, dist2).unwrap();
        assert_eq!(
            N2dConfig {
                neighbours: Some(&known2),
                ..n2d_known
            }
            .fit(&p)
            .unwrap(),
            n2d_known.fit(&p).unwrap()
        );
        // Too few per point for the graph, a point among its own neighbours, a row out of order.
        let fewer = Neighbours::new(
            p.len(),
            1,
            idx.iter().step_by(9).copied().collect(),
            dist.iter().step_by(9).copied().collect(),
        )
        .unwrap();
        assert!(layout_with(&p, &cfg, Some(&fewer)).is_err());
        let mut own = idx.clone();
        own[0] = 0;
        assert!(Neighbours::new(p.len(), 9, own, dist.clone()).is_err());
        let mut unordered = dist.clone();
        unordered[0] = unordered[1] + 1.0;
        assert!(Neighbours::new(p.len(), 9, idx.clone(), unordered).is_err());
        assert!(Neighbours::new(p.len(), 9, idx, vec![0.0; 3]).is_err());
    }

    #[test]
    fn the_graph_is_symmetric_and_unions_both_directions() {
        let (xs, _) = strokes(30);
        let (idx, dist) = neighbours(&Points::new(&xs, 2).unwrap(), 4);
        let edges = graph(&idx, &dist, 5);
        let mut seen = std::collections::HashMap::new();
        for &(i, j, w) in &edges {
            assert_ne!(i, j);
            assert!(w > 0.0 && w <= 1.0, "{w}");
            assert!(seen.insert((i, j), w).is_none(), "edge {i}->{j} twice");
        }
        for (&(i, j), &w) in &seen {
            assert_eq!(seen.get(&(j, i)), Some(&w));
        }
    }

    #[test]
    fn the_similarity_curve_matches_umap_learn() {
        // umap-learn 0.5.12: find_ab_params(1.0, 0.0) and find_ab_params(1.0, 0.1).
        for (min_dist, want) in [(0.0, (1.932808, 0.790495)), (0.1, (1.576943, 0.895061))] {
            let (a, b) = curve(min_dist);
            assert!(
                (a - want.0).abs() < 1e-3 && (b - want.1).abs() < 1e-3,
                "{a} {b}"
            );
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let xs = [0.0f32, 1.0, 2.0, 3.0];
        let p = Points::new(&xs, 1).unwrap();
        for (cfg, name) in [
            (UmapConfig::new(0), "components"),
            (UmapConfig::new(2), "neighbors"),
            (
                UmapConfig {
                    neighbors: 2,
                    min_dist: -0.5,
                    ..UmapConfig::new(2)
                },
                "min_dist",
            ),
            (
                UmapConfig {
                    neighbors: 2,
                    epochs: 0,
                    ..UmapConfig::new(2)
                },
                "epochs",
            ),
        ] {
            match layout(&p, &cfg) {
                Err(ClusterError::Parameter { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}

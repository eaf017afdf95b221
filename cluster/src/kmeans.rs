//! k-means with k-means++ seeding and restarts, on row-major `f32` points.
//!
//! Written here rather than taken from a crate because DEKM calls it on every iteration with a
//! warm start from the previous centroids, and needs bit-for-bit reproducible results for a given
//! seed whatever the thread count: restarts run in parallel but each has its own random stream
//! and the winner is chosen by (inertia, restart index).

use rand::Rng;
use rayon::prelude::*;

use crate::{ClusterError, Fit, Fitted, Points, Predict, rng};

/// How a k-means fit starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum KMeansInit {
    /// [`KMeansConfig::restarts`] k-means++ seedings; the lowest inertia wins.
    #[default]
    PlusPlus,
    /// The k-means++ seedings and one more run from these `[k, d]` centres, the lowest inertia
    /// winning: DEKM passes the previous iteration's, so a fit is never worse than where the
    /// last one ended.
    Warm(Vec<f32>),
    /// Lloyd's iterations from exactly these `[k, d]` centres and nothing else: resuming a
    /// clustering where it was.
    Precomputed(Vec<f32>),
}

/// Settings of a k-means fit.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansConfig {
    /// Number of clusters.
    pub k: usize,
    /// Independent k-means++ seedings; the lowest inertia wins.
    pub restarts: usize,
    /// Lloyd iterations per run.
    pub max_iter: usize,
    /// Seed of the restarts' random streams.
    pub seed: u64,
    /// Where the runs start.
    pub init: KMeansInit,
}

impl KMeansConfig {
    /// `k` clusters, the lowest inertia of 10 k-means++ restarts of up to 300 Lloyd iterations
    /// (scikit-learn's `n_init` of old and its `max_iter`), seed 0.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            restarts: 10,
            max_iter: 300,
            seed: 0,
            init: KMeansInit::PlusPlus,
        }
    }
}

/// A fitted clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Dimension of the points.
    pub d: usize,
    /// Row-major `[k, d]` centres.
    pub centroids: Vec<f32>,
    /// Cluster of each point.
    pub labels: Vec<u32>,
    /// Sum of squared distances of points to their centres.
    pub inertia: f64,
}

fn sq(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index and squared distance of the nearest centre (lowest index on ties).
fn nearest(x: &[f32], centroids: &[f32], d: usize) -> (usize, f32) {
    centroids
        .chunks_exact(d)
        .enumerate()
        .fold((0, f32::INFINITY), |best, (c, mu)| {
            let dist = sq(x, mu);
            if dist < best.1 { (c, dist) } else { best }
        })
}

/// Greedy k-means++ (as scikit-learn): each new centre is the best of `2 + ln k` candidates
/// drawn proportionally to the squared distance to the chosen centres.
fn plus_plus(xs: &[f32], d: usize, k: usize, r: &mut impl Rng) -> Vec<f32> {
    let n = xs.len() / d;
    let point = |i: usize| &xs[i * d..(i + 1) * d];
    let mut centroids = point(r.random_range(0..n)).to_vec();
    let mut dist: Vec<f32> = (0..n).map(|i| sq(point(i), &centroids)).collect();
    let trials = 2 + (k as f64).ln() as usize;
    for _ in 1..k {
        let total: f64 = dist.iter().map(|&x| f64::from(x)).sum();
        let mut best: Option<(f64, usize, Vec<f32>)> = None;
        for _ in 0..trials {
            let cand = if total > 0.0 {
                let mut target = r.random::<f64>() * total;
                dist.iter()
                    .position(|&x| {
                        target -= f64::from(x);
                        target < 0.0
                    })
                    .unwrap_or(n - 1)
            } else {
                r.random_range(0..n)
            };
            let new: Vec<f32> = (0..n)
                .map(|i| dist[i].min(sq(point(i), point(cand))))
                .collect();
            let pot: f64 = new.iter().map(|&x| f64::from(x)).sum();
            if best.as_ref().is_none_or(|b| pot < b.0) {
                best = Some((pot, cand, new));
            }
        }
        if let Some((_, cand, new)) = best {
            centroids.extend_from_slice(point(cand));
            dist = new;
        }
    }
    centroids
}

/// Each cluster's mean (`[k, d]`, zero for an empty one) and size.
fn means(xs: &[f32], d: usize, k: usize, labels: &[u32]) -> (Vec<f32>, Vec<usize>) {
    let mut sums = vec![0f64; k * d];
    let mut counts = vec![0usize; k];
    for (x, &l) in xs.chunks_exact(d).zip(labels) {
        counts[l as usize] += 1;
        for (s, &v) in sums[l as usize * d..][..d].iter_mut().zip(x) {
            *s += f64::from(v);
        }
    }
    let means = sums
        .chunks_exact(d)
        .zip(&counts)
        .flat_map(|(s, &c)| s.iter().map(move |v| (v / c.max(1) as f64) as f32))
        .collect();
    (means, counts)
}

/// Which of `n` points is farthest from its centre (`dist`), the first of equals: an empty
/// cluster takes it, in [`lloyd`] and in [`KMeans::from_labels`] alike.
fn farthest(n: usize, dist: impl Fn(usize) -> f32) -> usize {
    (0..n)
        .max_by(|&a, &b| dist(a).total_cmp(&dist(b)).then(b.cmp(&a)))
        .unwrap_or(0)
}

impl KMeans {
    /// The clustering of `p` with the given labels (one per point, each below `k`), each
    /// centre the mean of its members: DEKM's manifold start holds a partition that k-means
    /// did not make. An empty cluster takes the point farthest from its centre, as a k-means
    /// fit does, and the centres are recomputed.
    pub fn from_labels(p: &Points<'_>, k: usize, labels: Vec<u32>) -> Result<Self, ClusterError> {
        crate::check_labels(p, &labels)?;
        if k == 0 || k > p.len() {
            return Err(ClusterError::BadK { k, n: p.len() });
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= k) {
            return Err(ClusterError::Parameter {
                name: "label",
                value: l.to_string(),
                reason: "must be below k",
            });
        }
        Ok(from_labels(p.as_slice(), p.dim(), k, labels))
    }
}

impl Fitted for KMeans {
    fn assignments(&self) -> Vec<Option<u32>> {
        self.labels.iter().copied().map(Some).collect()
    }
}

impl Predict for KMeans {
    /// The nearest centre of each point (lowest index on ties).
    fn predict(&self, p: &Points<'_>) -> Result<Vec<u32>, ClusterError> {
        if p.dim() != self.d {
            return Err(ClusterError::Shape {
                what: "point dimension",
                expected: self.d,
                got: p.dim(),
            });
        }
        Ok(p.rows()
            .map(|x| nearest(x, &self.centroids, self.d).0 as u32)
            .collect())
    }
}

/// [`KMeans::from_labels`] on checked input.
fn from_labels(xs: &[f32], d: usize, k: usize, mut labels: Vec<u32>) -> KMeans {
    let dist = |x: &[f32], m: &[f32]| f64::from(sq(x, m));
    let (mut centroids, mut counts) = means(xs, d, k, &labels);
    // Each pass fills one empty cluster; k passes fill them all.
    for _ in 0..k {
        let Some(c) = counts.iter().position(|&n| n == 0) else {
            break;
        };
        let far = farthest(labels.len(), |i| {
            sq(&xs[i * d..][..d], &centroids[labels[i] as usize * d..][..d])
        });
        labels[far] = c as u32;
        (centroids, counts) = means(xs, d, k, &labels);
    }
    let inertia = xs
        .chunks_exact(d)
        .zip(&labels)
        .map(|(x, &l)| dist(x, &centroids[l as usize * d..][..d]))
        .sum();
    KMeans {
        d,
        centroids,
        labels,
        inertia,
    }
}

/// Lloyd iterations from `centroids` until assignments stop changing.
fn lloyd(xs: &[f32], d: usize, mut centroids: Vec<f32>, max_iter: usize) -> KMeans {
    let n = xs.len() / d;
    let k = centroids.len() / d;
    let mut labels = vec![u32::MAX; n];
    let mut dists = vec![0f32; n];
    for _ in 0..max_iter.max(1) {
        let mut changed = false;
        for (i, x) in xs.chunks_exact(d).enumerate() {
            let (c, dist) = nearest(x, &centroids, d);
            changed |= labels[i] != c as u32;
            labels[i] = c as u32;
            dists[i] = dist;
        }
        let (means, counts) = means(xs, d, k, &labels);
        for c in 0..k {
            if counts[c] == 0 {
                let far = farthest(n, |i| dists[i]);
                centroids[c * d..(c + 1) * d].copy_from_slice(&xs[far * d..(far + 1) * d]);
                dists[far] = 0.0;
                labels[far] = c as u32;
                changed = true;
            } else {
                centroids[c * d..(c + 1) * d].copy_from_slice(&means[c * d..(c + 1) * d]);
            }
        }
        if !changed {
            break;
        }
    }
    // Final assignment against the final centres so labels and inertia are consistent.
    let mut inertia = 0f64;
    for (i, x) in xs.chunks_exact(d).enumerate() {
        let (c, dist) = nearest(x, &centroids, d);
        labels[i] = c as u32;
        inertia += f64::from(dist);
    }
    KMeans {
        d,
        centroids,
        labels,
        inertia,
    }
}

impl Fit for KMeansConfig {
    type Model = KMeans;

    /// Fits k-means on `p` from [`KMeansConfig::init`]. Restarts run in parallel, each on its
    /// own random stream; ties go to the lowest restart, the warm run counting last.
    fn fit(&self, p: &Points<'_>) -> Result<KMeans, ClusterError> {
        let (xs, d, n) = (p.as_slice(), p.dim(), p.len());
        if self.k == 0 || self.k > n {
            return Err(ClusterError::BadK { k: self.k, n });
        }
        let centres = |what, c: &[f32]| {
            if c.len() == self.k * d {
                Ok(())
            } else {
                Err(ClusterError::Shape {
                    what,
                    expected: self.k * d,
                    got: c.len(),
                })
            }
        };
        let warm = match &self.init {
            KMeansInit::PlusPlus => None,
            KMeansInit::Warm(w) => {
                centres("warm-start centroids", w)?;
                Some(w)
            }
            KMeansInit::Precomputed(c) => {
                centres("centroids", c)?;
                return Ok(lloyd(xs, d, c.clone(), self.max_iter));
            }
        };
        let runs: Vec<KMeans> = (0..self.restarts.max(1))
            .into_par_iter()
            .map(|r| {
                let init = plus_plus(xs, d, self.k, &mut rng(self.seed, 1000 + r as u64));
                lloyd(xs, d, init, self.max_iter)
            })
            .chain(warm.map(|w| lloyd(xs, d, w.clone(), self.max_iter)))
            .collect();
        // `min_by` keeps the first of equal elements, so ties go to the lowest restart index.
        Ok(runs
            .into_iter()
            .min_by(|a, b| a.inertia.total_cmp(&b.inertia))
            .unwrap_or_else(|| unreachable!("at least one restart")))
    }
}

/// Settings of mini-batch k-means (Sculley, 2010).
#[derive(Debug, Clone, Copy)]
pub struct MiniBatchConfig {
    /// Number of clusters.
    pub k: usize,
    /// Points per batch.
    pub batch: usize,
    /// Batches.
    pub iterations: usize,
    /// Seed of the seeding sample and the batches.
    pub seed: u64,
}

impl Fit for MiniBatchConfig {
    type Model = KMeans;

    /// Mini-batch k-means: k-means++ on a sample, then per-centre running means over random
    /// batches; labels and inertia from a final full assignment. Much faster than a full fit
    /// for large `n`, at a small cost in inertia.
    fn fit(&self, p: &Points<'_>) -> Result<KMeans, ClusterError> {
        fit_minibatch(p, self)
    }
}

fn fit_minibatch(p: &Points<'_>, cfg: &MiniBatchConfig) -> Result<KMeans, ClusterError> {
    let (xs, d, n) = (p.as_slice(), p.dim(), p.len());
    if cfg.k == 0 || cfg.k > n {
        return Err(ClusterError::BadK { k: cfg.k, n });
    }
    if cfg.batch == 0 {
        return Err(ClusterError::Parameter {
            name: "batch",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    let mut r = rng(cfg.seed, 3000);
    let init_n = n.min((3 * cfg.batch).max(cfg.k));
    let idx = rand::seq::index::sample(&mut r, n, init_n);
    let sample: Vec<f32> = idx.iter().flat_map(|i| p.row(i).iter().copied()).collect();
    let mut centroids = plus_plus(&sample, d, cfg.k, &mut r);
    let mut counts = vec![0u64; cfg.k];
    for _ in 0..cfg.iterations {
        for _ in 0..cfg.batch {
            let x = p.row(r.random_range(0..n));
            let (c, _) = nearest(x, &centroids, d);
            counts[c] += 1;
            let eta = 1.0 / counts[c] as f32;
            for (m, v) in centroids[c * d..(c + 1) * d].iter_mut().zip(x) {
                *m += eta * (v - *m);
            }
        }
    }
    let (labels, inertia): (Vec<u32>, f64) = {
        let pairs: Vec<(u32, f32)> = xs
            .par_chunks(d)
            .map(|x| {
                let (c, dist) = nearest(x, &centroids, d);
                (c as u32, dist)
            })
            .collect();
        let inertia = pairs.iter().map(|p| f64::from(p.1)).sum();
        (pairs.into_iter().map(|p| p.0).collect(), inertia)
    };
    Ok(KMeans {
        d,
        centroids,
        labels,
        inertia,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::accuracy;
    use rand_distr::{Distribution, Normal};

    /// A fit of `xs` (`[n, d]`) from `cfg`, warm-started from `warm` when given.
    fn fit(
        xs: &[f32],
        d: usize,
        cfg: &KMeansConfig,
        warm: Option<&[f32]>,
    ) -> Result<KMeans, ClusterError> {
        let init = warm.map_or(KMeansInit::PlusPlus, |w| KMeansInit::Warm(w.to_vec()));
        KMeansConfig {
            init,
            ..cfg.clone()
        }
        .fit(&Points::new(xs, d)?)
    }

    fn fit_minibatch(xs: &[f32], d: usize, cfg: &MiniBatchConfig) -> Result<KMeans, ClusterError> {
        cfg.fit(&Points::new(xs, d)?)
    }

    #[test]
    fn labels_make_centres_and_an_empty_cluster_takes_the_farthest_point() {
        // Points 0, 1, 10 (1-d); all in cluster 0 of 2.
        let km = from_labels(&[0.0, 1.0, 10.0], 1, 2, vec![0, 0, 0]);
        assert_eq!(km.labels, [0, 0, 1]);
        assert_eq!(km.centroids, [0.5, 10.0]);
        assert_eq!(km.inertia, 0.5);
        let km = from_labels(&[0.0, 2.0, 10.0], 1, 2, vec![0, 0, 1]);
        assert_eq!(km.centroids, [1.0, 10.0]);
        assert_eq!(km.inertia, 2.0);
    }

    /// `k` well-separated Gaussian blobs in `d` dimensions.
    pub(crate) fn blobs(k: usize, per: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut r = rng(seed, 0);
        let noise = Normal::new(0.0f32, 0.5).unwrap();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for i in 0..per * k {
            let c = i % k;
            for j in 0..d {
                let centre = if j == c % d {
                    20.0 * (1 + c / d) as f32
                } else {
                    0.0
                };
                xs.push(centre + noise.sample(&mut r));
            }
            ys.push(c as u32);
        }
        (xs, ys)
    }

    fn cfg(k: usize) -> KMeansConfig {
        KMeansConfig {
            k,
            restarts: 4,
            max_iter: 100,
            seed: 3,
            init: KMeansInit::PlusPlus,
        }
    }

    #[test]
    fn minibatch_finds_the_blobs_and_checks_its_input() {
        let (xs, truth) = blobs(3, 200, 2, 5);
        let cfg = MiniBatchConfig {
            k: 3,
            batch: 64,
            iterations: 50,
            seed: 1,
        };
        let km = fit_minibatch(&xs, 2, &cfg).unwrap();
        assert_eq!(accuracy(&km.labels, &truth), 1.0);
        assert_eq!(km, fit_minibatch(&xs, 2, &cfg).unwrap());
        for bad in [
            MiniBatchConfig { k: 0, ..cfg },
            MiniBatchConfig { batch: 0, ..cfg },
        ] {
            assert!(fit_minibatch(&xs, 2, &bad).is_err());
        }
    }

    #[test]
    fn separates_blobs_perfectly() {
        let (xs, ys) = blobs(6, 50, 4, 1);
        let km = fit(&xs, 4, &cfg(6), None).unwrap();
        assert_eq!(accuracy(&km.labels, &ys), 1.0);
        assert_eq!(km.centroids.len(), 24);
    }

    #[test]
    fn deterministic_and_warm_start_never_worse() {
        let (xs, _) = blobs(5, 40, 3, 2);
        let a = fit(&xs, 3, &cfg(5), None).unwrap();
        assert_eq!(a, fit(&xs, 3, &cfg(5), None).unwrap());
        let w = fit(&xs, 3, &cfg(5), Some(&a.centroids)).unwrap();
        assert!(w.inertia <= a.inertia + 1e-9);
    }

    #[test]
    fn bad_input_is_rejected() {
        let xs = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(
            fit(&xs, 2, &cfg(0), None),
            Err(ClusterError::BadK { k: 0, n: 2 })
        );
        assert_eq!(
            fit(&xs, 2, &cfg(3), None),
            Err(ClusterError::BadK { k: 3, n: 2 })
        );
        assert!(matches!(
            fit(&xs, 3, &cfg(1), None),
            Err(ClusterError::Shape { .. })
        ));
        assert_eq!(
            fit(&[0.0, f32::NAN, 1.0, 1.0], 2, &cfg(1), None),
            Err(ClusterError::NotFinite { index: 0 })
        );
        assert!(matches!(
            fit(&xs, 2, &cfg(1), Some(&[0.0])),
            Err(ClusterError::Shape { .. })
        ));
    }

    #[test]
    fn a_precomputed_start_resumes_and_the_fit_predicts_its_own_labels() {
        let (xs, _) = blobs(4, 30, 2, 7);
        let p = Points::new(&xs, 2).unwrap();
        let a = cfg(4).fit(&p).unwrap();
        let resumed = KMeansConfig {
            init: KMeansInit::Precomputed(a.centroids.clone()),
            ..cfg(4)
        }
        .fit(&p)
        .unwrap();
        assert_eq!(resumed, a);
        assert_eq!(a.predict(&p).unwrap(), a.labels);
        assert!(a.predict(&Points::new(&[0.0; 3], 3).unwrap()).is_err());
        assert!(KMeans::from_labels(&p, 4, vec![4; p.len()]).is_err());
        assert!(KMeans::from_labels(&p, 4, vec![0; 3]).is_err());
    }

    #[test]
    fn identical_points_fill_every_cluster() {
        let xs = vec![1.0f32; 20];
        let km = fit(&xs, 2, &cfg(3), None).unwrap();
        assert_eq!(km.inertia, 0.0);
        assert_eq!(km.labels.len(), 10);
    }
}

//! Internal clustering metrics (no labels needed): silhouette, Calinski-Harabasz, Davies-Bouldin
//! and Dunn, with scikit-learn's definitions (Dunn: smallest distance between points of
//! different clusters over the largest cluster diameter). Distances are Euclidean, sums in f64.
//!
//! Silhouette and Dunn look at every pair of points. Up to [`PairOptions::max_exact`] points
//! they are exact; beyond, they are computed on a seeded random sample of that many points
//! (scikit-learn's `sample_size`), and the result says so.

use std::collections::BTreeMap;

use rand::seq::index::sample;
use rayon::prelude::*;

use crate::{ClusterError, Points, check_labels, rng, sq64};

/// How the pairwise metrics treat large data.
#[derive(Debug, Clone, Copy)]
pub struct PairOptions {
    /// Largest number of points handled exactly; beyond, a sample of this size.
    pub max_exact: usize,
    /// Seed of the sample.
    pub seed: u64,
}

impl Default for PairOptions {
    fn default() -> Self {
        Self {
            max_exact: 20_000,
            seed: 0,
        }
    }
}

/// A pairwise metric's value and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairScore {
    /// The metric.
    pub value: f64,
    /// `Some(m)` when computed on a random sample of `m` points.
    pub sampled: Option<usize>,
}

/// Labels renumbered `0..c` in order of first value, and `c`.
fn dense(labels: &[u32]) -> (Vec<usize>, usize) {
    let mut ids = BTreeMap::new();
    for &l in labels {
        let next = ids.len();
        ids.entry(l).or_insert(next);
    }
    let c = ids.len();
    (labels.iter().map(|l| ids[l]).collect(), c)
}

fn need_clusters(what: &'static str, c: usize, n: usize) -> Result<(), ClusterError> {
    if c < 2 || c > n - 1 {
        return Err(ClusterError::Clusters {
            what,
            clusters: c,
            n,
        });
    }
    Ok(())
}

/// The points (and labels) a pairwise metric runs on: all, or a seeded sample.
fn subset(
    p: &Points<'_>,
    labels: &[u32],
    opts: &PairOptions,
) -> (Vec<f32>, Vec<u32>, Option<usize>) {
    let n = p.len();
    if n <= opts.max_exact.max(2) {
        return (p.as_slice().to_vec(), labels.to_vec(), None);
    }
    let m = opts.max_exact.max(2);
    let mut idx = sample(&mut rng(opts.seed, 7), n, m).into_vec();
    idx.sort_unstable();
    let xs = idx.iter().flat_map(|&i| p.row(i).iter().copied()).collect();
    let ls = idx.iter().map(|&i| labels[i]).collect();
    (xs, ls, Some(m))
}

/// Mean silhouette coefficient (scikit-learn's `silhouette_score`, Euclidean).
pub fn silhouette(
    p: &Points<'_>,
    labels: &[u32],
    opts: &PairOptions,
) -> Result<PairScore, ClusterError> {
    check_labels(p, labels)?;
    let (xs, ls, sampled) = subset(p, labels, opts);
    let q = Points::new(&xs, p.dim())?;
    let (l, c) = dense(&ls);
    let n = q.len();
    need_clusters("silhouette", c, n)?;
    let mut sizes = vec![0usize; c];
    for &k in &l {
        sizes[k] += 1;
    }
    let total: f64 = (0..n)
        .into_par_iter()
        .map_init(
            || vec![0f64; c],
            |sums, i| {
                sums.iter_mut().for_each(|s| *s = 0.0);
                let xi = q.row(i);
                for (j, xj) in q.rows().enumerate() {
                    if j != i {
                        sums[l[j]] += sq64(xi, xj).sqrt();
                    }
                }
                let own = l[i];
                if sizes[own] == 1 {
                    return 0.0;
                }
                let a = sums[own] / (sizes[own] - 1) as f64;
                let b = (0..c)
                    .filter(|&k| k != own)
                    .map(|k| sums[k] / sizes[k] as f64)
                    .fold(f64::INFINITY, f64::min);
                (b - a) / a.max(b)
            },
        )
        .collect::<Vec<f64>>()
        .iter()
        // Summed in order: a parallel float sum would depend on the thread schedule.
        .sum();
    Ok(PairScore {
        value: total / n as f64,
        sampled,
    })
}

/// Centroids `[c, d]` (f64) and sizes of the dense labels.
fn centroids(p: &Points<'_>, l: &[usize], c: usize) -> (Vec<f64>, Vec<usize>) {
    let d = p.dim();
    let mut mu = vec![0f64; c * d];
    let mut sizes = vec![0usize; c];
    for (x, &k) in p.rows().zip(l) {
        sizes[k] += 1;
        for (m, v) in mu[k * d..(k + 1) * d].iter_mut().zip(x) {
            *m += f64::from(*v);
        }
    }
    for (k, &s) in sizes.iter().enumerate() {
        mu[k * d..(k + 1) * d]
            .iter_mut()
            .for_each(|m| *m /= s as f64);
    }
    (mu, sizes)
}

fn dist64(x: &[f32], m: &[f64]) -> f64 {
    x.iter()
        .zip(m)
        .map(|(a, b)| (f64::from(*a) - b).powi(2))
        .sum::<f64>()
}

/// Calinski-Harabasz index (between-cluster over within-cluster dispersion, each per degree of
/// freedom); 1 when every cluster is a single repeated point, as in scikit-learn.
pub fn calinski_harabasz(p: &Points<'_>, labels: &[u32]) -> Result<f64, ClusterError> {
    check_labels(p, labels)?;
    let (l, c) = dense(labels);
    let n = p.len();
    need_clusters("Calinski-Harabasz", c, n)?;
    let d = p.dim();
    let (mu, sizes) = centroids(p, &l, c);
    let mut mean = vec![0f64; d];
    for x in p.rows() {
        for (m, v) in mean.iter_mut().zip(x) {
            *m += f64::from(*v) / n as f64;
        }
    }
    let between: f64 = (0..c)
        .map(|k| {
            let m = &mu[k * d..(k + 1) * d];
            sizes[k] as f64
                * m.iter()
                    .zip(&mean)
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
        })
        .sum();
    let within: f64 = p
        .rows()
        .zip(&l)
        .map(|(x, &k)| dist64(x, &mu[k * d..(k + 1) * d]))
        .sum();
    if within == 0.0 {
        return Ok(1.0);
    }
    Ok(between * (n - c) as f64 / (within * (c - 1) as f64))
}

/// Davies-Bouldin index (mean over clusters of the worst ratio of summed spreads to centroid
/// distance; lower is better), with scikit-learn's conventions for zero spreads and
/// coincident centroids.
pub fn davies_bouldin(p: &Points<'_>, labels: &[u32]) -> Result<f64, ClusterError> {
    check_labels(p, labels)?;
    let (l, c) = dense(labels);
    let n = p.len();
    need_clusters("Davies-Bouldin", c, n)?;
    let d = p.dim();
    let (mu, sizes) = centroids(p, &l, c);
    let mut spread = vec![0f64; c];
    for (x, &k) in p.rows().zip(&l) {
        spread[k] += dist64(x, &mu[k * d..(k + 1) * d]).sqrt();
    }
    for (s, &m) in spread.iter_mut().zip(&sizes) {
        *s /= m as f64;
    }
    let centre = |k: usize| &mu[k * d..(k + 1) * d];
    let mut between = vec![0f64; c * c];
    for i in 0..c {
        for j in 0..c {
            between[i * c + j] = centre(i)
                .iter()
                .zip(centre(j))
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
        }
    }
    let close = |v: f64| v.abs() <= 1e-8;
    if spread.iter().all(|&s| close(s)) || between.iter().all(|&b| close(b)) {
        return Ok(0.0);
    }
    let worst: f64 = (0..c)
        .map(|i| {
            (0..c)
                .filter(|&j| j != i)
                .map(|j| {
                    let m = between[i * c + j];
                    if m == 0.0 {
                        0.0
                    } else {
                        (spread[i] + spread[j]) / m
                    }
                })
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum();
    Ok(worst / c as f64)
}

/// Dunn index: the smallest distance between two points of different clusters over the largest
/// distance between two points of one cluster (higher is better; infinite when every cluster
/// is a single point).
pub fn dunn(p: &Points<'_>, labels: &[u32], opts: &PairOptions) -> Result<PairScore, ClusterError> {
    check_labels(p, labels)?;
    let (xs, ls, sampled) = subset(p, labels, opts);
    let q = Points::new(&xs, p.dim())?;
    let (l, c) = dense(&ls);
    let n = q.len();
    need_clusters("Dunn", c, n)?;
    let (sep, diam) = (0..n)
        .into_par_iter()
        .map(|i| {
            let xi = q.row(i);
            let (mut sep, mut diam) = (f64::INFINITY, 0f64);
            for j in i + 1..n {
                let s = sq64(xi, q.row(j));
                if l[i] == l[j] {
                    diam = diam.max(s);
                } else {
                    sep = sep.min(s);
                }
            }
            (sep, diam)
        })
        .reduce(|| (f64::INFINITY, 0.0), |a, b| (a.0.min(b.0), a.1.max(b.1)));
    let value = if diam == 0.0 {
        f64::INFINITY
    } else {
        (sep / diam).sqrt()
    };
    Ok(PairScore { value, sampled })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::*;

    fn close(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1.0),
            "got {got}, scikit-learn {want}"
        );
    }

    #[test]
    fn metrics_match_scikit_learn() {
        let p = Points::new(&XS, 3).unwrap();
        let all = PairOptions::default();
        let s = silhouette(&p, &PRED, &all).unwrap();
        assert_eq!(s.sampled, None);
        close(s.value, SILHOUETTE);
        close(calinski_harabasz(&p, &PRED).unwrap(), CALINSKI_HARABASZ);
        close(davies_bouldin(&p, &PRED).unwrap(), DAVIES_BOULDIN);
        close(crate::metrics::nmi(&PRED, &TRUTH), NMI);
        close(crate::metrics::ari(&PRED, &TRUTH), ARI);
        // Label values do not matter, only the partition.
        let shifted: Vec<u32> = PRED.iter().map(|l| 100 - l).collect();
        close(silhouette(&p, &shifted, &all).unwrap().value, SILHOUETTE);
        close(davies_bouldin(&p, &shifted).unwrap(), DAVIES_BOULDIN);
    }

    #[test]
    fn dunn_on_a_hand_checked_example() {
        // Clusters {0, 1} and {4, 6} on a line: diameters 1 and 2, separation 3 -> 3 / 2.
        let xs = [0.0f32, 1.0, 4.0, 6.0];
        let p = Points::new(&xs, 1).unwrap();
        let d = dunn(&p, &[0, 0, 1, 1], &PairOptions::default()).unwrap();
        assert_eq!(
            d,
            PairScore {
                value: 1.5,
                sampled: None
            }
        );
        // Moving 4 into the first cluster: diameter 4, separation 2 -> 0.5.
        let d = dunn(&p, &[0, 0, 0, 1], &PairOptions::default()).unwrap();
        assert_eq!(d.value, 0.5);
    }

    #[test]
    fn large_inputs_are_sampled_reproducibly() {
        let p = Points::new(&XS, 3).unwrap();
        let opts = PairOptions {
            max_exact: 30,
            seed: 4,
        };
        let a = silhouette(&p, &PRED, &opts).unwrap();
        assert_eq!(a.sampled, Some(30));
        assert_eq!(a, silhouette(&p, &PRED, &opts).unwrap());
        assert!((a.value - SILHOUETTE).abs() < 0.2);
        assert_eq!(dunn(&p, &PRED, &opts).unwrap().sampled, Some(30));
    }

    #[test]
    fn undefined_cases_are_errors() {
        let p = Points::new(&XS, 3).unwrap();
        let one = [0u32; 49];
        let all: Vec<u32> = (0..49).collect();
        for labels in [&one[..], &all[..]] {
            assert!(matches!(
                silhouette(&p, labels, &PairOptions::default()),
                Err(ClusterError::Clusters { .. })
            ));
            assert!(calinski_harabasz(&p, labels).is_err());
            assert!(davies_bouldin(&p, labels).is_err());
        }
        assert!(matches!(
            davies_bouldin(&p, &PRED[..10]),
            Err(ClusterError::Shape { .. })
        ));
    }
}

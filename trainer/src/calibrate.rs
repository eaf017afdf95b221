//! Calibrating the outlier flag on the training data: the clustering head, each cluster's
//! whitening factor when the score is the Mahalanobis distance or the stored reference latents
//! when it is the neighbour distance, and per-cluster thresholds at a chosen quantile of the
//! calibration scores.
//!
//! Training data is rarely clean: the demo's plant puts a fault in 1% of its windows, and a
//! recording of a real machine has its own glitches. A threshold at the 0.99 quantile of
//! scores that include those lands among them, far above the normal windows, and misses the
//! milder faults of a fresh stream (docs/RESULTS.md, "Anomaly scores": 88% caught instead of
//! 100%). So the calibration is robust in two places: a cluster's covariance is refitted once
//! without its far-out members, and the quantiles are taken over the scores that are not far
//! out, beyond an outer fence a normal score almost never passes while a gross fault lies many
//! times beyond it.
//!
//! The quantiles themselves are estimated from all clusters together (`pooled_quantiles`):
//! a 0.998 quantile needs thousands of scores, more than a cluster has.

use dekm_edge::ClusterHead;
use dekm_edge::head::whitened_norm;
use dekm_shared::{Neighbours, OutlierScore};
use nalgebra::DMatrix;
use rand::SeedableRng;
use rand::seq::index;

use crate::train::Trained;

/// Quantile levels stored in the calibration table.
pub const QUANTILE_LEVELS: [f32; 10] =
    [0.5, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.998, 0.999, 1.0];

/// Linear-interpolated quantile of sorted values (numpy's default); 0 for no values.
pub fn quantile(sorted: &[f32], q: f32) -> f32 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f32;
    let (lo, frac) = (pos.floor() as usize, pos.fract());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Tukey's outer fence of `values`: `Q3 + 3 IQR` (infinite for no values).
pub fn outer_fence(values: &[f32]) -> f32 {
    if values.is_empty() {
        return f32::INFINITY;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let (q1, q3) = (quantile(&sorted, 0.25), quantile(&sorted, 0.75));
    q3 + 3.0 * (q3 - q1)
}

/// The clustering head with thresholds calibrated on the training latents, the per-cluster
/// quantile table, and the final assignments.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Head with thresholds at the configured quantile.
    pub head: ClusterHead,
    /// `[k, QUANTILE_LEVELS.len()]` score quantiles over each cluster's calibration members.
    pub table: Vec<f32>,
    /// Final cluster of every training sample.
    pub labels: Vec<u32>,
    /// Cluster of every held-out calibration sample, in the holdout's order.
    pub held_labels: Vec<u32>,
    /// Every training sample's score (a reference of the neighbour score scored without its
    /// own row).
    pub scores: Vec<f32>,
    /// Whether each training sample exceeds its cluster's threshold.
    pub outliers: Vec<bool>,
    /// Calibration samples left out of the quantiles as far out (beyond the outer fence).
    pub far_out: usize,
    /// The score as exported: for the neighbour score, the number of references kept.
    pub score: OutlierScore,
}

/// Calibrates the outlier flag: centroids and covariances from `trained`'s latents, and per
/// cluster the `q` quantile of the scores after leaving out the far-out ones. The scores are
/// those of `holdout` (latents of samples the encoder was not trained on) when given, so the
/// false-alarm rate is that of unseen data; a cluster no held-out sample falls in uses its
/// training members.
pub fn calibrate(
    trained: &Trained,
    holdout: Option<&[f32]>,
    q: f32,
    score: OutlierScore,
) -> Result<Calibration, dekm_edge::HeadError> {
    let d = trained.rotation.d;
    let k = trained.kmeans.centroids.len() / d;
    let mut cy = vec![0f32; k * d];
    for (mu, out) in trained
        .kmeans
        .centroids
        .chunks_exact(d)
        .zip(cy.chunks_exact_mut(d))
    {
        trained.rotation.project(mu, out);
    }
    let mut head = ClusterHead::new(d, trained.rotation.v.clone(), cy, vec![f32::INFINITY; k])?;
    let n = trained.z.len() / d.max(1);
    let mut ys = vec![0f32; n * d];
    let mut labels = Vec::with_capacity(n);
    for (z, y) in trained.z.chunks_exact(d).zip(ys.chunks_exact_mut(d)) {
        labels.push(head.assign(z, y)?.cluster);
    }
    let mut is_reference = vec![false; n];
    let score = match score {
        OutlierScore::Distance => score,
        OutlierScore::Mahalanobis => {
            let whitening = whitening(&ys, &labels, head.centroids(), k, d);
            head = head.with_whitening(whitening)?;
            score
        }
        OutlierScore::Knn(settings) => {
            let rows = references(n, settings, trained.config.seed);
            let mut kept = Vec::with_capacity(rows.len() * d);
            for &i in &rows {
                is_reference[i] = true;
                kept.extend_from_slice(&ys[i * d..(i + 1) * d]);
            }
            head = head.with_references(kept, settings.neighbours as usize)?;
            OutlierScore::Knn(Neighbours {
                references: rows.len() as u32,
                ..settings
            })
        }
    };
    // The head's own score for every sample, so calibration and assignment cannot disagree;
    // a training sample kept as a reference is scored without its own zero distance.
    let mut scratch = vec![0f32; d];
    let mut score_all = |zs: &[f32]| {
        zs.chunks_exact(d)
            .map(|z| head.assign(z, &mut scratch).map(|a| (a.cluster, a.score)))
            .collect::<Result<Vec<(u32, f32)>, _>>()
    };
    let mut scores: Vec<f32> = score_all(&trained.z)?.into_iter().map(|(_, s)| s).collect();
    for (i, y) in ys.chunks_exact(d).enumerate() {
        if is_reference[i] {
            scores[i] = head.neighbour_distance(y, 1).unwrap_or(f32::INFINITY);
        }
    }
    let held = holdout.map(&mut score_all).transpose()?.unwrap_or_default();
    let (held_labels, held_scores): (Vec<u32>, Vec<f32>) = held.into_iter().unzip();
    let groups: Vec<Vec<f32>> = (0..k as u32)
        .map(|c| {
            let held: Vec<f32> = members(&held_scores, &held_labels, c).collect();
            if held.is_empty() {
                members(&scores, &labels, c).collect()
            } else {
                held
            }
        })
        .collect();
    let Pooled {
        table,
        thresholds,
        far_out,
    } = pooled_quantiles(&groups, q);
    head.set_thresholds(thresholds)?;
    let outliers = labels
        .iter()
        .zip(&scores)
        .map(|(&l, &s)| s > head.thresholds()[l as usize])
        .collect();
    Ok(Calibration {
        head,
        table,
        labels,
        held_labels,
        scores,
        outliers,
        far_out,
        score,
    })
}

/// Per-cluster quantile table and thresholds, and how many calibration scores were left out.
struct Pooled {
    table: Vec<f32>,
    thresholds: Vec<f32>,
    far_out: usize,
}

/// Each cluster's quantiles of its calibration scores `groups[c]`, estimated from all
/// clusters' scores together: a cluster's scores divided by their median (its scale) are
/// pooled, the far-out ones (beyond the outer fence of the ratios' logarithms) left out, and a
/// cluster's quantile is its scale times the pooled ratios' quantile.
///
/// Why pooled: a 0.998 quantile cannot be read off a cluster's own hundred or so calibration
/// samples (the largest of n samples sits near the 1 - 1/(n+1) quantile), so per-cluster
/// thresholds flagged about 1% of normal images where 0.2% was asked for (docs/RESULTS.md,
/// "Calibration"); the clusters' score distributions differ mostly in scale, which one median
/// per cluster estimates well. A cluster without any sample takes the median of all scores.
fn pooled_quantiles(groups: &[Vec<f32>], q: f32) -> Pooled {
    let median = |v: &[f32]| {
        let mut v = v.to_vec();
        v.sort_by(f32::total_cmp);
        quantile(&v, 0.5)
    };
    let all: Vec<f32> = groups.iter().flatten().copied().collect();
    let fallback = Some(median(&all))
        .filter(|m| m.is_finite() && *m > 0.0)
        .unwrap_or(1.0);
    let scales: Vec<f32> = groups
        .iter()
        .map(|g| {
            Some(median(g))
                .filter(|m| !g.is_empty() && m.is_finite() && *m > 0.0)
                .unwrap_or(fallback)
        })
        .collect();
    let mut ratios: Vec<f32> = groups
        .iter()
        .zip(&scales)
        .flat_map(|(g, &s)| g.iter().map(move |&v| v / s))
        .collect();
    // The fence on the logarithm: distances are skewed, and on images about 0.7% of normal
    // Mahalanobis scores lie beyond the plain fence (docs/RESULTS.md, "Calibration").
    let logs: Vec<f32> = ratios
        .iter()
        .map(|r| r.max(f32::MIN_POSITIVE).ln())
        .collect();
    let fence = outer_fence(&logs).exp();
    let before = ratios.len();
    ratios.retain(|&r| r <= fence);
    let far_out = before - ratios.len();
    ratios.sort_by(f32::total_cmp);
    let levels: Vec<f32> = QUANTILE_LEVELS
        .iter()
        .map(|&l| quantile(&ratios, l))
        .collect();
    let at_q = quantile(&ratios, q);
    Pooled {
        table: scales
            .iter()
            .flat_map(|&s| levels.iter().map(move |&l| s * l))
            .collect(),
        thresholds: scales.iter().map(|&s| s * at_q).collect(),
        far_out,
    }
}

/// Indices of the training samples kept as references of the neighbour score: all of them up
/// to `settings.references`, else a subsample drawn with `seed`, in ascending order.
fn references(n: usize, settings: Neighbours, seed: u64) -> Vec<usize> {
    let m = n.min(settings.references as usize);
    let mut rows = if m == n {
        (0..n).collect()
    } else {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6b6e_6e5f_7265_6673);
        index::sample(&mut rng, n, m).into_vec()
    };
    rows.sort_unstable();
    rows
}

fn members<'a, T: Copy>(
    values: &'a [T],
    labels: &'a [u32],
    c: u32,
) -> impl Iterator<Item = T> + 'a {
    values
        .iter()
        .zip(labels)
        .filter(move |&(_, &l)| l == c)
        .map(|(&v, _)| v)
}

/// `[k, d, d]` lower-triangular whitening factors, one per cluster, of the members' covariance
/// about their centroid in `y` space; refitted once without the far-out members.
fn whitening(ys: &[f32], labels: &[u32], centroids: &[f32], k: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(k * d * d);
    for (c, mu) in centroids.chunks_exact(d).enumerate() {
        let rows: Vec<&[f32]> = ys
            .chunks_exact(d)
            .zip(labels)
            .filter(|&(_, &l)| l as usize == c)
            .map(|(y, _)| y)
            .collect();
        let w = factor(&rows, mu, d);
        let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let scores: Vec<f32> = rows.iter().map(|y| whitened_norm(&w32, y, mu)).collect();
        let fence = outer_fence(&scores);
        let kept: Vec<&[f32]> = rows
            .iter()
            .zip(&scores)
            .filter(|&(_, &s)| s <= fence)
            .map(|(y, _)| *y)
            .collect();
        let w = if kept.len() < rows.len() {
            factor(&kept, mu, d)
        } else {
            w
        };
        out.extend(w.iter().map(|&v| v as f32));
    }
    out
}

/// `L⁻¹` for the Cholesky factor `L` of the covariance of `rows` about `mu`, row-major.
///
/// The covariance is shrunk towards a multiple of the identity by Ledoit and Wolf's rule
/// (scikit-learn's `LedoitWolf`): a cluster of 60 windows cannot pin down 55 covariances of
/// a 10-d latent, and the raw estimate then calls every fresh window far (a Daphnet model
/// trained on 297 windows flagged 31% of the rest of the walk). The fewer members per
/// dimension, the stronger the shrinkage; with thousands it all but vanishes. A small ridge
/// (1e-3 of the mean variance) keeps a direction no member varies in from dividing by zero,
/// and a cluster with no spread at all gets the identity (its score is then the distance).
fn factor(rows: &[&[f32]], mu: &[f32], d: usize) -> Vec<f64> {
    let identity = DMatrix::<f64>::identity(d, d);
    let Some((cov, _)) = shrunk_covariance(rows, mu, d) else {
        return row_major(&identity);
    };
    match cov.cholesky() {
        Some(ch) => {
            let l = ch.l();
            match l.solve_lower_triangular(&identity) {
                Some(inv) => row_major(&inv),
                None => row_major(&identity),
            }
        }
        None => row_major(&identity),
    }
}

/// The Ledoit-Wolf shrunk covariance of `rows` about `mu` plus the ridge, and the shrinkage;
/// `None` when the rows have no spread.
fn shrunk_covariance(rows: &[&[f32]], mu: &[f32], d: usize) -> Option<(DMatrix<f64>, f64)> {
    let n = rows.len().max(1) as f64;
    let mut cov = DMatrix::<f64>::zeros(d, d);
    let mut fourth = 0.0;
    for y in rows {
        let diff =
            nalgebra::DVector::from_iterator(d, y.iter().zip(mu).map(|(&y, &m)| f64::from(y - m)));
        fourth += diff.norm_squared().powi(2);
        cov.ger(1.0, &diff, &diff, 1.0);
    }
    cov /= n;
    let mean_var = cov.trace() / d as f64;
    if !(mean_var > 0.0 && mean_var.is_finite()) {
        return None;
    }
    // Ledoit-Wolf: delta is the spread of the sample covariance around mean_var * I, beta
    // the part of it that sampling noise explains.
    let frobenius = cov.norm_squared();
    let delta = (frobenius - d as f64 * mean_var * mean_var) / d as f64;
    let beta = ((fourth / n - frobenius) / (d as f64 * n)).min(delta);
    let shrinkage = if delta > 0.0 {
        (beta / delta).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let identity = DMatrix::<f64>::identity(d, d);
    cov = cov * (1.0 - shrinkage) + identity * (shrinkage * mean_var + 1e-3 * mean_var);
    Some((cov, shrinkage))
}

fn row_major(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` distances of 10-d standard normal points from their centre, times `scale`.
    fn chi10(n: usize, scale: f32, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f32> {
        use rand_distr::{Distribution, StandardNormal};
        (0..n)
            .map(|_| {
                let s: f32 = (0..10)
                    .map(|_| {
                        let x: f32 = StandardNormal.sample(rng);
                        x * x
                    })
                    .sum();
                scale * s.sqrt()
            })
            .collect()
    }

    #[test]
    fn pooled_thresholds_hold_the_false_alarm_rate_of_small_clusters() {
        let scales: Vec<f32> = (0..10).map(|c| 0.5 + 0.3 * c as f32).collect();
        let (mut alarms, mut own_alarms, mut fresh) = (0, 0, 0);
        for seed in 0..5 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            // 110 calibration scores per cluster, as 10% of 10,000 images over 9 clusters.
            let mut groups: Vec<Vec<f32>> =
                scales.iter().map(|&s| chi10(110, s, &mut rng)).collect();
            // Gross faults in one cluster's calibration data are left out, not learnt.
            groups[0].extend([40.0, 55.0, 70.0]);
            let p = pooled_quantiles(&groups, 0.998);
            assert_eq!(p.far_out, 3);
            assert_eq!(p.table.len(), 10 * QUANTILE_LEVELS.len());
            for (c, &s) in scales.iter().enumerate() {
                let mut own = groups[c].clone();
                own.retain(|&v| v < 30.0);
                own.sort_by(f32::total_cmp);
                let per_cluster = quantile(&own, 0.998);
                for v in chi10(10_000, s, &mut rng) {
                    alarms += usize::from(v > p.thresholds[c]);
                    own_alarms += usize::from(v > per_cluster);
                    fresh += 1;
                }
            }
        }
        // Asked 0.2%: pooled about 0.3% (a cluster's scale is estimated from 110 scores),
        // each cluster on its own about 1% (its largest scores).
        let rate = alarms as f64 / fresh as f64;
        let own_rate = own_alarms as f64 / fresh as f64;
        assert!((0.001..0.005).contains(&rate), "pooled: {rate}");
        assert!(
            own_rate > 2.0 * rate,
            "per cluster {own_rate} against pooled {rate}"
        );
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.99) - 3.97).abs() < 1e-6);
    }

    #[test]
    fn outer_fence_is_q3_plus_three_iqr() {
        let v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        assert_eq!(outer_fence(&v), 75.0 + 3.0 * 50.0);
        assert_eq!(outer_fence(&[]), f32::INFINITY);
    }

    fn wave() -> Vec<[f32; 2]> {
        (0..200)
            .map(|i| {
                let t = i as f32 * 0.1;
                [10.0 * t.sin(), (1.7 * t).cos()]
            })
            .collect()
    }

    fn as_rows(pts: &[[f32; 2]]) -> Vec<&[f32]> {
        pts.iter().map(|p| p.as_slice()).collect()
    }

    /// Shrinkage from scikit-learn 1.9.1 (`ledoit_wolf_shrinkage(X, assume_centered=True)`):
    /// 0.005490677 for the wave, 1.0 for five scattered points.
    #[test]
    fn shrinkage_matches_scikit_learn() {
        let pts = wave();
        let (_, a) = shrunk_covariance(&as_rows(&pts), &[0.0, 0.0], 2).unwrap();
        assert!((a - 0.005_490_677).abs() < 1e-6, "{a}");
        let few = [
            [1.0f32, 2.0],
            [-1.0, 0.5],
            [0.5, -2.0],
            [-0.5, -0.5],
            [2.0, 1.0],
        ];
        let (_, a) = shrunk_covariance(&as_rows(&few), &[0.0, 0.0], 2).unwrap();
        assert!((a - 1.0).abs() < 1e-9, "{a}");
    }

    /// The factor whitens the shrunk covariance: `W C Wᵀ = I`.
    #[test]
    fn factor_whitens_the_shrunk_covariance() {
        let pts = wave();
        let rows = as_rows(&pts);
        let w = factor(&rows, &[0.0, 0.0], 2);
        let (c, _) = shrunk_covariance(&rows, &[0.0, 0.0], 2).unwrap();
        for (i, j) in [(0, 0), (0, 1), (1, 1)] {
            let mut v = 0.0;
            for p in 0..2 {
                for q in 0..2 {
                    v += w[i * 2 + p] * c[(p, q)] * w[j * 2 + q];
                }
            }
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-9, "({i},{j}): {v}");
        }
    }

    /// One gross outlier among the members: the refitted factor matches the clean one.
    #[test]
    fn far_out_members_do_not_widen_the_covariance() {
        let pts = wave();
        let mu = [0.0, 0.0];
        let clean: Vec<f32> = factor(&as_rows(&pts), &mu, 2)
            .iter()
            .map(|&v| v as f32)
            .collect();
        let mut dirty = pts.clone();
        dirty.push([0.0, 500.0]);
        let labels = vec![0u32; dirty.len()];
        let flat: Vec<f32> = dirty.iter().flatten().copied().collect();
        let robust = whitening(&flat, &labels, &mu, 1, 2);
        for (a, b) in robust.iter().zip(&clean) {
            assert!(
                (a - b).abs() <= 0.02 * b.abs().max(0.01),
                "{robust:?} vs {clean:?}"
            );
        }
    }

    #[test]
    fn no_spread_gives_the_identity() {
        let rows: Vec<&[f32]> = vec![&[1.0, 1.0], &[1.0, 1.0]];
        assert_eq!(factor(&rows, &[1.0, 1.0], 2), [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(factor(&[], &[1.0, 1.0], 2), [1.0, 0.0, 0.0, 1.0]);
    }
}

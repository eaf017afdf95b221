//! Gaussian mixture models fitted by expectation-maximisation, with full or diagonal
//! covariance matrices, started from k-means as scikit-learn's `GaussianMixture` does by
//! default, but from the lowest-inertia of several k-means++ runs rather than one (see
//! [`GmmConfig::restarts`]). Log-densities go through a Cholesky factor and log-sum-exp, so
//! nothing overflows on well-separated data.

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

use crate::kmeans::{KMeansConfig, KMeansInit};
use crate::{ClusterError, Fit, Fitted, Points, Predict};

/// Shape of each component's covariance (serialised as its [`Covariance::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Covariance {
    /// A full `d x d` matrix per component.
    Full,
    /// Per-coordinate variances only.
    Diagonal,
}

impl Covariance {
    /// The shape's name in logs and settings files: "full" or "diagonal".
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Diagonal => "diagonal",
        }
    }
}

/// EM settings.
#[derive(Debug, Clone, Copy)]
pub struct GmmConfig {
    /// Components.
    pub k: usize,
    /// Covariance shape.
    pub covariance: Covariance,
    /// Added to every variance, for stability (scikit-learn's `reg_covar`).
    pub reg: f64,
    /// Stop when the mean log-likelihood improves by less than this.
    pub tol: f64,
    /// Most EM iterations.
    pub max_iter: usize,
    /// k-means++ restarts of the start; EM starts from the one with the lowest inertia (0
    /// counts as 1, as in [`KMeansConfig`]).
    ///
    /// Why more than scikit-learn's one: EM only refines the partition it starts from, so a
    /// k-means start with two centres in one cluster and one between two others ends as a
    /// mixture that merges two clusters and splits a third. On the UMAP layouts N2D clusters
    /// ([`crate::umap::N2dConfig`]) a single start did that on several layouts of MNIST
    /// embeddings and of the demo's sensor data, where the lowest-inertia of 10 starts found
    /// the better partition on all of them; keeping the likeliest of 10 mixtures instead
    /// (scikit-learn's `n_init`) still merged on some (docs/RESULTS.md has the counts).
    pub restarts: usize,
    /// Seed of the k-means start.
    pub seed: u64,
}

impl GmmConfig {
    /// scikit-learn's defaults for `k` components, except for the 10 restarts of the start
    /// (see [`GmmConfig::restarts`]).
    pub fn new(k: usize, covariance: Covariance) -> Self {
        Self {
            k,
            covariance,
            reg: 1e-6,
            tol: 1e-3,
            max_iter: 100,
            restarts: 10,
            seed: 0,
        }
    }
}

/// One fitted component.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Mixing weight.
    pub weight: f64,
    /// Mean.
    pub mean: Vec<f64>,
    /// Covariance, row-major `d x d` (diagonal models: zero off the diagonal).
    pub covariance: Vec<f64>,
}

/// A fitted mixture.
#[derive(Debug, Clone, PartialEq)]
pub struct Gmm {
    /// Components.
    pub components: Vec<Component>,
    /// Most probable component of each point.
    pub labels: Vec<u32>,
    /// Mean log-likelihood per point at the end.
    pub log_likelihood: f64,
    /// EM iterations run.
    pub iterations: usize,
    /// Whether the tolerance was reached.
    pub converged: bool,
    covariance: Covariance,
}

impl Gmm {
    /// Free parameters of the model.
    pub fn parameters(&self) -> usize {
        let k = self.components.len();
        let d = self.components.first().map_or(0, |c| c.mean.len());
        let cov = match self.covariance {
            Covariance::Full => d * (d + 1) / 2,
            Covariance::Diagonal => d,
        };
        k * (d + cov) + k - 1
    }

    /// Bayesian information criterion on `n` points (lower is better).
    pub fn bic(&self, n: usize) -> f64 {
        -2.0 * self.log_likelihood * n as f64 + self.parameters() as f64 * (n as f64).ln()
    }

    /// The shape of the components' covariances.
    pub fn covariance(&self) -> Covariance {
        self.covariance
    }

    /// Whether every component's hard cluster holds more points than the data have
    /// dimensions, the fewest a full covariance can be estimated from without being singular.
    fn clusters_outnumber_dimensions(&self) -> bool {
        let d = self.components.first().map_or(0, |c| c.mean.len());
        let mut sizes = vec![0usize; self.components.len()];
        for &l in &self.labels {
            sizes[l as usize] += 1;
        }
        sizes.iter().all(|&s| s > d)
    }
}

/// What [`fit_by_bic`] chose, and the BIC of each shape it fitted (lower is better).
#[derive(Debug, Clone)]
pub struct BicChoice {
    /// The mixture with the lowest BIC.
    pub gmm: Gmm,
    /// BIC of the full shape; `None` where its fit left a cluster with no more points than
    /// dimensions: its covariance is singular but for the regularisation, and the likelihood,
    /// hence the BIC, of a collapsed component is meaningless.
    pub full: Option<f64>,
    /// BIC of the diagonal shape.
    pub diagonal: f64,
}

/// The mixture of `cfg.k` components whose covariance shape, full or diagonal, has the lowest
/// BIC on `p`, as model-based clustering (mclust) picks it; `cfg.covariance` is ignored. Each
/// shape's mixture is the likeliest of `starts` ([`fit_likeliest`]): BIC compares likelihoods,
/// so each shape is fitted as well as the starts allow.
///
/// Why not a fixed shape: on standardised tabular data the full shape wins where features are
/// correlated within a cluster (iris, breast cancer) and loses to the diagonal one where it
/// has more parameters than the data support (wine, 13 features and 178 samples); BIC picked
/// the better of the two on each (docs/RESULTS.md, "Vector data").
pub fn fit_by_bic(p: &Points<'_>, cfg: &GmmConfig, starts: u64) -> Result<BicChoice, ClusterError> {
    let n = p.len();
    let shaped = |covariance| GmmConfig { covariance, ..*cfg };
    let diagonal = fit_likeliest(p, &shaped(Covariance::Diagonal), starts)?;
    let diagonal_bic = diagonal.bic(n);
    let full = fit_likeliest(p, &shaped(Covariance::Full), starts)?;
    let full_bic = full.clusters_outnumber_dimensions().then(|| full.bic(n));
    let gmm = match full_bic {
        Some(b) if b < diagonal_bic => full,
        _ => diagonal,
    };
    Ok(BicChoice {
        gmm,
        full: full_bic,
        diagonal: diagonal_bic,
    })
}

/// Per component: what the E-step needs (inverse Cholesky and log-normaliser).
struct Prepared {
    log_weight: f64,
    mean: DVector<f64>,
    /// Lower Cholesky factor of the covariance.
    chol: DMatrix<f64>,
    log_norm: f64,
}

fn prepare(c: &Component, d: usize) -> Result<Prepared, ClusterError> {
    let cov = DMatrix::from_row_slice(d, d, &c.covariance);
    let chol = cov.cholesky().ok_or(ClusterError::Parameter {
        name: "covariance",
        value: "not positive definite".into(),
        reason: "increase the regularisation (reg)",
    })?;
    let l = chol.l();
    let log_det: f64 = (0..d).map(|i| l[(i, i)].ln()).sum::<f64>() * 2.0;
    Ok(Prepared {
        log_weight: c.weight.ln(),
        mean: DVector::from_column_slice(&c.mean),
        chol: l,
        log_norm: -0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + log_det),
    })
}

/// Log of `weight * N(x | mean, cov)` for each component.
fn log_probs(x: &[f32], comps: &[Prepared], out: &mut [f64]) {
    let d = x.len();
    let xv = DVector::from_iterator(d, x.iter().map(|&v| f64::from(v)));
    for (o, c) in out.iter_mut().zip(comps) {
        let diff = &xv - &c.mean;
        let y = c
            .chol
            .solve_lower_triangular(&diff)
            .unwrap_or_else(|| DVector::from_element(d, f64::INFINITY));
        *o = c.log_weight + c.log_norm - 0.5 * y.norm_squared();
    }
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// M-step: components from responsibilities `r` (`[n, k]`).
fn m_step(p: &Points<'_>, r: &[f64], cfg: &GmmConfig) -> Vec<Component> {
    let (n, d, k) = (p.len(), p.dim(), cfg.k);
    (0..k)
        .map(|j| {
            let nk: f64 = (0..n).map(|i| r[i * k + j]).sum::<f64>() + 10.0 * f64::EPSILON;
            let mut mean = vec![0f64; d];
            for (i, x) in p.rows().enumerate() {
                for (m, v) in mean.iter_mut().zip(x) {
                    *m += r[i * k + j] * f64::from(*v);
                }
            }
            mean.iter_mut().for_each(|m| *m /= nk);
            let mut cov = vec![0f64; d * d];
            for (i, x) in p.rows().enumerate() {
                let w = r[i * k + j];
                for a in 0..d {
                    let da = f64::from(x[a]) - mean[a];
                    match cfg.covariance {
                        Covariance::Full => {
                            for b in 0..=a {
                                cov[a * d + b] += w * da * (f64::from(x[b]) - mean[b]);
                            }
                        }
                        Covariance::Diagonal => cov[a * d + a] += w * da * da,
                    }
                }
            }
            for a in 0..d {
                for b in 0..=a {
                    cov[a * d + b] /= nk;
                    cov[b * d + a] = cov[a * d + b];
                }
                cov[a * d + a] += cfg.reg;
            }
            Component {
                weight: nk / n as f64,
                mean,
                covariance: cov,
            }
        })
        .collect()
}

impl Fit for GmmConfig {
    type Model = Gmm;

    /// Fits a mixture of `k` Gaussians, by EM from the best of `restarts` k-means runs.
    fn fit(&self, p: &Points<'_>) -> Result<Gmm, ClusterError> {
        fit(p, self)
    }
}

impl Fitted for Gmm {
    fn assignments(&self) -> Vec<Option<u32>> {
        self.labels.iter().copied().map(Some).collect()
    }
}

impl Predict for Gmm {
    /// The most probable component of each point.
    fn predict(&self, p: &Points<'_>) -> Result<Vec<u32>, ClusterError> {
        let d = self.components.first().map_or(0, |c| c.mean.len());
        if p.dim() != d {
            return Err(ClusterError::Shape {
                what: "point dimension",
                expected: d,
                got: p.dim(),
            });
        }
        let prepared: Vec<Prepared> = self
            .components
            .iter()
            .map(|c| prepare(c, d))
            .collect::<Result<_, _>>()?;
        let mut lp = vec![0f64; prepared.len()];
        Ok(p.rows()
            .map(|x| {
                log_probs(x, &prepared, &mut lp);
                argmax(&lp)
            })
            .collect())
    }
}

/// The index of the largest value, the first of equals.
fn argmax(v: &[f64]) -> u32 {
    v.iter()
        .enumerate()
        .fold(
            (0, f64::NEG_INFINITY),
            |b, (j, &x)| if x > b.1 { (j, x) } else { b },
        )
        .0 as u32
}

fn fit(p: &Points<'_>, cfg: &GmmConfig) -> Result<Gmm, ClusterError> {
    let (n, k) = (p.len(), cfg.k);
    if !(cfg.reg >= 0.0 && cfg.reg.is_finite()) {
        return Err(ClusterError::Parameter {
            name: "reg",
            value: cfg.reg.to_string(),
            reason: "must be a finite number >= 0",
        });
    }
    let km = KMeansConfig {
        restarts: cfg.restarts,
        seed: cfg.seed,
        init: KMeansInit::PlusPlus,
        ..KMeansConfig::new(k)
    }
    .fit(p)?;
    let mut r = vec![0f64; n * k];
    for (i, &l) in km.labels.iter().enumerate() {
        r[i * k + l as usize] = 1.0;
    }
    let mut comps = m_step(p, &r, cfg);
    let mut ll = f64::NEG_INFINITY;
    let (mut iterations, mut converged) = (0, false);
    for _ in 0..cfg.max_iter.max(1) {
        iterations += 1;
        let prepared: Vec<Prepared> = comps
            .iter()
            .map(|c| prepare(c, p.dim()))
            .collect::<Result<_, _>>()?;
        let total: f64 = r
            .par_chunks_mut(k)
            .zip(p.as_slice().par_chunks(p.dim()))
            .map(|(ri, x)| {
                log_probs(x, &prepared, ri);
                let lse = log_sum_exp(ri);
                ri.iter_mut().for_each(|v| *v = (*v - lse).exp());
                lse
            })
            .collect::<Vec<f64>>()
            .iter()
            // Summed in order: a parallel float sum would depend on the thread schedule.
            .sum();
        let mean_ll = total / n as f64;
        comps = m_step(p, &r, cfg);
        if (mean_ll - ll).abs() < cfg.tol {
            ll = mean_ll;
            converged = true;
            break;
        }
        ll = mean_ll;
    }
    let labels = r.chunks_exact(k).map(argmax).collect();
    Ok(Gmm {
        components: comps,
        labels,
        log_likelihood: ll,
        iterations,
        converged,
        covariance: cfg.covariance,
    })
}

/// The seed [`fit_likeliest`] gives start `r` of a run seeded `seed`: `seed + r · φ` (φ =
/// 2⁶⁴ / golden ratio), so that a study can refit any one start on its own.
pub fn start_seed(seed: u64, r: u64) -> u64 {
    seed.wrapping_add(r.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Fits `starts` mixtures, each by EM from a single k-means++ run (`cfg.restarts` is not
/// used), and keeps the likeliest: scikit-learn's `n_init`. Start `r` draws from
/// [`start_seed`]`(cfg.seed, r)`, so the starts are the same at every thread count, and the
/// first `n` of more starts are those of `n`; ties go to the lowest `r`.
///
/// Why beside the plain fit ([`Fit`] on [`GmmConfig`]): where the data hold one clear partition the lowest-inertia k-means
/// start finds it and EM from it is enough; where they hold many local optima of about the
/// same fit (a UMAP layout of a convolutional feature map on Fashion-MNIST holds many), the
/// lowest-inertia start was one of the poorer ones and the likelihood, which EM maximises,
/// the better judge (docs/RESULTS.md).
pub fn fit_likeliest(p: &Points<'_>, cfg: &GmmConfig, starts: u64) -> Result<Gmm, ClusterError> {
    if starts == 0 {
        return Err(ClusterError::Parameter {
            name: "starts",
            value: starts.to_string(),
            reason: "must be at least 1",
        });
    }
    let mut fits = (0..starts)
        .into_par_iter()
        .map(|r| {
            fit(
                p,
                &GmmConfig {
                    seed: start_seed(cfg.seed, r),
                    restarts: 1,
                    ..*cfg
                },
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let best = (1..fits.len()).fold(0, |b, i| {
        if fits[i].log_likelihood > fits[b].log_likelihood {
            i
        } else {
            b
        }
    });
    Ok(fits.swap_remove(best))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    /// A tight cloud (sd 0.3) at the origin and a broad one (sd 2) centred at (4, 0): the
    /// k-means boundary, halfway between the centres, hands the broad cloud's near side to the
    /// tight one; a mixture with its own covariance per component does not.
    fn unequal(n: usize) -> (Vec<f32>, Vec<u32>) {
        let mut r = crate::rng(1, 0);
        let (tight, broad) = (
            Normal::new(0.0, 0.3).unwrap(),
            Normal::new(0.0, 2.0).unwrap(),
        );
        let mut xs = Vec::new();
        let mut truth = Vec::new();
        for i in 0..n {
            let c = (i % 2) as u32;
            let (dist, cx) = if c == 0 { (tight, 0.0) } else { (broad, 4.0) };
            xs.push((cx + dist.sample(&mut r)) as f32);
            xs.push(dist.sample(&mut r) as f32);
            truth.push(c);
        }
        (xs, truth)
    }

    /// Two elongated, correlated clouds side by side: the full shape describes them and wins
    /// the BIC; two round clouds: the diagonal one does, with fewer parameters.
    #[test]
    fn bic_picks_the_covariance_the_clusters_have() {
        let mut r = crate::rng(3, 0);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let (mut slanted, mut round, mut truth) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..600 {
            let c = (i % 2) as f32;
            let (a, b): (f32, f32) = (noise.sample(&mut r), noise.sample(&mut r));
            // Along the diagonal, 2 long and 0.3 across, centres 4 apart on each axis.
            slanted.extend([2.0 * a + 0.3 * b + 4.0 * c, 2.0 * a - 0.3 * b - 4.0 * c]);
            round.extend([a + 6.0 * c, b]);
            truth.push(i % 2);
        }
        let cfg = GmmConfig::new(2, Covariance::Diagonal);
        let p = Points::new(&slanted, 2).unwrap();
        let c = fit_by_bic(&p, &cfg, 5).unwrap();
        assert_eq!(c.gmm.covariance(), Covariance::Full, "{c:?}");
        let agree = c
            .gmm
            .labels
            .iter()
            .zip(&truth)
            .filter(|(a, b)| a == b)
            .count();
        assert!(agree.max(600 - agree) >= 590, "{agree} of 600");
        let p = Points::new(&round, 2).unwrap();
        let c = fit_by_bic(&p, &cfg, 5).unwrap();
        assert_eq!(c.gmm.covariance(), Covariance::Diagonal, "{c:?}");
        assert!(c.full.is_some_and(|f| f > c.diagonal), "{c:?}");
    }

    /// Three points per cluster in five dimensions: a full covariance cannot be estimated, and
    /// the full fit is not scored.
    #[test]
    fn a_full_fit_on_too_few_points_is_not_scored() {
        let mut r = crate::rng(4, 0);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let xs: Vec<f32> = (0..30)
            .map(|i| noise.sample(&mut r) + 10.0 * ((i / 5) % 2) as f32)
            .collect();
        let p = Points::new(&xs, 5).unwrap();
        let c = fit_by_bic(&p, &GmmConfig::new(2, Covariance::Full), 5).unwrap();
        assert_eq!(c.gmm.covariance(), Covariance::Diagonal);
        assert_eq!(c.full, None);
    }

    #[test]
    fn mixtures_fit_clusters_of_unequal_spread_where_kmeans_fails() {
        let (xs, truth) = unequal(4000);
        let p = Points::new(&xs, 2).unwrap();
        let g = fit(&p, &GmmConfig::new(2, Covariance::Full)).unwrap();
        assert!(g.converged);
        let acc = crate::metrics::accuracy(&g.labels, &truth);
        let km = KMeansConfig {
            restarts: 5,
            ..KMeansConfig::new(2)
        }
        .fit(&p)
        .unwrap();
        let km_acc = crate::metrics::accuracy(&km.labels, &truth);
        assert!(acc > 0.98 && km_acc < 0.95, "GMM {acc}, k-means {km_acc}");
        let w: f64 = g.components.iter().map(|c| c.weight).sum();
        assert!((w - 1.0).abs() < 1e-9);

        let diag = fit(&p, &GmmConfig::new(2, Covariance::Diagonal)).unwrap();
        assert!(crate::metrics::accuracy(&diag.labels, &truth) > 0.98);
        assert!(diag.components.iter().all(|c| c.covariance[1] == 0.0));
        assert!(diag.parameters() < g.parameters());
        assert!(g.bic(4000).is_finite());
    }

    /// Ten tight clouds (sd 0.3) in a row, 4 apart, the first three six times as dense as the
    /// rest. A single k-means++ start now and then puts two centres in one dense cloud and one
    /// between two sparse clouds, and EM keeps that.
    fn row() -> (Vec<f32>, Vec<u32>) {
        let mut r = crate::rng(3, 0);
        let noise = Normal::new(0.0, 0.3).unwrap();
        let (mut xs, mut truth) = (Vec::new(), Vec::new());
        for c in 0..10u32 {
            for _ in 0..if c < 3 { 600 } else { 100 } {
                xs.push(4.0 * c as f32 + noise.sample(&mut r));
                xs.push(noise.sample(&mut r));
                truth.push(c);
            }
        }
        (xs, truth)
    }

    #[test]
    fn the_best_of_several_starts_undoes_a_bad_start() {
        let (xs, truth) = row();
        let p = Points::new(&xs, 2).unwrap();
        let acc = |restarts, seed| {
            let cfg = GmmConfig {
                restarts,
                seed,
                ..GmmConfig::new(10, Covariance::Full)
            };
            crate::metrics::accuracy(&fit(&p, &cfg).unwrap().labels, &truth)
        };
        let failed = (0..40).filter(|&s| acc(1, s) < 0.99).count();
        assert!(
            failed > 0,
            "no single start failed: the data no longer test the restarts"
        );
        for seed in 0..40 {
            assert_eq!(acc(10, seed), 1.0, "seed {seed}");
        }
    }

    #[test]
    fn the_likeliest_of_several_mixtures_undoes_a_bad_start() {
        let (xs, truth) = row();
        let p = Points::new(&xs, 2).unwrap();
        let cfg = GmmConfig::new(10, Covariance::Full);
        // The twenty single starts it compares, as it draws them.
        let singles: Vec<Gmm> = (0..20u64)
            .map(|r| {
                let seed = r.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                fit(
                    &p,
                    &GmmConfig {
                        seed,
                        restarts: 1,
                        ..cfg
                    },
                )
                .unwrap()
            })
            .collect();
        assert!(
            singles
                .iter()
                .any(|g| crate::metrics::accuracy(&g.labels, &truth) < 0.99),
            "no single start failed: the data no longer test the choice"
        );
        let best = fit_likeliest(&p, &cfg, 20).unwrap();
        assert_eq!(crate::metrics::accuracy(&best.labels, &truth), 1.0);
        let top = singles
            .iter()
            .map(|g| g.log_likelihood)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(best.log_likelihood, top);
        // Same seed, same mixture, whatever the thread schedule.
        assert_eq!(fit_likeliest(&p, &cfg, 20).unwrap(), best);
        assert!(matches!(
            fit_likeliest(&p, &cfg, 0),
            Err(ClusterError::Parameter { name: "starts", .. })
        ));
    }

    #[test]
    fn bad_settings_are_refused() {
        let (xs, _) = unequal(10);
        let p = Points::new(&xs, 2).unwrap();
        let mut cfg = GmmConfig::new(0, Covariance::Full);
        assert!(matches!(fit(&p, &cfg), Err(ClusterError::BadK { .. })));
        cfg.k = 11;
        assert!(matches!(fit(&p, &cfg), Err(ClusterError::BadK { .. })));
        cfg.k = 2;
        cfg.reg = -1.0;
        assert!(matches!(fit(&p, &cfg), Err(ClusterError::Parameter { .. })));
    }
}

//! The clustering toolkit behind `dekm evaluate`, `dekm cluster` and `dekm select-k`: which
//! space to cluster in (a model's latent space or the raw, normalised samples), running any of
//! `dekm-cluster`'s algorithms there, and scoring the result with every metric that applies.

use std::time::Instant;

use dekm_cluster::internal::{
    PairOptions, PairScore, calinski_harabasz, davies_bouldin, dunn, silhouette,
};
use dekm_cluster::{
    ClusterError, Fit, Fitted, Points, dbscan, gmm, hierarchy, kmeans, metrics, som, umap,
};
use dekm_shared::TrainingMetrics;

use candle_core::Device;
use dekm_trainer::data::Dataset;
use dekm_trainer::export::LoadedModel;
use dekm_trainer::pipeline::{PipelineError, latent_on};

/// Points to cluster: `[n, dim]` row-major.
#[derive(Debug, Clone)]
pub struct Space {
    /// Coordinates.
    pub xs: Vec<f32>,
    /// Dimension.
    pub dim: usize,
    /// "latent (MODEL)" or "raw".
    pub name: String,
}

/// The latent space of `model` when given (embedded on `dev`), else the samples normalised as
/// training would (pixels / 255, vectors standardised).
pub fn space(
    model: Option<&LoadedModel>,
    ds: &Dataset,
    dev: &Device,
) -> Result<Space, PipelineError> {
    match model {
        Some(m) => Ok(Space {
            xs: latent_on(m, ds, dev)?,
            dim: m.head.latent_dim(),
            name: format!("latent space of the model trained on {}", m.meta.dataset),
        }),
        None => Ok(Space {
            xs: ds
                .normalized(&ds.fit_normalizer())
                .map_err(|(i, e)| PipelineError::Input(format!("sample {i}: {e}")))?,
            dim: ds.shape.len(),
            name: format!("raw {} values", ds.shape.len()),
        }),
    }
}

/// A clustering method and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// k-means (k-means++, restarts).
    KMeans {
        /// Clusters.
        k: usize,
    },
    /// Mini-batch k-means.
    MiniBatch {
        /// Clusters.
        k: usize,
    },
    /// Gaussian mixture.
    Gmm {
        /// Components.
        k: usize,
        /// Covariance shape.
        covariance: gmm::Covariance,
    },
    /// Model-based clustering: the Gaussian mixture whose covariance shape (full or diagonal)
    /// has the lowest BIC, as `dekm train`'s `input` start fits it.
    GmmBic {
        /// Components.
        k: usize,
    },
    /// DBSCAN.
    Dbscan {
        /// Radius.
        eps: f64,
        /// Core point threshold.
        min_samples: usize,
    },
    /// Agglomerative clustering cut at `k`.
    Agglomerative {
        /// Clusters.
        k: usize,
        /// Linkage.
        linkage: hierarchy::Linkage,
    },
    /// N2D: a full-covariance GMM on a `k`-dimensional UMAP layout.
    N2d {
        /// Clusters.
        k: usize,
    },
    /// Self-organising map with `rows x cols` nodes.
    Som {
        /// Grid rows.
        rows: usize,
        /// Grid columns.
        cols: usize,
    },
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KMeans { k } => write!(f, "k-means (k={k})"),
            Self::MiniBatch { k } => write!(f, "mini-batch k-means (k={k})"),
            Self::Gmm { k, covariance } => write!(f, "GMM {covariance:?} (k={k})"),
            Self::GmmBic { k } => write!(f, "GMM, covariance by BIC (k={k})"),
            Self::Dbscan { eps, min_samples } => write!(f, "DBSCAN (eps={eps}, min={min_samples})"),
            Self::Agglomerative { k, linkage } => write!(f, "agglomerative {linkage:?} (k={k})"),
            Self::N2d { k } => write!(f, "N2D: UMAP + GMM Full (k={k})"),
            Self::Som { rows, cols } => write!(f, "SOM {rows}x{cols}"),
        }
    }
}

/// Runs `method` on `s`; `None` marks noise (DBSCAN only).
pub fn run(method: &Method, s: &Space, seed: u64) -> Result<Vec<Option<u32>>, ClusterError> {
    let p = Points::new(&s.xs, s.dim)?;
    match *method {
        Method::KMeans { k } => fitted(
            &kmeans::KMeansConfig {
                seed,
                ..kmeans::KMeansConfig::new(k)
            },
            &p,
        ),
        Method::MiniBatch { k } => fitted(
            &kmeans::MiniBatchConfig {
                k,
                batch: 1024,
                iterations: 100,
                seed,
            },
            &p,
        ),
        Method::Gmm { k, covariance } => fitted(
            &gmm::GmmConfig {
                seed,
                ..gmm::GmmConfig::new(k, covariance)
            },
            &p,
        ),
        Method::GmmBic { k } => {
            let cfg = gmm::GmmConfig {
                seed,
                ..gmm::GmmConfig::new(k, gmm::Covariance::Diagonal)
            };
            Ok(
                gmm::fit_by_bic(&p, &cfg, dekm_trainer::train::INPUT_STARTS)?
                    .gmm
                    .assignments(),
            )
        }
        Method::Dbscan { eps, min_samples } => {
            fitted(&dbscan::DbscanConfig { eps, min_samples }, &p)
        }
        Method::Agglomerative { k, linkage } => {
            fitted(&hierarchy::AgglomerativeConfig { k, linkage }, &p)
        }
        Method::N2d { k } => fitted(
            &umap::N2dConfig {
                k,
                seed,
                // As `train`'s manifold start: the lowest-inertia start merged two digits
                // and split the 1s on MNIST's latent layout where the likeliest did not.
                mixture: umap::Mixture::Likeliest(dekm_trainer::train::LATENT_STARTS),
                neighbours: None,
            },
            &p,
        ),
        Method::Som { rows, cols } => fitted(
            &som::SomConfig {
                rows,
                cols,
                epochs: 10,
                learning_rate: 0.5,
                seed,
            },
            &p,
        ),
    }
}

/// Fits `cfg` on `p`: each point's cluster, `None` for noise.
fn fitted(cfg: &impl Fit, p: &Points<'_>) -> Result<Vec<Option<u32>>, ClusterError> {
    Ok(cfg.fit(p)?.assignments())
}

/// Every applicable metric of one clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Distinct clusters.
    pub clusters: usize,
    /// Noise points (left out of the internal metrics, counted as a cluster of their own in
    /// the external ones).
    pub noise: usize,
    /// Mean silhouette.
    pub silhouette: Option<PairScore>,
    /// Calinski-Harabasz.
    pub calinski_harabasz: Option<f64>,
    /// Davies-Bouldin.
    pub davies_bouldin: Option<f64>,
    /// Dunn.
    pub dunn: Option<PairScore>,
    /// ACC, NMI, ARI against labels.
    pub external: Option<TrainingMetrics>,
}

/// Scores `labels` on `s` (internal metrics where at least two clusters exist).
pub fn score(
    s: &Space,
    labels: &[Option<u32>],
    truth: Option<&[u32]>,
    pairs: &PairOptions,
) -> Result<Scores, ClusterError> {
    let kept: Vec<usize> = (0..labels.len()).filter(|&i| labels[i].is_some()).collect();
    let xs: Vec<f32> = kept
        .iter()
        .flat_map(|&i| s.xs[i * s.dim..(i + 1) * s.dim].iter().copied())
        .collect();
    let ls: Vec<u32> = kept.iter().filter_map(|&i| labels[i]).collect();
    let clusters = ls.iter().collect::<std::collections::BTreeSet<_>>().len();
    let noise = labels.len() - kept.len();
    let internal = clusters >= 2 && clusters < ls.len();
    let (mut sil, mut ch, mut db, mut du) = (None, None, None, None);
    if internal {
        let p = Points::new(&xs, s.dim)?;
        sil = Some(silhouette(&p, &ls, pairs)?);
        ch = Some(calinski_harabasz(&p, &ls)?);
        db = Some(davies_bouldin(&p, &ls)?);
        du = Some(dunn(&p, &ls, pairs)?);
    }
    let external = truth.map(|t| {
        // Noise is one more cluster, numbered after the real ones (the metrics size their
        // tables by the largest label).
        let noise_label = labels.iter().flatten().max().map_or(0, |m| m + 1);
        let all: Vec<u32> = labels.iter().map(|l| l.unwrap_or(noise_label)).collect();
        metrics::evaluate(&all, t)
    });
    Ok(Scores {
        clusters,
        noise,
        silhouette: sil,
        calinski_harabasz: ch,
        davies_bouldin: db,
        dunn: du,
        external,
    })
}

/// One method's partition, its scores and how long the clustering took.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Cluster per sample; `None` marks noise (DBSCAN only).
    pub labels: Vec<Option<u32>>,
    /// Internal and external metrics.
    pub scores: Scores,
    /// Seconds the clustering took (scoring excluded).
    pub seconds: f64,
}

/// Runs and scores `method`, timing the clustering alone.
pub fn run_and_score(
    method: &Method,
    s: &Space,
    truth: Option<&[u32]>,
    seed: u64,
    pairs: &PairOptions,
) -> Result<Scored, ClusterError> {
    let started = Instant::now();
    let labels = run(method, s, seed)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Scored {
        scores: score(s, &labels, truth, pairs)?,
        labels,
        seconds,
    })
}

/// Renders rows of scores as an aligned table (`*` marks a metric computed on a sample).
pub fn scores_table(rows: &[(String, Scores, Option<f64>)]) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let pair = |v: Option<PairScore>| {
        v.map_or("-".to_string(), |v| {
            format!(
                "{:.4}{}",
                v.value,
                if v.sampled.is_some() { "*" } else { "" }
            )
        })
    };
    let mut out = format!(
        "{:<34} {:>8} {:>6} {:>10} {:>11} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8}\n",
        "method",
        "clusters",
        "noise",
        "silhouette",
        "Calinski-H",
        "Davies-B",
        "Dunn",
        "ACC",
        "NMI",
        "ARI",
        "seconds"
    );
    for (name, s, secs) in rows {
        let e = s.external;
        out += &format!(
            "{:<34} {:>8} {:>6} {:>10} {:>11} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8}\n",
            name,
            s.clusters,
            s.noise,
            pair(s.silhouette),
            s.calinski_harabasz
                .map_or("-".into(), |v| format!("{v:.1}")),
            f(s.davies_bouldin),
            pair(s.dunn),
            f(e.map(|e| e.acc)),
            f(e.map(|e| e.nmi)),
            f(e.map(|e| e.ari)),
            secs.map_or("-".into(), |v| format!("{v:.1}")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> (Space, Vec<u32>) {
        let mut xs = Vec::new();
        let mut truth = Vec::new();
        let mut s = 1u32;
        for i in 0..300 {
            let c = i % 3;
            for j in 0..2 {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                xs.push(if j == 0 { c as f32 * 8.0 } else { 0.0 } + noise);
            }
            truth.push(c as u32);
        }
        (
            Space {
                xs,
                dim: 2,
                name: "test".into(),
            },
            truth,
        )
    }

    #[test]
    fn every_method_finds_three_blobs_and_is_scored() {
        let (s, truth) = blobs();
        let pairs = PairOptions::default();
        for m in [
            Method::KMeans { k: 3 },
            Method::MiniBatch { k: 3 },
            Method::Gmm {
                k: 3,
                covariance: gmm::Covariance::Full,
            },
            Method::Gmm {
                k: 3,
                covariance: gmm::Covariance::Diagonal,
            },
            Method::GmmBic { k: 3 },
            Method::Dbscan {
                eps: 1.0,
                min_samples: 5,
            },
            Method::Agglomerative {
                k: 3,
                linkage: hierarchy::Linkage::Ward,
            },
            Method::Som { rows: 1, cols: 3 },
        ] {
            let sc = run_and_score(&m, &s, Some(&truth), 0, &pairs)
                .unwrap()
                .scores;
            assert_eq!((sc.clusters, sc.noise), (3, 0), "{m}");
            assert_eq!(sc.external.unwrap().acc, 1.0, "{m}");
            assert!(sc.silhouette.unwrap().value > 0.8, "{m}");
            assert!(sc.dunn.unwrap().value > 1.0, "{m}");
        }
        let table = scores_table(&[(
            "k-means".into(),
            run_and_score(&Method::KMeans { k: 3 }, &s, None, 0, &pairs)
                .unwrap()
                .scores,
            Some(0.1),
        )]);
        assert!(table.contains("k-means") && table.contains(" -"), "{table}");
    }

    #[test]
    fn one_cluster_has_no_internal_metrics_and_bad_k_is_an_error() {
        let (s, truth) = blobs();
        let pairs = PairOptions::default();
        let sc = run_and_score(&Method::KMeans { k: 1 }, &s, Some(&truth), 0, &pairs)
            .unwrap()
            .scores;
        assert_eq!((sc.clusters, sc.silhouette), (1, None));
        assert!(run(&Method::KMeans { k: 0 }, &s, 0).is_err());
        assert!(run(&Method::KMeans { k: 301 }, &s, 0).is_err());
        let eps0 = Method::Dbscan {
            eps: 0.0,
            min_samples: 5,
        };
        assert!(run(&eps0, &s, 0).is_err());
        // Everything noise: no internal metrics, external ones with noise as one cluster.
        let tiny = Method::Dbscan {
            eps: 1e-3,
            min_samples: 5,
        };
        let sc = run_and_score(&tiny, &s, Some(&truth), 0, &pairs)
            .unwrap()
            .scores;
        assert_eq!((sc.clusters, sc.noise), (0, 300));
        assert!((sc.external.unwrap().acc - 1.0 / 3.0).abs() < 1e-9);
    }
}

//! Where the clustering stage starts: k-means on the pretrained embedding (the AE + k-means
//! baseline, and the DEKM paper's start), N2D's partition of a UMAP layout (`manifold`), or a
//! Gaussian mixture on the input itself (`input`).

use candle_core::{Device, Tensor};
use dekm_cluster::gmm::{self, Covariance, GmmConfig};
use dekm_cluster::pca::Pca;
use dekm_cluster::umap;
use serde::{Deserialize, Serialize};

use super::observe::{History, Progress, Watch};
use super::{Start, TrainConfig, TrainError};
use crate::choice::Choice;
use crate::data::Dataset;
use crate::kmeans::{KMeans, KMeansConfig, KMeansInit};
use crate::metrics;
use crate::model::{Encoder, manifold_features};
use crate::neighbours::nearest_on;
use dekm_cluster::{Fit, Points};
use dekm_shared::TrainingMetrics;

/// The partition the clustering stage starts from.
pub(super) struct Begun {
    /// Its clustering.
    pub(super) km: KMeans,
    /// AE + k-means' metrics, when labels exist.
    pub(super) baseline: Option<TrainingMetrics>,
    /// Whether it is a manifold or input start, held until k-means agrees with it.
    pub(super) held: bool,
}

/// The mixture an `input` start fitted, as `metrics.json` keeps it and `dekm train` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputMixture {
    /// The covariance shape the BIC chose.
    pub covariance: Covariance,
    /// BIC of the full shape (lower is better); `None` where its fit left a cluster with no
    /// more samples than dimensions, which cannot hold a full covariance.
    pub bic_full: Option<f64>,
    /// BIC of the diagonal shape.
    pub bic_diagonal: f64,
}

/// k-means restarts of clustering iteration `it` (0 is the start), each iteration seeded apart,
/// started as `init` says.
pub(super) fn kmeans_config(cfg: &TrainConfig, it: usize, init: KMeansInit) -> KMeansConfig {
    KMeansConfig {
        restarts: cfg.restarts,
        seed: cfg.seed.wrapping_add(it as u64),
        init,
        ..KMeansConfig::new(cfg.k)
    }
}

/// k-means on the pretrained embedding `z` (the AE + k-means baseline, reported to the
/// observer), then the `begin` start from it.
pub(super) fn begin(
    begin: Start,
    (ds, encoder, xs, z): (&Dataset, &Encoder, &Tensor, &[f32]),
    cfg: &TrainConfig,
    history: &mut History,
    watch: Watch<'_>,
) -> Result<Begun, TrainError> {
    let p = Points::new(z, cfg.latent)?;
    let mut km = kmeans_config(cfg, 0, KMeansInit::PlusPlus).fit(&p)?;
    let baseline = ds.labels.as_ref().map(|t| metrics::evaluate(&km.labels, t));
    if let Some(m) = baseline {
        tracing::info!(acc = m.acc, nmi = m.nmi, ari = m.ari, "AE + k-means");
    }
    watch.notify(Progress::Clustered { metrics: baseline });
    let held = matches!(begin, Start::Manifold | Start::Input);
    if held {
        watch.notify(Progress::Starting {
            start: begin,
            samples: ds.len(),
        });
        km = if begin == Start::Input {
            let (labels, mixture) = input_mixture(xs, cfg)?;
            history.mixture = Some(mixture);
            KMeans::from_labels(&p, cfg.k, labels)?
        } else {
            manifold_start(encoder, xs, z, cfg)?
        };
        history.start = ds.labels.as_ref().map(|t| metrics::evaluate(&km.labels, t));
        if let Some(m) = history.start {
            tracing::info!(
                acc = m.acc,
                nmi = m.nmi,
                ari = m.ari,
                start = begin.name(),
                "start"
            );
        }
    }
    Ok(Begun { km, baseline, held })
}

/// Where the clustering stage started and why, as `dekm train` prints it: `used` is the start
/// the run took, `asked` the one it was given, `mixture` what an `input` start fitted.
pub fn explain(used: Start, asked: Start, mixture: Option<&InputMixture>) -> String {
    let what = match (used, mixture) {
        (Start::Input, Some(m)) => {
            let (own, against) = match (m.covariance, m.bic_full) {
                (Covariance::Full, Some(full)) => {
                    (full, format!("{:.0} for diagonal", m.bic_diagonal))
                }
                (_, Some(full)) => (m.bic_diagonal, format!("{full:.0} for full")),
                (_, None) => (
                    m.bic_diagonal,
                    "full: a cluster held too few samples for it".to_string(),
                ),
            };
            format!(
                "a Gaussian mixture on the standardised input itself, {} covariance by BIC ({own:.0} against {against})",
                m.covariance.name()
            )
        }
        (Start::Manifold, _) => "N2D, a Gaussian mixture on a UMAP layout of the embedding".into(),
        _ => "k-means on the autoencoder's embedding".into(),
    };
    let why = match (asked, used) {
        (Start::Auto, Start::Input) => format!(
            "; auto clusters vectors of at most {} features on the input, where it measured at least as well as the latent",
            Start::AUTO_INPUT_MAX_DIM
        ),
        (Start::Auto, Start::Manifold) => {
            "; auto's choice for the DEKM stage on this many samples".into()
        }
        (Start::Auto, _) => "; auto's choice for this stage and size".into(),
        _ => "; as asked".into(),
    };
    format!("started from {}: {what}{why}", used.name())
}

/// Mixtures the `input` start fits per covariance shape, keeping the likeliest: on wine the
/// mixture EM reaches from the lowest-inertia k-means start is a poorer one (ACC 0.955) than
/// the likeliest of ten single starts (docs/RESULTS.md, "Vector data").
pub const INPUT_STARTS: u64 = 10;

/// The `input` start's labels: the mixture of `cfg.k` Gaussians on the normalised samples
/// `xs` (`[n, d]`) whose covariance shape has the lowest BIC, each shape the likeliest of
/// [`INPUT_STARTS`].
fn input_mixture(xs: &Tensor, cfg: &TrainConfig) -> Result<(Vec<u32>, InputMixture), TrainError> {
    let d = xs.dim(1)?;
    let flat = xs.flatten_all()?.to_vec1::<f32>()?;
    let p = Points::new(&flat, d)?;
    let gmm_cfg = GmmConfig {
        seed: cfg.seed,
        ..GmmConfig::new(cfg.k, Covariance::Diagonal)
    };
    let chosen = gmm::fit_by_bic(&p, &gmm_cfg, INPUT_STARTS)?;
    let mixture = InputMixture {
        covariance: chosen.gmm.covariance(),
        bic_full: chosen.full,
        bic_diagonal: chosen.diagonal,
    };
    tracing::info!(
        covariance = mixture.covariance.name(),
        bic_full = ?mixture.bic_full,
        bic_diagonal = mixture.bic_diagonal,
        "input mixture"
    );
    Ok((chosen.gmm.labels, mixture))
}

/// Dimensions a convolutional encoder's feature map is projected on before the `manifold`
/// start lays it out (1,152 values for a 28x28 image): UMAP's exact neighbour search grows with
/// the dimension, and the leading axes keep nearly all of the map's variance (docs/RESULTS.md).
pub const MANIFOLD_AXES: usize = 50;

/// Mixtures the `manifold` start fits on a feature-map layout, keeping the likeliest.
///
/// Why so many: on Fashion-MNIST's layouts the likeliest partitions are rare, found by a few
/// single starts in a hundred, and the common ones a little less likely are often poorer. The
/// likelihood is not a faithful judge either, but over seeds the mean rose with the number of
/// starts; docs/RESULTS.md ("the likeliest of 100 mixtures") has the figures and the cost.
pub const MANIFOLD_STARTS: u64 = 100;

/// Mixtures the `manifold` start fits on a layout of a dense encoder's latent (and `dekm
/// cluster --method n2d` on the points it is given), keeping the likeliest.
///
/// Why fewer than [`MANIFOLD_STARTS`]: a latent's layout holds few partitions (5-9 distinct
/// ones in 20 starts), and on MNIST's 70,000 images as vectors the first 5 starts already held
/// the likeliest; 100 would cost 47 s there and push 2,000-sample runs past 30 s on the mean
/// (docs/RESULTS.md, "the likeliest mixture on a dense latent").
pub const LATENT_STARTS: u64 = 20;

/// The `manifold` start: N2D's partition, each centre the mean of its cluster in the embedding
/// `z` (`[n, d]`). The labels are N2D's, not the nearest centres'; they are held (see
/// [`super::checkpoint::Held`]) while fine-tuning pulls every point towards its N2D cluster.
///
/// What is laid out: for a convolutional encoder its last feature map for the rows of `xs`
/// ([`manifold_features`], projected on [`MANIFOLD_AXES`] principal axes), for a dense one the
/// latent `z`, as N2D. Why the feature map: it keeps what the 10-d latent loses; its layout
/// holds more partitions, better ones among them (docs/RESULTS.md, "the manifold start on the
/// convolutional feature map"). The dense encoder's hidden layers were not measured.
///
/// On either layout N2D keeps the likeliest of several mixtures ([`MANIFOLD_STARTS`] on a
/// feature map, [`LATENT_STARTS`] on a latent). The lowest-inertia k-means start, which dense
/// encoders had, picked a partition with two digits merged and the 1s split on the layout of
/// MNIST's 70,000 images as vectors (ACC 0.83), while the likelier mixture on the same layout
/// is the right one (0.975; docs/RESULTS.md, "the likeliest mixture on a dense latent").
fn manifold_start(
    encoder: &Encoder,
    xs: &Tensor,
    z: &[f32],
    cfg: &TrainConfig,
) -> Result<KMeans, TrainError> {
    let features = manifold_features(encoder, xs, 1024)?;
    let (f, dim, starts) = match &features {
        Some((f, dim)) => (f.as_slice(), *dim, MANIFOLD_STARTS),
        None => (z, cfg.latent, LATENT_STARTS),
    };
    let p = Points::new(f, dim)?;
    let projected;
    let p = if dim > MANIFOLD_AXES {
        let pca = Pca::fit(&p, MANIFOLD_AXES)?;
        tracing::debug!(
            features = dim,
            axes = MANIFOLD_AXES,
            explained = pca.explained(),
            "manifold features projected"
        );
        projected = pca.project(&p)?;
        Points::new(&projected, MANIFOLD_AXES)?
    } else {
        p
    };
    let labels = n2d(xs.device(), &p, cfg, umap::Mixture::Likeliest(starts))?;
    Ok(KMeans::from_labels(
        &Points::new(z, cfg.latent)?,
        cfg.k,
        labels,
    )?)
}

/// N2D's labels of `p` with the run's k and seed. On a GPU the neighbour search runs there as
/// batched distance products ([`crate::neighbours`]); on the CPU it is the exact search of
/// [`dekm_cluster::neighbours`].
fn n2d(
    dev: &Device,
    p: &Points<'_>,
    cfg: &TrainConfig,
    mixture: umap::Mixture,
) -> Result<Vec<u32>, TrainError> {
    // Past N2D's layout limit only a sample's neighbours are searched, on the CPU's index.
    let known = if dev.is_cpu() || !umap::N2dConfig::lays_out_all(p.len()) {
        None
    } else {
        let m = umap::N2dConfig::neighbours_needed(p.len(), cfg.k);
        Some(nearest_on(dev, p, m)?)
    };
    let n2d = umap::N2dConfig {
        k: cfg.k,
        seed: cfg.seed,
        mixture,
        neighbours: known.as_ref(),
    };
    Ok(n2d.fit(p)?.labels)
}

//! Where the clustering stage starts: k-means on the pretrained embedding (the AE + k-means
//! baseline, and the DEKM paper's start), or N2D's partition of a UMAP layout (`manifold`).

use candle_core::{Device, Tensor};
use dekm_cluster::pca::Pca;
use dekm_cluster::umap;

use super::observe::{History, Progress, Watch};
use super::{Start, TrainConfig, TrainError};
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
    /// Whether it is a manifold start, held until k-means agrees with it.
    pub(super) held: bool,
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
    let held = begin == Start::Manifold;
    if held {
        km = manifold_start(encoder, xs, z, cfg)?;
        history.start = ds.labels.as_ref().map(|t| metrics::evaluate(&km.labels, t));
        if let Some(m) = history.start {
            tracing::info!(acc = m.acc, nmi = m.nmi, ari = m.ari, "manifold start");
        }
    }
    Ok(Begun { km, baseline, held })
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

/// The `manifold` start: N2D's partition, each centre the mean of its cluster in the embedding
/// `z` (`[n, d]`). The labels are N2D's, not the nearest centres'; they are held (see
/// [`super::checkpoint::Held`]) while fine-tuning pulls every point towards its N2D cluster.
///
/// What is laid out: for a convolutional encoder its last feature map for the rows of `xs`
/// ([`manifold_features`], projected on [`MANIFOLD_AXES`] principal axes), and N2D keeps the
/// likeliest of [`MANIFOLD_STARTS`] mixtures; for a dense one the latent `z`, as N2D, and the
/// mixture from the best k-means start. Why: the feature map keeps what the 10-d latent loses;
/// its layout holds more partitions, better ones among them, and there the lowest-inertia
/// start falls on a poor one (docs/RESULTS.md, "the manifold start on the convolutional feature
/// map"). The dense encoder's hidden layers were not measured, so vector data keep the latent.
fn manifold_start(
    encoder: &Encoder,
    xs: &Tensor,
    z: &[f32],
    cfg: &TrainConfig,
) -> Result<KMeans, TrainError> {
    let Some((f, dim)) = manifold_features(encoder, xs, 1024)? else {
        let p = Points::new(z, cfg.latent)?;
        let labels = n2d(xs.device(), &p, cfg, umap::Mixture::BestStart)?;
        return Ok(KMeans::from_labels(&p, cfg.k, labels)?);
    };
    let p = Points::new(&f, dim)?;
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
    let labels = n2d(
        xs.device(),
        &p,
        cfg,
        umap::Mixture::Likeliest(MANIFOLD_STARTS),
    )?;
    Ok(KMeans::from_labels(
        &Points::new(z, cfg.latent)?,
        cfg.k,
        labels,
    )?)
}

/// N2D's labels of `p` with the run's k and seed. On a GPU the neighbour search runs there as
/// batched distance products ([`crate::neighbours`]); on the CPU it is the exact scan.
fn n2d(
    dev: &Device,
    p: &Points<'_>,
    cfg: &TrainConfig,
    mixture: umap::Mixture,
) -> Result<Vec<u32>, TrainError> {
    let known = if dev.is_cpu() {
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

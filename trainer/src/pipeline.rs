//! The whole job as the CLI and the tests run it: train, calibrate, export; and assigning a data
//! set with an exported model.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use candle_core::{Device, Tensor};
use dekm_edge::Assignment;
use dekm_shared::{ModelMeta, TrainingMetrics};

use crate::calibrate::{Calibration, calibrate};
use crate::data::Dataset;
use crate::export::{self, ExportError, LoadedModel, MetricsReport};
use crate::features::{self, FeatureChoice};
use crate::metrics;
use crate::model::embed;
use crate::train::{self, Method, RunOptions, Start, TrainConfig, TrainError, Trained};

/// Any failure of the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Writing or reading the model failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The clustering head rejected a vector.
    #[error("clustering head: {0}")]
    Head(#[from] dekm_edge::HeadError),
    /// The data does not fit the model.
    #[error("{0}")]
    Input(String),
    /// ClusterGAN's generator could not be written.
    #[error(transparent)]
    Generator(#[from] crate::gan::GanError),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result of [`train_and_export`].
pub struct Outcome {
    /// The trained model.
    pub trained: Trained,
    /// Thresholds and final assignments.
    pub calibration: Calibration,
    /// Metadata written into the header.
    pub meta: ModelMeta,
    /// SHA-256 of `model.safetensors`.
    pub sha256: String,
    /// What the samples were clustered on (series: raw readings or spectra) and why.
    pub features: FeatureChoice,
    /// For vectors: how their features were scaled before the encoder, and why.
    pub scaling: Option<crate::data::VectorScaling>,
}

impl Outcome {
    /// The end-of-training table, when the data have labels: AE + k-means (for DeepCluster,
    /// k-means on the untrained network), the N2D or input mixture start when the run started
    /// from one, and the result of `stage`.
    pub fn results_table(&self, stage: &str) -> Option<String> {
        let (base, last) = (self.trained.baseline?, self.meta.metrics?);
        let name = match self.trained.config.start {
            Start::Input => "input mixture",
            _ => "N2D start",
        };
        let start = self.trained.history.start.map(|m| (name, m));
        // DeepCluster's and ClusterGAN's baseline is k-means on the network before any training.
        let base_name = match self.trained.config.method {
            Method::DeepCluster | Method::ClusterGan => "untrained + k-means",
            _ => "AE+k-means",
        };
        let rows: Vec<_> = [Some((base_name, base)), start, Some((stage, last))]
            .into_iter()
            .flatten()
            .collect();
        Some(metrics_table(&rows))
    }
}

/// Trains on `ds` and writes the model directory `out` (checkpoints under `out/checkpoint`).
pub fn train_and_export(
    ds: &Dataset,
    cfg: &TrainConfig,
    opts: &RunOptions,
    out: &Path,
) -> Result<Outcome, PipelineError> {
    let holdout = cfg.calibration_holdout_for(ds.stream.is_some());
    let (raw_fit, raw_held) = ds.split_holdout(holdout, cfg.seed);
    cfg.validate(raw_fit.len())?;
    let features = features::choose(&raw_fit, cfg)?;
    let (fit, held) = (features.apply(&raw_fit)?, features.apply(&raw_held)?);
    let trained = train::train(&fit, cfg, opts)?;
    // config.json names the start, the device, the holdout and the features `auto` stood for.
    let mut used = trained.config.clone();
    used.calibration_holdout = Some(holdout);
    used.series_features = features.used();
    let score = cfg.outlier_score_for(&fit.shape);
    let held_z = if held.is_empty() {
        None
    } else {
        Some(trained.embed(&held)?)
    };
    tracing::info!(
        trained_on = fit.len(),
        calibrated_on = held.len(),
        "outlier calibration"
    );
    let calibration = calibrate(&trained, held_z.as_deref(), cfg.threshold_quantile, score)?;
    used.outlier_score = Some(calibration.score);
    // Every sample is clustered, the held-out ones by the exported model (the literature's
    // convention for images: all 70,000 of MNIST, training and test split alike).
    let dekm = fit
        .labels
        .as_ref()
        .zip(held.labels.as_ref())
        .map(|(t, th)| {
            let found: Vec<u32> = calibration
                .labels
                .iter()
                .chain(&calibration.held_labels)
                .copied()
                .collect();
            let truth: Vec<u32> = t.iter().chain(th).copied().collect();
            metrics::evaluate(&found, &truth)
        });
    let mut meta = ModelMeta {
        format_version: 0,
        encoder: trained.spec.clone(),
        k: cfg.k,
        threshold_quantile: cfg.threshold_quantile,
        outlier_score: calibration.score,
        stream: ds.stream.clone(),
        spectrum: features.spec(),
        weights: dekm_shared::Weights::F32,
        embedder: ds.text.as_ref().map(|t| t.embedder.clone()),
        dataset: ds.name.clone(),
        samples: fit.len(),
        seed: cfg.seed,
        metrics: dekm,
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        trainer_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    meta.format_version = meta.written_version();
    let report = MetricsReport {
        dataset: &ds.name,
        samples: fit.len(),
        calibration_samples: held.len(),
        config: &used,
        baseline: trained.baseline,
        dekm,
        cluster_sizes: cluster_sizes(&calibration.labels, cfg.k),
        outliers: calibration.outliers.iter().filter(|&&o| o).count(),
        far_out: calibration.far_out,
        history: &trained.history,
        series_features: features.scores,
        vector_scaling: fit.vector_scaling(),
    };
    let sha256 = export::write_model(out, &trained, &calibration, &meta, &report)?;
    if let Some(g) = &trained.generator {
        g.save(&trained.varmap, out)?;
    }
    Ok(Outcome {
        scaling: report.vector_scaling,
        trained,
        calibration,
        meta,
        sha256,
        features,
    })
}

/// Samples per cluster.
pub fn cluster_sizes(labels: &[u32], k: usize) -> Vec<usize> {
    let mut sizes = vec![0; k];
    for &l in labels {
        if let Some(s) = sizes.get_mut(l as usize) {
            *s += 1;
        }
    }
    sizes
}

/// Each cluster's most common true label (the lowest on a tie), the members carrying it and
/// the cluster's size; `None` for an empty cluster. What a person reads to name the clusters.
pub fn majority_labels(found: &[u32], truth: &[u32], k: usize) -> Vec<Option<(u32, usize, usize)>> {
    let classes = truth.iter().max().map_or(0, |&m| m as usize + 1);
    let mut counts = vec![vec![0usize; classes]; k];
    for (&c, &t) in found.iter().zip(truth) {
        if let Some(row) = counts.get_mut(c as usize) {
            row[t as usize] += 1;
        }
    }
    counts
        .iter()
        .map(|row| {
            let size: usize = row.iter().sum();
            let (label, &n) = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))?;
            (size > 0).then_some((label as u32, n, size))
        })
        .collect()
}

/// Encodes and assigns every sample of `ds` with an exported model.
pub fn assign(model: &LoadedModel, ds: &Dataset) -> Result<Vec<Assignment>, PipelineError> {
    assign_latent(model, &latent(model, ds)?)
}

/// Assigns latent vectors `z` (`[n, d]`, as [`latent`] gives them) with the model's head.
pub fn assign_latent(model: &LoadedModel, z: &[f32]) -> Result<Vec<Assignment>, PipelineError> {
    let d = model.head.latent_dim();
    let mut y = vec![0f32; d];
    z.chunks_exact(d)
        .map(|z| model.head.assign(z, &mut y).map_err(PipelineError::from))
        .collect()
}

/// The latent vectors `[n, d]` of every sample of `ds` under an exported model, on the CPU.
pub fn latent(model: &LoadedModel, ds: &Dataset) -> Result<Vec<f32>, PipelineError> {
    latent_on(model, ds, &Device::Cpu)
}

/// [`latent`] computed on `dev` (a GPU runs its `gemm` convolutions over the model's tensors;
/// the CPU the edge crate's kernels, as [`embed`] says).
pub fn latent_on(
    model: &LoadedModel,
    ds: &Dataset,
    dev: &Device,
) -> Result<Vec<f32>, PipelineError> {
    if let (Some(want), Some(got)) = (&model.meta.embedder, ds.text.as_ref().map(|t| &t.embedder))
        && want.sha256 != got.sha256
    {
        return Err(PipelineError::Input(format!(
            "the model clusters embeddings of {} (weights sha256 {}) but these texts were \
             embedded with {} (sha256 {}): embed with the model's embedder",
            want.name,
            &want.sha256[..12.min(want.sha256.len())],
            got.name,
            &got.sha256[..12.min(got.sha256.len())]
        )));
    }
    let raw_len = model.meta.input_len();
    if ds.shape.len() != raw_len {
        return Err(PipelineError::Input(format!(
            "data set {} has {} values per sample but the model expects {raw_len} (trained on {})",
            ds.name,
            ds.shape.len(),
            model.meta.dataset
        )));
    }
    let features = match &model.meta.spectrum {
        Some(spec) => {
            let spectrum = dekm_shared::Spectrum::new(spec.clone())
                .map_err(|e| PipelineError::Input(e.to_string()))?;
            std::borrow::Cow::Owned(features::spectral(ds, &spectrum)?)
        }
        None => std::borrow::Cow::Borrowed(ds),
    };
    let (ds, len) = (features.as_ref(), model.meta.encoder.input_len());
    let flat = ds
        .normalized(&model.normalizer)
        .map_err(|(i, e)| PipelineError::Input(format!("sample {i}: {e}")))?;
    let xs = Tensor::from_vec(flat, (ds.len(), len), dev)?;
    if dev.is_cpu() {
        return Ok(embed(&model.encoder, &xs, 1024)?);
    }
    let encoder = export::encoder_on(&model.meta.encoder, &model.tensors, dev)?;
    Ok(embed(&encoder, &xs, 1024)?)
}

/// Renders rows of metrics as an aligned table.
pub fn metrics_table(rows: &[(&str, TrainingMetrics)]) -> String {
    let w = rows.iter().map(|(n, _)| n.len()).fold(14, usize::max);
    let mut s = format!("{:<w$} {:>8} {:>8} {:>8}\n", "method", "ACC", "NMI", "ARI");
    for (name, m) in rows {
        s += &format!(
            "{:<w$} {:>8.4} {:>8.4} {:>8.4}\n",
            name, m.acc, m.nmi, m.ari
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_labels_name_each_cluster() {
        let found = [0, 0, 0, 1, 1, 2];
        let truth = [2, 2, 1, 0, 1, 1];
        let m = majority_labels(&found, &truth, 4);
        assert_eq!(m, [Some((2, 2, 3)), Some((0, 1, 2)), Some((1, 1, 1)), None]);
    }
}

//! The model directory: `model.safetensors` (weights, clustering head, preprocessing and the
//! metadata header), `model.safetensors.sha256`, `metrics.json` and `config.json`.
//!
//! Tensor names and shapes come from [`dekm_shared::names::expected_tensors`]; loading checks the
//! file against that list, so a file that loads here loads on the edge too.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use dekm_edge::ClusterHead;
use dekm_edge::bundle::sha256_hex;
use dekm_edge::file::read_parts;
use dekm_edge::fs::{FileError, write_atomic};
use dekm_shared::{FORMAT_VERSION, ModelMeta, Normalizer, TrainingMetrics, names};
use safetensors::{Dtype, tensor::TensorView};
use serde::Serialize;

use crate::model::{ConvBackend, Encoder};
use crate::train::{History, TrainConfig, Trained};

pub use dekm_shared::names::{MODEL_FILE, SHA_FILE};

/// Quantile levels stored in the calibration table.
pub const QUANTILE_LEVELS: [f32; 9] = [0.5, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999, 1.0];

/// Why a model cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The safetensors file cannot be serialised.
    #[error("{path}: cannot write safetensors: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Serialiser message.
        reason: String,
    },
    /// A value cannot be written (metadata or report serialisation).
    #[error("{path}: {reason}")]
    Contract {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model cannot be read back: I/O, checksum, format, contract (the edge runtime's own
    /// loader, so a file that loads here loads on a device).
    #[error(transparent)]
    Load(#[from] FileError),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Linear-interpolated quantile of sorted values (numpy's default).
fn quantile(sorted: &[f32], q: f32) -> f32 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f32;
    let (lo, frac) = (pos.floor() as usize, pos.fract());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// The clustering head with thresholds calibrated on the training latents, the per-cluster
/// quantile table, and the final assignments.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Head with thresholds at the configured quantile.
    pub head: ClusterHead,
    /// `[k, QUANTILE_LEVELS.len()]` distance quantiles.
    pub table: Vec<f32>,
    /// Final cluster of every training sample.
    pub labels: Vec<u32>,
    /// Whether each training sample exceeds its cluster's threshold.
    pub outliers: Vec<bool>,
}

/// Calibrates outlier thresholds: per cluster, the `q` quantile of the training samples'
/// distances to their centroid in `y` space.
pub fn calibrate(trained: &Trained, q: f32) -> Result<Calibration, dekm_edge::HeadError> {
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
    let mut y = vec![0f32; d];
    let mut per: Vec<Vec<f32>> = vec![Vec::new(); k];
    let mut labels = Vec::with_capacity(trained.z.len() / d);
    let mut distances = Vec::with_capacity(labels.capacity());
    for z in trained.z.chunks_exact(d) {
        let a = head.assign(z, &mut y)?;
        per[a.cluster as usize].push(a.distance);
        labels.push(a.cluster);
        distances.push(a.distance);
    }
    let mut table = Vec::with_capacity(k * QUANTILE_LEVELS.len());
    let mut thresholds = Vec::with_capacity(k);
    for dists in &mut per {
        dists.sort_by(f32::total_cmp);
        table.extend(QUANTILE_LEVELS.iter().map(|&l| quantile(dists, l)));
        thresholds.push(quantile(dists, q));
    }
    head.set_thresholds(thresholds)?;
    let outliers = labels
        .iter()
        .zip(&distances)
        .map(|(&l, &dist)| dist > head.thresholds()[l as usize])
        .collect();
    Ok(Calibration {
        head,
        table,
        labels,
        outliers,
    })
}

/// What `metrics.json` holds.
#[derive(Debug, Serialize)]
pub struct MetricsReport<'a> {
    /// Data set name.
    pub dataset: &'a str,
    /// Training samples.
    pub samples: usize,
    /// Settings.
    pub config: &'a TrainConfig,
    /// AE + k-means before DEKM.
    pub baseline: Option<TrainingMetrics>,
    /// Final DEKM clustering.
    pub dekm: Option<TrainingMetrics>,
    /// Samples per cluster.
    pub cluster_sizes: Vec<usize>,
    /// Training samples above their cluster's threshold.
    pub outliers: usize,
    /// Curves and timings.
    pub history: &'a History,
}

fn f32_view(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes the model directory and returns the SHA-256 of `model.safetensors`.
pub fn write_model(
    dir: &Path,
    trained: &Trained,
    calibration: &Calibration,
    meta: &ModelMeta,
    report: &MetricsReport<'_>,
) -> Result<String, ExportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    {
        let vars = trained
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        for (name, var) in vars.iter().filter(|(n, _)| n.starts_with("encoder.")) {
            let values = var.flatten_all()?.to_vec1::<f32>()?;
            tensors.insert(name.clone(), (var.dims().to_vec(), f32_view(&values)));
        }
    }
    let (d, k) = (trained.rotation.d, calibration.head.k());
    let q = QUANTILE_LEVELS.len();
    let n = trained.normalizer.len();
    for (name, shape, values) in [
        (names::V, vec![d, d], trained.rotation.v.as_slice()),
        (names::EIGENVALUES, vec![d], &trained.rotation.eigenvalues),
        (names::CENTROIDS_Z, vec![k, d], &trained.kmeans.centroids),
        (names::CENTROIDS_Y, vec![k, d], calibration.head.centroids()),
        (names::THRESHOLDS, vec![k], calibration.head.thresholds()),
        (names::QUANTILE_LEVELS, vec![q], &QUANTILE_LEVELS),
        (names::DISTANCE_QUANTILES, vec![k, q], &calibration.table),
        (names::INPUT_OFFSET, vec![n], trained.normalizer.offset()),
        (names::INPUT_SCALE, vec![n], trained.normalizer.scale()),
    ] {
        tensors.insert(name.to_string(), (shape, f32_view(values)));
    }
    let views = tensors
        .iter()
        .map(|(name, (shape, bytes))| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| contract(dir, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let header = HashMap::from([
        (names::FORMAT_KEY.to_string(), FORMAT_VERSION.to_string()),
        (names::META_KEY.to_string(), meta.to_json()),
    ]);
    let bytes = safetensors::serialize(views, Some(header)).map_err(|e| ExportError::Format {
        path: dir.join(MODEL_FILE),
        reason: e.to_string(),
    })?;
    let sha = sha256_hex(&bytes);
    let model = dir.join(MODEL_FILE);
    write_atomic(&model, &bytes).map_err(io(&model))?;
    let sha_path = dir.join(SHA_FILE);
    write_atomic(&sha_path, format!("{sha}  {MODEL_FILE}\n").as_bytes()).map_err(io(&sha_path))?;
    for (file, json) in [
        ("metrics.json", serde_json::to_vec_pretty(report)),
        ("config.json", serde_json::to_vec_pretty(report.config)),
    ] {
        let path = dir.join(file);
        let json = json.map_err(|e| contract(&path, e.to_string()))?;
        write_atomic(&path, &json).map_err(io(&path))?;
    }
    Ok(sha)
}

fn contract(path: &Path, reason: String) -> ExportError {
    ExportError::Contract {
        path: path.to_path_buf(),
        reason,
    }
}

/// An export read back: everything needed to encode and assign.
#[derive(Debug)]
pub struct LoadedModel {
    /// Metadata from the header.
    pub meta: ModelMeta,
    /// Encoder with the exported weights.
    pub encoder: Encoder,
    /// Clustering head with the exported thresholds.
    pub head: ClusterHead,
    /// Input preprocessing.
    pub normalizer: Normalizer,
    /// Every tensor as stored, by name (for round-trip checks and inspection).
    pub tensors: BTreeMap<String, Vec<f32>>,
}

/// The candle encoder (for the trainer's embedding pass or comparisons) with the weights of
/// checked export `parts`, on the CPU.
pub fn candle_encoder(
    parts: &dekm_edge::ModelParts,
    backend: ConvBackend,
) -> Result<Encoder, candle_core::Error> {
    let dev = Device::Cpu;
    let tensors = parts
        .tensors()
        .iter()
        .filter(|t| t.name.starts_with("encoder."))
        .map(|t| {
            Ok((
                t.name.clone(),
                Tensor::from_slice(&t.data, t.shape.as_slice(), &dev)?,
            ))
        })
        .collect::<Result<HashMap<_, _>, candle_core::Error>>()?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
    Encoder::new(&parts.meta().encoder, &vb, backend)
}

/// The encoder `spec` with the `encoder.*` tensors of `tensors` (as [`LoadedModel::tensors`]
/// holds them), on `dev` with candle's own convolutions: how a GPU runs an exported model.
pub fn encoder_on(
    spec: &dekm_shared::EncoderSpec,
    tensors: &BTreeMap<String, Vec<f32>>,
    dev: &Device,
) -> Result<Encoder, candle_core::Error> {
    let specs = names::encoder_tensors(spec).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let tensors = specs
        .iter()
        .map(|t| {
            let data = tensors
                .get(&t.name)
                .ok_or_else(|| candle_core::Error::Msg(format!("no tensor {}", t.name)))?;
            Ok((
                t.name.clone(),
                Tensor::from_slice(data, t.shape.as_slice(), dev)?,
            ))
        })
        .collect::<Result<HashMap<_, _>, candle_core::Error>>()?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, dev);
    Encoder::new(spec, &vb, ConvBackend::Candle)
}

/// Reads a model directory, a `model.safetensors` path or a bundle with the edge runtime's
/// loader (checksum, version, every tensor's name, dtype and shape), then builds the candle
/// encoder from the same tensors.
pub fn read_model(path: &Path) -> Result<LoadedModel, ExportError> {
    let parts = read_parts(path)?;
    let meta = parts.meta().clone();
    let tensors: BTreeMap<String, Vec<f32>> = parts
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.data.clone()))
        .collect();
    let encoder = candle_encoder(&parts, ConvBackend::Fast)?;
    let d = meta.encoder.latent_dim();
    let take = |n: &str| tensors[n].clone();
    let file = || path.to_path_buf();
    let head = ClusterHead::new(
        d,
        take(names::V),
        take(names::CENTROIDS_Y),
        take(names::THRESHOLDS),
    )
    .map_err(|e| contract(&file(), e.to_string()))?;
    let normalizer = Normalizer::new(take(names::INPUT_OFFSET), take(names::INPUT_SCALE))
        .map_err(|e| contract(&file(), e.to_string()))?;
    Ok(LoadedModel {
        meta,
        encoder,
        head,
        normalizer,
        tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.99) - 3.97).abs() < 1e-6);
    }
}

//! The model directory: `model.safetensors` (weights, clustering head, preprocessing and the
//! metadata header), `model.safetensors.sha256`, `metrics.json` and `config.json`.
//!
//! Tensor names and shapes come from [`dekm_shared::names::expected_tensors`]; loading checks the
//! file against that list, so a file that loads here loads on the edge too.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use dekm_edge::bundle::sha256_hex;
use dekm_edge::file::read_parts;
use dekm_edge::fs::{FileError, write_atomic};
use dekm_shared::{ModelMeta, Normalizer, TrainingMetrics, names};
use safetensors::{Dtype, tensor::TensorView};
use serde::Serialize;

use crate::calibrate::{Calibration, QUANTILE_LEVELS};
use crate::model::{ConvBackend, Encoder};
use crate::train::{History, TrainConfig, Trained};

pub use dekm_shared::names::{MODEL_FILE, SHA_FILE};

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

/// What `metrics.json` holds.
#[derive(Debug, Serialize)]
pub struct MetricsReport<'a> {
    /// Data set name.
    pub dataset: &'a str,
    /// Training samples.
    pub samples: usize,
    /// Samples held out of training to calibrate the outlier thresholds on.
    pub calibration_samples: usize,
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
    /// Calibration samples left out of the thresholds' quantiles as far out.
    pub far_out: usize,
    /// Curves and timings.
    pub history: &'a History,
    /// The silhouettes `--series-features auto` chose by, when it compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_features: Option<crate::features::FeatureScores>,
    /// For vectors: how their features were scaled, and the figure it was chosen by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_scaling: Option<crate::data::VectorScaling>,
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
    if let Some(w) = calibration.head.whitening() {
        tensors.insert(names::WHITENING.to_string(), (vec![k, d, d], f32_view(w)));
    }
    if let Some(r) = calibration.head.references() {
        tensors.insert(
            names::REFERENCES.to_string(),
            (vec![r.len() / d, d], f32_view(r)),
        );
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
        (
            names::FORMAT_KEY.to_string(),
            meta.format_version.to_string(),
        ),
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
    pub head: dekm_edge::ClusterHead,
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
    // An int8 model's weights are widened here, one tensor at a time; the rest are borrowed.
    let widened = parts.int8_tensors().iter().map(|q| {
        let data = q.widen().unwrap_or_default();
        Ok((
            q.name.clone(),
            Tensor::from_vec(data, q.shape.as_slice(), &dev)?,
        ))
    });
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
        .chain(widened)
        .collect::<Result<HashMap<_, _>, candle_core::Error>>()?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
    Encoder::new(&parts.meta().encoder, &vb, backend)
}

/// The encoder `spec` with the `encoder.*` tensors of `tensors` (as [`LoadedModel::tensors`]
/// holds them), on `dev` with the convolutions that run there: how a GPU runs an exported model.
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
    Encoder::new(spec, &vb, ConvBackend::Fast.on(dev))
}

/// Reads a model directory, a `model.safetensors` path or a bundle with the edge runtime's
/// loader (checksum, version, every tensor's name, dtype and shape), then builds the candle
/// encoder from the same tensors.
pub fn read_model(path: &Path) -> Result<LoadedModel, ExportError> {
    let parts = read_parts(path)?;
    let meta = parts.meta().clone();
    let tensors: BTreeMap<String, Vec<f32>> = parts
        .widened_tensors()
        .into_iter()
        .map(|t| (t.name, t.data))
        .collect();
    let encoder = candle_encoder(&parts, ConvBackend::Fast)?;
    // The device's own construction of head and preprocessing, so both sides score alike.
    let edge = dekm_edge::Model::from_parts(&parts).map_err(|e| contract(path, e.to_string()))?;
    let head = edge.head().clone();
    let normalizer = edge.normalizer().clone();
    Ok(LoadedModel {
        meta,
        encoder,
        head,
        normalizer,
        tensors,
    })
}

//! A loaded model: the export's tensors checked against the contract ([`ModelParts`]), then
//! turned into something that runs ([`Model`]), and a [`Session`] that owns the per-sample
//! buffers so that assigning allocates nothing.

use alloc::{collections::BTreeMap, string::String, vec, vec::Vec};

use dekm_shared::{ContractError, ModelMeta, Normalizer, OutlierScore, Spectrum, Weights, names};
use serde::{Deserialize, Serialize};

use crate::encoder::BATCH;
use crate::quantize::{Int8Tensor, is_quantized};
use crate::{Assignment, BatchWorkspace, ClusterHead, Encoder, EncoderError, HeadError, Workspace};

/// Why an export or bundle cannot be loaded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoadError {
    /// Not a readable safetensors file (bad header, offsets, truncated data).
    #[error("not a valid safetensors file: {0}")]
    Safetensors(String),
    /// A bundle does not start with [`crate::bundle::MAGIC`].
    #[error("not a dekm edge bundle (the file does not start with the bundle magic)")]
    BadMagic,
    /// A bundle written by an incompatible version.
    #[error("unsupported bundle version {found} (this build reads versions up to {supported})")]
    BundleVersion {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The data ends early or has bytes after its end.
    #[error("wrong length: expected {expected} bytes, got {got}")]
    Length {
        /// Length the header announces.
        expected: usize,
        /// Length present.
        got: usize,
    },
    /// The bundle's payload does not match its SHA-256.
    #[error("SHA-256 mismatch (expected {expected}, computed {actual}); the data is corrupt")]
    Checksum {
        /// Digest stored in the bundle or beside the file.
        expected: String,
        /// Digest of the bytes present.
        actual: String,
    },
    /// The bundle payload does not decode.
    #[error("bundle payload does not decode: {0}")]
    Payload(String),
    /// Metadata problems: version, schema, layer spec, k.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// A tensor the contract requires is absent.
    #[error("missing tensor {0}")]
    MissingTensor(String),
    /// A tensor the contract does not know.
    #[error("unexpected tensor {0}")]
    UnexpectedTensor(String),
    /// A tensor has the wrong shape.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Shape in the file.
        found: Vec<usize>,
        /// Shape the contract requires.
        expected: Vec<usize>,
    },
    /// A tensor is not `F32`.
    #[error("tensor {name} has dtype {found}, expected F32 (or I8 in an int8 model)")]
    Dtype {
        /// Tensor name.
        name: String,
        /// Dtype in the file.
        found: String,
    },
    /// A tensor holds NaN or infinity.
    #[error("tensor {name}: value at index {index} is not finite")]
    NotFinite {
        /// Tensor name.
        name: String,
        /// First offending index.
        index: usize,
    },
    /// The metadata's weight storage disagrees with the tensors.
    #[error("weights: {0}")]
    Weights(String),
    /// The calibration table is unusable.
    #[error("calibration table: {0}")]
    Calibration(&'static str),
    /// A requested outlier quantile cannot be served by the calibration table.
    #[error("threshold quantile {q}: {reason}")]
    Quantile {
        /// Requested quantile.
        q: f32,
        /// Why not.
        reason: String,
    },
    /// The encoder cannot be built from the tensors.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// The clustering head cannot be built from the tensors.
    #[error(transparent)]
    Head(#[from] HeadError),
}

/// One `f32` tensor of an export, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    /// Export name, e.g. `encoder.conv0.weight`.
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// An export's metadata and tensors, checked against the contract: every tensor that
/// [`names::expected_tensors`] names is present with its shape, finite, and nothing else is.
/// A model with int8 weights ([`Weights::Int8`]) keeps the encoder's weights only as the bytes
/// and scales the bundle stores (a device that decodes a bundle holds no f32 copy of them;
/// [`Self::widened_tensors`] makes one for tools that want f32).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParts {
    meta: ModelMeta,
    tensors: Vec<NamedTensor>,
    int8: Vec<Int8Tensor>,
}

impl ModelParts {
    /// Checks f32 `tensors` against `meta` and keeps them in the contract's order.
    pub fn new(meta: ModelMeta, tensors: Vec<NamedTensor>) -> Result<Self, LoadError> {
        if meta.weights == Weights::Int8 {
            return Err(LoadError::Weights(
                "the metadata says int8 but no int8 tensors were given".into(),
            ));
        }
        Self::checked(meta, tensors, Vec::new())
    }

    /// Parts of an int8 model: the f32 tensors and the quantized weights, checked against
    /// `meta` together (the bytes must fit their shapes, the scales be finite).
    pub fn with_int8(
        meta: ModelMeta,
        tensors: Vec<NamedTensor>,
        int8: Vec<Int8Tensor>,
    ) -> Result<Self, LoadError> {
        if meta.weights != Weights::Int8 {
            return Err(LoadError::Weights(
                "int8 tensors in a model whose metadata says f32".into(),
            ));
        }
        if let Some(t) = tensors.iter().find(|t| is_quantized(&t.name)) {
            return Err(LoadError::Weights(alloc::format!(
                "{} is stored as f32 in an int8 model",
                t.name
            )));
        }
        if let Some(q) = int8.iter().find(|q| !is_quantized(&q.name)) {
            return Err(LoadError::Weights(alloc::format!(
                "{} cannot be stored as int8",
                q.name
            )));
        }
        Self::checked(meta, tensors, int8)
    }

    /// These parts with the encoder's weights quantized to int8 (unchanged if they are).
    pub fn to_int8(&self) -> Result<Self, LoadError> {
        if self.meta.weights == Weights::Int8 {
            return Ok(self.clone());
        }
        let (quantized, kept): (Vec<_>, Vec<_>) = self
            .tensors
            .iter()
            .cloned()
            .partition(|t| is_quantized(&t.name));
        let int8 = quantized
            .iter()
            .map(|t| Int8Tensor::quantize(&t.name, &t.shape, &t.data))
            .collect();
        let mut meta = self.meta.clone();
        meta.weights = Weights::Int8;
        meta.format_version = meta.written_version();
        Self::with_int8(meta, kept, int8)
    }

    /// The quantized weights as stored, in the contract's order (empty for an f32 model).
    pub fn int8_tensors(&self) -> &[Int8Tensor] {
        &self.int8
    }

    fn checked(
        meta: ModelMeta,
        tensors: Vec<NamedTensor>,
        int8: Vec<Int8Tensor>,
    ) -> Result<Self, LoadError> {
        let mut by_name: BTreeMap<String, NamedTensor> = BTreeMap::new();
        for t in tensors {
            if by_name.contains_key(&t.name) {
                return Err(LoadError::UnexpectedTensor(t.name));
            }
            by_name.insert(t.name.clone(), t);
        }
        let mut quantized: BTreeMap<String, Int8Tensor> = BTreeMap::new();
        for q in int8 {
            if by_name.contains_key(&q.name) || quantized.contains_key(&q.name) {
                return Err(LoadError::UnexpectedTensor(q.name));
            }
            quantized.insert(q.name.clone(), q);
        }
        let levels = by_name
            .get(names::QUANTILE_LEVELS)
            .ok_or_else(|| LoadError::MissingTensor(names::QUANTILE_LEVELS.into()))?;
        let q = match levels.shape[..] {
            [q] => q,
            _ => {
                return Err(LoadError::Shape {
                    name: names::QUANTILE_LEVELS.into(),
                    found: levels.shape.clone(),
                    expected: vec![levels.data.len()],
                });
            }
        };
        let mut ordered = Vec::with_capacity(by_name.len());
        let mut int8 = Vec::with_capacity(quantized.len());
        for spec in names::expected_tensors(&meta.encoder, meta.k, q, meta.outlier_score)? {
            if let Some(t) = quantized.remove(&spec.name) {
                if t.shape != spec.shape {
                    return Err(LoadError::Shape {
                        name: spec.name,
                        found: t.shape,
                        expected: spec.shape,
                    });
                }
                let rows = t.shape.first().copied().unwrap_or(0);
                if t.values.len() != t.shape.iter().product::<usize>() || t.scales.len() != rows {
                    return Err(LoadError::Weights(alloc::format!(
                        "{}: {} bytes and {} scales do not fit shape {:?}",
                        t.name,
                        t.values.len(),
                        t.scales.len(),
                        t.shape
                    )));
                }
                if let Some(index) = t.scales.iter().position(|v| !v.is_finite()) {
                    return Err(LoadError::NotFinite {
                        name: alloc::format!("{} scales", t.name),
                        index,
                    });
                }
                int8.push(t);
                continue;
            }
            let t = by_name
                .remove(&spec.name)
                .ok_or_else(|| LoadError::MissingTensor(spec.name.clone()))?;
            let len: usize = t.shape.iter().product();
            if t.shape != spec.shape || t.data.len() != len {
                return Err(LoadError::Shape {
                    name: spec.name,
                    found: t.shape,
                    expected: spec.shape,
                });
            }
            if let Some(index) = t.data.iter().position(|v| !v.is_finite()) {
                return Err(LoadError::NotFinite {
                    name: t.name,
                    index,
                });
            }
            ordered.push(t);
        }
        if let Some(name) = by_name.into_keys().chain(quantized.into_keys()).next() {
            return Err(LoadError::UnexpectedTensor(name));
        }
        let parts = Self {
            meta,
            tensors: ordered,
            int8,
        };
        let levels = parts.get(names::QUANTILE_LEVELS);
        if levels.is_empty()
            || levels.windows(2).any(|w| w[0] >= w[1])
            || !(levels[0] > 0.0 && levels[levels.len() - 1] <= 1.0)
        {
            return Err(LoadError::Calibration(
                "quantile levels must be strictly ascending within (0, 1]",
            ));
        }
        Ok(parts)
    }

    /// The metadata.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// Every f32 tensor, in the contract's order (for an int8 model, all but the encoder's
    /// weights: [`Self::int8_tensors`] holds those).
    pub fn tensors(&self) -> &[NamedTensor] {
        &self.tensors
    }

    /// Every tensor as f32: the f32 ones, then the int8 weights widened (`q · scale`). Allocates
    /// the widening; for tools that read any model as f32 (the trainer's candle encoder,
    /// `dekm-edge info`), not for a device.
    pub fn widened_tensors(&self) -> Vec<NamedTensor> {
        let widened = self.int8.iter().map(|q| NamedTensor {
            name: q.name.clone(),
            shape: q.shape.clone(),
            // `checked` verified that the bytes and scales fit the shape.
            data: q.widen().unwrap_or_default(),
        });
        self.tensors.iter().cloned().chain(widened).collect()
    }

    /// Values of f32 tensor `name`, if the contract has it (an int8 model's encoder weights
    /// are in [`Self::int8_tensors`]).
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.data.as_slice())
    }

    /// Values of a tensor that [`Self::new`] guaranteed to exist.
    fn get(&self, name: &str) -> &[f32] {
        self.tensor(name).unwrap_or_default()
    }
}

/// Outlier thresholds at quantile `q` of each cluster's training distances, interpolated
/// linearly between the calibrated `levels` (exact when `q` is one of them).
fn thresholds_at(levels: &[f32], table: &[f32], q: f32) -> Result<Vec<f32>, LoadError> {
    let err = |reason: String| LoadError::Quantile { q, reason };
    let (lo, hi) = (levels[0], levels[levels.len() - 1]);
    if !(q >= lo && q <= hi) {
        return Err(err(alloc::format!(
            "outside the calibrated range [{lo}, {hi}]"
        )));
    }
    let j = levels.partition_point(|&l| l < q).min(levels.len() - 1);
    Ok(table
        .chunks_exact(levels.len())
        .map(|row| {
            if levels[j] == q || j == 0 {
                row[j]
            } else {
                let t = (q - levels[j - 1]) / (levels[j] - levels[j - 1]);
                row[j - 1] + t * (row[j] - row[j - 1])
            }
        })
        .collect())
}

/// A model ready to assign: preprocessing, encoder and clustering head.
#[derive(Debug, Clone)]
pub struct Model {
    meta: ModelMeta,
    /// For a model clustered on spectral features: the transform from a raw window.
    spectrum: Option<Spectrum>,
    normalizer: Normalizer,
    encoder: Encoder,
    head: ClusterHead,
    levels: Vec<f32>,
    table: Vec<f32>,
    threshold_quantile: f32,
}

impl Model {
    /// Builds the runnable model from checked parts.
    pub fn from_parts(parts: &ModelParts) -> Result<Self, LoadError> {
        let meta = parts.meta().clone();
        // An int8 model runs on its bytes; their widening serves only tools that read f32.
        let encoder = match meta.weights {
            Weights::F32 => Encoder::new(&meta.encoder, |n| parts.tensor(n))?,
            Weights::Int8 => Encoder::quantized(
                &meta.encoder,
                |n| parts.tensor(n),
                |n| parts.int8.iter().find(|t| t.name == n),
            )?,
        };
        let mut head = ClusterHead::new(
            meta.encoder.latent_dim(),
            parts.get(names::V).to_vec(),
            parts.get(names::CENTROIDS_Y).to_vec(),
            parts.get(names::THRESHOLDS).to_vec(),
        )?;
        match meta.outlier_score {
            OutlierScore::Distance => {}
            OutlierScore::Mahalanobis => {
                head = head.with_whitening(parts.get(names::WHITENING).to_vec())?;
            }
            OutlierScore::Knn(n) => {
                let references = parts.get(names::REFERENCES).to_vec();
                head = head.with_references(references, n.neighbours as usize)?;
            }
        }
        let normalizer = Normalizer::new(
            parts.get(names::INPUT_OFFSET).to_vec(),
            parts.get(names::INPUT_SCALE).to_vec(),
        )?;
        let spectrum = meta.spectrum.clone().map(Spectrum::new).transpose()?;
        Ok(Self {
            threshold_quantile: meta.threshold_quantile,
            meta,
            spectrum,
            normalizer,
            encoder,
            head,
            levels: parts.get(names::QUANTILE_LEVELS).to_vec(),
            table: parts.get(names::DISTANCE_QUANTILES).to_vec(),
        })
    }

    /// This model with its int8 encoder run by `kernel` (the same results, for timing the
    /// kernels against each other); fails for an f32 model or a kernel this CPU lacks.
    pub fn with_int8_kernel(mut self, kernel: crate::Int8Kernel) -> Result<Self, LoadError> {
        self.encoder = self.encoder.with_int8_kernel(kernel)?;
        Ok(self)
    }

    /// Replaces the outlier thresholds by the `q` quantile of each cluster's training
    /// scores, read from the calibration table (linear between its levels; `q` must lie
    /// within them, by default 0.5 to 1.0).
    pub fn set_threshold_quantile(&mut self, q: f32) -> Result<(), LoadError> {
        let t = thresholds_at(&self.levels, &self.table, q)?;
        self.head.set_thresholds(t)?;
        self.threshold_quantile = q;
        Ok(())
    }

    /// Quantile the current thresholds come from.
    pub fn threshold_quantile(&self) -> f32 {
        self.threshold_quantile
    }

    /// Metadata of the export.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The clustering head.
    pub fn head(&self) -> &ClusterHead {
        &self.head
    }

    /// The input preprocessing.
    pub fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }

    /// The spectral features a raw window becomes first, for a model clustered on them.
    pub fn spectrum(&self) -> Option<&Spectrum> {
        self.spectrum.as_ref()
    }

    /// Values per raw input sample (a window's readings for a spectral model).
    pub fn input_len(&self) -> usize {
        self.meta.input_len()
    }

    /// Number of clusters.
    pub fn k(&self) -> usize {
        self.head.k()
    }

    /// Buffers for assigning samples one at a time.
    pub fn session(&self) -> Session<'_> {
        Session {
            model: self,
            features: vec![0.0; self.spectrum.as_ref().map_or(0, |s| s.spec().output_len())],
            x: vec![0.0; self.normalizer.len()],
            ws: self.encoder.workspace(),
            z: vec![0.0; self.encoder.latent_dim()],
            y: vec![0.0; self.encoder.latent_dim()],
            batch: None,
        }
    }
}

/// Why one sample could not be assigned; the session stays usable.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SampleError {
    /// Wrong length, NaN or infinity in the raw sample.
    #[error(transparent)]
    Input(#[from] ContractError),
    /// The encoder rejected the sample.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// The latent vector is not finite (overflow inside the network).
    #[error(transparent)]
    Head(#[from] HeadError),
}

/// Per-sample buffers of one [`Model`]: assigning allocates nothing.
#[derive(Debug)]
pub struct Session<'m> {
    model: &'m Model,
    /// Spectral features of the raw window (empty for other models).
    features: Vec<f32>,
    x: Vec<f32>,
    ws: Workspace,
    z: Vec<f32>,
    y: Vec<f32>,
    /// [`Session::assign_all`]'s buffers, made on its first call.
    batch: Option<Batch>,
}

/// A chunk of normalised samples, their latents and the encoder's batch buffers.
#[derive(Debug)]
struct Batch {
    xs: Vec<f32>,
    zs: Vec<f32>,
    ws: BatchWorkspace,
}

impl Session<'_> {
    /// Normalises (after the spectral transform, for a model that has one), encodes, projects
    /// and assigns one raw sample.
    pub fn assign(&mut self, raw: &[f32]) -> Result<Assignment, SampleError> {
        let m = self.model;
        match &m.spectrum {
            Some(spectrum) => {
                spectrum.apply(raw, &mut self.features)?;
                m.normalizer.apply(&self.features, &mut self.x)?;
            }
            None => m.normalizer.apply(raw, &mut self.x)?,
        }
        m.encoder.encode(&self.x, &mut self.ws, &mut self.z)?;
        Ok(m.head.assign(&self.z, &mut self.y)?)
    }

    /// Assigns every raw sample of `raws`, calling `each(i, result)` for the `i`-th in order;
    /// a bad sample gets its error and the others are assigned as usual. The results are
    /// [`Self::assign`]'s to the bit, but the encoder's dense layers run over
    /// [`crate::encoder::BATCH`] samples at a time ([`Encoder::encode_batch`]): for a model
    /// with large dense layers several times the samples a second. Afterwards
    /// [`Self::rotated`] is the last assigned sample's, [`Self::latent`] is left as it was.
    /// Allocates once, on the first call.
    pub fn assign_all<'r>(
        &mut self,
        raws: impl IntoIterator<Item = &'r [f32]>,
        mut each: impl FnMut(usize, Result<Assignment, SampleError>),
    ) {
        let m = self.model;
        let (len, d) = (m.encoder.input_len(), m.encoder.latent_dim());
        let batch = self.batch.get_or_insert_with(|| Batch {
            xs: vec![0.0; BATCH * len],
            zs: vec![0.0; BATCH * d],
            ws: m.encoder.batch_workspace(),
        });
        let mut raws = raws.into_iter().enumerate().peekable();
        while raws.peek().is_some() {
            // A chunk's samples: each one's place among the normalised rows, or its error.
            let mut slots: heapless::Vec<(usize, Result<usize, SampleError>), BATCH> =
                heapless::Vec::new();
            let mut rows = 0;
            while !slots.is_full() {
                let Some((i, raw)) = raws.next() else { break };
                let row = &mut batch.xs[rows * len..][..len];
                let normalised = match &m.spectrum {
                    Some(spectrum) => spectrum
                        .apply(raw, &mut self.features)
                        .and_then(|()| m.normalizer.apply(&self.features, row)),
                    None => m.normalizer.apply(raw, row),
                };
                let slot = normalised.map(|()| rows).map_err(SampleError::from);
                rows += usize::from(slot.is_ok());
                // `slots` has room: the loop stops when it is full.
                let _ = slots.push((i, slot));
            }
            let zs = &mut batch.zs[..rows * d];
            let encoded = m
                .encoder
                .encode_batch(&batch.xs[..rows * len], &mut batch.ws, zs);
            for (i, slot) in slots {
                let result = match (slot, &encoded) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(SampleError::Encoder(e.clone())),
                    (Ok(r), Ok(())) => m
                        .head
                        .assign(&batch.zs[r * d..][..d], &mut self.y)
                        .map_err(SampleError::from),
                };
                each(i, result);
            }
        }
    }

    /// The model this session assigns with.
    pub fn model(&self) -> &Model {
        self.model
    }

    /// Latent vector of the last assigned sample.
    pub fn latent(&self) -> &[f32] {
        &self.z
    }

    /// Rotated vector `y = V z` of the last assigned sample.
    pub fn rotated(&self) -> &[f32] {
        &self.y
    }
}

/// Small models with random weights, for tests here and in the crates that use this one
/// (`test-fixtures` feature).
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixture {
    use alloc::string::ToString;

    use dekm_shared::{EncoderSpec, FORMAT_VERSION, ModelMeta, OutlierScore, names};

    use super::{ModelParts, NamedTensor};

    /// A dense 6-4 model with k = 3 scoring outliers by the Mahalanobis distance; `seed`
    /// changes the weights (and so the bundle's id).
    pub fn dense(seed: u32) -> ModelParts {
        let spec = EncoderSpec::paper_dense(6, 4);
        let levels = [0.5f32, 0.9, 1.0];
        let k = 3;
        let mut state = seed;
        let tensors = names::expected_tensors(&spec, k, levels.len(), OutlierScore::Mahalanobis)
            .unwrap()
            .into_iter()
            .map(|t| {
                let n: usize = t.shape.iter().product();
                let data = match t.name.as_str() {
                    names::QUANTILE_LEVELS => levels.to_vec(),
                    _ => (0..n)
                        .map(|_| {
                            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                            (state >> 8) as f32 / (1u32 << 24) as f32
                        })
                        .collect(),
                };
                NamedTensor {
                    name: t.name,
                    shape: t.shape,
                    data,
                }
            })
            .collect();
        let meta = ModelMeta {
            format_version: FORMAT_VERSION,
            encoder: spec,
            k,
            threshold_quantile: 0.9,
            outlier_score: OutlierScore::Mahalanobis,
            stream: None,
            spectrum: None,
            weights: dekm_shared::Weights::F32,
            embedder: None,
            dataset: "fixture".to_string(),
            samples: 0,
            seed: 0,
            metrics: None,
            created_unix: 0,
            trainer_version: "test".to_string(),
        };
        ModelParts::new(meta, tensors).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Int8 parts hold the encoder's weights only as bytes; the widening is made on request
    /// and covers every tensor; bytes that do not fit the contract are named.
    #[test]
    fn int8_parts_keep_no_f32_copy_and_check_the_bytes() {
        let f32_parts = fixture::dense(7);
        let parts = f32_parts.to_int8().unwrap();
        let quantized = parts.int8_tensors();
        assert!(!quantized.is_empty());
        assert!(quantized.iter().all(|q| parts.tensor(&q.name).is_none()));
        assert_eq!(
            parts.tensors().len() + quantized.len(),
            f32_parts.tensors().len()
        );
        let mut widened: Vec<String> = parts
            .widened_tensors()
            .into_iter()
            .map(|t| t.name)
            .collect();
        let mut all: Vec<String> = f32_parts.tensors().iter().map(|t| t.name.clone()).collect();
        widened.sort();
        all.sort();
        assert_eq!(widened, all);

        let rebuild = |edit: &dyn Fn(&mut Int8Tensor)| {
            let mut int8 = quantized.to_vec();
            edit(&mut int8[0]);
            ModelParts::with_int8(parts.meta().clone(), parts.tensors().to_vec(), int8).unwrap_err()
        };
        let name = quantized[0].name.clone();
        let err = rebuild(&|q| q.shape.reverse());
        assert!(
            matches!(err, LoadError::Shape { name: ref n, .. } if *n == name),
            "{err}"
        );
        let err = rebuild(&|q| {
            q.values.pop();
        });
        assert!(err.to_string().contains("do not fit shape"), "{err}");
        let err = rebuild(&|q| q.scales[0] = f32::INFINITY);
        assert!(
            matches!(err, LoadError::NotFinite { index: 0, .. }),
            "{err}"
        );
        let twice = {
            let mut int8 = quantized.to_vec();
            int8.push(quantized[0].clone());
            ModelParts::with_int8(parts.meta().clone(), parts.tensors().to_vec(), int8)
        };
        assert_eq!(twice.unwrap_err(), LoadError::UnexpectedTensor(name));
    }

    /// `assign_all` gives each sample what `assign` gives it, to the bit, in order, across
    /// chunk boundaries and around bad samples, for f32 and int8 models.
    #[test]
    fn assigning_all_at_once_matches_one_at_a_time() {
        let parts = fixture::dense(3);
        for parts in [parts.clone(), parts.to_int8().unwrap()] {
            let model = Model::from_parts(&parts).unwrap();
            let len = model.input_len();
            let mut raws: Vec<Vec<f32>> = (0..2 * BATCH + 3)
                .map(|s| {
                    (0..len)
                        .map(|i| ((i * 5 + s * 3) % 11) as f32 - 5.0)
                        .collect()
                })
                .collect();
            raws[4][1] = f32::NAN;
            raws[BATCH].pop();
            let mut one = model.session();
            let want: Vec<_> = raws.iter().map(|r| one.assign(r)).collect();
            let mut all = model.session();
            let mut got = Vec::new();
            all.assign_all(raws.iter().map(Vec::as_slice), |i, r| got.push((i, r)));
            assert_eq!(got.len(), raws.len());
            for (i, ((at, g), w)) in got.into_iter().zip(want).enumerate() {
                assert_eq!(at, i);
                assert_eq!(g, w, "sample {i}");
            }
            assert!(matches!(
                got_err(&mut all, &raws[4]),
                Some(SampleError::Input(_))
            ));
        }
    }

    fn got_err(s: &mut Session<'_>, raw: &[f32]) -> Option<SampleError> {
        let mut err = None;
        s.assign_all([raw], |_, r| err = r.err());
        err
    }

    #[test]
    fn thresholds_interpolate_between_levels() {
        let levels = [0.5, 0.9, 1.0];
        let table = [1.0, 2.0, 4.0, 10.0, 20.0, 40.0];
        assert_eq!(thresholds_at(&levels, &table, 0.9).unwrap(), [2.0, 20.0]);
        assert_eq!(thresholds_at(&levels, &table, 0.5).unwrap(), [1.0, 10.0]);
        let mid = thresholds_at(&levels, &table, 0.95).unwrap();
        assert!((mid[0] - 3.0).abs() < 1e-5 && (mid[1] - 30.0).abs() < 1e-4);
        for q in [0.4, 1.5, f32::NAN] {
            let err = thresholds_at(&levels, &table, q).unwrap_err();
            assert!(
                err.to_string()
                    .contains("outside the calibrated range [0.5, 1]"),
                "{err}"
            );
        }
    }
}

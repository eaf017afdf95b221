//! The metadata block stored in the safetensors header of an export.
//!
//! safetensors metadata is a flat string map; the whole [`ModelMeta`] is stored as one JSON
//! string under [`crate::names::META_KEY`] and the format version again under
//! [`crate::names::FORMAT_KEY`], so a reader rejects an incompatible file before parsing it.

use alloc::string::{String, ToString};
use serde::{Deserialize, Serialize};

use crate::{ContractError, EncoderSpec};

/// Version of the export format this build writes and reads. Bump on any incompatible change to
/// tensor names, shapes or metadata fields.
pub const FORMAT_VERSION: u32 = 1;

/// External clustering quality on labelled training data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    /// Accuracy under the best one-to-one matching of clusters to labels.
    pub acc: f64,
    /// Normalised mutual information (arithmetic mean normalisation).
    pub nmi: f64,
    /// Adjusted Rand index.
    pub ari: f64,
}

/// Everything about an export that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Format version, [`FORMAT_VERSION`] when written by this build.
    pub format_version: u32,
    /// Encoder architecture; input shape and latent dimension derive from it.
    pub encoder: EncoderSpec,
    /// Number of clusters.
    pub k: usize,
    /// Quantile of the training distances used for [`crate::names::THRESHOLDS`].
    pub threshold_quantile: f32,
    /// Name of the training data set (`mnist`, `csv:path`, ...).
    pub dataset: String,
    /// Number of training samples.
    pub samples: usize,
    /// Seed of the training run.
    pub seed: u64,
    /// Metrics of the final clustering when the training data had labels.
    pub metrics: Option<TrainingMetrics>,
    /// Creation time, seconds since the Unix epoch (UTC).
    pub created_unix: u64,
    /// Version of the trainer that wrote the file.
    pub trainer_version: String,
}

impl ModelMeta {
    /// Serialises to the JSON stored in the header.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and validates the header's metadata: version first, then schema, then the
    /// encoder spec and `k`.
    pub fn from_header(format: Option<&str>, json: Option<&str>) -> Result<Self, ContractError> {
        let format = format.ok_or_else(|| bad("missing format version key"))?;
        let found: u32 = format
            .trim()
            .parse()
            .map_err(|_| bad("format version is not an integer"))?;
        if found != FORMAT_VERSION {
            return Err(ContractError::UnsupportedVersion {
                found,
                supported: FORMAT_VERSION,
            });
        }
        let json = json.ok_or_else(|| bad("missing metadata key"))?;
        let meta: Self =
            serde_json::from_str(json).map_err(|e| ContractError::BadMetadata(e.to_string()))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(ContractError::UnsupportedVersion {
                found: meta.format_version,
                supported: FORMAT_VERSION,
            });
        }
        meta.encoder.validate()?;
        if meta.k == 0 {
            return Err(ContractError::ZeroSize { what: "k" });
        }
        if !(meta.threshold_quantile > 0.0 && meta.threshold_quantile <= 1.0) {
            return Err(bad("threshold_quantile must be in (0, 1]"));
        }
        Ok(meta)
    }
}

fn bad(msg: &str) -> ContractError {
    ContractError::BadMetadata(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ModelMeta {
        ModelMeta {
            format_version: FORMAT_VERSION,
            encoder: EncoderSpec::paper_dense(4, 2),
            k: 3,
            threshold_quantile: 0.99,
            dataset: "synthetic".into(),
            samples: 10,
            seed: 7,
            metrics: None,
            created_unix: 0,
            trainer_version: "0.1.0".into(),
        }
    }

    #[test]
    fn round_trips_through_header() {
        let m = meta();
        let back = ModelMeta::from_header(Some("1"), Some(&m.to_json())).unwrap();
        assert_eq!(back, m);
    }

    /// Metrics come back to the last bit. serde_json's default float parser may land one ulp
    /// off (it did for the ACC 599/600 below); the workspace enables its `float_roundtrip`.
    #[test]
    fn metrics_survive_the_header_bit_for_bit() {
        let mut m = meta();
        m.metrics = Some(TrainingMetrics {
            acc: 599.0 / 600.0,
            nmi: 0.990_494_597_749_347_2,
            ari: 1.0 / 3.0,
        });
        let back = ModelMeta::from_header(Some("1"), Some(&m.to_json())).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn newer_version_is_rejected_before_parsing() {
        let err = ModelMeta::from_header(Some("2"), Some("not json")).unwrap_err();
        assert_eq!(
            err,
            ContractError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        );
    }

    #[test]
    fn broken_json_and_bad_k_are_named() {
        let err = ModelMeta::from_header(Some("1"), Some("{")).unwrap_err();
        assert!(matches!(err, ContractError::BadMetadata(_)));
        let mut m = meta();
        m.k = 0;
        let err = ModelMeta::from_header(Some("1"), Some(&m.to_json())).unwrap_err();
        assert_eq!(err, ContractError::ZeroSize { what: "k" });
    }
}

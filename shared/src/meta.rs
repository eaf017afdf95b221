//! The metadata block stored in the safetensors header of an export.
//!
//! safetensors metadata is a flat string map; the whole [`ModelMeta`] is stored as one JSON
//! string under [`crate::names::META_KEY`] and the format version again under
//! [`crate::names::FORMAT_KEY`], so a reader rejects an incompatible file before parsing it.

use alloc::string::{String, ToString};
use serde::{Deserialize, Serialize};

use crate::{ContractError, EncoderSpec, StreamSpec};

/// Version of the export format this build writes. Bump on any incompatible change to tensor
/// names, shapes or metadata fields.
///
/// Version 2 added the outlier score ([`OutlierScore`], with its `dekm.whitening` tensor); a
/// version 1 file is read as the distance score it was written with.
pub const FORMAT_VERSION: u32 = 2;

impl OutlierScore {
    /// Every score, in the order a command line lists them.
    pub const ALL: [OutlierScore; 2] = [OutlierScore::Distance, OutlierScore::Mahalanobis];

    /// The name used in settings, requests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OutlierScore::Distance => "distance",
            OutlierScore::Mahalanobis => "mahalanobis",
        }
    }
}

impl core::fmt::Display for OutlierScore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for OutlierScore {
    type Err = ContractError;
    fn from_str(s: &str) -> Result<Self, ContractError> {
        Self::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| ContractError::UnknownName {
                what: "outlier score",
                name: s.into(),
                expected: "distance or mahalanobis",
            })
    }
}

/// Oldest export format this build still reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// What the outlier flag measures; thresholds and the calibration table are in its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutlierScore {
    /// Euclidean distance to the assigned centroid in `y` space. Blind to anything the
    /// clustering does not separate: a window with one channel stuck can sit as close to its
    /// centroid as a normal one (docs/RESULTS.md, "Anomaly scores").
    #[default]
    Distance,
    /// Mahalanobis distance to the assigned centroid under that cluster's covariance in `y`
    /// space, `|W (y - mu)|` with the export's `dekm.whitening` factor: a direction the cluster
    /// never varies in counts as much as its widest one.
    Mahalanobis,
}

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
    /// Quantile of the training scores used for [`crate::names::THRESHOLDS`].
    pub threshold_quantile: f32,
    /// The score the outlier thresholds apply to (absent in version 1 files: distance).
    #[serde(default)]
    pub outlier_score: OutlierScore,
    /// How readings are cut into windows, for a model trained on a stream (absent otherwise,
    /// and in version 1 files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamSpec>,
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
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(ContractError::UnsupportedVersion {
                found,
                supported: FORMAT_VERSION,
            });
        }
        let json = json.ok_or_else(|| bad("missing metadata key"))?;
        let meta: Self =
            serde_json::from_str(json).map_err(|e| ContractError::BadMetadata(e.to_string()))?;
        if meta.format_version != found {
            return Err(bad(
                "the format version in the metadata differs from the header's",
            ));
        }
        if found < 2 && meta.outlier_score != OutlierScore::Distance {
            return Err(bad(
                "version 1 files have no outlier score but the distance",
            ));
        }
        meta.encoder.validate()?;
        if let Some(s) = &meta.stream {
            s.validate(meta.encoder.input_len())?;
        }
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
            outlier_score: OutlierScore::Mahalanobis,
            stream: None,
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
        let back = ModelMeta::from_header(Some("2"), Some(&m.to_json())).unwrap();
        assert_eq!(back, m);
    }

    /// A version 1 header (no `outlier_score`) still loads, as the distance score it meant.
    #[test]
    fn version_1_reads_as_distance() {
        let mut m = meta();
        m.format_version = 1;
        let json = m.to_json().replace(r#""outlier_score":"mahalanobis","#, "");
        assert!(!json.contains("outlier_score"), "{json}");
        let back = ModelMeta::from_header(Some("1"), Some(&json)).unwrap();
        assert_eq!(back.outlier_score, OutlierScore::Distance);
        let err = ModelMeta::from_header(Some("2"), Some(&json)).unwrap_err();
        assert!(matches!(err, ContractError::BadMetadata(_)), "{err}");
    }

    #[test]
    fn a_stream_spec_round_trips_and_must_fit_the_encoder() {
        let mut m = meta();
        m.stream = Some(StreamSpec {
            channels: alloc::vec!["a".into(), "b".into()],
            window: 2,
            hop: 1,
        });
        let back = ModelMeta::from_header(Some("2"), Some(&m.to_json())).unwrap();
        assert_eq!(back, m);
        m.stream.as_mut().unwrap().window = 3;
        let err = ModelMeta::from_header(Some("2"), Some(&m.to_json())).unwrap_err();
        assert!(
            matches!(
                err,
                ContractError::LengthMismatch {
                    expected: 4,
                    got: 6,
                    ..
                }
            ),
            "{err}"
        );
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
        let back = ModelMeta::from_header(Some("2"), Some(&m.to_json())).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn newer_version_is_rejected_before_parsing() {
        let err = ModelMeta::from_header(Some("3"), Some("not json")).unwrap_err();
        assert_eq!(
            err,
            ContractError::UnsupportedVersion {
                found: 3,
                supported: 2
            }
        );
    }

    #[test]
    fn broken_json_and_bad_k_are_named() {
        let err = ModelMeta::from_header(Some("2"), Some("{")).unwrap_err();
        assert!(matches!(err, ContractError::BadMetadata(_)));
        let mut m = meta();
        m.k = 0;
        let err = ModelMeta::from_header(Some("2"), Some(&m.to_json())).unwrap_err();
        assert_eq!(err, ContractError::ZeroSize { what: "k" });
    }
}

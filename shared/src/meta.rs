//! The metadata block stored in the safetensors header of an export.
//!
//! safetensors metadata is a flat string map; the whole [`ModelMeta`] is stored as one JSON
//! string under [`crate::names::META_KEY`] and the format version again under
//! [`crate::names::FORMAT_KEY`], so a reader rejects an incompatible file before parsing it.

use alloc::string::{String, ToString};
use serde::{Deserialize, Serialize};

use crate::{ContractError, EncoderSpec, SpectrumSpec, StreamSpec};

/// Version of the export format this build writes. Bump on any incompatible change to tensor
/// names, shapes or metadata fields.
///
/// Version 2 added the outlier score ([`OutlierScore`], with its `dekm.whitening` tensor); a
/// version 1 file is read as the distance score it was written with. Version 3 added the
/// neighbour score ([`OutlierScore::Knn`], with its `dekm.references` tensor). Version 4 added
/// spectral features ([`ModelMeta::spectrum`]). Version 5 added int8 encoder weights
/// ([`Weights::Int8`]), which only edge bundles carry. Version 6 added the softmax tail, version
/// 7 ClusterGAN's own networks ([`NETWORK_FORMAT_VERSION`]). Files of earlier versions read
/// unchanged.
pub const FORMAT_VERSION: u32 = 7;

/// The first format version with [`ModelMeta::spectrum`].
pub const SPECTRUM_FORMAT_VERSION: u32 = 4;

/// The first format version with [`Weights::Int8`].
pub const INT8_FORMAT_VERSION: u32 = 5;

/// The first format version whose encoder may end in a softmax over its last latent values
/// ([`EncoderSpec::softmax_tail`], ClusterGAN's cluster code): a runtime before it would read
/// the spec, skip the unknown field and compute other latents without noticing, so it must
/// refuse such a model by its version instead.
pub const SOFTMAX_FORMAT_VERSION: u32 = 6;

/// The first format version whose convolutional encoder may have dense layers after its
/// convolutions, a leaky ReLU, or a convolution padded by a given number of pixels
/// ([`EncoderSpec::needs_network_version`]: ClusterGAN's own networks,
/// [`EncoderSpec::clustergan_conv`]).
pub const NETWORK_FORMAT_VERSION: u32 = 7;

/// How the encoder's weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// 32-bit floats, as trained.
    #[default]
    F32,
    /// Each weight matrix's rows (a convolution's or dense layer's output channels) as signed
    /// bytes times one f32 scale per row, `max |w| / 127` (symmetric, per channel): the
    /// encoder four times smaller, for devices whose flash or radio link is the limit. The
    /// runtime widens them to f32 when it loads the model, so they cost no time and save no
    /// RAM; biases, the rotation, centroids, calibration and the neighbour score's references
    /// stay f32.
    Int8,
}

impl Weights {
    /// True for [`Weights::F32`] (what a file without the field means).
    pub fn is_f32(&self) -> bool {
        *self == Weights::F32
    }
}

impl OutlierScore {
    /// Every score, in the order a command line lists them (the neighbour score with its
    /// default settings).
    pub const ALL: [OutlierScore; 3] = [
        OutlierScore::Distance,
        OutlierScore::Mahalanobis,
        OutlierScore::Knn(Neighbours::DEFAULT),
    ];

    /// The name used in settings, requests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OutlierScore::Distance => "distance",
            OutlierScore::Mahalanobis => "mahalanobis",
            OutlierScore::Knn(_) => "knn",
        }
    }

    /// The oldest format version that can hold this score.
    pub fn format_version(self) -> u32 {
        match self {
            OutlierScore::Distance => OLDEST_FORMAT_VERSION,
            OutlierScore::Mahalanobis => 2,
            OutlierScore::Knn(_) => 3,
        }
    }
}

/// How the neighbour score is computed: the distance in `y` space to the `neighbours`-th
/// nearest of `references` calibration latents stored with the model.
///
/// A density estimate with no shape assumed: a cluster that is a curved or multi-modal band in
/// `y` (a digit written two ways) has no single centre and covariance that describe it, and
/// the Mahalanobis score then calls the empty middle of the band normal. The nearest stored
/// latents describe the band as it is (docs/RESULTS.md, "Novelty": on MNIST the 5th-neighbour
/// distance ranks held-out digits better than either centroid score).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbours {
    /// Which neighbour's distance is the score (5: the 5th nearest reference). Small values
    /// follow the data closely and are noisy; at most [`Neighbours::MAX_NEIGHBOURS`], so the
    /// device keeps the running nearest list on the stack.
    pub neighbours: u32,
    /// Reference latents stored in the model: in training settings the most to keep (a seeded
    /// subsample when there are more training samples), in a model's metadata the number it
    /// holds. Memory on the device is `references x d x 4` bytes and each assignment scans them
    /// all.
    pub references: u32,
}

impl Neighbours {
    /// The 5th neighbour among at most 4,096 references (160 KiB at `d = 10`).
    pub const DEFAULT: Self = Self {
        neighbours: 5,
        references: 4096,
    };
    /// Upper bound on [`Self::neighbours`].
    pub const MAX_NEIGHBOURS: u32 = 32;

    /// Checks `1 <= neighbours <= MAX_NEIGHBOURS` and `references >= neighbours`.
    pub fn validate(&self) -> Result<(), ContractError> {
        if self.neighbours == 0 || self.neighbours > Self::MAX_NEIGHBOURS {
            return Err(ContractError::BadMetadata(alloc::format!(
                "the neighbour score's neighbours must be 1 to {}, got {}",
                Self::MAX_NEIGHBOURS,
                self.neighbours
            )));
        }
        if self.references < self.neighbours {
            return Err(ContractError::BadMetadata(alloc::format!(
                "the neighbour score needs at least {} references, got {}",
                self.neighbours,
                self.references
            )));
        }
        Ok(())
    }
}

impl Default for Neighbours {
    fn default() -> Self {
        Self::DEFAULT
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
                expected: "distance, mahalanobis or knn",
            })
    }
}

/// Oldest export format this build still reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// What the outlier flag measures; thresholds and the calibration table are in its units.
///
/// Serialised as `"distance"`, `"mahalanobis"` or `{"knn": {"neighbours": 5, "references": n}}`.
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
    /// Distance to the `neighbours`-th nearest of the calibration latents stored in the export
    /// (`dekm.references`): a local density score that follows clusters of any shape.
    Knn(Neighbours),
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

/// The sentence embedder whose vectors a model trained on texts clusters.
///
/// A model's inputs are that embedder's output, so assigning texts with any other embedder
/// (another model, or the same name with other weights) would place them in a space the model
/// never saw; the server refuses it by the checksum. Devices never run the embedder: they are
/// sent vectors, and this record tells where the vectors must come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedderRef {
    /// The model folder's name (`all-MiniLM-L6-v2`), for people.
    pub name: String,
    /// SHA-256 of its `model.safetensors` in lowercase hex: what identifies the embedder.
    pub sha256: String,
    /// Values per embedding (the encoder's input length).
    pub dim: u32,
}

impl EmbedderRef {
    fn validate(&self, input_len: usize) -> Result<(), ContractError> {
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the embedder's sha256 is not 64 hex digits"));
        }
        if self.dim as usize != input_len {
            return Err(ContractError::LengthMismatch {
                what: "embedding dimension for the encoder",
                expected: input_len,
                got: self.dim as usize,
            });
        }
        Ok(())
    }
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
    /// For a series model clustered on spectral features: how a raw window becomes the
    /// features the normaliser and encoder see (absent otherwise, and before version 4). The
    /// model then takes raw windows of [`SpectrumSpec::input_len`] values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spectrum: Option<SpectrumSpec>,
    /// How the encoder's weights are stored (absent: f32).
    #[serde(default, skip_serializing_if = "Weights::is_f32")]
    pub weights: Weights,
    /// For a model trained on texts: the embedder that turns a text into the model's input
    /// (absent otherwise; runtimes that predate it read such a model as a vector model, which
    /// is what it is to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<EmbedderRef>,
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

    /// Values of one raw sample: a window's readings for a spectral model, else the encoder's
    /// input.
    pub fn input_len(&self) -> usize {
        self.spectrum
            .as_ref()
            .map_or_else(|| self.encoder.input_len(), SpectrumSpec::input_len)
    }

    /// The oldest format version that holds this model: its outlier score's,
    /// [`SPECTRUM_FORMAT_VERSION`] with spectral features, [`INT8_FORMAT_VERSION`] with int8
    /// weights, [`SOFTMAX_FORMAT_VERSION`] with a softmax tail, [`NETWORK_FORMAT_VERSION`] with
    /// what [`EncoderSpec::needs_network_version`] names.
    pub fn needed_version(&self) -> u32 {
        let features = if self.spectrum.is_some() {
            SPECTRUM_FORMAT_VERSION
        } else {
            OLDEST_FORMAT_VERSION
        };
        let weights = match self.weights {
            Weights::F32 => OLDEST_FORMAT_VERSION,
            Weights::Int8 => INT8_FORMAT_VERSION,
        };
        let tail = if self.encoder.softmax_tail() > 0 {
            SOFTMAX_FORMAT_VERSION
        } else {
            OLDEST_FORMAT_VERSION
        };
        let network = if self.encoder.needs_network_version() {
            NETWORK_FORMAT_VERSION
        } else {
            OLDEST_FORMAT_VERSION
        };
        self.outlier_score
            .format_version()
            .max(features)
            .max(weights)
            .max(tail)
            .max(network)
    }

    /// The version this model is written as: [`Self::needed_version`], but at least 2 (the
    /// first with `outlier_score` and `stream`), so a fleet whose devices still run a version 2
    /// runtime keeps taking the models it can run.
    pub fn written_version(&self) -> u32 {
        self.needed_version().max(2)
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
        if let Some(spec) = &meta.spectrum
            && found < SPECTRUM_FORMAT_VERSION
        {
            return Err(ContractError::BadMetadata(alloc::format!(
                "spectral features ({} bands) need format version {SPECTRUM_FORMAT_VERSION} or newer, the file says {found}",
                spec.bands
            )));
        }
        if meta.weights == Weights::Int8 && found < INT8_FORMAT_VERSION {
            return Err(bad("int8 weights need format version 5 or newer"));
        }
        if meta.encoder.softmax_tail() > 0 && found < SOFTMAX_FORMAT_VERSION {
            return Err(bad(
                "a softmax tail on the latent needs format version 6 or newer",
            ));
        }
        if meta.encoder.needs_network_version() && found < NETWORK_FORMAT_VERSION {
            return Err(bad(
                "dense layers after the convolutions, a leaky ReLU or padding by pixels need format version 7 or newer",
            ));
        }
        if found < meta.outlier_score.format_version() {
            return Err(ContractError::BadMetadata(alloc::format!(
                "outlier score {} needs format version {} or newer, the file says {found}",
                meta.outlier_score,
                meta.outlier_score.format_version()
            )));
        }
        if let OutlierScore::Knn(n) = meta.outlier_score {
            n.validate()?;
        }
        meta.encoder.validate()?;
        if let Some(e) = &meta.embedder {
            e.validate(meta.encoder.input_len())?;
        }
        if let Some(spec) = &meta.spectrum {
            spec.validate()?;
            if spec.output_len() != meta.encoder.input_len() {
                return Err(ContractError::LengthMismatch {
                    what: "spectral features (channels x (bands + 1)) for the encoder",
                    expected: meta.encoder.input_len(),
                    got: spec.output_len(),
                });
            }
        }
        if let Some(s) = &meta.stream {
            s.validate(meta.input_len())?;
            if let Some(spec) = &meta.spectrum
                && spec.length != s.window
            {
                return Err(ContractError::LengthMismatch {
                    what: "spectrum window (readings per channel)",
                    expected: s.window,
                    got: spec.length,
                });
            }
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
            spectrum: None,
            weights: Weights::F32,
            embedder: None,
            dataset: "synthetic".into(),
            samples: 10,
            seed: 7,
            metrics: None,
            created_unix: 0,
            trainer_version: "0.1.0".into(),
        }
    }

    /// An encoder ending in a softmax is written as version 6, and a file claiming an older
    /// version for one is refused rather than read as a linear latent.
    #[test]
    fn a_softmax_tail_needs_version_6() {
        let mut m = meta();
        assert_eq!(m.written_version(), 2);
        m.encoder = EncoderSpec::paper_dense(4, 5).with_softmax_tail(3);
        assert_eq!(m.written_version(), SOFTMAX_FORMAT_VERSION);
        m.format_version = 6;
        let back = ModelMeta::from_header(Some("6"), Some(&m.to_json())).unwrap();
        assert_eq!(back.encoder.softmax_tail(), 3);
        m.format_version = 5;
        let err = ModelMeta::from_header(Some("5"), Some(&m.to_json())).unwrap_err();
        assert!(err.to_string().contains("softmax tail"), "{err}");
    }

    /// ClusterGAN's own encoder (dense layer after the convolutions, leaky ReLU, padding by
    /// pixels) is written as version 7 and refused under an older version's number.
    #[test]
    fn clustergans_network_needs_version_7() {
        let mut m = meta();
        let mnist = crate::ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        };
        m.encoder = EncoderSpec::clustergan_conv(mnist, 12).with_softmax_tail(10);
        assert_eq!(m.written_version(), NETWORK_FORMAT_VERSION);
        m.format_version = 7;
        let back = ModelMeta::from_header(Some("7"), Some(&m.to_json())).unwrap();
        assert_eq!(back.encoder, m.encoder);
        m.format_version = 6;
        let err = ModelMeta::from_header(Some("6"), Some(&m.to_json())).unwrap_err();
        assert!(err.to_string().contains("format version 7"), "{err}");
        // DEKM's encoder needs none of it.
        m.encoder = EncoderSpec::paper_conv(mnist, 10);
        assert_eq!(m.written_version(), 2);
    }

    #[test]
    fn round_trips_through_header() {
        let m = meta();
        let back =
            ModelMeta::from_header(Some(&FORMAT_VERSION.to_string()), Some(&m.to_json())).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn embedder_record_round_trips_and_is_checked() {
        let header = |m: &ModelMeta| {
            ModelMeta::from_header(Some(&FORMAT_VERSION.to_string()), Some(&m.to_json()))
        };
        let mut m = meta();
        m.embedder = Some(EmbedderRef {
            name: "all-MiniLM-L6-v2".into(),
            sha256: "ab".repeat(32),
            dim: 4,
        });
        assert_eq!(header(&m).unwrap(), m);
        let json = m.to_json();
        assert!(json.contains("\"embedder\""), "{json}");
        assert!(!meta().to_json().contains("embedder"));
        m.embedder.as_mut().unwrap().dim = 5;
        let err = header(&m).unwrap_err();
        assert!(err.to_string().contains("embedding dimension"), "{err}");
        m.embedder.as_mut().unwrap().dim = 4;
        m.embedder.as_mut().unwrap().sha256 = "xyz".into();
        let err = header(&m).unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
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

    /// The neighbour score round-trips with its settings, needs version 3, and its settings
    /// are checked.
    #[test]
    fn the_neighbour_score_round_trips_and_is_checked() {
        let mut m = meta();
        m.outlier_score = OutlierScore::Knn(Neighbours {
            neighbours: 5,
            references: 300,
        });
        m.format_version = 3;
        let json = m.to_json();
        assert!(
            json.contains(r#""outlier_score":{"knn":{"neighbours":5,"references":300}}"#),
            "{json}"
        );
        assert_eq!(ModelMeta::from_header(Some("3"), Some(&json)).unwrap(), m);
        m.format_version = 2;
        let err = ModelMeta::from_header(Some("2"), Some(&m.to_json())).unwrap_err();
        assert!(err.to_string().contains("needs format version 3"), "{err}");
        m.format_version = 3;
        for (neighbours, references) in [(0, 10), (33, 100), (5, 4)] {
            m.outlier_score = OutlierScore::Knn(Neighbours {
                neighbours,
                references,
            });
            let err = ModelMeta::from_header(Some("3"), Some(&m.to_json())).unwrap_err();
            assert!(matches!(err, ContractError::BadMetadata(_)), "{err}");
        }
        assert_eq!(
            "knn".parse::<OutlierScore>(),
            Ok(OutlierScore::Knn(Neighbours::DEFAULT))
        );
        let written = OutlierScore::ALL.map(|outlier_score| {
            ModelMeta {
                outlier_score,
                ..meta()
            }
            .written_version()
        });
        assert_eq!(written, [2, 2, 3]);
        assert!("knn5".parse::<OutlierScore>().is_err());
    }

    #[test]
    fn a_stream_spec_round_trips_and_must_fit_the_encoder() {
        let mut m = meta();
        m.stream = Some(StreamSpec {
            channels: alloc::vec!["a".into(), "b".into()],
            window: 2,
            hop: 1,
        });
        let back =
            ModelMeta::from_header(Some(&FORMAT_VERSION.to_string()), Some(&m.to_json())).unwrap();
        assert_eq!(back, m);
        m.stream.as_mut().unwrap().window = 3;
        let err = ModelMeta::from_header(Some(&FORMAT_VERSION.to_string()), Some(&m.to_json()))
            .unwrap_err();
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

    /// Spectral features round-trip, make the model version 4, and must fit the encoder and
    /// the stream's window.
    #[test]
    fn spectral_features_round_trip_and_must_fit() {
        let mut m = meta();
        m.encoder = EncoderSpec::paper_dense(2 * 4, 2);
        m.spectrum = Some(SpectrumSpec {
            channels: 2,
            length: 10,
            bands: 3,
            scale: alloc::vec![1.0, 0.5],
        });
        m.stream = Some(StreamSpec {
            channels: alloc::vec!["a".into(), "b".into()],
            window: 10,
            hop: 5,
        });
        assert_eq!(m.input_len(), 20);
        assert_eq!(m.written_version(), 4);
        m.format_version = 4;
        assert_eq!(
            ModelMeta::from_header(Some("4"), Some(&m.to_json())).unwrap(),
            m
        );
        m.format_version = 3;
        let err = ModelMeta::from_header(Some("3"), Some(&m.to_json())).unwrap_err();
        assert!(err.to_string().contains("need format version 4"), "{err}");
        m.format_version = 4;
        m.stream.as_mut().unwrap().window = 12;
        let err = ModelMeta::from_header(Some("4"), Some(&m.to_json())).unwrap_err();
        assert!(err.to_string().contains("stream window"), "{err}");
        m.stream = None;
        m.encoder = EncoderSpec::paper_dense(9, 2);
        let err = ModelMeta::from_header(Some("4"), Some(&m.to_json())).unwrap_err();
        assert!(err.to_string().contains("spectral features"), "{err}");
    }

    /// Int8 weights are named in the metadata only when present, and need version 5.
    #[test]
    fn int8_weights_round_trip_and_need_version_5() {
        let mut m = meta();
        assert!(!m.to_json().contains("weights"), "{}", m.to_json());
        m.weights = Weights::Int8;
        assert_eq!(m.written_version(), 5);
        m.format_version = 5;
        let json = m.to_json();
        assert!(json.contains(r#""weights":"int8""#), "{json}");
        assert_eq!(ModelMeta::from_header(Some("5"), Some(&json)).unwrap(), m);
        m.format_version = 4;
        let err = ModelMeta::from_header(Some("4"), Some(&m.to_json())).unwrap_err();
        assert!(
            err.to_string()
                .contains("int8 weights need format version 5"),
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
        let back =
            ModelMeta::from_header(Some(&FORMAT_VERSION.to_string()), Some(&m.to_json())).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn newer_version_is_rejected_before_parsing() {
        let err = ModelMeta::from_header(Some("8"), Some("not json")).unwrap_err();
        assert_eq!(
            err,
            ContractError::UnsupportedVersion {
                found: 8,
                supported: 7
            }
        );
    }

    #[test]
    fn broken_json_and_bad_k_are_named() {
        let err = ModelMeta::from_header(Some("3"), Some("{")).unwrap_err();
        assert!(matches!(err, ContractError::BadMetadata(_)));
        let mut m = meta();
        m.k = 0;
        let err = ModelMeta::from_header(Some(&FORMAT_VERSION.to_string()), Some(&m.to_json()))
            .unwrap_err();
        assert_eq!(err, ContractError::ZeroSize { what: "k" });
    }
}

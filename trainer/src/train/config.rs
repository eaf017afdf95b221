//! Training settings: what a run computes, saved as `config.json` next to the model and
//! checked against the data before anything runs.

use dekm_shared::{Neighbours, OutlierScore, SpectrumSpec, TimePooling};
use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::augment::Augment;
use crate::choice::Choice;
use crate::data::SampleShape;
use crate::device::DeviceChoice;
use crate::features::SeriesFeatures;
use crate::gan::GanLoss;
use crate::model::{ConvBackend, ImageEncoder, Init, SeriesEncoder};

/// Training settings (what `dekm train` exposes, saved as `config.json` next to the model).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// Number of clusters.
    pub k: usize,
    /// Latent dimension.
    pub latent: usize,
    /// Pretraining epochs.
    pub epochs: usize,
    /// Minibatch size for pretraining and fine-tuning.
    pub batch_size: usize,
    /// Adam learning rate of pretraining.
    pub lr: f64,
    /// Adam learning rate of the clustering stage's fine-tuning (DEKM, DEC or IDEC; `--dekm-lr`
    /// on the command line, `dekm_lr` in requests and in settings saved before the rename). Ten
    /// times below pretraining's: a larger step undoes the start's partition within a few
    /// iterations (docs/RESULTS.md, "DEKM learning rate").
    #[serde(default = "default_finetune_lr", alias = "dekm_lr")]
    pub finetune_lr: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Maximum iterations of the clustering stage.
    pub max_iter: usize,
    /// Minibatches of encoder fine-tuning per iteration of the clustering stage.
    pub steps_per_iter: usize,
    /// Stop when fewer than this fraction of assignments change.
    pub tol: f64,
    /// k-means++ restarts per clustering.
    pub restarts: usize,
    /// Quantile of the training scores used as the outlier threshold, per cluster (over the
    /// members that are not far out, [`crate::calibrate`]).
    pub threshold_quantile: f32,
    /// What the outlier flag scores; `None` (`auto`) picks by the data
    /// ([`TrainConfig::outlier_score_for`]). Settings saved before the choice existed read as
    /// the distance, which is how those models were calibrated.
    #[serde(default = "distance_score")]
    pub outlier_score: Option<OutlierScore>,
    /// Fraction of the samples kept out of training to calibrate the outlier thresholds on,
    /// so the false-alarm rate is that of data the encoder never saw. `None` chooses by the
    /// data: 0.2 of a recording's windows (the last ones, in time order), none of other data
    /// (their figures keep the literature's all-samples protocol). Settings saved before the
    /// choice existed read as none, which is how those models were calibrated.
    #[serde(default = "no_holdout")]
    pub calibration_holdout: Option<f32>,
    /// The encoder of series data (windows, `.ts` cases). Settings saved before the choice
    /// existed read as dense, which is how those models were trained.
    #[serde(default = "series_dense")]
    pub series_encoder: SeriesEncoder,
    /// How the 1-D convolutional encoder summarises a window (`flatten` keeps every step).
    #[serde(default = "mean_std")]
    pub time_pooling: TimePooling,
    /// What series are clustered on: raw readings or each channel's spectrum
    /// ([`crate::features`]). Settings saved before the choice existed read as raw, which is
    /// how those models were trained.
    #[serde(default = "features_raw")]
    pub series_features: SeriesFeatures,
    /// Frequency bands per channel of the spectral features (at most half the window).
    #[serde(default = "default_bands")]
    pub spectrum_bands: usize,
    /// Convolution kernels (results agree to float rounding; `candle` is for comparison).
    #[serde(default)]
    pub conv: ConvBackend,
    /// Clustering stage after pretraining.
    #[serde(default)]
    pub method: Method,
    /// Random shift and rotation of image minibatches, in pretraining and fine-tuning (vector
    /// data are never jittered). Off by default; settings saved before it existed read as off,
    /// which is how those models were trained.
    #[serde(default = "augment_off")]
    pub augment: Augment,
    /// How the fresh autoencoder's weights are drawn. Settings saved before the choice existed
    /// read as PyTorch's rule, which is how those models were trained.
    #[serde(default = "init_torch")]
    pub init: Init,
    /// Where the clustering stage starts. Settings saved before the choice existed read as
    /// k-means, which is how those models were trained.
    #[serde(default = "start_kmeans")]
    pub start: Start,
    /// Where the run computes (`auto`: a GPU when the binary has CUDA and one answers). A
    /// model's `config.json` names the device it was trained on; settings saved before the
    /// choice existed read as `auto`, which was the CPU then.
    #[serde(default)]
    pub device: DeviceChoice,
    /// ClusterGAN's adversarial loss (other methods have none). Settings saved before the
    /// choice existed read as the non-saturating loss, which is how those models were trained.
    #[serde(default)]
    pub gan_loss: GanLoss,
    /// The encoder of images (other data ignore it: refused for them when not the default).
    /// Settings saved before the choice existed read as DEKM's, which is how those models
    /// were trained.
    #[serde(default)]
    pub image_encoder: ImageEncoder,
}

fn series_dense() -> SeriesEncoder {
    SeriesEncoder::Dense
}

fn features_raw() -> SeriesFeatures {
    SeriesFeatures::Raw
}

fn default_bands() -> usize {
    SpectrumSpec::DEFAULT_BANDS
}

fn mean_std() -> TimePooling {
    TimePooling::MeanStd
}

fn augment_off() -> Augment {
    Augment::OFF
}

fn init_torch() -> Init {
    Init::Torch
}

fn start_kmeans() -> Start {
    Start::Kmeans
}

/// The partition the clustering stage (DEKM, DEC or IDEC) starts from.
///
/// Why a choice: DEKM's fine-tuning makes the clusters it is given more compact; it does not
/// merge a split class or split a merged pair, so the start decides most of the result. On an
/// autoencoder's embedding k-means' lowest-inertia partition is often not the label-like one
/// (MNIST: two digits merged and a third split on some seeds; Fashion-MNIST: trousers with
/// dresses, bags split in two), while a Gaussian mixture on a UMAP layout of the same embedding
/// (N2D) follows the neighbourhoods. The manifold start measured better on both image sets, so
/// it is what [`Start::Auto`] picks for DEKM; README's start table and docs/RESULTS.md hold the
/// figures. N2D's own mixture starts EM from one k-means run, which can merge two classes and
/// split a third; started from the best of several
/// ([`dekm_cluster::gmm::GmmConfig::restarts`]) it is steadier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// For the DEKM stage: `input` on vectors (and spectra) of at most
    /// [`Start::AUTO_INPUT_MAX_DIM`] values,
    /// else `manifold` from [`Start::AUTO_MANIFOLD_MIN_PER_CLUSTER`] x k samples up; `kmeans`
    /// otherwise: DEC and IDEC were only measured from k-means, a run with no clustering stage
    /// has nothing to start, and on fewer points UMAP's neighbourhoods reach across clusters.
    /// There is no upper size: past [`dekm_cluster::umap::N2dConfig::LAYOUT_MAX`] samples N2D
    /// lays out a sample and places the rest by their nearest sample points.
    #[default]
    Auto,
    /// k-means on the embedding (k-means++ restarts, lowest inertia), as the DEKM paper.
    Kmeans,
    /// N2D's partition: a full-covariance GMM on a k-dimensional UMAP layout (20 neighbours,
    /// `min_dist` 0) of the embedding or, for a convolutional encoder, of its last feature map
    /// (see `manifold_start`); the centres are its clusters' means in the embedding.
    Manifold,
    /// Model-based clustering of the standardised input itself: a Gaussian mixture, full or
    /// diagonal covariance by BIC ([`dekm_cluster::gmm::fit_by_bic`]); the centres are its
    /// clusters' means in the embedding, which fine-tuning then pulls each sample towards.
    Input,
}

impl Start {
    /// The fewest samples per cluster, on average, [`Start::Auto`] lays out with UMAP: N2D's
    /// graph joins each point to its 20 nearest, which stay in its own cluster only if the
    /// clusters hold well over 20.
    pub const AUTO_MANIFOLD_MIN_PER_CLUSTER: usize = 50;
    /// The most values per vector [`Start::Auto`] clusters on the input itself.
    ///
    /// Why: on tabular sets of 4 to 30 features and on the demo's 96-value sensor windows a
    /// mixture on the standardised input clustered as well as or better than every partition
    /// of the autoencoder's 10-d latent (which loses what separates two classes a few features
    /// tell apart), while on MNIST's 784 pixels it fell far below the latent
    /// (docs/RESULTS.md, "Vector data").
    pub const AUTO_INPUT_MAX_DIM: usize = 128;
}

/// What follows pretraining. All four start from the same pretrained autoencoder, and with the
/// same explicit [`Start`] from the same partition, so they compare like for like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Deep Embedded K-Means (Guo et al., 2021): the rotation `V` and the last-coordinate pull.
    #[default]
    Dekm,
    /// Deep Embedded Clustering (Xie et al., 2016): Student-t soft assignments, KL divergence to
    /// the sharpened target distribution computed on the full data; centres trained too.
    Dec,
    /// Improved DEC (Guo et al., 2017): DEC's loss times 0.1 plus the reconstruction loss, so the
    /// embedding keeps the data's local structure.
    Idec,
    /// No fine-tuning: k-means on the pretrained embedding (the baseline).
    AeKmeans,
    /// DeepCluster (Caron et al., 2018), in place of pretraining: every epoch k-means on the
    /// network's whitened features, then a fresh classifier and the network trained to predict
    /// those pseudo-labels (`epochs` of them; no autoencoder, `max_iter` unused).
    #[serde(rename = "deepcluster")]
    #[cfg_attr(feature = "clap", value(name = "deepcluster"))]
    DeepCluster,
    /// ClusterGAN (Mukherjee et al., 2019), in place of pretraining: a generator fed a one-hot
    /// cluster code and Gaussian noise, a discriminator, and the encoder trained to invert the
    /// generator; `latent` is the noise's length (the exported latent vector is the noise and
    /// the code's softmax, `latent + k` values), `epochs` of adversarial rounds, then k-means on
    /// the encoder's codes of the data. `max_iter` unused.
    #[serde(rename = "clustergan")]
    #[cfg_attr(feature = "clap", value(name = "clustergan"))]
    ClusterGan,
}

fn no_holdout() -> Option<f32> {
    Some(0.0)
}

fn distance_score() -> Option<OutlierScore> {
    Some(OutlierScore::Distance)
}

fn default_finetune_lr() -> f64 {
    1e-4
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            k: 10,
            latent: 10,
            epochs: 30,
            batch_size: 256,
            lr: 1e-3,
            finetune_lr: default_finetune_lr(),
            seed: 0,
            max_iter: 50,
            steps_per_iter: 140,
            tol: 0.005,
            restarts: 10,
            // Fresh normal windows of the demo's plant: 0.3-0.4% false alarms at 0.998,
            // 0.65-0.7% at 0.995, both catching every injected fault (docs/RESULTS.md,
            // "Anomaly scores").
            threshold_quantile: 0.998,
            outlier_score: None,
            calibration_holdout: None,
            series_encoder: SeriesEncoder::default(),
            time_pooling: mean_std(),
            series_features: SeriesFeatures::default(),
            spectrum_bands: default_bands(),
            conv: ConvBackend::Fast,
            method: Method::Dekm,
            augment: Augment::OFF,
            init: Init::default(),
            start: Start::default(),
            device: DeviceChoice::default(),
            gan_loss: GanLoss::default(),
            image_encoder: ImageEncoder::default(),
        }
    }
}

impl TrainConfig {
    /// DeepCluster's feature width by default (the latent layer its classifier and k-means
    /// read). Measured on 10,000 MNIST images, 15 epochs, seed 0, with DEC-DA's jitter: ACC
    /// 0.768 at 32, 0.789 at 64, 0.817 at 128; at the other methods' 10 and without jitter
    /// 0.546 (docs/RESULTS.md, "DeepCluster"). The paper clusters 256 principal components.
    pub const DEEPCLUSTER_LATENT: usize = 128;

    /// ClusterGAN's noise length by default: the paper's 30 for MNIST and Fashion-MNIST.
    pub const CLUSTERGAN_NOISE: usize = 30;

    /// The defaults for `method`: [`TrainConfig::default`], except that ClusterGAN takes the
    /// paper's settings (30 noise values, minibatches of 64, Adam at 1e-4), and DeepCluster reads
    /// [`Self::DEEPCLUSTER_LATENT`]-wide features and jitters its images as DEC-DA does
    /// ([`Augment::DEC_DA`]; the paper trains on random crops and flips): without the jitter
    /// the network learns to predict its own clusters from whatever first separated them, and
    /// the clustering stalls (ACC 0.55 on 10,000 MNIST images, against 0.60 with it at 10-d).
    /// The command line and the gRPC service start from these and apply what a user sets.
    pub fn for_method(method: Method) -> Self {
        match method {
            Method::ClusterGan => Self {
                method,
                latent: Self::CLUSTERGAN_NOISE,
                batch_size: 64,
                lr: 1e-4,
                ..Self::default()
            },
            Method::DeepCluster => Self {
                method,
                latent: Self::DEEPCLUSTER_LATENT,
                augment: Augment::DEC_DA,
                ..Self::default()
            },
            _ => Self {
                method,
                ..Self::default()
            },
        }
    }

    /// Checks the settings against a data set of `n` samples.
    pub fn validate(&self, n: usize) -> Result<(), TrainError> {
        if let Some(OutlierScore::Knn(s)) = self.outlier_score
            && (n as u64) <= u64::from(s.neighbours)
        {
            return Err(TrainError::Config(format!(
                "the neighbour score's {}th neighbour needs more than {} samples, the data set has {n}",
                s.neighbours, s.neighbours
            )));
        }
        if self.k > n {
            return Err(TrainError::Config(format!(
                "k = {} but the data set has {n} samples (need 1 <= k <= samples)",
                self.k
            )));
        }
        self.check()
    }

    /// Checks the settings that do not depend on the data (a request is checked before its
    /// data is loaded; [`TrainConfig::validate`] checks k against the data's size).
    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.k == 0 {
            return bad("k = 0: a clustering needs at least one cluster".into());
        }
        if self.latent == 0 || self.batch_size == 0 {
            return bad("latent dimension and batch size must be positive".into());
        }
        for lr in [self.lr, self.finetune_lr] {
            if !(lr > 0.0 && lr.is_finite()) {
                return bad(format!("learning rate {lr} must be positive"));
            }
        }
        if !(0.0..1.0).contains(&self.tol) {
            return bad(format!("tolerance {} must be in [0, 1)", self.tol));
        }
        if !(self.threshold_quantile > 0.0 && self.threshold_quantile <= 1.0) {
            return bad(format!(
                "threshold quantile {} must be in (0, 1]",
                self.threshold_quantile
            ));
        }
        if let Some(OutlierScore::Knn(n)) = self.outlier_score {
            n.validate()
                .map_err(|e| TrainError::Config(e.to_string()))?;
        }
        if let Some(h) = self.calibration_holdout
            && !(0.0..=0.5).contains(&h)
        {
            return bad(format!("calibration holdout {h} must be in [0, 0.5]"));
        }
        if self.spectrum_bands == 0 {
            return bad("spectrum bands must be positive".into());
        }
        if self.series_features == SeriesFeatures::Spectrum
            && self.series_encoder == SeriesEncoder::Conv1d
        {
            return bad(
                "series features spectrum and series encoder conv1d do not combine: the spectra \
                 are clustered as a vector by the dense encoder, the 1-D convolutions take raw \
                 readings"
                    .into(),
            );
        }
        if matches!(self.start, Start::Manifold | Start::Input)
            && (matches!(
                self.method,
                Method::AeKmeans | Method::DeepCluster | Method::ClusterGan
            ) || self.max_iter == 0)
        {
            return bad(format!(
                "start {} needs a clustering stage to start: method dekm, dec or idec \
                 with max_iter of at least 1 (the exported centres must be the k-means ones \
                 the edge runtime assigns by)",
                self.start.name()
            ));
        }
        if self.gan_loss != GanLoss::default() && self.method != Method::ClusterGan {
            return bad(format!(
                "gan loss {} applies to method clustergan, not {}",
                self.gan_loss.name(),
                self.method.name()
            ));
        }
        self.augment.validate().map_err(TrainError::Config)
    }

    /// The outlier score a run on samples of `shape` calibrates: the chosen one, or for `auto`
    /// the neighbour score on images and the Mahalanobis distance on series and vectors.
    ///
    /// Measured, not assumed (docs/RESULTS.md, "Novelty" and "Anomaly scores"): on a held-out
    /// MNIST digit the neighbour score ranks the novelty best (a digit's cluster in `y` is a
    /// curved band no centre and covariance describe), while on the demo's streamed plant the
    /// Mahalanobis flag catches 96-100% of the faults at under 1% false alarms where the
    /// neighbour flag caught 69-100%: its calibration quantile sits among the windows across
    /// regime switches, which have few neighbours, and rises above the mild faults.
    pub fn outlier_score_for(&self, shape: &SampleShape) -> OutlierScore {
        match (self.outlier_score, shape) {
            (Some(chosen), _) => chosen,
            (None, SampleShape::Image(_)) => OutlierScore::Knn(Neighbours::DEFAULT),
            (None, _) => OutlierScore::Mahalanobis,
        }
    }

    /// The fraction of samples held out of training to calibrate the outlier thresholds on:
    /// the configured one, else 0.2 of a recording's windows (a recording drifts, so its last
    /// windows are the unseen data a device will see) and none of other data. Images need no
    /// holdout: an MNIST model's scores of its training images and of the test images have the
    /// same distribution (docs/RESULTS.md, "Calibration"), and the thresholds are better
    /// estimated from all of them.
    pub fn calibration_holdout_for(&self, stream: bool) -> f32 {
        match self.calibration_holdout {
            Some(h) => h,
            None if stream => 0.2,
            None => 0.0,
        }
    }

    /// The start a run on `n` samples of `shape` uses: [`Start::Auto`] resolved, the others as
    /// they are.
    pub fn start_for(&self, n: usize, shape: &SampleShape) -> Start {
        match self.start {
            Start::Auto if self.method == Method::Dekm && self.max_iter > 0 => {
                if matches!(shape, SampleShape::Vector(_) | SampleShape::Spectra { .. })
                    && shape.len() <= Start::AUTO_INPUT_MAX_DIM
                {
                    return Start::Input;
                }
                let least = Start::AUTO_MANIFOLD_MIN_PER_CLUSTER.saturating_mul(self.k);
                if n >= least {
                    Start::Manifold
                } else {
                    Start::Kmeans
                }
            }
            Start::Auto => Start::Kmeans,
            chosen => chosen,
        }
    }
}

crate::choice::choice!(Start { Auto => "auto", Kmeans => "kmeans", Manifold => "manifold", Input => "input" });
crate::choice::choice!(Method { Dekm => "dekm", Dec => "dec", Idec => "idec", AeKmeans => "ae-kmeans", DeepCluster => "deepcluster", ClusterGan => "clustergan" });

impl Method {
    /// The stage's name in logs and tables: "DEKM", "DEC", "IDEC", "AE+k-means",
    /// "DeepCluster" or "ClusterGAN".
    pub fn label(self) -> &'static str {
        match self {
            Self::Dekm => "DEKM",
            Self::Dec => "DEC",
            Self::Idec => "IDEC",
            Self::AeKmeans => "AE+k-means",
            Self::DeepCluster => "DeepCluster",
            Self::ClusterGan => "ClusterGAN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_saved_before_augmentation_read_as_unaugmented() {
        let jittered = TrainConfig {
            augment: Augment::DEC_DA,
            ..TrainConfig::default()
        };
        let mut old = serde_json::to_value(&jittered).unwrap();
        old.as_object_mut().unwrap().remove("augment");
        let cfg: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(cfg.augment, Augment::OFF);
        assert_eq!(cfg, TrainConfig::default());
    }

    #[test]
    fn settings_saved_before_a_choice_existed_read_as_those_runs_were_trained() {
        let mut old = serde_json::to_value(TrainConfig::default()).unwrap();
        old.as_object_mut().unwrap().remove("init");
        old.as_object_mut().unwrap().remove("start");
        old.as_object_mut().unwrap().remove("series_features");
        let cfg: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(cfg.init, Init::Torch);
        assert_eq!(cfg.start, Start::Kmeans);
        assert_eq!(cfg.series_features, SeriesFeatures::Raw);
        assert_eq!(TrainConfig::default().init, Init::Keras);
    }

    #[test]
    fn auto_starts_dekm_from_the_manifold_where_it_was_measured() {
        let auto = TrainConfig::default();
        let image = SampleShape::Image(dekm_shared::ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        });
        assert_eq!(auto.start, Start::Auto);
        assert_eq!(auto.start_for(70_000, &image), Start::Manifold);
        // No upper size: past N2D's layout limit a sample is laid out.
        assert_eq!(auto.start_for(5_000_000, &image), Start::Manifold);
        let least = Start::AUTO_MANIFOLD_MIN_PER_CLUSTER * auto.k;
        assert_eq!(auto.start_for(least, &image), Start::Manifold);
        assert_eq!(auto.start_for(least - 1, &image), Start::Kmeans);
        for other in [
            TrainConfig {
                method: Method::Dec,
                ..auto.clone()
            },
            TrainConfig {
                method: Method::AeKmeans,
                ..auto.clone()
            },
            TrainConfig {
                max_iter: 0,
                ..auto.clone()
            },
        ] {
            assert!(other.validate(100).is_ok());
            assert_eq!(other.start_for(100, &image), Start::Kmeans, "{other:?}");
        }
        for chosen in [Start::Kmeans, Start::Manifold] {
            let cfg = TrainConfig {
                start: chosen,
                ..auto.clone()
            };
            assert_eq!(cfg.start_for(5_000_000, &image), chosen);
        }
    }

    #[test]
    fn auto_clusters_short_vectors_on_the_input_and_long_ones_in_the_latent() {
        let auto = TrainConfig::default();
        let short = SampleShape::Vector(Start::AUTO_INPUT_MAX_DIM);
        let long = SampleShape::Vector(Start::AUTO_INPUT_MAX_DIM + 1);
        assert_eq!(auto.start_for(150, &short), Start::Input);
        assert_eq!(auto.start_for(70_000, &long), Start::Manifold);
        let dec = TrainConfig {
            method: Method::Dec,
            ..auto.clone()
        };
        assert_eq!(dec.start_for(150, &short), Start::Kmeans);
        let err = TrainConfig {
            start: Start::Input,
            method: Method::AeKmeans,
            ..auto
        }
        .validate(100)
        .unwrap_err()
        .to_string();
        assert!(err.contains("start input needs"), "{err}");
    }

    #[test]
    fn a_manifold_start_needs_a_stage_to_start() {
        for cfg in [
            TrainConfig {
                start: Start::Manifold,
                method: Method::AeKmeans,
                ..Default::default()
            },
            TrainConfig {
                start: Start::Manifold,
                max_iter: 0,
                ..Default::default()
            },
        ] {
            let err = cfg.validate(100).unwrap_err().to_string();
            assert!(err.contains("start manifold needs"), "{err}");
        }
        let dec = TrainConfig {
            start: Start::Manifold,
            method: Method::Dec,
            ..Default::default()
        };
        assert!(dec.validate(100).is_ok());
    }

    #[test]
    fn settings_are_checked_against_the_data() {
        let cfg = TrainConfig {
            k: 11,
            ..Default::default()
        };
        let err = cfg.validate(10).unwrap_err();
        assert!(
            err.to_string()
                .contains("k = 11 but the data set has 10 samples"),
            "{err}"
        );
        let cfg = TrainConfig {
            lr: f64::NAN,
            ..Default::default()
        };
        assert!(cfg.validate(100).is_err());
        let cfg = TrainConfig {
            augment: Augment {
                shift: -0.1,
                rotate_deg: 0.0,
            },
            ..Default::default()
        };
        assert!(
            cfg.validate(100)
                .unwrap_err()
                .to_string()
                .contains("shift -0.1")
        );
    }
}

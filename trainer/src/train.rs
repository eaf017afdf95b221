//! The training loop: autoencoder pretraining, then DEKM iterations, with checkpoints.
//!
//! DEKM iteration (Guo et al., "Deep Embedded K-Means Clustering", 2021): embed all samples,
//! k-means, `Sw`, `V` from its eigenvectors; targets `y' = V z` with the last (largest-eigenvalue,
//! most discriminative) coordinate replaced by the centroid's; fine-tune the encoder on
//! `‖V z − y'‖²`; repeat until the fraction of changed assignments drops below `tol`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Module, Tensor, Var};
use candle_nn::VarMap;
use dekm_shared::{EncoderSpec, Normalizer, TrainingMetrics};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::augment::{Augment, Jitter};
use crate::data::Dataset;
use crate::kmeans::{self, KMeans, KMeansConfig};
use crate::metrics;
use crate::model::{Autoencoder, ConvBackend, Encoder, Init, embed, manifold_features};
use crate::optim::Adam;
use crate::rng;
use crate::rotation::{Rotation, rotation, within_scatter};
use dekm_cluster::ClusterError;
use dekm_cluster::pca::Pca;
use dekm_cluster::umap;

/// Why training stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is out of range for this data.
    #[error("invalid setting: {0}")]
    Config(String),
    /// k-means rejected its input.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The checkpoint cannot be written or does not belong to this run.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// Checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The observer cancelled the run.
    #[error("training cancelled")]
    Cancelled,
    /// The loss became NaN or infinite.
    #[error("training diverged: loss is {loss} at {phase}")]
    Diverged {
        /// Loss value.
        loss: f32,
        /// Where.
        phase: String,
    },
}

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
    /// Adam learning rate of the DEKM fine-tuning. Ten times below pretraining's: on MNIST
    /// (seed 0, same pretrained autoencoder) 1e-3 peaked at ACC 0.892 after two iterations and
    /// drifted down to 0.881, while 1e-4 kept improving to 0.945 (docs/RESULTS.md).
    #[serde(default = "default_dekm_lr")]
    pub dekm_lr: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Maximum DEKM iterations.
    pub max_iter: usize,
    /// Minibatches of encoder fine-tuning per DEKM iteration.
    pub steps_per_iter: usize,
    /// Stop when fewer than this fraction of assignments change.
    pub tol: f64,
    /// k-means++ restarts per clustering.
    pub restarts: usize,
    /// Quantile of training distances used as the outlier threshold.
    pub threshold_quantile: f32,
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
/// dresses, bags split in two; docs/RESULTS.md), while a Gaussian mixture on a UMAP layout of
/// the same embedding (N2D) follows the neighbourhoods. Over seeds 0-6 the manifold start gave
/// DEKM ACC 0.97 where k-means gave 0.92 ± 0.03 on MNIST, every seed gaining, and 0.58 against
/// 0.57 on Fashion-MNIST, one seed of seven losing 0.9 points with higher NMI and ARI; on the
/// demo's sensor data both give 0.999. So it is what [`Start::Auto`] picks for DEKM. N2D's own mixture starts EM from one k-means run and then merged two classes and
/// split a third on MNIST seeds 3 and 4 and on the demo's data; started from the best of 10
/// ([`dekm_cluster::gmm::GmmConfig::restarts`]) it does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// `manifold` for the DEKM stage on [`Start::AUTO_MANIFOLD_MIN_PER_CLUSTER`] x k to
    /// [`Start::AUTO_MANIFOLD_MAX`] samples, `kmeans` otherwise: DEC and IDEC were only
    /// measured from k-means, a run with no clustering stage has nothing to start, on fewer
    /// points UMAP's neighbourhoods reach across clusters, and its exact neighbour search grows
    /// with n².
    #[default]
    Auto,
    /// k-means on the embedding (k-means++ restarts, lowest inertia), as the DEKM paper.
    Kmeans,
    /// N2D's partition: a full-covariance GMM on a k-dimensional UMAP layout (20 neighbours,
    /// `min_dist` 0) of the embedding or, for a convolutional encoder, of its last feature map
    /// (see `manifold_start`); the centres are its clusters' means in the embedding.
    Manifold,
}

impl Start {
    /// The most samples [`Start::Auto`] lays out with UMAP: its exact neighbour search grows
    /// with n². On 70,000 points on 2 cores the whole start takes about a minute for a 10-d
    /// latent and 2-3 for an image encoder's 50-d projected feature map, so at this size about
    /// 8 and 20-25.
    pub const AUTO_MANIFOLD_MAX: usize = 200_000;
    /// The fewest samples per cluster, on average, [`Start::Auto`] lays out with UMAP: N2D's
    /// graph joins each point to its 20 nearest, which stay in its own cluster only if the
    /// clusters hold well over 20.
    pub const AUTO_MANIFOLD_MIN_PER_CLUSTER: usize = 50;
}

/// What follows pretraining. All four start from the same pretrained autoencoder, and with the
/// same explicit [`Start`] from the same partition, so they compare like for like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
}

fn default_dekm_lr() -> f64 {
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
            dekm_lr: default_dekm_lr(),
            seed: 0,
            max_iter: 50,
            steps_per_iter: 140,
            tol: 0.005,
            restarts: 10,
            threshold_quantile: 0.99,
            conv: ConvBackend::Fast,
            method: Method::Dekm,
            augment: Augment::OFF,
            init: Init::default(),
            start: Start::default(),
        }
    }
}

impl TrainConfig {
    /// Checks the settings against a data set of `n` samples.
    pub fn validate(&self, n: usize) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.k == 0 || self.k > n {
            return bad(format!(
                "k = {} but the data set has {n} samples (need 1 <= k <= samples)",
                self.k
            ));
        }
        if self.latent == 0 || self.batch_size == 0 {
            return bad("latent dimension and batch size must be positive".into());
        }
        for lr in [self.lr, self.dekm_lr] {
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
        if self.start == Start::Manifold && (self.method == Method::AeKmeans || self.max_iter == 0)
        {
            return bad(
                "start manifold needs a clustering stage to start: method dekm, dec or idec \
                 with max_iter of at least 1 (the exported centres must be the k-means ones \
                 the edge runtime assigns by)"
                    .into(),
            );
        }
        self.augment.validate().map_err(TrainError::Config)
    }

    /// The start a run on `n` samples uses: [`Start::Auto`] resolved, the others as they are.
    pub fn start_for(&self, n: usize) -> Start {
        match self.start {
            Start::Auto if self.method == Method::Dekm && self.max_iter > 0 => {
                let least = Start::AUTO_MANIFOLD_MIN_PER_CLUSTER.saturating_mul(self.k);
                if (least..=Start::AUTO_MANIFOLD_MAX).contains(&n) {
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

/// Dimensions a convolutional encoder's feature map is projected on before the `manifold`
/// start lays it out (1,152 values for a 28x28 image): UMAP's exact neighbour search grows with
/// the dimension. On Fashion-MNIST 50 axes keep about 97% of the map's variance.
pub const MANIFOLD_AXES: usize = 50;

/// Mixtures the `manifold` start fits on a feature-map layout, keeping the likeliest.
///
/// Why so many: on Fashion-MNIST's layouts the likeliest partitions are rare, found by 1-3
/// single starts in 100, and the common ones a little less likely are often poorer. On the
/// layouts of seeds 0 and 1 the likeliest of the first 20 starts was a 0.57 partition and the
/// likeliest of 100 a 0.63 one (docs/RESULTS.md, "the likeliest of 100 mixtures"). The
/// likelihood is not a faithful judge either: on seed 3 the likeliest of 100 is a 0.59
/// partition where the first 20 held a 0.65 one; over seeds 0-4 the mean still rose. On 70,000
/// points a start costs about two thirds of a second on 2 cores: the 80 more add about a
/// minute to the start's 2-3.
pub const MANIFOLD_STARTS: u64 = 100;

/// The `manifold` start: N2D's partition, each centre the mean of its cluster in the embedding
/// `z` (`[n, d]`). The labels are N2D's, not the nearest centres'; they are held (see [`Held`])
/// while fine-tuning pulls every point towards its N2D cluster.
///
/// What is laid out: for a convolutional encoder its last feature map for the rows of `xs`
/// ([`manifold_features`], projected on [`MANIFOLD_AXES`] principal axes), and N2D keeps the
/// likeliest of [`MANIFOLD_STARTS`] mixtures; for a dense one the latent `z`, as N2D, and the
/// mixture from the best k-means start. Why: the feature map keeps what the 10-d latent loses;
/// its layout holds more partitions (9-14 distinct ones in 20 single-start mixtures on
/// Fashion-MNIST, against 5-9 on the latent's), better ones among them, and the lowest-inertia
/// start falls on a poor one there (MNIST 0.834 where the latent gave 0.972). With the likeliest
/// of 20, DEKM reached Fashion-MNIST 0.6129 over seeds 0-3 where the latent start gave 0.5805,
/// and MNIST 0.9756 and 0.9765 on seeds 0-1 against 0.9727 and 0.9747, at about two minutes
/// more per run; with the likeliest of 100, Fashion-MNIST 0.6304 over seeds 0-4 against 0.6192
/// with 20, and over seeds 0-6 Fashion-MNIST 0.6347 and MNIST 0.9751 (docs/RESULTS.md). The dense encoder's hidden layers were not measured, so
/// vector data keep what was.
fn manifold_start(
    encoder: &Encoder,
    xs: &Tensor,
    z: &[f32],
    cfg: &TrainConfig,
) -> Result<KMeans, TrainError> {
    let Some((f, dim)) = manifold_features(encoder, xs, 1024)? else {
        let p = dekm_cluster::Points::new(z, cfg.latent)?;
        let labels = umap::n2d(&p, cfg.k, cfg.seed, umap::Mixture::BestStart)?;
        return Ok(kmeans::from_labels(z, cfg.latent, cfg.k, labels));
    };
    let p = dekm_cluster::Points::new(&f, dim)?;
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
        dekm_cluster::Points::new(&projected, MANIFOLD_AXES)?
    } else {
        p
    };
    let mixture = umap::Mixture::Likeliest(MANIFOLD_STARTS);
    let labels = umap::n2d(&p, cfg.k, cfg.seed, mixture)?;
    Ok(kmeans::from_labels(z, cfg.latent, cfg.k, labels))
}

/// Where to checkpoint, whether to resume, and who watches.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Checkpoint directory; none disables checkpoints.
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint when it exists.
    pub resume: bool,
    /// Hide progress bars.
    pub quiet: bool,
    /// Receives progress and may cancel the run (the gRPC service streams jobs through it).
    pub observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("checkpoint", &self.checkpoint)
            .field("resume", &self.resume)
            .field("quiet", &self.quiet)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// One step of a training run, as an [`Observer`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// A pretraining epoch finished (1-based) with this mean reconstruction loss.
    Pretrain {
        /// Epoch number.
        epoch: usize,
        /// Epochs in the run.
        epochs: usize,
        /// Mean loss.
        loss: f32,
    },
    /// k-means on the pretrained embedding (the AE + k-means baseline).
    Clustered {
        /// Metrics, when labels exist.
        metrics: Option<TrainingMetrics>,
    },
    /// A DEKM iteration finished.
    Dekm {
        /// Iteration number (1-based).
        iteration: usize,
        /// Maximum iterations.
        max_iter: usize,
        /// Mean fine-tuning loss.
        loss: f32,
        /// Fraction of assignments that changed.
        changed: f64,
        /// Metrics after the iteration, when labels exist.
        metrics: Option<TrainingMetrics>,
    },
}

/// Watches a run. Called from the training thread, so it must be quick.
pub trait Observer: Send + Sync {
    /// A step finished.
    fn progress(&self, step: &Progress);
    /// Polled before every minibatch; returning true stops the run with
    /// [`TrainError::Cancelled`] (the checkpoint of the last finished step stays).
    fn cancelled(&self) -> bool {
        false
    }
}

/// One DEKM iteration's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IterationLog {
    /// Mean fine-tuning loss.
    pub loss: f32,
    /// Fraction of assignments that changed (while a manifold start is held: that Lloyd's
    /// k-means from the held clusters' centres would change).
    pub changed: f64,
    /// Metrics after the iteration, when labels exist.
    pub metrics: Option<TrainingMetrics>,
}

/// Loss and metric curves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    /// Mean reconstruction loss per pretraining epoch.
    pub pretrain_loss: Vec<f32>,
    /// One entry per DEKM iteration.
    pub iterations: Vec<IterationLog>,
    /// Seconds spent pretraining (this process only, when resumed).
    pub pretrain_seconds: f64,
    /// Seconds spent in the DEKM stage.
    pub dekm_seconds: f64,
    /// Metrics of a `manifold` start, when labels exist.
    #[serde(default)]
    pub start: Option<TrainingMetrics>,
}

/// A trained model and how it got there.
pub struct Trained {
    /// Encoder architecture.
    pub spec: EncoderSpec,
    /// All weights (encoder and decoder).
    pub varmap: VarMap,
    /// The encoder, sharing `varmap`'s variables.
    pub encoder: Encoder,
    /// Input preprocessing.
    pub normalizer: Normalizer,
    /// Final clustering in latent space.
    pub kmeans: KMeans,
    /// Final rotation.
    pub rotation: Rotation,
    /// Final latent vectors, `[n, d]`.
    pub z: Vec<f32>,
    /// AE + k-means before any DEKM iteration, when labels exist.
    pub baseline: Option<TrainingMetrics>,
    /// Curves.
    pub history: History,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct RunKey {
    dataset: String,
    samples: usize,
    config: TrainConfig,
}

impl RunKey {
    /// True when a checkpoint of run `self` may continue as run `other`: the same computation so
    /// far. The stopping tolerance may change (a converged run can be resumed with a tighter
    /// one); epochs, iterations and stage are already left out of the key when it is made.
    fn resumable_as(&self, other: &RunKey) -> bool {
        let key = |k: &RunKey| RunKey {
            config: TrainConfig {
                tol: 0.0,
                ..k.config.clone()
            },
            ..k.clone()
        };
        key(self) == key(other)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Phase {
    Pretrain {
        epochs_done: usize,
    },
    Dekm {
        iterations_done: usize,
        centroids: Vec<f32>,
        baseline: Option<TrainingMetrics>,
        converged: bool,
        /// A manifold start still held (see [`Held`]).
        #[serde(default)]
        held: Option<Held>,
    },
}

/// A `manifold` start is held, its labels standing in for k-means' while the centres and `V`
/// follow the fine-tuned embedding, until k-means on the embedding agrees with it to within
/// the tolerance (DEKM's own convergence test, applied to the held partition) or the last
/// iteration, where k-means takes over so that the export's centres are k-means ones. That
/// k-means is Lloyd's from the held clusters' centres: k-means++ restarts can land in another
/// partition's basin (18% apart from the held one in an early Fashion-MNIST iteration, where
/// Lloyd's from the held centres moved 10%).
/// Released at once, k-means' Voronoi cells undid a fifth of the start on Fashion-MNIST in the
/// first iteration; released when the disagreement merely stopped falling fast (5.3% on
/// MNIST), they took ACC from 0.972 to 0.938 (docs/RESULTS.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Held {
    labels: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    run: RunKey,
    phase: Phase,
    /// Updates applied by the optimizer of the current phase.
    adam_steps: usize,
    history: History,
}

/// A checkpoint read back: its state and the optimizer's moments.
type Resumed = (CheckpointState, HashMap<String, Tensor>);

const WEIGHTS: &str = "weights.safetensors";
const STATE: &str = "state.json";
const OPTIMIZER: &str = "optimizer.safetensors";

struct Checkpointer<'a> {
    dir: Option<&'a Path>,
    run: RunKey,
}

impl Checkpointer<'_> {
    fn err(&self, reason: impl std::fmt::Display) -> TrainError {
        TrainError::Checkpoint {
            path: self.dir.map(Path::to_path_buf).unwrap_or_default(),
            reason: reason.to_string(),
        }
    }

    /// Writes weights then state, each to a temporary file renamed into place, so a crash leaves
    /// the previous complete checkpoint (state is renamed last and names the phase).
    fn save(
        &self,
        varmap: &VarMap,
        opt: &Adam,
        phase: Phase,
        history: &History,
    ) -> Result<(), TrainError> {
        let Some(dir) = self.dir else { return Ok(()) };
        std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
        let tmp = dir.join(format!("{WEIGHTS}.tmp"));
        varmap.save(&tmp)?;
        std::fs::rename(&tmp, dir.join(WEIGHTS)).map_err(|e| self.err(e))?;
        let tmp = dir.join(format!("{OPTIMIZER}.tmp"));
        candle_core::safetensors::save(&opt.state(), &tmp)?;
        std::fs::rename(&tmp, dir.join(OPTIMIZER)).map_err(|e| self.err(e))?;
        let state = CheckpointState {
            run: self.run.clone(),
            phase,
            adam_steps: opt.steps(),
            history: history.clone(),
        };
        let json = serde_json::to_vec_pretty(&state).map_err(|e| self.err(e))?;
        crate::export::write_atomic(&dir.join(STATE), &json).map_err(|e| self.err(e))
    }

    /// Loads weights into `varmap`; returns the state and the optimizer moments.
    fn load(&self, varmap: &mut VarMap) -> Result<Option<Resumed>, TrainError> {
        let Some(dir) = self.dir else { return Ok(None) };
        let path = dir.join(STATE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(|e| self.err(e))?;
        let state: CheckpointState =
            serde_json::from_slice(&bytes).map_err(|e| self.err(format!("{STATE}: {e}")))?;
        if !state.run.resumable_as(&self.run) {
            return Err(self.err(
                "it belongs to a different run (data set, size or settings differ); remove it or drop --resume",
            ));
        }
        varmap.load(dir.join(WEIGHTS))?;
        let moments = candle_core::safetensors::load(dir.join(OPTIMIZER), &Device::Cpu)?;
        Ok(Some((state, moments)))
    }
}

/// Reports one finished clustering iteration (0-based `it`) in the four places a user or a
/// caller reads it (the saved history, the progress bar, the log and the progress callback),
/// so that DEKM, DEC and IDEC report the same figures the same way.
fn record_iteration(
    method: &str,
    it: usize,
    max_iter: usize,
    log: IterationLog,
    history: &mut History,
    pb: &ProgressBar,
    notify: &impl Fn(Progress),
) {
    let IterationLog {
        loss,
        changed,
        metrics: m,
    } = log;
    pb.inc(1);
    pb.set_message(match m {
        Some(m) => format!("changed {:.2}% acc {:.4}", changed * 100.0, m.acc),
        None => format!("changed {:.2}%", changed * 100.0),
    });
    tracing::info!(
        iteration = it + 1,
        loss,
        changed,
        acc = m.map(|m| m.acc),
        "{method}"
    );
    notify(Progress::Dekm {
        iteration: it + 1,
        max_iter,
        loss,
        changed,
        metrics: m,
    });
    history.iterations.push(log);
}

/// The sample ids of fine-tuning step `step` in a clustering iteration: the batch of the
/// iteration's shuffled `order` that begins at `step · batch` modulo its length, cut short at
/// its end (steps that outrun the data wrap around).
fn minibatch(order: &[u32], step: usize, batch: usize) -> &[u32] {
    let from = (step * batch) % order.len();
    &order[from..(from + batch).min(order.len())]
}

fn bar(quiet: bool, len: usize, prefix: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64).with_prefix(prefix.to_string());
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

fn finite(loss: f32, phase: impl FnOnce() -> String) -> Result<f32, TrainError> {
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(TrainError::Diverged {
            loss,
            phase: phase(),
        })
    }
}

/// Trains on `ds`: pretraining, then DEKM, checkpointing after every epoch and iteration.
pub fn train(ds: &Dataset, cfg: &TrainConfig, opts: &RunOptions) -> Result<Trained, TrainError> {
    let n = ds.len();
    cfg.validate(n)?;
    let begin = cfg.start_for(n);
    tracing::info!(start = ?begin, chosen = ?cfg.start, samples = n, "clustering stage start");
    let dev = Device::Cpu;
    let spec = ds.encoder_spec(cfg.latent);
    spec.validate()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let normalizer = ds.fit_normalizer();
    let len = spec.input_len();
    let flat = ds
        .normalized(&normalizer)
        .map_err(|(i, e)| TrainError::Config(format!("input sample {i}: {e}")))?;
    let xs = Tensor::from_vec(flat, (n, len), &dev)?;
    let jitter = Jitter::new(&ds.shape, cfg.augment);

    let mut varmap = VarMap::new();
    let ae = Autoencoder::init(&spec, &varmap, cfg.seed, cfg.conv, cfg.init)?;
    let ckpt = Checkpointer {
        dir: opts.checkpoint.as_deref(),
        run: RunKey {
            dataset: ds.name.clone(),
            samples: n,
            // A run may be resumed with more epochs or iterations than it started with.
            // The stage after pretraining and its start may change too: DEC, IDEC and DEKM
            // runs, from k-means or from the manifold, can start from one pretraining
            // checkpoint.
            config: TrainConfig {
                epochs: 0,
                max_iter: 0,
                method: Method::Dekm,
                start: Start::Kmeans,
                ..cfg.clone()
            },
        },
    };
    let resumed = if opts.resume {
        ckpt.load(&mut varmap)?
    } else {
        None
    };
    let mut history = resumed
        .as_ref()
        .map(|s| s.0.history.clone())
        .unwrap_or_default();
    let epochs_done = match &resumed {
        Some((
            CheckpointState {
                phase: Phase::Pretrain { epochs_done },
                ..
            },
            _,
        )) => *epochs_done,
        Some(_) if cfg.method != Method::Dekm => {
            return Err(TrainError::Checkpoint {
                path: opts.checkpoint.clone().unwrap_or_default(),
                reason: format!(
                    "it is past pretraining, in the DEKM stage; {:?} starts from a pretraining checkpoint",
                    cfg.method
                ),
            });
        }
        Some(_) => cfg.epochs,
        None => 0,
    };
    if resumed.is_some() {
        tracing::info!(epochs_done, "resuming from checkpoint");
    }
    let named_vars = |prefix: &str| -> Result<Vec<(String, Var)>, TrainError> {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
        let mut named: Vec<(String, Var)> = data
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(named)
    };

    let observer = opts.observer.as_deref();
    let notify = |p: Progress| {
        if let Some(o) = observer {
            o.progress(&p);
        }
    };
    let check = || match observer {
        Some(o) if o.cancelled() => Err(TrainError::Cancelled),
        _ => Ok(()),
    };

    let started = Instant::now();
    if epochs_done < cfg.epochs {
        let mut opt = Adam::new(named_vars("")?, cfg.lr)?;
        if let Some((
            state @ CheckpointState {
                phase: Phase::Pretrain { .. },
                ..
            },
            moments,
        )) = &resumed
        {
            opt.restore(moments, state.adam_steps)?;
        }
        let batches = n.div_ceil(cfg.batch_size);
        for epoch in epochs_done..cfg.epochs {
            let pb = bar(opts.quiet, batches, &format!("epoch {}", epoch + 1));
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.shuffle(&mut rng(cfg.seed, 10_000 + epoch as u64));
            let mut jr = rng(cfg.seed, 40_000 + epoch as u64);
            let mut total = 0f64;
            for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
                check()?;
                let xb = xs.index_select(&Tensor::new(chunk, &dev)?, 0)?;
                let xb = Jitter::inputs(jitter.as_ref(), xb, &mut jr)?;
                let loss = candle_nn::loss::mse(&ae.forward(&xb)?, &xb)?;
                opt.backward_step(&loss)?;
                let l = finite(loss.to_scalar::<f32>()?, || {
                    format!("pretraining epoch {}", epoch + 1)
                })?;
                total += f64::from(l) * chunk.len() as f64;
                pb.inc(1);
                if b % 8 == 0 {
                    pb.set_message(format!("loss {l:.5}"));
                }
            }
            let mean = (total / n as f64) as f32;
            pb.finish_with_message(format!("loss {mean:.5}"));
            tracing::info!(epoch = epoch + 1, loss = mean, "pretraining");
            history.pretrain_loss.push(mean);
            notify(Progress::Pretrain {
                epoch: epoch + 1,
                epochs: cfg.epochs,
                loss: mean,
            });
            ckpt.save(
                &varmap,
                &opt,
                Phase::Pretrain {
                    epochs_done: epoch + 1,
                },
                &history,
            )?;
        }
    }
    history.pretrain_seconds += started.elapsed().as_secs_f64();

    let started = Instant::now();
    let d = cfg.latent;
    let kcfg = |it: usize| KMeansConfig {
        k: cfg.k,
        restarts: cfg.restarts,
        max_iter: 300,
        seed: cfg.seed.wrapping_add(it as u64),
    };
    let ft = Finetune {
        cfg,
        xs: &xs,
        jitter,
        check: &check,
    };
    let mut z = embed(&ae.encoder, &xs, 1024)?;
    let mut opt = Adam::new(named_vars("encoder.")?, cfg.dekm_lr)?;
    // Whether a manifold start is still held (see [`Held`]).
    let mut held = false;
    let (mut km, mut start, baseline, mut converged) = match resumed {
        Some((
            CheckpointState {
                phase:
                    Phase::Dekm {
                        iterations_done,
                        centroids,
                        baseline,
                        converged,
                        held: h,
                    },
                adam_steps,
                ..
            },
            moments,
        )) => {
            opt.restore(&moments, adam_steps)?;
            let km = match &h {
                Some(h) => kmeans::from_labels(&z, d, cfg.k, h.labels.clone()),
                None => kmeans::refine(&z, d, centroids, 300)?,
            };
            held = h.is_some();
            (
                km,
                iterations_done,
                baseline,
                // Under a tighter tolerance than the checkpoint's, the run goes on.
                converged
                    && history
                        .iterations
                        .last()
                        .is_none_or(|it| it.changed < cfg.tol),
            )
        }
        _ => {
            let mut km = kmeans::fit(&z, d, &kcfg(0), None)?;
            let baseline = ds.labels.as_ref().map(|t| metrics::evaluate(&km.labels, t));
            if let Some(m) = baseline {
                tracing::info!(acc = m.acc, nmi = m.nmi, ari = m.ari, "AE + k-means");
            }
            notify(Progress::Clustered { metrics: baseline });
            if begin == Start::Manifold {
                km = manifold_start(&ae.encoder, &xs, &z, cfg)?;
                history.start = ds.labels.as_ref().map(|t| metrics::evaluate(&km.labels, t));
                if let Some(m) = history.start {
                    tracing::info!(acc = m.acc, nmi = m.nmi, ari = m.ari, "manifold start");
                }
                held = true;
            }
            (km, 0, baseline, false)
        }
    };
    // DEC and IDEC replace the DEKM loop below; AE + k-means skips it.
    let dekm = cfg.method == Method::Dekm;
    if matches!(cfg.method, Method::Dec | Method::Idec) {
        let prefix = if cfg.method == Method::Idec {
            ""
        } else {
            "encoder."
        };
        (km, z) = dec_stage(DecRun {
            ft: &ft,
            ae: &ae,
            vars: named_vars(prefix)?,
            labels: ds.labels.as_deref(),
            km,
            history: &mut history,
            notify: &notify,
            quiet: opts.quiet,
        })?;
    }
    let mut rot = rotation(within_scatter(&z, d, &km.labels, &km.centroids));
    let pb = bar(opts.quiet || !dekm, cfg.max_iter, "DEKM");
    pb.set_position(start as u64);
    while dekm && start < cfg.max_iter && !converged {
        let it = start;
        let vt = Tensor::from_vec(rot.v.clone(), (d, d), &dev)?
            .t()?
            .contiguous()?;
        let targets = dekm_targets(&z, d, &km, &rot);
        let targets = Tensor::from_vec(targets, (n, d), &dev)?;
        let loss = ft.iteration("DEKM", it, 20_000, &mut opt, |ids, xb| {
            // Targets come from the clean images; the encoder sees jittered ones, so it learns
            // to put a shifted or turned digit where the original belongs.
            let yb = ae.encoder.forward(xb)?.matmul(&vt)?;
            candle_nn::loss::mse(&yb, &targets.index_select(ids, 0)?)
        })?;
        z = embed(&ae.encoder, &xs, 1024)?;
        let changed;
        if held {
            // Lloyd's k-means from the held clusters' centres measures the disagreement and,
            // on release, takes over (see [`Held`]).
            let current = kmeans::from_labels(&z, d, cfg.k, std::mem::take(&mut km.labels));
            let new = kmeans::refine(&z, d, current.centroids.clone(), 300)?;
            changed = metrics::changed_fraction(&current.labels, &new.labels);
            held = changed >= cfg.tol && it + 1 < cfg.max_iter;
            if held {
                tracing::info!(disagreement = changed, "manifold start held");
                km = current;
            } else {
                km = new;
            }
        } else {
            let new = kmeans::fit(&z, d, &kcfg(it + 1), Some(&km.centroids))?;
            changed = metrics::changed_fraction(&km.labels, &new.labels);
            km = new;
        }
        rot = rotation(within_scatter(&z, d, &km.labels, &km.centroids));
        let log = IterationLog {
            loss,
            changed,
            metrics: ds.labels.as_ref().map(|t| metrics::evaluate(&km.labels, t)),
        };
        record_iteration("DEKM", it, cfg.max_iter, log, &mut history, &pb, &notify);
        start += 1;
        converged = !held && changed < cfg.tol;
        let phase = Phase::Dekm {
            iterations_done: start,
            centroids: km.centroids.clone(),
            baseline,
            converged,
            held: held.then(|| Held {
                labels: km.labels.clone(),
            }),
        };
        ckpt.save(&varmap, &opt, phase, &history)?;
    }
    pb.finish();
    history.dekm_seconds += started.elapsed().as_secs_f64();
    Ok(Trained {
        spec,
        varmap,
        encoder: ae.encoder,
        normalizer,
        kmeans: km,
        rotation: rot,
        z,
        baseline,
        history,
    })
}

/// What the DEC / IDEC stage needs from [`train`].
struct DecRun<'a, N: Fn(Progress), C: Fn() -> Result<(), TrainError>> {
    ft: &'a Finetune<'a, C>,
    ae: &'a Autoencoder,
    /// Trained with the centres: the encoder's variables (DEC) or all (IDEC).
    vars: Vec<(String, Var)>,
    labels: Option<&'a [u32]>,
    km: KMeans,
    history: &'a mut History,
    notify: &'a N,
    quiet: bool,
}

/// What the fine-tuning iterations of DEKM, DEC and IDEC share: the settings, the training
/// images and their jitter, and the cancellation check run before every step.
struct Finetune<'a, C: Fn() -> Result<(), TrainError>> {
    cfg: &'a TrainConfig,
    xs: &'a Tensor,
    /// Jitter of the training minibatches (targets come from the clean images).
    jitter: Option<Jitter>,
    check: &'a C,
}

impl<C: Fn() -> Result<(), TrainError>> Finetune<'_, C> {
    /// Iteration `it` (0-based) of `method`: `steps_per_iter` Adam steps, each on `loss(ids,
    /// inputs)` of the next minibatch of a fresh seeded shuffle of all samples. `stream` keeps
    /// each method's shuffles its own. Returns the mean of the minibatch losses.
    fn iteration(
        &self,
        method: &str,
        it: usize,
        stream: u64,
        opt: &mut Adam,
        mut loss: impl FnMut(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<f32, TrainError> {
        let (cfg, xs) = (self.cfg, self.xs);
        let mut order: Vec<u32> = (0..xs.dim(0)? as u32).collect();
        order.shuffle(&mut rng(cfg.seed, stream + it as u64));
        let mut jr = rng(cfg.seed, 50_000 + it as u64);
        let mut total = 0f64;
        for step in 0..cfg.steps_per_iter {
            (self.check)()?;
            let ids = Tensor::new(minibatch(&order, step, cfg.batch_size), xs.device())?;
            let xb = Jitter::inputs(self.jitter.as_ref(), xs.index_select(&ids, 0)?, &mut jr)?;
            let l = loss(&ids, &xb)?;
            opt.backward_step(&l)?;
            total += f64::from(finite(l.to_scalar::<f32>()?, || {
                format!("{method} iteration {}", it + 1)
            })?);
        }
        Ok((total / cfg.steps_per_iter.max(1) as f64) as f32)
    }
}

/// Student-t soft assignments (one degree of freedom) of rows `z` `[b, d]` to `mu` `[k, d]`.
fn soft_assign(z: &Tensor, mu: &Tensor) -> candle_core::Result<Tensor> {
    let diff = z.unsqueeze(1)?.broadcast_sub(&mu.unsqueeze(0)?)?;
    let q = (diff.sqr()?.sum(2)? + 1.0)?.recip()?;
    q.broadcast_div(&q.sum_keepdim(1)?)
}

/// DEC's target: `q²` divided by the cluster frequency, normalised per row.
fn target_distribution(q: &[f32], k: usize) -> Vec<f32> {
    let mut f = vec![0f32; k];
    for row in q.chunks_exact(k) {
        for (s, v) in f.iter_mut().zip(row) {
            *s += v;
        }
    }
    let mut p = vec![0f32; q.len()];
    for (row, out) in q.chunks_exact(k).zip(p.chunks_exact_mut(k)) {
        for ((o, v), fj) in out.iter_mut().zip(row).zip(&f) {
            *o = v * v / fj.max(f32::MIN_POSITIVE);
        }
        let s: f32 = out.iter().sum();
        out.iter_mut().for_each(|o| *o /= s.max(f32::MIN_POSITIVE));
    }
    p
}

/// Hard labels from soft assignments.
fn argmax_rows(q: &[f32], k: usize) -> Vec<u32> {
    q.chunks_exact(k)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                )
                .0 as u32
        })
        .collect()
}

/// DEC or IDEC fine-tuning: every iteration recomputes the target distribution on all samples,
/// then takes `steps_per_iter` Adam steps (learning rate `dekm_lr`) on the encoder and the
/// centres (and the decoder for IDEC); stops when fewer than `tol` labels change. Returns the
/// clustering (centres, argmax labels) and the final embedding.
fn dec_stage<N: Fn(Progress), C: Fn() -> Result<(), TrainError>>(
    r: DecRun<'_, N, C>,
) -> Result<(KMeans, Vec<f32>), TrainError> {
    let (cfg, xs) = (r.ft.cfg, r.ft.xs);
    let dev = xs.device().clone();
    let (n, d, k) = (xs.dim(0)?, cfg.latent, cfg.k);
    let mu = Var::from_tensor(&Tensor::from_vec(r.km.centroids.clone(), (k, d), &dev)?)?;
    let idec = cfg.method == Method::Idec;
    let mut vars = r.vars;
    vars.push(("dec.centres".into(), mu.clone()));
    let mut opt = Adam::new(vars, cfg.dekm_lr)?;
    let name = if idec { "IDEC" } else { "DEC" };
    let pb = bar(r.quiet, cfg.max_iter, name);
    let mut labels = r.km.labels.clone();
    let embed_q = |mu: &Tensor| -> Result<(Vec<f32>, Vec<f32>), TrainError> {
        let z = embed(&r.ae.encoder, xs, 1024)?;
        let zt = Tensor::from_vec(z.clone(), (n, d), &dev)?;
        let q = soft_assign(&zt, mu)?.flatten_all()?.to_vec1::<f32>()?;
        Ok((z, q))
    };
    // The embedding after one iteration is the one the next starts from: one pass each.
    let (mut z, mut q) = embed_q(mu.as_tensor())?;
    for it in 0..cfg.max_iter {
        let p = Tensor::from_vec(target_distribution(&q, k), (n, k), &dev)?;
        let loss = r.ft.iteration(name, it, 30_000, &mut opt, |ids, xb| {
            let z = r.ae.encoder.forward(xb)?;
            let qb = soft_assign(&z, mu.as_tensor())?;
            let pb_ = p.index_select(ids, 0)?;
            // KL(P || Q), averaged over the batch (the P log P term is constant but keeps the
            // loss a true divergence, so it reads as zero at the optimum).
            let kl = (&pb_ * (pb_.clamp(1e-10, 1.0)?.log()? - qb.clamp(1e-10, 1.0)?.log()?)?)?
                .sum_all()?
                .affine(1.0 / ids.dim(0)? as f64, 0.0)?;
            if idec {
                let recon = candle_nn::loss::mse(&r.ae.decoder.forward(&z)?, xb)?;
                recon + kl.affine(0.1, 0.0)?
            } else {
                Ok(kl)
            }
        })?;
        (z, q) = embed_q(mu.as_tensor())?;
        let new = argmax_rows(&q, k);
        let changed = metrics::changed_fraction(&labels, &new);
        labels = new;
        let log = IterationLog {
            loss,
            changed,
            metrics: r.labels.map(|t| metrics::evaluate(&labels, t)),
        };
        record_iteration(name, it, cfg.max_iter, log, r.history, &pb, r.notify);
        if changed < cfg.tol {
            break;
        }
    }
    pb.finish();
    let centroids = mu.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    // The nearest centre is exactly the largest Student-t assignment, so the exported head
    // (nearest centroid in the rotated space) reproduces DEC's labels.
    let labels = argmax_rows(&q, k);
    let inertia = z
        .chunks_exact(d)
        .zip(&labels)
        .map(|(x, &l)| {
            let c = &centroids[l as usize * d..(l as usize + 1) * d];
            x.iter()
                .zip(c)
                .map(|(a, b)| f64::from((a - b) * (a - b)))
                .sum::<f64>()
        })
        .sum();
    Ok((
        KMeans {
            d,
            centroids,
            labels,
            inertia,
        },
        z,
    ))
}

/// `y' = V z` for every sample, with the last coordinate replaced by the centroid's.
fn dekm_targets(z: &[f32], d: usize, km: &KMeans, rot: &Rotation) -> Vec<f32> {
    let mut mu_last = vec![0f32; km.centroids.len() / d];
    let mut y = vec![0f32; d];
    for (m, mu) in mu_last.iter_mut().zip(km.centroids.chunks_exact(d)) {
        rot.project(mu, &mut y);
        *m = y[d - 1];
    }
    let mut out = vec![0f32; z.len()];
    for ((x, o), &l) in z
        .chunks_exact(d)
        .zip(out.chunks_exact_mut(d))
        .zip(&km.labels)
    {
        rot.project(x, o);
        o[d - 1] = mu_last[l as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_resumes_under_another_tolerance_but_not_other_settings() {
        let key = |config: TrainConfig| RunKey {
            dataset: "mnist".into(),
            samples: 70_000,
            config,
        };
        let base = key(TrainConfig::default());
        let tighter = key(TrainConfig {
            tol: 0.0005,
            ..TrainConfig::default()
        });
        let other_lr = key(TrainConfig {
            lr: 0.01,
            ..TrainConfig::default()
        });
        assert!(base.resumable_as(&tighter));
        assert!(!base.resumable_as(&other_lr));
        assert!(!base.resumable_as(&RunKey {
            samples: 60_000,
            ..base.clone()
        }));
    }

    #[test]
    fn targets_move_only_the_last_coordinate_to_the_centroid() {
        let rot = Rotation {
            d: 2,
            v: vec![0.0, 1.0, 1.0, 0.0],
            eigenvalues: vec![1.0, 2.0],
        };
        let km = KMeans {
            d: 2,
            centroids: vec![5.0, 0.0, -5.0, 1.0],
            labels: vec![0, 1],
            inertia: 0.0,
        };
        // y = (z1, z0); last coordinate becomes the centroid's z0.
        let t = dekm_targets(&[4.0, 0.5, -6.0, 2.0], 2, &km, &rot);
        assert_eq!(t, [0.5, 5.0, 2.0, -5.0]);
    }

    #[test]
    fn minibatches_walk_the_order_and_wrap() {
        let order = [4, 0, 3, 1, 2];
        let steps: Vec<&[u32]> = (0..4).map(|s| minibatch(&order, s, 2)).collect();
        assert_eq!(steps, [&[4, 0][..], &[3, 1], &[2], &[0, 3]]);
    }

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
        let cfg: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(cfg.init, Init::Torch);
        assert_eq!(cfg.start, Start::Kmeans);
        assert_eq!(TrainConfig::default().init, Init::Keras);
    }

    #[test]
    fn auto_starts_dekm_from_the_manifold_where_it_was_measured() {
        let auto = TrainConfig::default();
        assert_eq!(auto.start, Start::Auto);
        assert_eq!(auto.start_for(70_000), Start::Manifold);
        assert_eq!(auto.start_for(Start::AUTO_MANIFOLD_MAX), Start::Manifold);
        assert_eq!(auto.start_for(Start::AUTO_MANIFOLD_MAX + 1), Start::Kmeans);
        let least = Start::AUTO_MANIFOLD_MIN_PER_CLUSTER * auto.k;
        assert_eq!(auto.start_for(least), Start::Manifold);
        assert_eq!(auto.start_for(least - 1), Start::Kmeans);
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
            assert_eq!(other.start_for(100), Start::Kmeans, "{other:?}");
        }
        for chosen in [Start::Kmeans, Start::Manifold] {
            let cfg = TrainConfig {
                start: chosen,
                ..auto.clone()
            };
            assert_eq!(cfg.start_for(Start::AUTO_MANIFOLD_MAX + 1), chosen);
        }
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

//! A training run: pretraining ([`pretrain`](self)), the start of the clustering stage
//! ([`start`](self)), then DEKM, DEC or IDEC, checkpointed after every epoch and iteration.
//!
//! Where each part lives: the settings in `config`, checkpoints in `checkpoint`, progress and
//! curves in `observe` ([`Observer`], [`Progress`], [`History`]), the start in `start`,
//! pretraining in `pretrain`, what the fine-tuning stages share in `finetune`, the DEKM stage
//! in `dekm` and DEC/IDEC in `dec`. [`train`] is the sequence of those stages.

mod checkpoint;
mod config;
mod dec;
mod dekm;
mod finetune;
mod observe;
mod pretrain;
mod start;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use dekm_cluster::ClusterError;
use dekm_shared::{EncoderSpec, Normalizer, TrainingMetrics};

pub use config::{Method, Start, TrainConfig};
pub use observe::{History, IterationLog, Observer, Progress};
pub use start::{MANIFOLD_AXES, MANIFOLD_STARTS};

use crate::augment::Jitter;
use crate::data::Dataset;
use crate::kmeans::{KMeans, KMeansInit};
use crate::model::{Autoencoder, Encoder, embed};
use crate::optim::Adam;
use crate::rotation::{Rotation, rotation, within_scatter};
use checkpoint::{CheckpointState, Checkpointer, Phase, RunKey};
use dec::{DecRun, dec_stage};
use dekm::{DekmStage, Position};
use dekm_cluster::{Fit, Points};
use finetune::Finetune;
use observe::Watch;
use pretrain::Pretraining;

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

/// Where to checkpoint, whether to resume, and who watches.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Checkpoint directory; none disables checkpoints.
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint when it exists.
    pub resume: bool,
    /// Receives progress and may cancel the run (the command line draws progress bars with
    /// it, the gRPC service streams jobs through it).
    pub observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("checkpoint", &self.checkpoint)
            .field("resume", &self.resume)
            .field("observer", &self.observer.is_some())
            .finish()
    }
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

/// Trains on `ds`: pretraining, then the clustering stage, checkpointing after every epoch and
/// iteration.
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
    let flat = ds
        .normalized(&normalizer)
        .map_err(|(i, e)| TrainError::Config(format!("input sample {i}: {e}")))?;
    let xs = Tensor::from_vec(flat, (n, spec.input_len()), &dev)?;
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
            return Err(ckpt.err(format!(
                "it is past pretraining, in the DEKM stage; {:?} starts from a pretraining checkpoint",
                cfg.method
            )));
        }
        Some(_) => cfg.epochs,
        None => 0,
    };
    if resumed.is_some() {
        tracing::info!(epochs_done, "resuming from checkpoint");
    }
    let vars = |prefix: &str| named_vars(&varmap, prefix);
    let watch = Watch(opts.observer.as_deref());

    let started = Instant::now();
    if epochs_done < cfg.epochs {
        let mut opt = Adam::new(vars("")?, cfg.lr)?;
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
        let pretraining = Pretraining {
            cfg,
            xs: &xs,
            jitter: jitter.as_ref(),
            ae: &ae,
            varmap: &varmap,
            ckpt: &ckpt,
            watch,
        };
        pretraining.run(opt, epochs_done, &mut history)?;
    }
    history.pretrain_seconds += started.elapsed().as_secs_f64();

    let started = Instant::now();
    let d = cfg.latent;
    let ft = Finetune {
        cfg,
        xs: &xs,
        jitter,
        watch,
    };
    let z = embed(&ae.encoder, &xs, 1024)?;
    let mut opt = Adam::new(vars("encoder.")?, cfg.finetune_lr)?;
    let at = match resumed {
        Some((
            CheckpointState {
                phase:
                    Phase::Dekm {
                        iterations_done,
                        centroids,
                        baseline,
                        converged,
                        held,
                    },
                adam_steps,
                ..
            },
            moments,
        )) => {
            opt.restore(&moments, adam_steps)?;
            let p = Points::new(&z, d)?;
            let km = match &held {
                Some(h) => KMeans::from_labels(&p, cfg.k, h.labels.clone())?,
                None => start::kmeans_config(cfg, 0, KMeansInit::Precomputed(centroids)).fit(&p)?,
            };
            Position {
                km,
                z,
                done: iterations_done,
                held: held.is_some(),
                // Under a tighter tolerance than the checkpoint's, the run goes on.
                converged: converged
                    && history
                        .iterations
                        .last()
                        .is_none_or(|it| it.changed < cfg.tol),
                baseline,
            }
        }
        _ => {
            let begun = start::begin(begin, (ds, &ae.encoder, &xs, &z), cfg, &mut history, watch)?;
            Position {
                km: begun.km,
                z,
                done: 0,
                held: begun.held,
                converged: false,
                baseline: begun.baseline,
            }
        }
    };
    let baseline = at.baseline;
    let (km, z, rot) = match cfg.method {
        Method::Dekm => {
            let stage = DekmStage {
                ft: &ft,
                ds,
                ae: &ae,
                varmap: &varmap,
                ckpt: &ckpt,
            };
            stage.run(opt, at, &mut history)?
        }
        Method::Dec | Method::Idec => {
            let prefix = if cfg.method == Method::Idec {
                ""
            } else {
                "encoder."
            };
            let (km, z) = dec_stage(DecRun {
                ft: &ft,
                ae: &ae,
                vars: vars(prefix)?,
                labels: ds.labels.as_deref(),
                km: at.km,
                history: &mut history,
            })?;
            let rot = rotation(within_scatter(&z, d, &km.labels, &km.centroids));
            (km, z, rot)
        }
        Method::AeKmeans => {
            let rot = rotation(within_scatter(&at.z, d, &at.km.labels, &at.km.centroids));
            (at.km, at.z, rot)
        }
    };
    history.stage_seconds += started.elapsed().as_secs_f64();
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

/// The variables whose names start with `prefix`, sorted by name (so the optimizer's order,
/// and with it every result, does not depend on the map's hashing).
fn named_vars(varmap: &VarMap, prefix: &str) -> Result<Vec<(String, Var)>, TrainError> {
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
}

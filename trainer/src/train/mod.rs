//! A training run: pretraining ([`pretrain`](self)), the start of the clustering stage
//! ([`start`](self)), then DEKM, DEC or IDEC, checkpointed after every epoch and iteration;
//! or DeepCluster, which trains the encoder on k-means pseudo-labels instead.
//!
//! Where each part lives: the settings in `config`, checkpoints in `checkpoint`, progress and
//! curves in `observe` ([`Observer`], [`Progress`], [`History`]), the start in `start`,
//! pretraining in `pretrain`, what the fine-tuning stages share in `finetune`, the DEKM stage
//! in `dekm`, DEC/IDEC in `dec` and DeepCluster in `deepcluster`. [`train`] is the sequence
//! of those stages.

mod checkpoint;
mod clustergan;
mod config;
mod dec;
mod deepcluster;
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
pub use start::{
    INPUT_STARTS, InputMixture, LATENT_STARTS, MANIFOLD_AXES, MANIFOLD_STARTS, explain,
};

use crate::augment::Jitter;
use crate::choice::Choice;
use crate::data::{Dataset, SampleShape};
use crate::device::{DeviceChoice, DeviceError};
use crate::kmeans::{KMeans, KMeansInit};
use crate::model::{Autoencoder, ConvBackend, Encoder, ImageEncoder, embed};
use crate::optim::Adam;
use crate::rotation::{Rotation, rotation, within_scatter};
use checkpoint::{CheckpointState, Checkpointer, Phase, RunKey};
use dec::{DecRun, dec_stage};
use deepcluster::DeepCluster;
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
    /// The device asked for cannot be used.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The GPU ran out of memory.
    #[error(
        "{device} ran out of memory with minibatches of {batch_size}: lower --batch-size \
         (e.g. to {}) or train on the CPU (--device cpu); the driver said: {source}",
        (batch_size / 2).max(1)
    )]
    OutOfMemory {
        /// The device.
        device: DeviceChoice,
        /// The minibatch size that did not fit.
        batch_size: usize,
        /// The driver's error.
        source: candle_core::Error,
    },
}

impl TrainError {
    /// A tensor error on `device` that is the GPU running out of memory, named as such.
    fn on_device(self, device: DeviceChoice, batch_size: usize) -> Self {
        match self {
            Self::Candle(e) if device != DeviceChoice::Cpu && out_of_memory(&e) => {
                Self::OutOfMemory {
                    device,
                    batch_size,
                    source: e,
                }
            }
            other => other,
        }
    }
}

/// Whether a candle error is a CUDA allocation failure (cudarc's `CUDA_ERROR_OUT_OF_MEMORY`, or
/// the "out of memory" of candle's own messages).
fn out_of_memory(e: &candle_core::Error) -> bool {
    let text = e.to_string();
    text.contains("CUDA_ERROR_OUT_OF_MEMORY") || text.to_lowercase().contains("out of memory")
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
    /// The settings as the run used them: the start and the device `auto` stood for, and the
    /// convolution kernels the device runs.
    pub config: TrainConfig,
    /// ClusterGAN's generator, described for `generator.json` (its weights are the
    /// `generator.*` variables of `varmap`); `None` for the other methods.
    pub generator: Option<crate::gan::GeneratorInfo>,
}

impl Trained {
    /// Latent vectors `[n, d]` of `ds`'s samples, normalised as the training data were, under
    /// the trained encoder on the device it was trained on.
    pub fn embed(&self, ds: &Dataset) -> Result<Vec<f32>, TrainError> {
        let dev = self
            .varmap
            .all_vars()
            .first()
            .map_or(Device::Cpu, |v| v.device().clone());
        let flat = ds
            .normalized(&self.normalizer)
            .map_err(|(i, e)| TrainError::Config(format!("sample {i}: {e}")))?;
        let xs = Tensor::from_vec(flat, (ds.len(), self.spec.input_len()), &dev)?;
        Ok(embed(&self.encoder, &xs, 1024)?)
    }
}

/// Trains on `ds`: pretraining, then the clustering stage, checkpointing after every epoch and
/// iteration, on the device `cfg.device` names.
pub fn train(ds: &Dataset, cfg: &TrainConfig, opts: &RunOptions) -> Result<Trained, TrainError> {
    cfg.validate(ds.len())?;
    let (dev, device) = cfg.device.open()?;
    let conv = cfg.conv.on(&dev);
    tracing::info!(device = %device, chosen = %cfg.device, conv = conv.name(), "computing on");
    let used = TrainConfig {
        start: cfg.start_for(ds.len(), &ds.shape),
        device,
        conv,
        ..cfg.clone()
    };
    run(ds, &used, cfg, opts, &dev).map_err(|e| e.on_device(device, cfg.batch_size))
}

/// [`train`] on the opened device `dev`, with `cfg` as it is used (`asked`: as it was given).
fn run(
    ds: &Dataset,
    cfg: &TrainConfig,
    asked: &TrainConfig,
    opts: &RunOptions,
    dev: &Device,
) -> Result<Trained, TrainError> {
    let n = ds.len();
    let begin = cfg.start;
    tracing::info!(start = ?begin, chosen = ?asked.start, samples = n, "clustering stage start");
    if cfg.image_encoder != ImageEncoder::default() && !matches!(ds.shape, SampleShape::Image(_)) {
        return Err(TrainError::Config(format!(
            "image encoder {} applies to images; {} holds {}",
            cfg.image_encoder.name(),
            ds.name,
            ds.shape.kind()
        )));
    }
    let encoders = (cfg.image_encoder, cfg.series_encoder, cfg.time_pooling);
    let spec = match cfg.method {
        // ClusterGAN's encoder reads back the noise and the cluster code.
        Method::ClusterGan => ds
            .encoder_spec(cfg.latent + cfg.k, encoders)
            .with_softmax_tail(cfg.k),
        _ => ds.encoder_spec(cfg.latent, encoders),
    };
    spec.validate()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let normalizer = ds.normalizer_for(&spec);
    let flat = ds
        .normalized(&normalizer)
        .map_err(|(i, e)| TrainError::Config(format!("input sample {i}: {e}")))?;
    let xs = Tensor::from_vec(flat, (n, spec.input_len()), dev)?;
    let jitter = Jitter::new(&ds.shape, cfg.augment);

    let mut varmap = VarMap::new();
    let ckpt = Checkpointer {
        dir: opts.checkpoint.as_deref(),
        run: run_key(ds, asked),
    };
    if cfg.method == Method::ClusterGan {
        let run = clustergan::Setup {
            ds,
            cfg,
            spec,
            normalizer,
            xs: &xs,
            ckpt: &ckpt,
            watch: Watch(opts.observer.as_deref()),
        };
        return run.train(varmap, opts.resume);
    }
    let ae = Autoencoder::init(&spec, &varmap, cfg.seed, cfg.conv, cfg.init, dev)?;
    let resumed = if opts.resume {
        ckpt.load(&mut varmap, dev)?
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
        ))
        | Some((
            CheckpointState {
                phase: Phase::DeepCluster { epochs_done, .. },
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
    let (km, z, rot, baseline) = if cfg.method == Method::DeepCluster {
        let mut opt = Adam::new(vars("encoder.")?, cfg.lr)?;
        let mut previous = None;
        if let Some((state, moments)) = resumed {
            opt.restore(&moments, state.adam_steps)?;
            if let Phase::DeepCluster { pseudo_labels, .. } = state.phase {
                previous = Some(pseudo_labels);
            }
        }
        let started = Instant::now();
        let run = DeepCluster {
            cfg,
            xs: &xs,
            jitter: jitter.as_ref(),
            encoder: &ae.encoder,
            varmap: &varmap,
            ckpt: &ckpt,
            watch,
            labels: ds.labels.as_deref(),
        };
        let (km, z) = run.run(opt, (epochs_done, previous), &mut history)?;
        history.stage_seconds += started.elapsed().as_secs_f64();
        let rot = rotation(within_scatter(&z, cfg.latent, &km.labels, &km.centroids));
        // The untrained network's clustering, the first epoch's pseudo-labels.
        let baseline = history.iterations.first().and_then(|it| it.metrics);
        (km, z, rot, baseline)
    } else {
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
                    None => {
                        start::kmeans_config(cfg, 0, KMeansInit::Precomputed(centroids)).fit(&p)?
                    }
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
                let begun =
                    start::begin(begin, (ds, &ae.encoder, &xs, &z), cfg, &mut history, watch)?;
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
            Method::DeepCluster | Method::ClusterGan => {
                unreachable!("DeepCluster and ClusterGAN returned before pretraining")
            }
        };
        history.stage_seconds += started.elapsed().as_secs_f64();
        (km, z, rot, baseline)
    };
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
        config: cfg.clone(),
        generator: None,
    })
}

/// What makes a checkpoint of `ds` with the settings `asked` resumable.
fn run_key(ds: &Dataset, asked: &TrainConfig) -> RunKey {
    RunKey {
        dataset: ds.name.clone(),
        samples: ds.len(),
        // A run may be resumed with more epochs or iterations than it started with.
        // The stage after pretraining and its start may change too: DEC, IDEC and DEKM
        // runs, from k-means or from the manifold, can start from one pretraining
        // checkpoint.
        // The device (and with it the kernels) may change too: a CPU checkpoint resumes on a
        // GPU and back, at the price of bit-for-bit equality with an uninterrupted run.
        config: TrainConfig {
            epochs: 0,
            max_iter: 0,
            // DeepCluster and ClusterGAN train no autoencoder: their checkpoints are their own.
            method: match asked.method {
                m @ (Method::DeepCluster | Method::ClusterGan) => m,
                _ => Method::Dekm,
            },
            start: Start::Kmeans,
            device: DeviceChoice::Auto,
            conv: ConvBackend::Fast,
            ..asked.clone()
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_out_of_memory_names_the_batch_size_to_lower() {
        let oom = || {
            TrainError::Candle(candle_core::Error::Msg(
                "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
            ))
        };
        let err = oom().on_device(DeviceChoice::Cuda(0), 256);
        let text = err.to_string();
        assert!(
            matches!(
                err,
                TrainError::OutOfMemory {
                    batch_size: 256,
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains("cuda:0 ran out of memory with minibatches of 256"),
            "{text}"
        );
        assert!(text.contains("lower --batch-size (e.g. to 128)"), "{text}");
        // On the CPU, or for another error, the error stays what it was.
        assert!(matches!(
            oom().on_device(DeviceChoice::Cpu, 256),
            TrainError::Candle(_)
        ));
        let other = TrainError::Candle(candle_core::Error::Msg("shape mismatch".into()));
        assert!(matches!(
            other.on_device(DeviceChoice::Cuda(0), 256),
            TrainError::Candle(_)
        ));
    }
}

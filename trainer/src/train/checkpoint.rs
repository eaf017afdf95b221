//! Checkpoints: `OUT/checkpoint/` holds the weights, the optimizer's moments and `state.json`
//! (the run's key, its phase and its curves), rewritten after every epoch and iteration so an
//! interrupted run resumes where it stopped and ends as an uninterrupted one would.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use dekm_edge::fs::write_atomic;
use dekm_shared::TrainingMetrics;
use serde::{Deserialize, Serialize};

use super::{History, TrainConfig, TrainError};
use crate::optim::Adam;

/// What makes two runs the same computation: the data set, its size and the settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct RunKey {
    pub(super) dataset: String,
    pub(super) samples: usize,
    pub(super) config: TrainConfig,
}

impl RunKey {
    /// True when a checkpoint of run `self` may continue as run `other`: the same computation so
    /// far. The stopping tolerance may change (a converged run can be resumed with a tighter
    /// one); epochs, iterations and stage are already left out of the key when it is made.
    pub(super) fn resumable_as(&self, other: &RunKey) -> bool {
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

/// Where a checkpointed run stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Phase {
    /// In pretraining, after `epochs_done` epochs.
    Pretrain { epochs_done: usize },
    /// In the DEKM stage (the only clustering stage that checkpoints its iterations; DEC and
    /// IDEC resume from a pretraining checkpoint).
    Dekm {
        /// Iterations finished.
        iterations_done: usize,
        /// Centres after the last one.
        centroids: Vec<f32>,
        /// AE + k-means' metrics, when labels exist.
        baseline: Option<TrainingMetrics>,
        /// Whether the run had converged.
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
/// partition's basin, farther from the held one than Lloyd's moves. Released at once, or as
/// soon as the disagreement merely stopped falling fast, k-means' Voronoi cells undid much of
/// the start (docs/RESULTS.md has the measurements).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Held {
    pub(super) labels: Vec<u32>,
}

/// `state.json`: the run, where it stands, and its curves so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CheckpointState {
    pub(super) run: RunKey,
    pub(super) phase: Phase,
    /// Updates applied by the optimizer of the current phase.
    pub(super) adam_steps: usize,
    pub(super) history: History,
}

/// A checkpoint read back: its state and the optimizer's moments.
pub(super) type Resumed = (CheckpointState, HashMap<String, Tensor>);

const WEIGHTS: &str = "weights.safetensors";
const STATE: &str = "state.json";
const OPTIMIZER: &str = "optimizer.safetensors";

/// Saves and loads the checkpoint of one run in `dir` (none: checkpoints are off).
pub(super) struct Checkpointer<'a> {
    pub(super) dir: Option<&'a Path>,
    pub(super) run: RunKey,
}

impl Checkpointer<'_> {
    pub(super) fn err(&self, reason: impl std::fmt::Display) -> TrainError {
        TrainError::Checkpoint {
            path: self.dir.map(Path::to_path_buf).unwrap_or_default(),
            reason: reason.to_string(),
        }
    }

    /// Writes weights then state, each to a temporary file renamed into place, so a crash leaves
    /// the previous complete checkpoint (state is renamed last and names the phase).
    pub(super) fn save(
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
        write_atomic(&dir.join(STATE), &json).map_err(|e| self.err(e))
    }

    /// Loads weights into `varmap`; returns the state and the optimizer moments.
    pub(super) fn load(
        &self,
        varmap: &mut VarMap,
        dev: &Device,
    ) -> Result<Option<Resumed>, TrainError> {
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
        let moments = candle_core::safetensors::load(dir.join(OPTIMIZER), dev)?;
        Ok(Some((state, moments)))
    }
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
}

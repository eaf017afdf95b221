//! Checkpoints: `OUT/checkpoint/` holds the weights, the optimizer's moments and `state.json`
//! (the run's key, its phase and its curves), rewritten after every epoch and iteration so an
//! interrupted run resumes where it stopped and ends as an uninterrupted one would.
//!
//! The three files are one unit: each checkpoint is written whole into a new directory
//! `gen-N` (files and directory synced), and the small file `CURRENT`, replaced atomically, names
//! the complete one; older generations are removed after. A crash at any point leaves `CURRENT`
//! naming a complete checkpoint, the new one or the one before. Checkpoints of earlier
//! versions (the three files directly in the directory) are still read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use dekm_edge::fs::write_atomic;
use dekm_shared::TrainingMetrics;
use serde::{Deserialize, Serialize};

use super::{History, TrainConfig, TrainError};
use crate::optim::Moments;

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
    /// In DeepCluster, after `epochs_done` epochs, with the pseudo-labels the last one trained
    /// on (the next epoch reports how many of them changed).
    DeepCluster {
        epochs_done: usize,
        pseudo_labels: Vec<u32>,
    },
    /// In ClusterGAN, after `epochs_done` epochs: the clusters the encoder's code gave every
    /// sample after the last one (the next epoch reports how many changed), and k-means on the
    /// untrained encoder's codes (the baseline), when labels exist.
    ClusterGan {
        epochs_done: usize,
        codes: Vec<u32>,
        baseline: Option<TrainingMetrics>,
    },
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
/// Names the generation directory holding the complete checkpoint.
const CURRENT: &str = "CURRENT";

/// Saves and loads the checkpoint of one run in `dir` (none: checkpoints are off).
pub(super) struct Checkpointer<'a> {
    pub(super) dir: Option<&'a Path>,
    pub(super) run: RunKey,
}

/// The steps of writing a checkpoint, in order; a crash after any of them leaves a complete
/// checkpoint named by `CURRENT`.
const SAVE_STEPS: usize = 6;

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// The generation number of a directory named `gen-N`.
fn generation(name: &str) -> Option<u64> {
    name.strip_prefix("gen-")?.parse().ok()
}

impl Checkpointer<'_> {
    pub(super) fn err(&self, reason: impl std::fmt::Display) -> TrainError {
        TrainError::Checkpoint {
            path: self.dir.map(Path::to_path_buf).unwrap_or_default(),
            reason: reason.to_string(),
        }
    }

    /// The directory of the complete checkpoint: the one `CURRENT` names, else (a checkpoint
    /// written before generations) `dir` itself when it holds a state; `None` without one.
    fn current(&self, dir: &Path) -> Result<Option<PathBuf>, TrainError> {
        match std::fs::read_to_string(dir.join(CURRENT)) {
            Ok(name) => {
                let name = name.trim();
                if generation(name).is_none() {
                    return Err(self.err(format!("{CURRENT} names '{name}', not a generation")));
                }
                Ok(Some(dir.join(name)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(dir.join(STATE).exists().then(|| dir.to_path_buf()))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// Writes the checkpoint as a new generation and makes it current (see the module doc).
    pub(super) fn save(
        &self,
        varmap: &VarMap,
        opt: &impl Moments,
        phase: Phase,
        history: &History,
    ) -> Result<(), TrainError> {
        self.save_steps(varmap, opt, phase, history, SAVE_STEPS)
    }

    /// [`Self::save`] stopped after its first `steps` steps, as a crash would stop it.
    fn save_steps(
        &self,
        varmap: &VarMap,
        opt: &impl Moments,
        phase: Phase,
        history: &History,
        steps: usize,
    ) -> Result<(), TrainError> {
        let Some(dir) = self.dir else { return Ok(()) };
        std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
        let next = match self.current(dir)? {
            Some(p) => p
                .file_name()
                .and_then(|n| generation(&n.to_string_lossy()))
                .map_or(1, |g| g + 1),
            None => 1,
        };
        let name = format!("gen-{next}");
        let (tmp, done) = (dir.join(format!("{name}.tmp")), dir.join(&name));
        let io = |e: std::io::Error| self.err(e);
        for step in 0..steps.min(SAVE_STEPS) {
            match step {
                0 => {
                    // A directory left by a crash before this generation was made current.
                    for stale in [&tmp, &done] {
                        if stale.exists() {
                            std::fs::remove_dir_all(stale).map_err(io)?;
                        }
                    }
                    std::fs::create_dir_all(&tmp).map_err(io)?;
                    varmap.save(tmp.join(WEIGHTS))?;
                    sync_file(&tmp.join(WEIGHTS)).map_err(io)?;
                }
                1 => {
                    candle_core::safetensors::save(&opt.moments(), tmp.join(OPTIMIZER))?;
                    sync_file(&tmp.join(OPTIMIZER)).map_err(io)?;
                }
                2 => {
                    let state = CheckpointState {
                        run: self.run.clone(),
                        phase: phase.clone(),
                        adam_steps: opt.updates(),
                        history: history.clone(),
                    };
                    let json = serde_json::to_vec_pretty(&state).map_err(|e| self.err(e))?;
                    std::fs::write(tmp.join(STATE), json).map_err(io)?;
                    sync_file(&tmp.join(STATE)).map_err(io)?;
                    sync_dir(&tmp).map_err(io)?;
                }
                3 => {
                    std::fs::rename(&tmp, &done).map_err(io)?;
                    sync_dir(dir).map_err(io)?;
                }
                // The commit: from here on a resume reads the new generation.
                4 => write_atomic(&dir.join(CURRENT), name.as_bytes()).map_err(io)?,
                _ => self.remove_old(dir, next).map_err(io)?,
            }
        }
        Ok(())
    }

    /// Removes generations before `current` and the files of a pre-generation checkpoint.
    fn remove_old(&self, dir: &Path, current: u64) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if generation(&name).is_some_and(|g| g < current) {
                std::fs::remove_dir_all(&path)?;
            } else if [WEIGHTS, OPTIMIZER, STATE].contains(&name.as_ref()) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Loads weights into `varmap`; returns the state and the optimizer moments.
    pub(super) fn load(
        &self,
        varmap: &mut VarMap,
        dev: &Device,
    ) -> Result<Option<Resumed>, TrainError> {
        let Some(dir) = self.dir else { return Ok(None) };
        let Some(current) = self.current(dir)? else {
            return Ok(None);
        };
        let path = current.join(STATE);
        let bytes =
            std::fs::read(&path).map_err(|e| self.err(format!("{}: {e}", path.display())))?;
        let state: CheckpointState =
            serde_json::from_slice(&bytes).map_err(|e| self.err(format!("{STATE}: {e}")))?;
        if !state.run.resumable_as(&self.run) {
            return Err(self.err(
                "it belongs to a different run (data set, size or settings differ); remove it or drop --resume",
            ));
        }
        varmap.load(current.join(WEIGHTS))?;
        let moments = candle_core::safetensors::load(current.join(OPTIMIZER), dev)?;
        Ok(Some((state, moments)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Adam;
    use candle_core::DType;

    fn key() -> RunKey {
        RunKey {
            dataset: "synthetic".into(),
            samples: 10,
            config: TrainConfig::default(),
        }
    }

    /// A model of one weight vector filled with `v`, and its optimizer.
    fn model(v: f64) -> (VarMap, Adam) {
        let varmap = VarMap::new();
        varmap
            .get(3, "w", candle_nn::Init::Const(v), DType::F32, &Device::Cpu)
            .unwrap();
        let var = varmap.data().lock().unwrap()["w"].clone();
        let opt = Adam::new(vec![("w".into(), var)], 0.1).unwrap();
        (varmap, opt)
    }

    fn epochs(e: usize) -> Phase {
        Phase::Pretrain { epochs_done: e }
    }

    /// Resumes from `ck`: the epochs its state records and the weight it restored.
    fn resume(ck: &Checkpointer) -> (usize, f32) {
        let (mut varmap, _) = model(0.0);
        let (state, moments) = ck.load(&mut varmap, &Device::Cpu).unwrap().unwrap();
        assert!(!moments.is_empty(), "optimizer moments restored");
        let Phase::Pretrain { epochs_done } = state.phase else {
            panic!("a pretraining checkpoint")
        };
        let w = varmap.data().lock().unwrap()["w"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        (epochs_done, w[0])
    }

    /// Saves a model of weight `v` at epoch `e`, stopping after `steps` steps of the writer.
    fn save(ck: &Checkpointer, v: f64, e: usize, steps: usize) {
        let (varmap, opt) = model(v);
        ck.save_steps(&varmap, &opt, epochs(e), &History::default(), steps)
            .unwrap();
    }

    fn in_dir(path: &Path) -> Checkpointer<'_> {
        Checkpointer {
            dir: Some(path),
            run: key(),
        }
    }

    #[test]
    fn a_crash_at_any_step_leaves_a_complete_checkpoint() {
        for steps in 0..=SAVE_STEPS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("checkpoint");
            let ck = in_dir(&path);
            save(&ck, 1.0, 1, SAVE_STEPS);
            // The writer of epoch 2 stops after `steps` steps, as a kill would stop it.
            save(&ck, 2.0, 2, steps);
            // Weights and state always come from the same checkpoint: the old one until the
            // commit (step 5), the new one after.
            let expected = if steps >= 5 { (2, 2.0) } else { (1, 1.0) };
            assert_eq!(resume(&ck), expected, "crash after {steps} steps");
            // The next save succeeds over whatever the crash left, and leaves one generation.
            save(&ck, 3.0, 3, SAVE_STEPS);
            assert_eq!(resume(&ck), (3, 3.0), "after a crash at step {steps}");
            let mut left: Vec<String> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(left.len(), 2, "{left:?}");
            assert_eq!(left[0], CURRENT);
            assert!(
                left[1].starts_with("gen-") && !left[1].ends_with(".tmp"),
                "{left:?}"
            );
        }
    }

    #[test]
    fn a_checkpoint_of_the_earlier_layout_resumes_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let ck = in_dir(&path);
        // The files directly in the directory, as versions before generations wrote them.
        save(&ck, 1.0, 4, SAVE_STEPS);
        let gen1 = path.join("gen-1");
        for f in [WEIGHTS, OPTIMIZER, STATE] {
            std::fs::rename(gen1.join(f), path.join(f)).unwrap();
        }
        std::fs::remove_dir(&gen1).unwrap();
        std::fs::remove_file(path.join(CURRENT)).unwrap();
        assert_eq!(resume(&ck), (4, 1.0));
        save(&ck, 2.0, 5, SAVE_STEPS);
        assert_eq!(resume(&ck), (5, 2.0));
        assert!(!path.join(STATE).exists(), "the old files are removed");
        // A CURRENT that names no generation is an error, not a silent fresh start.
        std::fs::write(path.join(CURRENT), "elsewhere").unwrap();
        let (mut varmap, _) = model(0.0);
        let err = ck.load(&mut varmap, &Device::Cpu).err().unwrap();
        assert!(err.to_string().contains("not a generation"), "{err}");
    }

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

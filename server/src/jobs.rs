//! Training jobs: a queue with a fixed number of training slots, progress fan-out, cancellation,
//! and a record of every job under `jobs/<id>.json` in the store.
//!
//! A job runs [`train_and_export`] on a blocking thread with an [`Observer`] that turns every
//! epoch and iteration into a [`Step`], stores it in the job's record and sends it to whoever
//! follows the job. The export goes to `work/<id>/` and is then added to the [`Registry`] (and
//! activated when asked), so a model is in the registry completely or not at all. A job that was
//! queued or running when the server stopped is recorded as failed when the store is reopened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use dekm_edge::file::read_parts;
use dekm_edge::fs::write_atomic;
use dekm_shared::TrainingMetrics;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::registry::Registry;
use dekm_trainer::data::{self, DataSource, Dataset, LoadOptions};
use dekm_trainer::pipeline::{PipelineError, train_and_export};
use dekm_trainer::train::{Observer, Progress, RunOptions, TrainConfig, TrainError};

const JOBS: &str = "jobs";
const WORK: &str = "work";

/// Where a job's samples come from.
#[derive(Debug, Clone)]
pub enum JobData {
    /// A data set the server loads itself.
    Load {
        /// Source.
        source: DataSource,
        /// Loading options.
        options: LoadOptions,
    },
    /// Samples sent with the request.
    Inline(Dataset),
}

impl JobData {
    fn name(&self) -> String {
        match self {
            Self::Load { source, .. } => source.to_string(),
            Self::Inline(ds) => ds.name.clone(),
        }
    }
}

/// A job to run.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Samples.
    pub data: JobData,
    /// Settings.
    pub config: TrainConfig,
    /// Activate the model when the job succeeds.
    pub activate: bool,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting for a slot.
    Queued,
    /// Training.
    Running,
    /// The model is in the registry.
    Succeeded,
    /// Stopped by an error.
    Failed,
    /// Stopped by CancelJob.
    Cancelled,
}

impl JobState {
    /// True once the job can change no more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Stage of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Reading the data.
    Loading,
    /// Autoencoder pretraining.
    Pretraining,
    /// k-means on the pretrained embedding.
    Clustering,
    /// DEKM iterations.
    Dekm,
    /// Writing and registering the model.
    Exporting,
    /// Finished.
    Done,
}

/// One progress message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Job state at this step.
    pub state: JobState,
    /// Stage.
    pub phase: Phase,
    /// Epoch or iteration (1-based), 0 where it does not apply.
    pub step: usize,
    /// Epochs or maximum iterations.
    pub steps: usize,
    /// Mean loss of the step.
    pub loss: f32,
    /// Changed-assignment fraction (DEKM iterations).
    pub changed: f64,
    /// Metrics, when labels exist.
    pub metrics: Option<TrainingMetrics>,
    /// The model, on the final step of a succeeded job.
    pub model_id: Option<String>,
    /// Why the job failed or was cancelled.
    pub error: Option<String>,
}

impl Step {
    fn at(state: JobState, phase: Phase) -> Self {
        Self {
            state,
            phase,
            step: 0,
            steps: 0,
            loss: 0.0,
            changed: 0.0,
            metrics: None,
            model_id: None,
            error: None,
        }
    }
}

/// What the server remembers of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Job id.
    pub id: String,
    /// Current state.
    pub state: JobState,
    /// Data set name.
    pub dataset: String,
    /// Submission time.
    pub created_unix: u64,
    /// When it reached a terminal state.
    pub finished_unix: Option<u64>,
    /// Latest progress.
    pub last: Step,
    /// The trained model.
    pub model_id: Option<String>,
    /// Its metrics, when labels exist.
    pub metrics: Option<TrainingMetrics>,
    /// Failure or cancellation reason.
    pub error: Option<String>,
}

/// Why a job operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// No job has this id.
    #[error("unknown job {0:?}")]
    UnknownJob(String),
    /// The job already finished.
    #[error("job {id} already {state:?}")]
    Finished {
        /// Job id.
        id: String,
        /// Its final state.
        state: JobState,
    },
    /// A job file cannot be read or written.
    #[error("{path}: {reason}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

struct Live {
    record: JobRecord,
    cancel: Arc<AtomicBool>,
    done: watch::Sender<bool>,
    followers: Vec<mpsc::UnboundedSender<Step>>,
}

/// All jobs of one server.
pub struct Jobs {
    dir: PathBuf,
    work: PathBuf,
    registry: Arc<Registry>,
    slots: Arc<Semaphore>,
    live: Mutex<HashMap<String, Live>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").field("dir", &self.dir).finish()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn storage(path: &Path) -> impl FnOnce(String) -> JobsError + '_ {
    move |reason| JobsError::Storage {
        path: path.to_path_buf(),
        reason,
    }
}

impl Jobs {
    /// Opens the job records of store `dir`, marking jobs that were interrupted as failed.
    /// At most `slots` jobs train at once.
    pub fn open(dir: &Path, registry: Arc<Registry>, slots: usize) -> Result<Self, JobsError> {
        let jobs_dir = dir.join(JOBS);
        std::fs::create_dir_all(&jobs_dir).map_err(|e| storage(&jobs_dir)(e.to_string()))?;
        let mut live = HashMap::new();
        let entries =
            std::fs::read_dir(&jobs_dir).map_err(|e| storage(&jobs_dir)(e.to_string()))?;
        for entry in entries {
            let path = entry.map_err(|e| storage(&jobs_dir)(e.to_string()))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| storage(&path)(e.to_string()))?;
            let mut record: JobRecord =
                serde_json::from_slice(&bytes).map_err(|e| storage(&path)(e.to_string()))?;
            if !record.state.is_terminal() {
                let reason = format!(
                    "interrupted: the server stopped while the job was {:?}",
                    record.state
                );
                record.state = JobState::Failed;
                record.finished_unix = Some(now());
                record.last.state = JobState::Failed;
                record.last.error = Some(reason.clone());
                record.error = Some(reason);
                write_record(&jobs_dir, &record)?;
            }
            live.insert(
                record.id.clone(),
                Live {
                    record,
                    cancel: Arc::new(AtomicBool::new(true)),
                    done: watch::channel(true).0,
                    followers: Vec::new(),
                },
            );
        }
        Ok(Self {
            dir: jobs_dir,
            work: dir.join(WORK),
            registry,
            slots: Arc::new(Semaphore::new(slots.max(1))),
            live: Mutex::new(live),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job and returns its record and a receiver of its steps (ending with the
    /// terminal one). The job runs to the end whether or not anyone receives.
    pub fn submit(
        self: &Arc<Self>,
        spec: JobSpec,
    ) -> Result<(JobRecord, mpsc::UnboundedReceiver<Step>), JobsError> {
        let id = format!("{:016x}", rand::random::<u64>());
        let record = JobRecord {
            id: id.clone(),
            state: JobState::Queued,
            dataset: spec.data.name(),
            created_unix: now(),
            finished_unix: None,
            last: Step::at(JobState::Queued, Phase::Loading),
            model_id: None,
            metrics: None,
            error: None,
        };
        write_record(&self.dir, &record)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(record.last.clone());
        let cancel = Arc::new(AtomicBool::new(false));
        self.lock().insert(
            id.clone(),
            Live {
                record: record.clone(),
                cancel: cancel.clone(),
                done: watch::channel(false).0,
                followers: vec![tx],
            },
        );
        let jobs = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = jobs.slots.clone().acquire_owned().await else {
                return;
            };
            if cancel.load(Ordering::SeqCst) {
                return; // cancelled while queued; CancelJob already finished the record
            }
            jobs.update(&id, Step::at(JobState::Running, Phase::Loading));
            let worker = jobs.clone();
            let job = id.clone();
            let result = tokio::task::spawn_blocking(move || worker.run(&job, spec, cancel))
                .await
                .unwrap_or_else(|e| Err(Failure::Failed(format!("training thread panicked: {e}"))));
            jobs.finish(&id, result);
        });
        Ok((record, rx))
    }

    /// The training thread's part.
    fn run(
        self: &Arc<Self>,
        id: &str,
        spec: JobSpec,
        cancel: Arc<AtomicBool>,
    ) -> Result<(String, Option<TrainingMetrics>), Failure> {
        let ds = match spec.data {
            JobData::Load { source, options } => {
                data::load(&source, &options).map_err(|e| Failure::Failed(e.to_string()))?
            }
            JobData::Inline(ds) => ds,
        };
        spec.config
            .validate(ds.len())
            .map_err(|e| Failure::Failed(e.to_string()))?;
        let observer = JobObserver {
            jobs: self.clone(),
            id: id.to_string(),
            cancel,
        };
        let out = self.work.join(id);
        let opts = RunOptions {
            checkpoint: None,
            resume: false,
            observer: Some(Arc::new(observer)),
        };
        let trained = train_and_export(&ds, &spec.config, &opts, &out);
        let result = trained
            .map_err(|e| match e {
                PipelineError::Train(TrainError::Cancelled) => Failure::Cancelled,
                e => Failure::Failed(e.to_string()),
            })
            .and_then(|outcome| {
                self.update(id, Step::at(JobState::Running, Phase::Exporting));
                let parts = read_parts(&out).map_err(|e| Failure::Failed(e.to_string()))?;
                let entry = self
                    .registry
                    .add(&parts)
                    .map_err(|e| Failure::Failed(e.to_string()))?;
                if spec.activate {
                    self.registry
                        .activate(&entry.id)
                        .map_err(|e| Failure::Failed(e.to_string()))?;
                }
                Ok((entry.id.clone(), outcome.meta.metrics))
            });
        if let Err(e) = std::fs::remove_dir_all(&out)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(job = id, error = %e, "could not remove the job's work directory");
        }
        result
    }

    /// Stores `step` as the job's latest and sends it to its followers.
    fn update(&self, id: &str, step: Step) {
        let mut live = self.lock();
        let Some(job) = live.get_mut(id) else {
            return;
        };
        if job.record.state.is_terminal() {
            return;
        }
        job.record.state = step.state;
        job.record.last = step.clone();
        job.followers.retain(|f| f.send(step.clone()).is_ok());
        if let Err(e) = write_record(&self.dir, &job.record) {
            tracing::error!(job = id, error = %e, "could not record job progress");
        }
    }

    fn finish(&self, id: &str, result: Result<(String, Option<TrainingMetrics>), Failure>) {
        let mut live = self.lock();
        let Some(job) = live.get_mut(id) else {
            return;
        };
        // A job cancelled while queued may still reach here from its task: first end wins.
        if job.record.state.is_terminal() {
            return;
        }
        let r = &mut job.record;
        let mut last = Step {
            phase: Phase::Done,
            ..r.last.clone()
        };
        match result {
            Ok((model, metrics)) => {
                r.state = JobState::Succeeded;
                r.model_id = Some(model.clone());
                r.metrics = metrics;
                last.model_id = Some(model);
                last.metrics = metrics;
            }
            Err(Failure::Cancelled) => {
                r.state = JobState::Cancelled;
                r.error = Some("cancelled".into());
            }
            Err(Failure::Failed(e)) => {
                r.state = JobState::Failed;
                r.error = Some(e);
            }
        }
        last.state = r.state;
        last.error = r.error.clone();
        r.last = last.clone();
        r.finished_unix = Some(now());
        for f in job.followers.drain(..) {
            let _ = f.send(last.clone());
        }
        if let Err(e) = write_record(&self.dir, r) {
            tracing::error!(job = id, error = %e, "could not record the job's end");
        }
        tracing::info!(job = id, state = ?r.state, model = ?r.model_id, error = ?r.error, "job finished");
        job.done.send_replace(true);
    }

    /// One job's record.
    pub fn get(&self, id: &str) -> Result<JobRecord, JobsError> {
        self.lock()
            .get(id)
            .map(|j| j.record.clone())
            .ok_or_else(|| JobsError::UnknownJob(id.into()))
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<JobRecord> {
        let mut all: Vec<JobRecord> = self.lock().values().map(|j| j.record.clone()).collect();
        all.sort_by(|a, b| b.created_unix.cmp(&a.created_unix).then(b.id.cmp(&a.id)));
        all
    }

    /// Number of jobs in each state.
    pub fn counts(&self) -> HashMap<JobState, usize> {
        let mut out = HashMap::new();
        for j in self.lock().values() {
            *out.entry(j.record.state).or_default() += 1;
        }
        out
    }

    /// Cancels a queued or running job and waits (up to `wait`) until it has stopped.
    pub async fn cancel(
        &self,
        id: &str,
        wait: std::time::Duration,
    ) -> Result<JobRecord, JobsError> {
        let mut done = {
            let live = self.lock();
            let job = live
                .get(id)
                .ok_or_else(|| JobsError::UnknownJob(id.into()))?;
            if job.record.state.is_terminal() {
                return Err(JobsError::Finished {
                    id: id.into(),
                    state: job.record.state,
                });
            }
            job.cancel.store(true, Ordering::SeqCst);
            let queued = job.record.state == JobState::Queued;
            let done = job.done.subscribe();
            drop(live);
            if queued {
                self.finish(id, Err(Failure::Cancelled));
            }
            done
        };
        let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
        self.get(id)
    }
}

enum Failure {
    Cancelled,
    Failed(String),
}

fn write_record(dir: &Path, record: &JobRecord) -> Result<(), JobsError> {
    let path = dir.join(format!("{}.json", record.id));
    let json = serde_json::to_vec_pretty(record).map_err(|e| storage(&path)(e.to_string()))?;
    write_atomic(&path, &json).map_err(|e| storage(&path)(e.to_string()))
}

struct JobObserver {
    jobs: Arc<Jobs>,
    id: String,
    cancel: Arc<AtomicBool>,
}

impl Observer for JobObserver {
    fn progress(&self, p: &Progress) {
        let run = JobState::Running;
        let step = match *p {
            // The stream carries epochs and iterations, not every minibatch.
            Progress::Batch { .. } | Progress::Stage { .. } => return,
            Progress::Pretrain {
                epoch,
                epochs,
                loss,
            } => Step {
                step: epoch,
                steps: epochs,
                loss,
                ..Step::at(run, Phase::Pretraining)
            },
            Progress::Clustered { metrics } => Step {
                metrics,
                ..Step::at(run, Phase::Clustering)
            },
            Progress::Iteration {
                iteration,
                max_iter,
                loss,
                changed,
                metrics,
                ..
            } => Step {
                step: iteration,
                steps: max_iter,
                loss,
                changed,
                metrics,
                ..Step::at(run, Phase::Dekm)
            },
        };
        self.jobs.update(&self.id, step);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

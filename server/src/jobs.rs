//! Training jobs: a queue with a fixed number of training slots, progress fan-out, cancellation,
//! and a record of every job in the [database](crate::db).
//!
//! A job runs [`train_and_export`] on a blocking thread with an [`Observer`] that turns every
//! epoch and iteration into a [`Step`], stores it in the job's record and sends it to whoever
//! follows the job. The export goes to `work/<id>/` and is then added to the [`Registry`] (and
//! activated when asked), so a model is in the registry completely or not at all.
//!
//! With several replicas on one database a job runs on the replica that accepted it (its
//! owner), and every replica answers GetJob and ListJobs from the database. The owner marks its
//! unfinished jobs alive every [`HEARTBEAT_INTERVAL`]; a CancelJob that reaches another replica
//! is recorded there and picked up at the owner's next heartbeat. A job whose owner has not
//! been heard of for [`STALE_AFTER`] (it was killed, or the machine went away) is recorded as
//! failed by whichever replica notices first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dekm_edge::file::read_parts;
use dekm_shared::TrainingMetrics;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::db::{self, Database, DbError, JobRow};
use crate::registry::Registry;
use dekm_trainer::data::{self, DataSource, Dataset, LoadOptions, TextOptions, Texts};
use dekm_trainer::pipeline::{PipelineError, train_and_export};
use dekm_trainer::train::{Observer, Progress, RunOptions, TrainConfig, TrainError};

const WORK: &str = "work";
/// How often a replica tells the database that its jobs are alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Silence after which a job's owner is taken for dead.
pub const STALE_AFTER: Duration = Duration::from_secs(15);

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
    /// Documents sent with the request, embedded when the job runs.
    Texts {
        /// The documents and their labels.
        read: Texts,
        /// The embedder and batch.
        options: TextOptions,
    },
}

impl JobData {
    fn name(&self) -> String {
        match self {
            Self::Load { source, .. } => source.to_string(),
            Self::Inline(ds) => ds.name.clone(),
            Self::Texts { .. } => INLINE_TEXTS.into(),
        }
    }

    /// The text options behind the data, if it is documents.
    fn text_mut(&mut self) -> Option<&mut TextOptions> {
        match self {
            Self::Load { options, .. } => options.text.as_mut(),
            Self::Texts { options, .. } => Some(options),
            Self::Inline(_) => None,
        }
    }
}

/// The data set name of documents sent with a Train request.
const INLINE_TEXTS: &str = "inline texts";
/// The least time between two recorded steps of a job's embedding (7,528 posts took about 235
/// batches, each a database write, before this).
const EMBED_PROGRESS_EVERY: Duration = Duration::from_secs(1);

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
    pub(crate) fn at(state: JobState, phase: Phase) -> Self {
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
    /// The database failed.
    #[error("job records: {0}")]
    Storage(#[from] DbError),
    /// The work directory cannot be made.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
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
    db: Database,
    /// This replica's name in the job rows it owns.
    owner: String,
    work: PathBuf,
    registry: Arc<Registry>,
    slots: Arc<Semaphore>,
    live: Mutex<HashMap<String, Live>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").field("owner", &self.owner).finish()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Jobs {
    /// Opens the job records in `db` (training work goes under store `dir`), marking jobs
    /// whose owner is silent as failed. At most `slots` jobs train at once.
    pub fn open(
        dir: &Path,
        db: Database,
        registry: Arc<Registry>,
        slots: usize,
    ) -> Result<Self, JobsError> {
        let jobs = Self {
            db,
            owner: format!("{:016x}", rand::random::<u64>()),
            work: dir.join(WORK),
            registry,
            slots: Arc::new(Semaphore::new(slots.max(1))),
            live: Mutex::new(HashMap::new()),
        };
        jobs.fail_orphans()?;
        Ok(jobs)
    }

    /// Records as failed every unfinished job of another owner not heard of for
    /// [`STALE_AFTER`]. Returns how many.
    fn fail_orphans(&self) -> Result<usize, JobsError> {
        let now = now();
        let mut orphans = Vec::new();
        for mut row in self.db.call(|b| b.jobs(db::Jobs::Unfinished))? {
            let silent = now.saturating_sub(row.heartbeat_unix) > STALE_AFTER.as_secs();
            if row.record.state.is_terminal() || row.owner == self.owner || !silent {
                continue;
            }
            let reason = format!(
                "interrupted: the server running it stopped while the job was {:?}",
                row.record.state
            );
            let r = &mut row.record;
            r.state = JobState::Failed;
            r.finished_unix = Some(now);
            r.last.state = JobState::Failed;
            r.last.error = Some(reason.clone());
            r.error = Some(reason);
            tracing::warn!(job = %r.id, owner = %row.owner, "job interrupted");
            orphans.push(row);
        }
        let n = orphans.len();
        if n > 0 {
            self.db.call(move |b| b.put_jobs(&orphans))?;
        }
        Ok(n)
    }

    /// The periodic part of running jobs beside other replicas: marks this replica's jobs
    /// alive, stops those a CancelJob elsewhere asked to stop, and fails orphans.
    pub fn tend(&self) -> Result<(), JobsError> {
        let owner = self.owner.clone();
        let cancelled = self.db.call(move |b| b.heartbeat(&owner, now()))?;
        for id in cancelled {
            self.cancel_here(&id);
        }
        self.fail_orphans()?;
        Ok(())
    }

    /// Asks a job of this replica to stop; true if it is one.
    fn cancel_here(&self, id: &str) -> bool {
        let live = self.lock();
        let Some(job) = live.get(id) else {
            return false;
        };
        if job.record.state.is_terminal() {
            return true;
        }
        job.cancel.store(true, Ordering::SeqCst);
        let queued = job.record.state == JobState::Queued;
        drop(live);
        if queued {
            self.finish(id, Err(Failure::Cancelled));
        }
        true
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
        self.write_record(&record)?;
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
        let mut data = spec.data;
        if let Some(text) = data.text_mut() {
            // Embedding is the loading phase's work: its progress is texts embedded. Every
            // update rewrites the job's record in the database, so the batches' updates are
            // passed on at most once per `EMBED_PROGRESS_EVERY`, and the last one always.
            let (jobs, job) = (self.clone(), id.to_string());
            let last = Mutex::new(None::<Instant>);
            text.progress = Some(Arc::new(move |done, total| {
                let mut at = last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if done < total && at.is_some_and(|t| t.elapsed() < EMBED_PROGRESS_EVERY) {
                    return;
                }
                *at = Some(Instant::now());
                jobs.update(
                    &job,
                    Step {
                        step: done,
                        steps: total,
                        ..Step::at(JobState::Running, Phase::Loading)
                    },
                );
            }));
        }
        let ds = match data {
            JobData::Load { source, options } => data::load(&source, &options),
            JobData::Inline(ds) => Ok(ds),
            JobData::Texts { read, options } => {
                data::embed_texts(INLINE_TEXTS.into(), read, &options)
            }
        }
        .map_err(|e| Failure::Failed(e.to_string()))?;
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
        if let Err(e) = self.write_record(&job.record) {
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
        if let Err(e) = self.write_record(r) {
            tracing::error!(job = id, error = %e, "could not record the job's end");
        }
        tracing::info!(job = id, state = ?r.state, model = ?r.model_id, error = ?r.error, "job finished");
        job.done.send_replace(true);
    }

    /// One job's record (of this replica or another).
    pub async fn get(&self, id: &str) -> Result<JobRecord, JobsError> {
        if let Some(j) = self.lock().get(id) {
            return Ok(j.record.clone());
        }
        let key = id.to_string();
        self.db
            .call_async(move |b| b.jobs(db::Jobs::One(&key)))
            .await?
            .pop()
            .map(|row| row.record)
            .ok_or_else(|| JobsError::UnknownJob(id.into()))
    }

    /// Every job of every replica, newest first.
    pub async fn list(&self) -> Result<Vec<JobRecord>, JobsError> {
        let mut all: Vec<JobRecord> = self
            .db
            .call_async(|b| b.jobs(db::Jobs::All))
            .await?
            .into_iter()
            .map(|row| row.record)
            .collect();
        all.sort_by(|a, b| b.created_unix.cmp(&a.created_unix).then(b.id.cmp(&a.id)));
        Ok(all)
    }

    /// Number of jobs in each state, over every replica.
    pub async fn counts(&self) -> Result<HashMap<JobState, usize>, JobsError> {
        let mut out = HashMap::new();
        for j in self.list().await? {
            *out.entry(j.state).or_default() += 1;
        }
        Ok(out)
    }

    /// Cancels a queued or running job and waits (up to `wait`) until it has stopped. A job of
    /// another replica is asked to stop through the database and stops at its owner's next
    /// heartbeat.
    pub async fn cancel(
        &self,
        id: &str,
        wait: std::time::Duration,
    ) -> Result<JobRecord, JobsError> {
        let record = self.get(id).await?;
        if record.state.is_terminal() {
            return Err(JobsError::Finished {
                id: id.into(),
                state: record.state,
            });
        }
        let local = self.lock().get(id).map(|j| j.done.subscribe());
        match local {
            Some(mut done) => {
                self.cancel_here(id);
                let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
            }
            None => {
                let key = id.to_string();
                self.db.call_async(move |b| b.request_cancel(&key)).await?;
                let deadline = tokio::time::Instant::now() + wait;
                while tokio::time::Instant::now() < deadline
                    && !self.get(id).await?.state.is_terminal()
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        self.get(id).await
    }

    fn write_record(&self, record: &JobRecord) -> Result<(), JobsError> {
        let row = JobRow {
            record: record.clone(),
            owner: self.owner.clone(),
            heartbeat_unix: now(),
            cancel: false,
        };
        Ok(self.db.call(move |b| b.put_jobs(&[row]))?)
    }
}

enum Failure {
    Cancelled,
    Failed(String),
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
            Progress::Batch { .. } | Progress::Stage { .. } | Progress::Starting { .. } => return,
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

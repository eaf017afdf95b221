//! The four gRPC services over the registry, the jobs and the fleet table: request checking,
//! status codes, and conversions between the wire types and ours.

use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dekm_edge::bundle::is_model_id;
use dekm_proto::pb;
use dekm_shared::TrainingMetrics;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Access, Auth};
use super::fleet::{DeviceReport, FleetError, FleetStats, check_device_id};
use super::jobs::{JobData, JobRecord, JobSpec, JobState, Jobs, JobsError, Phase, Step};
use super::registry::{Active, Entry, Registry, RegistryError};
use super::telemetry::Telemetry;
use crate::data::{DataSource, Dataset, LabelColumn, LoadOptions, SampleShape, SyntheticOptions};
use crate::train::TrainConfig;

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted message, in bytes (larger ones get RESOURCE_EXHAUSTED).
    pub max_message_bytes: usize,
    /// Most samples in one Assign request.
    pub max_batch: usize,
    /// Most samples sent inline with Train.
    pub max_inline_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            max_batch: 4096,
            max_inline_samples: 100_000,
        }
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct State {
    /// Stored models.
    pub registry: Arc<Registry>,
    /// Training jobs.
    pub jobs: Arc<Jobs>,
    /// Device reports.
    pub fleet: Arc<FleetStats>,
    /// Tokens.
    pub auth: Auth,
    /// Metrics.
    pub telemetry: Arc<Telemetry>,
    /// Limits.
    pub limits: Limits,
    /// Root of server-side data sets.
    pub data_root: Option<PathBuf>,
    /// Bounds the threads encoding Assign batches (one per core).
    pub assign_slots: Arc<Semaphore>,
}

/// The handlers (cheap to clone: one per service).
#[derive(Debug, Clone)]
pub struct Handle(pub Arc<State>);

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn registry_status(e: RegistryError) -> Status {
    match e {
        RegistryError::UnknownModel(_) => Status::not_found(e.to_string()),
        RegistryError::NoActive | RegistryError::NothingToRollBack => {
            Status::failed_precondition(e.to_string())
        }
        RegistryError::Invalid(_) => Status::invalid_argument(e.to_string()),
        RegistryError::Io { .. } | RegistryError::State { .. } | RegistryError::Corrupt { .. } => {
            tracing::error!(error = %e, "model store");
            Status::internal(e.to_string())
        }
    }
}

fn jobs_status(e: JobsError) -> Status {
    match e {
        JobsError::UnknownJob(_) => Status::not_found(e.to_string()),
        JobsError::Finished { .. } => Status::failed_precondition(e.to_string()),
        JobsError::Storage { .. } => {
            tracing::error!(error = %e, "job store");
            Status::internal(e.to_string())
        }
    }
}

fn fleet_status(e: FleetError) -> Status {
    match e {
        FleetError::Invalid(_) => Status::invalid_argument(e.to_string()),
        FleetError::Storage { .. } => {
            tracing::error!(error = %e, "fleet store");
            Status::internal(e.to_string())
        }
    }
}

/// tonic reports an oversized message as OUT_OF_RANGE; gRPC's convention is RESOURCE_EXHAUSTED.
pub(crate) fn oversized_to_exhausted(s: Status) -> Status {
    if s.code() == tonic::Code::OutOfRange && s.message().contains("message length too large") {
        Status::resource_exhausted(s.message().to_string())
    } else {
        s
    }
}

/// The same for unary calls, whose request tonic decodes before any handler runs: rewrites the
/// status in the trailers-only response headers.
pub(crate) fn remap_oversized(
    mut res: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let h = res.headers_mut();
    let too_large = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if too_large {
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    res
}

/// An empty id selects the active model; otherwise it must look like a model id.
fn check_model_id(id: &str) -> Result<(), Status> {
    if id.is_empty() || is_model_id(id) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "model id {id:?} is not 16 lower-case hex digits"
        )))
    }
}

fn blocking_failed(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("worker thread failed: {e}"))
}

fn metrics_pb(m: Option<TrainingMetrics>) -> Option<pb::Metrics> {
    m.map(|m| pb::Metrics {
        acc: m.acc,
        nmi: m.nmi,
        ari: m.ari,
    })
}

fn model_info(e: &Entry, active: &Active) -> pb::ModelInfo {
    pb::ModelInfo {
        id: e.id.clone(),
        sha256: e.sha256.clone(),
        bundle_bytes: e.bytes,
        dataset: e.meta.dataset.clone(),
        samples: e.meta.samples as u64,
        k: e.meta.k as u32,
        input_len: e.meta.encoder.input_len() as u32,
        encoder: match e.meta.encoder {
            dekm_shared::EncoderSpec::Conv { .. } => "conv",
            dekm_shared::EncoderSpec::Dense { .. } => "dense",
        }
        .into(),
        threshold_quantile: e.meta.threshold_quantile,
        metrics: metrics_pb(e.meta.metrics),
        created_unix: e.meta.created_unix,
        trainer_version: e.meta.trainer_version.clone(),
        active: active.id.as_deref() == Some(e.id.as_str()),
    }
}

fn job_state_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

fn progress_pb(job: &str, s: &Step) -> pb::Progress {
    pb::Progress {
        job_id: job.into(),
        state: job_state_pb(s.state).into(),
        phase: match s.phase {
            Phase::Loading => pb::Phase::Loading,
            Phase::Pretraining => pb::Phase::Pretraining,
            Phase::Clustering => pb::Phase::Clustering,
            Phase::Dekm => pb::Phase::Dekm,
            Phase::Exporting => pb::Phase::Exporting,
            Phase::Done => pb::Phase::Done,
        }
        .into(),
        step: s.step as u32,
        steps: s.steps as u32,
        loss: s.loss,
        changed: s.changed,
        metrics: metrics_pb(s.metrics),
        model_id: s.model_id.clone().unwrap_or_default(),
        error: s.error.clone().unwrap_or_default(),
    }
}

fn job_pb(r: &JobRecord) -> pb::Job {
    pb::Job {
        id: r.id.clone(),
        state: job_state_pb(r.state).into(),
        dataset: r.dataset.clone(),
        created_unix: r.created_unix,
        finished_unix: r.finished_unix.unwrap_or(0),
        last: Some(progress_pb(&r.id, &r.last)),
        model_id: r.model_id.clone().unwrap_or_default(),
        metrics: metrics_pb(r.metrics),
        error: r.error.clone().unwrap_or_default(),
    }
}

fn update_pb(a: &Active) -> pb::ModelUpdate {
    pb::ModelUpdate {
        model_id: a.id.clone().unwrap_or_default(),
        sha256: a.sha256.clone(),
        generation: a.generation,
    }
}

impl Handle {
    /// Assigns one batch with the edge runtime's `Session`, on a bounded blocking pool.
    async fn assign_batch(&self, req: pb::AssignRequest) -> Result<pb::AssignResponse, Status> {
        let s = &self.0;
        if req.samples.is_empty() {
            return Err(Status::invalid_argument("the request has no samples"));
        }
        if req.samples.len() > s.limits.max_batch {
            return Err(Status::resource_exhausted(format!(
                "{} samples in one request; the limit is {}",
                req.samples.len(),
                s.limits.max_batch
            )));
        }
        check_model_id(&req.model_id)?;
        let entry = s.registry.get(&req.model_id).map_err(registry_status)?;
        let _permit = s
            .assign_slots
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let model = entry.clone();
        let assignments = tokio::task::spawn_blocking(move || {
            let mut session = model.model.session();
            req.samples
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    let a = session
                        .assign(&x.values)
                        .map_err(|e| Status::invalid_argument(format!("sample {i}: {e}")))?;
                    Ok(pb::Assignment {
                        cluster: a.cluster,
                        distance: a.distance,
                        margin: a.margin,
                        outlier: a.outlier,
                    })
                })
                .collect::<Result<Vec<_>, Status>>()
        })
        .await
        .map_err(blocking_failed)??;
        s.telemetry.assigned(&entry.id, assignments.len());
        Ok(pb::AssignResponse {
            model_id: entry.id.clone(),
            assignments,
        })
    }

    /// Checks a Train request and turns it into a job.
    fn job_spec(&self, req: pb::TrainRequest) -> Result<JobSpec, Status> {
        let config = train_config(req.settings.unwrap_or_default())?;
        let data = match req.data {
            None => {
                return Err(Status::invalid_argument(
                    "the request needs a dataset reference or inline data",
                ));
            }
            Some(pb::train_request::Data::Dataset(d)) => self.dataset_ref(d, &config)?,
            Some(pb::train_request::Data::Inline(d)) => {
                let ds = inline_dataset(d, self.0.limits.max_inline_samples)?;
                config
                    .validate(ds.len())
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                JobData::Inline(ds)
            }
        };
        Ok(JobSpec {
            data,
            config,
            activate: req.activate,
        })
    }

    fn dataset_ref(&self, d: pb::DatasetRef, cfg: &TrainConfig) -> Result<JobData, Status> {
        let source: DataSource = d
            .name
            .parse()
            .map_err(|e: crate::data::DataError| Status::invalid_argument(e.to_string()))?;
        let root = self.0.data_root.as_deref();
        let need_root = || {
            root.ok_or_else(|| {
                Status::failed_precondition(
                    "the server has no data root (start it with --data-dir or DEKM_DATA)",
                )
            })
        };
        let source = match source {
            DataSource::Synthetic => DataSource::Synthetic,
            DataSource::Mnist | DataSource::FashionMnist => {
                let sub = need_root()?.join(source.to_string());
                if !sub.is_dir() {
                    return Err(Status::not_found(format!(
                        "data set {source} is not on this server (no {source}/ under the data root)"
                    )));
                }
                source
            }
            DataSource::Csv(p) => DataSource::Csv(under_root(need_root()?, &p)?),
            DataSource::Npy(p) => DataSource::Npy(under_root(need_root()?, &p)?),
        };
        let label_column = (!d.label_column.is_empty())
            .then(|| d.label_column.parse::<LabelColumn>())
            .transpose()
            .map_err(|e| Status::invalid_argument(format!("label column: {e:?}")))?;
        let samples = match d.synthetic_samples {
            0 => SyntheticOptions::default().samples,
            n => usize::try_from(n)
                .ok()
                .filter(|&n| n <= self.0.limits.max_inline_samples.max(1_000_000))
                .ok_or_else(|| {
                    Status::invalid_argument(format!("synthetic_samples {n} is too large"))
                })?,
        };
        Ok(JobData::Load {
            source,
            options: LoadOptions {
                data_dir: root.map(Path::to_path_buf),
                limit: (d.limit > 0).then_some(d.limit as usize),
                label_column,
                synthetic: SyntheticOptions {
                    k: cfg.k,
                    samples,
                    draw_seed: cfg.seed.wrapping_add(1),
                    ..Default::default()
                },
                ..Default::default()
            },
        })
    }
}

/// `rel` inside `root`: relative, no `..`, and no symbolic link leading outside.
fn under_root(root: &Path, rel: &Path) -> Result<PathBuf, Status> {
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Status::invalid_argument(format!(
            "data path {} must be relative to the data root, without '..'",
            rel.display()
        )));
    }
    let path = root.join(rel);
    let real = path
        .canonicalize()
        .map_err(|_| Status::not_found(format!("no file {} under the data root", rel.display())))?;
    let real_root = root
        .canonicalize()
        .map_err(|e| Status::internal(format!("data root: {e}")))?;
    if !real.starts_with(&real_root) {
        return Err(Status::invalid_argument(format!(
            "data path {} leads outside the data root",
            rel.display()
        )));
    }
    Ok(real)
}

/// One of `T`'s command-line names, or `INVALID_ARGUMENT` listing them all, so a request field
/// accepts exactly what the matching `dekm train` flag does.
fn choice<T: clap::ValueEnum>(field: &str, value: &str) -> Result<T, Status> {
    T::from_str(value, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        };
        Status::invalid_argument(format!("{field} {value:?}: expected {expected}"))
    })
}

/// `dekm train`'s defaults with the request's settings applied and checked.
fn train_config(s: pb::TrainSettings) -> Result<TrainConfig, Status> {
    let mut c = TrainConfig::default();
    let capped = |name: &str, v: u32, max: u32| {
        if v <= max {
            Ok(v as usize)
        } else {
            Err(Status::invalid_argument(format!(
                "{name} = {v} exceeds the server's limit of {max}"
            )))
        }
    };
    if let Some(v) = s.k {
        c.k = capped("k", v, 10_000)?;
    }
    if let Some(v) = s.epochs {
        c.epochs = capped("epochs", v, 10_000)?;
    }
    if let Some(v) = s.max_iter {
        c.max_iter = capped("max_iter", v, 10_000)?;
    }
    if let Some(v) = s.batch_size {
        c.batch_size = capped("batch_size", v, 65_536)?;
    }
    if let Some(v) = s.steps_per_iter {
        c.steps_per_iter = capped("steps_per_iter", v, 1_000_000)?;
    }
    if let Some(v) = s.restarts {
        c.restarts = capped("restarts", v, 1_000)?;
    }
    if let Some(v) = s.seed {
        c.seed = v;
    }
    if let Some(v) = s.lr {
        c.lr = v;
    }
    if let Some(v) = s.dekm_lr {
        c.dekm_lr = v;
    }
    if let Some(v) = s.tol {
        c.tol = v;
    }
    if let Some(v) = s.threshold_quantile {
        c.threshold_quantile = v;
    }
    if let Some(v) = s.augment_shift {
        c.augment.shift = v;
    }
    if let Some(v) = s.augment_rotate_deg {
        c.augment.rotate_deg = v;
    }
    if let Some(i) = s.init {
        c.init = choice("init", &i)?;
    }
    if let Some(m) = s.method {
        c.method = choice("method", &m)?;
    }
    if let Some(v) = s.start {
        c.start = choice("start", &v)?;
    }
    // Everything that does not depend on the data's size; k against n is checked once the
    // data is known.
    c.validate(usize::MAX)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(c)
}

fn inline_dataset(d: pb::InlineData, max: usize) -> Result<Dataset, Status> {
    let n = d.samples.len();
    if n == 0 {
        return Err(Status::invalid_argument("inline data has no samples"));
    }
    if n > max {
        return Err(Status::resource_exhausted(format!(
            "{n} inline samples; the limit is {max} (put larger sets under the data root)"
        )));
    }
    let dim = d.samples[0].values.len();
    if dim == 0 {
        return Err(Status::invalid_argument("inline sample 0 is empty"));
    }
    let mut xs = Vec::with_capacity(n * dim);
    for (i, s) in d.samples.iter().enumerate() {
        if s.values.len() != dim {
            return Err(Status::invalid_argument(format!(
                "inline sample {i} has {} values, sample 0 has {dim}",
                s.values.len()
            )));
        }
        if let Some(j) = s.values.iter().position(|v| !v.is_finite()) {
            return Err(Status::invalid_argument(format!(
                "inline sample {i}, value {j} is {}",
                s.values[j]
            )));
        }
        xs.extend_from_slice(&s.values);
    }
    let labels = match d.labels.len() {
        0 => None,
        l if l == n => Some(d.labels),
        l => {
            return Err(Status::invalid_argument(format!(
                "{l} labels for {n} inline samples"
            )));
        }
    };
    Ok(Dataset {
        name: "inline".into(),
        shape: SampleShape::Vector(dim),
        xs,
        labels,
        anomalies: None,
    })
}

#[tonic::async_trait]
impl pb::assigner_server::Assigner for Handle {
    async fn assign(
        &self,
        req: Request<pb::AssignRequest>,
    ) -> Result<Response<pb::AssignResponse>, Status> {
        let started = Instant::now();
        let result = async {
            self.0.auth.check(&req, Access::Client)?;
            self.assign_batch(req.into_inner()).await
        }
        .await;
        self.0.telemetry.record("Assign", started, &result);
        result.map(Response::new)
    }

    type AssignStreamStream = Stream_<pb::AssignResponse>;

    async fn assign_stream(
        &self,
        req: Request<Streaming<pb::AssignRequest>>,
    ) -> Result<Response<Self::AssignStreamStream>, Status> {
        let started = Instant::now();
        let checked = self.0.auth.check(&req, Access::Client);
        self.0.telemetry.record("AssignStream", started, &checked);
        checked?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let next = match inbound.message().await {
                    Ok(Some(r)) => this.assign_batch(r).await,
                    Ok(None) => break,
                    Err(s) => Err(oversized_to_exhausted(s)),
                };
                let failed = next.is_err();
                if tx.send(next).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl pb::training_server::Training for Handle {
    type TrainStream = Stream_<pb::Progress>;

    async fn train(
        &self,
        req: Request<pb::TrainRequest>,
    ) -> Result<Response<Self::TrainStream>, Status> {
        let started = Instant::now();
        let result = (|| {
            self.0.auth.check(&req, Access::Admin)?;
            let spec = self.job_spec(req.into_inner())?;
            self.0.jobs.submit(spec).map_err(jobs_status)
        })();
        self.0.telemetry.record("Train", started, &result);
        let (record, rx) = result?;
        tracing::info!(job = %record.id, dataset = %record.dataset, "job submitted");
        let id = record.id;
        let stream = UnboundedReceiverStream::new(rx).map(move |s| Ok(progress_pb(&id, &s)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let started = Instant::now();
        let result = (|| {
            self.0.auth.check(&req, Access::Admin)?;
            let id = &req.get_ref().job_id;
            if id.is_empty() {
                return Err(Status::invalid_argument("job_id is empty"));
            }
            self.0.jobs.get(id).map_err(jobs_status)
        })();
        self.0.telemetry.record("GetJob", started, &result);
        Ok(Response::new(job_pb(&result?)))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let started = Instant::now();
        let result = self
            .0
            .auth
            .check(&req, Access::Admin)
            .map(|()| pb::ListJobsResponse {
                jobs: self.0.jobs.list().iter().map(job_pb).collect(),
            });
        self.0.telemetry.record("ListJobs", started, &result);
        result.map(Response::new)
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let started = Instant::now();
        let result = async {
            self.0.auth.check(&req, Access::Admin)?;
            let id = &req.get_ref().job_id;
            if id.is_empty() {
                return Err(Status::invalid_argument("job_id is empty"));
            }
            self.0
                .jobs
                .cancel(id, Duration::from_secs(30))
                .await
                .map_err(jobs_status)
        }
        .await;
        self.0.telemetry.record("CancelJob", started, &result);
        Ok(Response::new(job_pb(&result?)))
    }
}

#[tonic::async_trait]
impl pb::registry_server::Registry for Handle {
    async fn list_models(
        &self,
        req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let started = Instant::now();
        let result = self.0.auth.check(&req, Access::Client).map(|()| {
            let active = self.0.registry.active();
            pb::ListModelsResponse {
                models: self
                    .0
                    .registry
                    .list()
                    .iter()
                    .map(|e| model_info(e, &active))
                    .collect(),
                active_model_id: active.id.clone().unwrap_or_default(),
                generation: active.generation,
            }
        });
        self.0.telemetry.record("ListModels", started, &result);
        result.map(Response::new)
    }

    async fn get_model(
        &self,
        req: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let started = Instant::now();
        let result = (|| {
            self.0.auth.check(&req, Access::Client)?;
            let id = &req.get_ref().model_id;
            check_model_id(id)?;
            let e = self.0.registry.get(id).map_err(registry_status)?;
            Ok(model_info(&e, &self.0.registry.active()))
        })();
        self.0.telemetry.record("GetModel", started, &result);
        result.map(Response::new)
    }

    async fn publish_model(
        &self,
        req: Request<pb::PublishModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let started = Instant::now();
        let result = async {
            self.0.auth.check(&req, Access::Admin)?;
            let req = req.into_inner();
            let registry = self.0.registry.clone();
            tokio::task::spawn_blocking(move || {
                let e = registry.add_bundle(&req.bundle).map_err(registry_status)?;
                if req.activate {
                    registry.activate(&e.id).map_err(registry_status)?;
                }
                tracing::info!(model = %e.id, activate = req.activate, "model published");
                Ok(model_info(&e, &registry.active()))
            })
            .await
            .map_err(blocking_failed)?
        }
        .await;
        self.0.telemetry.record("PublishModel", started, &result);
        result.map(Response::new)
    }

    async fn activate_model(
        &self,
        req: Request<pb::ActivateModelRequest>,
    ) -> Result<Response<pb::ActivationResponse>, Status> {
        let started = Instant::now();
        let result = (|| {
            self.0.auth.check(&req, Access::Admin)?;
            let id = &req.get_ref().model_id;
            if id.is_empty() {
                return Err(Status::invalid_argument("model_id is empty"));
            }
            check_model_id(id)?;
            let active = self.0.registry.activate(id).map_err(registry_status)?;
            tracing::info!(model = %id, generation = active.generation, "model activated");
            self.activation(active)
        })();
        self.0.telemetry.record("ActivateModel", started, &result);
        result.map(Response::new)
    }

    async fn rollback_model(
        &self,
        req: Request<pb::RollbackModelRequest>,
    ) -> Result<Response<pb::ActivationResponse>, Status> {
        let started = Instant::now();
        let result = (|| {
            self.0.auth.check(&req, Access::Admin)?;
            let active = self.0.registry.rollback().map_err(registry_status)?;
            tracing::info!(model = ?active.id, generation = active.generation, "rolled back");
            self.activation(active)
        })();
        self.0.telemetry.record("RollbackModel", started, &result);
        result.map(Response::new)
    }
}

impl Handle {
    fn activation(&self, active: Active) -> Result<pb::ActivationResponse, Status> {
        let e = self.0.registry.get("").map_err(registry_status)?;
        Ok(pb::ActivationResponse {
            active: Some(model_info(&e, &active)),
            generation: active.generation,
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn device_status(id: &str) -> Result<(), Status> {
    check_device_id(id).map_err(fleet_status)
}

#[tonic::async_trait]
impl pb::fleet_server::Fleet for Handle {
    async fn fetch_model(
        &self,
        req: Request<pb::FetchModelRequest>,
    ) -> Result<Response<pb::FetchModelResponse>, Status> {
        let started = Instant::now();
        let result = async {
            self.0.auth.check(&req, Access::Client)?;
            let req = req.into_inner();
            device_status(&req.device_id)?;
            check_model_id(&req.current_model_id)?;
            let active = self.0.registry.active();
            let id = active
                .id
                .clone()
                .ok_or_else(|| registry_status(RegistryError::NoActive))?;
            if req.current_model_id == id {
                return Ok(pb::FetchModelResponse {
                    not_modified: true,
                    model_id: id,
                    sha256: active.sha256,
                    bundle: Vec::new(),
                    generation: active.generation,
                });
            }
            let registry = self.0.registry.clone();
            let (entry, bundle) = tokio::task::spawn_blocking(move || registry.bundle(&id))
                .await
                .map_err(blocking_failed)?
                .map_err(registry_status)?;
            self.0.telemetry.fetched(&entry.id);
            tracing::info!(device = %req.device_id, model = %entry.id, "bundle sent");
            Ok(pb::FetchModelResponse {
                not_modified: false,
                model_id: entry.id.clone(),
                sha256: entry.sha256.clone(),
                bundle,
                generation: active.generation,
            })
        }
        .await;
        self.0.telemetry.record("FetchModel", started, &result);
        result.map(Response::new)
    }

    type WatchModelStream = Stream_<pb::ModelUpdate>;

    async fn watch_model(
        &self,
        req: Request<pb::WatchModelRequest>,
    ) -> Result<Response<Self::WatchModelStream>, Status> {
        let started = Instant::now();
        let result = self
            .0
            .auth
            .check(&req, Access::Client)
            .and_then(|()| device_status(&req.get_ref().device_id));
        self.0.telemetry.record("WatchModel", started, &result);
        result?;
        let stream = WatchStream::new(self.0.registry.subscribe()).map(|a| Ok(update_pb(&a)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_stats(
        &self,
        req: Request<pb::ReportStatsRequest>,
    ) -> Result<Response<pb::ReportStatsResponse>, Status> {
        let started = Instant::now();
        let result = async {
            self.0.auth.check(&req, Access::Client)?;
            let r = req.into_inner();
            device_status(&r.device_id)?;
            if r.model_id.is_empty() {
                return Err(Status::invalid_argument("model_id is empty"));
            }
            check_model_id(&r.model_id)?;
            let k = self
                .0
                .registry
                .get(&r.model_id)
                .map_err(registry_status)?
                .meta
                .k;
            let fleet = self.0.fleet.clone();
            tokio::task::spawn_blocking(move || {
                let report = DeviceReport {
                    counts: r.counts,
                    outliers: r.outliers,
                    rejected: r.rejected,
                    reported_unix: now(),
                };
                fleet.report(&r.device_id, &r.model_id, k, report)
            })
            .await
            .map_err(blocking_failed)?
            .map_err(fleet_status)
        }
        .await;
        self.0.telemetry.record("ReportStats", started, &result);
        result.map(|()| Response::new(pb::ReportStatsResponse {}))
    }

    async fn get_fleet_stats(
        &self,
        req: Request<pb::GetFleetStatsRequest>,
    ) -> Result<Response<pb::GetFleetStatsResponse>, Status> {
        let started = Instant::now();
        let result = (|| {
            self.0.auth.check(&req, Access::Admin)?;
            let id = &req.get_ref().model_id;
            check_model_id(id)?;
            let filter = (!id.is_empty()).then_some(id.as_str());
            let f = &self.0.fleet;
            Ok(pb::GetFleetStatsResponse {
                devices: f
                    .devices(filter)
                    .into_iter()
                    .map(|(model_id, device_id, r)| pb::DeviceStats {
                        device_id,
                        model_id,
                        counts: r.counts,
                        outliers: r.outliers,
                        rejected: r.rejected,
                        reported_unix: r.reported_unix,
                    })
                    .collect(),
                models: f
                    .totals(filter)
                    .into_iter()
                    .map(|(model_id, t)| pb::ModelFleetStats {
                        model_id,
                        devices: t.devices as u32,
                        counts: t.counts,
                        outliers: t.outliers,
                        rejected: t.rejected,
                    })
                    .collect(),
            })
        })();
        self.0.telemetry.record("GetFleetStats", started, &result);
        result.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Method;

    #[test]
    fn choices_list_every_name_the_cli_accepts() {
        assert_eq!(
            choice::<Method>("method", "ae-kmeans").unwrap(),
            Method::AeKmeans
        );
        let err = choice::<Method>("method", "kmeans++").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "method \"kmeans++\": expected dekm, dec, idec or ae-kmeans"
        );
    }

    #[test]
    fn a_request_chooses_the_start_and_a_bad_one_is_named() {
        let settings = |start: &str, max_iter: Option<u32>| pb::TrainSettings {
            start: Some(start.into()),
            max_iter,
            ..Default::default()
        };
        let c = train_config(settings("manifold", None)).unwrap();
        assert_eq!(c.start, crate::train::Start::Manifold);
        let err = train_config(settings("umap", None)).unwrap_err();
        assert_eq!(
            err.message(),
            "start \"umap\": expected auto, kmeans or manifold"
        );
        let err = train_config(settings("manifold", Some(0))).unwrap_err();
        assert!(
            err.message().contains("start manifold needs"),
            "{}",
            err.message()
        );
    }
}

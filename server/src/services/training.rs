//! `dekm.v1.Training`: training jobs submitted, streamed, listed and cancelled.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dekm_embed::Embedder;
use dekm_proto::pb;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use super::Stream_;
use dekm_trainer::device::DeviceChoice;

use crate::convert::{job_pb, progress_pb};
use crate::jobs::Jobs;
use crate::status::jobs_status;
use crate::telemetry::Telemetry;
use crate::validate::{Limits, job_spec};

/// The training service: the jobs, and what a request may ask of them.
#[derive(Debug, Clone)]
pub(crate) struct TrainingService {
    pub(crate) jobs: Arc<Jobs>,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) limits: Limits,
    /// Root of server-side data sets.
    pub(crate) data_root: Option<PathBuf>,
    /// Where jobs train.
    pub(crate) device: DeviceChoice,
    /// What embeds the documents of text data sets, when the server has one.
    pub(crate) embedder: Option<Arc<Embedder>>,
}

#[tonic::async_trait]
impl pb::training_server::Training for TrainingService {
    type TrainStream = Stream_<pb::Progress>;

    async fn train(
        &self,
        req: Request<pb::TrainRequest>,
    ) -> Result<Response<Self::TrainStream>, Status> {
        let started = Instant::now();
        let result = (|| {
            let mut spec = job_spec(
                req.into_inner(),
                &self.limits,
                self.data_root.as_deref(),
                self.embedder.as_ref(),
            )?;
            spec.config.device = self.device;
            self.jobs.submit(spec).map_err(jobs_status)
        })();
        self.telemetry.record("Train", started, &result);
        let (record, rx) = result?;
        tracing::info!(job = %record.id, dataset = %record.dataset, "job submitted");
        let id = record.id;
        let stream = UnboundedReceiverStream::new(rx).map(move |s| Ok(progress_pb(&id, &s)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let started = Instant::now();
        let result = async {
            let id = &req.get_ref().job_id;
            if id.is_empty() {
                return Err(Status::invalid_argument("job_id is empty"));
            }
            self.jobs.get(id).await.map_err(jobs_status)
        }
        .await;
        self.telemetry.record("GetJob", started, &result);
        Ok(Response::new(job_pb(&result?)))
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let started = Instant::now();
        let result = self
            .jobs
            .list()
            .await
            .map_err(jobs_status)
            .map(|jobs| pb::ListJobsResponse {
                jobs: jobs.iter().map(job_pb).collect(),
            });
        self.telemetry.record("ListJobs", started, &result);
        result.map(Response::new)
    }

    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let started = Instant::now();
        let result = async {
            let id = &req.get_ref().job_id;
            if id.is_empty() {
                return Err(Status::invalid_argument("job_id is empty"));
            }
            self.jobs
                .cancel(id, Duration::from_secs(30))
                .await
                .map_err(jobs_status)
        }
        .await;
        self.telemetry.record("CancelJob", started, &result);
        Ok(Response::new(job_pb(&result?)))
    }
}

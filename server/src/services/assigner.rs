//! `dekm.v1.Assigner`: `Assign` and `AssignStream`, a batch at a time through the edge runtime's
//! own session on a bounded pool of blocking threads.

use std::sync::Arc;
use std::time::Instant;

use dekm_proto::pb;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Stream_;
use crate::auth::{Access, Auth};
use crate::registry::Registry;
use crate::status::{blocking_failed, oversized_to_exhausted, registry_status};
use crate::telemetry::Telemetry;
use crate::validate::check_model_id;

/// The assignment service: the models, the pool and the batch limit.
#[derive(Debug, Clone)]
pub(crate) struct AssignerService {
    pub(crate) registry: Arc<Registry>,
    pub(crate) auth: Auth,
    pub(crate) telemetry: Arc<Telemetry>,
    /// Most samples in one request.
    pub(crate) max_batch: usize,
    /// Bounds the threads encoding batches.
    pub(crate) slots: Arc<Semaphore>,
}

impl AssignerService {
    /// Assigns one batch with the edge runtime's `Session`, on a bounded blocking pool.
    async fn assign_batch(&self, req: pb::AssignRequest) -> Result<pb::AssignResponse, Status> {
        let s = self;
        if req.samples.is_empty() {
            return Err(Status::invalid_argument("the request has no samples"));
        }
        if req.samples.len() > s.max_batch {
            return Err(Status::resource_exhausted(format!(
                "{} samples in one request; the limit is {}",
                req.samples.len(),
                s.max_batch
            )));
        }
        check_model_id(&req.model_id)?;
        let entry = s.registry.get(&req.model_id).map_err(registry_status)?;
        let _permit = s
            .slots
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
                        score: a.score,
                        outlier: a.outlier,
                    })
                })
                .collect::<Result<Vec<_>, Status>>()
        })
        .await
        .map_err(blocking_failed)??;
        s.telemetry.assigned(
            &entry.id,
            assignments.iter().map(|a| (a.cluster, a.outlier)),
        );
        Ok(pb::AssignResponse {
            model_id: entry.id.clone(),
            assignments,
        })
    }
}

#[tonic::async_trait]
impl pb::assigner_server::Assigner for AssignerService {
    async fn assign(
        &self,
        req: Request<pb::AssignRequest>,
    ) -> Result<Response<pb::AssignResponse>, Status> {
        let started = Instant::now();
        let result = async {
            self.auth.check(&req, Access::Client)?;
            self.assign_batch(req.into_inner()).await
        }
        .await;
        self.telemetry.record("Assign", started, &result);
        result.map(Response::new)
    }

    type AssignStreamStream = Stream_<pb::AssignResponse>;

    async fn assign_stream(
        &self,
        req: Request<Streaming<pb::AssignRequest>>,
    ) -> Result<Response<Self::AssignStreamStream>, Status> {
        let started = Instant::now();
        let checked = self.auth.check(&req, Access::Client);
        self.telemetry.record("AssignStream", started, &checked);
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

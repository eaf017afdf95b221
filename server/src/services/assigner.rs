//! `dekm.v1.Assigner`: `Assign` and `AssignStream`, a batch at a time through the edge runtime's
//! own session on a bounded pool of blocking threads. For a model trained on a stream a
//! request may carry readings instead of samples: the edge runtime's `Windower` cuts them into
//! windows, and on `AssignStream` it carries the last window's readings over to the next
//! request, as a device's `StreamSession` does.

use std::sync::Arc;
use std::time::Instant;

use dekm_proto::pb;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Stream_;
use crate::registry::Registry;
use crate::status::{blocking_failed, oversized_to_exhausted, registry_status};
use crate::telemetry::Telemetry;
use crate::validate::check_model_id;
use dekm_edge::{Assignment, Windower};

/// The assignment service: the models, the pool and the batch limit.
#[derive(Debug, Clone)]
pub(crate) struct AssignerService {
    pub(crate) registry: Arc<Registry>,
    pub(crate) telemetry: Arc<Telemetry>,
    /// Most samples in one request.
    pub(crate) max_batch: usize,
    /// Bounds the threads encoding batches.
    pub(crate) slots: Arc<Semaphore>,
}

/// Values one window of a stream model may hold on the server (channels x readings).
const STREAM_CAPACITY: usize = 16 * 1024;

/// The readings a client stream carries over between requests: the windower of the model it
/// was cut for. A request answered by another model (the active one changed) starts afresh.
#[derive(Debug, Default)]
struct Carry {
    model_id: String,
    windows: Option<Box<Windower<STREAM_CAPACITY>>>,
}

fn to_pb(a: &Assignment) -> pb::Assignment {
    pb::Assignment {
        cluster: a.cluster,
        distance: a.distance,
        margin: a.margin,
        score: a.score,
        outlier: a.outlier,
    }
}

impl AssignerService {
    /// Assigns one batch of samples, or of readings cut into windows with `carry`'s windower,
    /// with the edge runtime's `Session`, on a bounded blocking pool.
    async fn assign_batch(
        &self,
        req: pb::AssignRequest,
        carry: &mut Carry,
    ) -> Result<pb::AssignResponse, Status> {
        let s = self;
        let items = req.samples.len() + req.readings.len();
        if items == 0 {
            return Err(Status::invalid_argument(
                "the request has no samples and no readings",
            ));
        }
        if !req.samples.is_empty() && !req.readings.is_empty() {
            return Err(Status::invalid_argument(
                "a request carries samples or readings, not both",
            ));
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
        let mut windows = None;
        if !req.readings.is_empty() {
            let Some(spec) = &entry.meta.stream else {
                return Err(Status::failed_precondition(format!(
                    "model {} was not trained on a stream; send samples",
                    entry.id
                )));
            };
            // As many windows as the batch limit allows samples: `hop` readings each.
            let limit = s.max_batch.saturating_mul(spec.hop);
            if req.readings.len() > limit {
                return Err(Status::resource_exhausted(format!(
                    "{} readings in one request; the limit is {limit} (the batch limit of {} \
                     windows x a hop of {} readings)",
                    req.readings.len(),
                    s.max_batch,
                    spec.hop
                )));
            }
            windows = match carry.windows.take() {
                Some(w) if carry.model_id == entry.id => Some(w),
                _ => Some(Box::new(Windower::new(spec).map_err(|e| {
                    Status::failed_precondition(format!("model {}: {e}", entry.id))
                })?)),
            };
        }
        let _permit = s
            .slots
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let model = entry.clone();
        let (windows, assignments, window_starts) = tokio::task::spawn_blocking(move || {
            let mut session = model.model.session();
            let Some(mut windows) = windows else {
                let assignments = req
                    .samples
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        session
                            .assign(&x.values)
                            .map(|a| to_pb(&a))
                            .map_err(|e| Status::invalid_argument(format!("sample {i}: {e}")))
                    })
                    .collect::<Result<Vec<_>, Status>>()?;
                return Ok((None, assignments, Vec::new()));
            };
            let (mut assignments, mut starts) = (Vec::new(), Vec::new());
            for (i, r) in req.readings.iter().enumerate() {
                let done = windows
                    .push(&r.values)
                    .map_err(|e| Status::invalid_argument(format!("reading {i}: {e}")))?;
                if let Some((start, sample)) = done {
                    let a = session.assign(sample).map_err(|e| {
                        Status::invalid_argument(format!("window starting at reading {start}: {e}"))
                    })?;
                    assignments.push(to_pb(&a));
                    starts.push(start);
                }
            }
            Ok::<_, Status>((Some(windows), assignments, starts))
        })
        .await
        .map_err(blocking_failed)??;
        if windows.is_some() {
            *carry = Carry {
                model_id: entry.id.clone(),
                windows,
            };
        }
        s.telemetry.assigned(
            &entry.id,
            assignments.iter().map(|a| (a.cluster, a.outlier)),
        );
        Ok(pb::AssignResponse {
            model_id: entry.id.clone(),
            assignments,
            window_starts,
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
            // A single call's readings start their own stream.
            self.assign_batch(req.into_inner(), &mut Carry::default())
                .await
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
        self.telemetry
            .record("AssignStream", started, &Ok::<(), Status>(()));
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            let mut carry = Carry::default();
            loop {
                let next = match inbound.message().await {
                    Ok(Some(r)) => this.assign_batch(r, &mut carry).await,
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

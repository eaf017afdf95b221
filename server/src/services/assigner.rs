//! `dekm.v1.Assigner`: `Assign` and `AssignStream`, a batch at a time through the edge runtime's
//! own session on a bounded pool of blocking threads. For a model trained on a stream a
//! request may carry readings instead of samples: the edge runtime's `Windower` cuts them into
//! windows, and on `AssignStream` it carries the last window's readings over to the next
//! request, as a device's `StreamSession` does. For a model trained on texts a request may
//! carry texts, which the server's sentence embedder (the model's own, by checksum) turns
//! into the vectors devices would be sent.

use std::sync::Arc;
use std::time::Instant;

use dekm_proto::pb;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Stream_;
use crate::registry::Entry;
use crate::registry::Registry;
use crate::status::{blocking_failed, oversized_to_exhausted, registry_status};
use crate::telemetry::Telemetry;
use crate::validate::{EMBED_BATCH, check_model_id, embedder_for};
use dekm_edge::{Assignment, Session, Windower};
use dekm_embed::Embedder;

/// The assignment service: the models, the pool and the batch limit.
#[derive(Debug, Clone)]
pub(crate) struct AssignerService {
    pub(crate) registry: Arc<Registry>,
    pub(crate) telemetry: Arc<Telemetry>,
    /// Most samples in one request.
    pub(crate) max_batch: usize,
    /// Bounds the threads encoding batches.
    pub(crate) slots: Arc<Semaphore>,
    /// What embeds texts for models trained on them, when the server has one.
    pub(crate) embedder: Option<Arc<Embedder>>,
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
        let kinds = [req.samples.len(), req.readings.len(), req.texts.len()];
        match kinds.iter().filter(|&&n| n > 0).count() {
            0 => {
                return Err(Status::invalid_argument(
                    "the request has no samples, readings or texts",
                ));
            }
            1 => {}
            _ => {
                return Err(Status::invalid_argument(
                    "a request carries one of samples, readings or texts",
                ));
            }
        }
        for (n, what) in [(req.samples.len(), "samples"), (req.texts.len(), "texts")] {
            if n > s.max_batch {
                return Err(Status::resource_exhausted(format!(
                    "{n} {what} in one request; the limit is {}",
                    s.max_batch
                )));
            }
        }
        check_model_id(&req.model_id)?;
        let entry = s.registry.get(&req.model_id).map_err(registry_status)?;
        let embedder = if req.texts.is_empty() {
            None
        } else {
            Some(self.text_embedder(&entry, &req.texts)?)
        };
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
        let (answer, windows) = tokio::task::spawn_blocking(move || {
            let mut session = model.model.session();
            match (embedder, windows) {
                (Some(e), _) => Ok((assign_texts(&e, &mut session, &req.texts)?, None)),
                (None, Some(mut w)) => {
                    let answer = assign_readings(&mut w, &mut session, &req.readings)?;
                    Ok((answer, Some(w)))
                }
                (None, None) => {
                    Ok::<_, Status>((assign_samples(&mut session, &req.samples)?, None))
                }
            }
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
            answer.assignments.iter().map(|a| (a.cluster, a.outlier)),
        );
        Ok(pb::AssignResponse {
            model_id: entry.id.clone(),
            ..answer
        })
    }

    /// The server's embedder for texts sent to `entry`: the model must have been trained on
    /// texts, by an embedder with the same weights as the server's, and no text may be blank.
    fn text_embedder(&self, entry: &Entry, texts: &[String]) -> Result<Arc<Embedder>, Status> {
        let Some(want) = &entry.meta.embedder else {
            return Err(Status::failed_precondition(format!(
                "model {} was not trained on texts; send samples",
                entry.id
            )));
        };
        let have = embedder_for(
            self.embedder.as_ref(),
            &format!("model {} takes texts", entry.id),
        )?;
        if have.id().sha256 != want.sha256 {
            return Err(Status::failed_precondition(format!(
                "model {} was trained on embeddings by {} (sha256 {}), but this server embeds \
                 with {} (sha256 {}): start it with the model's embedder, or embed the texts \
                 with it and send samples",
                entry.id,
                want.name,
                want.sha256,
                have.id().name,
                have.id().sha256
            )));
        }
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(Status::invalid_argument(format!("text {i} is blank")));
        }
        Ok(have)
    }
}

/// Assigns vector samples, all at once (the encoder's dense layers over chunks of them).
fn assign_samples(
    session: &mut Session<'_>,
    samples: &[pb::Sample],
) -> Result<pb::AssignResponse, Status> {
    let assignments = assign_all(
        session,
        samples.iter().map(|x| x.values.as_slice()),
        "sample",
    )?;
    Ok(pb::AssignResponse {
        assignments,
        ..Default::default()
    })
}

/// Assigns `raws` through [`Session::assign_all`]; the first bad one fails the request, named
/// as `what` and its index.
fn assign_all<'r>(
    session: &mut Session<'_>,
    raws: impl IntoIterator<Item = &'r [f32]>,
    what: &str,
) -> Result<Vec<pb::Assignment>, Status> {
    let mut assignments = Vec::new();
    let mut failed = None;
    session.assign_all(raws, |i, r| match r {
        Ok(a) => assignments.push(to_pb(&a)),
        Err(e) => {
            failed.get_or_insert_with(|| Status::invalid_argument(format!("{what} {i}: {e}")));
        }
    });
    failed.map_or(Ok(assignments), Err)
}

/// Pushes `readings` into `windows` and assigns every window they complete.
fn assign_readings(
    windows: &mut Windower<STREAM_CAPACITY>,
    session: &mut Session<'_>,
    readings: &[pb::Sample],
) -> Result<pb::AssignResponse, Status> {
    let mut answer = pb::AssignResponse::default();
    for (i, r) in readings.iter().enumerate() {
        let done = windows
            .push(&r.values)
            .map_err(|e| Status::invalid_argument(format!("reading {i}: {e}")))?;
        if let Some((start, sample)) = done {
            let a = session.assign(sample).map_err(|e| {
                Status::invalid_argument(format!("window starting at reading {start}: {e}"))
            })?;
            answer.assignments.push(to_pb(&a));
            answer.window_starts.push(start);
        }
    }
    Ok(answer)
}

/// Embeds `texts` and assigns their vectors; the answer names the texts that were truncated
/// to the embedder's token limit.
fn assign_texts(
    embedder: &Embedder,
    session: &mut Session<'_>,
    texts: &[String],
) -> Result<pb::AssignResponse, Status> {
    let e = embedder
        .embed(texts, EMBED_BATCH, &mut |_| {})
        .map_err(|e| Status::internal(format!("embedding the texts failed: {e}")))?;
    let assignments = assign_all(session, e.xs.chunks(e.dim), "text")?;
    Ok(pb::AssignResponse {
        assignments,
        truncated: e.truncated.iter().map(|&i| i as u32).collect(),
        ..Default::default()
    })
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

//! Conversions from our types to the wire's (`dekm.v1`), kept apart from the handlers as tonic's
//! routeguide keeps them in `data.rs`.

use dekm_proto::pb;
use dekm_shared::TrainingMetrics;

use crate::jobs::{JobRecord, JobState, Phase, Step};
use crate::registry::{Active, Entry};

/// Metrics, when there are any.
pub(crate) fn metrics_pb(m: Option<TrainingMetrics>) -> Option<pb::Metrics> {
    m.map(|m| pb::Metrics {
        acc: m.acc,
        nmi: m.nmi,
        ari: m.ari,
    })
}

/// A stored model, and whether it is the active one.
pub(crate) fn model_info(e: &Entry, active: &Active) -> pb::ModelInfo {
    pb::ModelInfo {
        id: e.id.clone(),
        sha256: e.sha256.clone(),
        bundle_bytes: e.bytes,
        dataset: e.meta.dataset.clone(),
        samples: e.meta.samples as u64,
        k: e.meta.k as u32,
        input_len: e.meta.input_len() as u32,
        encoder: match e.meta.encoder {
            dekm_shared::EncoderSpec::Conv { .. } => "conv",
            dekm_shared::EncoderSpec::Conv1d { .. } => "conv1d",
            dekm_shared::EncoderSpec::Dense { .. } => "dense",
        }
        .into(),
        threshold_quantile: e.meta.threshold_quantile,
        outlier_score: e.meta.outlier_score.name().into(),
        channels: e
            .meta
            .stream
            .iter()
            .flat_map(|s| s.channels.clone())
            .collect(),
        window: e.meta.stream.as_ref().map_or(0, |s| s.window as u32),
        hop: e.meta.stream.as_ref().map_or(0, |s| s.hop as u32),
        spectrum_bands: e.meta.spectrum.as_ref().map_or(0, |s| s.bands as u32),
        embedder: e
            .meta
            .embedder
            .as_ref()
            .map(|x| x.name.clone())
            .unwrap_or_default(),
        embedder_sha256: e
            .meta
            .embedder
            .as_ref()
            .map(|x| x.sha256.clone())
            .unwrap_or_default(),
        metrics: metrics_pb(e.meta.metrics),
        created_unix: e.meta.created_unix,
        trainer_version: e.meta.trainer_version.clone(),
        active: active.id.as_deref() == Some(e.id.as_str()),
    }
}

/// A job's state.
pub(crate) fn job_state_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

/// One step of job `job`.
pub(crate) fn progress_pb(job: &str, s: &Step) -> pb::Progress {
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

/// A job record.
pub(crate) fn job_pb(r: &JobRecord) -> pb::Job {
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

/// The active model, as `WatchModel` streams it.
pub(crate) fn update_pb(a: &Active) -> pb::ModelUpdate {
    pb::ModelUpdate {
        model_id: a.id.clone().unwrap_or_default(),
        sha256: a.sha256.clone(),
        generation: a.generation,
    }
}

//! What a run tells its caller: [`Progress`] events for an [`Observer`] (the command line's
//! progress bars, the gRPC service's job stream), and the [`History`] of losses and metrics
//! saved with the model.

use dekm_shared::TrainingMetrics;
use serde::{Deserialize, Serialize};

use super::{Method, Start, TrainError};

/// One step of a training run, as an [`Observer`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// A pretraining minibatch finished (both counts 1-based).
    Batch {
        /// Epoch number.
        epoch: usize,
        /// Minibatch number within the epoch.
        batch: usize,
        /// Minibatches in an epoch.
        batches: usize,
        /// This minibatch's reconstruction loss.
        loss: f32,
    },
    /// A pretraining epoch finished (1-based) with this mean reconstruction loss.
    Pretrain {
        /// Epoch number.
        epoch: usize,
        /// Epochs in the run.
        epochs: usize,
        /// Mean loss.
        loss: f32,
    },
    /// k-means on the pretrained embedding (the AE + k-means baseline).
    Clustered {
        /// Metrics, when labels exist.
        metrics: Option<TrainingMetrics>,
    },
    /// A start other than k-means is being computed (the manifold start's neighbour search,
    /// layout and mixtures take minutes on 70,000 images); the next event is the stage's.
    Starting {
        /// The start.
        start: Start,
        /// Samples it lays out or fits.
        samples: usize,
    },
    /// The clustering stage begins, or resumes after `done` iterations.
    Stage {
        /// DEKM, DEC or IDEC.
        method: Method,
        /// Iterations already done (from a checkpoint).
        done: usize,
        /// Maximum iterations.
        max_iter: usize,
    },
    /// An iteration of the clustering stage finished.
    Iteration {
        /// DEKM, DEC or IDEC.
        method: Method,
        /// Iteration number (1-based).
        iteration: usize,
        /// Maximum iterations.
        max_iter: usize,
        /// Mean fine-tuning loss.
        loss: f32,
        /// Fraction of assignments that changed.
        changed: f64,
        /// Metrics after the iteration, when labels exist.
        metrics: Option<TrainingMetrics>,
    },
}

/// Watches a run. Called from the training thread, so it must be quick.
pub trait Observer: Send + Sync {
    /// A step finished.
    fn progress(&self, step: &Progress);
    /// Polled before every minibatch; returning true stops the run with
    /// [`TrainError::Cancelled`] (the checkpoint of the last finished step stays).
    fn cancelled(&self) -> bool {
        false
    }
}

/// The run's side of its observer, if it has one.
#[derive(Clone, Copy)]
pub(super) struct Watch<'a>(pub(super) Option<&'a dyn Observer>);

impl Watch<'_> {
    pub(super) fn notify(&self, p: Progress) {
        if let Some(o) = self.0 {
            o.progress(&p);
        }
    }

    /// Stops the run when the observer asks to.
    pub(super) fn check(&self) -> Result<(), TrainError> {
        match self.0 {
            Some(o) if o.cancelled() => Err(TrainError::Cancelled),
            _ => Ok(()),
        }
    }

    /// Reports one finished clustering iteration (0-based `it`) in the three places a user or a
    /// caller reads it (the saved history, the log and the observer), so that DEKM, DEC and
    /// IDEC report the same figures the same way.
    pub(super) fn iteration(
        &self,
        method: Method,
        it: usize,
        max_iter: usize,
        log: IterationLog,
        history: &mut History,
    ) {
        let IterationLog {
            loss,
            changed,
            metrics: m,
        } = log;
        tracing::info!(
            iteration = it + 1,
            loss,
            changed,
            acc = m.map(|m| m.acc),
            "{}",
            method.label()
        );
        self.notify(Progress::Iteration {
            method,
            iteration: it + 1,
            max_iter,
            loss,
            changed,
            metrics: m,
        });
        history.iterations.push(log);
    }
}

/// One clustering iteration's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IterationLog {
    /// Mean fine-tuning loss.
    pub loss: f32,
    /// Fraction of assignments that changed (while a manifold start is held: that Lloyd's
    /// k-means from the held clusters' centres would change).
    pub changed: f64,
    /// Metrics after the iteration, when labels exist.
    pub metrics: Option<TrainingMetrics>,
}

/// Loss and metric curves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    /// Mean reconstruction loss per pretraining epoch.
    pub pretrain_loss: Vec<f32>,
    /// One entry per iteration of the clustering stage.
    pub iterations: Vec<IterationLog>,
    /// Seconds spent pretraining (this process only, when resumed).
    pub pretrain_seconds: f64,
    /// Seconds spent in the clustering stage (DEKM, DEC or IDEC; `dekm_seconds` in files
    /// written before the rename).
    #[serde(alias = "dekm_seconds")]
    pub stage_seconds: f64,
    /// Metrics of a `manifold` or `input` start, when labels exist.
    #[serde(default)]
    pub start: Option<TrainingMetrics>,
    /// The mixture an `input` start chose.
    #[serde(default)]
    pub mixture: Option<super::start::InputMixture>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_saved_before_the_rename_still_load() {
        let old =
            r#"{"pretrain_loss":[0.5],"iterations":[],"pretrain_seconds":1.0,"dekm_seconds":2.5}"#;
        let h: History = serde_json::from_str(old).unwrap();
        assert_eq!(h.stage_seconds, 2.5);
        assert_eq!(h.start, None);
    }
}

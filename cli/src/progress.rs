//! Progress on the terminal: for a training run an [`Observer`] that draws one bar per
//! pretraining epoch, a spinner while a manifold or input start is computed, and one bar for the
//! clustering stage, with the running loss, the changed fraction and, with labels, the
//! accuracy; for the other commands' long steps a [`Step`] spinner.

use std::sync::Mutex;

use dekm_trainer::choice::Choice;
use dekm_trainer::train::{Observer, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Draws a run's progress on the terminal.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    /// Leaves the last bar where it stands (call when the run has returned).
    pub fn finish(&self) {
        if let Some(pb) = self.current().take() {
            pb.finish();
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the current bar (left as it was) with a new one.
    fn start(&self, len: usize, prefix: String) -> ProgressBar {
        let pb = ProgressBar::new(len as u64).with_prefix(prefix);
        pb.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        if let Some(old) = self.current().replace(pb.clone()) {
            old.finish();
        }
        pb
    }
}

impl Observer for Bars {
    fn progress(&self, step: &Progress) {
        match *step {
            Progress::Batch {
                epoch,
                batch,
                batches,
                loss,
            } => {
                let current = self.current().clone();
                let pb = match current {
                    Some(pb) if batch > 1 => pb,
                    _ => self.start(batches, format!("epoch {epoch}")),
                };
                pb.inc(1);
                if (batch - 1) % 8 == 0 {
                    pb.set_message(format!("loss {loss:.5}"));
                }
            }
            Progress::Pretrain { loss, .. } => {
                if let Some(pb) = self.current().take() {
                    pb.finish_with_message(format!("loss {loss:.5}"));
                }
            }
            Progress::Clustered { .. } => {}
            Progress::Starting { start, samples } => {
                let pb = self.start(0, "start".into());
                pb.set_style(
                    ProgressStyle::with_template("{prefix:>10} {spinner} {msg} ({elapsed})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                pb.set_message(format!("{} start on {samples} samples", start.name()));
                pb.enable_steady_tick(std::time::Duration::from_millis(200));
            }
            Progress::Stage {
                method,
                done,
                max_iter,
            } => {
                let pb = self.start(max_iter, method.label().to_string());
                pb.set_position(done as u64);
            }
            Progress::Iteration {
                changed, metrics, ..
            } => {
                if let Some(pb) = self.current().as_ref() {
                    pb.inc(1);
                    pb.set_message(match metrics {
                        Some(m) => format!("changed {:.2}% acc {:.4}", changed * 100.0, m.acc),
                        None => format!("changed {:.2}%", changed * 100.0),
                    });
                }
            }
        }
    }
}

/// A long step of a command (a neighbour search, a layout, a sweep over k): a spinner with its
/// name and elapsed time while it runs (on a terminal only), and an `info` log line with the
/// seconds it took when it is dropped, which is what a log collector sees.
pub struct Step {
    pb: ProgressBar,
    name: String,
    started: std::time::Instant,
}

impl Step {
    /// Starts showing `name`.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message(name.clone());
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        Self {
            pb,
            name,
            started: std::time::Instant::now(),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.pb.finish_and_clear();
        tracing::info!(
            step = %self.name,
            seconds = self.started.elapsed().as_secs_f64(),
            "step done"
        );
    }
}

/// A long step over a known number of items (texts embedded): a bar while it runs (on a
/// terminal only), and an `info` log line with the count and seconds when it is dropped.
pub struct Count {
    pb: ProgressBar,
    name: String,
    started: std::time::Instant,
}

impl Count {
    /// Starts a bar named `name` over `total` items.
    pub fn new(name: impl Into<String>, total: usize) -> Self {
        let name = name.into();
        let pb = ProgressBar::new(total as u64).with_prefix(name.clone());
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} ({elapsed}, {eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self {
            pb,
            name,
            started: std::time::Instant::now(),
        }
    }

    /// Moves the bar to `done` items.
    pub fn set(&self, done: usize) {
        self.pb.set_position(done as u64);
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        self.pb.finish_and_clear();
        tracing::info!(
            step = %self.name,
            items = self.pb.position(),
            seconds = self.started.elapsed().as_secs_f64(),
            "step done"
        );
    }
}

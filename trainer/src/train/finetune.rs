//! What the fine-tuning iterations of DEKM, DEC and IDEC share: a fresh seeded shuffle per
//! iteration, minibatches that wrap around the data, the jitter of image minibatches, and the
//! divergence and cancellation checks before and after every step.

use candle_core::Tensor;
use rand::seq::SliceRandom;

use super::observe::Watch;
use super::{TrainConfig, TrainError};
use crate::augment::Jitter;
use crate::optim::Adam;
use crate::rng;

/// The settings, the training samples and their jitter, and the observer.
pub(super) struct Finetune<'a> {
    pub(super) cfg: &'a TrainConfig,
    pub(super) xs: &'a Tensor,
    /// Jitter of the training minibatches (targets come from the clean images).
    pub(super) jitter: Option<Jitter>,
    pub(super) watch: Watch<'a>,
}

impl Finetune<'_> {
    /// Iteration `it` (0-based) of `method`: `steps_per_iter` Adam steps, each on `loss(ids,
    /// inputs)` of the next minibatch of a fresh seeded shuffle of all samples. `stream` keeps
    /// each method's shuffles its own. Returns the mean of the minibatch losses.
    pub(super) fn iteration(
        &self,
        method: &str,
        it: usize,
        stream: u64,
        opt: &mut Adam,
        mut loss: impl FnMut(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<f32, TrainError> {
        let (cfg, xs) = (self.cfg, self.xs);
        let mut order: Vec<u32> = (0..xs.dim(0)? as u32).collect();
        order.shuffle(&mut rng(cfg.seed, stream + it as u64));
        let mut jr = rng(cfg.seed, 50_000 + it as u64);
        let mut total = 0f64;
        for step in 0..cfg.steps_per_iter {
            self.watch.check()?;
            let ids = Tensor::new(minibatch(&order, step, cfg.batch_size), xs.device())?;
            let xb = Jitter::inputs(self.jitter.as_ref(), xs.index_select(&ids, 0)?, &mut jr)?;
            let l = loss(&ids, &xb)?;
            opt.backward_step(&l)?;
            total += f64::from(finite(l.to_scalar::<f32>()?, || {
                format!("{method} iteration {}", it + 1)
            })?);
        }
        Ok((total / cfg.steps_per_iter.max(1) as f64) as f32)
    }
}

/// The sample ids of fine-tuning step `step` in a clustering iteration: the batch of the
/// iteration's shuffled `order` that begins at `step · batch` modulo its length, cut short at
/// its end (steps that outrun the data wrap around).
fn minibatch(order: &[u32], step: usize, batch: usize) -> &[u32] {
    let from = (step * batch) % order.len();
    &order[from..(from + batch).min(order.len())]
}

/// `loss`, or [`TrainError::Diverged`] naming `phase` when it is NaN or infinite.
pub(super) fn finite(loss: f32, phase: impl FnOnce() -> String) -> Result<f32, TrainError> {
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(TrainError::Diverged {
            loss,
            phase: phase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minibatches_walk_the_order_and_wrap() {
        let order = [4, 0, 3, 1, 2];
        let steps: Vec<&[u32]> = (0..4).map(|s| minibatch(&order, s, 2)).collect();
        assert_eq!(steps, [&[4, 0][..], &[3, 1], &[2], &[0, 3]]);
    }
}

//! Pretraining: the autoencoder learns to reconstruct its (optionally jittered) inputs with
//! MSE and Adam, on a fresh seeded shuffle every epoch, checkpointed after each epoch.

use candle_core::{Module, Tensor};
use candle_nn::VarMap;
use rand::seq::SliceRandom;

use super::checkpoint::{Checkpointer, Phase};
use super::finetune::finite;
use super::observe::{History, Progress, Watch};
use super::{TrainConfig, TrainError};
use crate::augment::Jitter;
use crate::model::Autoencoder;
use crate::optim::Adam;
use crate::rng;

/// What pretraining reads and where it saves.
pub(super) struct Pretraining<'a> {
    pub(super) cfg: &'a TrainConfig,
    /// Normalised samples, `[n, input_len]`.
    pub(super) xs: &'a Tensor,
    pub(super) jitter: Option<&'a Jitter>,
    pub(super) ae: &'a Autoencoder,
    pub(super) varmap: &'a VarMap,
    pub(super) ckpt: &'a Checkpointer<'a>,
    pub(super) watch: Watch<'a>,
}

impl Pretraining<'_> {
    /// Epochs `from..cfg.epochs` with `opt` (all the autoencoder's variables), appending each
    /// epoch's mean loss to `history`.
    pub(super) fn run(
        &self,
        mut opt: Adam,
        from: usize,
        history: &mut History,
    ) -> Result<(), TrainError> {
        let (cfg, xs) = (self.cfg, self.xs);
        let n = xs.dim(0)?;
        let batches = n.div_ceil(cfg.batch_size);
        for epoch in from..cfg.epochs {
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.shuffle(&mut rng(cfg.seed, 10_000 + epoch as u64));
            let mut jr = rng(cfg.seed, 40_000 + epoch as u64);
            let mut total = 0f64;
            for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
                self.watch.check()?;
                let xb = xs.index_select(&Tensor::new(chunk, xs.device())?, 0)?;
                let xb = Jitter::inputs(self.jitter, xb, &mut jr)?;
                let loss = candle_nn::loss::mse(&self.ae.forward(&xb)?, &xb)?;
                opt.backward_step(&loss)?;
                let l = finite(loss.to_scalar::<f32>()?, || {
                    format!("pretraining epoch {}", epoch + 1)
                })?;
                total += f64::from(l) * chunk.len() as f64;
                self.watch.notify(Progress::Batch {
                    epoch: epoch + 1,
                    batch: b + 1,
                    batches,
                    loss: l,
                });
            }
            let mean = (total / n as f64) as f32;
            tracing::info!(epoch = epoch + 1, loss = mean, "pretraining");
            history.pretrain_loss.push(mean);
            self.watch.notify(Progress::Pretrain {
                epoch: epoch + 1,
                epochs: cfg.epochs,
                loss: mean,
            });
            let phase = Phase::Pretrain {
                epochs_done: epoch + 1,
            };
            self.ckpt.save(self.varmap, &opt, phase, history)?;
        }
        Ok(())
    }
}

//! ClusterGAN (Mukherjee et al., 2019) as a training method: a generator `G` maps a latent
//! code `z = (z_n, z_c)`, Gaussian noise and a one-hot cluster, to a sample; a discriminator
//! `D` tells generated samples from real ones; an encoder `E` inverts `G`, its noise part by
//! squared error and its cluster part (a softmax) by cross-entropy. Because `G` must make a
//! different kind of sample for each one-hot code and `E` must read the code back, the codes
//! of real samples under `E` separate into clusters.
//!
//! Each round, as in the paper's code: a step of `D` on a minibatch of real samples and one
//! of generated ones, then (every round, or every fifth under WGAN-GP) a step of `G` and `E`
//! together on fresh codes, with the loss `adversarial + β_n · mean (z_n - E_n)^2 + 10 ·
//! cross-entropy(z_c, E_c)`; Adam at the paper's 1e-4 with decay rates 0.5 and 0.9. The
//! adversarial loss is a choice ([`GanLoss`]): the paper's WGAN-GP, whose gradient penalty
//! trains `D` through its own input gradient (written out as ops on the weights,
//! [`Discriminator::input_gradient`], as candle has first derivatives only), or by
//! default the standard non-saturating loss with a mode-seeking term, which clusters better in
//! a CPU's budget (README, "ClusterGAN"). `E` and `D` are the product's encoder (so the edge
//! runtime runs `E` as it is) and `G` its decoder.
//!
//! The clustering, as the paper reports it: k-means on `E`'s latent vectors of the data (the
//! noise part and the code's softmax). The export is an ordinary model whose encoder is `E`
//! with its softmax tail, so the edge runtime's nearest centre is that clustering; the
//! generator is kept beside it ([`crate::gan`]).

use std::time::Instant;

use candle_core::{Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dekm_cluster::{Fit, Points};
use dekm_shared::{EncoderSpec, Normalizer, TrainingMetrics};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{Checkpointer, Phase};
use super::finetune::finite;
use super::observe::{History, IterationLog, Progress, Watch};
use super::start::kmeans_config;
use super::{Method, TrainConfig, TrainError, Trained, named_vars};
use crate::data::{Dataset, SampleShape};
use crate::gan::{Discriminator, GanLoss, Generator, GeneratorInfo, NOISE_SD, Prior, init_weights};
use crate::kmeans::{KMeans, KMeansConfig, KMeansInit};
use crate::metrics;
use crate::model::{ConvBackend, Encoder, embed};
use crate::optim::Adam;
use crate::rng;
use crate::rotation::{rotation, within_scatter};

/// Weight of the noise part's squared error in the generator's loss (the paper's `beta_n`).
const BETA_N: f64 = 10.0;
/// Weight of the cluster part's cross-entropy (the paper's `beta_c`).
const BETA_C: f64 = 10.0;
/// Critic steps per generator step under WGAN-GP (the paper's and WGAN-GP's `n_critic`).
const CRITIC_STEPS: usize = 5;
/// Weight of WGAN-GP's gradient penalty (the paper's and WGAN-GP's `lambda`).
const LAMBDA_GP: f64 = 10.0;
/// Weight of the mode-seeking term. MSGAN's 1 gave varied samples but a worse clustering on
/// 10,000 MNIST images (ACC 0.39 after 10 epochs, 0.51 without the term, whose samples of a
/// cluster were all alike); 0.2 keeps the samples apart at 0.48 (docs/RESULTS.md, "ClusterGAN").
const LAMBDA_MS: f64 = 0.2;
/// Adam's decay rates for all three networks (the paper's, those of WGAN-GP).
const BETAS: (f64, f64) = (0.5, 0.9);
/// Codes drawn per cluster to find which code the encoder reads as which cluster.
const CODE_SAMPLES: usize = 256;

/// The three networks, their variables in one map: `encoder.*` (exported), `generator.*`
/// (kept for `dekm sample`) and `discriminator.*` (training only).
pub(super) struct Networks {
    pub(super) encoder: Encoder,
    pub(super) generator: Generator,
    discriminator: Discriminator,
}

impl Networks {
    /// Builds the networks for the encoder `spec` (latent `noise + k`, softmax over the last
    /// `k`) and draws their weights.
    pub(super) fn init(
        spec: &EncoderSpec,
        varmap: &VarMap,
        (seed, backend): (u64, ConvBackend),
        squash: bool,
        dev: &candle_core::Device,
    ) -> Result<Self, TrainError> {
        let vb = VarBuilder::from_varmap(varmap, candle_core::DType::F32, dev);
        let nets = Self {
            encoder: Encoder::new(spec, &vb, backend)?,
            generator: Generator::new(spec, &vb, backend, squash)?,
            discriminator: Discriminator::new(spec, &vb, backend)?,
        };
        init_weights(varmap, seed)?;
        Ok(nets)
    }
}

/// A ClusterGAN run before its networks exist: the data, the settings as used, the encoder's
/// spec and where checkpoints go.
pub(super) struct Setup<'a> {
    pub(super) ds: &'a Dataset,
    pub(super) cfg: &'a TrainConfig,
    /// The encoder's spec: latent `noise + k`, softmax over the last `k`.
    pub(super) spec: EncoderSpec,
    pub(super) normalizer: Normalizer,
    /// The normalised samples, `[n, input_len]`, on the run's device.
    pub(super) xs: &'a Tensor,
    pub(super) ckpt: &'a Checkpointer<'a>,
    pub(super) watch: Watch<'a>,
}

impl Setup<'_> {
    /// Builds the networks (or resumes them from the checkpoint), trains, clusters, and
    /// describes the generator.
    pub(super) fn train(self, mut varmap: VarMap, resume: bool) -> Result<Trained, TrainError> {
        let (cfg, dev) = (self.cfg, self.xs.device());
        if matches!(self.spec, EncoderSpec::Conv1d { .. }) {
            return Err(TrainError::Config(
                "ClusterGAN takes images or vectors, not 1-D convolutions over series: cluster \
                 series with --series-encoder dense"
                    .into(),
            ));
        }
        let squash = matches!(self.ds.shape, SampleShape::Image(_));
        let nets = Networks::init(&self.spec, &varmap, (cfg.seed, cfg.conv), squash, dev)?;
        let prior = Prior {
            noise: cfg.latent,
            k: cfg.k,
            noise_sd: NOISE_SD,
        };
        let mut opt_d = Adam::with_betas(named_vars(&varmap, "discriminator.")?, cfg.lr, BETAS)?;
        let mut g_vars = named_vars(&varmap, "encoder.")?;
        g_vars.extend(named_vars(&varmap, "generator.")?);
        let mut opt_g = Adam::with_betas(g_vars, cfg.lr, BETAS)?;
        let resumed = if resume {
            self.ckpt.load(&mut varmap, dev)?
        } else {
            None
        };
        let (mut history, mut standing) = (History::default(), (0, None, None));
        if let Some((state, moments)) = resumed {
            let Phase::ClusterGan {
                epochs_done,
                codes,
                baseline,
            } = state.phase
            else {
                return Err(self.ckpt.err("it is not a ClusterGAN checkpoint"));
            };
            opt_d.restore(&moments, state.adam_steps)?;
            opt_g.restore(&moments, state.adam_steps)?;
            tracing::info!(epochs_done, "resuming from checkpoint");
            (history, standing) = (state.history, (epochs_done, Some(codes), baseline));
        }
        let started = Instant::now();
        let run = ClusterGan {
            cfg,
            xs: self.xs,
            nets: &nets,
            prior,
            varmap: &varmap,
            ckpt: self.ckpt,
            watch: self.watch,
            labels: self.ds.labels.as_deref(),
        };
        let (km, z, baseline) = run.run((opt_d, opt_g), standing, &mut history)?;
        let (codes, agreement) = run.code_of_cluster(&km)?;
        history.stage_seconds += started.elapsed().as_secs_f64();
        tracing::info!(?codes, ?agreement, "cluster codes");
        let rot = rotation(within_scatter(&z, prior.len(), &km.labels, &km.centroids));
        let generator = GeneratorInfo {
            spec: self.spec.clone(),
            prior,
            squash,
            codes,
            agreement,
            offset: self.normalizer.offset().to_vec(),
            scale: self.normalizer.scale().to_vec(),
        };
        Ok(Trained {
            spec: self.spec,
            varmap,
            encoder: nets.encoder,
            normalizer: self.normalizer,
            kmeans: km,
            rotation: rot,
            z,
            baseline,
            history,
            config: cfg.clone(),
            generator: Some(generator),
        })
    }
}

/// `log(1 + e^x)`, computed without overflow: the logistic loss of a logit.
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// What ClusterGAN reads and where it saves.
pub(super) struct ClusterGan<'a> {
    pub(super) cfg: &'a TrainConfig,
    /// Normalised samples, `[n, input_len]`.
    pub(super) xs: &'a Tensor,
    pub(super) nets: &'a Networks,
    pub(super) prior: Prior,
    pub(super) varmap: &'a VarMap,
    pub(super) ckpt: &'a Checkpointer<'a>,
    pub(super) watch: Watch<'a>,
    /// True classes, only to report metrics per epoch.
    pub(super) labels: Option<&'a [u32]>,
}

/// Where a run stands: epochs done, the clusters the code gave after the last one, and the
/// untrained encoder's k-means metrics.
pub(super) type Standing = (usize, Option<Vec<u32>>, Option<TrainingMetrics>);

/// The run's result: the clustering, the data's latent vectors and the untrained baseline.
pub(super) type Outcome = (KMeans, Vec<f32>, Option<TrainingMetrics>);

impl ClusterGan<'_> {
    /// Epochs `from..cfg.epochs` with the discriminator's and the generator and encoder's
    /// optimisers, each logged to `history` as one clustering iteration (metrics of the
    /// clusters the encoder's code gives the data), checkpointed after each, then k-means on
    /// the data's latent vectors.
    pub(super) fn run(
        &self,
        (mut opt_d, mut opt_g): (Adam, Adam),
        (from, mut previous, mut baseline): Standing,
        history: &mut History,
    ) -> Result<Outcome, TrainError> {
        let cfg = self.cfg;
        self.watch.notify(Progress::Stage {
            method: Method::ClusterGan,
            done: from,
            max_iter: cfg.epochs,
        });
        if from == 0 && baseline.is_none() {
            baseline = self.untrained_baseline()?;
        }
        let mut last = None;
        for epoch in from..cfg.epochs {
            let loss = self.epoch((&mut opt_d, &mut opt_g), epoch)?;
            let z = embed(&self.nets.encoder, self.xs, 1024)?;
            let codes = self.codes(&z);
            let changed = previous
                .as_deref()
                .map_or(1.0, |p| metrics::changed_fraction(p, &codes));
            let log = IterationLog {
                loss,
                changed,
                metrics: self.labels.map(|t| metrics::evaluate(&codes, t)),
            };
            self.watch
                .iteration(Method::ClusterGan, epoch, cfg.epochs, log, history);
            let phase = Phase::ClusterGan {
                epochs_done: epoch + 1,
                codes: codes.clone(),
                baseline,
            };
            self.ckpt
                .save(self.varmap, &(&opt_d, &opt_g), phase, history)?;
            previous = Some(codes);
            last = Some(z);
        }
        // The last epoch's latents are the final ones: the weights have not moved since.
        let z = match last {
            Some(z) => z,
            None => embed(&self.nets.encoder, self.xs, 1024)?,
        };
        let km = kmeans_config(cfg, cfg.epochs, KMeansInit::PlusPlus)
            .fit(&Points::new(&z, self.prior.len())?)?;
        Ok((km, z, baseline))
    }

    /// k-means (one restart) on the untrained encoder's latent vectors, when labels exist: what
    /// the training adds is measured from here.
    fn untrained_baseline(&self) -> Result<Option<TrainingMetrics>, TrainError> {
        let Some(truth) = self.labels else {
            return Ok(None);
        };
        let z = embed(&self.nets.encoder, self.xs, 1024)?;
        let km = KMeansConfig {
            restarts: 1,
            ..kmeans_config(self.cfg, 0, KMeansInit::PlusPlus)
        }
        .fit(&Points::new(&z, self.prior.len())?)?;
        Ok(Some(metrics::evaluate(&km.labels, truth)))
    }

    /// The cluster each sample's code names (the largest of the encoder's softmax tail) in
    /// the latents `z`.
    fn codes(&self, z: &[f32]) -> Vec<u32> {
        let (d, noise) = (self.prior.len(), self.prior.noise);
        z.chunks_exact(d).map(|v| argmax(&v[noise..])).collect()
    }

    /// One epoch: rounds over a shuffled pass of the data, each a discriminator step and,
    /// every round or under WGAN-GP every [`CRITIC_STEPS`]th, a generator-and-encoder step.
    /// Returns the generator's mean loss.
    fn epoch(
        &self,
        (opt_d, opt_g): (&mut Adam, &mut Adam),
        epoch: usize,
    ) -> Result<f32, TrainError> {
        let (cfg, xs, nets, prior) = (self.cfg, self.xs, self.nets, self.prior);
        let dev = xs.device();
        let n = xs.dim(0)?;
        let mut r = rng(cfg.seed, 80_000 + epoch as u64);
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut r);
        let diverged = |what: &str| format!("ClusterGAN epoch {} ({what})", epoch + 1);
        let wgan = cfg.gan_loss == GanLoss::WganGp;
        let (mut total, mut steps) = (0f64, 0usize);
        for (round, chunk) in order.chunks(cfg.batch_size).enumerate() {
            self.watch.check()?;
            let b = chunk.len();
            // The discriminator: real samples against generated ones (the generator held).
            let real = xs.index_select(&Tensor::new(chunk, dev)?, 0)?;
            let codes: Vec<u32> = (0..b).map(|_| r.random_range(0..prior.k as u32)).collect();
            let z = prior.draw(&codes, &mut r, dev)?;
            let fake = nets.generator.forward(&z)?.detach();
            let loss_d = if wgan {
                self.critic_loss(&real, &fake, &mut r)?
            } else {
                let on_real = nets.discriminator.forward(&real)?;
                let on_fake = nets.discriminator.forward(&fake)?;
                (softplus(&on_real.neg()?)?.mean_all()? + softplus(&on_fake)?.mean_all()?)?
            };
            finite(loss_d.to_scalar::<f32>()?, || diverged("discriminator"))?;
            opt_d.step(&loss_d.backward()?)?;
            if wgan && round % CRITIC_STEPS != CRITIC_STEPS - 1 {
                continue;
            }
            let loss_g = self.generator_loss(b, &mut r)?;
            let l = finite(loss_g.to_scalar::<f32>()?, || diverged("generator"))?;
            opt_g.step(&loss_g.backward()?)?;
            total += f64::from(l);
            steps += 1;
        }
        Ok((total / steps.max(1) as f64) as f32)
    }

    /// WGAN-GP's critic loss: `mean D(fake) − mean D(real)` plus [`LAMBDA_GP`] times the mean
    /// of `(|∇D(x̂)| − 1)²` at `x̂` drawn uniformly on each segment from a generated sample to
    /// a real one, where the optimal critic's slope is one.
    fn critic_loss(
        &self,
        real: &Tensor,
        fake: &Tensor,
        r: &mut ChaCha8Rng,
    ) -> candle_core::Result<Tensor> {
        let d = &self.nets.discriminator;
        let b = real.dim(0)?;
        let eps: Vec<f32> = (0..b).map(|_| r.random::<f32>()).collect();
        let eps = Tensor::from_vec(eps, (b, 1), real.device())?;
        let between = (fake + (real - fake)?.broadcast_mul(&eps)?)?.detach();
        let penalty = d.gradient_penalty(&between)?;
        let wasserstein = (d.forward(fake)?.mean_all()? - d.forward(real)?.mean_all()?)?;
        wasserstein + (penalty * LAMBDA_GP)?
    }

    /// The generator and the encoder's loss on `b` fresh codes: fool the discriminator, and be
    /// read back by the encoder. Non-saturating: codes in pairs, each cluster drawn twice
    /// with different noise, so the mode-seeking term can ask the two samples to differ, and
    /// the noise term per unit of the noise's variance. WGAN-GP: the paper's loss.
    fn generator_loss(&self, b: usize, r: &mut ChaCha8Rng) -> candle_core::Result<Tensor> {
        let (nets, prior, dev) = (self.nets, self.prior, self.xs.device());
        let wgan = self.cfg.gan_loss == GanLoss::WganGp;
        let half = b.div_ceil(2);
        let drawn: Vec<u32> = if wgan {
            (0..b).map(|_| r.random_range(0..prior.k as u32)).collect()
        } else {
            let pairs: Vec<u32> = (0..half)
                .map(|_| r.random_range(0..prior.k as u32))
                .collect();
            pairs.iter().chain(&pairs).copied().collect()
        };
        let z = prior.draw(&drawn, r, dev)?;
        let codes = Tensor::new(drawn.as_slice(), dev)?;
        let fake = nets.generator.forward(&z)?;
        let on_fake = nets.discriminator.forward(&fake)?;
        let adversarial = if wgan {
            on_fake.mean_all()?.neg()?
        } else {
            softplus(&on_fake.neg()?)?.mean_all()?
        };
        let read = nets.encoder.forward_linear(&fake)?;
        let noise = prior.noise;
        let noise_err = (read.narrow(1, 0, noise)? - z.narrow(1, 0, noise)?)?
            .sqr()?
            .mean_all()?;
        let code_err = candle_nn::loss::cross_entropy(&read.narrow(1, noise, prior.k)?, &codes)?;
        if wgan {
            return (adversarial + (noise_err * BETA_N)?)? + (code_err * BETA_C)?;
        }
        let seeking = mode_seeking(&fake, &z.narrow(1, 0, noise)?, half)?;
        let noise_weight = BETA_N / (prior.noise_sd * prior.noise_sd);
        ((adversarial + (noise_err * noise_weight)?)? + (code_err * BETA_C)?)?
            + (seeking * LAMBDA_MS)?
    }

    /// For each cluster of `km` (centres in the latent space), the one-hot code whose
    /// generated samples the encoder assigns to it most often, and the fraction of that code's
    /// samples it gets: which code `dekm sample` draws for a cluster.
    pub(super) fn code_of_cluster(&self, km: &KMeans) -> Result<(Vec<u32>, Vec<f32>), TrainError> {
        let (prior, dev) = (self.prior, self.xs.device());
        let (k, d) = (prior.k, prior.len());
        let mut r = rng(self.cfg.seed, 90_000);
        let codes: Vec<u32> = (0..k as u32)
            .flat_map(|c| std::iter::repeat_n(c, CODE_SAMPLES))
            .collect();
        let fake = self.nets.generator.sample(&prior, &codes, &mut r, dev)?;
        let read = embed(&self.nets.encoder, &fake, 1024)?;
        let mut count = vec![vec![0usize; k]; k];
        for (&c, v) in codes.iter().zip(read.chunks_exact(d)) {
            count[c as usize][nearest(v, &km.centroids, d)] += 1;
        }
        Ok((0..k)
            .map(|j| {
                let (code, hits) = (0..k)
                    .map(|c| (c, count[c][j]))
                    .max_by_key(|&(c, hits)| (hits, std::cmp::Reverse(c)))
                    .unwrap_or((0, 0));
                (code as u32, hits as f32 / CODE_SAMPLES as f32)
            })
            .unzip())
    }
}

/// Mode seeking (Mao et al., 2019): the reciprocal of how far apart the samples of the pairs
/// `(i, i + half)` (same cluster, different noise) are, per unit of noise distance. Small
/// when the generator turns different noise into different samples; it grows as a cluster's
/// samples collapse onto one.
fn mode_seeking(fake: &Tensor, noise: &Tensor, half: usize) -> candle_core::Result<Tensor> {
    let apart = |t: &Tensor| -> candle_core::Result<Tensor> {
        (t.narrow(0, 0, half)? - t.narrow(0, half, half)?)?
            .abs()?
            .mean_all()
    };
    let ratio = apart(fake)?.broadcast_div(&apart(noise)?)?;
    (ratio + 1e-5)?.recip()
}

/// Index of the largest value (the first among equals).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Index of the centre (rows of `centroids`, `d` wide) nearest `v`.
fn nearest(v: &[f32], centroids: &[f32], d: usize) -> usize {
    let dist = |c: &[f32]| -> f32 { c.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum() };
    let mut best = (0, f32::INFINITY);
    for (j, c) in centroids.chunks_exact(d).enumerate() {
        let e = dist(c);
        if e < best.1 {
            best = (j, e);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softplus_is_the_logistic_loss_without_overflow() {
        let x = Tensor::new(
            &[-1000f32, -1.0, 0.0, 2.0, 1000.0],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let got = softplus(&x).unwrap().to_vec1::<f32>().unwrap();
        let want = [
            0.0,
            (1.0 + (-1f32).exp()).ln(),
            2f32.ln(),
            (1.0 + 2f32.exp()).ln(),
            1000.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?}");
        }
    }

    #[test]
    fn argmax_and_nearest_pick_the_first_of_equals() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
        assert_eq!(nearest(&[1.0, 1.0], &[0.0, 0.0, 1.0, 1.1, 1.0, 0.9], 2), 1);
    }
}

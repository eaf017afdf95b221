//! DeepCluster (Caron et al., 2018) as a training method: every epoch clusters the network's
//! features with k-means and then trains the network to predict those pseudo-labels as
//! classes. No autoencoder, no reconstruction: the encoder is the network, its latent vector
//! the feature, and a linear classifier on it is replaced every epoch (its classes are the new
//! clustering's, numbered afresh).
//!
//! As in the paper: features are PCA-whitened and L2-normalised before k-means; an empty
//! cluster takes the point farthest from its centre (the paper splits a random non-empty one;
//! both keep k clusters alive); each epoch samples the same number of images from every
//! cluster (with replacement from small ones), so a giant cluster cannot win by majority; the
//! classifier starts from N(0, 0.01) weights and zero bias every epoch. What differs and why is
//! in README ("DeepCluster").
//!
//! The exported model is an ordinary one: the whitening of the last epoch's features is folded
//! into the encoder's linear latent layer, and k-means on those whitened features gives the
//! centres, so the edge runtime's nearest centre is the method's final clustering.

use candle_core::{Module, Tensor, Var};
use candle_nn::VarMap;
use dekm_cluster::pca::Pca;
use dekm_cluster::{Fit, Points};
use dekm_shared::names;
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_distr::{Distribution, Normal};

use super::checkpoint::{Checkpointer, Phase};
use super::finetune::finite;
use super::observe::{History, IterationLog, Progress, Watch};
use super::start::kmeans_config;
use super::{Method, TrainConfig, TrainError};
use crate::augment::Jitter;
use crate::kmeans::{KMeans, KMeansInit};
use crate::metrics;
use crate::model::{Encoder, embed};
use crate::optim::Adam;
use crate::rng;

/// Added to each principal variance before whitening, relative to the largest: keeps a
/// direction the features hardly use (a dead unit) from being blown up to unit variance, and
/// with it the rounding noise of the encoder's arithmetic (at most about 30x the largest
/// axis's scale), so the exported latent space stays as well conditioned as the network's.
const WHITEN_FLOOR: f64 = 1e-3;

/// Standard deviation of the fresh classifier's weights (the paper's `normal_(0, 0.01)`).
const HEAD_SD: f64 = 0.01;

/// What DeepCluster reads and where it saves.
pub(super) struct DeepCluster<'a> {
    pub(super) cfg: &'a TrainConfig,
    /// Normalised samples, `[n, input_len]`.
    pub(super) xs: &'a Tensor,
    pub(super) jitter: Option<&'a Jitter>,
    pub(super) encoder: &'a Encoder,
    pub(super) varmap: &'a VarMap,
    pub(super) ckpt: &'a Checkpointer<'a>,
    pub(super) watch: Watch<'a>,
    /// True classes, only to report metrics per epoch.
    pub(super) labels: Option<&'a [u32]>,
}

impl DeepCluster<'_> {
    /// Epochs `from..cfg.epochs` with `opt` (the encoder's variables), each logged to
    /// `history` as one clustering iteration whose metrics are those of the pseudo-labels it
    /// trained on (so the first is k-means on the untrained network), then the final
    /// clustering on the whitened features. `previous`: the pseudo-labels of epoch `from - 1`
    /// (from the checkpoint). Returns the clustering and the final latent vectors.
    pub(super) fn run(
        &self,
        mut opt: Adam,
        (from, mut previous): (usize, Option<Vec<u32>>),
        history: &mut History,
    ) -> Result<(KMeans, Vec<f32>), TrainError> {
        let (cfg, xs) = (self.cfg, self.xs);
        let (n, d) = (xs.dim(0)?, cfg.latent);
        self.watch.notify(Progress::Stage {
            method: Method::DeepCluster,
            done: from,
            max_iter: cfg.epochs,
        });
        for epoch in from..cfg.epochs {
            let z = embed(self.encoder, xs, 1024)?;
            let pseudo = pseudo_labels(&z, d, cfg, epoch)?;
            let loss = self.epoch(&mut opt, &pseudo, epoch)?;
            let changed = previous
                .as_deref()
                .map_or(1.0, |p| metrics::changed_fraction(p, &pseudo));
            let log = IterationLog {
                loss,
                changed,
                metrics: self.labels.map(|t| metrics::evaluate(&pseudo, t)),
            };
            self.watch
                .iteration(Method::DeepCluster, epoch, cfg.epochs, log, history);
            let phase = Phase::DeepCluster {
                epochs_done: epoch + 1,
                pseudo_labels: pseudo.clone(),
            };
            self.ckpt.save(self.varmap, &opt, phase, history)?;
            previous = Some(pseudo);
        }
        self.finish(n, d)
    }

    /// One epoch: a fresh classifier, then minibatches of a cluster-balanced sample of `n`
    /// ids, each a cross-entropy step on the encoder and the classifier. Returns the mean loss.
    /// (Observers see epochs, as a stage's iterations, not minibatches.)
    fn epoch(&self, opt: &mut Adam, pseudo: &[u32], epoch: usize) -> Result<f32, TrainError> {
        let (cfg, xs) = (self.cfg, self.xs);
        let dev = xs.device();
        let (d, k) = (cfg.latent, cfg.k);
        let mut r = rng(cfg.seed, 60_000 + epoch as u64);
        let normal = Normal::new(0.0, HEAD_SD).map_err(|e| TrainError::Config(e.to_string()))?;
        let w: Vec<f32> = (0..k * d).map(|_| normal.sample(&mut r) as f32).collect();
        let weight = Var::from_tensor(&Tensor::from_vec(w, (k, d), dev)?)?;
        let bias = Var::from_tensor(&Tensor::zeros(k, candle_core::DType::F32, dev)?)?;
        let mut head = Adam::new(
            vec![
                ("head.weight".into(), weight.clone()),
                ("head.bias".into(), bias.clone()),
            ],
            cfg.lr,
        )?;
        let order = balanced_sample(pseudo, k, &mut r);
        let targets = Tensor::new(pseudo, dev)?;
        let mut jr = rng(cfg.seed, 70_000 + epoch as u64);
        let mut total = 0f64;
        for chunk in order.chunks(cfg.batch_size) {
            self.watch.check()?;
            let ids = Tensor::new(chunk, dev)?;
            let xb = Jitter::inputs(self.jitter, xs.index_select(&ids, 0)?, &mut jr)?;
            let logits = self
                .encoder
                .forward(&xb)?
                .matmul(&weight.as_tensor().t()?)?
                .broadcast_add(bias.as_tensor())?;
            let loss = candle_nn::loss::cross_entropy(&logits, &targets.index_select(&ids, 0)?)?;
            let grads = loss.backward()?;
            opt.step(&grads)?;
            head.step(&grads)?;
            let l = finite(loss.to_scalar::<f32>()?, || {
                format!("DeepCluster epoch {}", epoch + 1)
            })?;
            total += f64::from(l) * chunk.len() as f64;
        }
        Ok((total / order.len().max(1) as f64) as f32)
    }

    /// The final clustering: the features' whitening folded into the latent layer, then
    /// k-means (all restarts) on the whitened features, which the exported model reproduces.
    fn finish(&self, n: usize, d: usize) -> Result<(KMeans, Vec<f32>), TrainError> {
        let z = embed(self.encoder, self.xs, 1024)?;
        let (w, mean) = whitening(&z, d)?;
        fold_into_latent(self.varmap, &w, &mean, d)?;
        let z = embed(self.encoder, self.xs, 1024)?;
        debug_assert_eq!(z.len(), n * d);
        let p = Points::new(&z, d)?;
        let km = kmeans_config(self.cfg, self.cfg.epochs, KMeansInit::PlusPlus).fit(&p)?;
        Ok((km, z))
    }
}

/// The whitening map of the features `z` (`[n, d]`): `W` `[d, d]` row-major and the mean.
fn whitening(z: &[f32], d: usize) -> Result<(Vec<f64>, Vec<f64>), TrainError> {
    Ok(Pca::fit(&Points::new(z, d)?, d)?.whitening(WHITEN_FLOOR))
}

/// DeepCluster's pseudo-labels for epoch `epoch`: k-means (one k-means++ run, seeded by the
/// epoch, as the paper's single Faiss run per epoch) on the PCA-whitened, L2-normalised
/// features.
fn pseudo_labels(
    z: &[f32],
    d: usize,
    cfg: &TrainConfig,
    epoch: usize,
) -> Result<Vec<u32>, TrainError> {
    let (w, mean) = whitening(z, d)?;
    let mut y = vec![0f32; z.len()];
    for (x, out) in z.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        for (o, row) in out.iter_mut().zip(w.chunks_exact(d)) {
            *o = row
                .iter()
                .zip(x)
                .zip(&mean)
                .map(|((a, v), m)| a * (f64::from(*v) - m))
                .sum::<f64>() as f32;
        }
        let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            out.iter_mut().for_each(|v| *v /= norm);
        }
    }
    let km = crate::kmeans::KMeansConfig {
        restarts: 1,
        ..kmeans_config(cfg, epoch, KMeansInit::PlusPlus)
    }
    .fit(&Points::new(&y, d)?)?;
    Ok(km.labels)
}

/// A shuffled sample of as many ids as `labels` has, the same number from each non-empty
/// cluster (drawn without replacement while the cluster has enough, with replacement from
/// smaller ones): the paper's uniform sampling over pseudo-labels.
fn balanced_sample(labels: &[u32], k: usize, r: &mut impl Rng) -> Vec<u32> {
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        members[l as usize].push(i as u32);
    }
    let alive: Vec<&Vec<u32>> = members.iter().filter(|m| !m.is_empty()).collect();
    if alive.is_empty() {
        return Vec::new();
    }
    let each = labels.len() / alive.len() + 1;
    let mut order = Vec::with_capacity(each * alive.len());
    for m in alive {
        if m.len() >= each {
            order.extend(m.choose_multiple(r, each).copied());
        } else {
            order.extend((0..each).map(|_| m[r.random_range(0..m.len())]));
        }
    }
    order.shuffle(r);
    order.truncate(labels.len());
    order
}

/// Replaces the latent layer `z = A h + b` with `W (A h + b - mean)`, so the encoder outputs
/// whitened features.
fn fold_into_latent(varmap: &VarMap, w: &[f64], mean: &[f64], d: usize) -> Result<(), TrainError> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Config("variable map lock poisoned".into()))?;
    let get = |what: &str| {
        let name = format!("{}.{what}", names::LATENT);
        vars.get(&name)
            .cloned()
            .ok_or_else(|| TrainError::Config(format!("the encoder has no variable {name}")))
    };
    let (weight, bias) = (get("weight")?, get("bias")?);
    let a = weight.flatten_all()?.to_vec1::<f32>()?;
    let b = bias.flatten_all()?.to_vec1::<f32>()?;
    let pre = a.len() / d;
    let mut a2 = vec![0f32; a.len()];
    let mut b2 = vec![0f32; d];
    for (i, row) in w.chunks_exact(d).enumerate() {
        for (j, &wij) in row.iter().enumerate() {
            for (o, &v) in a2[i * pre..(i + 1) * pre]
                .iter_mut()
                .zip(&a[j * pre..(j + 1) * pre])
            {
                *o += (wij * f64::from(v)) as f32;
            }
        }
        b2[i] = row
            .iter()
            .zip(&b)
            .zip(mean)
            .map(|((wij, bj), m)| wij * (f64::from(*bj) - m))
            .sum::<f64>() as f32;
    }
    weight.set(&Tensor::from_vec(a2, weight.shape(), weight.device())?)?;
    bias.set(&Tensor::from_vec(b2, bias.shape(), bias.device())?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_balanced_sample_draws_every_cluster_equally() {
        // 90 samples in cluster 0, 9 in cluster 1, 1 in cluster 2, none in 3.
        let mut labels = vec![0u32; 90];
        labels.extend([1; 9]);
        labels.push(2);
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let order = balanced_sample(&labels, 4, &mut r);
        assert_eq!(order.len(), labels.len());
        let mut counts = [0usize; 4];
        for &i in &order {
            counts[labels[i as usize] as usize] += 1;
        }
        // 34 drawn from each of the three clusters, cut to 100 after the shuffle.
        assert_eq!(counts[3], 0);
        assert!(
            counts[..3].iter().all(|&c| (30..=34).contains(&c)),
            "{counts:?}"
        );
        // The big cluster is drawn without replacement.
        let mut big: Vec<u32> = order.iter().copied().filter(|&i| i < 90).collect();
        let before = big.len();
        big.sort_unstable();
        big.dedup();
        assert_eq!(big.len(), before);
    }

    #[test]
    fn the_folded_latent_layer_outputs_whitened_features() {
        let dev = candle_core::Device::Cpu;
        let varmap = VarMap::new();
        let (pre, d) = (3, 2);
        let name = |w: &str| format!("{}.{w}", names::LATENT);
        let a = [1.0f32, 2.0, 0.0, 0.5, -1.0, 3.0];
        let b = [0.5f32, -2.0];
        {
            let mut vars = varmap.data().lock().unwrap();
            let var = |v: &[f32], s: &[usize]| {
                Var::from_tensor(&Tensor::from_vec(v.to_vec(), s, &dev).unwrap()).unwrap()
            };
            vars.insert(name("weight"), var(&a, &[d, pre]));
            vars.insert(name("bias"), var(&b, &[d]));
        }
        let hs: Vec<[f32; 3]> = (0..500)
            .map(|i| {
                let t = i as f32 / 50.0;
                [t.sin(), (1.3 * t).cos() * 2.0, (i % 7) as f32 * 0.3]
            })
            .collect();
        let latent = |a: &[f32], b: &[f32]| -> Vec<f32> {
            hs.iter()
                .flat_map(|h| {
                    (0..d).map(move |i| (0..pre).map(|j| a[i * pre + j] * h[j]).sum::<f32>() + b[i])
                })
                .collect()
        };
        let z = latent(&a, &b);
        let (w, mean) = whitening(&z, d).unwrap();
        fold_into_latent(&varmap, &w, &mean, d).unwrap();
        let vars = varmap.data().lock().unwrap();
        let read = |n: &str| {
            vars[&name(n)]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let y = latent(&read("weight"), &read("bias"));
        let n = hs.len() as f64;
        for i in 0..d {
            let m = y.chunks(d).map(|r| f64::from(r[i])).sum::<f64>() / n;
            assert!(m.abs() < 1e-4, "mean {m}");
            for j in 0..d {
                let c = y.chunks(d).map(|r| f64::from(r[i] * r[j])).sum::<f64>() / n;
                // Unit variance up to the floor, which leaves an axis of variance λ at
                // λ / (λ + 1e-3 λ_max): 0.995 for this data's second axis.
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((c - want).abs() < 1e-2, "cov[{i}][{j}] = {c}");
            }
        }
    }
}

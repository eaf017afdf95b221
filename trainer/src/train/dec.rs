//! DEC (Xie et al., 2016) and IDEC (Guo et al., 2017) as the clustering stage: Student-t soft
//! assignments to trained centres, pulled towards the sharpened target distribution computed
//! on all samples every iteration; IDEC keeps the reconstruction loss beside it.

use candle_core::{Module, Tensor, Var};

use super::finetune::Finetune;
use super::observe::{History, IterationLog, Progress};
use super::{Method, TrainError};
use crate::kmeans::KMeans;
use crate::metrics;
use crate::model::{Autoencoder, embed};
use crate::optim::Adam;

/// What the DEC / IDEC stage needs from [`super::train`].
pub(super) struct DecRun<'a> {
    pub(super) ft: &'a Finetune<'a>,
    pub(super) ae: &'a Autoencoder,
    /// Trained with the centres: the encoder's variables (DEC) or all (IDEC).
    pub(super) vars: Vec<(String, Var)>,
    pub(super) labels: Option<&'a [u32]>,
    pub(super) km: KMeans,
    pub(super) history: &'a mut History,
}

/// Student-t soft assignments (one degree of freedom) of rows `z` `[b, d]` to `mu` `[k, d]`.
fn soft_assign(z: &Tensor, mu: &Tensor) -> candle_core::Result<Tensor> {
    let diff = z.unsqueeze(1)?.broadcast_sub(&mu.unsqueeze(0)?)?;
    let q = (diff.sqr()?.sum(2)? + 1.0)?.recip()?;
    q.broadcast_div(&q.sum_keepdim(1)?)
}

/// DEC's target: `q²` divided by the cluster frequency, normalised per row.
fn target_distribution(q: &[f32], k: usize) -> Vec<f32> {
    let mut f = vec![0f32; k];
    for row in q.chunks_exact(k) {
        for (s, v) in f.iter_mut().zip(row) {
            *s += v;
        }
    }
    let mut p = vec![0f32; q.len()];
    for (row, out) in q.chunks_exact(k).zip(p.chunks_exact_mut(k)) {
        for ((o, v), fj) in out.iter_mut().zip(row).zip(&f) {
            *o = v * v / fj.max(f32::MIN_POSITIVE);
        }
        let s: f32 = out.iter().sum();
        out.iter_mut().for_each(|o| *o /= s.max(f32::MIN_POSITIVE));
    }
    p
}

/// Hard labels from soft assignments.
fn argmax_rows(q: &[f32], k: usize) -> Vec<u32> {
    q.chunks_exact(k)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (j, &v)| if v > b.1 { (j, v) } else { b },
                )
                .0 as u32
        })
        .collect()
}

/// DEC or IDEC fine-tuning: every iteration recomputes the target distribution on all samples,
/// then takes `steps_per_iter` Adam steps (learning rate `finetune_lr`) on the encoder and the
/// centres (and the decoder for IDEC); stops when fewer than `tol` labels change. Returns the
/// clustering (centres, argmax labels) and the final embedding.
pub(super) fn dec_stage(r: DecRun<'_>) -> Result<(KMeans, Vec<f32>), TrainError> {
    let (cfg, xs) = (r.ft.cfg, r.ft.xs);
    let dev = xs.device().clone();
    let (n, d, k) = (xs.dim(0)?, cfg.latent, cfg.k);
    let mu = Var::from_tensor(&Tensor::from_vec(r.km.centroids.clone(), (k, d), &dev)?)?;
    let idec = cfg.method == Method::Idec;
    let mut vars = r.vars;
    vars.push(("dec.centres".into(), mu.clone()));
    let mut opt = Adam::new(vars, cfg.finetune_lr)?;
    let method = if idec { Method::Idec } else { Method::Dec };
    let name = method.label();
    r.ft.watch.notify(Progress::Stage {
        method,
        done: 0,
        max_iter: cfg.max_iter,
    });
    let mut labels = r.km.labels.clone();
    let embed_q = |mu: &Tensor| -> Result<(Vec<f32>, Vec<f32>), TrainError> {
        let z = embed(&r.ae.encoder, xs, 1024)?;
        let zt = Tensor::from_vec(z.clone(), (n, d), &dev)?;
        let q = soft_assign(&zt, mu)?.flatten_all()?.to_vec1::<f32>()?;
        Ok((z, q))
    };
    // The embedding after one iteration is the one the next starts from: one pass each.
    let (mut z, mut q) = embed_q(mu.as_tensor())?;
    for it in 0..cfg.max_iter {
        let p = Tensor::from_vec(target_distribution(&q, k), (n, k), &dev)?;
        let loss = r.ft.iteration(name, it, 30_000, &mut opt, |ids, xb| {
            let z = r.ae.encoder.forward(xb)?;
            let qb = soft_assign(&z, mu.as_tensor())?;
            let pb_ = p.index_select(ids, 0)?;
            // KL(P || Q), averaged over the batch (the P log P term is constant but keeps the
            // loss a true divergence, so it reads as zero at the optimum).
            let kl = (&pb_ * (pb_.clamp(1e-10, 1.0)?.log()? - qb.clamp(1e-10, 1.0)?.log()?)?)?
                .sum_all()?
                .affine(1.0 / ids.dim(0)? as f64, 0.0)?;
            if idec {
                let recon = candle_nn::loss::mse(&r.ae.decoder.forward(&z)?, xb)?;
                recon + kl.affine(0.1, 0.0)?
            } else {
                Ok(kl)
            }
        })?;
        (z, q) = embed_q(mu.as_tensor())?;
        let new = argmax_rows(&q, k);
        let changed = metrics::changed_fraction(&labels, &new);
        labels = new;
        let log = IterationLog {
            loss,
            changed,
            metrics: r.labels.map(|t| metrics::evaluate(&labels, t)),
        };
        r.ft.watch
            .iteration(method, it, cfg.max_iter, log, r.history);
        if changed < cfg.tol {
            break;
        }
    }
    let centroids = mu.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    // The nearest centre is exactly the largest Student-t assignment, so the exported head
    // (nearest centroid in the rotated space) reproduces DEC's labels.
    let labels = argmax_rows(&q, k);
    let inertia = z
        .chunks_exact(d)
        .zip(&labels)
        .map(|(x, &l)| {
            let c = &centroids[l as usize * d..(l as usize + 1) * d];
            x.iter()
                .zip(c)
                .map(|(a, b)| f64::from((a - b) * (a - b)))
                .sum::<f64>()
        })
        .sum();
    Ok((
        KMeans {
            d,
            centroids,
            labels,
            inertia,
        },
        z,
    ))
}

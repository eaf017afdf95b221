//! The DEKM stage (Guo et al., "Deep Embedded K-Means Clustering", 2021): with `V` from the
//! eigenvectors of the within-cluster scatter `Sw`, each sample's target is `y' = V z` with the
//! last (largest-eigenvalue, most discriminative) coordinate replaced by its centroid's; the
//! encoder is fine-tuned on `‖V z − y'‖²`, then k-means, `Sw` and `V` are recomputed, until
//! fewer than `tol` of the assignments change.

use candle_core::{Module, Tensor};
use candle_nn::VarMap;

use super::checkpoint::{Checkpointer, Held, Phase};
use super::finetune::Finetune;
use super::observe::{History, IterationLog, Progress};
use super::start::kmeans_config;
use super::{Method, TrainError};
use crate::data::Dataset;
use crate::kmeans::{KMeans, KMeansInit};
use crate::metrics;
use crate::model::{Autoencoder, embed};
use crate::optim::Adam;
use crate::rotation::{Rotation, rotation, within_scatter};
use dekm_cluster::{Fit, Points};
use dekm_shared::TrainingMetrics;

/// Where the stage stands: a fresh start, or a checkpoint's iteration.
pub(super) struct Position {
    /// The clustering of the current embedding.
    pub(super) km: KMeans,
    /// The current embedding, `[n, d]`.
    pub(super) z: Vec<f32>,
    /// Iterations done.
    pub(super) done: usize,
    /// Whether a manifold start is still held (see [`Held`]).
    pub(super) held: bool,
    /// Whether the run has converged.
    pub(super) converged: bool,
    /// AE + k-means' metrics, saved with every checkpoint.
    pub(super) baseline: Option<TrainingMetrics>,
}

/// What the stage trains and where it saves.
pub(super) struct DekmStage<'a> {
    pub(super) ft: &'a Finetune<'a>,
    pub(super) ds: &'a Dataset,
    pub(super) ae: &'a Autoencoder,
    pub(super) varmap: &'a VarMap,
    pub(super) ckpt: &'a Checkpointer<'a>,
}

impl DekmStage<'_> {
    /// Iterates from `at` with `opt` (the encoder's variables) until convergence or
    /// `max_iter`; returns the final clustering, embedding and rotation.
    pub(super) fn run(
        &self,
        mut opt: Adam,
        at: Position,
        history: &mut History,
    ) -> Result<(KMeans, Vec<f32>, Rotation), TrainError> {
        let (cfg, xs) = (self.ft.cfg, self.ft.xs);
        let (n, d) = (xs.dim(0)?, cfg.latent);
        let Position {
            mut km,
            mut z,
            done: mut start,
            mut held,
            mut converged,
            baseline,
        } = at;
        let mut rot = rotation(within_scatter(&z, d, &km.labels, &km.centroids));
        self.ft.watch.notify(Progress::Stage {
            method: Method::Dekm,
            done: start,
            max_iter: cfg.max_iter,
        });
        while start < cfg.max_iter && !converged {
            let it = start;
            let vt = Tensor::from_vec(rot.v.clone(), (d, d), xs.device())?
                .t()?
                .contiguous()?;
            let targets = dekm_targets(&z, d, &km, &rot);
            let targets = Tensor::from_vec(targets, (n, d), xs.device())?;
            let loss = self.ft.iteration("DEKM", it, 20_000, &mut opt, |ids, xb| {
                // Targets come from the clean images; the encoder sees jittered ones, so it
                // learns to put a shifted or turned digit where the original belongs.
                let yb = self.ae.encoder.forward(xb)?.matmul(&vt)?;
                candle_nn::loss::mse(&yb, &targets.index_select(ids, 0)?)
            })?;
            z = embed(&self.ae.encoder, xs, 1024)?;
            let changed;
            if held {
                // Lloyd's k-means from the held clusters' centres measures the disagreement
                // and, on release, takes over (see [`Held`]).
                let p = Points::new(&z, d)?;
                let current = KMeans::from_labels(&p, cfg.k, std::mem::take(&mut km.labels))?;
                let init = KMeansInit::Precomputed(current.centroids.clone());
                let new = kmeans_config(cfg, it + 1, init).fit(&p)?;
                changed = metrics::changed_fraction(&current.labels, &new.labels);
                held = changed >= cfg.tol && it + 1 < cfg.max_iter;
                if held {
                    tracing::info!(disagreement = changed, "manifold start held");
                    km = current;
                } else {
                    km = new;
                }
            } else {
                let init = KMeansInit::Warm(km.centroids.clone());
                let new = kmeans_config(cfg, it + 1, init).fit(&Points::new(&z, d)?)?;
                changed = metrics::changed_fraction(&km.labels, &new.labels);
                km = new;
            }
            rot = rotation(within_scatter(&z, d, &km.labels, &km.centroids));
            let log = IterationLog {
                loss,
                changed,
                metrics: self
                    .ds
                    .labels
                    .as_ref()
                    .map(|t| metrics::evaluate(&km.labels, t)),
            };
            self.ft
                .watch
                .iteration(Method::Dekm, it, cfg.max_iter, log, history);
            start += 1;
            converged = !held && changed < cfg.tol;
            let phase = Phase::Dekm {
                iterations_done: start,
                centroids: km.centroids.clone(),
                baseline,
                converged,
                held: held.then(|| Held {
                    labels: km.labels.clone(),
                }),
            };
            self.ckpt.save(self.varmap, &opt, phase, history)?;
        }
        Ok((km, z, rot))
    }
}

/// `y' = V z` for every sample, with the last coordinate replaced by the centroid's.
fn dekm_targets(z: &[f32], d: usize, km: &KMeans, rot: &Rotation) -> Vec<f32> {
    let mut mu_last = vec![0f32; km.centroids.len() / d];
    let mut y = vec![0f32; d];
    for (m, mu) in mu_last.iter_mut().zip(km.centroids.chunks_exact(d)) {
        rot.project(mu, &mut y);
        *m = y[d - 1];
    }
    let mut out = vec![0f32; z.len()];
    for ((x, o), &l) in z
        .chunks_exact(d)
        .zip(out.chunks_exact_mut(d))
        .zip(&km.labels)
    {
        rot.project(x, o);
        o[d - 1] = mu_last[l as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_move_only_the_last_coordinate_to_the_centroid() {
        let rot = Rotation {
            d: 2,
            v: vec![0.0, 1.0, 1.0, 0.0],
            eigenvalues: vec![1.0, 2.0],
        };
        let km = KMeans {
            d: 2,
            centroids: vec![5.0, 0.0, -5.0, 1.0],
            labels: vec![0, 1],
            inertia: 0.0,
        };
        // y = (z1, z0); last coordinate becomes the centroid's z0.
        let t = dekm_targets(&[4.0, 0.5, -6.0, 2.0], 2, &km, &rot);
        assert_eq!(t, [0.5, 5.0, 2.0, -5.0]);
    }
}

//! N2D (McConville et al., 2020): a Gaussian mixture on a UMAP layout.
//!
//! Past [`N2dConfig::LAYOUT_MAX`] points the layout is of a seeded sample of that many: its
//! optimisation is one thread (for reproducibility) and grows with the points, so a million
//! would take most of an hour. Every other point is placed where umap-learn's `transform`
//! starts a new point, at the mean of its nearest sample points' positions weighted by their
//! membership strengths, and takes the component the mixture (fitted on the sample) gives it
//! there. Up to the limit nothing changes.

use rand::seq::index::sample;

use super::{UmapConfig, layout_with, strengths};
use crate::neighbours::{Neighbours, Search, nearest_in};
use crate::{ClusterError, Fit, Fitted, Points, Predict, rng};

/// Which mixture on the layout N2D keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixture {
    /// EM once, from the lowest-inertia of 10 k-means++ starts (see
    /// [`GmmConfig::restarts`](crate::gmm::GmmConfig::restarts)): the cheaper choice where the
    /// best k-means start is the right partition. It was the likelihood's rival on 10-d
    /// latents (the likeliest of 10 kept a merged pair on 2 of 5 layouts of the demo's sensor
    /// data), until a dense latent of MNIST showed the opposite: the lowest-inertia start merged
    /// two digits where the likeliest mixture did not (docs/RESULTS.md, "the likeliest mixture
    /// on a dense latent"); dekm's own starts keep the likeliest now.
    BestStart,
    /// EM from each of this many single k-means++ starts, the likeliest mixture kept
    /// ([`fit_likeliest`](crate::gmm::fit_likeliest)): for layouts with many local optima of
    /// about the same fit (a convolutional feature map).
    Likeliest(u64),
}

/// N2D's clustering (McConville et al., 2020): a full-covariance Gaussian mixture of `k`
/// components on a `k`-dimensional UMAP layout of the points (N2D's settings,
/// [`UmapConfig::new`]), kept as `mixture` says. N2D's own mixture starts from a single k-means
/// run; on these layouts that merged two clusters and split a third often enough to undo what
/// the layout gains.
///
/// [`GmmConfig::new`]: crate::gmm::GmmConfig::new
/// [`GmmConfig::restarts`]: crate::gmm::GmmConfig::restarts
/// [`fit_likeliest`]: crate::gmm::fit_likeliest
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct N2dConfig<'a> {
    /// Clusters (and the layout's dimension).
    pub k: usize,
    /// Seed of the layout and the mixture's starts.
    pub seed: u64,
    /// Which mixture is kept.
    pub mixture: Mixture,
    /// Each point's nearest others when already found (a GPU's distance products; there must be
    /// [`N2dConfig::neighbours_needed`] per point), else the exact search runs. Not used past
    /// [`N2dConfig::LAYOUT_MAX`] points, where the sample's own neighbours are searched.
    pub neighbours: Option<&'a Neighbours>,
}

impl N2dConfig<'_> {
    /// Points up to which the layout is of all of them; past it, of a seeded sample of this
    /// many (see the module). Two minutes of layout on this many 10-d points on one core.
    pub const LAYOUT_MAX: usize = 200_000;

    /// The neighbours per point N2D's graph is built on for `n` points and `k` clusters.
    pub fn neighbours_needed(n: usize, k: usize) -> usize {
        UmapConfig::new(k).neighbors.min(n.saturating_sub(1)).max(2) - 1
    }

    /// Whether all `n` points are laid out (and precomputed [`N2dConfig::neighbours`] used).
    pub fn lays_out_all(n: usize) -> bool {
        n <= Self::LAYOUT_MAX
    }

    fn mixture(&self, y: &Points<'_>) -> Result<crate::gmm::Gmm, ClusterError> {
        let gmm = crate::gmm::GmmConfig {
            seed: self.seed,
            ..crate::gmm::GmmConfig::new(self.k, crate::gmm::Covariance::Full)
        };
        match self.mixture {
            Mixture::BestStart => gmm.fit(y),
            Mixture::Likeliest(starts) => crate::gmm::fit_likeliest(y, &gmm, starts),
        }
    }

    /// The layout of a seeded sample of `size` points (< n), the others placed by their
    /// nearest sample points, and every point's component.
    pub(super) fn fit_sampled(
        &self,
        p: &Points<'_>,
        cfg: &UmapConfig,
        size: usize,
    ) -> Result<N2d, ClusterError> {
        let (n, d, k) = (p.len(), p.dim(), self.k);
        let mut chosen = sample(&mut rng(self.seed, 2), n, size).into_vec();
        chosen.sort_unstable();
        let mut in_sample = vec![false; n];
        let mut xs = Vec::with_capacity(chosen.len() * d);
        for &i in &chosen {
            in_sample[i] = true;
            xs.extend_from_slice(p.row(i));
        }
        let sp = Points::new(&xs, d)?;
        let y = layout_with(&sp, cfg, None)?;
        let layout = Points::new(&y, k)?;
        let gmm = self.mixture(&layout)?;
        let rest: Vec<usize> = (0..n).filter(|&i| !in_sample[i]).collect();
        let rest_xs: Vec<f32> = rest
            .iter()
            .flat_map(|&i| p.row(i).iter().copied())
            .collect();
        let m = cfg.neighbors - 1;
        let found = nearest_in(&sp, &Points::new(&rest_xs, d)?, m, Search::Auto)?;
        let mean_all = found
            .iter()
            .flatten()
            .map(|&(d2, _)| f64::from(d2).sqrt())
            .sum::<f64>()
            / (found.len() * m) as f64;
        let mut placed = vec![0f32; rest.len() * k];
        let (mut ds, mut w) = (vec![0f32; m], vec![0f32; m]);
        for (row, out) in found.iter().zip(placed.chunks_exact_mut(k)) {
            for (o, &(d2, _)) in ds.iter_mut().zip(row) {
                *o = d2.sqrt();
            }
            strengths(&ds, cfg.neighbors, mean_all, &mut w);
            let total: f32 = w.iter().sum();
            for (&(_, j), &wj) in row.iter().zip(&w) {
                for (o, &v) in out.iter_mut().zip(&y[j as usize * k..(j as usize + 1) * k]) {
                    *o += wj / total * v;
                }
            }
        }
        let rest_labels = gmm.predict(&Points::new(&placed, k)?)?;
        let mut labels = vec![0u32; n];
        for (&i, &l) in chosen.iter().zip(&gmm.labels) {
            labels[i] = l;
        }
        for (&i, &l) in rest.iter().zip(&rest_labels) {
            labels[i] = l;
        }
        Ok(N2d { labels })
    }
}

/// N2D's partition of the points it was fitted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct N2d {
    /// Each point's component.
    pub labels: Vec<u32>,
}

impl Fit for N2dConfig<'_> {
    type Model = N2d;

    fn fit(&self, p: &Points<'_>) -> Result<N2d, ClusterError> {
        let k = self.k;
        if k == 0 || k > p.len() {
            return Err(ClusterError::BadK { k, n: p.len() });
        }
        let cfg = UmapConfig {
            seed: self.seed,
            neighbors: Self::neighbours_needed(p.len(), k) + 1,
            ..UmapConfig::new(k)
        };
        if !Self::lays_out_all(p.len()) {
            return self.fit_sampled(p, &cfg, Self::LAYOUT_MAX);
        }
        let y = layout_with(p, &cfg, self.neighbours)?;
        Ok(N2d {
            labels: self.mixture(&Points::new(&y, k)?)?.labels,
        })
    }
}

impl Fitted for N2d {
    fn assignments(&self) -> Vec<Option<u32>> {
        self.labels.iter().copied().map(Some).collect()
    }
}

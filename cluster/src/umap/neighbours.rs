//! Each point's nearest others: the exact search UMAP's graph is built on, and neighbourhoods
//! found elsewhere (a GPU's distance products), checked before the graph uses them.

use rayon::prelude::*;

use crate::{ClusterError, Points};

/// Every point's `m` nearest other points, found elsewhere (a GPU's batched distance products):
/// what UMAP's graph is built on, checked so the layout never sees a malformed neighbourhood.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    m: usize,
    idx: Vec<u32>,
    dist: Vec<f32>,
}

impl Neighbours {
    /// `idx` and `dist` row-major `[n, m]`: each row the indices of point `i`'s neighbours
    /// (never `i`, each below `n`) and their Euclidean distances, finite, non-negative and
    /// ascending.
    pub fn new(n: usize, m: usize, idx: Vec<u32>, dist: Vec<f32>) -> Result<Self, ClusterError> {
        for (what, got) in [
            ("neighbour indices", idx.len()),
            ("neighbour distances", dist.len()),
        ] {
            if m == 0 || got != n * m {
                return Err(ClusterError::Shape {
                    what,
                    expected: n * m.max(1),
                    got,
                });
            }
        }
        let bad = |i: usize, reason: &'static str| ClusterError::Parameter {
            name: "neighbours",
            value: format!("row {i}"),
            reason,
        };
        for (i, (js, ds)) in idx.chunks_exact(m).zip(dist.chunks_exact(m)).enumerate() {
            if js.iter().any(|&j| j as usize >= n || j as usize == i) {
                return Err(bad(i, "indices must name other points"));
            }
            if ds.iter().any(|d| !(d.is_finite() && *d >= 0.0))
                || ds.windows(2).any(|w| w[0] > w[1])
            {
                return Err(bad(
                    i,
                    "distances must be finite, non-negative and ascending",
                ));
            }
        }
        Ok(Self { m, idx, dist })
    }

    /// Neighbours per point.
    pub fn m(&self) -> usize {
        self.m
    }

    /// The indices and distances, row-major `[n, m]`.
    pub fn parts(&self) -> (&[u32], &[f32]) {
        (&self.idx, &self.dist)
    }
}

/// The exact `m` nearest other points of every point: indices and Euclidean distances, each
/// row sorted by distance (then index), row-major `[n, m]`. The search UMAP's graph is built
/// on, for callers that need the same neighbourhoods (it grows with n²).
pub fn nearest_neighbours(p: &Points<'_>, m: usize) -> Result<(Vec<u32>, Vec<f32>), ClusterError> {
    if m == 0 || m >= p.len() {
        return Err(ClusterError::Parameter {
            name: "neighbours",
            value: m.to_string(),
            reason: "must be at least 1 and less than the number of points",
        });
    }
    Ok(neighbours(p, m))
}

/// [`nearest_neighbours`] without the check (`0 < m < n`).
pub(super) fn neighbours(p: &Points<'_>, m: usize) -> (Vec<u32>, Vec<f32>) {
    let n = p.len();
    let rows: Vec<Vec<(f32, u32)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let x = p.row(i);
            let mut best: Vec<(f32, u32)> = Vec::with_capacity(m + 1);
            for (j, y) in p.rows().enumerate() {
                if j == i {
                    continue;
                }
                let d2: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
                if best.len() == m && d2 >= best[m - 1].0 {
                    continue;
                }
                let at = best.partition_point(|&(e, _)| e <= d2);
                best.insert(at, (d2, j as u32));
                best.truncate(m);
            }
            best
        })
        .collect();
    let mut idx = Vec::with_capacity(n * m);
    let mut dist = Vec::with_capacity(n * m);
    for row in rows {
        for (d2, j) in row {
            idx.push(j);
            dist.push(d2.sqrt());
        }
    }
    (idx, dist)
}

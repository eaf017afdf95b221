//! Each point's nearest others: what UMAP's graph, N2D's placement of points beyond its sample
//! and DBSCAN's neighbourhoods are built on.
//!
//! Two exact searches, chosen by dimension ([`Search::Auto`]):
//! - a k-d tree ([`KdTree`]) up to [`TREE_MAX_DIM`] coordinates: O(n log n) in practice on an
//!   autoencoder's latent or a layout; 1,000,000 points of dimension 10 in under three minutes
//!   on two cores (docs/RESULTS.md);
//! - blocked distance products above it (`scan`): O(n² d) but at GEMM speed, for raw pixels and
//!   sentence embeddings, where a tree prunes little.
//!
//! The promise, for both: the answer is the brute-force scan's, ties broken by the lower index,
//! the same at every thread count. The tree computes each distance as the scan does; the
//! products re-rank their candidates by the scan's own expression (see `scan` for the one
//! rounding caveat).
//!
//! No approximate index: an HNSW graph (`instant-distance`) built on one thread, the only way
//! its answer does not depend on the thread schedule, had not finished 300,000 50-d points in
//! 15 minutes where the exact products took 166 s (docs/RESULTS.md, "Neighbours"). N2D never
//! searches more than its 200,000-point sample, so the products bound its cost.

use rayon::prelude::*;

use crate::{ClusterError, Points};

mod scan;
mod tree;

pub use tree::KdTree;

/// Coordinates up to which [`Search::Auto`] uses the k-d tree: above it a tree's cells are too
/// wide to prune and the blocked products win (measured, docs/RESULTS.md "Neighbours").
pub const TREE_MAX_DIM: usize = 16;

/// How neighbours are searched. Every choice gives the same answer (see the module's promise);
/// they differ in time only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Search {
    /// The tree up to [`TREE_MAX_DIM`] coordinates, the products above.
    #[default]
    Auto,
    /// The k-d tree.
    Tree,
    /// Blocked distance products.
    Products,
}

/// The `m` best candidates so far, ascending by (squared distance, index).
struct Best {
    m: usize,
    items: Vec<(f32, u32)>,
}

impl Best {
    fn new(m: usize) -> Self {
        Self {
            m,
            items: Vec::with_capacity(m + 1),
        }
    }

    /// Whether a cell whose points are at least `bound` (squared) away may hold a better one.
    fn admits(&self, bound: f64, slack: f64) -> bool {
        self.items.len() < self.m || bound <= f64::from(self.items[self.m - 1].0) * slack
    }

    /// Keeps `(d2, id)` if it is among the `m` best so far.
    fn offer(&mut self, d2: f32, id: u32) {
        let key = |e: &(f32, u32)| (e.0, e.1);
        if self.items.len() == self.m && (d2, id) >= key(&self.items[self.m - 1]) {
            return;
        }
        let at = self.items.partition_point(|e| key(e) < (d2, id));
        self.items.insert(at, (d2, id));
        self.items.truncate(self.m);
    }
}

/// Every point's `m` nearest other points: what UMAP's graph is built on, from [`nearest`] or
/// found elsewhere (a GPU's batched distance products) and checked, so the layout never sees a
/// malformed neighbourhood.
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

    /// From rows of (squared distance, index), `m` each, ascending.
    fn from_rows(m: usize, rows: Vec<Vec<(f32, u32)>>) -> Self {
        let mut idx = Vec::with_capacity(rows.len() * m);
        let mut dist = Vec::with_capacity(rows.len() * m);
        for row in rows {
            for (d2, j) in row {
                idx.push(j);
                dist.push(d2.max(0.0).sqrt());
            }
        }
        Self { m, idx, dist }
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

/// The exact `m` nearest other points of every point (see the module's promise).
pub fn nearest(p: &Points<'_>, m: usize, search: Search) -> Result<Neighbours, ClusterError> {
    check_m(m, p.len())?;
    let rows = Index::new(p, search).nearest_all(p, m, true);
    Ok(Neighbours::from_rows(m, rows))
}

/// The exact `m` nearest points of `reference` to each point of `queries` (of the same
/// dimension), as (squared distance, index) ascending by distance then index.
pub fn nearest_in(
    reference: &Points<'_>,
    queries: &Points<'_>,
    m: usize,
    search: Search,
) -> Result<Vec<Vec<(f32, u32)>>, ClusterError> {
    if queries.dim() != reference.dim() {
        return Err(ClusterError::Shape {
            what: "query dimension",
            expected: reference.dim(),
            got: queries.dim(),
        });
    }
    if m == 0 || m > reference.len() {
        return Err(ClusterError::Parameter {
            name: "neighbours",
            value: m.to_string(),
            reason: "must be at least 1 and at most the number of reference points",
        });
    }
    Ok(Index::new(reference, search).nearest_all(queries, m, false))
}

fn check_m(m: usize, n: usize) -> Result<(), ClusterError> {
    if m == 0 || m >= n {
        return Err(ClusterError::Parameter {
            name: "neighbours",
            value: m.to_string(),
            reason: "must be at least 1 and less than the number of points",
        });
    }
    Ok(())
}

impl Search {
    /// The search that runs on points of `dim` coordinates: [`Search::Auto`] resolved, the
    /// others as they are.
    pub fn resolve(self, dim: usize) -> Search {
        match self {
            Search::Auto if dim <= TREE_MAX_DIM => Search::Tree,
            Search::Auto => Search::Products,
            chosen => chosen,
        }
    }
}

/// A built search structure over reference points.
enum Index<'a> {
    Tree(KdTree),
    Products(scan::Scan<'a>),
}

impl<'a> Index<'a> {
    /// The structure `search` names over `p`.
    fn new(p: &Points<'a>, search: Search) -> Self {
        match search.resolve(p.dim()) {
            Search::Tree => Self::Tree(KdTree::new(p)),
            _ => Self::Products(scan::Scan::new(p)),
        }
    }

    /// Each query's `m` nearest; with `self_query`, query `i` is reference point `i` and is
    /// skipped.
    fn nearest_all(
        &self,
        queries: &Points<'_>,
        m: usize,
        self_query: bool,
    ) -> Vec<Vec<(f32, u32)>> {
        match self {
            Self::Tree(t) => (0..queries.len())
                .into_par_iter()
                .with_min_len(256)
                .map(|i| t.nearest(queries.row(i), m, self_query.then_some(i as u32)))
                .collect(),
            Self::Products(s) => s.nearest_all(queries, m, self_query),
        }
    }
}

#[cfg(test)]
mod tests;

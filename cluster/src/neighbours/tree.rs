//! A k-d tree over the points (Bentley, 1975; Friedman, Bentley & Finkel's search with Arya and
//! Mount's incremental cell distance): exact nearest-neighbour and radius queries in
//! O(log n) expected time for the low dimensions UMAP and DBSCAN work in (an autoencoder's
//! latent, a layout), where the brute-force scan is O(n).
//!
//! Exactness is the point, not an aside: a leaf computes each distance with the very
//! expression the brute-force scan uses, candidates are ordered by (distance, index), and a
//! cell is skipped only when its lower bound exceeds the worst kept distance by more than the
//! rounding of that expression could explain. So a query answers what the scan answers, ties
//! included, whatever the thread count.

use super::Best;
use crate::{Points, sq64};

/// Points per leaf: small enough that a leaf is scanned from cache, large enough that the tree
/// stays shallow.
const LEAF: usize = 16;

/// One node: a leaf holds `start..end` of the tree order; an inner node splits on `dim` at
/// `split` (its left child holds coordinates `<= split`, its right child `>= split`).
#[derive(Debug, Clone, Copy)]
struct Node {
    start: u32,
    end: u32,
    dim: u32,
    split: f32,
    /// Children, `NONE` in a leaf.
    left: u32,
    right: u32,
}

const NONE: u32 = u32::MAX;

/// A k-d tree over a set of points, their coordinates copied in tree order so that a leaf is
/// contiguous.
#[derive(Debug, Clone)]
pub struct KdTree {
    dim: usize,
    xs: Vec<f32>,
    ids: Vec<u32>,
    nodes: Vec<Node>,
    /// Relative slack of the pruning bound: the f32 distance of `dim` terms can round below the
    /// exact one by about `dim` units in the last place.
    slack: f64,
}

impl KdTree {
    /// Builds the tree: each inner node splits its points at the median of their widest
    /// coordinate.
    pub fn new(p: &Points<'_>) -> Self {
        let (n, d) = (p.len(), p.dim());
        let mut ids: Vec<u32> = (0..n as u32).collect();
        let mut nodes = Vec::with_capacity(2 * n / LEAF + 1);
        build(p, &mut ids, 0, &mut nodes);
        let mut xs = Vec::with_capacity(n * d);
        for &i in &ids {
            xs.extend_from_slice(p.row(i as usize));
        }
        Self {
            dim: d,
            xs,
            ids,
            nodes,
            slack: 1.0 + 4.0 * d as f64 * f64::from(f32::EPSILON),
        }
    }

    /// Number of points in the tree.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false: a tree is built from a non-empty [`Points`].
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `m` points nearest `q` other than the point `skip`, as (squared distance, index)
    /// ascending by distance then index: the brute-force scan's answer.
    pub fn nearest(&self, q: &[f32], m: usize, skip: Option<u32>) -> Vec<(f32, u32)> {
        debug_assert_eq!(q.len(), self.dim);
        let mut knn = Knn {
            best: Best::new(m),
            skip: skip.unwrap_or(NONE),
            slack: self.slack,
        };
        self.descend(0, q, 0.0, &mut vec![0f64; self.dim], &mut knn);
        knn.best.items
    }

    /// Appends to `out` every point within `eps2` (squared, compared in f64 as DBSCAN's scan
    /// compares) of `q`, in tree order; the caller sorts when order matters.
    pub fn within(&self, q: &[f32], eps2: f64, out: &mut Vec<u32>) {
        let mut within = Within {
            eps2,
            slack: self.slack,
            out,
        };
        self.descend(0, q, 0.0, &mut vec![0f64; self.dim], &mut within);
    }

    /// Visits the subtree of `node`, nearer child first, skipping a far child whose cell lies
    /// farther than the visitor admits: `rd` is the cell's squared distance to `q` built from
    /// the per-coordinate offsets `off` (Arya and Mount's incremental distance).
    fn descend<V: Visitor>(&self, node: usize, q: &[f32], rd: f64, off: &mut [f64], v: &mut V) {
        let nd = self.nodes[node];
        if nd.left == NONE {
            for pos in nd.start as usize..nd.end as usize {
                v.point(
                    q,
                    &self.xs[pos * self.dim..(pos + 1) * self.dim],
                    self.ids[pos],
                );
            }
            return;
        }
        let k = nd.dim as usize;
        let diff = f64::from(q[k]) - f64::from(nd.split);
        let (near, far) = if diff <= 0.0 {
            (nd.left, nd.right)
        } else {
            (nd.right, nd.left)
        };
        self.descend(near as usize, q, rd, off, v);
        let old = off[k];
        let far_rd = rd - old * old + diff * diff;
        if v.admits(far_rd) {
            off[k] = diff;
            self.descend(far as usize, q, far_rd, off, v);
            off[k] = old;
        }
    }
}

/// What a query does with each point of a leaf, and which cells it still needs.
trait Visitor {
    fn point(&mut self, q: &[f32], y: &[f32], id: u32);
    /// Whether a cell at squared distance `bound` may hold a point the query wants.
    fn admits(&self, bound: f64) -> bool;
}

/// A nearest-neighbour query.
struct Knn {
    best: Best,
    skip: u32,
    slack: f64,
}

impl Visitor for Knn {
    fn point(&mut self, q: &[f32], y: &[f32], id: u32) {
        if id != self.skip {
            // The brute-force scan's expression, term for term.
            let d2: f32 = q.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
            self.best.offer(d2, id);
        }
    }

    fn admits(&self, bound: f64) -> bool {
        self.best.admits(bound, self.slack)
    }
}

/// A radius query.
struct Within<'o> {
    eps2: f64,
    slack: f64,
    out: &'o mut Vec<u32>,
}

impl Visitor for Within<'_> {
    fn point(&mut self, q: &[f32], y: &[f32], id: u32) {
        if sq64(q, y) <= self.eps2 {
            self.out.push(id);
        }
    }

    fn admits(&self, bound: f64) -> bool {
        bound <= self.eps2 * self.slack
    }
}

/// Builds the subtree over `ids` (positions `start..` of the tree order) and returns its node.
fn build(p: &Points<'_>, ids: &mut [u32], start: usize, nodes: &mut Vec<Node>) -> u32 {
    let at = nodes.len() as u32;
    let leaf = Node {
        start: start as u32,
        end: (start + ids.len()) as u32,
        dim: 0,
        split: 0.0,
        left: NONE,
        right: NONE,
    };
    nodes.push(leaf);
    if ids.len() <= LEAF {
        return at;
    }
    // The widest coordinate, the first of equals.
    let d = p.dim();
    let (mut lo, mut hi) = (vec![f32::INFINITY; d], vec![f32::NEG_INFINITY; d]);
    for &i in ids.iter() {
        for (k, &v) in p.row(i as usize).iter().enumerate() {
            lo[k] = lo[k].min(v);
            hi[k] = hi[k].max(v);
        }
    }
    let (k, width) = (0..d)
        .map(|k| (k, hi[k] - lo[k]))
        .fold((0, -1.0f32), |b, c| if c.1 > b.1 { c } else { b });
    if width <= 0.0 {
        // All points coincide: a leaf, however large.
        return at;
    }
    let mid = ids.len() / 2;
    let coord = |i: &u32| p.row(*i as usize)[k];
    ids.select_nth_unstable_by(mid, |a, b| coord(a).total_cmp(&coord(b)).then(a.cmp(b)));
    let split = coord(&ids[mid]);
    let (left_ids, right_ids) = ids.split_at_mut(mid);
    let left = build(p, left_ids, start, nodes);
    let right = build(p, right_ids, start + mid, nodes);
    nodes[at as usize] = Node {
        dim: k as u32,
        split,
        left,
        right,
        ..leaf
    };
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;
    use rand::Rng;

    fn cloud(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut r = rng(seed, 0);
        // A lattice part makes exact ties; the rest is uniform.
        (0..n * d)
            .map(|i| {
                if i < n * d / 4 {
                    (r.random_range(0..4) as f32) * 0.5
                } else {
                    r.random_range(-1.0..1.0f32)
                }
            })
            .collect()
    }

    #[test]
    fn queries_answer_what_the_scan_answers_ties_included() {
        for (n, d) in [(1, 3), (17, 1), (500, 2), (800, 5), (400, 12)] {
            let xs = cloud(n, d, n as u64);
            let p = Points::new(&xs, d).unwrap();
            let tree = KdTree::new(&p);
            assert_eq!(tree.len(), n);
            for q in 0..n {
                let m = 7.min(n - 1);
                assert_eq!(
                    tree.nearest(p.row(q), m, Some(q as u32)),
                    super::super::tests::scan_row(&p, q, m),
                    "n={n} d={d} q={q}"
                );
                let eps2 = 0.05 * d as f64;
                let mut got = Vec::new();
                tree.within(p.row(q), eps2, &mut got);
                got.sort_unstable();
                let want: Vec<u32> = (0..n as u32)
                    .filter(|&j| sq64(p.row(q), p.row(j as usize)) <= eps2)
                    .collect();
                assert_eq!(got, want, "n={n} d={d} q={q}");
            }
        }
    }

    #[test]
    fn coinciding_points_make_one_leaf_and_still_answer() {
        let xs = vec![1.0f32; 3 * 100];
        let p = Points::new(&xs, 3).unwrap();
        let tree = KdTree::new(&p);
        let got = tree.nearest(p.row(5), 4, Some(5));
        assert_eq!(got, vec![(0.0, 0), (0.0, 1), (0.0, 2), (0.0, 3)]);
        let mut all = Vec::new();
        tree.within(&[1.0, 1.0, 1.5], 0.25, &mut all);
        assert_eq!(all.len(), 100);
    }
}

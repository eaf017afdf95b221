//! The exact search for dimensions where a k-d tree prunes little (raw pixels, sentence
//! embeddings): all distances, a block of queries against a tile of points at a time, as one
//! matrix product each (`‖x‖² − 2 x·y + ‖y‖²` through `dekm-kernels`), so the O(n² d) work runs
//! at the speed of the GEMM micro-kernels rather than of a scalar loop.
//!
//! The expansion rounds differently from the direct sum, so each query keeps a few more
//! candidates than asked and re-ranks them by the direct sum: the answer is the brute-force
//! scan's unless more than [`EXTRA`] points lie within the expansion's rounding (about
//! `1e-7·‖x‖²`, small since the points are centred first) of the last neighbour's distance.

use rayon::prelude::*;

use super::Best;
use crate::Points;

/// Queries per block (one rayon task).
const QUERIES: usize = 64;
/// Points per tile: a `[QUERIES, TILE]` product is 512 KB.
const TILE: usize = 2048;
/// Candidates kept beyond the `m` asked, re-ranked by the direct sum.
pub(super) const EXTRA: usize = 8;

/// Reference points, centred, with their squared norms, and the points as given (for the
/// re-ranking).
pub(super) struct Scan<'a> {
    d: usize,
    centre: Vec<f32>,
    xs: Vec<f32>,
    norms: Vec<f32>,
    original: Points<'a>,
}

impl<'a> Scan<'a> {
    pub(super) fn new(p: &Points<'a>) -> Self {
        let (n, d) = (p.len(), p.dim());
        let mut centre = vec![0f64; d];
        for row in p.rows() {
            for (c, &v) in centre.iter_mut().zip(row) {
                *c += f64::from(v);
            }
        }
        let centre: Vec<f32> = centre.iter().map(|c| (c / n as f64) as f32).collect();
        let xs: Vec<f32> = p
            .rows()
            .flat_map(|r| r.iter().zip(&centre).map(|(v, c)| v - c))
            .collect();
        let norms = xs
            .chunks_exact(d)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect();
        Self {
            d,
            centre,
            xs,
            norms,
            original: *p,
        }
    }

    /// The `m` nearest reference points of each query (row-major `[q, d]`), as (squared
    /// distance, index) ascending; with `first_id`, query `r` is reference point
    /// `first_id + r` and is not its own neighbour.
    pub(super) fn nearest_block(
        &self,
        queries: &[f32],
        m: usize,
        first_id: Option<usize>,
    ) -> Vec<Vec<(f32, u32)>> {
        let d = self.d;
        let q = queries.len() / d;
        let centred: Vec<f32> = queries
            .chunks_exact(d)
            .flat_map(|r| r.iter().zip(&self.centre).map(|(v, c)| v - c))
            .collect();
        let qnorms: Vec<f32> = centred
            .chunks_exact(d)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect();
        let mut best: Vec<Best> = (0..q).map(|_| Best::new(m + EXTRA)).collect();
        let n = self.norms.len();
        let mut prod = vec![0f32; q * TILE];
        for start in (0..n).step_by(TILE) {
            let len = TILE.min(n - start);
            let tile = &self.xs[start * d..(start + len) * d];
            dekm_kernels::gemm(
                (q, len, d),
                dekm_kernels::Operand::rows(&centred, d),
                dekm_kernels::Operand::transposed(tile, d),
                (&mut prod[..q * len], len),
                false,
                1,
            )
            .expect("block shapes are consistent");
            for (r, b) in best.iter_mut().enumerate() {
                let me = first_id.map(|f| f + r);
                for (c, &xy) in prod[r * len..(r + 1) * len].iter().enumerate() {
                    let j = start + c;
                    if Some(j) != me {
                        b.offer(qnorms[r] + self.norms[j] - 2.0 * xy, j as u32);
                    }
                }
            }
        }
        // Re-rank by the brute-force scan's own expression.
        best.into_iter()
            .zip(queries.chunks_exact(d))
            .map(|(b, x)| {
                let mut exact: Vec<(f32, u32)> = b
                    .items
                    .iter()
                    .map(|&(_, j)| {
                        let y = self.original.row(j as usize);
                        let d2: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
                        (d2, j)
                    })
                    .collect();
                exact.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                exact.truncate(m);
                exact
            })
            .collect()
    }

    /// [`Scan::nearest_block`] over all queries, blocks in parallel.
    pub(super) fn nearest_all(
        &self,
        queries: &Points<'_>,
        m: usize,
        self_query: bool,
    ) -> Vec<Vec<(f32, u32)>> {
        let d = self.d;
        queries
            .as_slice()
            .par_chunks(QUERIES * d)
            .enumerate()
            .flat_map_iter(|(b, block)| {
                self.nearest_block(block, m, self_query.then_some(b * QUERIES))
            })
            .collect()
    }
}

//! Every point's nearest others through batched distance products on a device: what the
//! `manifold` start's UMAP graph is built on when training runs on a GPU, where the exact
//! CPU scan (its cost grows with n²·d) would keep the GPU waiting.
//!
//! A block of rows at a time, `‖x‖² − 2 x·y + ‖y‖²` against all points is one matrix product on
//! the device; the block's distances come back to the host, where each row keeps its `m`
//! smallest (ties to the lower index, as the exact search). The expansion rounds differently
//! from the direct sum, so neighbours at nearly equal distances may swap: a GPU run's layout is
//! close to the CPU's, not identical to it.

use candle_core::{Device, Tensor};
use dekm_cluster::Points;
use dekm_cluster::neighbours::Neighbours;
use rayon::prelude::*;

use crate::train::TrainError;

/// Rows per block: a block's `[rows, n]` distances, 4 bytes each, stay a few hundred MB at
/// n = 70,000.
const BLOCK: usize = 1024;

/// The `m` nearest other points of every point of `p`, computed on `dev`.
pub fn nearest_on(dev: &Device, p: &Points<'_>, m: usize) -> Result<Neighbours, TrainError> {
    let (n, d) = (p.len(), p.dim());
    if m == 0 || m >= n {
        return Err(TrainError::Config(format!(
            "{m} neighbours asked of {n} points: need 1 <= neighbours < points"
        )));
    }
    let all = Tensor::from_slice(p.as_slice(), (n, d), dev)?;
    let norms = all.sqr()?.sum_keepdim(1)?; // [n, 1]
    let norms_t = norms.t()?.contiguous()?; // [1, n]
    let all_t = all.t()?.contiguous()?; // [d, n]
    let (mut idx, mut dist) = (Vec::with_capacity(n * m), Vec::with_capacity(n * m));
    for start in (0..n).step_by(BLOCK) {
        let len = BLOCK.min(n - start);
        let d2 = all
            .narrow(0, start, len)?
            .matmul(&all_t)?
            .affine(-2.0, 0.0)?
            .broadcast_add(&norms.narrow(0, start, len)?)?
            .broadcast_add(&norms_t)?
            .to_vec2::<f32>()?;
        let rows: Vec<Vec<(f32, u32)>> = d2
            .par_iter()
            .enumerate()
            .map(|(r, row)| nearest_of(row, start + r, m))
            .collect();
        for row in rows {
            for (d2, j) in row {
                idx.push(j);
                dist.push(d2.max(0.0).sqrt());
            }
        }
    }
    Ok(Neighbours::new(n, m, idx, dist)?)
}

/// The `m` smallest of `row` other than position `me`, ascending, ties to the lower index.
fn nearest_of(row: &[f32], me: usize, m: usize) -> Vec<(f32, u32)> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(m + 1);
    for (j, &d2) in row.iter().enumerate() {
        if j == me || (best.len() == m && d2 >= best[m - 1].0) {
            continue;
        }
        let at = best.partition_point(|&(e, _)| e <= d2);
        best.insert(at, (d2, j as u32));
        best.truncate(m);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;
    use rand::Rng;

    #[test]
    fn the_products_find_the_exact_searchs_neighbours() {
        // More points than a block, so the blocks' seams are crossed.
        let (n, d, m) = (BLOCK + 300, 7, 9);
        let mut r = rng(4, 0);
        let xs: Vec<f32> = (0..n * d).map(|_| r.random_range(-1.0..1.0)).collect();
        let p = Points::new(&xs, d).unwrap();
        let got = nearest_on(&Device::Cpu, &p, m).unwrap();
        let exact =
            dekm_cluster::neighbours::nearest(&p, m, dekm_cluster::neighbours::Search::Auto)
                .unwrap();
        let (idx, dist) = exact.parts();
        assert_eq!(got.m(), exact.m());
        // Same neighbours up to swaps of nearly equal distances; distances to float rounding.
        let (gi, gd) = got.parts();
        let mut swapped = 0;
        for i in 0..n * m {
            assert!(
                (gd[i] - dist[i]).abs() <= 1e-4 * (1.0 + dist[i]),
                "{i}: {} {}",
                gd[i],
                dist[i]
            );
            swapped += usize::from(gi[i] != idx[i]);
        }
        assert!(swapped * 1000 <= n * m, "{swapped} of {} differ", n * m);
        assert!(nearest_on(&Device::Cpu, &p, 0).is_err());
        assert!(nearest_on(&Device::Cpu, &p, n).is_err());
    }
}

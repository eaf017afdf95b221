//! UMAP's spectral start: the smoothest functions on the neighbour graph.

use rand::Rng;
use rayon::prelude::*;

use crate::rng;

/// The start of the layout, as umap-learn's: the eigenvectors of the graph's normalised
/// adjacency `D^-1/2 W D^-1/2` with the largest eigenvalues after the first (the smoothest
/// functions on the graph, so linked points start near each other and separate components
/// apart), scaled to a largest coordinate of 10, plus a little noise.
///
/// Found by Chebyshev-filtered subspace iteration with Rayleigh-Ritz (a block of eight vectors
/// more than needed): the wanted eigenvalues of a clustered graph lie within 1e-3 of each
/// other and of the unwanted ones near 1, where plain subspace iteration had not converged
/// after 500 products, and the layouts it started from clustered worse on Fashion-MNIST
/// (docs/RESULTS.md). A degree-20 filter that damps `[-1, cut]`, `cut` being the block's
/// lowest Ritz value, settles the wanted values to 1e-9 in a handful of rounds.
const FILTER_DEGREE: usize = 20;
const FILTER_ROUNDS: usize = 40;

pub(super) fn spectral(n: usize, edges: &[(u32, u32, f32)], c: usize, seed: u64) -> Vec<f32> {
    // CSR of the graph, rows by source.
    let mut start = vec![0usize; n + 1];
    for e in edges {
        start[e.0 as usize + 1] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut cols = vec![0u32; edges.len()];
    let mut vals = vec![0f64; edges.len()];
    for &(i, j, w) in edges {
        let at = &mut fill[i as usize];
        cols[*at] = j;
        vals[*at] = f64::from(w);
        *at += 1;
    }
    let inv_sqrt_deg: Vec<f64> = (0..n)
        .map(|i| {
            let deg: f64 = vals[start[i]..start[i + 1]].iter().sum();
            if deg > 0.0 { 1.0 / deg.sqrt() } else { 0.0 }
        })
        .collect();
    for i in 0..n {
        for e in start[i]..start[i + 1] {
            vals[e] *= inv_sqrt_deg[i] * inv_sqrt_deg[cols[e] as usize];
        }
    }
    let s = (c + 1 + 8).min(n);
    // Column-major blocks: vector v is q[v * n..(v + 1) * n]. `step` writes
    // out = alpha * B cur + beta * cur + gamma * prev, B the normalised adjacency.
    let step = |cur: &[f64], prev: &[f64], out: &mut [f64], alpha: f64, beta: f64, gamma: f64| {
        out.par_chunks_mut(n)
            .zip(cur.par_chunks(n).zip(prev.par_chunks(n)))
            .for_each(|(o, (x, p))| {
                for i in 0..n {
                    let bx: f64 = (start[i]..start[i + 1])
                        .map(|e| vals[e] * x[cols[e] as usize])
                        .sum();
                    o[i] = alpha * bx + beta * x[i] + gamma * p[i];
                }
            });
    };
    let apply = |q: &[f64], out: &mut [f64]| step(q, q, out, 1.0, 0.0, 0.0);
    let mut r = rng(seed, 2);
    let normal = rand_distr::StandardNormal;
    let mut q: Vec<f64> = (0..n * s).map(|_| r.sample::<f64, _>(normal)).collect();
    orthonormalise(&mut q, n);
    let (mut y0, mut y1) = (vec![0f64; n * s], vec![0f64; n * s]);
    let mut ritz = rayleigh_ritz(&mut q, &mut y0, n, &apply);
    // A block as wide as the graph spans it, and its Ritz vectors are already exact.
    let rounds = if s == n { 0 } else { FILTER_ROUNDS };
    for _ in 0..rounds {
        // Chebyshev filter of degree FILTER_DEGREE, damping the spectrum in [-1, cut] (cut:
        // the lowest Ritz value of the block) and amplifying what lies above it. The interval
        // never closes: a bipartite graph has -1 in its spectrum.
        let cut = ritz[s - 1].clamp(-1.0 + 1e-9, 1.0 - 1e-9);
        let (centre, half) = ((cut - 1.0) / 2.0, (cut + 1.0) / 2.0);
        step(&q, &q, &mut y1, 1.0 / half, -centre / half, 0.0);
        std::mem::swap(&mut y0, &mut q); // y0 = q (the degree-0 term)
        for _ in 1..FILTER_DEGREE {
            step(&y1, &y0, &mut q, 2.0 / half, -2.0 * centre / half, -1.0);
            std::mem::swap(&mut y0, &mut y1);
            std::mem::swap(&mut y1, &mut q);
        }
        std::mem::swap(&mut q, &mut y1);
        orthonormalise(&mut q, n);
        let next = rayleigh_ritz(&mut q, &mut y0, n, &apply);
        let settled = next
            .iter()
            .zip(&ritz)
            .take(c + 1)
            .all(|(a, b)| (a - b).abs() < 1e-9);
        ritz = next;
        if settled {
            break;
        }
    }
    // Columns 1..=c, the first being the trivial (degree) vector.
    let max = q[n..n * (c + 1).min(s)]
        .iter()
        .fold(0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let noise = rand_distr::Normal::new(0.0, 1e-4).unwrap_or_else(|_| unreachable!());
    let mut y = vec![0f32; n * c];
    for i in 0..n {
        for k in 0..c {
            let v = if k + 1 < s { q[(k + 1) * n + i] } else { 0.0 };
            y[i * c + k] = (10.0 * v / max + r.sample::<f64, _>(noise)) as f32;
        }
    }
    y
}

/// Modified Gram-Schmidt on the column-major `[n, s]` block `q`; a column that vanishes is
/// left at zero.
fn orthonormalise(q: &mut [f64], n: usize) {
    let s = q.len() / n;
    for v in 0..s {
        let (done, rest) = q.split_at_mut(v * n);
        let col = &mut rest[..n];
        for u in done.chunks_exact(n) {
            let dot: f64 = u.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
            col.iter_mut().zip(u).for_each(|(x, a)| *x -= dot * a);
        }
        let norm = col.iter().map(|x| x * x).sum::<f64>().sqrt();
        let scale = if norm > 1e-300 { 1.0 / norm } else { 0.0 };
        col.iter_mut().for_each(|x| *x *= scale);
    }
}

/// Rotates the orthonormal block `q` onto the Ritz vectors of `apply`, in decreasing order of
/// Ritz value, and returns the values. `z` is scratch of the same size.
fn rayleigh_ritz(
    q: &mut [f64],
    z: &mut [f64],
    n: usize,
    apply: &(impl Fn(&[f64], &mut [f64]) + Sync),
) -> Vec<f64> {
    let s = q.len() / n;
    apply(q, z);
    let h = nalgebra::DMatrix::from_fn(s, s, |a, b| {
        q[a * n..(a + 1) * n]
            .iter()
            .zip(&z[b * n..(b + 1) * n])
            .map(|(x, y)| x * y)
            .sum::<f64>()
    });
    let h = (&h + h.transpose()) * 0.5;
    let eig = h.symmetric_eigen();
    let mut order: Vec<usize> = (0..s).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    z.par_chunks_mut(n).enumerate().for_each(|(v, out)| {
        out.iter_mut().for_each(|x| *x = 0.0);
        let col = order[v];
        for u in 0..s {
            let w = eig.eigenvectors[(u, col)];
            out.iter_mut()
                .zip(&q[u * n..(u + 1) * n])
                .for_each(|(o, x)| *o += w * x);
        }
    });
    q.copy_from_slice(z);
    order.iter().map(|&v| eig.eigenvalues[v]).collect()
}

//! The neighbour index and N2D at scale, on a seeded Gaussian mixture (docs/RESULTS.md,
//! "Neighbours"):
//!
//! ```text
//! cargo run --release -p dekm-cluster --example neighbours -- search N DIM [tree|products]
//! cargo run --release -p dekm-cluster --example neighbours -- n2d N DIM [all]
//! ```
//!
//! `search` times the k-d tree and the blocked products (or only the one named) on the same
//! points (19 neighbours, as N2D's graph) and compares each with the
//! brute-force answer on 2,000 rows: rows equal, and recall. `n2d` times N2D
//! with 10 clusters and prints its ACC; `all` lays out every point even past
//! `N2dConfig::LAYOUT_MAX` (the reference the sample is measured against).

use std::time::Instant;

use dekm_cluster::neighbours::{Search, nearest};
use dekm_cluster::umap::{Mixture, N2dConfig, UmapConfig, layout};
use dekm_cluster::{ClusterError, Fit, Points, gmm, metrics, rng};
use rand_distr::{Distribution, Normal};

const K: usize = 10;
const M: usize = 19;

/// `n` points of `d` coordinates from 10 Gaussian clusters whose centres are 2.5 standard
/// deviations apart per coordinate on average, with their labels.
fn mixture(n: usize, d: usize) -> (Vec<f32>, Vec<u32>) {
    let mut r = rng(0, 0);
    let unit = Normal::new(0.0f32, 1.0).expect("unit normal");
    let centres: Vec<f32> = (0..K * d).map(|_| 2.5 * unit.sample(&mut r)).collect();
    let (mut xs, mut labels) = (Vec::with_capacity(n * d), Vec::with_capacity(n));
    for i in 0..n {
        let c = i % K;
        labels.push(c as u32);
        xs.extend((0..d).map(|j| centres[c * d + j] + unit.sample(&mut r)));
    }
    (xs, labels)
}

fn main() -> Result<(), ClusterError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: neighbours (search N DIM [tree|products] | n2d N DIM [all])";
    let (Some(mode), Some(n), Some(d)) = (
        args.first(),
        args.get(1).and_then(|v| v.parse::<usize>().ok()),
        args.get(2).and_then(|v| v.parse::<usize>().ok()),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (xs, labels) = mixture(n, d);
    let p = Points::new(&xs, d)?;
    println!(
        "{n} points, {d}-d, {} threads",
        rayon::current_num_threads()
    );
    match mode.as_str() {
        "search" => {
            let mut answers = Vec::new();
            let searches = match args.get(3).map(String::as_str) {
                Some("tree") => vec![Search::Tree],
                Some("products") => vec![Search::Products],
                _ => vec![Search::Tree, Search::Products],
            };
            for &search in &searches {
                let t = Instant::now();
                let found = nearest(&p, M, search)?;
                println!(
                    "{search:?}: {M} neighbours of every point in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
                answers.push(found);
            }
            // The brute-force answer for the first 2,000 rows.
            let rows = n.min(2000);
            let (mut same, mut hits) = (vec![0usize; answers.len()], vec![0usize; answers.len()]);
            for i in 0..rows {
                let x = p.row(i);
                let mut all: Vec<(f32, u32)> = p
                    .rows()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(j, y)| {
                        let d2: f32 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
                        (d2, j as u32)
                    })
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                let want: Vec<u32> = all[..M].iter().map(|e| e.1).collect();
                for (a, answer) in answers.iter().enumerate() {
                    let got = &answer.parts().0[i * M..(i + 1) * M];
                    same[a] += usize::from(got == want);
                    hits[a] += want.iter().filter(|j| got.contains(j)).count();
                }
            }
            for (a, search) in searches.iter().enumerate() {
                println!(
                    "{search:?}: {} of {rows} rows equal the brute-force scan's, recall {:.4}",
                    same[a],
                    hits[a] as f64 / (rows * M) as f64
                );
            }
        }
        "n2d" => {
            let t = Instant::now();
            let got = if args.get(3).is_some_and(|a| a == "all") {
                let y = layout(
                    &p,
                    &UmapConfig {
                        neighbors: M + 1,
                        ..UmapConfig::new(K)
                    },
                )?;
                gmm::GmmConfig {
                    seed: 0,
                    ..gmm::GmmConfig::new(K, gmm::Covariance::Full)
                }
                .fit(&Points::new(&y, K)?)?
                .labels
            } else {
                N2dConfig {
                    k: K,
                    seed: 0,
                    mixture: Mixture::BestStart,
                    neighbours: None,
                }
                .fit(&p)?
                .labels
            };
            println!(
                "N2D ({}): ACC {:.4}, NMI {:.4} in {:.1} s",
                if N2dConfig::lays_out_all(n) || args.get(3).is_some() {
                    "all points laid out"
                } else {
                    "a sample laid out"
                },
                metrics::accuracy(&got, &labels),
                metrics::nmi(&got, &labels),
                t.elapsed().as_secs_f64()
            );
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
    Ok(())
}

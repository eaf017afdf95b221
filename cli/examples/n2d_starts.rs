//! Which of N2D's Gaussian mixtures should the manifold start keep? A side study, not part of
//! the product (docs/RESULTS.md, "Fashion-MNIST: can a label-free rule pick N2D's better
//! mixtures?").
//!
//! Embeds a labelled data set with an exported model (its 10-d latent, or with `--features
//! conv` the 1152 values after the last convolution reduced by PCA), lays it out with dekm's
//! UMAP at N2D's settings, then fits the full-covariance mixture from `--starts` single
//! k-means++ starts besides the product's default (the lowest-inertia of 10). For every
//! mixture it prints ACC, NMI and ARI against the labels and label-free scores that a rule
//! could choose by; then, for each score, its rank correlation with ACC over the single starts
//! and the ACC of the start it ranks first. With `--quick` it fits only the product's own
//! starts and says which partition the likeliest of the first 10, 20, 40, ... would keep.
//!
//! ```sh
//! DEKM_DATA=../shared/data cargo run --release -p dekm-trainer --example n2d_starts -- \
//!     --model OUT --dataset fashion-mnist --seed 0 --starts 20 [--neighbors 20] [--features conv] [--quick]
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use clap::{Parser, ValueEnum};
use dekm_cluster::pca::Pca;
use dekm_cluster::{ClusterError, Fit, Points, gmm, internal, kmeans, metrics, neighbours, umap};
use dekm_trainer::data::{self, DataSource, Dataset, LoadOptions};
use dekm_trainer::export::{LoadedModel, read_model};
use dekm_trainer::model::manifold_features;
use dekm_trainer::rotation::within_scatter;

#[derive(Parser)]
struct Args {
    /// Exported model directory (`dekm train --out`).
    #[arg(long)]
    model: PathBuf,
    /// A labelled data set, as `dekm train --dataset`.
    #[arg(long, default_value = "fashion-mnist")]
    dataset: DataSource,
    /// Directory holding `mnist/` and `fashion-mnist/` (else `DEKM_DATA`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seed of UMAP and of the default mixture (the pipeline uses the training seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Single-start mixtures to fit besides the default (at least 2, to rank).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..))]
    starts: u64,
    /// UMAP neighbours (N2D: 20).
    #[arg(long, default_value_t = 20)]
    neighbors: usize,
    /// The space laid out.
    #[arg(long, value_enum, default_value_t = Features::Latent)]
    features: Features,
    /// Only the product's rule: seed the single starts as `gmm::fit_likeliest` does, print
    /// each start's log-likelihood and time, then the mixture the likeliest of the first N
    /// would keep for N = 10, 20, 40, 60, ... (no other scores, no neighbour graph).
    #[arg(long)]
    quick: bool,
    /// Keep only every n-th sample of the classes in the upper half of the labels (`--k 10`:
    /// classes 5-9), to see what a rule does when clusters differ in size.
    #[arg(long, default_value_t = 1)]
    thin: usize,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Features {
    /// The model's latent vectors.
    Latent,
    /// The last convolution's output, reduced to 50 dimensions by PCA.
    Conv,
}

/// Neighbours per point of the graph scores.
const GRAPH_NEIGHBORS: usize = 20;

/// Label-free scores of one partition, each oriented so that higher would mean better.
const SCORES: [&str; 9] = [
    "loglik",
    "inside",
    "-ncut",
    "-sw/st",
    "sil(x)",
    "sil(umap)",
    "CH(x)",
    "-DB(x)",
    "balance",
];

fn main() -> Result<()> {
    let args = Args::parse();
    let mut ds = data::load(
        &args.dataset,
        &LoadOptions {
            data_dir: data::default_data_dir(args.data_dir.as_deref()),
            ..Default::default()
        },
    )?;
    let model = read_model(&args.model).with_context(|| args.model.display().to_string())?;
    let k = model.head.k();
    if args.thin > 1 {
        thin(&mut ds, k, args.thin)?;
    }
    let Some(truth) = ds.labels.clone() else {
        bail!("{} has no labels to score against", ds.name);
    };
    let (xs, d) = match args.features {
        Features::Latent => (
            dekm_trainer::pipeline::latent(&model, &ds)?,
            model.head.latent_dim(),
        ),
        Features::Conv => {
            let (features, f) = conv_features(&model, &ds)?;
            let p = Points::new(&features, f)?;
            (Pca::fit(&p, 50)?.project(&p)?, 50)
        }
    };
    let x = Points::new(&xs, d)?;
    let started = std::time::Instant::now();
    let y = umap::layout(
        &x,
        &umap::UmapConfig {
            seed: args.seed,
            neighbors: args.neighbors,
            ..umap::UmapConfig::new(k)
        },
    )?;
    let layout = Points::new(&y, k)?;
    if args.quick {
        return likeliest_of_more(&layout, &truth, k, args.seed, args.starts, started);
    }
    let found = neighbours::nearest(&x, GRAPH_NEIGHBORS, neighbours::Search::Auto)?;
    let neighbours = found.parts().0;
    let km = kmeans::KMeansConfig {
        seed: args.seed,
        ..kmeans::KMeansConfig::new(k)
    }
    .fit(&x)?;
    println!(
        "{} points, {d}-d, k-means ACC {:.4}; layout and graph in {:.0} s",
        x.len(),
        metrics::accuracy(&km.labels, &truth),
        started.elapsed().as_secs_f64()
    );
    print!("{:>5} {:>7} {:>7} {:>7} |", "start", "ACC", "NMI", "ARI");
    SCORES.iter().for_each(|s| print!(" {s:>9}"));
    println!();
    let mut singles = Vec::new();
    for r in 0..=args.starts {
        // Start 0 is the product's default: the lowest-inertia of 10 k-means++ starts.
        let cfg = gmm::GmmConfig {
            seed: if r == 0 { args.seed } else { 1000 + r },
            restarts: if r == 0 { 10 } else { 1 },
            ..gmm::GmmConfig::new(k, gmm::Covariance::Full)
        };
        let g = cfg.fit(&layout)?;
        let m = metrics::evaluate(&g.labels, &truth);
        let s = scores(&x, &layout, neighbours, &g, k)?;
        let name = if r == 0 { "dflt".into() } else { r.to_string() };
        print!("{name:>5} {:>7.4} {:>7.4} {:>7.4} |", m.acc, m.nmi, m.ari);
        s.iter().for_each(|v| print!(" {v:>9.4}"));
        println!();
        if r > 0 {
            singles.push((m.acc, s, g.labels));
        }
    }
    let acc: Vec<f64> = singles.iter().map(|s| s.0).collect();
    let (lo, hi) = acc
        .iter()
        .fold((f64::INFINITY, 0f64), |(l, h), &a| (l.min(a), h.max(a)));
    println!(
        "single starts: ACC mean {:.4}, range {lo:.4}-{hi:.4}",
        acc.iter().sum::<f64>() / acc.len() as f64
    );
    for (c, name) in SCORES.iter().enumerate() {
        let v: Vec<f64> = singles.iter().map(|s| s.1[c]).collect();
        println!(
            "{name:>9}: rank correlation with ACC {:+.3}, its first pick has ACC {:.4}",
            spearman(&v, &acc),
            acc[argmax(&v)]
        );
    }
    // Agreement: each start's summed ARI with the others (the consensus rule).
    let agree: Vec<f64> = (0..singles.len())
        .map(|i| {
            (0..singles.len())
                .filter(|&j| j != i)
                .map(|j| metrics::ari(&singles[i].2, &singles[j].2))
                .sum()
        })
        .collect();
    println!(
        "{:>9}: rank correlation with ACC {:+.3}, its first pick has ACC {:.4}",
        "agreement",
        spearman(&agree, &acc),
        acc[argmax(&agree)]
    );
    Ok(())
}

/// The `--quick` study: would the product's rule, the likeliest of N single-start mixtures,
/// keep a better partition with more starts? Start `r` is `gmm::fit_likeliest`'s start `r`
/// ([`gmm::start_seed`]), so the first N are what the product fits with N starts.
fn likeliest_of_more(
    layout: &Points<'_>,
    truth: &[u32],
    k: usize,
    seed: u64,
    starts: u64,
    started: std::time::Instant,
) -> Result<()> {
    println!(
        "{} points, layout in {:.0} s",
        layout.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:>5} {:>7} {:>7} {:>7} {:>10} {:>5} {:>6}",
        "start", "ACC", "NMI", "ARI", "loglik", "iter", "s"
    );
    let cfg = gmm::GmmConfig {
        seed,
        ..gmm::GmmConfig::new(k, gmm::Covariance::Full)
    };
    let mut fits = Vec::new();
    for r in 0..starts {
        let t = std::time::Instant::now();
        // `fit_likeliest`'s start r, on its own.
        let g = gmm::fit_likeliest(
            layout,
            &gmm::GmmConfig {
                seed: gmm::start_seed(seed, r),
                ..cfg
            },
            1,
        )?;
        let m = metrics::evaluate(&g.labels, truth);
        println!(
            "{r:>5} {:>7.4} {:>7.4} {:>7.4} {:>10.4} {:>5} {:>6.1}",
            m.acc,
            m.nmi,
            m.ari,
            g.log_likelihood,
            g.iterations,
            t.elapsed().as_secs_f64()
        );
        fits.push((g.log_likelihood, m.acc));
    }
    let mut n = 10;
    while n <= fits.len() {
        let best = (1..n).fold(0, |b, i| if fits[i].0 > fits[b].0 { i } else { b });
        println!(
            "likeliest of the first {n:>3}: start {best}, ACC {:.4}, loglik {:.4}",
            fits[best].1, fits[best].0
        );
        n = if n < 20 { 20 } else { n + 20 };
    }
    Ok(())
}

/// Keeps every `n`-th sample of the classes `k / 2..` and all of the others.
fn thin(ds: &mut Dataset, k: usize, n: usize) -> Result<()> {
    let labels = ds.labels.take().context("thinning needs labels")?;
    let d = ds.shape.len();
    let mut seen = vec![0usize; k.max(1)];
    let mut xs = Vec::new();
    let mut kept = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        let c = (l as usize).min(k - 1);
        seen[c] += 1;
        if c < k / 2 || seen[c] % n == 1 {
            xs.extend_from_slice(&ds.xs[i * d..(i + 1) * d]);
            kept.push(l);
        }
    }
    ds.xs = xs;
    ds.labels = Some(kept);
    ds.anomalies = None;
    Ok(())
}

/// The scores named in [`SCORES`], for the mixture `g` on the layout of `x`.
fn scores(
    x: &Points<'_>,
    layout: &Points<'_>,
    neighbours: &[u32],
    g: &gmm::Gmm,
    k: usize,
) -> Result<[f64; 9]> {
    let labels = &g.labels;
    let pair = internal::PairOptions {
        max_exact: 5000,
        seed: 0,
    };
    let (inside, ncut) = graph_cut(neighbours, labels, k);
    let mut sizes = vec![0f64; k];
    labels.iter().for_each(|&l| sizes[l as usize] += 1.0);
    let n = labels.len() as f64;
    let balance = -sizes
        .iter()
        .filter(|&&s| s > 0.0)
        .map(|s| s / n * (s / n).ln())
        .sum::<f64>();
    Ok([
        g.log_likelihood,
        inside,
        -ncut,
        -scatter_ratio(x, labels, k)?,
        internal::silhouette(x, labels, &pair)?.value,
        internal::silhouette(layout, labels, &pair)?.value,
        internal::calinski_harabasz(x, labels)?,
        -internal::davies_bouldin(x, labels)?,
        balance,
    ])
}

/// The share of neighbour edges inside a cluster, and the normalised cut (each cluster's
/// edges leaving it over all its edges, summed over clusters).
fn graph_cut(neighbours: &[u32], labels: &[u32], k: usize) -> (f64, f64) {
    let m = neighbours.len() / labels.len();
    let mut leaving = vec![0f64; k];
    let mut all = vec![0f64; k];
    for (row, &l) in neighbours.chunks_exact(m).zip(labels) {
        for &j in row {
            all[l as usize] += 1.0;
            if labels[j as usize] != l {
                leaving[l as usize] += 1.0;
            }
        }
    }
    let cut: f64 = leaving.iter().sum();
    let ncut = (0..k).map(|c| leaving[c] / all[c].max(1.0)).sum();
    (1.0 - cut / neighbours.len() as f64, ncut)
}

/// Within-cluster over total scatter (DEKM's `tr Sw` against the data's spread). For a fixed
/// `k` and `n` it ranks partitions exactly as Calinski-Harabasz does
/// (`CH = (St/Sw - 1)(n - k)/(k - 1)`); both are printed because both are common rules.
fn scatter_ratio(x: &Points<'_>, labels: &[u32], k: usize) -> Result<f64, ClusterError> {
    let trace = |labels: Vec<u32>, k: usize| -> Result<f64, ClusterError> {
        let km = kmeans::KMeans::from_labels(x, k, labels)?;
        Ok(within_scatter(x.as_slice(), x.dim(), &km.labels, &km.centroids).trace())
    };
    Ok(trace(labels.to_vec(), k)? / trace(vec![0; x.len()], 1)?)
}

/// The ReLU output of the encoder's last convolution for every sample, `[n, f]` row-major,
/// and `f`: computed as the trainer's manifold start computes it ([`manifold_features`], the
/// fast kernels, batches of 1,024), so that the layout is the product's own. Until 0a7206f the
/// study ran candle's `conv2d` here, whose rounding differs and leads UMAP to another layout.
fn conv_features(model: &LoadedModel, ds: &Dataset) -> Result<(Vec<f32>, usize)> {
    let flat = ds
        .normalized(&model.normalizer)
        .map_err(|(i, e)| anyhow::anyhow!("sample {i}: {e}"))?;
    let xs = Tensor::from_vec(flat, (ds.len(), ds.shape.len()), &Device::Cpu)?;
    manifold_features(&model.encoder, &xs, 1024)?.context("not a convolutional model")
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]))
        .unwrap_or(0)
}

/// Spearman's rank correlation (ties broken by position).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let ranks = |v: &[f64]| {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0f64; v.len()];
        order.iter().enumerate().for_each(|(p, &i)| r[i] = p as f64);
        r
    };
    let (ra, rb) = (ranks(a), ranks(b));
    let mean = (ra.len() as f64 - 1.0) / 2.0;
    let cov: f64 = ra
        .iter()
        .zip(&rb)
        .map(|(x, y)| (x - mean) * (y - mean))
        .sum();
    let var: f64 = ra.iter().map(|x| (x - mean).powi(2)).sum();
    cov / var
}

//! `dekm cluster`: the classical methods in a model's latent space or on raw vectors, compared
//! with every metric; for documents, the texts nearest each cluster's centre; with `--plots`,
//! a PCA picture of each partition.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use dekm_cli::analysis::{self, Method};
use dekm_cli::plots;
use dekm_cli::progress::Step;
use dekm_cluster::Points;
use dekm_cluster::gmm::Covariance;
use dekm_cluster::hierarchy::Linkage;
use dekm_trainer::export::read_model;

use super::args::{DataArgs, DeviceArgs, PairArgs};
use super::representatives;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MethodName {
    Kmeans,
    Minibatch,
    Gmm,
    GmmDiag,
    /// The mixture whose covariance shape has the lowest BIC (`dekm train`'s `input` start).
    GmmBic,
    Dbscan,
    Agglomerative,
    N2d,
    Som,
}

#[derive(Args)]
pub(crate) struct ClusterArgs {
    /// Cluster in this model's latent space (default: the raw, normalised samples).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Methods to run and compare (repeat or comma-separate).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kmeans")]
    method: Vec<MethodName>,
    /// Clusters (components, cut height) for the methods that take k.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// DBSCAN radius.
    #[arg(long, default_value_t = 0.5)]
    eps: f64,
    /// DBSCAN core-point threshold (the point included).
    #[arg(long, default_value_t = 5)]
    min_samples: usize,
    /// Agglomerative linkage: single, complete, average, weighted, ward, centroid, median.
    #[arg(long, default_value = "ward")]
    linkage: Linkage,
    /// Write into this directory a PCA picture of each method's clusters (METHOD_pca.png:
    /// the first two principal components of the clustered space) and, with agglomerative,
    /// dendrogram.png.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// SOM grid (rows x cols = clusters); default 1 x k.
    #[arg(long)]
    som_rows: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    pairs: PairArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs each method and prints one table of their scores.
pub(crate) fn run(args: &ClusterArgs) -> Result<()> {
    let model = args.model.as_deref().map(read_model).transpose()?;
    let dev = args.device.open()?;
    let ds = args.data.load(args.k, args.seed, || Ok(dev.clone()))?;
    let space = {
        let _step = Step::new("encoding");
        analysis::space(model.as_ref(), &ds, &dev)?
    };
    println!(
        "{} samples of {}, clustered in the {}",
        ds.len(),
        ds.name,
        space.name
    );
    let pairs = args.pairs.options();
    let (mut rows, mut partitions) = (Vec::new(), Vec::new());
    for m in &args.method {
        let method = match m {
            MethodName::Kmeans => Method::KMeans { k: args.k },
            MethodName::Minibatch => Method::MiniBatch { k: args.k },
            MethodName::Gmm => Method::Gmm {
                k: args.k,
                covariance: Covariance::Full,
            },
            MethodName::GmmDiag => Method::Gmm {
                k: args.k,
                covariance: Covariance::Diagonal,
            },
            MethodName::GmmBic => Method::GmmBic { k: args.k },
            MethodName::Dbscan => Method::Dbscan {
                eps: args.eps,
                min_samples: args.min_samples,
            },
            MethodName::Agglomerative => Method::Agglomerative {
                k: args.k,
                linkage: args.linkage,
            },
            MethodName::N2d => Method::N2d { k: args.k },
            MethodName::Som => {
                let rows = args.som_rows.unwrap_or(1).max(1);
                Method::Som {
                    rows,
                    cols: args.k.div_ceil(rows),
                }
            }
        };
        let step = Step::new(format!("{method} on {} samples", ds.len()));
        let scored =
            analysis::run_and_score(&method, &space, ds.labels.as_deref(), args.seed, &pairs)
                .with_context(|| method.to_string())?;
        drop(step);
        partitions.push((*m, method.to_string(), scored.labels));
        rows.push((method.to_string(), scored.scores, Some(scored.seconds)));
    }
    print!("{}", analysis::scores_table(&rows));
    args.pairs.footnote(&rows);
    // With noise (DBSCAN) as label k, past every cluster.
    let dense = |labels: &[Option<u32>]| -> (Vec<u32>, usize) {
        let k = labels.iter().flatten().max().map_or(0, |&m| m as usize + 1);
        let l = labels.iter().map(|l| l.unwrap_or(k as u32)).collect();
        (l, k)
    };
    if let Some(text) = &ds.text {
        for (_, name, labels) in &partitions {
            println!("{name}:");
            let (labels, k) = dense(labels);
            representatives::print(&ds, text, &labels, k);
        }
    }
    if let Some(dir) = &args.plots {
        std::fs::create_dir_all(dir)?;
        let pts = plots::pca2(&space.xs, space.dim);
        for (m, name, labels) in &partitions {
            let (dense, _) = dense(labels);
            let noise: Vec<bool> = labels.iter().map(Option::is_none).collect();
            let slug = m.to_possible_value().expect("no method is skipped");
            let path = dir.join(format!("{}_pca.png", slug.get_name()));
            let title = format!("{name}, {} samples of {}", ds.len(), ds.name);
            plots::scatter(&path, (&title, "PC 1", "PC 2"), &pts, &dense, &noise)?;
            println!("wrote {}", path.display());
        }
    }
    if let Some(dir) = &args.plots
        && args.method.contains(&MethodName::Agglomerative)
    {
        let _step = Step::new("dendrogram");
        let tree =
            dekm_cluster::hierarchy::linkage(&Points::new(&space.xs, space.dim)?, args.linkage)?;
        let path = dir.join("dendrogram.png");
        plots::dendrogram(&path, &tree, 30)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

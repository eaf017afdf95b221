//! `dekm`: train, evaluate and demo the Deep Embedded K-Means pipeline.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dekm_cluster::Points;
use dekm_cluster::gmm::Covariance;
use dekm_cluster::hierarchy::Linkage;
use dekm_cluster::internal::PairOptions;
use dekm_trainer::analysis::{self, Method};
use dekm_trainer::augment::Augment;
use dekm_trainer::data::{self, DataSource, LabelColumn, LoadOptions, Split, SyntheticOptions};
use dekm_trainer::export::read_model;
use dekm_trainer::metrics;
use dekm_trainer::model::{ConvBackend, Init};
use dekm_trainer::pipeline::{assign, cluster_sizes, metrics_table, train_and_export};
use dekm_trainer::plots;
use dekm_trainer::service::{Auth, Limits, ServeConfig, Server};
use dekm_trainer::train::{History, Method as TrainMethod, RunOptions, Start, TrainConfig};

#[global_allocator]
static GLOBAL: dekm_trainer::allocator::MiMalloc = dekm_trainer::allocator::MiMalloc;

#[derive(Parser)]
#[command(
    name = "dekm",
    version,
    about = "Deep Embedded K-Means: train, evaluate and export clustering models"
)]
struct Cli {
    /// Hide progress bars and informational logs.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model and export it to --out.
    Train(TrainArgs),
    /// Assign a data set with an exported model and print cluster sizes and metrics.
    Evaluate(EvalArgs),
    /// Train on built-in synthetic sensor data, export, and assign a fresh stream.
    Demo(DemoArgs),
    /// Cluster with k-means, mini-batch k-means, GMM, DBSCAN, agglomerative or SOM, in a
    /// model's latent space or on raw vectors, and compare them with every metric.
    Cluster(ClusterArgs),
    /// Pictures of a trained model on a data set: latent map, confusion matrix, training curves.
    Plot(PlotArgs),
    /// Choose k: inertia (elbow, with its knee) and mean silhouette for a range of k.
    SelectK(SelectKArgs),
    /// Serve gRPC: training jobs, assignment, the model registry and fleet distribution.
    Serve(ServeArgs),
    /// Add an exported model to a server store (while no server runs on it; a running server
    /// takes models through PublishModel).
    Import {
        /// Store directory.
        #[arg(long)]
        store: PathBuf,
        /// Model directory, model.safetensors or bundle.
        #[arg(long)]
        model: PathBuf,
        /// Make it the active model.
        #[arg(long)]
        activate: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: std::net::SocketAddr,
    /// Store directory: models, registry, job records, fleet stats (created when missing).
    #[arg(long)]
    store: PathBuf,
    /// Root of server-side data sets (mnist/, fashion-mnist/, CSV/NPY files).
    #[arg(long, env = "DEKM_DATA")]
    data_dir: Option<PathBuf>,
    /// Token for Train, CancelJob, PublishModel, ActivateModel, RollbackModel, jobs and fleet
    /// stats.
    #[arg(long, env = "DEKM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Token for Assign, models, FetchModel, WatchModel and ReportStats (open when unset).
    #[arg(long, env = "DEKM_CLIENT_TOKEN", hide_env_values = true)]
    client_token: Option<String>,
    /// Run without an admin token: anyone who reaches the port may train and activate models.
    #[arg(long)]
    no_auth: bool,
    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// PEM certificate chain, for TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key, for TLS (with --tls-cert).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest accepted message in MiB.
    #[arg(long, default_value_t = 64)]
    max_message_mib: usize,
    /// Most samples in one Assign request.
    #[arg(long, default_value_t = 4096)]
    max_batch: usize,
    /// Training jobs that run at once (more wait in a queue).
    #[arg(long, default_value_t = 1)]
    training_slots: usize,
    /// Assign batches encoded at once (default: two per core; with one per core the cores sit
    /// idle between a batch's end and the next one's start, about 10% of loopback throughput).
    #[arg(long)]
    assign_threads: Option<usize>,
    /// Logs as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(Args)]
struct DataArgs {
    /// mnist, fashion-mnist, synthetic, csv:PATH or npy:PATH.
    #[arg(long)]
    dataset: DataSource,
    /// Directory with mnist/ and fashion-mnist/ (IDX files, gzip or raw).
    #[arg(long, env = "DEKM_DATA")]
    data_dir: Option<PathBuf>,
    /// IDX split: train+test (the literature's 70,000), train or test.
    #[arg(long, value_enum, default_value_t = Split::All)]
    split: Split,
    /// Use only the first N samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Label column of CSV/NPY data: index, header name or "last".
    #[arg(long)]
    label_col: Option<LabelColumn>,
    /// Windows generated for --dataset synthetic.
    #[arg(long, default_value_t = 5000)]
    synthetic_samples: usize,
}

impl DataArgs {
    fn load(&self, k: usize, seed: u64) -> Result<data::Dataset> {
        let opts = LoadOptions {
            data_dir: self.data_dir.clone(),
            split: self.split,
            limit: self.limit,
            label_column: self.label_col.clone(),
            synthetic: SyntheticOptions {
                k,
                samples: self.synthetic_samples,
                draw_seed: seed.wrapping_add(1),
                ..Default::default()
            },
        };
        let started = Instant::now();
        let ds = data::load(&self.dataset, &opts)?;
        tracing::info!(dataset = %self.dataset, samples = ds.len(), seconds = started.elapsed().as_secs_f32(), "loaded");
        Ok(ds)
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Number of clusters.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Output model directory.
    #[arg(long)]
    out: PathBuf,
    /// Pretraining epochs.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Minibatch size.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Adam learning rate of pretraining.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Adam learning rate of the DEKM fine-tuning.
    #[arg(long, default_value_t = 1e-4)]
    dekm_lr: f64,
    /// Maximum DEKM iterations.
    #[arg(long, default_value_t = 50)]
    max_iter: usize,
    /// Fine-tuning minibatches per DEKM iteration.
    #[arg(long, default_value_t = 140)]
    steps_per_iter: usize,
    /// Stop when fewer than this fraction of assignments change.
    #[arg(long, default_value_t = 0.005)]
    tol: f64,
    /// k-means++ restarts.
    #[arg(long, default_value_t = 10)]
    restarts: usize,
    /// Latent dimension.
    #[arg(long, default_value_t = 10)]
    latent: usize,
    /// Outlier threshold: quantile of each cluster's training distances.
    #[arg(long, default_value_t = 0.99)]
    threshold_quantile: f32,
    /// Continue from OUT/checkpoint after an interruption.
    #[arg(long)]
    resume: bool,
    /// Convolution kernels: fast (im2col + GEMM) or candle's built-in ops, for comparison.
    #[arg(long, value_enum, default_value_t = ConvBackend::Fast)]
    conv: ConvBackend,
    /// Write pictures (latent space, confusion matrix, training curves) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Stage after pretraining: dekm, dec, idec, or ae-kmeans (none). --max-iter,
    /// --steps-per-iter, --dekm-lr and --tol apply to DEC and IDEC too.
    #[arg(long, value_enum, default_value_t = TrainMethod::Dekm)]
    method: TrainMethod,
    /// Images only: largest random shift of a training image, as a fraction of its side
    /// (DEC-DA uses 0.1; 0, the default, trains on the plain images as the DEKM paper does).
    #[arg(long, default_value_t = Augment::OFF.shift)]
    augment_shift: f32,
    /// Images only: largest random rotation of a training image, in degrees (DEC-DA uses 10).
    #[arg(long, default_value_t = Augment::OFF.rotate_deg)]
    augment_rotate: f32,
    /// How fresh weights are drawn: keras (the DEKM authors' model: convolutions U(±0.05),
    /// Glorot elsewhere, zero biases) or torch (PyTorch's layer defaults).
    #[arg(long, value_enum, default_value_t = Init::default())]
    init: Init,
    /// Where the clustering stage starts: auto (manifold for the DEKM stage on 50 x k to
    /// 200,000 samples, else kmeans), kmeans (the DEKM paper) or manifold (N2D: a Gaussian
    /// mixture on a UMAP layout of the embedding).
    #[arg(long, value_enum, default_value_t = Start::default())]
    start: Start,
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        TrainConfig {
            k: self.k,
            latent: self.latent,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            dekm_lr: self.dekm_lr,
            seed: self.seed,
            max_iter: self.max_iter,
            steps_per_iter: self.steps_per_iter,
            tol: self.tol,
            restarts: self.restarts,
            threshold_quantile: self.threshold_quantile,
            conv: self.conv,
            method: self.method,
            augment: Augment {
                shift: self.augment_shift,
                rotate_deg: self.augment_rotate,
            },
            init: self.init,
            start: self.start,
        }
    }
}

#[derive(Args)]
struct EvalArgs {
    /// Model directory (or model.safetensors).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    pairs: PairArgs,
}

#[derive(Args)]
struct DemoArgs {
    /// Where to export the model (default: a temporary directory, removed afterwards).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Operating regimes (clusters).
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Pretraining epochs.
    #[arg(long, default_value_t = 15)]
    epochs: usize,
}

fn train(args: &TrainArgs, quiet: bool) -> Result<()> {
    let ds = args.data.load(args.k, args.seed)?;
    let cfg = args.config();
    let opts = RunOptions {
        checkpoint: Some(args.out.join("checkpoint")),
        resume: args.resume,
        quiet,
        ..Default::default()
    };
    let outcome = train_and_export(&ds, &cfg, &opts, &args.out).context("training failed")?;
    let sizes = cluster_sizes(&outcome.calibration.labels, cfg.k);
    let h = &outcome.trained.history;
    let stage = match cfg.method {
        TrainMethod::Dekm => "DEKM",
        TrainMethod::Dec => "DEC",
        TrainMethod::Idec => "IDEC",
        TrainMethod::AeKmeans => "AE+k-means (final)",
    };
    println!(
        "trained on {} ({} samples) in {:.1} s pretraining + {:.1} s {} ({} iterations)",
        ds.name,
        ds.len(),
        h.pretrain_seconds,
        h.dekm_seconds,
        stage.split(' ').next().unwrap_or(stage),
        h.iterations.len()
    );
    println!("cluster sizes: {sizes:?}");
    if let Some(table) = outcome.results_table(stage) {
        print!("{table}");
    }
    println!("model: {} (sha256 {})", args.out.display(), outcome.sha256);
    if let Some(dir) = &args.plots {
        let t = &outcome.trained;
        let view = plots::ModelView {
            z: &t.z,
            d: cfg.latent,
            labels: &outcome.calibration.labels,
            outliers: &outcome.calibration.outliers,
            truth: ds.labels.as_deref(),
            history: Some(&t.history),
            tsne_points: 0,
        };
        for f in plots::model_pictures(dir, &view, 20_000)? {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}

#[derive(Args)]
struct PlotArgs {
    /// Model directory (its metrics.json supplies the training curves).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Samples drawn in the latent map (evenly spaced).
    #[arg(long, default_value_t = 20_000)]
    max_points: usize,
    /// Also write latent_tsne.png, a t-SNE map of this many evenly spaced samples (at most
    /// 5000; exact t-SNE, about a minute for 3000 on 2 cores).
    #[arg(long, default_value_t = 0)]
    tsne: usize,
}

fn plot(args: &PlotArgs) -> Result<()> {
    let model = read_model(&args.model)?;
    let ds = args.data.load(model.meta.k, model.meta.seed)?;
    let out = assign(&model, &ds)?;
    let z = dekm_trainer::pipeline::latent(&model, &ds)?;
    let labels: Vec<u32> = out.iter().map(|a| a.cluster).collect();
    let outliers: Vec<bool> = out.iter().map(|a| a.outlier).collect();
    let history = std::fs::read(args.model.join("metrics.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| serde_json::from_value::<History>(v.get("history")?.clone()).ok());
    let view = plots::ModelView {
        z: &z,
        d: model.head.latent_dim(),
        labels: &labels,
        outliers: &outliers,
        truth: ds.labels.as_deref(),
        history: history.as_ref(),
        tsne_points: args.tsne,
    };
    for f in plots::model_pictures(&args.out, &view, args.max_points)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}

fn evaluate(args: &EvalArgs) -> Result<()> {
    let model = read_model(&args.model)?;
    let ds = args.data.load(model.meta.k, model.meta.seed)?;
    let out = assign(&model, &ds)?;
    let labels: Vec<u32> = out.iter().map(|a| a.cluster).collect();
    let outliers = out.iter().filter(|a| a.outlier).count();
    println!(
        "{} samples of {} with the model trained on {} (k = {})",
        ds.len(),
        ds.name,
        model.meta.dataset,
        model.meta.k
    );
    println!("cluster sizes: {:?}", cluster_sizes(&labels, model.meta.k));
    println!(
        "outliers: {outliers} ({:.2}%)",
        100.0 * outliers as f64 / ds.len().max(1) as f64
    );
    let space = analysis::space(Some(&model), &ds)?;
    let assigned: Vec<Option<u32>> = labels.iter().copied().map(Some).collect();
    let pairs = args.pairs.options();
    let scores = analysis::score(&space, &assigned, ds.labels.as_deref(), &pairs)?;
    println!("metrics in the {}:", space.name);
    let rows = [("model's assignment".to_string(), scores, None)];
    print!("{}", analysis::scores_table(&rows));
    args.pairs.footnote(&rows);
    Ok(())
}

#[derive(Args)]
struct PairArgs {
    /// Silhouette and Dunn are exact up to this many points, computed on a seeded sample of
    /// this size beyond.
    #[arg(long, default_value_t = 20_000)]
    max_exact: usize,
}

impl PairArgs {
    fn options(&self) -> PairOptions {
        PairOptions {
            max_exact: self.max_exact,
            seed: 0,
        }
    }

    /// Explains the `*` when a pairwise metric was sampled.
    fn footnote(&self, rows: &[(String, analysis::Scores, Option<f64>)]) {
        let sampled = |s: &analysis::Scores| {
            [s.silhouette, s.dunn]
                .iter()
                .any(|p| p.is_some_and(|p| p.sampled.is_some()))
        };
        if rows.iter().any(|r| sampled(&r.1)) {
            println!(
                "(* silhouette and Dunn on a seeded random sample of {} points)",
                self.max_exact
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MethodName {
    Kmeans,
    Minibatch,
    Gmm,
    GmmDiag,
    Dbscan,
    Agglomerative,
    N2d,
    Som,
}

#[derive(Args)]
struct ClusterArgs {
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
    /// Write dendrogram.png (agglomerative) into this directory.
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
}

fn cluster(args: &ClusterArgs) -> Result<()> {
    let model = args.model.as_deref().map(read_model).transpose()?;
    let ds = args.data.load(args.k, args.seed)?;
    let space = analysis::space(model.as_ref(), &ds)?;
    println!(
        "{} samples of {}, clustered in the {}",
        ds.len(),
        ds.name,
        space.name
    );
    let pairs = args.pairs.options();
    let mut rows = Vec::new();
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
        let (scores, secs) =
            analysis::run_and_score(&method, &space, ds.labels.as_deref(), args.seed, &pairs)
                .with_context(|| method.to_string())?;
        rows.push((method.to_string(), scores, Some(secs)));
    }
    print!("{}", analysis::scores_table(&rows));
    args.pairs.footnote(&rows);
    if let Some(dir) = &args.plots
        && args.method.contains(&MethodName::Agglomerative)
    {
        std::fs::create_dir_all(dir)?;
        let tree =
            dekm_cluster::hierarchy::linkage(&Points::new(&space.xs, space.dim)?, args.linkage)?;
        let path = dir.join("dendrogram.png");
        plots::dendrogram(&path, &tree, 30)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Args)]
struct SelectKArgs {
    /// Cluster in this model's latent space (default: the raw, normalised samples).
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Range of k, inclusive: FROM..TO.
    #[arg(long, default_value = "2..20")]
    k_range: KRange,
    /// k-means++ restarts per k.
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// Write elbow.png and silhouette.png into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    pairs: PairArgs,
}

/// `FROM..TO` on the command line.
#[derive(Clone, Copy)]
struct KRange(usize, usize);

impl std::str::FromStr for KRange {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (a, b) = s
            .split_once("..")
            .ok_or_else(|| format!("{s:?}: expected FROM..TO, e.g. 2..20"))?;
        let p = |v: &str| {
            v.trim_start_matches('=')
                .parse::<usize>()
                .map_err(|e| format!("{s:?}: {e}"))
        };
        Ok(Self(p(a)?, p(b)?))
    }
}

fn select_k(args: &SelectKArgs) -> Result<()> {
    let model = args.model.as_deref().map(read_model).transpose()?;
    let ds = args.data.load(args.k_range.1.max(1), args.seed)?;
    let space = analysis::space(model.as_ref(), &ds)?;
    let p = Points::new(&space.xs, space.dim)?;
    let sel = dekm_cluster::select::select_k(
        &p,
        args.k_range.0..=args.k_range.1,
        args.restarts,
        args.seed,
        &args.pairs.options(),
    )?;
    println!(
        "{} samples of {}, k-means in the {}",
        ds.len(),
        ds.name,
        space.name
    );
    println!("{:>4} {:>16} {:>11}", "k", "inertia", "silhouette");
    for s in &sel.scores {
        println!(
            "{:>4} {:>16.2} {:>11}",
            s.k,
            s.inertia,
            s.silhouette.map_or("-".into(), |v| format!("{v:.4}"))
        );
    }
    let show = |k: Option<usize>| k.map_or("none".to_string(), |k| k.to_string());
    println!(
        "elbow (knee of the inertia curve): {}; best silhouette: {}",
        show(sel.knee),
        show(sel.best_silhouette)
    );
    println!("recommended k: {}", show(sel.best_silhouette.or(sel.knee)));
    if let Some(m) = sel.sampled {
        println!("(silhouettes on a seeded random sample of {m} points)");
    }
    if let Some(dir) = &args.plots {
        std::fs::create_dir_all(dir)?;
        let ks: Vec<f64> = sel.scores.iter().map(|s| s.k as f64).collect();
        let inertia: Vec<f64> = sel.scores.iter().map(|s| s.inertia).collect();
        let sil: Vec<f64> = sel
            .scores
            .iter()
            .map(|s| s.silhouette.unwrap_or(f64::NAN))
            .collect();
        let (elbow, silhouette) = (dir.join("elbow.png"), dir.join("silhouette.png"));
        plots::lines(
            &elbow,
            "k-means inertia (line: knee)",
            ("k", "inertia"),
            &ks,
            &[("inertia", inertia)],
            sel.knee.map(|k| k as f64),
        )?;
        plots::lines(
            &silhouette,
            "mean silhouette (line: best)",
            ("k", "silhouette"),
            &ks,
            &[("silhouette", sil)],
            sel.best_silhouette.map(|k| k as f64),
        )?;
        println!("wrote {} and {}", elbow.display(), silhouette.display());
    }
    Ok(())
}

fn demo(args: &DemoArgs, quiet: bool) -> Result<()> {
    let tmp;
    let out = match &args.out {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile_dir()?;
            tmp.0.clone()
        }
    };
    let world = SyntheticOptions {
        k: args.k,
        samples: 4000,
        anomaly_rate: 0.01,
        world_seed: args.seed.wrapping_add(42),
        draw_seed: args.seed.wrapping_add(1),
    };
    let train_set = data::load(
        &DataSource::Synthetic,
        &LoadOptions {
            synthetic: world,
            ..Default::default()
        },
    )?;
    println!(
        "demo: {} synthetic sensor windows ({} channels x {} steps) from {} regimes, {} injected anomalies",
        train_set.len(),
        data::synthetic::CHANNELS,
        data::synthetic::WINDOW,
        args.k,
        train_set.anomalies.iter().flatten().filter(|&&a| a).count()
    );
    let cfg = TrainConfig {
        k: args.k,
        epochs: args.epochs,
        seed: args.seed,
        max_iter: 20,
        steps_per_iter: 40,
        ..Default::default()
    };
    let opts = RunOptions {
        checkpoint: None,
        resume: false,
        quiet,
        ..Default::default()
    };
    let started = Instant::now();
    let outcome = train_and_export(&train_set, &cfg, &opts, &out)?;
    println!(
        "trained and exported to {} in {:.1} s",
        out.display(),
        started.elapsed().as_secs_f32()
    );
    if let Some(table) = outcome.results_table("DEKM") {
        print!("{table}");
    }

    let stream_opts = SyntheticOptions {
        samples: 1000,
        anomaly_rate: 0.03,
        draw_seed: args.seed.wrapping_add(1000),
        ..world
    };
    let stream = data::load(
        &DataSource::Synthetic,
        &LoadOptions {
            synthetic: stream_opts,
            ..Default::default()
        },
    )?;
    let model = read_model(&out)?;
    let started = Instant::now();
    let assigned = assign(&model, &stream)?;
    let secs = started.elapsed().as_secs_f64();
    let labels: Vec<u32> = assigned.iter().map(|a| a.cluster).collect();
    println!(
        "\nfresh stream: {} windows assigned with the exported model in {:.1} ms ({:.0} windows/s)",
        stream.len(),
        secs * 1e3,
        stream.len() as f64 / secs
    );
    println!("cluster sizes: {:?}", cluster_sizes(&labels, args.k));
    if let Some(t) = &stream.labels {
        print!(
            "{}",
            metrics_table(&[("DEKM (stream)", metrics::evaluate(&labels, t))])
        );
    }
    let truth = stream.anomalies.as_deref().unwrap_or_default();
    let injected = truth.iter().filter(|&&a| a).count();
    let caught = assigned
        .iter()
        .zip(truth)
        .filter(|(a, t)| a.outlier && **t)
        .count();
    let false_alarms = assigned
        .iter()
        .zip(truth)
        .filter(|(a, t)| a.outlier && !**t)
        .count();
    println!(
        "anomalies: {caught} of {injected} injected flagged ({:.0}%), {false_alarms} false alarms in {} normal windows ({:.1}%)",
        100.0 * caught as f64 / injected.max(1) as f64,
        stream.len() - injected,
        100.0 * false_alarms as f64 / (stream.len() - injected).max(1) as f64
    );
    if args.out.is_none() {
        println!("(model directory was temporary; pass --out DIR to keep it)");
    }
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TempDir> {
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let p = base.join(format!("dekm-demo-{}-{i}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(TempDir(p));
        }
    }
    bail!(
        "could not create a temporary directory under {}",
        base.display()
    )
}

fn main() -> Result<()> {
    dekm_trainer::allocator::keep_freed_memory();
    // SAFETY: first statement of `main` after the allocator option; no thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        dekm_trainer::threads::one_candle_thread();
    }
    let cli = Cli::parse();
    // Progress bars carry the running figures; `RUST_LOG=info` adds structured logs. The
    // server logs at info by default, as JSON lines with --log-json.
    let (level, json) = match &cli.command {
        Command::Serve(a) => ("info", a.log_json),
        _ => ("warn", false),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    match &cli.command {
        Command::Train(a) => train(a, cli.quiet),
        Command::Evaluate(a) => evaluate(a),
        Command::Demo(a) => demo(a, cli.quiet),
        Command::Serve(a) => serve(a),
        Command::Cluster(a) => cluster(a),
        Command::SelectK(a) => select_k(a),
        Command::Plot(a) => plot(a),
        Command::Import {
            store,
            model,
            activate,
        } => import(store, model, *activate),
    }
}

fn server_config(a: &ServeArgs) -> Result<ServeConfig> {
    if a.admin_token.is_none() && !a.no_auth {
        bail!(
            "set an admin token (--admin-token or DEKM_ADMIN_TOKEN), or pass --no-auth to let anyone who reaches the port train and activate models"
        );
    }
    for t in [&a.admin_token, &a.client_token].into_iter().flatten() {
        if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("tokens must be at least 16 printable ASCII characters");
        }
    }
    Ok(ServeConfig {
        store: a.store.clone(),
        data_root: a.data_dir.clone(),
        auth: Auth::new(a.admin_token.clone(), a.client_token.clone()),
        limits: Limits {
            max_message_bytes: a.max_message_mib.max(1) << 20,
            max_batch: a.max_batch.max(1),
            ..Limits::default()
        },
        training_slots: a.training_slots.max(1),
        assign_threads: a.assign_threads.unwrap_or_else(|| {
            2 * std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }),
        tls: a.tls_cert.clone().zip(a.tls_key.clone()),
    })
}

fn serve(a: &ServeArgs) -> Result<()> {
    let server = Server::open(server_config(a)?)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.addr)
            .await
            .with_context(|| format!("cannot listen on {}", a.addr))?;
        let metrics = match a.metrics_addr {
            Some(m) => Some(
                tokio::net::TcpListener::bind(m)
                    .await
                    .with_context(|| format!("cannot listen on {m}"))?,
            ),
            None => None,
        };
        tracing::info!(addr = %listener.local_addr()?, metrics = ?a.metrics_addr, tls = a.tls_cert.is_some(), "serving");
        eprintln!("dekm serve: listening on {}", listener.local_addr()?);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        };
        server.run(listener, metrics, shutdown).await?;
        anyhow::Ok(())
    })
}

fn import(store: &std::path::Path, model: &std::path::Path, activate: bool) -> Result<()> {
    let registry = dekm_trainer::service::registry::Registry::open(store)?;
    let parts = dekm_edge::file::read_parts(model)?;
    let entry = registry.add(&parts)?;
    if activate {
        registry.activate(&entry.id)?;
    }
    println!(
        "{} {} ({} bytes){}",
        entry.id,
        entry.sha256,
        entry.bytes,
        if activate { ", active" } else { "" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dekm train` spells its defaults as clap literals; they must be `TrainConfig::default()`,
    /// which the gRPC service, the tests and the library use.
    #[test]
    fn train_flags_default_to_the_library_defaults() {
        let cli = Cli::try_parse_from(["dekm", "train", "--dataset", "synthetic", "--out", "m"])
            .expect("parses");
        let Command::Train(args) = cli.command else {
            panic!("not a train command");
        };
        assert_eq!(args.config(), TrainConfig::default());
    }
}

//! `dekm train`: train a model on a data set and export it.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use dekm_cli::plots;
use dekm_cli::progress::Bars;
use dekm_shared::{EncoderSpec, Neighbours, OutlierScore, SpectrumSpec, TimePooling};
use dekm_trainer::augment::Augment;
use dekm_trainer::data::SampleShape;
use dekm_trainer::device::DeviceChoice;
use dekm_trainer::features::SeriesFeatures;
use dekm_trainer::gan::GanLoss;
use dekm_trainer::model::{ConvBackend, ImageEncoder, Init, SeriesEncoder};
use dekm_trainer::pipeline::{cluster_sizes, majority_labels, train_and_export};
use dekm_trainer::train::{
    Method as TrainMethod, Observer, RunOptions, Start, TrainConfig, explain,
};

use super::args::{DataArgs, ScoreArg};
use super::representatives;

#[derive(Args)]
pub(crate) struct TrainArgs {
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
    /// Minibatch size [default: 256; 64 for --method clustergan, the paper's].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Adam learning rate of pretraining (of DeepCluster's network, of ClusterGAN's three)
    /// [default: 0.001; 0.0001 for --method clustergan, the paper's].
    #[arg(long)]
    lr: Option<f64>,
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
    /// Latent dimension [default: 10; 128 for --method deepcluster, the width of the features
    /// it clusters; for --method clustergan the length of the noise, 30 as in the paper, the
    /// latent vector being the noise and the k-long cluster code].
    #[arg(long)]
    latent: Option<usize>,
    /// Outlier threshold: quantile of each cluster's training scores (far-out ones left out).
    #[arg(long, default_value_t = 0.998)]
    threshold_quantile: f32,
    /// Outlier score: auto (knn for images, mahalanobis for series and vectors, as measured),
    /// mahalanobis (distance to the centroid under the cluster's covariance), knn (distance to
    /// the n-th nearest of reference latents kept in the model) or distance (Euclidean, as
    /// models before format 2).
    #[arg(long, default_value_t = ScoreArg(TrainConfig::default().outlier_score))]
    outlier_score: ScoreArg,
    /// With `--outlier-score knn`: which neighbour's distance is the score, 1 to 32
    /// [default: 5].
    #[arg(long)]
    knn_neighbours: Option<u32>,
    /// With `--outlier-score knn`: reference latents kept in the model at most (a seeded
    /// subsample of the training samples beyond that); the device scans them all
    /// [default: 4096].
    #[arg(long)]
    knn_references: Option<u32>,
    /// Fraction of the samples kept out of training to calibrate the outlier thresholds on
    /// (default: 0.2 of a recording's windows, the last ones; none of other data).
    #[arg(long)]
    calibration_holdout: Option<f32>,
    /// Continue from OUT/checkpoint after an interruption.
    #[arg(long)]
    resume: bool,
    /// Encoder of images: dekm (DEKM's 5x5/32, 5x5/64, 3x3/128 convolutions with ReLU) or
    /// clustergan (ClusterGAN's own: 4x4/64 and 4x4/128 convolutions, a dense layer of 1,024,
    /// leaky ReLU; about four times the multiply-adds). Any method; with --method clustergan
    /// its discriminator and generator mirror it, as the paper's networks.
    #[arg(long, value_enum, default_value_t = ImageEncoder::default())]
    image_encoder: ImageEncoder,
    /// Encoder of series data (windows of a recording, .ts cases): dense (the flattened
    /// window) or conv1d (convolutions over time, the series standardised per channel).
    #[arg(long, value_enum, default_value_t = SeriesEncoder::default())]
    series_encoder: SeriesEncoder,
    /// How conv1d summarises a window before the latent layer: mean-std (each feature's mean
    /// and standard deviation over time), mean, or flatten (every step, position-dependent).
    #[arg(long, default_value_t = TimePooling::MeanStd)]
    time_pooling: TimePooling,
    /// What series are clustered on: raw (the readings), spectrum (each channel's mean and log
    /// band powers, the same wherever in the window a motion falls), or auto (spectrum when
    /// its k-means partition's silhouette is at least 0.05 above the raw windows'; raw under
    /// conv1d).
    #[arg(long, value_enum, default_value_t = SeriesFeatures::default())]
    series_features: SeriesFeatures,
    /// Frequency bands per channel of the spectral features (at most half the window).
    #[arg(long, default_value_t = SpectrumSpec::DEFAULT_BANDS)]
    spectrum_bands: usize,
    /// Convolution kernels: fast (the fused CPU kernels; on a GPU, gemm), gemm (candle's conv2d
    /// for every convolution and gradient) or candle's built-in ops, for comparison.
    #[arg(long, value_enum, default_value_t = ConvBackend::Fast)]
    conv: ConvBackend,
    /// Write pictures (latent space, confusion matrix, training curves) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Stage after pretraining: dekm, dec, idec, or ae-kmeans (none). --max-iter,
    /// --steps-per-iter, --dekm-lr and --tol apply to DEC and IDEC too. Or deepcluster, which
    /// replaces pretraining: --epochs rounds of k-means pseudo-labels and training on them.
    /// Or clustergan, which replaces pretraining too: --epochs passes of a GAN whose encoder
    /// reads back a one-hot cluster code (`dekm sample` draws new samples of a cluster).
    #[arg(long, value_enum, default_value_t = TrainMethod::Dekm)]
    method: TrainMethod,
    /// ClusterGAN's adversarial loss: non-saturating (one discriminator step per generator
    /// step, with a mode-seeking term; what clusters best in a CPU's budget) or wgan-gp (the
    /// paper's: five critic steps with WGAN-GP's gradient penalty per generator step, so an
    /// epoch makes a fifth of the generator steps; for a GPU and the paper's long schedule).
    #[arg(long, value_enum, default_value_t = GanLoss::default())]
    gan_loss: GanLoss,
    /// Images only: largest random shift of a training image, as a fraction of its side
    /// (DEC-DA uses 0.1; 0, the default, trains on the plain images as the DEKM paper does;
    /// --method deepcluster defaults to DEC-DA's 0.1, as its paper trains on random crops).
    #[arg(long)]
    augment_shift: Option<f32>,
    /// Images only: largest random rotation of a training image, in degrees (DEC-DA uses 10;
    /// default 0, or 10 for --method deepcluster).
    #[arg(long)]
    augment_rotate: Option<f32>,
    /// How fresh weights are drawn: keras (the DEKM authors' model: convolutions U(±0.05),
    /// Glorot elsewhere, zero biases) or torch (PyTorch's layer defaults).
    #[arg(long, value_enum, default_value_t = Init::default())]
    init: Init,
    /// Where the clustering stage starts: auto (for the DEKM stage: input on vectors of at
    /// most 128 features, else manifold from 50 x k samples up; kmeans otherwise), kmeans
    /// (the DEKM paper), manifold (N2D: a Gaussian mixture on a UMAP layout of the embedding) or
    /// input (a Gaussian mixture on the standardised input, full or diagonal covariance by BIC).
    #[arg(long, value_enum, default_value_t = Start::default())]
    start: Start,
    /// Where to train: auto (a CUDA GPU when this dekm was built with CUDA and one answers,
    /// else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

impl TrainArgs {
    pub(crate) fn config(&self) -> Result<TrainConfig> {
        let knn = (self.knn_neighbours, self.knn_references);
        let outlier_score = match (self.outlier_score.0, knn) {
            (Some(OutlierScore::Knn(n)), (neighbours, references)) => {
                Some(OutlierScore::Knn(Neighbours {
                    neighbours: neighbours.unwrap_or(n.neighbours),
                    references: references.unwrap_or(n.references),
                }))
            }
            (chosen, (None, None)) => chosen,
            (_, _) => bail!(
                "--knn-neighbours and --knn-references apply to --outlier-score knn, not {}",
                self.outlier_score
            ),
        };
        let base = TrainConfig::for_method(self.method);
        Ok(TrainConfig {
            k: self.k,
            latent: self.latent.unwrap_or(base.latent),
            epochs: self.epochs,
            batch_size: self.batch_size.unwrap_or(base.batch_size),
            lr: self.lr.unwrap_or(base.lr),
            finetune_lr: self.dekm_lr,
            seed: self.seed,
            max_iter: self.max_iter,
            steps_per_iter: self.steps_per_iter,
            tol: self.tol,
            restarts: self.restarts,
            threshold_quantile: self.threshold_quantile,
            outlier_score,
            calibration_holdout: self.calibration_holdout,
            series_encoder: self.series_encoder,
            time_pooling: self.time_pooling,
            series_features: self.series_features,
            spectrum_bands: self.spectrum_bands,
            conv: self.conv,
            method: self.method,
            augment: Augment {
                shift: self.augment_shift.unwrap_or(base.augment.shift),
                rotate_deg: self.augment_rotate.unwrap_or(base.augment.rotate_deg),
            },
            init: self.init,
            start: self.start,
            device: self.device,
            gan_loss: self.gan_loss,
            image_encoder: self.image_encoder,
        })
    }
}

/// Trains, exports and prints the result table (and writes pictures with `--plots`).
pub(crate) fn run(args: &TrainArgs, quiet: bool) -> Result<()> {
    let ds = args
        .data
        .load(args.k, args.seed, || Ok(args.device.open()?.0))?;
    let cfg = args.config()?;
    let bars = (!quiet).then(|| Arc::new(Bars::default()));
    let opts = RunOptions {
        checkpoint: Some(args.out.join("checkpoint")),
        resume: args.resume,
        observer: bars.clone().map(|b| b as Arc<dyn Observer>),
    };
    let outcome = train_and_export(&ds, &cfg, &opts, &args.out);
    if let Some(b) = &bars {
        b.finish();
    }
    let outcome = outcome.context("training failed")?;
    let sizes = cluster_sizes(&outcome.calibration.labels, cfg.k);
    let h = &outcome.trained.history;
    let stage = match cfg.method {
        TrainMethod::AeKmeans => "AE+k-means (final)",
        m => m.label(),
    };
    let held = ds.len() - outcome.meta.samples;
    let calibration = if held > 0 {
        format!(
            ", {held} held out of training to calibrate the outlier flag{}",
            if ds.stream.is_some() {
                " (the recording's end, and the windows overlapping it)"
            } else {
                ""
            }
        )
    } else {
        String::new()
    };
    // DeepCluster and ClusterGAN have no pretraining: their epochs are their iterations.
    let (pretraining, rounds) = match cfg.method {
        TrainMethod::DeepCluster | TrainMethod::ClusterGan => (String::new(), "epochs"),
        _ => (
            format!("{:.1} s pretraining + ", h.pretrain_seconds),
            "iterations",
        ),
    };
    println!(
        "trained on {} ({} of {} samples{calibration}) in {pretraining}{:.1} s {} ({} {rounds})",
        ds.name,
        outcome.meta.samples,
        ds.len(),
        h.stage_seconds,
        stage.split(' ').next().unwrap_or(stage),
        h.iterations.len()
    );
    if outcome.meta.stream.is_some() || matches!(ds.shape, SampleShape::Series(_)) {
        println!("{}", outcome.features.explain(cfg.series_features));
    }
    if let Some(scaling) = outcome.scaling {
        println!("{}", scaling.explain());
        if let EncoderSpec::Dense {
            input,
            hidden,
            latent,
            ..
        } = &outcome.meta.encoder
        {
            let widths: Vec<String> = hidden.iter().map(usize::to_string).collect();
            println!(
                "dense encoder {input}-{}-{latent}, sized to {input} features and {} samples ({})",
                widths.join("-"),
                outcome.meta.samples,
                EncoderSpec::SIZED_DENSE_RULE
            );
        }
    }
    if !matches!(
        cfg.method,
        TrainMethod::AeKmeans | TrainMethod::DeepCluster | TrainMethod::ClusterGan
    ) && cfg.max_iter > 0
    {
        println!(
            "{}",
            explain(outcome.trained.config.start, cfg.start, h.mixture.as_ref())
        );
    }
    println!("cluster sizes: {sizes:?}");
    if let (0, Some(truth)) = (held, &ds.labels) {
        let name = |l: u32| {
            ds.label_names
                .get(l as usize)
                .cloned()
                .unwrap_or_else(|| l.to_string())
        };
        let named: Vec<String> = majority_labels(&outcome.calibration.labels, truth, cfg.k)
            .into_iter()
            .enumerate()
            .filter_map(|(c, m)| m.map(|(l, n, size)| format!("{c}: {} {n}/{size}", name(l))))
            .collect();
        println!("clusters by their most common label: {}", named.join(", "));
    }
    // Texts are never held out (only recordings are), so the labels are the samples' own.
    if let (0, Some(text)) = (held, &ds.text) {
        representatives::print(&ds, text, &outcome.calibration.labels, cfg.k);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `dekm train` spells its defaults as clap literals; they must be `TrainConfig::default()`,
    /// which the gRPC service, the tests and the library use.
    #[test]
    fn train_flags_default_to_the_library_defaults() {
        let cli = super::super::Cli::try_parse_from([
            "dekm",
            "train",
            "--dataset",
            "synthetic",
            "--out",
            "m",
        ])
        .expect("parses");
        let super::super::Command::Train(args) = cli.command else {
            panic!("not a train command");
        };
        assert_eq!(args.config().unwrap(), TrainConfig::default());
    }

    /// `--method deepcluster` and `--method clustergan` start from their methods' defaults;
    /// flags given still win.
    #[test]
    fn deepcluster_flags_default_to_its_own_defaults() {
        let parse_as = |method: &str, extra: &[&str]| {
            let mut a = vec!["dekm", "train", "--dataset", "synthetic", "--out", "m"];
            a.extend(["--method", method]);
            a.extend(extra);
            let cli = super::super::Cli::try_parse_from(a).expect("parses");
            let super::super::Command::Train(args) = cli.command else {
                panic!("not a train command");
            };
            args.config().unwrap()
        };
        let parse = |extra: &[&str]| parse_as("deepcluster", extra);
        assert_eq!(
            parse(&[]),
            TrainConfig::for_method(TrainMethod::DeepCluster)
        );
        let gan = parse_as("clustergan", &[]);
        assert_eq!(gan, TrainConfig::for_method(TrainMethod::ClusterGan));
        assert_eq!((gan.latent, gan.batch_size, gan.lr), (30, 64, 1e-4));
        let set = parse_as("clustergan", &["--batch-size", "32", "--lr", "0.0002"]);
        assert_eq!((set.batch_size, set.lr), (32, 2e-4));
        let set = parse(&["--latent", "16", "--augment-rotate", "0"]);
        assert_eq!(
            (set.latent, set.augment.shift, set.augment.rotate_deg),
            (16, 0.1, 0.0)
        );
    }

    /// `--outlier-score knn` takes its settings from the knn flags; they are refused with
    /// another score rather than ignored.
    #[test]
    fn knn_flags_set_the_neighbour_score_and_need_it() {
        let parse = |extra: &[&str]| {
            let mut a = vec!["dekm", "train", "--dataset", "synthetic", "--out", "m"];
            a.extend(extra);
            let cli = super::super::Cli::try_parse_from(a).expect("parses");
            let super::super::Command::Train(args) = cli.command else {
                panic!("not a train command");
            };
            args.config().map(|c| c.outlier_score)
        };
        assert_eq!(
            parse(&["--outlier-score", "knn", "--knn-references", "500"]).unwrap(),
            Some(OutlierScore::Knn(Neighbours {
                neighbours: 5,
                references: 500
            }))
        );
        assert_eq!(
            parse(&["--outlier-score", "knn"]).unwrap(),
            Some(OutlierScore::Knn(Neighbours::DEFAULT))
        );
        assert_eq!(parse(&[]).unwrap(), None, "auto");
        assert_eq!(
            parse(&["--outlier-score", "distance"]).unwrap(),
            Some(OutlierScore::Distance)
        );
        let err = parse(&["--knn-neighbours", "3"]).unwrap_err().to_string();
        assert!(err.contains("apply to --outlier-score knn"), "{err}");
    }

    #[test]
    fn every_embedding_command_takes_a_device_and_a_bad_one_is_named() {
        use super::super::Cli;
        let base = ["--dataset", "synthetic"];
        for cmd in [
            vec!["train", "--out", "m"],
            vec!["evaluate", "--model", "m"],
            vec!["cluster"],
            vec!["plot", "--model", "m", "--out", "p"],
            vec!["select-k"],
        ] {
            let args = |device: &str| {
                let mut a = vec!["dekm"];
                a.extend(&cmd);
                a.extend(base);
                a.extend(["--device", device]);
                a.into_iter().map(String::from).collect::<Vec<_>>()
            };
            for ok in ["auto", "cpu", "cuda", "cuda:1"] {
                assert!(Cli::try_parse_from(args(ok)).is_ok(), "{cmd:?} {ok}");
            }
            let err = Cli::try_parse_from(args("gpu")).err().unwrap().to_string();
            assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
        }
        let serve = ["dekm", "serve", "--store", "s", "--device", "cuda:0"];
        assert!(Cli::try_parse_from(serve).is_ok());
    }
}

//! `dekm demo`: the whole job on built-in synthetic sensor data, with nothing to download.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use dekm_cli::progress::Bars;
use dekm_cluster::detection::FlagCounts;
use dekm_trainer::data::synthetic::{Fault, Plant};
use dekm_trainer::data::{self, DataSource, Dataset, LoadOptions, SyntheticOptions};
use dekm_trainer::export::read_model;
use dekm_trainer::metrics;
use dekm_trainer::model::SeriesEncoder;
use dekm_trainer::pipeline::{assign, cluster_sizes, metrics_table, train_and_export};
use dekm_trainer::train::{Observer, RunOptions, TrainConfig};

#[derive(Args)]
pub(crate) struct DemoArgs {
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
    /// Encoder of the windows: dense or conv1d (as `dekm train --series-encoder`).
    #[arg(long, value_enum, default_value_t = SeriesEncoder::default())]
    series_encoder: SeriesEncoder,
}

/// Trains on synthetic sensor windows, exports, and assigns a fresh stream with anomalies.
pub(crate) fn run(args: &DemoArgs, quiet: bool) -> Result<()> {
    let tmp;
    let out = match &args.out {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("dekm-demo-").tempdir()?;
            tmp.path().to_path_buf()
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
        series_encoder: args.series_encoder,
        ..Default::default()
    };
    let bars = (!quiet).then(|| Arc::new(Bars::default()));
    let opts = RunOptions {
        checkpoint: None,
        resume: false,
        observer: bars.clone().map(|b| b as Arc<dyn Observer>),
    };
    let started = Instant::now();
    let outcome = train_and_export(&train_set, &cfg, &opts, &out);
    if let Some(b) = &bars {
        b.finish();
    }
    let outcome = outcome?;
    println!(
        "trained and exported to {} in {:.1} s",
        out.display(),
        started.elapsed().as_secs_f32()
    );
    if let Some(table) = outcome.results_table("DEKM") {
        print!("{table}");
    }

    // A fresh draw from the same plant, with three times the faults.
    let draw = Plant::new(world.k, world.world_seed).draw(1000, 0.03, args.seed.wrapping_add(1000));
    let faults = draw.faults.clone();
    let stream = Dataset::from(draw);
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
    let flagged: Vec<bool> = assigned.iter().map(|a| a.outlier).collect();
    let truth: Vec<bool> = faults.iter().map(Option::is_some).collect();
    let all = FlagCounts::new(&flagged, &truth);
    let per_kind: Vec<String> = Fault::ALL
        .iter()
        .map(|&kind| {
            let of_kind: Vec<bool> = faults.iter().map(|f| *f == Some(kind)).collect();
            let c = FlagCounts::new(&flagged, &of_kind);
            format!("{} {}/{}", kind.name(), c.caught, c.anomalies)
        })
        .collect();
    println!(
        "anomalies ({} score): {} of {} injected flagged ({:.0}%: {}), {} false alarms in {} normal windows ({:.1}%)",
        model.meta.outlier_score,
        all.caught,
        all.anomalies,
        100.0 * all.recall(),
        per_kind.join(", "),
        all.false_alarms,
        all.normal,
        100.0 * all.false_alarm_rate()
    );
    if args.out.is_none() {
        println!("(model directory was temporary; pass --out DIR to keep it)");
    }
    Ok(())
}

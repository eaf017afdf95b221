//! `dekm demo`: the whole job on a built-in simulated plant, with nothing to download: record,
//! train on windows of the recording, export, then stream a fresh recording reading by reading
//! through the edge runtime, as a device would, and report the groups and the faults caught.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use dekm_cli::progress::Bars;
use dekm_cluster::detection::FlagCounts;
use dekm_edge::{Model, StreamSession, WindowAssignment};
use dekm_trainer::data::synthetic::{CHANNELS, Fault, Plant, Record, WINDOW};
use dekm_trainer::data::{Dataset, Windowing};
use dekm_trainer::metrics;
use dekm_trainer::model::SeriesEncoder;
use dekm_trainer::pipeline::{cluster_sizes, metrics_table, train_and_export};
use dekm_trainer::train::{Observer, RunOptions, TrainConfig};

use super::args::ScoreArg;

/// Values of one window the demo's stream session holds at most.
const CAPACITY: usize = 4096;

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Where to export the model and the fresh recording (default: a temporary directory,
    /// removed afterwards).
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
    /// Outlier score: auto, mahalanobis, knn or distance (as `dekm train --outlier-score`).
    #[arg(long, default_value_t = ScoreArg(TrainConfig::default().outlier_score))]
    outlier_score: ScoreArg,
}

/// Records a simulated plant, trains on its windows, exports, and streams a fresh recording
/// with three times the faults through the edge runtime.
pub(crate) fn run(args: &DemoArgs, quiet: bool) -> Result<()> {
    let tmp;
    let out = match &args.out {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("dekm-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let plant = Plant::new(args.k, args.seed.wrapping_add(42));
    let windowing = Windowing {
        window: WINDOW,
        hop: WINDOW / 2,
    };
    let training = plant.record(2000, 0.01, args.seed.wrapping_add(1));
    let train_set = Dataset::from_recording(
        "synthetic recording".into(),
        &training.recording,
        windowing,
        Path::new("synthetic recording"),
    )?;
    println!(
        "demo: a simulated plant recorded {} readings of {} channels in {} regimes, {} injected faults; \
         cut into {} windows of {} readings every {}",
        training.recording.len(),
        CHANNELS,
        args.k,
        training.faults.len(),
        train_set.len(),
        windowing.window,
        windowing.hop
    );
    let cfg = TrainConfig {
        k: args.k,
        epochs: args.epochs,
        seed: args.seed,
        max_iter: 20,
        steps_per_iter: 40,
        series_encoder: args.series_encoder,
        outlier_score: args.outlier_score.0,
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
        "trained and exported to {} in {:.1} s (outlier score: {}; the last {} windows held out to calibrate it)",
        out.display(),
        started.elapsed().as_secs_f32(),
        outcome.meta.outlier_score,
        train_set.len() - outcome.meta.samples,
    );
    println!("{}", outcome.features.explain(cfg.series_features));
    if let Some(table) = outcome.results_table("DEKM") {
        print!("{table}");
    }

    // A fresh recording from the same plant, three times the faults, streamed reading by
    // reading through the device's own runtime.
    let fresh = plant.record(500, 0.03, args.seed.wrapping_add(1000));
    let csv = out.join("stream.csv");
    write_csv(&fresh, &csv)?;
    let parts = dekm_edge::file::read_parts(&out)?;
    let model = Model::from_parts(&parts)?;
    let mut session = StreamSession::<'_, CAPACITY>::new(&model)?;
    let started = Instant::now();
    let mut assigned = Vec::new();
    for reading in fresh.recording.values.chunks_exact(CHANNELS) {
        assigned.extend(session.push(reading)?);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\nfresh recording: {} readings streamed through the edge runtime in {:.1} ms ({:.0} readings/s), {} windows assigned",
        fresh.recording.len(),
        secs * 1e3,
        fresh.recording.len() as f64 / secs,
        assigned.len()
    );
    report(&fresh, &assigned, args.k)?;
    if args.out.is_some() {
        println!(
            "replay it on a device: dekm-edge assign --model {} --stream --input {} --summary",
            out.display(),
            csv.display()
        );
    } else {
        println!("(model directory was temporary; pass --out DIR to keep it and the recording)");
    }
    Ok(())
}

/// Groups against the regimes, and the faults caught per kind: a fault counts as caught when a
/// window overlapping it is flagged; a false alarm is a flagged window with no faulty reading.
/// Windows spanning a regime switch are normal operation the training data holds few of, so
/// their flags are counted apart.
fn report(fresh: &Record, assigned: &[WindowAssignment], k: usize) -> Result<()> {
    let rec = &fresh.recording;
    let (labels, anomalies) = (
        rec.labels.as_deref().context("the recording's regimes")?,
        rec.anomalies.as_deref().context("the recording's faults")?,
    );
    let span = |w: &WindowAssignment| w.start as usize..w.start as usize + WINDOW;
    let clusters: Vec<u32> = assigned.iter().map(|w| w.assignment.cluster).collect();
    let regimes: Vec<u32> = assigned
        .iter()
        .map(|w| {
            let mut counts = vec![0usize; k];
            labels[span(w)]
                .iter()
                .for_each(|&l| counts[l as usize] += 1);
            (0..k)
                .max_by_key(|&c| (counts[c], usize::MAX - c))
                .unwrap_or(0) as u32
        })
        .collect();
    println!(
        "groups (windows per cluster): {:?}",
        cluster_sizes(&clusters, k)
    );
    print!(
        "{}",
        metrics_table(&[("DEKM (stream)", metrics::evaluate(&clusters, &regimes))])
    );
    let flagged: Vec<bool> = assigned.iter().map(|w| w.assignment.outlier).collect();
    let caught = |&(start, _): &(usize, Fault)| {
        assigned
            .iter()
            .any(|w| w.assignment.outlier && span(w).start < start + WINDOW && start < span(w).end)
    };
    let per_kind: Vec<String> = Fault::ALL
        .iter()
        .map(|&kind| {
            let of: Vec<&(usize, Fault)> = fresh.faults.iter().filter(|f| f.1 == kind).collect();
            let c = of.iter().filter(|f| caught(f)).count();
            format!("{} {c}/{}", kind.name(), of.len())
        })
        .collect();
    let total = fresh.faults.iter().filter(|f| caught(f)).count();
    let faulty: Vec<bool> = assigned
        .iter()
        .map(|w| anomalies[span(w)].iter().any(|&a| a))
        .collect();
    let switching: Vec<bool> = assigned
        .iter()
        .map(|w| labels[span(w)].windows(2).any(|p| p[0] != p[1]))
        .collect();
    let steady: Vec<usize> = (0..assigned.len())
        .filter(|&i| !faulty[i] && !switching[i])
        .collect();
    let false_alarms = steady.iter().filter(|&&i| flagged[i]).count();
    let switches: Vec<usize> = (0..assigned.len())
        .filter(|&i| !faulty[i] && switching[i])
        .collect();
    let windows = FlagCounts::new(&flagged, &faulty);
    println!(
        "faults caught: {total} of {} ({:.0}%: {}); {} of {} faulty windows flagged; \
         {false_alarms} false alarms in {} steady windows ({:.1}%), {} of {} windows across a regime switch flagged",
        fresh.faults.len(),
        100.0 * total as f64 / fresh.faults.len().max(1) as f64,
        per_kind.join(", "),
        windows.caught,
        windows.anomalies,
        steady.len(),
        100.0 * false_alarms as f64 / steady.len().max(1) as f64,
        switches.iter().filter(|&&i| flagged[i]).count(),
        switches.len(),
    );
    let mut by_cluster = vec![0usize; k];
    for w in assigned.iter().filter(|w| w.assignment.outlier) {
        by_cluster[w.assignment.cluster as usize] += 1;
    }
    println!("flags per group (which behaviour the anomalies came from): {by_cluster:?}");
    Ok(())
}

/// The recording as `dekm-edge assign --stream` reads it: one column per channel, the regime
/// as `label` and the fault marks as `is_anomaly`.
fn write_csv(fresh: &Record, path: &Path) -> Result<()> {
    let rec = &fresh.recording;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("{}", path.display()))?,
    );
    writeln!(f, "{},label,is_anomaly", rec.channels.join(","))?;
    let (labels, anomalies) = (
        rec.labels.as_deref().unwrap_or_default(),
        rec.anomalies.as_deref().unwrap_or_default(),
    );
    for (t, reading) in rec.values.chunks_exact(CHANNELS).enumerate() {
        let values: Vec<String> = reading.iter().map(f32::to_string).collect();
        let label = labels.get(t).map_or(0, |&l| l);
        let anomaly = anomalies.get(t).map_or(0, |&a| u8::from(a));
        writeln!(f, "{},regime{label},{anomaly}", values.join(","))?;
    }
    f.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo end to end at one epoch: a stream model with the demo's window and hop, and a
    /// fresh recording on disk that reads back as the recording the device was fed.
    #[test]
    fn the_demo_exports_a_stream_model_and_a_replayable_recording() {
        let dir = tempfile::tempdir().unwrap();
        let args = DemoArgs {
            out: Some(dir.path().to_path_buf()),
            seed: 3,
            k: 3,
            epochs: 1,
            series_encoder: SeriesEncoder::Dense,
            outlier_score: ScoreArg(None),
        };
        run(&args, true).unwrap();
        let model = Model::from_parts(&dekm_edge::file::read_parts(dir.path()).unwrap()).unwrap();
        let spec = model.meta().stream.clone().expect("a stream model");
        assert_eq!((spec.window, spec.hop, spec.channels.len()), (32, 16, 3));
        let replay = dekm_data::read_recording(&dir.path().join("stream.csv")).unwrap();
        let fresh = Plant::new(3, 45).record(500, 0.03, 1003);
        assert_eq!(replay.values, fresh.recording.values);
        assert_eq!(replay.anomalies, fresh.recording.anomalies);
    }
}

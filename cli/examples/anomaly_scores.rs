//! Which anomaly score should the outlier flag use, and how should its threshold be
//! calibrated? For each seed: trains the demo's model (5 regimes, 4,000 windows of which 1%
//! carry a fault), then scores a fresh stream (3% faults) by each candidate and prints AUROC,
//! average precision and what per-cluster thresholds at quantile `q` of the training scores
//! catch, with and without leaving out the far-out training scores (Tukey's outer fence):
//! recall per fault kind and false alarms on the normal windows. Candidates: the Euclidean
//! distance in `y` (the flag of format 1), the Mahalanobis distance (the product's head),
//! the autoencoder's reconstruction error and the distance to the 5th nearest training latent.
//! The last two rows are the product's own flags, Mahalanobis and neighbour score. docs/RESULTS.md, "Anomaly scores", has the figures.
//!
//! ```sh
//! cargo run --release -p dekm-cli --example anomaly_scores -- [--seeds 0,1,2] [--stream 3000] [--quantile 0.998]
//! ```

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use clap::Parser;
use dekm_cluster::detection::{FlagCounts, auroc, average_precision};
use dekm_shared::{Neighbours, OutlierScore};
use dekm_trainer::calibrate::{calibrate, outer_fence, quantile};
use dekm_trainer::data::Dataset;
use dekm_trainer::data::synthetic::{CHANNELS, Fault, Plant, WINDOW};
use dekm_trainer::model::{Decoder, embed};
use dekm_trainer::train::{RunOptions, TrainConfig, train};

#[derive(Parser)]
struct Args {
    /// Seeds to run, each a new plant, training draw and stream.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    #[arg(long, default_value_t = 3000)]
    stream: usize,
    /// Threshold quantile (the product's default).
    #[arg(long, default_value_t = 0.998)]
    quantile: f32,
}

/// Per-cluster thresholds at `q` of the training scores; with `robust`, after dropping the
/// far-out scores (beyond the outer fence), as the product calibrates.
fn thresholds(scores: &[f32], labels: &[u32], k: usize, q: f32, robust: bool) -> Vec<f32> {
    (0..k)
        .map(|c| {
            let mut v: Vec<f32> = scores
                .iter()
                .zip(labels)
                .filter(|&(_, &l)| l as usize == c)
                .map(|(&s, _)| s)
                .collect();
            if v.is_empty() {
                return f32::INFINITY;
            }
            if robust {
                let fence = outer_fence(&v);
                v.retain(|&s| s <= fence);
            }
            v.sort_by(f32::total_cmp);
            quantile(&v, q)
        })
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    for &seed in &args.seeds {
        run(&args, seed)?;
    }
    Ok(())
}

fn run(args: &Args, seed: u64) -> Result<()> {
    let k = 5;
    let plant = Plant::new(k, seed.wrapping_add(42));
    let train_draw = plant.draw(4000, 0.01, seed.wrapping_add(1));
    let stream = plant.draw(args.stream, 0.03, seed.wrapping_add(1000));
    let ds = Dataset::from(train_draw);
    let cfg = TrainConfig {
        k,
        epochs: 15,
        seed,
        max_iter: 20,
        steps_per_iter: 40,
        ..Default::default()
    };
    let trained = train(&ds, &cfg, &RunOptions::default())?;
    let cal = calibrate(&trained, None, args.quantile, OutlierScore::Distance)?;
    let d = trained.rotation.d;
    let dev = Device::Cpu;
    let norm_train = ds
        .normalized(&trained.normalizer)
        .map_err(|(i, e)| anyhow::anyhow!("{i}: {e}"))?;
    let sds = Dataset::from(stream.clone());
    let norm_stream = sds
        .normalized(&trained.normalizer)
        .map_err(|(i, e)| anyhow::anyhow!("{i}: {e}"))?;
    let dim = CHANNELS * WINDOW;
    let z_stream = embed(
        &trained.encoder,
        &Tensor::from_vec(norm_stream.clone(), (stream.labels.len(), dim), &dev)?,
        256,
    )?;
    let z_train = &trained.z;
    let vb = VarBuilder::from_varmap(&trained.varmap, DType::F32, &dev);
    let decoder = Decoder::new(&trained.spec, &vb, trained.config.conv)?;
    let recon = |z: &[f32], x: &[f32]| -> Result<Vec<f32>> {
        let n = z.len() / d;
        let r = decoder
            .forward(&Tensor::from_vec(z.to_vec(), (n, d), &dev)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(r.chunks_exact(dim)
            .zip(x.chunks_exact(dim))
            .map(|(r, x)| r.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / dim as f32)
            .collect())
    };
    let head = &cal.head;
    let assign = |z: &[f32]| -> Result<(Vec<u32>, Vec<f32>)> {
        let mut y = vec![0f32; d];
        let (mut l, mut s) = (Vec::new(), Vec::new());
        for zi in z.chunks_exact(d) {
            let a = head.assign(zi, &mut y)?;
            l.push(a.cluster);
            s.push(a.distance);
        }
        Ok((l, s))
    };
    let (train_labels, train_dist) = assign(z_train)?;
    let (stream_labels, stream_dist) = assign(&z_stream)?;
    // The product's Mahalanobis head: its scores, and its own flags at its own thresholds.
    let maha_cal = calibrate(&trained, None, args.quantile, OutlierScore::Mahalanobis)?;
    let maha = |z: &[f32]| -> Result<Vec<(f32, bool)>> {
        let mut y = vec![0f32; d];
        z.chunks_exact(d)
            .map(|z| {
                let a = maha_cal.head.assign(z, &mut y)?;
                Ok((a.score, a.outlier))
            })
            .collect()
    };
    let (maha_train, maha_stream) = (maha(z_train)?, maha(&z_stream)?);
    // The product's neighbour head (at most 4,096 references: here every training window).
    let knn_cal = calibrate(
        &trained,
        None,
        args.quantile,
        OutlierScore::Knn(Neighbours::DEFAULT),
    )?;
    let knn_stream: Vec<(f32, bool)> = {
        let mut y = vec![0f32; d];
        z_stream
            .chunks_exact(d)
            .map(|z| {
                let a = knn_cal.head.assign(z, &mut y)?;
                Ok((a.score, a.outlier))
            })
            .collect::<Result<_>>()?
    };
    // kNN distance (5th neighbour) among the training latents.
    let knn = |z: &[f32], skip_self: bool| -> Vec<f32> {
        let kth = if skip_self { 5 } else { 4 };
        z.chunks_exact(d)
            .map(|q| {
                let mut ds: Vec<f32> = z_train
                    .chunks_exact(d)
                    .map(|t| t.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum())
                    .collect();
                ds.select_nth_unstable_by(kth, f32::total_cmp);
                ds[kth].sqrt()
            })
            .collect()
    };
    let scores: Vec<(&str, Vec<f32>, Vec<f32>)> = vec![
        ("distance (y)", train_dist.clone(), stream_dist.clone()),
        (
            "mahalanobis",
            maha_train.iter().map(|s| s.0).collect(),
            maha_stream.iter().map(|s| s.0).collect(),
        ),
        (
            "reconstruction",
            recon(z_train, &norm_train)?,
            recon(&z_stream, &norm_stream)?,
        ),
        ("knn-5", knn(z_train, true), knn(&z_stream, false)),
    ];
    let truth = stream.anomalies();
    println!(
        "seed {}: {} training windows, a fresh stream of {} with {} faults; thresholds per cluster at q = {}",
        seed,
        ds.len(),
        stream.labels.len(),
        truth.iter().filter(|&&a| a).count(),
        args.quantile
    );
    println!(
        "{:<20} {:>6} {:>6}  {:<9} {:>7} {:>7} {:>7} {:>7} {:>6}",
        "score", "AUROC", "AP", "fence", "recall", "spikes", "stuck", "oscil", "FA"
    );
    let line = |name: &str, st: &[f32], fence: &str, flagged: &[bool]| {
        let all = FlagCounts::new(flagged, &truth);
        let per = |f: Fault| {
            let idx: Vec<usize> = (0..truth.len())
                .filter(|&i| stream.faults[i] == Some(f))
                .collect();
            let c = idx.iter().filter(|&&i| flagged[i]).count();
            format!("{c}/{}", idx.len())
        };
        println!(
            "{:<20} {:>6.4} {:>6.4}  {:<9} {:>6.1}% {:>7} {:>7} {:>7} {:>5.2}%",
            name,
            auroc(st, &truth).unwrap_or(f64::NAN),
            average_precision(st, &truth).unwrap_or(f64::NAN),
            fence,
            100.0 * all.recall(),
            per(Fault::Spikes),
            per(Fault::Stuck),
            per(Fault::Oscillation),
            100.0 * all.false_alarm_rate()
        );
    };
    for (name, tr, st) in &scores {
        for robust in [false, true] {
            let thr = thresholds(tr, &train_labels, k, args.quantile, robust);
            let flagged: Vec<bool> = st
                .iter()
                .zip(&stream_labels)
                .map(|(&s, &l)| s > thr[l as usize])
                .collect();
            line(name, st, if robust { "Q3+3IQR" } else { "none" }, &flagged);
        }
    }
    for (name, own) in [
        ("product mahalanobis", &maha_stream),
        ("product knn", &knn_stream),
    ] {
        let flags: Vec<bool> = own.iter().map(|s| s.1).collect();
        let st: Vec<f32> = own.iter().map(|s| s.0).collect();
        line(name, &st, "Q3+3IQR", &flags);
    }
    println!();
    Ok(())
}

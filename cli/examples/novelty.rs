//! The novelty protocol of issue 33 on MNIST or Fashion-MNIST: for each held-out class, train
//! the product (k = 9) on training images of the other nine classes, then score the test
//! images, of which the held-out class is the anomaly. Writes one CSV per class with every test
//! image's label and scores: the product's two calibrated scores with their flags (the
//! Mahalanobis distance in `y` and the neighbour score, the distance to the 5th nearest of the
//! at most 4,096 reference latents the export keeps, each with thresholds calibrated as
//! `dekm train` calibrates them), the Euclidean distance in `y`, the autoencoder's
//! reconstruction error and the distance to the 5th nearest of all training latents, plus one
//! CSV of the same scores on the training images (for baselines that calibrate a threshold).
//! `--calibration-holdout F` holds a fraction of the training images out of training to
//! calibrate the product's thresholds on (default: none, as `dekm train` for images). `scripts/bench-novelty.py` runs this, computes IsolationForest and kNN on the
//! pixels of the same images, and prints AUROC, average precision and recall at the threshold
//! for all of them. docs/RESULTS.md, "Novelty", has the figures.
//!
//! ```sh
//! cargo run --release -p dekm-cli --example novelty -- --data-dir ../shared/data \
//!     --dataset mnist --out novelty/ [--classes 0,1,...] [--train-limit 10000] [--epochs 15] \
//!     [--max-iter 20]
//! ```

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use clap::Parser;
use dekm_cluster::detection::auroc;
use dekm_shared::{Neighbours, OutlierScore};
use dekm_trainer::calibrate::calibrate;
use dekm_trainer::data::{self, DataSource, Dataset, LoadOptions, Split};
use dekm_trainer::model::Decoder;
use dekm_trainer::train::{RunOptions, TrainConfig, train};

#[derive(Parser)]
struct Args {
    /// Directory holding `mnist/` and `fashion-mnist/`.
    #[arg(long)]
    data_dir: PathBuf,
    /// `mnist` or `fashion-mnist`.
    #[arg(long, default_value = "mnist")]
    dataset: String,
    /// Where the score tables go.
    #[arg(long)]
    out: PathBuf,
    /// Held-out classes to run.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7,8,9")]
    classes: Vec<u32>,
    /// Training images per run: the first this many of the training split not of the
    /// held-out class.
    #[arg(long, default_value_t = 10_000)]
    train_limit: usize,
    /// Pretraining epochs.
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Iterations of the clustering stage at most.
    #[arg(long, default_value_t = 20)]
    max_iter: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of the training images held out to calibrate the thresholds on (default: the
    /// product's, none for images).
    #[arg(long)]
    calibration_holdout: Option<f32>,
}

/// Squared reconstruction error per sample, averaged over its values.
fn reconstruction(decoder: &Decoder, z: &[f32], x: &[f32], d: usize) -> Result<Vec<f32>> {
    let n = z.len() / d;
    let dim = x.len() / n.max(1);
    let mut out = Vec::with_capacity(n);
    for (zc, xc) in z.chunks(1024 * d).zip(x.chunks(1024 * dim)) {
        let m = zc.len() / d;
        let r = decoder
            .forward(&Tensor::from_vec(zc.to_vec(), (m, d), &Device::Cpu)?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        out.extend(r.chunks_exact(dim).zip(xc.chunks_exact(dim)).map(|(r, x)| {
            r.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / dim as f32
        }));
    }
    Ok(out)
}

/// Distance from each row of `z` to its 5th nearest row of `reference` (skipping itself when
/// `z` is `reference`).
fn knn5(z: &[f32], reference: &[f32], d: usize, same: bool) -> Vec<f32> {
    use rayon::prelude::*;
    let skip = usize::from(same);
    z.par_chunks(d)
        .map(|q| {
            let mut best = [f32::INFINITY; 6];
            for r in reference.chunks_exact(d) {
                let dist: f32 = q.iter().zip(r).map(|(a, b)| (a - b) * (a - b)).sum();
                if dist < best[5] {
                    best[5] = dist;
                    best.sort_by(f32::total_cmp);
                }
            }
            best[4 + skip].sqrt()
        })
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let source = match args.dataset.as_str() {
        "mnist" => DataSource::Mnist,
        "fashion-mnist" => DataSource::FashionMnist,
        other => bail!("unknown dataset {other}: mnist or fashion-mnist"),
    };
    let load = |split| {
        data::load(
            &source,
            &LoadOptions {
                data_dir: Some(args.data_dir.clone()),
                split,
                ..Default::default()
            },
        )
    };
    let (train_all, test) = (load(Split::Train)?, load(Split::Test)?);
    let (train_labels, test_labels) = (
        train_all.labels.clone().context("training labels")?,
        test.labels.clone().context("test labels")?,
    );
    std::fs::create_dir_all(&args.out)?;
    for &held in &args.classes {
        let keep: Vec<usize> = (0..train_all.len())
            .filter(|&i| train_labels[i] != held)
            .take(args.train_limit)
            .collect();
        let cfg = TrainConfig {
            k: 9,
            epochs: args.epochs,
            max_iter: args.max_iter,
            seed: args.seed,
            calibration_holdout: args.calibration_holdout,
            ..Default::default()
        };
        let all = train_all.select(&keep);
        let holdout = cfg.calibration_holdout_for(false);
        let (ds, calibration_set) = all.split_holdout(holdout, cfg.seed);
        let trained = train(&ds, &cfg, &RunOptions::default())?;
        let held_z = (!calibration_set.is_empty())
            .then(|| trained.embed(&calibration_set))
            .transpose()?;
        let cal = calibrate(
            &trained,
            held_z.as_deref(),
            cfg.threshold_quantile,
            OutlierScore::Mahalanobis,
        )?;
        let knn_cal = calibrate(
            &trained,
            held_z.as_deref(),
            cfg.threshold_quantile,
            OutlierScore::Knn(Neighbours::DEFAULT),
        )?;
        let d = trained.rotation.d;
        let z_test = trained.embed(&test)?;
        let norm = |ds: &Dataset| {
            ds.normalized(&trained.normalizer)
                .map_err(|(i, e)| anyhow::anyhow!("sample {i}: {e}"))
        };
        let vb = VarBuilder::from_varmap(&trained.varmap, DType::F32, &Device::Cpu);
        let decoder = Decoder::new(&trained.spec, &vb, trained.config.conv)?;
        // The training images' product neighbour scores are the calibration's own (a
        // reference is scored without itself); the test images' are the head's.
        let score = |z: &[f32], x: &[f32], same: bool| -> Result<Vec<[f32; 7]>> {
            let recon = reconstruction(&decoder, z, x, d)?;
            let knn = knn5(z, &trained.z, d, same);
            let (mut y, mut y2) = (vec![0f32; d], vec![0f32; d]);
            z.chunks_exact(d)
                .zip(recon.iter().zip(&knn))
                .enumerate()
                .map(|(i, (z, (&r, &k)))| {
                    let a = cal.head.assign(z, &mut y)?;
                    let n = knn_cal.head.assign(z, &mut y2)?;
                    let (knn_flag, knn) = if same {
                        (knn_cal.outliers[i], knn_cal.scores[i])
                    } else {
                        (n.outlier, n.score)
                    };
                    let flag = |o: bool| f32::from(u8::from(o));
                    Ok([
                        flag(a.outlier),
                        a.score,
                        flag(knn_flag),
                        knn,
                        a.distance,
                        r,
                        k,
                    ])
                })
                .collect()
        };
        let test_scores = score(&z_test, &norm(&test)?, false)?;
        let train_scores = score(&trained.z, &norm(&ds)?, true)?;
        let write = |name: String, labels: Vec<u32>, rows: &[[f32; 7]]| -> Result<()> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(args.out.join(name))?);
            writeln!(
                f,
                "label,flag,mahalanobis,flag_knn,knn,distance,reconstruction,knn_latent"
            )?;
            for (l, r) in labels.iter().zip(rows) {
                let r: Vec<String> = r.iter().map(f32::to_string).collect();
                writeln!(f, "{l},{}", r.join(","))?;
            }
            Ok(())
        };
        let stem = format!("{}-holdout{held}", args.dataset);
        write(
            format!("{stem}-test.csv"),
            test_labels.clone(),
            &test_scores,
        )?;
        let kept = keep.iter().map(|&i| train_labels[i]).collect();
        write(format!("{stem}-train.csv"), kept, &train_scores)?;
        let truth: Vec<bool> = test_labels.iter().map(|&l| l == held).collect();
        let col = |c: usize| test_scores.iter().map(|r| r[c]).collect::<Vec<_>>();
        let recall = |c: usize| {
            let flagged = test_scores
                .iter()
                .zip(&truth)
                .filter(|(r, t)| **t && r[c] > 0.0)
                .count();
            flagged as f64 / truth.iter().filter(|&&t| t).count().max(1) as f64
        };
        let auc = |c: usize| auroc(&col(c), &truth).unwrap_or(f64::NAN);
        println!(
            "{} held out {held}: AUROC mahalanobis {:.4}, knn (product, {} references) {:.4}, distance {:.4}, reconstruction {:.4}, knn all latents {:.4}; flag recall mahalanobis {:.3}, knn {:.3}",
            args.dataset,
            auc(1),
            knn_cal.head.references().map_or(0, |r| r.len() / d),
            auc(3),
            auc(4),
            auc(5),
            auc(6),
            recall(0),
            recall(2),
        );
    }
    Ok(())
}

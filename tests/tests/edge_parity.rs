//! The edge runtime against the trainer: same exported model, same samples, latent vectors within
//! 1e-4 and identical cluster assignments.

mod common;

use candle_core::{Device, Module, Tensor};
use dekm_edge::Model;
use dekm_edge::file::read_parts;
use dekm_shared::ImageShape;
use dekm_trainer::data::{Dataset, SampleShape};
use dekm_trainer::export::read_model;
use dekm_trainer::model::embed;
use dekm_trainer::pipeline::{assign, train_and_export};
use dekm_trainer::train::{RunOptions, TrainConfig};

/// Small noisy images of three shapes (a bar, a square, a cross), 2 channels, 12x12: enough for
/// the convolutional encoder to learn something and for the parity check to cover real weights.
fn images(n: usize) -> Dataset {
    let (c, h, w) = (2, 12, 12);
    let mut state = 99u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut xs = Vec::with_capacity(n * c * h * w);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 3) as u32;
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let on = match class {
                        0 => (4..8).contains(&x),
                        1 => (3..9).contains(&x) && (3..9).contains(&y),
                        _ => x == y || x + y == w - 1,
                    };
                    let base = if on { 200.0 } else { 20.0 } - 30.0 * ch as f32;
                    xs.push(base + 40.0 * noise());
                }
            }
        }
        labels.push(class);
    }
    Dataset {
        name: "test-images".into(),
        shape: SampleShape::Image(ImageShape {
            channels: c,
            height: h,
            width: w,
        }),
        xs,
        labels: Some(labels),
        anomalies: None,
    }
}

fn check_parity(ds: &Dataset, k: usize) {
    assert!(ds.len() >= 1000, "parity must cover at least 1,000 samples");
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        quiet: true,
        ..Default::default()
    };
    // Parity needs real trained weights, not a good clustering: one epoch, one DEKM iteration.
    let cfg = TrainConfig {
        epochs: 1,
        max_iter: 1,
        ..common::quick_config(k)
    };
    train_and_export(ds, &cfg, &opts, dir.path()).expect("training");
    let model = read_model(dir.path()).expect("reload");

    // Trainer side: the candle graph's forward pass (the training ops; `embed` itself runs the
    // edge kernels) and the shared head.
    let flat = ds.normalized(&model.normalizer).unwrap();
    let len = model.meta.encoder.input_len();
    let xs = Tensor::from_vec(flat, (ds.len(), len), &Device::Cpu).unwrap();
    let z_trainer = model
        .encoder
        .forward(&xs)
        .and_then(|z| z.flatten_all()?.to_vec1::<f32>())
        .unwrap();
    let z_embed = embed(&model.encoder, &xs, 256).unwrap();
    let a_trainer = assign(&model, ds).unwrap();

    // Edge side: the device's own loader on the export and on its bundle, raw samples in.
    let parts = read_parts(dir.path()).expect("edge loads the export");
    let bundle_path = dir.path().join("model.dekm");
    std::fs::write(&bundle_path, parts.to_bundle()).unwrap();
    let from_bundle = read_parts(&bundle_path).expect("edge loads the bundle");
    assert_eq!(from_bundle, parts, "bundle decodes to the export's tensors");
    let mut edge = Model::from_parts(&from_bundle).unwrap();
    let exported = edge.head().thresholds().to_vec();
    edge.set_threshold_quantile(edge.meta().threshold_quantile)
        .unwrap();
    assert_eq!(
        edge.head().thresholds(),
        exported,
        "the calibration table reproduces the exported thresholds at their quantile"
    );
    let mut session = edge.session();
    let d = edge.encoder().latent_dim();
    let mut worst = 0f32;
    for i in 0..ds.len() {
        let a = session.assign(ds.sample(i)).unwrap();
        for (a, b) in session.latent().iter().zip(&z_trainer[i * d..(i + 1) * d]) {
            worst = worst.max((a - b).abs());
        }
        assert_eq!(
            (a.cluster, a.outlier),
            (a_trainer[i].cluster, a_trainer[i].outlier),
            "sample {i}"
        );
    }
    println!(
        "{}: max |z_edge - z_trainer| = {worst:e} over {} samples",
        ds.name,
        ds.len()
    );
    assert!(worst < 1e-4, "latent vectors differ by {worst}");
    let embed_gap = z_embed
        .iter()
        .zip(&z_trainer)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert_eq!(z_embed.len(), z_trainer.len());
    assert!(
        embed_gap < 1e-4,
        "the trainer's embedding pass and its forward pass differ by {embed_gap}"
    );
}

#[test]
fn dense_model_runs_identically_on_the_edge() {
    check_parity(&common::synthetic(4, 1200, 3), 4);
}

#[test]
fn conv_model_runs_identically_on_the_edge() {
    check_parity(&images(1200), 3);
}

//! The edge runtime against the trainer: same exported model, same samples, latent vectors within
//! 1e-4 and identical cluster assignments.

mod common;

use candle_core::{Device, Module, Tensor};
use dekm_edge::Model;
use dekm_edge::file::read_parts;
use dekm_shared::{Neighbours, OutlierScore, TimePooling};
use dekm_trainer::data::Dataset;
use dekm_trainer::export::read_model;
use dekm_trainer::model::{ImageEncoder, SeriesEncoder, embed};
use dekm_trainer::pipeline::{assign, train_and_export};
use dekm_trainer::train::{Method, RunOptions, TrainConfig};

fn check_parity(ds: &Dataset, k: usize) {
    check_parity_of(ds, common::quick_config(k));
}

fn check_parity_of(ds: &Dataset, cfg: TrainConfig) {
    assert!(ds.len() >= 1000, "parity must cover at least 1,000 samples");
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions::default();
    // Parity needs real trained weights, not a good clustering: one epoch, one DEKM iteration.
    let cfg = TrainConfig {
        epochs: 1,
        max_iter: 1,
        ..cfg
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
    check_parity(&common::images(1200), 3);
}

/// DeepCluster's export (its whitening folded into the latent layer, centres of k-means on the
/// whitened features) is an ordinary model: the same checks as every other.
#[test]
fn deepcluster_models_run_identically_on_the_edge() {
    for ds in [common::images(1200), common::synthetic(4, 1200, 3)] {
        let cfg = TrainConfig {
            method: Method::DeepCluster,
            ..common::quick_config(3)
        };
        check_parity_of(&ds, cfg);
    }
}

/// ClusterGAN's export (an encoder ending in the softmax of the cluster code, centres of
/// k-means on noise and code) is an ordinary model too.
#[test]
fn clustergan_models_run_identically_on_the_edge() {
    for ds in [common::images(1000), common::synthetic(4, 1000, 3)] {
        let cfg = TrainConfig {
            method: Method::ClusterGan,
            latent: 5,
            epochs: 1,
            ..common::quick_config(3)
        };
        check_parity_of(&ds, cfg);
    }
}

/// ClusterGAN's own networks (4x4 convolutions padded by a pixel, a dense layer of 1,024,
/// leaky ReLU; format version 7) run on the edge as trained: as ClusterGAN's encoder, and as
/// the encoder of DEKM's autoencoder, whose decoder mirrors it.
#[test]
fn clustergans_own_networks_run_identically_on_the_edge() {
    for method in [Method::ClusterGan, Method::Dekm] {
        let cfg = TrainConfig {
            method,
            latent: 5,
            image_encoder: ImageEncoder::ClusterGan,
            ..common::quick_config(3)
        };
        check_parity_of(&common::images(1000), cfg);
    }
}

#[test]
fn neighbour_scored_models_flag_identically_on_the_edge() {
    let cfg = TrainConfig {
        outlier_score: Some(OutlierScore::Knn(Neighbours {
            neighbours: 5,
            references: 400,
        })),
        ..common::quick_config(4)
    };
    check_parity_of(&common::synthetic(4, 1200, 3), cfg);
}

#[test]
fn temporal_models_run_identically_on_the_edge() {
    let ds = common::synthetic(4, 1200, 3);
    for pooling in [TimePooling::MeanStd, TimePooling::Flatten] {
        let cfg = TrainConfig {
            series_encoder: SeriesEncoder::Conv1d,
            time_pooling: pooling,
            ..common::quick_config(4)
        };
        check_parity_of(&ds, cfg);
    }
}

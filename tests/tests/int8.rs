//! Int8 bundles (`dekm-edge pack --int8`) against the f32 model they came from: a trained
//! sensor model and a trained image model, every training sample assigned by both.

mod common;

use candle_core::{Device, Module, Tensor};
use dekm_edge::file::read_parts;
use dekm_edge::{Model, ModelParts};
use dekm_shared::Weights;
use dekm_trainer::data::Dataset;
use dekm_trainer::export::candle_encoder;
use dekm_trainer::model::ConvBackend;
use dekm_trainer::pipeline::train_and_export;
use dekm_trainer::train::{RunOptions, TrainConfig};

/// Trains on `ds`, packs the model as f32 and int8 bundles, and checks the int8 one: its
/// encoder weights a quarter of the bytes (the bundle at most half, with the head and, for an
/// image model, the neighbour score's f32 references), its clusters those of the f32 model on
/// at least 99.5% of the samples and its outlier flags on at least 97%: a score near its
/// threshold moves across it with the latent's small shift (on the small image model below
/// the neighbour score flipped 12 of 600 flags; on the demo's model and MNIST, docs/RESULTS.md,
/// 0 of 999 and 0.4%).
fn int8_agrees(ds: &Dataset, cfg: TrainConfig) {
    let dir = tempfile::tempdir().unwrap();
    train_and_export(ds, &cfg, &RunOptions::default(), dir.path()).unwrap();
    let parts = read_parts(dir.path()).unwrap();
    let int8 = ModelParts::from_bundle(&parts.to_int8().unwrap().to_bundle()).unwrap();
    assert_eq!(int8.meta().weights, Weights::Int8);
    let (f32_len, int8_len) = (parts.to_bundle().len(), int8.to_bundle().len());
    assert!(
        2 * int8_len <= f32_len,
        "{int8_len} bytes against {f32_len}"
    );
    let weights = |p: &ModelParts| -> usize {
        p.tensors()
            .iter()
            .filter(|t| t.name.starts_with("encoder.") && t.name.ends_with(".weight"))
            .map(|t| t.data.len())
            .sum()
    };
    let stored: usize = int8.int8_tensors().iter().map(|q| q.values.len()).sum();
    assert_eq!(
        stored,
        weights(&parts),
        "every encoder weight is stored as a byte"
    );

    // The trainer reads an int8 bundle through the widened weights: its candle encoder stays
    // within the weights' rounding of the f32 one.
    let x = Tensor::from_slice(ds.sample(0), (1, ds.sample(0).len()), &Device::Cpu).unwrap();
    let latent = |p: &ModelParts| -> Vec<f32> {
        let enc = candle_encoder(p, ConvBackend::Fast).unwrap();
        enc.forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (zf, zq) = (latent(&parts), latent(&int8));
    let size = zf.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (a, b) in zf.iter().zip(&zq) {
        assert!(
            (a - b).abs() <= 0.05 * size + 1e-6,
            "{a} vs {b} (largest {size})"
        );
    }

    let (a, b) = (
        Model::from_parts(&parts).unwrap(),
        Model::from_parts(&int8).unwrap(),
    );
    let (mut sa, mut sb) = (a.session(), b.session());
    let (mut clusters, mut flags) = (0, 0);
    for i in 0..ds.len() {
        let (x, y) = (
            sa.assign(ds.sample(i)).unwrap(),
            sb.assign(ds.sample(i)).unwrap(),
        );
        clusters += usize::from(x.cluster == y.cluster);
        flags += usize::from(x.outlier == y.outlier);
    }
    let n = ds.len() as f64;
    assert!(
        clusters as f64 >= 0.995 * n,
        "clusters agree on {clusters} of {n}"
    );
    assert!(flags as f64 >= 0.97 * n, "flags agree on {flags} of {n}");
}

#[test]
fn an_int8_sensor_model_assigns_as_the_f32_one() {
    int8_agrees(&common::synthetic(4, 1200, 5), common::quick_config(4));
}

#[test]
fn an_int8_image_model_assigns_as_the_f32_one() {
    int8_agrees(&common::images(600), common::quick_config(3));
}

//! Export → reload round trips and what a damaged model file does.

mod common;

use std::path::Path;

use dekm_edge::LoadError;
use dekm_edge::fs::FileError;
use dekm_shared::{Neighbours, OutlierScore, names};
use dekm_trainer::export::{ExportError, MODEL_FILE, SHA_FILE, read_model};
use dekm_trainer::pipeline::{Outcome, assign, train_and_export};
use dekm_trainer::train::{RunOptions, TrainConfig};

fn train_small(dir: &Path) -> (dekm_trainer::data::Dataset, Outcome) {
    let ds = common::synthetic(3, 600, 5);
    let opts = RunOptions::default();
    let out = train_and_export(&ds, &common::quick_config(3), &opts, dir).expect("training");
    (ds, out)
}

#[test]
fn reload_is_bit_identical_and_assigns_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, out) = train_small(dir.path());
    let model = read_model(dir.path()).expect("reload");
    assert_eq!(model.meta, out.meta);

    let vars = out.trained.varmap.data().lock().unwrap();
    let mut encoder_tensors = 0;
    for (name, var) in vars.iter().filter(|(n, _)| n.starts_with("encoder.")) {
        let trained: Vec<u32> = var
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        let stored: Vec<u32> = model.tensors[name].iter().map(|x| x.to_bits()).collect();
        assert_eq!(trained, stored, "{name}");
        encoder_tensors += 1;
    }
    assert_eq!(encoder_tensors, 8, "4 dense layers, weight and bias each");
    let bits = |xs: &[f32]| xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&model.tensors[names::V]),
        bits(&out.trained.rotation.v)
    );
    assert_eq!(
        bits(&model.tensors[names::CENTROIDS_Z]),
        bits(&out.trained.kmeans.centroids)
    );
    assert_eq!(
        bits(&model.tensors[names::THRESHOLDS]),
        bits(out.calibration.head.thresholds())
    );

    let assigned: Vec<u32> = assign(&model, &ds)
        .unwrap()
        .iter()
        .map(|a| a.cluster)
        .collect();
    assert_eq!(
        assigned, out.calibration.labels,
        "reloaded model assigns like the trainer"
    );
    let sha = std::fs::read_to_string(dir.path().join(SHA_FILE)).unwrap();
    assert!(sha.starts_with(&out.sha256));
    for f in ["metrics.json", "config.json"] {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(f)).unwrap()).unwrap();
        assert!(json.is_object(), "{f}");
    }
}

fn load_error(e: &ExportError) -> Option<&LoadError> {
    match e {
        ExportError::Load(f) => f.load_error(),
        _ => None,
    }
}

#[test]
fn damaged_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out) = train_small(dir.path());
    assert_eq!(
        out.meta.format_version, 2,
        "a Mahalanobis model is written as the oldest version that holds it"
    );
    let model = dir.path().join(MODEL_FILE);
    let good = std::fs::read(&model).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x55;
    std::fs::write(&model, &flipped).unwrap();
    let err = read_model(dir.path()).unwrap_err();
    assert!(
        matches!(load_error(&err), Some(LoadError::Checksum { .. })),
        "{err}"
    );

    // Without the checksum file the parser itself must catch damage.
    std::fs::remove_file(dir.path().join(SHA_FILE)).unwrap();
    std::fs::write(&model, &good[..good.len() - 100]).unwrap();
    let err = read_model(dir.path()).unwrap_err();
    assert!(
        matches!(load_error(&err), Some(LoadError::Safetensors(_))),
        "{err}"
    );

    std::fs::write(&model, b"not a model").unwrap();
    let err = read_model(dir.path()).unwrap_err();
    assert!(
        matches!(load_error(&err), Some(LoadError::Safetensors(_))),
        "{err}"
    );

    let newer = replace(
        &good,
        b"\"dekm.format_version\":\"2\"",
        b"\"dekm.format_version\":\"9\"",
    );
    std::fs::write(&model, newer).unwrap();
    let err = read_model(dir.path()).unwrap_err().to_string();
    assert!(err.contains("unsupported model format version 9"), "{err}");

    std::fs::write(
        &model,
        replace(&good, b"dekm.thresholds", b"dekm.thresholdz"),
    )
    .unwrap();
    let err = read_model(dir.path()).unwrap_err().to_string();
    assert!(err.contains("missing tensor dekm.thresholds"), "{err}");

    let err = read_model(&dir.path().join("nope")).unwrap_err();
    assert!(
        matches!(err, ExportError::Load(FileError::Io { .. })),
        "{err}"
    );
}

/// A model scored by the neighbour distance keeps a seeded subsample of its training latents
/// (in `y` space) as references; the reloaded model and the edge score with them exactly as the
/// trainer did, and a sample far from every reference is flagged wherever it lands.
#[test]
fn the_neighbour_score_exports_its_references() {
    let dir = tempfile::tempdir().unwrap();
    let ds = common::synthetic(3, 600, 5);
    let cfg = TrainConfig {
        outlier_score: Some(OutlierScore::Knn(Neighbours {
            neighbours: 5,
            references: 250,
        })),
        ..common::quick_config(3)
    };
    let out = train_and_export(&ds, &cfg, &RunOptions::default(), dir.path()).unwrap();
    let model = read_model(dir.path()).unwrap();
    assert_eq!(model.meta, out.meta);
    assert_eq!(
        model.meta.outlier_score,
        OutlierScore::Knn(Neighbours {
            neighbours: 5,
            references: 250
        })
    );
    assert_eq!(
        model.meta.format_version, 3,
        "the neighbour score needs format 3"
    );
    let d = model.head.latent_dim();
    let refs = &model.tensors[names::REFERENCES];
    assert_eq!(refs.len(), 250 * d);
    assert_eq!(model.head.references(), Some(&refs[..]));
    // Every reference is the projection of a distinct training latent.
    let mut y = vec![0f32; d];
    let ys: Vec<Vec<u32>> = out
        .trained
        .z
        .chunks_exact(d)
        .map(|z| {
            model.head.project(z, &mut y).unwrap();
            y.iter().map(|v| v.to_bits()).collect()
        })
        .collect();
    let mut found = std::collections::BTreeSet::new();
    for r in refs.chunks_exact(d) {
        let bits: Vec<u32> = r.iter().map(|v| v.to_bits()).collect();
        let i = ys
            .iter()
            .position(|y| *y == bits)
            .expect("a training latent");
        assert!(found.insert(i), "sample {i} kept twice");
    }
    // The reloaded head scores training samples as the calibration did (references without
    // their own row), so its flags are the calibration's.
    let assigned = assign(&model, &ds).unwrap();
    for (i, a) in assigned.iter().enumerate() {
        assert_eq!(a.cluster, out.calibration.labels[i], "sample {i}");
        if !found.contains(&i) {
            assert_eq!(a.score, out.calibration.scores[i], "sample {i}");
            assert_eq!(a.outlier, out.calibration.outliers[i], "sample {i}");
        }
    }
    // Far from every reference: the centroid plus a large step is flagged.
    let far: Vec<f32> = out.trained.kmeans.centroids[..d]
        .iter()
        .map(|c| c + 100.0)
        .collect();
    assert!(model.head.assign(&far, &mut y).unwrap().outlier);
    assert_eq!(
        model.head, out.calibration.head,
        "the export round-trips the head"
    );
}

#[test]
fn other_readers_see_documented_names_and_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    train_small(dir.path());
    let bytes = std::fs::read(dir.path().join(MODEL_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(names::V).unwrap();
    assert_eq!(
        (v.dtype(), v.shape()),
        (safetensors::Dtype::F32, &[10usize, 10][..])
    );
    assert!(st.names().contains(&"encoder.dense0.weight"));
    assert!(
        !st.names().iter().any(|n| n.starts_with("decoder.")),
        "decoder is not exported"
    );
}

/// `bytes` with the first occurrence of `from` replaced by the same-length `to`.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern in header");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

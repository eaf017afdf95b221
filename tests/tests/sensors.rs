//! Real sensor sets from `../shared/data/sensors`: what series are clustered on, chosen
//! without labels, and the spectral model assigning on the edge as it did in training.

mod common;

use std::path::{Path, PathBuf};

use dekm_edge::Model;
use dekm_trainer::data::{DataSource, Dataset, LoadOptions, load};
use dekm_trainer::features::{self, SeriesFeatures};
use dekm_trainer::pipeline::train_and_export;
use dekm_trainer::train::{RunOptions, TrainConfig};

/// The UEA/UCR set `name` (train and test files joined into one `.ts` under `tmp`), or `None`
/// with the reason printed.
fn uea(name: &str, set: &str, tmp: &Path, ts_length: Option<usize>) -> Option<Dataset> {
    let Some(dir) = common::data_dir() else {
        eprintln!("SKIPPED: no data directory (DEKM_DATA or ../shared/data)");
        return None;
    };
    let base = dir.join("sensors").join(name).join(set);
    let part = |s: &str| PathBuf::from(format!("{}_{s}.ts", base.display()));
    let (train, test) = (part("TRAIN"), part("TEST"));
    if !train.is_file() || !test.is_file() {
        eprintln!(
            "SKIPPED: {} or {} is absent",
            train.display(),
            test.display()
        );
        return None;
    }
    let mut text = std::fs::read_to_string(&train).unwrap();
    let test = std::fs::read_to_string(&test).unwrap();
    text.extend(
        test.lines()
            .filter(|l| !l.starts_with('@') && !l.starts_with('#'))
            .map(|l| format!("{l}\n")),
    );
    let joined = tmp.join(format!("{set}.ts"));
    std::fs::write(&joined, text).unwrap();
    let opts = LoadOptions {
        ts_length,
        ..Default::default()
    };
    Some(load(&DataSource::Ts(joined), &opts).unwrap())
}

/// BasicMotions (watch IMU, four activities): `auto` clusters the windows on their spectra,
/// reaches the 0.90 ACC where the raw windows gave 0.44-0.46, and the edge runtime,
/// computing the same spectra from the raw windows, assigns every case as the trainer did.
#[test]
fn basic_motions_clusters_on_its_spectra_and_the_edge_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(ds) = uea("basicmotions", "BasicMotions", tmp.path(), None) else {
        return;
    };
    assert_eq!(ds.len(), 80);
    let cfg = TrainConfig {
        k: 4,
        ..TrainConfig::default()
    };
    let out = tmp.path().join("model");
    let outcome = train_and_export(&ds, &cfg, &RunOptions::default(), &out).unwrap();
    assert_eq!(outcome.features.used(), SeriesFeatures::Spectrum);
    let spec = outcome.meta.spectrum.clone().expect("spectral model");
    assert_eq!((spec.channels, spec.length, spec.bands), (6, 100, 8));
    let acc = outcome.meta.metrics.unwrap().acc;
    assert!(acc >= 0.9, "BasicMotions ACC {acc}");

    let model = Model::from_parts(&dekm_edge::file::read_parts(&out).unwrap()).unwrap();
    assert_eq!(model.input_len(), 600);
    assert_eq!(model.meta().format_version, 4);
    let mut session = model.session();
    for i in 0..ds.len() {
        let a = session.assign(ds.sample(i)).unwrap();
        assert_eq!(a.cluster, outcome.calibration.labels[i], "case {i}");
    }
    let err = session.assign(&ds.sample(0)[..599]).unwrap_err();
    assert!(err.to_string().contains("window: expected 600"), "{err}");
}

/// JapaneseVowels (speech coefficients, nine speakers): the vowel is in the values, not the
/// motion, and `auto` keeps the raw readings.
#[test]
fn japanese_vowels_keeps_its_raw_readings() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(ds) = uea("japanesevowels", "JapaneseVowels", tmp.path(), Some(29)) else {
        return;
    };
    let cfg = TrainConfig {
        k: 9,
        ..TrainConfig::default()
    };
    let choice = features::choose(&ds, &cfg).unwrap();
    let scores = choice.scores.expect("auto compared both");
    assert_eq!(choice.used(), SeriesFeatures::Raw, "{scores:?}");
    assert!(scores.raw > scores.spectrum, "{scores:?}");
}

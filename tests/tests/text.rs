//! Documents end to end: read from a CSV column, embedded by a BERT folder, trained on, exported
//! with the embedder's record, assigned again only with the same embedder; and the real
//! all-MiniLM-L6-v2 against sentence-transformers' own numbers when its folder is present.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use dekm_embed::Embedder;
use dekm_embed::fixture::{DIM, write_tiny_bert};
use dekm_trainer::data::{self, DataSource, LoadOptions, SampleShape, TextOptions};
use dekm_trainer::export::read_model;
use dekm_trainer::pipeline::{assign, train_and_export};
use dekm_trainer::train::{Method, RunOptions};

fn options(embedder: &Path, column: &str) -> LoadOptions {
    LoadOptions {
        label_column: Some("topic".parse().unwrap()),
        text: Some(TextOptions {
            column: Some(column.into()),
            embedder: Arc::new(Embedder::load(embedder, &Device::Cpu).unwrap()),
            batch: 8,
            progress: None,
        }),
        ..Default::default()
    }
}

#[test]
fn texts_train_export_the_embedder_and_refuse_another() {
    let dir = tempfile::tempdir().unwrap();
    let (bert, other) = (dir.path().join("bert"), dir.path().join("other"));
    for (d, seed) in [(&bert, 3), (&other, 4)] {
        std::fs::create_dir(d).unwrap();
        write_tiny_bert(d, seed).unwrap();
    }
    let source = DataSource::Text(common::text_corpus(dir.path()));
    let ds = data::load(&source, &options(&bert, "body")).unwrap();
    assert_eq!((ds.len(), ds.shape), (60, SampleShape::Vector(DIM)));
    assert_eq!(ds.label_names, ["animals", "weather"]);
    let text = ds.text.as_ref().unwrap();
    assert_eq!(text.texts[1], "it rains today, cloudy weather");
    let mut cfg = common::quick_config(2);
    cfg.method = Method::Dekm;
    let out = dir.path().join("model");
    let outcome = train_and_export(&ds, &cfg, &RunOptions::default(), &out).unwrap();
    assert_eq!(outcome.meta.embedder.as_ref(), Some(&text.embedder));
    // The record survives the file: the server and `dekm evaluate` read it from the header.
    let model = read_model(&out).unwrap();
    assert_eq!(
        model.meta.embedder.as_ref().unwrap().sha256,
        text.embedder.sha256
    );
    let same = assign(&model, &ds).unwrap();
    assert_eq!(same.len(), 60);
    let found: Vec<u32> = same.iter().map(|a| a.cluster).collect();
    assert_eq!(
        found, outcome.calibration.labels,
        "the export assigns as training did"
    );
    // Texts embedded by another model of the same shape are refused, by the checksum.
    let foreign = data::load(&source, &options(&other, "body")).unwrap();
    let Err(err) = assign(&model, &foreign) else {
        panic!("texts of another embedder were assigned");
    };
    let err = err.to_string();
    assert!(err.contains("embed with the model's embedder"), "{err}");
}

#[test]
fn a_text_source_without_an_embedder_or_with_a_bad_document_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docs.txt");
    std::fs::write(&path, "one\n\nthree\n").unwrap();
    let err = data::load(&DataSource::Text(path.clone()), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs --embedder"), "{err}");
    let bert = dir.path().join("bert");
    std::fs::create_dir(&bert).unwrap();
    write_tiny_bert(&bert, 1).unwrap();
    let mut opts = options(&bert, "body");
    opts.label_column = None;
    opts.text.as_mut().unwrap().column = None;
    let err = data::load(&DataSource::Text(path), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("blank"), "{err}");
}

/// The real model's folder: `DEKM_EMBEDDER`, else `models/all-MiniLM-L6-v2` in the repository
/// (scripts/fetch-minilm.sh puts it there).
fn minilm() -> Option<PathBuf> {
    std::env::var_os("DEKM_EMBEDDER")
        .map(PathBuf::from)
        .or_else(|| {
            Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2"))
        })
        .filter(|p| p.join("model.safetensors").is_file())
}

#[test]
fn all_minilm_matches_sentence_transformers_and_groups_the_recipe() {
    let Some(dir) = minilm() else {
        println!(
            "SKIPPED: no all-MiniLM-L6-v2 folder (run scripts/fetch-minilm.sh or set DEKM_EMBEDDER)"
        );
        return;
    };
    let e = Embedder::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(
        (e.id().dim, e.id().sha256.as_str()),
        (
            384,
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
        )
    );
    let texts = [
        "A puppy is cute.",
        "A cat is cute.",
        "It is raining.",
        "The weather is cloudy.",
    ];
    let got = e.embed(&texts, 4, &mut |_| {}).unwrap();
    // sentence-transformers 6.3.0 (torch 2.15, CPU): the first six values of each embedding.
    let want = [
        [
            -0.0642707, -0.0054050, 0.0428711, 0.0464405, -0.0326329, 0.0110584,
        ],
        [
            0.0717170, 0.0059501, 0.0167354, 0.0383797, -0.0704510, -0.0094955,
        ],
        [
            -0.0226336, -0.0050850, 0.0807920, 0.0545204, 0.0571573, -0.0073382,
        ],
        [
            -0.0117519, 0.0074640, 0.1358484, 0.0674156, 0.0095161, -0.0353355,
        ],
    ];
    for (row, w) in got.xs.chunks(384).zip(want) {
        for (a, b) in row.iter().zip(w) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
    let cos = |i: usize, j: usize| -> f32 {
        let (a, b) = (
            &got.xs[i * 384..(i + 1) * 384],
            &got.xs[j * 384..(j + 1) * 384],
        );
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    };
    // sentence-transformers: 0.4986 and 0.6863 within the topics, under 0.09 across.
    assert!((cos(0, 1) - 0.4986).abs() < 1e-3 && (cos(2, 3) - 0.6863).abs() < 1e-3);
    for (i, j) in [(0, 2), (0, 3), (1, 2), (1, 3)] {
        assert!(cos(i, j) < 0.09, "{i} {j}: {}", cos(i, j));
    }
}

//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;

use dekm_shared::ImageShape;
use dekm_trainer::data::{self, DataSource, Dataset, LoadOptions, SampleShape, SyntheticOptions};
use dekm_trainer::train::{RunOptions, TrainConfig};

/// `DEKM_DATA`, else the read-only `../shared/data` beside the repository, if it exists.
pub fn data_dir() -> Option<PathBuf> {
    std::env::var_os("DEKM_DATA")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")))
        .filter(|p| p.join("mnist").is_dir())
}

/// The first `n` MNIST training images, or `None` after printing that `test` is skipped
/// because the IDX files are not under `DEKM_DATA` or `../shared/data`.
pub fn mnist_slice(test: &str, n: usize) -> Option<Dataset> {
    let Some(dir) = data_dir() else {
        eprintln!("SKIPPED {test}: no MNIST under DEKM_DATA or ../shared/data");
        return None;
    };
    let opts = LoadOptions {
        data_dir: Some(dir),
        limit: Some(n),
        ..Default::default()
    };
    let ds = data::load(&DataSource::Mnist, &opts).expect("MNIST loads");
    assert_eq!(ds.len(), n);
    Some(ds)
}

/// A small synthetic data set: `n` windows from `k` regimes.
pub fn synthetic(k: usize, n: usize, seed: u64) -> Dataset {
    let opts = LoadOptions {
        synthetic: SyntheticOptions {
            k,
            samples: n,
            anomaly_rate: 0.02,
            world_seed: 42,
            draw_seed: seed,
        },
        ..Default::default()
    };
    data::load(&DataSource::Synthetic, &opts).expect("synthetic data")
}

/// Settings small enough for a test: a few epochs, few DEKM iterations.
pub fn quick_config(k: usize) -> TrainConfig {
    TrainConfig {
        k,
        epochs: 3,
        batch_size: 64,
        max_iter: 3,
        steps_per_iter: 10,
        restarts: 3,
        seed: 11,
        ..Default::default()
    }
}

/// Small noisy images of three shapes (a bar, a square, a cross), 2 channels, 12x12: enough for
/// the convolutional encoder to learn something and for the parity check to cover real weights.
pub fn images(n: usize) -> Dataset {
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
        label_names: Vec::new(),
        text: None,
        stream: None,
    }
}

/// Two topics in the tiny BERT fixture's words, 30 texts each, interleaved: each text with its
/// topic.
pub fn topic_texts() -> Vec<(String, &'static str)> {
    let animals = [
        "the cat is cute",
        "a puppy",
        "the dog is cute",
        "a cute cat",
        "dog",
    ];
    let weather = [
        "it rains today",
        "cloudy weather",
        "sunny today",
        "the rain",
        "it is cloudy",
    ];
    (0..30)
        .flat_map(|i| {
            [
                (animals[i % 5].to_string(), "animals"),
                (
                    format!("{}, {}", weather[i % 5], weather[(i + 1) % 5]),
                    "weather",
                ),
            ]
        })
        .collect()
}

/// [`topic_texts`] as `dir/docs.csv`: columns id, body, topic.
pub fn text_corpus(dir: &std::path::Path) -> PathBuf {
    let mut csv = String::from("id,body,topic\n");
    for (i, (text, topic)) in topic_texts().iter().enumerate() {
        csv += &format!("{i},\"{text}\",{topic}\n");
    }
    let path = dir.join("docs.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Options of a run that checkpoints under `dir/checkpoint` and resumes from what it finds there.
pub fn resuming(dir: &std::path::Path) -> RunOptions {
    RunOptions {
        checkpoint: Some(dir.join("checkpoint")),
        resume: true,
        ..Default::default()
    }
}

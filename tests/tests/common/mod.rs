//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;

use dekm_trainer::data::{self, DataSource, Dataset, LoadOptions, SyntheticOptions};
use dekm_trainer::train::TrainConfig;

/// `DEKM_DATA`, else the read-only `../shared/data` beside the repository, if it exists.
pub fn data_dir() -> Option<PathBuf> {
    std::env::var_os("DEKM_DATA")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")))
        .filter(|p| p.join("mnist").is_dir())
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

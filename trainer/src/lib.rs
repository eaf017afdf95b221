//! The dekm trainer: data loading, the autoencoders, DEKM training, clustering metrics and
//! model export.

pub mod allocator;
pub mod conv;
pub mod data;
pub mod export;
pub mod kmeans;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod rotation;
pub mod service;
pub mod train;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A deterministic random stream: one `seed` per run, one `stream` per purpose, so adding a use
/// of randomness in one place never shifts the numbers drawn in another.
pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

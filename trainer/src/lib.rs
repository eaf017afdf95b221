//! The dekm trainer: data loading, the autoencoders, DEKM training, clustering metrics and
//! model export.

pub mod allocator;
pub mod analysis;
pub mod augment;
pub mod conv;
pub mod data;
pub mod export;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod plots;
pub mod rotation;
pub mod service;
pub mod threads;
pub mod train;

/// k-means, clustering metrics and the seeded random streams live in `dekm-cluster`; the
/// trainer's paths stay as they were.
pub use dekm_cluster::{kmeans, metrics, rng};

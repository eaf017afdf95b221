//! The dekm training library: data sets ([`data`]) and what series are clustered on
//! ([`features`]), the autoencoders ([`model`], on the fast
//! convolutions of [`conv`]), the optimiser ([`optim`]), augmentation ([`augment`]), the
//! rotation `V` ([`rotation`]), the training run with its stages ([`train`]), calibration and
//! export ([`export`]), and the whole job as callers run it ([`pipeline`]).
//!
//! What is not here, and where it is: the gRPC service in `dekm-server`; the `dekm` command
//! line, its progress bars, pictures and clustering comparisons in `dekm-cli`. This crate has
//! no command-line, async or plotting dependency (the `clap` feature only derives
//! `clap::ValueEnum` on the settings a command line chooses from). Runs compute on the CPU or,
//! built with the `cuda` feature, on a CUDA GPU ([`device`]).

pub mod augment;
pub mod calibrate;
pub mod choice;
pub mod conv;
pub mod data;
pub mod device;
pub mod export;
pub mod features;
pub mod gan;
pub mod model;
pub mod neighbours;
pub mod optim;
pub mod pipeline;
pub mod representatives;
pub mod rotation;
pub mod train;

/// k-means, clustering metrics and the seeded random streams live in `dekm-cluster`; the
/// trainer's paths stay as they were.
pub use dekm_cluster::{kmeans, metrics, rng};

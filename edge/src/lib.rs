//! dekm's edge runtime: assigns samples to the clusters of a model exported by `dekm train`.
//!
//! The core is `no_std` + `alloc`: a model is decoded from a byte slice (the trainer's
//! `model.safetensors` or a compact [`bundle`]), checked against the contract in `dekm-shared`
//! ([`ModelParts`]), and turned into a [`Model`]. A [`Session`] holds the buffers, sized once, so
//! assigning a sample allocates nothing. [`head`] holds the clustering head (rotation,
//! centroids, outlier thresholds) that the trainer also uses to calibrate and evaluate, so the
//! network, the trainer and the device share one copy of that math. A [`StreamSession`] takes
//! a sensor's readings one at a time and assigns each completed window. With `std`, [`mod@file`] reads
//! models from disk, [`fs`] writes files atomically, and [`store`] keeps a device's current and previous model; with `fleet`,
//! `fleet` keeps that store on the server's active model; with `cli`, the `dekm-edge` binary
//! assigns files and streams.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod bundle;
pub mod encoder;
#[cfg(feature = "std")]
pub mod file;
#[cfg(feature = "fleet")]
pub mod fleet;
#[cfg(feature = "std")]
pub mod fs;
pub mod head;
pub mod model;
pub mod quantize;
#[cfg(feature = "std")]
pub mod store;
pub mod stream;
pub mod summary;
pub mod tensors_file;

pub use encoder::{BatchWorkspace, Convolutions, Encoder, EncoderError, Int8Kernel, Workspace};
pub use head::{Assignment, ClusterHead, HeadError};
pub use model::{LoadError, Model, ModelParts, NamedTensor, SampleError, Session};
pub use stream::{StreamError, StreamSession, WindowAssignment, Windower};
pub use summary::{Counters, OutlierEvent, Summary};

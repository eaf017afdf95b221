//! dekm's edge runtime: assigns samples to the clusters of a model exported by `dekm train`.
//!
//! The core is `no_std` + `alloc`: buffers are sized once per model and assigning a sample
//! allocates nothing. [`head`] holds the clustering head (rotation, centroids, outlier
//! thresholds) that the trainer also uses to calibrate and evaluate, so the network, the trainer
//! and the device share one copy of that math.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod encoder;
pub mod head;

pub use encoder::{Encoder, EncoderError, Workspace};
pub use head::{Assignment, ClusterHead, HeadError};

//! The contract between the dekm trainer and the edge runtime.
//!
//! Everything both sides must agree on lives here and nowhere else: the encoder's layer
//! specification and the shapes it implies ([`layers`]), the tensor names of an exported model
//! ([`names`]), the metadata written into the safetensors header ([`meta`]) and the input
//! preprocessing ([`preprocess`]). The crate is `no_std` + `alloc` so the edge core can use it on
//! devices without an operating system.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod error;
pub mod layers;
pub mod meta;
pub mod names;
pub mod preprocess;

pub use error::ContractError;
pub use layers::{ConvGeometry, ConvSpec, EncoderSpec, ImageShape, Padding};
pub use meta::{FORMAT_VERSION, ModelMeta, TrainingMetrics};
pub use preprocess::Normalizer;

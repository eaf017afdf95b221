//! The contract between the dekm trainer and the edge runtime.
//!
//! Everything both sides must agree on lives here and nowhere else: the encoder's layer
//! specification and the shapes it implies ([`layers`]), the tensor names of an exported model
//! ([`names`]), the metadata written into the safetensors header ([`meta`]), the input
//! preprocessing ([`preprocess`], and [`spectrum`] for windows clustered on their spectra) and how a stream of readings is cut into windows
//! ([`stream`]). The crate is `no_std` + `alloc` so the edge core can use it on
//! devices without an operating system.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod error;
pub mod layers;
pub mod meta;
pub mod names;
pub mod preprocess;
pub mod softmax;
pub mod spectrum;
pub mod stream;

pub use error::ContractError;
pub use layers::{
    Activation, ConvGeometry, ConvSpec, EncoderSpec, Extent, ImageShape, LEAKY_SLOPE, POOL_EPS,
    Padding, SeriesShape, Stack, TimePooling,
};
pub use meta::{
    EmbedderRef, FORMAT_VERSION, INT8_FORMAT_VERSION, ModelMeta, NETWORK_FORMAT_VERSION,
    Neighbours, OLDEST_FORMAT_VERSION, OutlierScore, SOFTMAX_FORMAT_VERSION, TrainingMetrics,
    Weights,
};
pub use preprocess::Normalizer;
pub use softmax::softmax_tail;
pub use spectrum::{Spectrum, SpectrumSpec};
pub use stream::StreamSpec;

//! Errors raised when a specification, metadata block or sample breaks the contract.

use alloc::string::String;

/// A violation of the trainer/edge contract, named precisely enough to fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ContractError {
    /// A layer would produce an empty or negative spatial size.
    #[error(
        "layer {layer}: input {height}x{width} is too small for a {kernel_height}x{kernel_width} kernel"
    )]
    InputTooSmall {
        /// Index of the offending layer in the encoder.
        layer: usize,
        /// Input height seen by that layer.
        height: usize,
        /// Input width seen by that layer.
        width: usize,
        /// Kernel rows of that layer (1 for a convolution over time).
        kernel_height: usize,
        /// Kernel columns of that layer.
        kernel_width: usize,
    },
    /// A size, stride or count that must be positive is zero.
    #[error("{what} must be positive")]
    ZeroSize {
        /// Which quantity is zero.
        what: &'static str,
    },
    /// The model was written by an incompatible format version.
    #[error(
        "unsupported model format version {found} (this build reads versions up to {supported})"
    )]
    UnsupportedVersion {
        /// Version found in the file.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },
    /// The metadata block is missing or is not valid JSON of the expected schema.
    #[error("invalid model metadata: {0}")]
    BadMetadata(String),
    /// A buffer has the wrong number of elements.
    #[error("{what}: expected {expected} values, got {got}")]
    LengthMismatch {
        /// What the buffer holds.
        what: &'static str,
        /// Number of values required.
        expected: usize,
        /// Number of values given.
        got: usize,
    },
    /// A name (of a setting's choice) this build does not know.
    #[error("unknown {what} '{name}': use {expected}")]
    UnknownName {
        /// What was named.
        what: &'static str,
        /// The name given.
        name: String,
        /// The names this build knows.
        expected: &'static str,
    },
    /// A spectrum asks for more frequency bands than a window resolves.
    #[error(
        "{bands} spectrum bands need at least {bands} frequencies, a window of {length} readings has {frequencies}"
    )]
    TooManyBands {
        /// Bands asked for.
        bands: usize,
        /// Readings per window.
        length: usize,
        /// Frequencies above zero it resolves (`length / 2`).
        frequencies: usize,
    },
    /// A value is NaN or infinite.
    #[error("{what}: value at index {index} is not finite")]
    NotFinite {
        /// What the buffer holds.
        what: &'static str,
        /// Position of the first offending value.
        index: usize,
    },
}

//! Readers for the sample files dekm consumes, shared by the trainer (whole files) and the edge
//! CLI (streams, one sample at a time in bounded memory): IDX images (raw or gzip), CSV, NumPy
//! `.npy`, raw little-endian `f32`, the UEA/UCR time-series archives' `.ts` files, and long
//! multichannel recordings cut into windows ([`recording`]), and documents to embed ([`text`]).
//!
//! Every problem is a [`DataError`] naming the file and, for row-level problems, the line or
//! row, so a bad file never ends in a panic or a silent skip.

pub mod delimited;
pub mod idx;
pub mod numpy;
pub mod recording;
pub mod stream;
pub mod table;
pub mod text;
pub mod ts;

use std::path::PathBuf;

pub use recording::{Recording, RecordingReader, Windows, read_recording, windows};
pub use stream::{Format, SampleStream};
pub use table::{LabelColumn, Table};

/// Why a data set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The data directory or a file in it is missing.
    #[error(
        "{name} not found: looked for {missing} in {searched}. Put the IDX files (gzip or raw) in \
         <data-dir>/{name}/ and pass --data-dir or set DEKM_DATA; on Debian, \
         `apt-get install dataset-fashion-mnist` installs Fashion-MNIST under /usr/share/datasets"
    )]
    NotFound {
        /// Data set name.
        name: String,
        /// File that was looked for.
        missing: String,
        /// Directories searched.
        searched: String,
    },
    /// An I/O error on a file that exists.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file's structure is invalid.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file ends before the data its header announces.
    #[error("{path}: truncated, expected {expected} bytes, got {got}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes required.
        expected: usize,
        /// Bytes present.
        got: usize,
    },
    /// Image and label files disagree.
    #[error("{name}: {images} images but {labels} labels")]
    CountMismatch {
        /// Data set name.
        name: String,
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A CSV row has the wrong number of fields.
    #[error("{path}: line {line} has {got} fields, expected {expected}")]
    Ragged {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Fields in the first row.
        expected: usize,
        /// Fields in this row.
        got: usize,
    },
    /// A CSV field is not a number.
    #[error("{path}: line {line}, column {column}: '{value}' is not a number")]
    NotNumeric {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The offending text (first 40 characters).
        value: String,
    },
    /// NaN or infinity in the data.
    #[error("{path}: {location} is NaN or infinite")]
    NotFinite {
        /// The file.
        path: PathBuf,
        /// Where.
        location: String,
    },
    /// The label column cannot be used.
    #[error("{path}: label column: {reason}")]
    BadLabelColumn {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A document is not usable text: not UTF-8, blank, or a field that is not a string.
    #[error("{path}: line {line}: {reason}")]
    BadText {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No samples.
    #[error("{path}: no samples")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A combination of source and options that cannot work.
    #[error("{0}")]
    Unsupported(String),
    /// The data source string is not understood.
    #[error(
        "unknown data set '{0}': use mnist, fashion-mnist, synthetic, csv:PATH, npy:PATH, ts:PATH or text:PATH"
    )]
    UnknownSource(String),
}

impl DataError {
    /// True for problems confined to one sample (wrong field count, non-numeric or non-finite
    /// value): a stream reports them and goes on.
    pub fn is_row_error(&self) -> bool {
        matches!(
            self,
            Self::Ragged { .. } | Self::NotNumeric { .. } | Self::NotFinite { .. }
        )
    }
}

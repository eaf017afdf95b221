//! Sentence embeddings, in Rust, exactly as sentence-transformers computes them.
//!
//! Clustering documents by meaning starts from a sentence-embedding model. This crate loads the
//! folder such a model lives in on disk (`config.json`, `tokenizer.json`, `model.safetensors`,
//! `modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json`: what
//! sentence-transformers saves and what users already have), runs its BERT (on the CPU with
//! this crate's own forward pass, `cpu`; on a GPU with candle-transformers' implementation),
//! pools the token states under the attention mask and L2-normalises when the folder's module
//! list says so. Nothing is downloaded.
//!
//! The trainer embeds text data sets with it; the edge runtime never does (devices are sent
//! vectors), so the crate stays out of the device side's dependency tree.

mod cpu;
mod embedder;
mod folder;
mod pooling;

#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixture;

pub use embedder::{Embedder, Embeddings};
pub use folder::ModelFolder;
pub use pooling::Pooling;

use std::path::PathBuf;

/// Why a model folder could not be loaded or texts not embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A file of the folder is missing or unreadable.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is there but is not what a sentence-transformers BERT folder holds.
    #[error("{path}: {reason}")]
    NotAModel {
        /// The file (or the folder).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer failed on a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

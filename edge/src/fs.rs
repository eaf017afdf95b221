//! The file-system primitives every writer of dekm's files shares (the trainer's export and
//! checkpoints, the server's store, the device store, `dekm-edge pack`): [`write_atomic`], and
//! [`FileError`], a file that cannot be read or loaded, with its path.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::LoadError;

/// A model file that cannot be read or loaded, with its path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read. (The cause is in the message, not a `source()`, so a report
    /// of the chain names it once.)
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        error: std::io::Error,
    },
    /// The file is read but is not a valid model.
    #[error("{path}: {error}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: LoadError,
    },
}

impl FileError {
    /// The load error, when the file was read.
    pub fn load_error(&self) -> Option<&LoadError> {
        match self {
            Self::Load { error, .. } => Some(error),
            Self::Io { .. } => None,
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, fsync, rename and a
/// directory fsync: after a crash readers find the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory entry is on disk.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

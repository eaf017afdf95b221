//! Loading a model from the file system: a model directory, a `model.safetensors` file (its
//! `.sha256` companion checked when present), a bundle, or a device store (see [`crate::store`]);
//! and writing files so that a crash never leaves a half-written one.

use std::io::Write;
use std::path::{Path, PathBuf};

use dekm_shared::names;

use crate::bundle::{is_bundle, sha256_hex};
use crate::model::{LoadError, ModelParts};

/// A model file that cannot be read or loaded, with its path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is read but is not a valid model.
    #[error("{path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: LoadError,
    },
}

impl FileError {
    /// The load error, when the file was read.
    pub fn load_error(&self) -> Option<&LoadError> {
        match self {
            Self::Load { source, .. } => Some(source),
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

/// Reads the model at `path`: a directory holding `model.safetensors`, a device store (a
/// directory with a `CURRENT` pointer), a safetensors file, or a bundle (recognised by its
/// magic). A safetensors file is checked against the SHA-256 in its `model.safetensors.sha256`
/// companion when that file exists.
pub fn read_parts(path: &Path) -> Result<ModelParts, FileError> {
    let file = if path.is_dir() {
        match crate::store::DeviceStore::at(path).current_path()? {
            Some(bundle) => bundle,
            None => path.join(names::MODEL_FILE),
        }
    } else {
        path.to_path_buf()
    };
    let io = |source| FileError::Io {
        path: file.clone(),
        source,
    };
    let bytes = std::fs::read(&file).map_err(io)?;
    let load = |source| FileError::Load {
        path: file.clone(),
        source,
    };
    if is_bundle(&bytes) {
        return ModelParts::from_bundle(&bytes).map_err(load);
    }
    let sha_path = file.with_file_name(names::SHA_FILE);
    match std::fs::read_to_string(&sha_path) {
        Ok(recorded) => {
            let expected = recorded.split_whitespace().next().unwrap_or_default();
            let actual = sha256_hex(&bytes);
            if expected != actual {
                return Err(load(LoadError::Checksum {
                    expected: expected.into(),
                    actual,
                }));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(FileError::Io {
                path: sha_path,
                source,
            });
        }
    }
    ModelParts::from_safetensors(&bytes).map_err(load)
}

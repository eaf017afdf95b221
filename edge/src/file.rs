//! Loading a model from the file system: a model directory, a `model.safetensors` file (its
//! `.sha256` companion checked when present), a bundle, or a device store (see [`crate::store`]).

use std::path::Path;

use dekm_shared::names;

use crate::bundle::{is_bundle, sha256_hex};
use crate::fs::FileError;
use crate::model::{LoadError, ModelParts};

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
    let io = |error| FileError::Io {
        path: file.clone(),
        error,
    };
    let bytes = std::fs::read(&file).map_err(io)?;
    let load = |error| FileError::Load {
        path: file.clone(),
        error,
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
        Err(error) => {
            return Err(FileError::Io {
                path: sha_path,
                error,
            });
        }
    }
    ModelParts::from_safetensors(&bytes).map_err(load)
}

//! A device's model store: the current bundle and the one before it, so an update can be rolled
//! back without the network.
//!
//! Layout of the store directory:
//!
//! | path | content |
//! |---|---|
//! | `models/<id>.dekmedge` | bundles, named by [model id](crate::bundle::model_id) |
//! | `CURRENT` | id of the model in use |
//! | `PREVIOUS` | id of the model used before it (absent until the first update) |
//!
//! Every file is replaced with [`write_atomic`]. A new bundle is written and verified before
//! `PREVIOUS` and then `CURRENT` are switched, so a crash at any point leaves `CURRENT` naming
//! a complete, verified bundle. Bundles other than the current and previous are removed.

use std::path::{Path, PathBuf};

use crate::bundle::{is_model_id, model_id, sha256_hex};
use crate::fs::{FileError, write_atomic};
use crate::model::{LoadError, Model, ModelParts};

const MODELS: &str = "models";
const CURRENT: &str = "CURRENT";
const PREVIOUS: &str = "PREVIOUS";
const EXT: &str = "dekmedge";

/// Why the store cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a store file failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// A downloaded bundle does not match the checksum it came with.
    #[error("bundle checksum mismatch: expected {expected}, got {actual}")]
    Checksum {
        /// Announced SHA-256.
        expected: String,
        /// SHA-256 of the bytes received.
        actual: String,
    },
    /// The bundle's checksum is right but it is not a usable model.
    #[error("bundle is not a usable model: {0}")]
    Load(#[from] LoadError),
    /// A pointer file holds something other than a model id.
    #[error("{path}: {content:?} is not a model id")]
    BadPointer {
        /// The pointer file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// Rollback was asked for but no previous model is kept.
    #[error("no previous model to roll back to")]
    NoPrevious,
}

/// What [`DeviceStore::install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The bundle was already current.
    Unchanged,
    /// The bundle is now current; the old current (if any) is kept as previous.
    Switched {
        /// The model that was current.
        previous: Option<String>,
    },
}

/// A model store directory.
#[derive(Debug, Clone)]
pub struct DeviceStore {
    dir: PathBuf,
}

impl DeviceStore {
    /// The store at `dir`, which need not exist yet ([`install`](Self::install) creates it).
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Id of the model in use, if any.
    pub fn current(&self) -> Result<Option<String>, StoreError> {
        self.pointer(CURRENT)
    }

    /// Id of the model used before the current one, if any.
    pub fn previous(&self) -> Result<Option<String>, StoreError> {
        self.pointer(PREVIOUS)
    }

    /// Path of the current bundle, or `None` when `dir` holds no store.
    pub fn current_path(&self) -> Result<Option<PathBuf>, FileError> {
        match self.current() {
            Ok(id) => Ok(id.map(|id| self.bundle_path(&id))),
            Err(StoreError::File(e)) => Err(e),
            Err(e) => Err(FileError::Io {
                path: self.dir.join(CURRENT),
                error: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            }),
        }
    }

    /// Verifies `bytes` against `sha256` and as a model, stores it and makes it current.
    pub fn install(&self, sha256: &str, bytes: &[u8]) -> Result<Installed, StoreError> {
        let actual = sha256_hex(bytes);
        if actual != sha256 {
            return Err(StoreError::Checksum {
                expected: sha256.into(),
                actual,
            });
        }
        Model::from_parts(&ModelParts::from_bundle(bytes)?)?;
        let id = model_id(&actual).to_string();
        let current = self.current()?;
        if current.as_deref() == Some(id.as_str()) {
            return Ok(Installed::Unchanged);
        }
        let models = self.dir.join(MODELS);
        std::fs::create_dir_all(&models).map_err(io(&models))?;
        let path = self.bundle_path(&id);
        write_atomic(&path, bytes).map_err(io(&path))?;
        if let Some(old) = &current {
            self.set_pointer(PREVIOUS, old)?;
        }
        self.set_pointer(CURRENT, &id)?;
        self.prune()?;
        Ok(Installed::Switched { previous: current })
    }

    /// Makes the previous model current again (and the current one previous); returns its id.
    pub fn rollback(&self) -> Result<String, StoreError> {
        let previous = self.previous()?.ok_or(StoreError::NoPrevious)?;
        let path = self.bundle_path(&previous);
        ModelParts::from_bundle(&std::fs::read(&path).map_err(io(&path))?)?;
        if let Some(current) = self.current()? {
            self.set_pointer(PREVIOUS, &current)?;
        }
        self.set_pointer(CURRENT, &previous)?;
        Ok(previous)
    }

    fn bundle_path(&self, id: &str) -> PathBuf {
        self.dir.join(MODELS).join(format!("{id}.{EXT}"))
    }

    fn pointer(&self, name: &str) -> Result<Option<String>, StoreError> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) if is_model_id(s.trim()) => Ok(Some(s.trim().to_string())),
            Ok(content) => Err(StoreError::BadPointer { path, content }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e).into()),
        }
    }

    fn set_pointer(&self, name: &str, id: &str) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        write_atomic(&path, format!("{id}\n").as_bytes()).map_err(io(&path))?;
        Ok(())
    }

    /// Removes bundles that are neither current nor previous.
    fn prune(&self) -> Result<(), StoreError> {
        let keep = [self.current()?, self.previous()?];
        let models = self.dir.join(MODELS);
        for entry in std::fs::read_dir(&models).map_err(io(&models))? {
            let path = entry.map_err(io(&models))?.path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if !keep.iter().flatten().any(|k| k == stem) {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |error| FileError::Io {
        path: path.to_path_buf(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixture;

    fn bundle(seed: u32) -> (String, Vec<u8>) {
        let bytes = fixture::dense(seed).to_bundle();
        (sha256_hex(&bytes), bytes)
    }

    #[test]
    fn install_switches_keeps_one_previous_and_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceStore::at(dir.path());
        assert_eq!(store.current().unwrap(), None);
        assert_eq!(store.current_path().unwrap(), None);
        let [(s1, b1), (s2, b2), (s3, b3)] = [1, 2, 3].map(bundle);
        let id = |s: &str| model_id(s).to_string();

        assert_eq!(
            store.install(&s1, &b1).unwrap(),
            Installed::Switched { previous: None }
        );
        assert_eq!(store.install(&s1, &b1).unwrap(), Installed::Unchanged);
        store.install(&s2, &b2).unwrap();
        assert_eq!(
            store.install(&s3, &b3).unwrap(),
            Installed::Switched {
                previous: Some(id(&s2))
            }
        );
        assert_eq!(store.current().unwrap(), Some(id(&s3)));
        assert_eq!(store.previous().unwrap(), Some(id(&s2)));
        let kept = std::fs::read_dir(dir.path().join(MODELS)).unwrap().count();
        assert_eq!(kept, 2, "the oldest bundle is pruned");
        // The store directory loads like a model directory.
        let parts = crate::file::read_parts(dir.path()).unwrap();
        assert_eq!(parts, fixture::dense(3));

        assert_eq!(store.rollback().unwrap(), id(&s2));
        assert_eq!(store.current().unwrap(), Some(id(&s2)));
        assert_eq!(store.previous().unwrap(), Some(id(&s3)));
        assert_eq!(
            crate::file::read_parts(dir.path()).unwrap(),
            fixture::dense(2)
        );
    }

    #[test]
    fn bad_downloads_and_pointers_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceStore::at(dir.path());
        assert!(matches!(store.rollback(), Err(StoreError::NoPrevious)));
        let (sha, bytes) = bundle(1);
        store.install(&sha, &bytes).unwrap();

        let (other, _) = bundle(2);
        let err = store.install(&other, &bytes).unwrap_err();
        assert!(matches!(err, StoreError::Checksum { .. }), "{err}");
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let err = store.install(&sha256_hex(&flipped), &flipped).unwrap_err();
        assert!(
            matches!(err, StoreError::Load(LoadError::Checksum { .. })),
            "{err}"
        );
        assert_eq!(store.current().unwrap().as_deref(), Some(model_id(&sha)));

        std::fs::write(dir.path().join(CURRENT), "../../etc/passwd").unwrap();
        let err = store.current().unwrap_err();
        assert!(err.to_string().contains("is not a model id"), "{err}");
        assert!(crate::file::read_parts(dir.path()).is_err());
    }
}

//! The server's model registry: every model as a verified edge bundle on disk, which one is
//! active, and the activation history that rollback walks back.
//!
//! Layout of the store directory (shared with [`crate::jobs`] and [`crate::fleet`]):
//!
//! | path | content |
//! |---|---|
//! | `models/<id>.dekmedge` | one bundle per model, named by its [model id](dekm_edge::bundle::model_id) |
//! | `registry.json` | active id, earlier active ids (newest last), generation counter |
//!
//! Nothing is ever half-written: bundles and `registry.json` are replaced with
//! [`write_atomic`], and `registry.json` is written before memory changes, so a failed write
//! leaves both at the old state. A bundle is content-addressed, so adding the same model twice
//! is a no-op. At start every bundle is re-verified (checksum and contract); a registry naming a
//! model that is missing or corrupt refuses to open rather than silently serve another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use dekm_edge::bundle::{is_model_id, model_id, sha256_hex};
use dekm_edge::fs::write_atomic;
use dekm_edge::{LoadError, Model, ModelParts};
use dekm_shared::ModelMeta;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

const MODELS: &str = "models";
const STATE: &str = "registry.json";
const EXT: &str = "dekmedge";

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A store file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// `registry.json` is not valid.
    #[error("{path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A bundle is not a usable model.
    #[error("invalid model bundle: {0}")]
    Invalid(#[from] LoadError),
    /// A stored bundle no longer matches its name (disk corruption or tampering).
    #[error("stored bundle {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No model has this id.
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    /// A model is needed but none is active.
    #[error("no model is active")]
    NoActive,
    /// Rollback needs an earlier active model.
    #[error("no earlier active model to roll back to")]
    NothingToRollBack,
}

/// One stored model, loaded and ready to assign.
#[derive(Debug)]
pub struct Entry {
    /// Bundle id.
    pub id: String,
    /// SHA-256 of the bundle.
    pub sha256: String,
    /// Bundle size.
    pub bytes: u64,
    /// Its metadata.
    pub meta: ModelMeta,
    /// The edge runtime's model: the server assigns exactly as a device does.
    pub model: Model,
}

/// The active model as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Active {
    /// Active model id (`None` before the first activation).
    pub id: Option<String>,
    /// SHA-256 of its bundle.
    pub sha256: String,
    /// Activation counter.
    pub generation: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct State {
    active: Option<String>,
    /// Models active before, oldest first.
    history: Vec<String>,
    generation: u64,
}

struct Inner {
    models: BTreeMap<String, Arc<Entry>>,
    state: State,
}

/// The model registry of one store directory.
pub struct Registry {
    dir: PathBuf,
    inner: Mutex<Inner>,
    active: watch::Sender<Active>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("dir", &self.dir).finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Registry {
    /// Opens (or creates) the registry under `dir`, verifying every stored bundle.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        let models_dir = dir.join(MODELS);
        std::fs::create_dir_all(&models_dir).map_err(io(&models_dir))?;
        let mut models = BTreeMap::new();
        for entry in std::fs::read_dir(&models_dir).map_err(io(&models_dir))? {
            let path = entry.map_err(io(&models_dir))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(EXT) {
                continue;
            }
            match load_entry(&path) {
                Ok(e) => {
                    models.insert(e.id.clone(), Arc::new(e));
                }
                // A damaged bundle that nothing points at must not keep the server down; it is
                // reported and left on disk for inspection.
                Err(e) => tracing::error!(error = %e, "skipping stored bundle"),
            }
        }
        let state_path = dir.join(STATE);
        let state: State = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::State {
                path: state_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io(&state_path)(e)),
        };
        for id in state.active.iter().chain(&state.history) {
            if !models.contains_key(id) {
                return Err(RegistryError::State {
                    path: state_path,
                    reason: format!("names model {id} whose bundle is missing or corrupt"),
                });
            }
        }
        let active = active_of(&models, &state);
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner { models, state }),
            active: watch::channel(active).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update finishes its writes before touching memory, so a panic elsewhere
        // cannot leave the map half-changed: the data behind a poisoned lock is still valid.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a model (a no-op when the same bundle is already stored) and returns its entry.
    pub fn add(&self, parts: &ModelParts) -> Result<Arc<Entry>, RegistryError> {
        let bytes = parts.to_bundle();
        let sha256 = sha256_hex(&bytes);
        let id = model_id(&sha256).to_string();
        if let Some(e) = self.lock().models.get(&id) {
            return Ok(e.clone());
        }
        let entry = Arc::new(Entry {
            model: Model::from_parts(parts)?,
            meta: parts.meta().clone(),
            bytes: bytes.len() as u64,
            id: id.clone(),
            sha256,
        });
        let path = self.bundle_path(&id);
        write_atomic(&path, &bytes).map_err(io(&path))?;
        Ok(self.lock().models.entry(id).or_insert(entry).clone())
    }

    /// Verifies and stores a bundle received from outside.
    pub fn add_bundle(&self, bytes: &[u8]) -> Result<Arc<Entry>, RegistryError> {
        self.add(&ModelParts::from_bundle(bytes)?)
    }

    /// The model `id`, or the active model when `id` is empty.
    pub fn get(&self, id: &str) -> Result<Arc<Entry>, RegistryError> {
        let inner = self.lock();
        let id = if id.is_empty() {
            inner.state.active.clone().ok_or(RegistryError::NoActive)?
        } else {
            id.to_string()
        };
        inner
            .models
            .get(&id)
            .cloned()
            .ok_or(RegistryError::UnknownModel(id))
    }

    /// All models, in id order.
    pub fn list(&self) -> Vec<Arc<Entry>> {
        self.lock().models.values().cloned().collect()
    }

    /// The active model's id, hash and generation.
    pub fn active(&self) -> Active {
        self.active.borrow().clone()
    }

    /// Follows activations and rollbacks.
    pub fn subscribe(&self) -> watch::Receiver<Active> {
        self.active.subscribe()
    }

    /// Makes `id` the active model; the previously active one is remembered for rollback.
    pub fn activate(&self, id: &str) -> Result<Active, RegistryError> {
        let mut inner = self.lock();
        if !inner.models.contains_key(id) {
            return Err(RegistryError::UnknownModel(id.to_string()));
        }
        let mut state = inner.state.clone();
        if state.active.as_deref() == Some(id) {
            return Ok(self.active());
        }
        state.history.extend(state.active.take());
        state.active = Some(id.to_string());
        state.generation += 1;
        self.commit(&mut inner, state)
    }

    /// Re-activates the model that was active before the current one.
    pub fn rollback(&self) -> Result<Active, RegistryError> {
        let mut inner = self.lock();
        let mut state = inner.state.clone();
        let previous = state
            .history
            .pop()
            .ok_or(RegistryError::NothingToRollBack)?;
        state.active = Some(previous);
        state.generation += 1;
        self.commit(&mut inner, state)
    }

    /// Writes `state`, then makes it current and tells the watchers.
    fn commit(&self, inner: &mut Inner, state: State) -> Result<Active, RegistryError> {
        let path = self.dir.join(STATE);
        let json = serde_json::to_vec_pretty(&state).map_err(|e| RegistryError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &json).map_err(io(&path))?;
        inner.state = state;
        let active = active_of(&inner.models, &inner.state);
        self.active.send_replace(active.clone());
        Ok(active)
    }

    /// The stored bundle of `id`, re-read from disk and checked against its checksum.
    pub fn bundle(&self, id: &str) -> Result<(Arc<Entry>, Vec<u8>), RegistryError> {
        let entry = self.get(id)?;
        let path = self.bundle_path(&entry.id);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let actual = sha256_hex(&bytes);
        if actual != entry.sha256 {
            return Err(RegistryError::Corrupt {
                path,
                reason: format!("SHA-256 is {actual}, expected {}", entry.sha256),
            });
        }
        Ok((entry, bytes))
    }

    fn bundle_path(&self, id: &str) -> PathBuf {
        self.dir.join(MODELS).join(format!("{id}.{EXT}"))
    }
}

fn active_of(models: &BTreeMap<String, Arc<Entry>>, state: &State) -> Active {
    Active {
        id: state.active.clone(),
        sha256: state
            .active
            .as_ref()
            .and_then(|id| models.get(id))
            .map(|e| e.sha256.clone())
            .unwrap_or_default(),
        generation: state.generation,
    }
}

fn load_entry(path: &Path) -> Result<Entry, RegistryError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let corrupt = |reason: String| RegistryError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let sha256 = sha256_hex(&bytes);
    let id = model_id(&sha256).to_string();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if !is_model_id(stem) || stem != id {
        return Err(corrupt(format!("content has id {id}")));
    }
    let parts = ModelParts::from_bundle(&bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(Entry {
        model: Model::from_parts(&parts).map_err(|e| corrupt(e.to_string()))?,
        meta: parts.meta().clone(),
        bytes: bytes.len() as u64,
        id,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dekm_edge::model::fixture;

    #[test]
    fn activation_history_survives_reopening_and_rolls_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        assert_eq!(r.active(), Active::default());
        assert!(matches!(r.get(""), Err(RegistryError::NoActive)));
        let ids: Vec<String> = (1..=3)
            .map(|s| r.add(&fixture::dense(s)).unwrap().id.clone())
            .collect();
        // Adding the same model again is a no-op.
        assert_eq!(r.add(&fixture::dense(1)).unwrap().id, ids[0]);
        assert_eq!(r.list().len(), 3);
        let mut watch = r.subscribe();
        for id in &ids {
            r.activate(id).unwrap();
        }
        assert!(watch.has_changed().unwrap());
        assert_eq!(
            watch.borrow_and_update().id.as_deref(),
            Some(ids[2].as_str())
        );
        // Activating the active model changes nothing.
        assert_eq!(r.activate(&ids[2]).unwrap().generation, 3);

        let r = Registry::open(dir.path()).unwrap();
        assert_eq!(
            (r.active().id, r.active().generation),
            (Some(ids[2].clone()), 3)
        );
        assert_eq!(r.rollback().unwrap().id, Some(ids[1].clone()));
        assert_eq!(r.rollback().unwrap().id, Some(ids[0].clone()));
        assert!(matches!(
            r.rollback(),
            Err(RegistryError::NothingToRollBack)
        ));
        assert_eq!(r.active().generation, 5);
        let (entry, bytes) = r.bundle("").unwrap();
        assert_eq!(entry.id, ids[0]);
        assert_eq!(ModelParts::from_bundle(&bytes).unwrap(), fixture::dense(1));
        assert!(matches!(
            r.activate("0123456789abcdef"),
            Err(RegistryError::UnknownModel(_))
        ));
    }

    #[test]
    fn corrupt_bundles_are_caught_at_open_and_when_served() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        let a = r.add(&fixture::dense(1)).unwrap().id.clone();
        let b = r.add(&fixture::dense(2)).unwrap().id.clone();
        r.activate(&a).unwrap();
        let flip = |id: &str| {
            let path = dir.path().join(MODELS).join(format!("{id}.{EXT}"));
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::write(path, bytes).unwrap();
        };
        // Damaged after loading: serving it is refused, not passed on to devices.
        flip(&a);
        assert!(matches!(r.bundle(&a), Err(RegistryError::Corrupt { .. })));
        // An unreferenced damaged bundle is skipped at open; a referenced one stops it.
        flip(&b);
        flip(&a);
        let reopened = Registry::open(dir.path()).unwrap();
        assert_eq!(reopened.list().len(), 1);
        flip(&a);
        let err = Registry::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("missing or corrupt"), "{err}");
        std::fs::write(dir.path().join(STATE), "{").unwrap();
        assert!(matches!(
            Registry::open(dir.path()),
            Err(RegistryError::State { .. })
        ));
    }
}

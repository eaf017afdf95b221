//! The server's model registry: every model as a verified edge bundle on disk, which one is
//! active, and the activation history that rollback walks back.
//!
//! Bundles are content-addressed files, `models/<id>.dekmedge` in the store directory, named by
//! their [model id](dekm_edge::bundle::model_id); adding the same model twice is a no-op, and
//! a bundle is written completely ([`write_atomic`]) before anything names it. The active id,
//! the history and the generation live in the [database](crate::db), changed by compare and
//! swap on the generation, so that replicas sharing a database and a models volume agree:
//! an activation on one replica reaches the others at their next [`Registry::sync`], which
//! the server runs every [`SYNC_INTERVAL`]. At start every bundle is re-verified (checksum and
//! contract); a registry naming a model that is missing or corrupt refuses to open rather
//! than silently serve another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dekm_edge::bundle::{is_model_id, model_id, sha256_hex};
use dekm_edge::fs::write_atomic;
use dekm_edge::{LoadError, Model, ModelParts};
use dekm_shared::ModelMeta;
use tokio::sync::watch;

use crate::db::{Database, DbError, RegistryRow};

const MODELS: &str = "models";
const EXT: &str = "dekmedge";
/// How often a server reads the registry's state from the database: the bound on how long an
/// activation on one replica takes to reach the others.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);
/// Compare-and-swap attempts before an activation gives up (each loses only to another
/// replica's completed change).
const SWAP_ATTEMPTS: usize = 16;

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
    /// The registry's state in the database cannot be read, written or trusted.
    #[error("registry state: {0}")]
    State(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
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

struct Inner {
    models: BTreeMap<String, Arc<Entry>>,
    state: RegistryRow,
}

/// The model registry of one store.
pub struct Registry {
    dir: PathBuf,
    db: Database,
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
    /// Opens the registry of store `dir` with its metadata in `db`, verifying every stored
    /// bundle.
    pub fn open(dir: &Path, db: Database) -> Result<Self, RegistryError> {
        let models_dir = dir.join(MODELS);
        std::fs::create_dir_all(&models_dir).map_err(io(&models_dir))?;
        let mut models = BTreeMap::new();
        for path in bundle_files(&models_dir)? {
            match load_entry(&path) {
                Ok(e) => {
                    models.insert(e.id.clone(), Arc::new(e));
                }
                // A damaged bundle that nothing points at must not keep the server down; it is
                // reported and left on disk for inspection.
                Err(e) => tracing::error!(error = %e, "skipping stored bundle"),
            }
        }
        let state = db.call(|b| b.registry())?;
        check_known(&models, &state)?;
        let active = active_of(&models, &state);
        Ok(Self {
            dir: dir.to_path_buf(),
            db,
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

    /// The model `id`, or the active model when `id` is empty. A model another replica added
    /// is loaded from the shared models directory the first time it is asked for.
    pub fn get(&self, id: &str) -> Result<Arc<Entry>, RegistryError> {
        let id = {
            let inner = self.lock();
            let id = if id.is_empty() {
                inner.state.active.clone().ok_or(RegistryError::NoActive)?
            } else {
                id.to_string()
            };
            if let Some(e) = inner.models.get(&id) {
                return Ok(e.clone());
            }
            id
        };
        self.load(&id)?.ok_or(RegistryError::UnknownModel(id))
    }

    /// Loads bundle `id` from disk if it is there and not yet known.
    fn load(&self, id: &str) -> Result<Option<Arc<Entry>>, RegistryError> {
        if !is_model_id(id) {
            return Ok(None);
        }
        let path = self.bundle_path(id);
        if !path.exists() {
            return Ok(None);
        }
        let entry = Arc::new(load_entry(&path)?);
        Ok(Some(
            self.lock()
                .models
                .entry(id.to_string())
                .or_insert(entry)
                .clone(),
        ))
    }

    /// All models, in id order (with those other replicas added since).
    pub fn list(&self) -> Result<Vec<Arc<Entry>>, RegistryError> {
        let models_dir = self.dir.join(MODELS);
        for path in bundle_files(&models_dir)? {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if !self.lock().models.contains_key(stem)
                && let Err(e) = self.load(stem)
            {
                tracing::error!(error = %e, "skipping stored bundle");
            }
        }
        Ok(self.lock().models.values().cloned().collect())
    }

    /// The active model's id, hash and generation.
    pub fn active(&self) -> Active {
        self.active.borrow().clone()
    }

    /// Follows activations and rollbacks (on any replica, once this one has synced).
    pub fn subscribe(&self) -> watch::Receiver<Active> {
        self.active.subscribe()
    }

    /// Makes `id` the active model; the previously active one is remembered for rollback.
    pub fn activate(&self, id: &str) -> Result<Active, RegistryError> {
        self.get(id)?;
        let id = id.to_string();
        self.change(move |state| {
            if state.active.as_deref() == Some(id.as_str()) {
                return Ok(None);
            }
            let mut next = state.clone();
            next.history.extend(next.active.take());
            next.active = Some(id.clone());
            Ok(Some(next))
        })
    }

    /// Re-activates the model that was active before the current one.
    pub fn rollback(&self) -> Result<Active, RegistryError> {
        self.change(|state| {
            let mut next = state.clone();
            let previous = next.history.pop().ok_or(RegistryError::NothingToRollBack)?;
            next.active = Some(previous);
            Ok(Some(next))
        })
    }

    /// Applies `step` to the database's current state by compare and swap (`None`: nothing to
    /// change), then makes the result current here and tells the watchers.
    fn change(
        &self,
        step: impl Fn(&RegistryRow) -> Result<Option<RegistryRow>, RegistryError>,
    ) -> Result<Active, RegistryError> {
        for _ in 0..SWAP_ATTEMPTS {
            let current = self.db.call(|b| b.registry())?;
            let Some(mut next) = step(&current)? else {
                self.apply(current)?;
                return Ok(self.active());
            };
            next.generation = current.generation + 1;
            if let Some(id) = &next.active {
                self.get(id)?;
            }
            let expected = current.generation;
            let row = next.clone();
            if self.db.call(move |b| b.swap_registry(expected, &row))? {
                self.apply(next)?;
                return Ok(self.active());
            }
        }
        Err(RegistryError::State(format!(
            "the registry changed under {SWAP_ATTEMPTS} attempts in a row; try again"
        )))
    }

    /// Reads the state from the database and makes it current if it is newer (another
    /// replica activated or rolled back). Returns whether anything changed.
    pub async fn sync(&self) -> Result<bool, RegistryError> {
        let state = self.db.call_async(|b| b.registry()).await?;
        if state.generation == self.lock().state.generation {
            return Ok(false);
        }
        self.apply(state)?;
        Ok(true)
    }

    /// Makes `state` current unless memory already holds a newer one.
    fn apply(&self, state: RegistryRow) -> Result<(), RegistryError> {
        for id in state.active.iter().chain(&state.history) {
            self.get(id)?;
        }
        let mut inner = self.lock();
        if state.generation < inner.state.generation {
            return Ok(());
        }
        check_known(&inner.models, &state)?;
        inner.state = state;
        let active = active_of(&inner.models, &inner.state);
        self.active.send_if_modified(|a| {
            let changed = *a != active;
            *a = active;
            changed
        });
        Ok(())
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

fn bundle_files(dir: &Path) -> Result<Vec<PathBuf>, RegistryError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(EXT) {
            out.push(path);
        }
    }
    Ok(out)
}

fn check_known(
    models: &BTreeMap<String, Arc<Entry>>,
    state: &RegistryRow,
) -> Result<(), RegistryError> {
    match state
        .active
        .iter()
        .chain(&state.history)
        .find(|id| !models.contains_key(*id))
    {
        Some(id) => Err(RegistryError::State(format!(
            "names model {id} whose bundle is missing or corrupt"
        ))),
        None => Ok(()),
    }
}

fn active_of(models: &BTreeMap<String, Arc<Entry>>, state: &RegistryRow) -> Active {
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
    use crate::db::Location;
    use dekm_edge::model::fixture;

    fn open(dir: &Path, location: &Location) -> Result<Registry, RegistryError> {
        Registry::open(dir, Database::open(dir, location)?)
    }

    #[test]
    fn activation_history_survives_reopening_and_rolls_back_in_order() {
        for location in [Location::Sqlite, Location::Json] {
            let dir = tempfile::tempdir().unwrap();
            let r = open(dir.path(), &location).unwrap();
            assert_eq!(r.active(), Active::default());
            assert!(matches!(r.get(""), Err(RegistryError::NoActive)));
            let ids: Vec<String> = (1..=3)
                .map(|s| r.add(&fixture::dense(s)).unwrap().id.clone())
                .collect();
            // Adding the same model again is a no-op.
            assert_eq!(r.add(&fixture::dense(1)).unwrap().id, ids[0]);
            assert_eq!(r.list().unwrap().len(), 3);
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
            drop(r);

            let r = open(dir.path(), &location).unwrap();
            assert_eq!(
                (r.active().id, r.active().generation),
                (Some(ids[2].clone()), 3),
                "{location}"
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
    }

    #[tokio::test]
    async fn two_registries_on_one_database_follow_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path(), &Location::Sqlite).unwrap();
        let b = open(dir.path(), &Location::Sqlite).unwrap();
        let one = a.add(&fixture::dense(1)).unwrap().id.clone();
        let two = a.add(&fixture::dense(2)).unwrap().id.clone();
        a.activate(&one).unwrap();
        // b learns of the activation, and of a model it has never loaded, at its next sync.
        assert_eq!(b.active().generation, 0);
        let mut watch = b.subscribe();
        assert!(b.sync().await.unwrap());
        assert!(!b.sync().await.unwrap());
        assert_eq!(watch.borrow_and_update().id.as_deref(), Some(one.as_str()));
        // b activates from a's stale view: the swap reads the database, not its memory.
        b.activate(&two).unwrap();
        a.activate(&two).unwrap();
        assert_eq!(a.active().generation, 2, "a saw b's activation");
        assert_eq!(a.rollback().unwrap().id.as_deref(), Some(one.as_str()));
        assert!(b.sync().await.unwrap());
        assert_eq!((b.active().id, b.active().generation), (Some(one), 3));
        assert_eq!(b.list().unwrap().len(), 2);
    }

    #[test]
    fn corrupt_bundles_are_caught_at_open_and_when_served() {
        let dir = tempfile::tempdir().unwrap();
        let r = open(dir.path(), &Location::Sqlite).unwrap();
        let a = r.add(&fixture::dense(1)).unwrap().id.clone();
        let b = r.add(&fixture::dense(2)).unwrap().id.clone();
        r.activate(&a).unwrap();
        drop(r);
        let flip = |id: &str| {
            let path = dir.path().join(MODELS).join(format!("{id}.{EXT}"));
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            std::fs::write(path, bytes).unwrap();
        };
        let r = open(dir.path(), &Location::Sqlite).unwrap();
        // Damaged after loading: serving it is refused, not passed on to devices.
        flip(&a);
        assert!(matches!(r.bundle(&a), Err(RegistryError::Corrupt { .. })));
        drop(r);
        // An unreferenced damaged bundle is skipped at open; a referenced one stops it.
        flip(&b);
        flip(&a);
        let reopened = open(dir.path(), &Location::Sqlite).unwrap();
        assert_eq!(reopened.list().unwrap().len(), 1);
        drop(reopened);
        flip(&a);
        let err = open(dir.path(), &Location::Sqlite).unwrap_err();
        assert!(err.to_string().contains("missing or corrupt"), "{err}");
    }
}

//! The store as it was before the database: `registry.json`, `fleet.json` and `jobs/<id>.json`,
//! each rewritten whole and atomically on every change. One replica only.
//!
//! It stays for two reasons: an existing store of this kind is read once and imported into
//! the database on first start ([`super::Database::open`]), and `--database json` keeps it
//! selectable so the fleet benchmark can measure it beside the database in the same run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dekm_edge::fs::write_atomic;
use serde::{Deserialize, Serialize};

use super::{Backend, DbError, JobRow, Jobs, RegistryRow, ReportRow, Snapshot};
use crate::fleet::DeviceReport;
use crate::jobs::JobRecord;

pub(crate) const REGISTRY: &str = "registry.json";
pub(crate) const FLEET: &str = "fleet.json";
pub(crate) const JOBS: &str = "jobs";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct State {
    active: Option<String>,
    /// Models active before, oldest first.
    history: Vec<String>,
    generation: u64,
}

/// `(model id, device id)` → last report.
type Table = BTreeMap<String, BTreeMap<String, DeviceReport>>;

/// A job file: the record, with the coordination fields a database row has (absent in files
/// written before the database, hence the defaults).
#[derive(Debug, Serialize, Deserialize)]
struct JobFile {
    #[serde(flatten)]
    record: JobRecord,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    heartbeat_unix: u64,
    #[serde(default)]
    cancel: bool,
}

/// The JSON files of one store directory.
pub(crate) struct JsonStore {
    dir: PathBuf,
    fleet: Table,
}

fn storage(path: &Path, reason: impl ToString) -> DbError {
    DbError::Open {
        what: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, DbError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| storage(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(storage(path, e)),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), DbError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| storage(path, e))?;
    write_atomic(path, &bytes).map_err(|e| storage(path, e))
}

impl JsonStore {
    /// Opens the files of store `dir` (any that do not exist are empty).
    pub(crate) fn open(dir: &Path) -> Result<Self, DbError> {
        let jobs = dir.join(JOBS);
        std::fs::create_dir_all(&jobs).map_err(|e| storage(&jobs, e))?;
        Ok(Self {
            fleet: read_json(&dir.join(FLEET))?,
            dir: dir.to_path_buf(),
        })
    }

    /// Whether `dir` holds any file of this kind.
    pub(crate) fn exists(dir: &Path) -> bool {
        dir.join(REGISTRY).exists()
            || dir.join(FLEET).exists()
            || std::fs::read_dir(dir.join(JOBS)).is_ok_and(|mut d| d.next().is_some())
    }

    /// Everything in the files, for the import into a database.
    pub(crate) fn snapshot(&mut self) -> Result<Snapshot, DbError> {
        Ok(Snapshot {
            registry: self.registry()?,
            jobs: self.jobs(Jobs::All)?,
            reports: self.reports(None)?,
        })
    }

    /// Renames the files so that the database is the only record from now on (kept on disk
    /// for a downgrade or an audit).
    pub(crate) fn retire(&self) -> Result<(), DbError> {
        for name in [REGISTRY, FLEET, JOBS] {
            let from = self.dir.join(name);
            if from.exists() {
                let to = self.dir.join(format!("{name}.imported"));
                std::fs::rename(&from, &to).map_err(|e| storage(&from, e))?;
            }
        }
        Ok(())
    }

    fn job_path(&self, id: &str) -> PathBuf {
        self.dir.join(JOBS).join(format!("{id}.json"))
    }
}

impl Backend for JsonStore {
    fn registry(&mut self) -> Result<RegistryRow, DbError> {
        let s: State = read_json(&self.dir.join(REGISTRY))?;
        Ok(RegistryRow {
            active: s.active,
            history: s.history,
            generation: s.generation,
        })
    }

    fn swap_registry(&mut self, expected: u64, next: &RegistryRow) -> Result<bool, DbError> {
        if self.registry()?.generation != expected {
            return Ok(false);
        }
        let state = State {
            active: next.active.clone(),
            history: next.history.clone(),
            generation: next.generation,
        };
        write_json(&self.dir.join(REGISTRY), &state)?;
        Ok(true)
    }

    fn put_jobs(&mut self, jobs: &[JobRow]) -> Result<(), DbError> {
        for j in jobs {
            let path = self.job_path(&j.record.id);
            let cancel = j.cancel || read_json::<Option<JobFile>>(&path)?.is_some_and(|f| f.cancel);
            let file = JobFile {
                record: j.record.clone(),
                owner: j.owner.clone(),
                heartbeat_unix: j.heartbeat_unix,
                cancel,
            };
            write_json(&path, &file)?;
        }
        Ok(())
    }

    fn jobs(&mut self, which: Jobs<'_>) -> Result<Vec<JobRow>, DbError> {
        let paths: Vec<PathBuf> = match which {
            Jobs::One(id) => vec![self.job_path(id)],
            Jobs::Unfinished | Jobs::All => {
                let dir = self.dir.join(JOBS);
                std::fs::read_dir(&dir)
                    .map_err(|e| storage(&dir, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
                    .collect()
            }
        };
        let mut out = Vec::new();
        for path in paths {
            if let Some(f) = read_json::<Option<JobFile>>(&path)?
                && !(matches!(which, Jobs::Unfinished) && f.record.state.is_terminal())
            {
                out.push(JobRow {
                    record: f.record,
                    owner: f.owner,
                    heartbeat_unix: f.heartbeat_unix,
                    cancel: f.cancel,
                });
            }
        }
        Ok(out)
    }

    fn request_cancel(&mut self, id: &str) -> Result<bool, DbError> {
        let path = self.job_path(id);
        match read_json::<Option<JobFile>>(&path)? {
            Some(mut f) if !f.record.state.is_terminal() => {
                f.cancel = true;
                write_json(&path, &f)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn heartbeat(&mut self, owner: &str, now: u64) -> Result<Vec<String>, DbError> {
        let mut cancelled = Vec::new();
        for mut j in self.jobs(Jobs::Unfinished)? {
            if j.owner == owner && !j.record.state.is_terminal() {
                j.heartbeat_unix = now;
                if j.cancel {
                    cancelled.push(j.record.id.clone());
                }
                self.put_jobs(&[j])?;
            }
        }
        Ok(cancelled)
    }

    fn put_reports(&mut self, reports: &[ReportRow]) -> Result<(), DbError> {
        // As this store always did: the whole table rewritten for every report.
        for r in reports {
            let mut next = self.fleet.clone();
            next.entry(r.model.clone())
                .or_default()
                .insert(r.device.clone(), r.report.clone());
            let path = self.dir.join(FLEET);
            let bytes = serde_json::to_vec(&next).map_err(|e| storage(&path, e))?;
            write_atomic(&path, &bytes).map_err(|e| storage(&path, e))?;
            self.fleet = next;
        }
        Ok(())
    }

    fn reports(&mut self, model: Option<&str>) -> Result<Vec<ReportRow>, DbError> {
        Ok(self
            .fleet
            .iter()
            .filter(|(m, _)| model.is_none_or(|want| want == m.as_str()))
            .flat_map(|(m, devices)| {
                devices.iter().map(move |(d, r)| ReportRow {
                    model: m.clone(),
                    device: d.clone(),
                    report: r.clone(),
                })
            })
            .collect())
    }

    fn engine(&self) -> &'static str {
        "json"
    }
}

//! Where the store's metadata lives: the registry's active model, history and generation, the
//! job records and the fleet's reports. Bundles are not here: they stay content-addressed files
//! under `models/` in the store directory (a shared volume for several replicas), where a
//! device's download is a file read and a model's name is its own checksum.
//!
//! Three engines behind one interface (`Backend`):
//!
//! | `--database` | where | replicas |
//! |---|---|---|
//! | `sqlite` (default) | `dekm.sqlite` in the store, write-ahead log | one host |
//! | `postgres://user:pw@host/db` | a PostgreSQL server | any number |
//! | `json` | `registry.json`, `fleet.json`, `jobs/` (the format before the database) | one |
//!
//! A store that still has the JSON files is imported into SQLite or PostgreSQL on first start,
//! in one transaction, and its files are renamed `*.imported`.
//!
//! All access goes through one thread per server that owns the connection ([`Database`]):
//! callers send it work and wait for the answer, so the synchronous engines never block the
//! async runtime's workers from inside, and fleet reports that arrive together are written in
//! one transaction (group commit): a device is answered only once its report is committed.

mod json;
mod postgres;
mod sql;
mod sqlite;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;

use crate::fleet::DeviceReport;
use crate::jobs::JobRecord;

pub(crate) use json::JsonStore;
pub use postgres::create_database as create_postgres_database;

/// The SQLite file in a store directory.
pub const SQLITE_FILE: &str = "dekm.sqlite";
/// Most reports written in one transaction.
const MAX_BATCH: usize = 1024;

/// Which database holds the store's metadata.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Location {
    /// `dekm.sqlite` in the store directory.
    #[default]
    Sqlite,
    /// A PostgreSQL server, shared by replicas.
    Postgres(String),
    /// The JSON files of stores made before the database (one replica).
    Json,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite => f.write_str("sqlite"),
            Self::Postgres(url) => f.write_str(&postgres::redact(url)),
            Self::Json => f.write_str("json"),
        }
    }
}

impl FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(Self::Sqlite),
            "json" => Ok(Self::Json),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(url.to_string()))
            }
            other => Err(format!(
                "database {other:?} is none of sqlite, json, postgres://USER:PASSWORD@HOST:PORT/DB"
            )),
        }
    }
}

/// Why the database could not be opened or answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The database cannot be opened.
    #[error("cannot open the database {what}: {reason}")]
    Open {
        /// The file or (password-free) URL.
        what: String,
        /// Why.
        reason: String,
    },
    /// The engine failed a statement.
    #[error("database: {0}")]
    Engine(String),
    /// A stored value is not what this build wrote.
    #[error("database holds an invalid value: {0}")]
    Corrupt(String),
    /// A value cannot be stored.
    #[error("{0}")]
    Refused(String),
    /// The database thread is gone (it panicked or the server is stopping).
    #[error("the database thread has stopped")]
    Stopped,
}

impl DbError {
    fn corrupt(reason: String) -> Self {
        Self::Corrupt(reason)
    }
}

/// The registry's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RegistryRow {
    /// Active model id.
    pub(crate) active: Option<String>,
    /// Models active before, oldest first.
    pub(crate) history: Vec<String>,
    /// Activation counter: every change of the active model adds one.
    pub(crate) generation: u64,
}

/// One job, and who runs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobRow {
    /// What clients see.
    pub(crate) record: JobRecord,
    /// The replica that runs it.
    pub(crate) owner: String,
    /// When its owner last said it was alive.
    pub(crate) heartbeat_unix: u64,
    /// CancelJob reached some replica; the owner stops the job.
    pub(crate) cancel: bool,
}

/// One device's last report for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReportRow {
    /// Model id.
    pub(crate) model: String,
    /// Device id.
    pub(crate) device: String,
    /// The counters.
    pub(crate) report: DeviceReport,
}

/// Everything a store holds, for an import.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    registry: RegistryRow,
    jobs: Vec<JobRow>,
    reports: Vec<ReportRow>,
}

/// Which job rows a [`Backend::jobs`] call reads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Jobs<'a> {
    /// The job with this id, if any.
    One(&'a str),
    /// The jobs not yet finished (what the periodic orphan check reads, so its cost does not
    /// grow with the history).
    Unfinished,
    /// Every job.
    All,
}

/// What every engine stores.
pub(crate) trait Backend: Send {
    /// The registry's state.
    fn registry(&mut self) -> Result<RegistryRow, DbError>;
    /// Replaces the registry's state if its generation is still `expected` (false when another
    /// replica changed it first).
    fn swap_registry(&mut self, expected: u64, next: &RegistryRow) -> Result<bool, DbError>;
    /// Writes job rows (a cancel request already recorded stays).
    fn put_jobs(&mut self, jobs: &[JobRow]) -> Result<(), DbError>;
    /// The jobs `which` selects.
    fn jobs(&mut self, which: Jobs<'_>) -> Result<Vec<JobRow>, DbError>;
    /// Asks the owner of a job that has not finished to cancel it; false when there is none.
    fn request_cancel(&mut self, id: &str) -> Result<bool, DbError>;
    /// Marks `owner`'s unfinished jobs alive at `now`; returns those asked to cancel.
    fn heartbeat(&mut self, owner: &str, now: u64) -> Result<Vec<String>, DbError>;
    /// Replaces each device's report for its model, all in one transaction.
    fn put_reports(&mut self, reports: &[ReportRow]) -> Result<(), DbError>;
    /// Every report, for one model or all, in (model, device) order.
    fn reports(&mut self, model: Option<&str>) -> Result<Vec<ReportRow>, DbError>;
    /// `sqlite`, `postgres` or `json`.
    fn engine(&self) -> &'static str;
}

type Call = Box<dyn FnOnce(&mut dyn Backend) + Send>;

enum Op {
    Call(Call),
    Report(ReportRow, tokio::sync::oneshot::Sender<Result<(), DbError>>),
}

/// The handle to the database thread of one server.
#[derive(Debug, Clone)]
pub struct Database {
    tx: mpsc::Sender<Op>,
    engine: &'static str,
}

impl Database {
    /// Connects to `location` for store directory `store` on a new thread, brings the schema to
    /// this build's version and imports the store's JSON files if it still has them.
    pub fn open(store: &Path, location: &Location) -> Result<Self, DbError> {
        let (tx, rx) = mpsc::channel::<Op>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let store = store.to_path_buf();
        let location = location.clone();
        std::thread::Builder::new()
            .name("dekm-database".into())
            .spawn(move || match connect(&store, &location) {
                Ok(mut backend) => {
                    let _ = ready_tx.send(Ok(backend.engine()));
                    serve(backend.as_mut(), &rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| DbError::Engine(format!("cannot start the database thread: {e}")))?;
        let engine = ready_rx.recv().map_err(|_| DbError::Stopped)??;
        Ok(Self { tx, engine })
    }

    /// `sqlite`, `postgres` or `json`.
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// Runs `f` on the database thread and waits for it (blocking this thread).
    pub(crate) fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<R, DbError> + Send + 'static,
    ) -> Result<R, DbError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Box::new(move |b| {
            let _ = reply.send(f(b));
        }))?;
        answer.recv().map_err(|_| DbError::Stopped)?
    }

    /// Runs `f` on the database thread and awaits it (the async runtime's thread is free).
    pub(crate) async fn call_async<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<R, DbError> + Send + 'static,
    ) -> Result<R, DbError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Box::new(move |b| {
            let _ = reply.send(f(b));
        }))?;
        answer.await.map_err(|_| DbError::Stopped)?
    }

    fn send(&self, call: Call) -> Result<(), DbError> {
        self.tx.send(Op::Call(call)).map_err(|_| DbError::Stopped)
    }

    /// Stores a report; resolves once it is committed (with the reports that arrived with it).
    pub(crate) async fn report(&self, row: ReportRow) -> Result<(), DbError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(Op::Report(row, reply))
            .map_err(|_| DbError::Stopped)?;
        answer.await.map_err(|_| DbError::Stopped)?
    }
}

fn connect(store: &Path, location: &Location) -> Result<Box<dyn Backend>, DbError> {
    Ok(match location {
        Location::Json => Box::new(JsonStore::open(store)?),
        Location::Sqlite => {
            let path: PathBuf = store.join(SQLITE_FILE);
            Box::new(prepare(sqlite::SqliteConn::open(&path)?, store)?)
        }
        Location::Postgres(url) => Box::new(prepare(postgres::PgConn::connect(url)?, store)?),
    })
}

/// Migrates the schema and imports the store's JSON files, if any.
fn prepare<C: sql::Conn + 'static>(conn: C, store: &Path) -> Result<sql::Sql<C>, DbError> {
    let mut db = sql::Sql(conn);
    sql::migrate(&mut db.0)?;
    if JsonStore::exists(store) {
        let mut old = JsonStore::open(store)?;
        if db.is_fresh()? {
            let all = old.snapshot()?;
            db.import(&all)?;
            tracing::info!(
                store = %store.display(),
                generation = all.registry.generation,
                jobs = all.jobs.len(),
                reports = all.reports.len(),
                engine = C::NAME,
                "imported the store's JSON files into the database"
            );
        } else {
            tracing::warn!(
                store = %store.display(),
                "the database already holds state; the store's JSON files are set aside unread"
            );
        }
        old.retire()?;
    }
    Ok(db)
}

/// The database thread: runs calls in order; reports waiting together share one commit.
fn serve(backend: &mut dyn Backend, rx: &mpsc::Receiver<Op>) {
    let mut pending = None;
    loop {
        let op = match pending.take() {
            Some(op) => op,
            None => match rx.recv() {
                Ok(op) => op,
                Err(_) => return, // every handle dropped
            },
        };
        match op {
            Op::Call(f) => f(backend),
            Op::Report(row, reply) => {
                let (mut rows, mut replies) = (vec![row], vec![reply]);
                while rows.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Op::Report(row, reply)) => {
                            rows.push(row);
                            replies.push(reply);
                        }
                        Ok(call) => {
                            pending = Some(call);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let result = backend.put_reports(&rows);
                for r in replies {
                    let _ = r.send(result.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

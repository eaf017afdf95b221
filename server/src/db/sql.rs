//! The store's tables in SQL, written once for both engines: SQLite in the store directory and
//! PostgreSQL shared by replicas. Each engine only runs statements ([`Conn`]); the queries,
//! the schema and its migrations live here.
//!
//! Statements use PostgreSQL's `$1` placeholders; the SQLite connection rewrites them to
//! SQLite's `?1`, which means the same. Counters are `BIGINT` (SQLite's `INTEGER`): unsigned
//! values above `i64::MAX` are refused before they are written rather than wrapped.

use super::{Backend, DbError, JobRow, Jobs, RegistryRow, ReportRow, Snapshot};
use crate::fleet::DeviceReport;
use crate::jobs::JobRecord;

/// One SQL value, as both engines bind and return them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// `BIGINT`.
    Int(i64),
    /// `TEXT`.
    Text(String),
    /// `NULL` (only ever in a `TEXT` column here).
    Null,
}

impl Value {
    fn int(&self, what: &str) -> Result<i64, DbError> {
        match self {
            Self::Int(v) => Ok(*v),
            other => Err(DbError::corrupt(format!(
                "{what} is {other:?}, not an integer"
            ))),
        }
    }

    fn text(self, what: &str) -> Result<String, DbError> {
        match self {
            Self::Text(v) => Ok(v),
            other => Err(DbError::corrupt(format!("{what} is {other:?}, not text"))),
        }
    }

    fn opt_text(self, what: &str) -> Result<Option<String>, DbError> {
        match self {
            Self::Null => Ok(None),
            v => v.text(what).map(Some),
        }
    }
}

/// What an engine offers: statements with parameters, and several in one transaction.
pub(crate) trait Conn: Send {
    /// `sqlite` or `postgres`, for logs.
    const NAME: &'static str;
    /// Runs one statement; returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    /// Runs one query; every row as its values.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError>;
    /// Runs every statement in one transaction: all of them land or none.
    fn batch(&mut self, statements: &[(&str, Vec<Value>)]) -> Result<(), DbError>;
}

/// The schema, one entry per version: a database at version `v` runs entries `v..`.
const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE registry (
        one BIGINT PRIMARY KEY CHECK (one = 1),
        active TEXT,
        history TEXT NOT NULL,
        generation BIGINT NOT NULL)",
    "INSERT INTO registry (one, active, history, generation) VALUES (1, NULL, '[]', 0)",
    "CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        created_unix BIGINT NOT NULL,
        terminal BIGINT NOT NULL,
        owner TEXT NOT NULL,
        heartbeat_unix BIGINT NOT NULL,
        cancel BIGINT NOT NULL,
        record TEXT NOT NULL)",
    "CREATE TABLE reports (
        model TEXT NOT NULL,
        device TEXT NOT NULL,
        counts TEXT NOT NULL,
        outliers TEXT NOT NULL,
        rejected BIGINT NOT NULL,
        reported_unix BIGINT NOT NULL,
        PRIMARY KEY (model, device))",
]];

/// Brings the schema to the newest version. Runs at every start, on every replica: the
/// version row is updated in the same transaction as the tables, and a replica that loses the
/// race to create them (a unique-key error) finds the schema current when it reads again.
pub(crate) fn migrate<C: Conn>(conn: &mut C) -> Result<(), DbError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
        &[],
    )?;
    let current = |conn: &mut C| -> Result<usize, DbError> {
        let rows = conn.query("SELECT version FROM schema_version", &[])?;
        match rows.as_slice() {
            [] => Ok(0),
            [row] => usize::try_from(row[0].int("schema version")?)
                .map_err(|_| DbError::corrupt("negative schema version".into())),
            _ => Err(DbError::corrupt(format!(
                "schema_version has {} rows",
                rows.len()
            ))),
        }
    };
    let from = current(conn)?;
    if from > MIGRATIONS.len() {
        return Err(DbError::corrupt(format!(
            "the database has schema version {from}; this build knows versions up to {}",
            MIGRATIONS.len()
        )));
    }
    if from == MIGRATIONS.len() {
        return Ok(());
    }
    let mut statements: Vec<(&str, Vec<Value>)> = MIGRATIONS[from..]
        .iter()
        .flat_map(|m| m.iter().map(|s| (*s, Vec::new())))
        .collect();
    let to = Value::Int(MIGRATIONS.len() as i64);
    if from == 0 {
        statements.push(("INSERT INTO schema_version (version) VALUES ($1)", vec![to]));
    } else {
        statements.push(("UPDATE schema_version SET version = $1", vec![to]));
    }
    match conn.batch(&statements) {
        Ok(()) => Ok(()),
        // Another replica migrated at the same moment.
        Err(e) if current(conn)? == MIGRATIONS.len() => {
            tracing::debug!(error = %e, "schema migrated by another replica");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn int(v: u64, what: &str) -> Result<Value, DbError> {
    i64::try_from(v)
        .map(Value::Int)
        .map_err(|_| DbError::Refused(format!("{what} = {v} is beyond the store's range")))
}

fn uint(v: &Value, what: &str) -> Result<u64, DbError> {
    u64::try_from(v.int(what)?).map_err(|_| DbError::corrupt(format!("{what} is negative")))
}

fn json<T: serde::Serialize>(v: &T) -> Result<Value, DbError> {
    serde_json::to_string(v)
        .map(Value::Text)
        .map_err(|e| DbError::corrupt(e.to_string()))
}

fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, DbError> {
    serde_json::from_str(&v.text(what)?).map_err(|e| DbError::corrupt(format!("{what}: {e}")))
}

const UPSERT_REPORT: &str =
    "INSERT INTO reports (model, device, counts, outliers, rejected, reported_unix)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (model, device) DO UPDATE SET counts = excluded.counts,
         outliers = excluded.outliers, rejected = excluded.rejected,
         reported_unix = excluded.reported_unix";

const UPSERT_JOB: &str =
    "INSERT INTO jobs (id, created_unix, terminal, owner, heartbeat_unix, cancel, record)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (id) DO UPDATE SET terminal = excluded.terminal, owner = excluded.owner,
         heartbeat_unix = excluded.heartbeat_unix, record = excluded.record,
         cancel = CASE WHEN jobs.cancel = 1 THEN 1 ELSE excluded.cancel END";

fn report_params(r: &ReportRow) -> Result<Vec<Value>, DbError> {
    Ok(vec![
        Value::Text(r.model.clone()),
        Value::Text(r.device.clone()),
        json(&r.report.counts)?,
        json(&r.report.outliers)?,
        int(r.report.rejected, "rejected")?,
        int(r.report.reported_unix, "reported_unix")?,
    ])
}

fn job_params(j: &JobRow) -> Result<Vec<Value>, DbError> {
    Ok(vec![
        Value::Text(j.record.id.clone()),
        int(j.record.created_unix, "created_unix")?,
        Value::Int(i64::from(j.record.state.is_terminal())),
        Value::Text(j.owner.clone()),
        int(j.heartbeat_unix, "heartbeat_unix")?,
        Value::Int(i64::from(j.cancel)),
        json(&j.record)?,
    ])
}

/// The store on an SQL engine.
pub(crate) struct Sql<C: Conn>(pub(crate) C);

impl<C: Conn> Backend for Sql<C> {
    fn registry(&mut self) -> Result<RegistryRow, DbError> {
        let mut rows = self.0.query(
            "SELECT active, history, generation FROM registry WHERE one = 1",
            &[],
        )?;
        let Some(row) = rows.pop() else {
            return Err(DbError::corrupt("the registry row is missing".into()));
        };
        let [active, history, generation] = <[Value; 3]>::try_from(row)
            .map_err(|r| DbError::corrupt(format!("registry row has {} columns", r.len())))?;
        Ok(RegistryRow {
            generation: uint(&generation, "generation")?,
            active: active.opt_text("active")?,
            history: parse(history, "history")?,
        })
    }

    fn swap_registry(&mut self, expected: u64, next: &RegistryRow) -> Result<bool, DbError> {
        let changed = self.0.execute(
            "UPDATE registry SET active = $1, history = $2, generation = $3
             WHERE one = 1 AND generation = $4",
            &[
                next.active.clone().map_or(Value::Null, Value::Text),
                json(&next.history)?,
                int(next.generation, "generation")?,
                int(expected, "generation")?,
            ],
        )?;
        Ok(changed == 1)
    }

    fn put_jobs(&mut self, jobs: &[JobRow]) -> Result<(), DbError> {
        let statements = jobs
            .iter()
            .map(|j| Ok((UPSERT_JOB, job_params(j)?)))
            .collect::<Result<Vec<_>, DbError>>()?;
        self.0.batch(&statements)
    }

    fn jobs(&mut self, which: Jobs<'_>) -> Result<Vec<JobRow>, DbError> {
        const COLUMNS: &str = "SELECT owner, heartbeat_unix, cancel, record FROM jobs";
        let rows = match which {
            Jobs::One(id) => self.0.query(
                &format!("{COLUMNS} WHERE id = $1"),
                &[Value::Text(id.to_string())],
            )?,
            Jobs::Unfinished => self
                .0
                .query(&format!("{COLUMNS} WHERE terminal = 0"), &[])?,
            Jobs::All => self.0.query(COLUMNS, &[])?,
        };
        rows.into_iter()
            .map(|row| {
                let [owner, heartbeat, cancel, record] = <[Value; 4]>::try_from(row)
                    .map_err(|r| DbError::corrupt(format!("job row has {} columns", r.len())))?;
                Ok(JobRow {
                    owner: owner.text("owner")?,
                    heartbeat_unix: uint(&heartbeat, "heartbeat_unix")?,
                    cancel: cancel.int("cancel")? != 0,
                    record: parse::<JobRecord>(record, "job record")?,
                })
            })
            .collect()
    }

    fn request_cancel(&mut self, id: &str) -> Result<bool, DbError> {
        let changed = self.0.execute(
            "UPDATE jobs SET cancel = 1 WHERE id = $1 AND terminal = 0",
            &[Value::Text(id.to_string())],
        )?;
        Ok(changed == 1)
    }

    fn heartbeat(&mut self, owner: &str, now: u64) -> Result<Vec<String>, DbError> {
        self.0.execute(
            "UPDATE jobs SET heartbeat_unix = $1 WHERE owner = $2 AND terminal = 0",
            &[int(now, "now")?, Value::Text(owner.to_string())],
        )?;
        self.0
            .query(
                "SELECT id FROM jobs WHERE owner = $1 AND terminal = 0 AND cancel = 1",
                &[Value::Text(owner.to_string())],
            )?
            .into_iter()
            .map(|mut r| r.swap_remove(0).text("job id"))
            .collect()
    }

    fn put_reports(&mut self, reports: &[ReportRow]) -> Result<(), DbError> {
        let statements = reports
            .iter()
            .map(|r| Ok((UPSERT_REPORT, report_params(r)?)))
            .collect::<Result<Vec<_>, DbError>>()?;
        self.0.batch(&statements)
    }

    fn reports(&mut self, model: Option<&str>) -> Result<Vec<ReportRow>, DbError> {
        const COLUMNS: &str =
            "SELECT model, device, counts, outliers, rejected, reported_unix FROM reports";
        let rows = match model {
            Some(m) => self.0.query(
                &format!("{COLUMNS} WHERE model = $1 ORDER BY model, device"),
                &[Value::Text(m.to_string())],
            )?,
            None => self
                .0
                .query(&format!("{COLUMNS} ORDER BY model, device"), &[])?,
        };
        rows.into_iter()
            .map(|row| {
                let [model, device, counts, outliers, rejected, reported] =
                    <[Value; 6]>::try_from(row).map_err(|r| {
                        DbError::corrupt(format!("report row has {} columns", r.len()))
                    })?;
                Ok(ReportRow {
                    model: model.text("model")?,
                    device: device.text("device")?,
                    report: DeviceReport {
                        counts: parse(counts, "counts")?,
                        outliers: parse(outliers, "outliers")?,
                        rejected: uint(&rejected, "rejected")?,
                        reported_unix: uint(&reported, "reported_unix")?,
                    },
                })
            })
            .collect()
    }

    fn engine(&self) -> &'static str {
        C::NAME
    }
}

impl<C: Conn> Sql<C> {
    /// Whether nothing was ever recorded (the registry never activated, no job, no report).
    pub(crate) fn is_fresh(&mut self) -> Result<bool, DbError> {
        let registry = self.registry()?;
        let jobs = self.0.query("SELECT COUNT(*) FROM jobs", &[])?;
        let reports = self.0.query("SELECT COUNT(*) FROM reports", &[])?;
        let count = |rows: &[Vec<Value>]| rows.first().map_or(Ok(0), |r| r[0].int("count"));
        Ok(registry.generation == 0 && count(&jobs)? == 0 && count(&reports)? == 0)
    }

    /// Writes everything of an older store in one transaction.
    pub(crate) fn import(&mut self, all: &Snapshot) -> Result<(), DbError> {
        let mut statements = vec![(
            "UPDATE registry SET active = $1, history = $2, generation = $3 WHERE one = 1",
            vec![
                all.registry.active.clone().map_or(Value::Null, Value::Text),
                json(&all.registry.history)?,
                int(all.registry.generation, "generation")?,
            ],
        )];
        for j in &all.jobs {
            statements.push((UPSERT_JOB, job_params(j)?));
        }
        for r in &all.reports {
            statements.push((UPSERT_REPORT, report_params(r)?));
        }
        self.0.batch(&statements)
    }
}

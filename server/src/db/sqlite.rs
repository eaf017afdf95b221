//! SQLite in the store directory: the default, nothing to install or start.
//!
//! Write-ahead logging lets readers in other processes (a second replica on the same host, the
//! `sqlite3` shell) read while a replica writes; `synchronous = NORMAL` makes a commit durable
//! against a crash of the process (kill -9) without an fsync per commit. A power cut may lose
//! the last commits, never consistency.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::Value as Sqlite;

use super::DbError;
use super::sql::{Conn, Value};

/// One connection to `dekm.sqlite`.
pub(crate) struct SqliteConn(rusqlite::Connection);

fn err(e: rusqlite::Error) -> DbError {
    DbError::Engine(format!("sqlite: {e}"))
}

/// Our `$1` placeholders in SQLite's spelling.
fn dialect(sql: &str) -> String {
    sql.replace('$', "?")
}

fn to_sqlite(v: &Value) -> Sqlite {
    match v {
        Value::Int(i) => Sqlite::Integer(*i),
        Value::Text(t) => Sqlite::Text(t.clone()),
        Value::Null => Sqlite::Null,
    }
}

impl SqliteConn {
    /// Opens (or creates) the database file.
    pub(crate) fn open(path: &Path) -> Result<Self, DbError> {
        let open = |e: rusqlite::Error| DbError::Open {
            what: path.display().to_string(),
            reason: e.to_string(),
        };
        let conn = rusqlite::Connection::open(path).map_err(open)?;
        // Another replica on the same file may hold the write lock for a moment.
        conn.busy_timeout(Duration::from_secs(10)).map_err(open)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::Open {
                what: path.display().to_string(),
                reason: format!("cannot use write-ahead logging (journal mode {mode})"),
            });
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(open)?;
        Ok(Self(conn))
    }
}

impl Conn for SqliteConn {
    const NAME: &'static str = "sqlite";

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut stmt = self.0.prepare_cached(&dialect(sql)).map_err(err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter().map(to_sqlite)))
            .map_err(err)?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let mut stmt = self.0.prepare_cached(&dialect(sql)).map_err(err)?;
        let columns = stmt.column_count();
        let rows = stmt
            .query_map(
                rusqlite::params_from_iter(params.iter().map(to_sqlite)),
                |row| {
                    (0..columns)
                        .map(|i| {
                            Ok(match row.get::<_, Sqlite>(i)? {
                                Sqlite::Integer(v) => Value::Int(v),
                                Sqlite::Text(t) => Value::Text(t),
                                Sqlite::Null => Value::Null,
                                other => Value::Text(format!("{other:?}")),
                            })
                        })
                        .collect::<Result<Vec<_>, rusqlite::Error>>()
                },
            )
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn batch(&mut self, statements: &[(&str, Vec<Value>)]) -> Result<(), DbError> {
        // IMMEDIATE: take the write lock up front, so a second writer waits at BEGIN (within
        // the busy timeout) instead of failing at its first write.
        let tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        for (sql, params) in statements {
            let mut stmt = tx.prepare_cached(&dialect(sql)).map_err(err)?;
            stmt.execute(rusqlite::params_from_iter(params.iter().map(to_sqlite)))
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

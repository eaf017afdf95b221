//! PostgreSQL, for several replicas on one database (`--database postgres://...`).
//!
//! The synchronous client runs on the store's own database thread (see [`super::Database`]),
//! never on the async runtime's workers, so its internal runtime never nests in tokio's.

use std::collections::HashMap;

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::DbError;
use super::sql::{Conn, Value};

/// One connection to the database, with its statements prepared once.
pub(crate) struct PgConn {
    client: Client,
    prepared: HashMap<String, Statement>,
}

fn err(e: postgres::Error) -> DbError {
    DbError::Engine(format!("postgres: {e}"))
}

fn params(values: &[Value]) -> Vec<Box<dyn ToSql + Sync>> {
    values
        .iter()
        .map(|v| -> Box<dyn ToSql + Sync> {
            match v {
                Value::Int(i) => Box::new(*i),
                Value::Text(t) => Box::new(t.clone()),
                Value::Null => Box::new(None::<String>),
            }
        })
        .collect()
}

fn refs(boxed: &[Box<dyn ToSql + Sync>]) -> Vec<&(dyn ToSql + Sync)> {
    boxed.iter().map(|b| b.as_ref()).collect()
}

impl PgConn {
    /// Connects to `url` (`postgres://user:password@host:port/db`; TLS is not offered).
    pub(crate) fn connect(url: &str) -> Result<Self, DbError> {
        Client::connect(url, NoTls)
            .map(|client| Self {
                client,
                prepared: HashMap::new(),
            })
            .map_err(|e| DbError::Open {
                what: redact(url),
                reason: e.to_string(),
            })
    }
}

/// Creates an empty database named `{prefix}_{random hex}` on the PostgreSQL server of `url`
/// (whose role may create databases) and returns its URL: what the tests and benchmarks use to
/// give each run a store of its own. The connection is made on a thread of its own, so this
/// may be called from inside an async runtime, which the synchronous client refuses.
pub fn create_database(url: &str, prefix: &str) -> Result<String, DbError> {
    let name = format!("{prefix}_{:016x}", rand::random::<u64>());
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(DbError::Refused(format!(
            "database name {name}: only lowercase letters, digits and _"
        )));
    }
    let (server, create) = (url.to_string(), name.clone());
    std::thread::spawn(move || -> Result<(), DbError> {
        let mut c = PgConn::connect(&server)?;
        c.client
            .batch_execute(&format!("CREATE DATABASE {create}"))
            .map_err(err)
    })
    .join()
    .map_err(|_| DbError::Stopped)??;
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

/// The URL without its password, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn row_values(row: &postgres::Row) -> Result<Vec<Value>, DbError> {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            Ok(if *ty == Type::INT8 {
                row.try_get::<_, Option<i64>>(i)
                    .map_err(err)?
                    .map_or(Value::Null, Value::Int)
            } else if *ty == Type::INT4 {
                row.try_get::<_, Option<i32>>(i)
                    .map_err(err)?
                    .map_or(Value::Null, |v| Value::Int(v.into()))
            } else {
                row.try_get::<_, Option<String>>(i)
                    .map_err(err)?
                    .map_or(Value::Null, Value::Text)
            })
        })
        .collect()
}

impl PgConn {
    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(err)?;
        self.prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

impl Conn for PgConn {
    const NAME: &'static str = "postgres";

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64, DbError> {
        let stmt = self.statement(sql)?;
        let boxed = params(values);
        self.client.execute(&stmt, &refs(&boxed)).map_err(err)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let stmt = self.statement(sql)?;
        let boxed = params(values);
        let rows = self.client.query(&stmt, &refs(&boxed)).map_err(err)?;
        rows.iter().map(row_values).collect()
    }

    fn batch(&mut self, statements: &[(&str, Vec<Value>)]) -> Result<(), DbError> {
        let Self { client, prepared } = self;
        let mut tx = client.transaction().map_err(err)?;
        let mut run = || -> Result<(), postgres::Error> {
            for (sql, values) in statements {
                // Prepared inside the transaction: a migration's statements name tables that
                // exist only once its earlier statements ran.
                let stmt = match prepared.get(*sql) {
                    Some(s) => s.clone(),
                    None => {
                        let s = tx.prepare(sql)?;
                        prepared.insert(sql.to_string(), s.clone());
                        s
                    }
                };
                let boxed = params(values);
                tx.execute(&stmt, &refs(&boxed))?;
            }
            Ok(())
        };
        match run() {
            Ok(()) => tx.commit().map_err(err),
            Err(e) => {
                // Statements prepared against tables the rollback removes are not reusable.
                prepared.clear();
                Err(err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://dekm:s3cret@db:5432/dekm"),
            "postgres://dekm:***@db:5432/dekm"
        );
        assert_eq!(redact("postgres://db/dekm"), "postgres://db/dekm");
        assert_eq!(redact("postgres://dekm@db/x"), "postgres://dekm@db/x");
    }
}

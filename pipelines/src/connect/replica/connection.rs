//! An open replica, and the statements every dialect runs alike: batches of statements in one
//! transaction, text queries, and lifting the statement timeouts for long work.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::open::{connect_postgres, open_sqlite};
use super::url::{Dialect, ReplicaUrl};
use crate::connect::pg_tls;

/// An open replica.
pub struct Replica {
    /// The connection, by dialect.
    pub(super) conn: Conn,
    /// Where it is.
    pub(super) url: ReplicaUrl,
    /// How long a PostgreSQL request may wait for its answer (see [`pg_tls::answer`]).
    pub(super) limit: Duration,
}

/// A replica connection of either dialect.
pub(super) enum Conn {
    Postgres {
        client: tokio_postgres::Client,
        runtime: Arc<tokio::runtime::Runtime>,
    },
    Sqlite(rusqlite::Connection),
}

impl Replica {
    /// Connects (PostgreSQL on `runtime`) or opens the file (SQLite).
    pub fn connect(
        url: &ReplicaUrl,
        runtime: &Arc<tokio::runtime::Runtime>,
    ) -> anyhow::Result<Replica> {
        let conn = match url {
            ReplicaUrl::Postgres(text) => Conn::Postgres {
                client: connect_postgres(text, runtime)?,
                runtime: runtime.clone(),
            },
            // Concurrent readers while sync writes; a writer waits rather than fails.
            ReplicaUrl::Sqlite(path) => Conn::Sqlite(open_sqlite(path, Duration::from_secs(10))?),
        };
        info!(message = "Replica connected.", replica = %url.redacted());
        Ok(Replica {
            conn,
            url: url.clone(),
            limit: pg_tls::ANSWER_TIMEOUT,
        })
    }

    /// Lifts the statement timeouts, server and client side, for work that may rightly take
    /// long, such as building an index over a large table in a migration (`false`), or puts
    /// them back (`true`).
    pub fn bounded(&mut self, bounded: bool) -> anyhow::Result<()> {
        let (Conn::Postgres { client, runtime }, ReplicaUrl::Postgres(text)) =
            (&mut self.conn, &self.url)
        else {
            return Ok(());
        };
        let sql = match (bounded, pg_tls::session_setup(text)?) {
            (false, _) => "SET statement_timeout = 0".to_owned(),
            (true, Some(sql)) => sql,
            // The connection string's own timeout is the session's default.
            (true, None) => "RESET statement_timeout".to_owned(),
        };
        runtime.block_on(pg_tls::answer(
            pg_tls::ANSWER_TIMEOUT,
            client.batch_execute(&sql),
        ))?;
        self.limit = if bounded {
            pg_tls::ANSWER_TIMEOUT
        } else {
            Duration::MAX
        };
        Ok(())
    }

    /// The SQL the replica speaks.
    pub fn dialect(&self) -> Dialect {
        match self.conn {
            Conn::Postgres { .. } => Dialect::Postgres,
            Conn::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// The replica's URL, password hidden.
    pub fn name(&self) -> String {
        self.url.redacted()
    }

    /// Runs statements that return nothing, in one transaction.
    pub fn execute_batch(&mut self, sql: &str) -> anyhow::Result<()> {
        match &mut self.conn {
            Conn::Postgres { client, runtime } => {
                runtime.block_on(pg_tls::answer(self.limit, async {
                    let tx = client.transaction().await?;
                    tx.batch_execute(sql).await?;
                    tx.commit().await
                }))?;
            }
            Conn::Sqlite(conn) => {
                let tx = conn.transaction()?;
                tx.execute_batch(sql)?;
                tx.commit()?;
            }
        }
        Ok(())
    }

    /// Runs a query whose columns are all text (or null), with text parameters.
    pub fn query_text(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        match &mut self.conn {
            Conn::Postgres { client, runtime } => {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                let rows =
                    runtime.block_on(pg_tls::answer(self.limit, client.query(sql, &params)))?;
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| row.try_get::<_, Option<String>>(i).map_err(Into::into))
                            .collect()
                    })
                    .collect()
            }
            Conn::Sqlite(conn) => {
                let mut statement = conn.prepare(sql)?;
                let width = statement.column_count();
                let rows =
                    statement.query_map(rusqlite::params_from_iter(params.iter()), |row| {
                        (0..width)
                            .map(|i| {
                                Ok(match row.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => None,
                                    rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                                    rusqlite::types::ValueRef::Real(x) => Some(x.to_string()),
                                    rusqlite::types::ValueRef::Text(t)
                                    | rusqlite::types::ValueRef::Blob(t) => {
                                        Some(String::from_utf8_lossy(t).into_owned())
                                    }
                                })
                            })
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            }
        }
    }
}

//! SQL replicas: PostgreSQL (and CockroachDB, which speaks its protocol) through
//! `tokio-postgres`, and SQLite files through `rusqlite`, the embedded default.
//!
//! Rows travel as JSON objects, keys in column order-independent (sorted) form, so that the
//! same row reads the same from either kind of replica and can be written back by column
//! name: PostgreSQL reads them with `row_to_json` and writes them with
//! `json_populate_recordset` (one statement per batch), SQLite binds them to a prepared
//! `INSERT … ON CONFLICT … DO UPDATE`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Map, Value};
use tracing::info;

/// Where a replica is: `postgres://…` / `postgresql://…` (also CockroachDB) or
/// `sqlite://PATH`. `Debug` shows it with its password hidden.
#[derive(Clone, PartialEq, Eq)]
pub enum ReplicaUrl {
    /// A PostgreSQL connection string.
    Postgres(String),
    /// A SQLite database file, created if missing.
    Sqlite(PathBuf),
}

impl ReplicaUrl {
    /// Parses a replica URL.
    pub fn parse(url: &str) -> anyhow::Result<ReplicaUrl> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            crate::connect::pg_tls::check(url).with_context(|| {
                format!(
                    "{} is not a PostgreSQL URL vigil can use",
                    crate::runtime::secrets::redact(url)
                )
            })?;
            return Ok(ReplicaUrl::Postgres(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            anyhow::ensure!(!path.is_empty(), "{url} names no file: use sqlite://PATH");
            return Ok(ReplicaUrl::Sqlite(PathBuf::from(path)));
        }
        // The refused text is shown redacted: a mistyped scheme still carries its password.
        anyhow::bail!(
            "{} is not a replica URL: use postgres://USER@HOST:PORT/DB (PostgreSQL or \
             CockroachDB) or sqlite://PATH",
            crate::runtime::secrets::redact(url)
        )
    }

    /// The URL with any password hidden, for logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            ReplicaUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            ReplicaUrl::Postgres(url) => crate::runtime::secrets::redact(url),
        }
    }
}

impl std::fmt::Debug for ReplicaUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaUrl::Postgres(_) => f.debug_tuple("Postgres").field(&self.redacted()).finish(),
            ReplicaUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

/// Which SQL a replica speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL or CockroachDB.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// A table's columns and primary key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// The name as given (`orders`, `public.orders`).
    pub name: String,
    /// Every column, in table order, with its declared type.
    pub columns: Vec<(String, String)>,
    /// The primary key's columns, in key order.
    pub key: Vec<String>,
    /// With (`updated_at`, `origin`) columns: an upsert leaves a row alone that is newer than
    /// the one written, so a write that lands between reading and applying is not lost.
    pub newer_wins: Option<(String, String)>,
}

impl TableInfo {
    /// The table with upserts that never overwrite a newer row (by `updated_at`, then
    /// `origin`), when it has both columns.
    pub fn newer_wins(mut self, updated_at: &str, origin: &str) -> TableInfo {
        if self.has(updated_at) && self.has(origin) {
            self.newer_wins = Some((updated_at.to_owned(), origin.to_owned()));
        }
        self
    }

    /// Whether the table has the column.
    pub fn has(&self, column: &str) -> bool {
        self.columns.iter().any(|(c, _)| c == column)
    }
}

/// An open replica.
pub struct Replica {
    conn: Conn,
    url: ReplicaUrl,
    /// How long a PostgreSQL request may wait for its answer (see [`crate::connect::pg_tls::answer`]).
    limit: std::time::Duration,
}

enum Conn {
    Postgres {
        client: tokio_postgres::Client,
        runtime: Arc<tokio::runtime::Runtime>,
    },
    Sqlite(rusqlite::Connection),
}

/// `"name"`, quoted for SQL, with a schema prefix quoted apart (`"public"."orders"`).
pub fn quote(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// `"name"`, one identifier quoted for SQL.
pub fn quote_column(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Replica {
    /// Connects (PostgreSQL on `runtime`) or opens the file (SQLite).
    pub fn connect(
        url: &ReplicaUrl,
        runtime: &Arc<tokio::runtime::Runtime>,
    ) -> anyhow::Result<Replica> {
        let conn = match url {
            ReplicaUrl::Postgres(text) => {
                let (client, connection) = runtime
                    .block_on(crate::connect::pg_tls::connect(text))
                    .with_context(|| {
                        format!(
                            "connecting to {}: check that the server runs, the database exists \
                             and the user may log in",
                            url.redacted()
                        )
                    })?;
                runtime.spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::warn!(message = "The PostgreSQL connection ended.", %error);
                    }
                });
                if let Some(sql) = crate::connect::pg_tls::session_setup(text)? {
                    runtime
                        .block_on(crate::connect::pg_tls::answer(
                            crate::connect::pg_tls::ANSWER_TIMEOUT,
                            client.batch_execute(&sql),
                        ))
                        .with_context(|| {
                            format!("setting the statement timeout on {}", url.redacted())
                        })?;
                }
                Conn::Postgres {
                    client,
                    runtime: runtime.clone(),
                }
            }
            ReplicaUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                let conn = rusqlite::Connection::open(path)
                    .with_context(|| format!("opening {}", url.redacted()))?;
                // Concurrent readers while sync writes; a writer waits rather than fails.
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                Conn::Sqlite(conn)
            }
        };
        info!(message = "Replica connected.", replica = %url.redacted());
        Ok(Replica {
            conn,
            url: url.clone(),
            limit: crate::connect::pg_tls::ANSWER_TIMEOUT,
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
        let sql = match (bounded, crate::connect::pg_tls::session_setup(text)?) {
            (false, _) => "SET statement_timeout = 0".to_owned(),
            (true, Some(sql)) => sql,
            // The connection string's own timeout is the session's default.
            (true, None) => "RESET statement_timeout".to_owned(),
        };
        runtime.block_on(crate::connect::pg_tls::answer(
            crate::connect::pg_tls::ANSWER_TIMEOUT,
            client.batch_execute(&sql),
        ))?;
        self.limit = if bounded {
            crate::connect::pg_tls::ANSWER_TIMEOUT
        } else {
            std::time::Duration::MAX
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
                runtime.block_on(crate::connect::pg_tls::answer(self.limit, async {
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
                let rows = runtime.block_on(crate::connect::pg_tls::answer(
                    self.limit,
                    client.query(sql, &params),
                ))?;
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

    /// Whether the table exists.
    pub fn table_exists(&mut self, table: &str) -> anyhow::Result<bool> {
        Ok(!self.columns(table)?.is_empty())
    }

    fn columns(&mut self, table: &str) -> anyhow::Result<Vec<(String, String, Option<usize>)>> {
        match self.dialect() {
            Dialect::Postgres => {
                let (schema, name) = table.rsplit_once('.').unwrap_or(("public", table));
                let columns = self.query_text(
                    "SELECT c.column_name::text, c.data_type::text, \
                            (SELECT k.ordinal_position::text \
                               FROM information_schema.table_constraints t \
                               JOIN information_schema.key_column_usage k \
                                 ON k.constraint_name = t.constraint_name \
                                AND k.table_schema = t.table_schema \
                                AND k.table_name = t.table_name \
                              WHERE t.constraint_type = 'PRIMARY KEY' \
                                AND t.table_schema = c.table_schema \
                                AND t.table_name = c.table_name \
                                AND k.column_name = c.column_name) \
                       FROM information_schema.columns c \
                      WHERE c.table_schema = $1 AND c.table_name = $2 \
                      ORDER BY c.ordinal_position",
                    &[schema, name],
                )?;
                Ok(columns
                    .into_iter()
                    .map(|row| {
                        let mut row = row.into_iter();
                        let name = row.next().flatten().unwrap_or_default();
                        let kind = row.next().flatten().unwrap_or_default();
                        let key = row.next().flatten().and_then(|k| k.parse().ok());
                        (name, kind, key)
                    })
                    .collect())
            }
            Dialect::Sqlite => {
                let rows = self.query_text(
                    "SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid",
                    &[table],
                )?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        let mut row = row.into_iter();
                        let name = row.next().flatten().unwrap_or_default();
                        let kind = row.next().flatten().unwrap_or_default();
                        let pk: usize = row
                            .next()
                            .flatten()
                            .and_then(|k| k.parse().ok())
                            .unwrap_or(0);
                        (name, kind, (pk > 0).then_some(pk))
                    })
                    .collect())
            }
        }
    }

    /// The table's columns and primary key; an error saying what to do when it has none.
    pub fn table(&mut self, table: &str) -> anyhow::Result<TableInfo> {
        let columns = self.columns(table)?;
        anyhow::ensure!(
            !columns.is_empty(),
            "table {table} does not exist on {}: create it, or build the replica with --restore",
            self.name()
        );
        let mut key: Vec<(usize, String)> = columns
            .iter()
            .filter_map(|(name, _, k)| k.map(|k| (k, name.clone())))
            .collect();
        key.sort();
        anyhow::ensure!(
            !key.is_empty(),
            "table {table} on {} has no primary key: sync needs one to match rows",
            self.name()
        );
        Ok(TableInfo {
            name: table.to_owned(),
            columns: columns.into_iter().map(|(n, t, _)| (n, t)).collect(),
            key: key.into_iter().map(|(_, n)| n).collect(),
            newer_wins: None,
        })
    }

    /// Every row of the table, as JSON objects.
    pub fn scan(&mut self, table: &TableInfo) -> anyhow::Result<Vec<Map<String, Value>>> {
        match &mut self.conn {
            Conn::Postgres { client, runtime } => {
                let sql = format!("SELECT row_to_json(t)::text FROM {} t", quote(&table.name));
                let rows = runtime
                    .block_on(crate::connect::pg_tls::answer(self.limit, client.query(&sql, &[])))
                    .with_context(|| format!("reading {}", table.name))?;
                json_rows(&rows)
            }
            Conn::Sqlite(conn) => {
                let sql = format!("SELECT * FROM {}", quote(&table.name));
                let mut statement = conn.prepare(&sql)?;
                let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
                let rows = statement.query_map([], |row| {
                    let mut map = Map::new();
                    for (i, name) in names.iter().enumerate() {
                        let value = match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(n) => Value::from(n),
                            rusqlite::types::ValueRef::Real(x) => Value::from(x),
                            rusqlite::types::ValueRef::Text(t) => {
                                Value::from(String::from_utf8_lossy(t).into_owned())
                            }
                            rusqlite::types::ValueRef::Blob(b) => Value::from(hex::encode(b)),
                        };
                        map.insert(name.clone(), value);
                    }
                    Ok(map)
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            }
        }
    }

    /// Rows written after `after` (a row's `updated_at` and key columns; `None` for the
    /// start), in (`updated_at`, key) order, at most `limit` of them: polling by the write
    /// time, with the key as tie-break.
    pub fn poll(
        &mut self,
        table: &TableInfo,
        updated_at: &str,
        after: Option<&Map<String, Value>>,
        limit: usize,
    ) -> anyhow::Result<Vec<Map<String, Value>>> {
        let name = quote(&table.name);
        let order: Vec<String> = std::iter::once(updated_at.to_owned())
            .chain(table.key.iter().cloned())
            .map(|c| quote_column(&c))
            .collect();
        let listed = |prefix: &str| {
            order
                .iter()
                .map(|c| format!("{prefix}{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &mut self.conn {
            Conn::Postgres { client, runtime } => {
                let mark = after.map(|m| Value::Object(m.clone()).to_string());
                let filter = if mark.is_some() {
                    format!(
                        "WHERE ({}) > (SELECT {} FROM json_populate_record(NULL::{name}, $1::text::json) w)",
                        listed("t."),
                        listed("w.")
                    )
                } else {
                    String::new()
                };
                let sql = format!(
                    "SELECT row_to_json(t)::text FROM {name} t {filter} ORDER BY {} LIMIT {limit}",
                    listed("t.")
                );
                let rows = match &mark {
                    Some(mark) => runtime.block_on(crate::connect::pg_tls::answer(
                        self.limit,
                        client.query(&sql, &[mark]),
                    ))?,
                    None => runtime
                        .block_on(crate::connect::pg_tls::answer(self.limit, client.query(&sql, &[])))?,
                };
                json_rows(&rows)
            }
            Conn::Sqlite(_) => {
                // Row values compare in SQLite too (3.15 and later).
                let mut rows = self.scan(table)?;
                let position = |row: &Map<String, Value>| -> Vec<Value> {
                    std::iter::once(updated_at)
                        .chain(table.key.iter().map(String::as_str))
                        .map(|c| row.get(c).cloned().unwrap_or(Value::Null))
                        .collect()
                };
                let compare = |a: &[Value], b: &[Value]| {
                    a.iter()
                        .zip(b)
                        .map(|(x, y)| compare_json(x, y))
                        .find(|o| o.is_ne())
                        .unwrap_or(std::cmp::Ordering::Equal)
                };
                if let Some(mark) = after {
                    let mark = position(mark);
                    rows.retain(|row| compare(&position(row), &mark).is_gt());
                }
                rows.sort_by(|a, b| compare(&position(a), &position(b)));
                rows.truncate(limit);
                Ok(rows)
            }
        }
    }

    /// The key columns of every row, as JSON objects.
    pub fn scan_keys(&mut self, table: &TableInfo) -> anyhow::Result<Vec<Map<String, Value>>> {
        let name = quote(&table.name);
        let keys = table
            .key
            .iter()
            .map(|k| quote_column(k))
            .collect::<Vec<_>>()
            .join(", ");
        match &mut self.conn {
            Conn::Postgres { client, runtime } => {
                let sql = format!("SELECT row_to_json(k)::text FROM (SELECT {keys} FROM {name}) k");
                json_rows(
                    &runtime
                        .block_on(crate::connect::pg_tls::answer(self.limit, client.query(&sql, &[])))?,
                )
            }
            Conn::Sqlite(_) => Ok(self
                .scan(table)?
                .into_iter()
                .map(|row| {
                    row.into_iter()
                        .filter(|(c, _)| table.key.contains(c))
                        .collect()
                })
                .collect()),
        }
    }

    /// The current rows of the given keys (objects of the key columns), as JSON objects; keys
    /// with no row are left out.
    pub fn fetch(
        &mut self,
        table: &TableInfo,
        keys: &[Map<String, Value>],
    ) -> anyhow::Result<Vec<Map<String, Value>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let name = quote(&table.name);
        match &mut self.conn {
            Conn::Postgres { client, runtime } => {
                let matching = table
                    .key
                    .iter()
                    .map(|k| format!("t.{0} = k.{0}", quote_column(k)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let sql = format!(
                    "SELECT row_to_json(t)::text FROM {name} t \
                     JOIN json_populate_recordset(NULL::{name}, $1::text::json) k ON {matching}"
                );
                let keys =
                    Value::Array(keys.iter().cloned().map(Value::Object).collect()).to_string();
                let rows = runtime.block_on(crate::connect::pg_tls::answer(
                    self.limit,
                    client.query(&sql, &[&keys]),
                ))?;
                json_rows(&rows)
            }
            Conn::Sqlite(_) => {
                // SQLite replicas are scanned whole; a key lookup per row is cheap enough.
                let all = self.scan(table)?;
                Ok(all
                    .into_iter()
                    .filter(|row| {
                        keys.iter()
                            .any(|k| table.key.iter().all(|c| row.get(c) == k.get(c)))
                    })
                    .collect())
            }
        }
    }

    /// Writes `upserts` (whole rows as JSON objects) and removes `deletes` (rows given by
    /// their key columns) in one transaction; idempotent, so a batch repeated after a crash
    /// changes nothing more.
    pub fn apply(
        &mut self,
        table: &TableInfo,
        upserts: &[Map<String, Value>],
        deletes: &[Map<String, Value>],
    ) -> anyhow::Result<()> {
        let key_list = table
            .key
            .iter()
            .map(|k| quote_column(k))
            .collect::<Vec<_>>()
            .join(", ");
        let updates: Vec<String> = table
            .columns
            .iter()
            .filter(|(c, _)| !table.key.contains(c))
            .map(|(c, _)| format!("{0} = excluded.{0}", quote_column(c)))
            .collect();
        let name = quote(&table.name);
        // The existing row is `t` in PostgreSQL (an alias) and the table's name in SQLite.
        let existing = match self.conn {
            Conn::Postgres { .. } => "t".to_owned(),
            Conn::Sqlite(_) => name.clone(),
        };
        let only_older = match &table.newer_wins {
            Some((at, origin)) => format!(
                " WHERE ({existing}.{0}, {existing}.{1}) <= (excluded.{0}, excluded.{1})",
                quote_column(at),
                quote_column(origin)
            ),
            None => String::new(),
        };
        let on_conflict = if updates.is_empty() {
            format!("ON CONFLICT ({key_list}) DO NOTHING")
        } else {
            format!(
                "ON CONFLICT ({key_list}) DO UPDATE SET {}{only_older}",
                updates.join(", ")
            )
        };
        match &mut self.conn {
            Conn::Postgres { client, runtime } => runtime.block_on(crate::connect::pg_tls::answer(self.limit, async {
                let tx = client.transaction().await?;
                if !upserts.is_empty() {
                    let rows = Value::Array(upserts.iter().cloned().map(Value::Object).collect()).to_string();
                    let sql = format!(
                        "INSERT INTO {name} AS t SELECT * FROM json_populate_recordset(NULL::{name}, $1::text::json) {on_conflict}"
                    );
                    tx.execute(&sql, &[&rows]).await?;
                }
                if !deletes.is_empty() {
                    let keys = Value::Array(deletes.iter().cloned().map(Value::Object).collect()).to_string();
                    let matching = table
                        .key
                        .iter()
                        .map(|k| format!("t.{0} = d.{0}", quote_column(k)))
                        .collect::<Vec<_>>()
                        .join(" AND ");
                    let sql = format!(
                        "DELETE FROM {name} t USING json_populate_recordset(NULL::{name}, $1::text::json) d WHERE {matching}"
                    );
                    tx.execute(&sql, &[&keys]).await?;
                }
                tx.commit().await
            }))
            .with_context(|| format!("writing {} on {}", table.name, self.url.redacted()))?,
            Conn::Sqlite(conn) => {
                let tx = conn.transaction()?;
                if !upserts.is_empty() {
                    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| c.as_str()).collect();
                    let sql = format!(
                        "INSERT INTO {name} ({}) VALUES ({}) {on_conflict}",
                        columns.iter().map(|c| quote_column(c)).collect::<Vec<_>>().join(", "),
                        (1..=columns.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
                    );
                    let mut statement = tx.prepare(&sql)?;
                    for row in upserts {
                        let values = columns.iter().map(|c| sqlite_value(row.get(*c)));
                        statement.execute(rusqlite::params_from_iter(values))?;
                    }
                }
                if !deletes.is_empty() {
                    let matching = table
                        .key
                        .iter()
                        .enumerate()
                        .map(|(i, k)| format!("{} = ?{}", quote_column(k), i + 1))
                        .collect::<Vec<_>>()
                        .join(" AND ");
                    let mut statement = tx.prepare(&format!("DELETE FROM {name} WHERE {matching}"))?;
                    for row in deletes {
                        let values = table.key.iter().map(|k| sqlite_value(row.get(k)));
                        statement.execute(rusqlite::params_from_iter(values))?;
                    }
                }
                tx.commit()?;
            }
        }
        Ok(())
    }
}

impl Replica {
    /// Inserts rows (JSON objects) into the given columns of a table, in one transaction;
    /// columns left out take their defaults.
    pub fn insert_rows(
        &mut self,
        table: &TableInfo,
        rows: &[Map<String, Value>],
    ) -> anyhow::Result<()> {
        let name = quote(&table.name);
        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| c.as_str()).collect();
        let list = columns
            .iter()
            .map(|c| quote_column(c))
            .collect::<Vec<_>>()
            .join(", ");
        match &mut self.conn {
            Conn::Postgres { client, runtime } => {
                let rows =
                    Value::Array(rows.iter().cloned().map(Value::Object).collect()).to_string();
                let sql = format!(
                    "INSERT INTO {name} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{name}, $1::text::json)"
                );
                runtime.block_on(crate::connect::pg_tls::answer(
                    self.limit,
                    client.execute(&sql, &[&rows]),
                ))?;
            }
            Conn::Sqlite(conn) => {
                let tx = conn.transaction()?;
                {
                    let marks = (1..=columns.len())
                        .map(|i| format!("?{i}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let mut statement =
                        tx.prepare(&format!("INSERT INTO {name} ({list}) VALUES ({marks})"))?;
                    for row in rows {
                        statement.execute(rusqlite::params_from_iter(
                            columns.iter().map(|c| sqlite_value(row.get(*c))),
                        ))?;
                    }
                }
                tx.commit()?;
            }
        }
        Ok(())
    }
}

/// Orders JSON values as SQL orders them: numbers by value, text by bytes, nulls first.
fn compare_json(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(f64::NAN)
            .total_cmp(&y.as_f64().unwrap_or(f64::NAN)),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        (x, y) => x.to_string().cmp(&y.to_string()),
    }
}

/// Rows of one `row_to_json(t)::text` column as JSON objects.
fn json_rows(rows: &[tokio_postgres::Row]) -> anyhow::Result<Vec<Map<String, Value>>> {
    rows.iter()
        .map(|row| {
            let text: String = row.try_get(0)?;
            match serde_json::from_str(&text)? {
                Value::Object(map) => Ok(map),
                _ => anyhow::bail!("row_to_json gave a non-object"),
            }
        })
        .collect()
}

/// A JSON value as SQLite stores it: objects and arrays as JSON text.
fn sqlite_value(value: Option<&Value>) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match value {
        None | Some(Value::Null) => V::Null,
        Some(Value::Bool(b)) => V::Integer(i64::from(*b)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => V::Integer(i),
            None => V::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Some(Value::String(s)) => V::Text(s.clone()),
        Some(other) => V::Text(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_upsert_leaves_a_newer_row_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
        let url = ReplicaUrl::Sqlite(tmp.path().join("r.db"));
        let mut replica = Replica::connect(&url, &runtime).unwrap();
        replica
            .execute_batch(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, updated_at INTEGER, origin TEXT)",
            )
            .unwrap();
        let info = replica
            .table("t")
            .unwrap()
            .newer_wins("updated_at", "origin");
        let row = |v: &str, at: i64| {
            let Value::Object(map) =
                serde_json::json!({"id": 1, "v": v, "updated_at": at, "origin": "remote"})
            else {
                unreachable!()
            };
            map
        };
        replica.apply(&info, &[row("new", 20)], &[]).unwrap();
        // An older version, read before the newer write landed, arrives late.
        replica.apply(&info, &[row("old", 10)], &[]).unwrap();
        assert_eq!(replica.scan(&info).unwrap(), vec![row("new", 20)]);
        replica.apply(&info, &[row("newer", 30)], &[]).unwrap();
        assert_eq!(replica.scan(&info).unwrap(), vec![row("newer", 30)]);
    }

    #[test]
    fn urls() {
        assert_eq!(
            ReplicaUrl::parse("sqlite://data/local.db").unwrap(),
            ReplicaUrl::Sqlite("data/local.db".into())
        );
        let pg = ReplicaUrl::parse("postgres://sync:secret@db:5432/app").unwrap();
        assert_eq!(pg.redacted(), "postgres://sync:***@db:5432/app");
        assert_eq!(
            format!("{pg:?}"),
            "Postgres(\"postgres://sync:***@db:5432/app\")"
        );
        let err = ReplicaUrl::parse("mysql://x").unwrap_err().to_string();
        assert!(err.contains("postgres://"), "{err}");
        // Refused URLs are shown redacted, whether or not they parse.
        for (url, reason) in [
            ("mysql://u:secret@db/app", "is not a replica URL"),
            (
                "postgres://u:secret@[bad",
                "invalid value for option `host`",
            ),
            (
                "postgres://u:secret@db/app?sslmode=verify",
                "sslmode=verify is not one of",
            ),
        ] {
            let err = format!("{:#}", ReplicaUrl::parse(url).unwrap_err());
            assert!(err.contains("u:***@"), "{err}");
            assert!(err.contains(reason), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        assert_eq!(quote("public.my \"t\""), "\"public\".\"my \"\"t\"\"\"");
    }

    #[test]
    fn sqlite_rows_round_trip_and_upserts_are_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
        let url = ReplicaUrl::Sqlite(tmp.path().join("r.db"));
        let mut replica = Replica::connect(&url, &runtime).unwrap();
        replica
            .execute_batch("CREATE TABLE t (a INTEGER, b TEXT, v REAL, PRIMARY KEY (a, b))")
            .unwrap();
        let info = replica.table("t").unwrap();
        assert_eq!(info.key, ["a", "b"]);
        let row = |a: i64, v: f64| {
            let Value::Object(map) = serde_json::json!({"a": a, "b": "x", "v": v}) else {
                unreachable!()
            };
            map
        };
        for _ in 0..2 {
            replica
                .apply(&info, &[row(1, 1.5), row(2, 2.5)], &[])
                .unwrap();
        }
        replica
            .apply(&info, &[row(1, 9.0)], &[row(2, 0.0)])
            .unwrap();
        assert_eq!(replica.scan(&info).unwrap(), vec![row(1, 9.0)]);
        let missing = replica.table("nope").unwrap_err().to_string();
        assert!(missing.contains("does not exist"), "{missing}");
    }
}

//! Rows read as JSON objects: a whole table, its keys, the rows of given keys, or the rows
//! written after a mark, in write-time order.

use anyhow::Context;
use serde_json::{Map, Value};

use super::connection::{Conn, Replica};
use super::schema::TableInfo;
use super::sql::{compare_json, json_array, json_rows, key_list, key_match, quote, quote_column};
use crate::connect::pg_tls;

impl Replica {
    /// Every row of the table, as JSON objects.
    pub fn scan(&mut self, table: &TableInfo) -> anyhow::Result<Vec<Map<String, Value>>> {
        match &mut self.conn {
            Conn::Postgres { client, runtime } => {
                let sql = format!("SELECT row_to_json(t)::text FROM {} t", quote(&table.name));
                let rows = runtime
                    .block_on(pg_tls::answer(self.limit, client.query(&sql, &[])))
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
                    Some(mark) => {
                        runtime.block_on(pg_tls::answer(self.limit, client.query(&sql, &[mark])))?
                    }
                    None => {
                        runtime.block_on(pg_tls::answer(self.limit, client.query(&sql, &[])))?
                    }
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
        let keys = key_list(table);
        match &mut self.conn {
            Conn::Postgres { client, runtime } => {
                let sql = format!("SELECT row_to_json(k)::text FROM (SELECT {keys} FROM {name}) k");
                json_rows(&runtime.block_on(pg_tls::answer(self.limit, client.query(&sql, &[])))?)
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
                let matching = key_match(table, "t", "k");
                let sql = format!(
                    "SELECT row_to_json(t)::text FROM {name} t \
                     JOIN json_populate_recordset(NULL::{name}, $1::text::json) k ON {matching}"
                );
                let keys = json_array(keys);
                let rows =
                    runtime.block_on(pg_tls::answer(self.limit, client.query(&sql, &[&keys])))?;
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
}

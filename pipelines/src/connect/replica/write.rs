//! Rows written from JSON objects: upserts and deletes in one idempotent transaction, and
//! plain inserts.

use anyhow::Context;
use serde_json::{Map, Value};

use super::connection::{Conn, Replica};
use super::schema::TableInfo;
use super::sql::{json_array, key_list, key_match, quote, quote_column, sqlite_value};
use crate::connect::pg_tls;

impl Replica {
    /// Writes `upserts` (whole rows as JSON objects) and removes `deletes` (rows given by
    /// their key columns) in one transaction; idempotent, so a batch repeated after a crash
    /// changes nothing more.
    pub fn apply(
        &mut self,
        table: &TableInfo,
        upserts: &[Map<String, Value>],
        deletes: &[Map<String, Value>],
    ) -> anyhow::Result<()> {
        let key_list = key_list(table);
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
            Conn::Postgres { client, runtime } => runtime.block_on(pg_tls::answer(self.limit, async {
                let tx = client.transaction().await?;
                if !upserts.is_empty() {
                    let rows = json_array(upserts);
                    let sql = format!(
                        "INSERT INTO {name} AS t SELECT * FROM json_populate_recordset(NULL::{name}, $1::text::json) {on_conflict}"
                    );
                    tx.execute(&sql, &[&rows]).await?;
                }
                if !deletes.is_empty() {
                    let keys = json_array(deletes);
                    let matching = key_match(table, "t", "d");
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
                        column_list(&columns),
                        parameters(columns.len())
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

    /// Inserts rows (JSON objects) into the given columns of a table, in one transaction;
    /// columns left out take their defaults.
    pub fn insert_rows(
        &mut self,
        table: &TableInfo,
        rows: &[Map<String, Value>],
    ) -> anyhow::Result<()> {
        let name = quote(&table.name);
        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| c.as_str()).collect();
        let list = column_list(&columns);
        match &mut self.conn {
            Conn::Postgres { client, runtime } => {
                let rows = json_array(rows);
                let sql = format!(
                    "INSERT INTO {name} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{name}, $1::text::json)"
                );
                runtime.block_on(pg_tls::answer(self.limit, client.execute(&sql, &[&rows])))?;
            }
            Conn::Sqlite(conn) => {
                let tx = conn.transaction()?;
                {
                    let marks = parameters(columns.len());
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

/// Columns by name, quoted: `"a", "b"`.
fn column_list(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| quote_column(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// SQLite's numbered parameters for `n` values: `?1, ?2, …`.
fn parameters(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::connect::replica::test_sqlite;

    #[test]
    fn an_upsert_leaves_a_newer_row_alone() {
        let (mut replica, _runtime, _dir) = test_sqlite();
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
    fn sqlite_rows_round_trip_and_upserts_are_idempotent() {
        let (mut replica, _runtime, _dir) = test_sqlite();
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

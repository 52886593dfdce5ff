//! A table's columns and primary key, read from the replica's catalogue.

use super::connection::Replica;
use super::url::Dialect;

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

impl Replica {
    /// Whether the table exists.
    pub fn table_exists(&mut self, table: &str) -> anyhow::Result<bool> {
        Ok(!self.columns(table)?.is_empty())
    }

    /// Each column's name, declared type, and place in the primary key (none when it is not
    /// in the key; SQLite says 0 then).
    fn columns(&mut self, table: &str) -> anyhow::Result<Vec<(String, String, Option<usize>)>> {
        let rows = match self.dialect() {
            Dialect::Postgres => {
                let (schema, name) = table.rsplit_once('.').unwrap_or(("public", table));
                self.query_text(
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
                )?
            }
            Dialect::Sqlite => self.query_text(
                "SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid",
                &[table],
            )?,
        };
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut row = row.into_iter();
                let name = row.next().flatten().unwrap_or_default();
                let kind = row.next().flatten().unwrap_or_default();
                let key = row
                    .next()
                    .flatten()
                    .and_then(|k| k.parse::<usize>().ok())
                    .filter(|k| *k > 0);
                (name, kind, key)
            })
            .collect())
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
}

//! The versions both replicas last agreed on: the `sync_agreed` table on the local replica,
//! the copy the diff is fed, and the rows and versions they are made of.
//!
//! A row is agreed once an action wrote its winner to the other side, or once both sides are
//! seen to hold it alike; it is forgotten once it is deleted on both. Without the agreed
//! version a row changed on one side only would look like a conflict, and a row deleted on
//! one side like a row new on the other.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{Map, Value};
use vigil_datasets::changes::{row_text, time_of};
use vigil_operators::{RowKey, Side, Version};

use crate::connect::replica::{Replica, TableInfo};
use crate::jobs::sync::job::SyncJob;

/// The agreed versions, and the changes to them the diff has not been given yet.
pub(crate) struct Agreed {
    versions: BTreeMap<RowKey, Version>,
    input: Vec<((RowKey, Version), isize)>,
}

impl Agreed {
    /// The versions `sync_agreed` on the local replica holds of the job's tables (none when
    /// the table is not there yet, as in a dry run before the migrations), all of them still
    /// to be given to the diff.
    pub fn load(local: &mut Replica, tables: &[String]) -> anyhow::Result<Agreed> {
        let versions = if local.table_exists("sync_agreed")? {
            load_agreed(local, tables)?
        } else {
            BTreeMap::new()
        };
        let input = versions
            .iter()
            .map(|(k, v)| ((k.clone(), v.clone()), 1))
            .collect();
        Ok(Agreed { versions, input })
    }

    /// The versions agreed on now.
    pub fn versions(&self) -> &BTreeMap<RowKey, Version> {
        &self.versions
    }

    /// The changes to the versions since the diff was last given them.
    pub fn take_input(&mut self) -> Vec<((RowKey, Version), isize)> {
        std::mem::take(&mut self.input)
    }

    /// Records what both replicas of one table hold now, row by row: `Some` version for a row
    /// both hold alike (applied winners included), `None` for a row neither holds. Only what
    /// differs from the agreed version is written to `sync_agreed`, in batches of
    /// `job.batch_rows`.
    pub fn record(
        &mut self,
        job: &SyncJob,
        local: &mut Replica,
        table: &str,
        now: Vec<(RowKey, Option<Version>)>,
    ) -> anyhow::Result<()> {
        let mut agree = Vec::new();
        let mut forget = Vec::new();
        for (key, version) in now {
            match version {
                Some(version) if self.versions.get(&key).map(|a| &a.row) != Some(&version.row) => {
                    let Some(row) = &version.row else { continue };
                    agree.push(agreed_row(
                        table,
                        &key.1,
                        version.updated_at.into(),
                        &version.origin,
                        row,
                    ));
                    let version = Version {
                        position: "agreed".into(),
                        ..version
                    };
                    if let Some(before) = self.versions.insert(key.clone(), version.clone()) {
                        self.input.push(((key.clone(), before), -1));
                    }
                    self.input.push(((key, version), 1));
                }
                Some(_) => {}
                None => {
                    if let Some(before) = self.versions.remove(&key) {
                        forget.push(object(
                            serde_json::json!({"table_name": table, "row_key": key.1}),
                        ));
                        self.input.push(((key, before), -1));
                    }
                }
            }
        }
        if agree.is_empty() && forget.is_empty() {
            return Ok(());
        }
        let agreed_table = local.table("sync_agreed")?;
        let batch = job.batch_rows.max(1);
        for chunk in agree.chunks(batch) {
            local.apply(&agreed_table, chunk, &[])?;
        }
        for chunk in forget.chunks(batch) {
            local.apply(&agreed_table, &[], chunk)?;
        }
        Ok(())
    }
}

/// The versions both replicas last agreed on, of the given tables (from `sync_agreed` on the
/// local replica).
fn load_agreed(
    local: &mut Replica,
    tables: &[String],
) -> anyhow::Result<BTreeMap<RowKey, Version>> {
    let mut agreed = BTreeMap::new();
    for table in tables {
        // `$1` is a parameter in both dialects (SQLite binds it by position too).
        let rows = local.query_text(
            "SELECT row_key, CAST(updated_at AS TEXT), origin, row_json FROM sync_agreed WHERE table_name = $1",
            &[table],
        )?;
        for row in rows {
            let mut row = row.into_iter();
            if let (Some(Some(key)), Some(Some(at)), Some(Some(origin)), Some(json)) =
                (row.next(), row.next(), row.next(), row.next())
            {
                let version = Version {
                    updated_at: at.parse().unwrap_or(0),
                    origin,
                    row: json,
                    position: "agreed".into(),
                };
                agreed.insert((table.clone(), key), version);
            }
        }
    }
    Ok(agreed)
}

/// A `sync_agreed` row.
pub(crate) fn agreed_row(
    table: &str,
    key: &str,
    at: Value,
    origin: &str,
    row: &str,
) -> Map<String, Value> {
    object(serde_json::json!({
        "table_name": table,
        "row_key": key,
        "updated_at": at,
        "origin": origin,
        "row_json": row,
    }))
}

/// The version a row is in on `side`: its `updated_at` and `origin` columns, the side's
/// origin when the row names none.
pub(crate) fn version_of(job: &SyncJob, side: Side, row: &Map<String, Value>) -> Version {
    let origin = match row.get(&job.origin_column) {
        Some(Value::String(o)) if !o.is_empty() => o.clone(),
        _ => match side {
            Side::Local => job.local_origin.clone(),
            Side::Remote => job.remote_origin.clone(),
        },
    };
    Version {
        updated_at: row
            .get(&job.updated_at_column)
            .and_then(time_of)
            .unwrap_or(0),
        origin,
        row: Some(row_text(row)),
        position: "scan".into(),
    }
}

/// A row's key columns as an object, from its key array.
pub(crate) fn key_row(info: &TableInfo, key: &str) -> anyhow::Result<Map<String, Value>> {
    let values: Vec<Value> = serde_json::from_str(key).with_context(|| format!("key {key}"))?;
    anyhow::ensure!(
        values.len() == info.key.len(),
        "key {key} does not fit ({})",
        info.key.join(", ")
    );
    Ok(info.key.iter().cloned().zip(values).collect())
}

/// A row from its JSON text.
pub(crate) fn parse_row(text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(text)? {
        Value::Object(map) => Ok(map),
        _ => anyhow::bail!("a row that is not a JSON object"),
    }
}

/// A JSON object literal as a row.
pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

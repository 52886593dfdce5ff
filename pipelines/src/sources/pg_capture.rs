//! Change capture from PostgreSQL without triggers: a logical replication slot decoded by
//! wal2json (format version 2), read with `pg_logical_slot_peek_changes` and advanced with
//! `pg_replication_slot_advance` only once what was read has been applied — so a crash in
//! between reads the same changes again, and nothing is lost.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::Value;
use vigil_datasets::changes::{
    ChangeSink, Document, FeedFormat, FeedParams, FeedState, parse_document,
};
use vigil_operators::{Change, DeadLetter};

use crate::connect::replica::{Dialect, Replica};

/// A logical replication slot that follows some tables of one database.
#[derive(Clone, Debug)]
pub struct LogicalSlot {
    /// The slot's name (letters, digits and underscores).
    pub name: String,
    /// The tables followed, `schema.table`.
    pub tables: Vec<String>,
    /// Dropped by the server when the connection that made it closes: for a follower that
    /// reads everything afresh when it starts, so that no slot outlives it and holds WAL.
    pub temporary: bool,
}

/// What one read of a slot gave.
#[derive(Debug, Default)]
pub struct Captured {
    /// The row changes, in commit order.
    pub changes: Vec<Change>,
    /// Records the feed could not use, with the reason, for the errors table.
    pub dead_letters: Vec<DeadLetter>,
    /// The position to advance the slot to once the changes are applied.
    pub upto: Option<String>,
}

impl LogicalSlot {
    /// A slot for `tables` (a table without a schema is taken as `public.`).
    pub fn new(name: &str, tables: &[String]) -> anyhow::Result<LogicalSlot> {
        anyhow::ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "slot name {name:?}: use lower-case letters, digits and underscores"
        );
        let tables = tables
            .iter()
            .map(|t| {
                if t.contains('.') {
                    t.clone()
                } else {
                    format!("public.{t}")
                }
            })
            .collect();
        Ok(LogicalSlot {
            name: name.to_owned(),
            tables,
            temporary: false,
        })
    }

    /// The same slot, made temporary (see [`LogicalSlot::temporary`]).
    pub fn temporary(self) -> LogicalSlot {
        LogicalSlot {
            temporary: true,
            ..self
        }
    }

    /// Creates the slot unless it exists. Fails with what to do when the server cannot
    /// decode logically (`wal_level` below `logical`, or no wal2json).
    pub fn ensure(&self, replica: &mut Replica) -> anyhow::Result<()> {
        anyhow::ensure!(
            replica.dialect() == Dialect::Postgres,
            "change capture by logical replication needs PostgreSQL"
        );
        let exists = replica.query_text(
            "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&self.name],
        )?;
        if !exists.is_empty() {
            return Ok(());
        }
        replica
            .query_text(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'wal2json', $2::text::bool)",
                &[&self.name, if self.temporary { "true" } else { "false" }],
            )
            .map(drop)
            .with_context(|| {
                format!(
                    "creating the logical replication slot {} on {}: the server needs \
                     wal_level = logical, a free slot (max_replication_slots) and the wal2json \
                     plugin (Debian: postgresql-15-wal2json); or sync by scanning the tables",
                    self.name,
                    replica.name()
                )
            })
    }

    /// Reads up to `max` changes past the slot's position without consuming them, as
    /// `origin`'s changes. A row's own `origin` column, when it has one, names the replica
    /// that wrote it instead (a row sync applied keeps the origin it came from).
    pub fn peek(
        &self,
        replica: &mut Replica,
        max: usize,
        options: &FeedParams,
    ) -> anyhow::Result<Captured> {
        let rows = replica.query_text(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, $2::text::int, \
             'format-version', '2', 'include-timestamp', '1', 'include-pk', '1', \
             'include-lsn', '1', 'add-tables', $3)",
            &[&self.name, &max.to_string(), &self.tables.join(",")],
        )?;
        let mut sink = SlotSink::default();
        let mut state = FeedState::default();
        let mut upto = None;
        for (i, row) in rows.iter().enumerate() {
            let (Some(Some(lsn)), Some(Some(data))) = (row.first(), row.get(1)) else {
                continue;
            };
            upto = Some(lsn.clone());
            let origin = format!("slot {}@{lsn}#{i}", self.name);
            match serde_json::from_str::<Value>(data) {
                Ok(Value::Object(value)) => {
                    let document = Document {
                        value,
                        origin,
                        raw: data.as_bytes(),
                    };
                    parse_document(
                        document,
                        FeedFormat::Wal2Json,
                        options,
                        &mut state,
                        &mut sink,
                    );
                }
                _ => sink.dead_letter(
                    origin,
                    "wal2json gave something that is not a JSON object".into(),
                    data.as_bytes(),
                ),
            }
        }
        for change in &mut sink.changes {
            let written_by = change
                .after
                .as_deref()
                .and_then(|row| serde_json::from_str::<BTreeMap<String, Value>>(row).ok())
                .and_then(|row| row.get("origin").and_then(Value::as_str).map(str::to_owned));
            if let Some(origin) = written_by {
                change.origin = origin;
            }
        }
        Ok(Captured {
            changes: sink.changes,
            dead_letters: sink.dead_letters,
            upto,
        })
    }

    /// Moves the slot past `lsn`: what was read up to it is applied and need not come again.
    pub fn advance(&self, replica: &mut Replica, lsn: &str) -> anyhow::Result<()> {
        replica
            .query_text(
                "SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::text::pg_lsn)",
                &[&self.name, lsn],
            )
            .map(drop)
            .with_context(|| format!("advancing the slot {} to {lsn}", self.name))
    }

    /// Drops the slot (a slot nobody reads keeps WAL on the server forever).
    pub fn drop_slot(&self, replica: &mut Replica) -> anyhow::Result<()> {
        let exists = replica.query_text(
            "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&self.name],
        )?;
        if !exists.is_empty() {
            // The function returns void, which reads as empty text.
            replica.query_text("SELECT pg_drop_replication_slot($1)::text", &[&self.name])?;
        }
        Ok(())
    }
}

/// Changes and dead letters of one read.
#[derive(Default)]
struct SlotSink {
    changes: Vec<Change>,
    dead_letters: Vec<DeadLetter>,
}

impl ChangeSink for SlotSink {
    fn change(&mut self, change: Change) {
        self.changes.push(change);
    }

    fn dead_letter(&mut self, origin: String, reason: String, raw: &[u8]) {
        let now = chrono::Utc::now().timestamp_millis();
        self.dead_letters
            .push(DeadLetter::new(now, origin, "parse", reason, Some(raw)));
    }
}

//! The replica's tables: each derived from the Arrow schema of the records it holds, with its
//! key, so that the writer, the migrations' test and the benchmark agree on one definition.

use arrow::datatypes::{DataType, FieldRef, TimeUnit};
use vigil_operators::archaeology::entanglements::Entanglement;
use vigil_operators::model::{Alert, Pattern, Reading, Record, Session, SyncAction};

/// A table vigil keeps in a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReplicaTable {
    /// Telemetry metadata: one row per reading, the payload opaque or left out.
    TelemetryMeta,
    /// The alerts open now: a cleared alert's row is deleted.
    Alerts,
    /// Every raise and every clear, appended once.
    AlertHistory,
    /// Recurring patterns as they stand; a pattern that lost its support is deleted.
    Patterns,
    /// Sessions, open and closed.
    Sessions,
    /// Entangled source pairs as they stand.
    Entanglements,
    /// The actions vigil-sync applied, each once.
    SyncActions,
}

/// How a column is stored in SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlKind {
    /// `TEXT`.
    Text,
    /// `DOUBLE PRECISION` / `REAL`.
    Float,
    /// `BIGINT` / `INTEGER` (unsigned counts too: they never reach 2^63).
    Int,
    /// `BOOLEAN` / `INTEGER` 0 or 1.
    Bool,
    /// `TIMESTAMPTZ` / `INTEGER` epoch milliseconds.
    Timestamp,
    /// `BYTEA` / `BLOB`.
    Bytes,
    /// A list of strings: `JSONB` / `TEXT` holding a JSON array.
    Json,
}

impl SqlKind {
    /// The kind an Arrow column of `data_type` is stored as.
    pub fn of(data_type: &DataType) -> Option<SqlKind> {
        Some(match data_type {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlKind::Text,
            DataType::Float64 | DataType::Float32 => SqlKind::Float,
            DataType::Int64 | DataType::UInt64 | DataType::Int32 | DataType::UInt32 => SqlKind::Int,
            DataType::Boolean => SqlKind::Bool,
            DataType::Timestamp(TimeUnit::Millisecond, _) => SqlKind::Timestamp,
            DataType::Binary | DataType::LargeBinary => SqlKind::Bytes,
            DataType::List(item) if item.data_type() == &DataType::Utf8 => SqlKind::Json,
            _ => return None,
        })
    }

    /// The Arrow type the writer reads a column of this kind as.
    pub fn arrow_type(self) -> DataType {
        match self {
            SqlKind::Text => DataType::Utf8,
            SqlKind::Float => DataType::Float64,
            SqlKind::Int => DataType::Int64,
            SqlKind::Bool => DataType::Boolean,
            SqlKind::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            SqlKind::Bytes => DataType::Binary,
            SqlKind::Json => DataType::List(std::sync::Arc::new(arrow::datatypes::Field::new(
                "element",
                DataType::Utf8,
                false,
            ))),
        }
    }

    /// The column type on PostgreSQL and CockroachDB.
    pub fn postgres(self) -> &'static str {
        match self {
            SqlKind::Text => "TEXT",
            SqlKind::Float => "DOUBLE PRECISION",
            SqlKind::Int => "BIGINT",
            SqlKind::Bool => "BOOLEAN",
            SqlKind::Timestamp => "TIMESTAMPTZ",
            SqlKind::Bytes => "BYTEA",
            SqlKind::Json => "JSONB",
        }
    }

    /// The column type on SQLite.
    pub fn sqlite(self) -> &'static str {
        match self {
            SqlKind::Text | SqlKind::Json => "TEXT",
            SqlKind::Float => "REAL",
            SqlKind::Int | SqlKind::Bool | SqlKind::Timestamp => "INTEGER",
            SqlKind::Bytes => "BLOB",
        }
    }
}

/// One column of a replica table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Its name, as in the archive.
    pub name: String,
    /// How it is stored.
    pub kind: SqlKind,
    /// Whether it may be null.
    pub nullable: bool,
}

/// The telemetry columns the replica keeps: metadata only, never the clear payload.
const TELEMETRY_META: &[&str] = &["event_id", "source", "name", "ts", "value", "key_id"];

impl ReplicaTable {
    /// Every table.
    pub const ALL: [ReplicaTable; 7] = [
        ReplicaTable::TelemetryMeta,
        ReplicaTable::Alerts,
        ReplicaTable::AlertHistory,
        ReplicaTable::Patterns,
        ReplicaTable::Sessions,
        ReplicaTable::Entanglements,
        ReplicaTable::SyncActions,
    ];

    /// The table's name in the replica.
    pub fn name(self) -> &'static str {
        match self {
            ReplicaTable::TelemetryMeta => "telemetry_meta",
            ReplicaTable::Alerts => "alerts",
            ReplicaTable::AlertHistory => "alert_history",
            ReplicaTable::Patterns => "patterns",
            ReplicaTable::Sessions => "sessions",
            ReplicaTable::Entanglements => "entanglements",
            ReplicaTable::SyncActions => "sync_actions",
        }
    }

    /// The primary key's columns.
    pub fn key(self) -> &'static [&'static str] {
        match self {
            ReplicaTable::TelemetryMeta => &["event_id"],
            ReplicaTable::Alerts => &["alert_id"],
            ReplicaTable::AlertHistory => &["alert_id", "status"],
            ReplicaTable::Patterns => &["pattern_id"],
            ReplicaTable::Sessions => &["key", "start"],
            ReplicaTable::Entanglements => &["a", "b"],
            ReplicaTable::SyncActions => &[
                "table",
                "key",
                "winner_updated_at",
                "winner_origin",
                "action",
            ],
        }
    }

    /// A stable number, for the spill's encoding.
    pub fn id(self) -> u8 {
        match self {
            ReplicaTable::TelemetryMeta => 0,
            ReplicaTable::Alerts => 1,
            ReplicaTable::AlertHistory => 2,
            ReplicaTable::Patterns => 3,
            ReplicaTable::Sessions => 4,
            ReplicaTable::Entanglements => 5,
            ReplicaTable::SyncActions => 6,
        }
    }

    /// The table numbered `id`.
    pub fn from_id(id: u8) -> Option<ReplicaTable> {
        ReplicaTable::ALL.into_iter().find(|t| t.id() == id)
    }

    fn fields(self) -> Vec<FieldRef> {
        match self {
            ReplicaTable::TelemetryMeta => {
                let fields = Reading::fields();
                let mut kept: Vec<FieldRef> = TELEMETRY_META
                    .iter()
                    .filter_map(|name| fields.iter().find(|f| f.name() == name).cloned())
                    .collect();
                kept.extend(fields.iter().find(|f| f.name() == "payload").cloned());
                kept
            }
            ReplicaTable::Alerts | ReplicaTable::AlertHistory => Alert::fields(),
            ReplicaTable::Patterns => Pattern::fields(),
            ReplicaTable::Sessions => Session::fields(),
            ReplicaTable::Entanglements => Entanglement::fields(),
            ReplicaTable::SyncActions => SyncAction::fields(),
        }
    }

    /// Every column the table has, in order (`telemetry_meta` ends with `payload`, which holds
    /// the ciphertext only when payloads are replicated).
    pub fn columns(self) -> Vec<Column> {
        self.fields()
            .iter()
            .filter_map(|f| {
                SqlKind::of(f.data_type()).map(|kind| Column {
                    name: f.name().clone(),
                    kind,
                    nullable: f.is_nullable(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_has_a_kind_and_every_key_column_exists() {
        for table in ReplicaTable::ALL {
            let columns = table.columns();
            assert_eq!(
                columns.len(),
                table.fields().len(),
                "{}: a column of an unmapped type",
                table.name()
            );
            for key in table.key() {
                assert!(
                    columns.iter().any(|c| c.name == *key && !c.nullable),
                    "{}",
                    table.name()
                );
            }
            assert_eq!(ReplicaTable::from_id(table.id()), Some(table));
        }
        let meta: Vec<String> = ReplicaTable::TelemetryMeta
            .columns()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            meta,
            [
                "event_id", "source", "name", "ts", "value", "key_id", "payload"
            ]
        );
    }
}

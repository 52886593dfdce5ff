//! The `sync_actions` table: what one replica must receive so that both agree.

use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::{Record, field, ts_field};

/// What to do to make the replicas agree on one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncActionKind {
    /// Write the local version to the remote replica.
    Push,
    /// Write the remote version to the local replica.
    Pull,
    /// Delete the row on the local replica (the remote deleted it later).
    DeleteLocal,
    /// Delete the row on the remote replica (the local deleted it later).
    DeleteRemote,
}

impl SyncActionKind {
    /// The name used in the `action` column.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncActionKind::Push => "push",
            SyncActionKind::Pull => "pull",
            SyncActionKind::DeleteLocal => "delete_local",
            SyncActionKind::DeleteRemote => "delete_remote",
        }
    }
}

/// One action of the sync diff. The diff holds exactly one per row the replicas disagree on,
/// and none once they agree.
///
/// # Examples
/// ```
/// use arrow::array::AsArray;
/// use vigil_operators::{Record, SyncAction, SyncActionKind};
///
/// let action = SyncAction {
///     table: "public.orders".into(),
///     key: "[7]".into(),
///     action: SyncActionKind::DeleteLocal,
///     winner_origin: "remote".into(),
///     winner_updated_at: 1_700_000_000_000,
///     conflict: false,
///     reason: "the remote version is newer".into(),
///     row: None,
/// };
/// let batch = SyncAction::to_batch(std::slice::from_ref(&action))?;
/// // The `action` column holds the kind's name.
/// let column = batch.column_by_name("action").expect("an action column");
/// assert_eq!(column.as_string::<i32>().value(0), SyncActionKind::DeleteLocal.as_str());
/// assert_eq!(SyncAction::from_batch(&batch)?, [action]);
/// # Ok::<(), vigil_operators::ConvertError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SyncAction {
    /// The table.
    pub table: String,
    /// The row's key, as in `changes.key`.
    pub key: String,
    /// Push, pull, delete_local or delete_remote.
    pub action: SyncActionKind,
    /// The replica that wrote the winning version.
    pub winner_origin: String,
    /// When the winning version was written, in epoch milliseconds (0 when unknown).
    #[serde(with = "crate::time::epoch_ms")]
    pub winner_updated_at: i64,
    /// Both replicas changed the row since they last agreed; the loser's change is overwritten
    /// and kept in the conflict log.
    pub conflict: bool,
    /// Why this side won, in words.
    pub reason: String,
    /// The winning row as a JSON object, to write; `None` for a delete.
    pub row: Option<String>,
}

impl Record for SyncAction {
    const TABLE: &'static str = "sync_actions";

    const DISTINCT_COLUMNS: &'static [&'static str] = &["key", "row"];

    fn fields() -> Vec<FieldRef> {
        vec![
            field("table", DataType::Utf8, false),
            field("key", DataType::Utf8, false),
            field("action", DataType::Utf8, false),
            field("winner_origin", DataType::Utf8, false),
            ts_field("winner_updated_at", false),
            field("conflict", DataType::Boolean, false),
            field("reason", DataType::Utf8, false),
            field("row", DataType::Utf8, true),
        ]
    }

    fn event_time(&self) -> i64 {
        self.winner_updated_at
    }
}

//! Bi-directional sync: two replicas' change feeds in, what each must receive out.
//!
//! [`current_versions`] turns each replica's feed of changes into the collection of the
//! current version of every row on that side; [`sync_diff`] compares the two sides, and the
//! versions they last agreed on, row by row, and keeps the collection of [`SyncAction`]s that
//! make them equal: last writer wins on `updated_at`, ties broken by origin; deletes are
//! versions too. The diff is empty exactly when the replicas agree.
//!
//! [`SyncAction`]: crate::SyncAction

pub mod current_versions;
pub mod sync_diff;

use serde::{Deserialize, Serialize};

use crate::model::Change;

/// Which replica a change or a version belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Side {
    /// The replica close to the application (fast, local).
    Local,
    /// The durable primary.
    Remote,
}

/// A row: its table and its key (a JSON array of the key's values).
pub type RowKey = (String, String);

/// One version of a row on one side. Versions are ordered by when they were written, then by
/// the replica that wrote them (a deterministic tie-break), then by content: the greater
/// version wins.
///
/// # Examples
/// ```
/// use vigil_operators::sync::Version;
/// use vigil_operators::{Change, ChangeOp};
///
/// let change = Change {
///     table: "t".into(),
///     key: "[1]".into(),
///     op: ChangeOp::Update,
///     before: None,
///     after: Some(r#"{"v":1}"#.into()),
///     updated_at: Some(5),
///     origin: "local".into(),
///     position: "p1".into(),
/// };
/// let local = Version::of(&change);
/// // Written at the same time: the greater origin wins, though both hold the same row.
/// let remote = Version { origin: "remote".into(), ..local.clone() };
/// assert!(remote > local && remote.same_row(&local));
/// assert!(Version { updated_at: 6, ..local.clone() } > remote);
/// // A version turns back into a change that leaves its row so.
/// assert_eq!(Version::of(&local.clone().into_change("t", "[1]")), local);
/// // A delete is a version too: a tombstone.
/// let deleted = Version::of(&Change { op: ChangeOp::Delete, after: None, ..change });
/// assert_eq!(deleted.row, None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    /// When it was written, in epoch milliseconds (0 when the feed does not say).
    pub updated_at: i64,
    /// The replica that wrote it; sync writes keep the origin of the version they copy, so an
    /// applied version is the same version on the other side and is never sent back.
    pub origin: String,
    /// The row as a JSON object; `None` for a deleted row (a tombstone).
    pub row: Option<String>,
    /// Where it is in its feed.
    pub position: String,
}

impl Version {
    /// The version a change leaves its row in.
    pub fn of(change: &Change) -> Version {
        Version {
            updated_at: change.updated_at.unwrap_or(0),
            origin: change.origin.clone(),
            row: if change.is_delete() {
                None
            } else {
                change.after.clone()
            },
            position: change.position.clone(),
        }
    }

    /// The change that leaves row `key` of `table` in this version.
    pub fn into_change(self, table: &str, key: &str) -> Change {
        Change {
            table: table.to_owned(),
            key: key.to_owned(),
            op: if self.row.is_some() {
                crate::model::ChangeOp::Update
            } else {
                crate::model::ChangeOp::Delete
            },
            before: None,
            after: self.row,
            updated_at: Some(self.updated_at),
            origin: self.origin,
            position: self.position,
        }
    }

    /// Whether two versions hold the same row (both deleted counts): the replicas agree on it.
    pub fn same_row(&self, other: &Version) -> bool {
        self.row == other.row
    }
}

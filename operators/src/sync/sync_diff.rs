//! The sync diff: per row, the action that makes the two replicas agree.

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use super::{RowKey, Side, Version};
use crate::model::{SyncAction, SyncActionKind};

/// Compares the current versions of both sides row by row.
pub trait SyncDiff<'scope> {
    /// The collection of actions that make the replicas equal, given the current versions of
    /// both sides ([`super::current_versions::CurrentVersions`]) and the versions they last
    /// agreed on (`agreed`, kept by the job in `sync_state`; empty when unknown). Per row:
    /// nothing when both sides hold the same row (or neither holds it); otherwise the newer
    /// version wins — later `updated_at`, then the greater origin — and is pushed, pulled, or
    /// deleted on the other side. An action is a conflict when both sides changed the row
    /// since they last agreed (or both created it, with no agreement known).
    ///
    /// # Examples
    /// ```
    /// use differential_dataflow::input::Input;
    /// use timely::dataflow::operators::{Capture, capture::Extract};
    /// use vigil_operators::sync::{Side, Version, sync_diff::SyncDiff};
    /// use vigil_operators::SyncActionKind;
    ///
    /// let version = |at: i64, origin: &str| Version {
    ///     updated_at: at, origin: origin.into(), row: Some(format!("{{\"at\":{at}}}")),
    ///     position: String::new(),
    /// };
    /// let row = ("t".to_owned(), "[1]".to_owned());
    /// let captured = timely::example(move |scope| {
    ///     let (_, sides) = scope.new_collection_from(vec![
    ///         (row.clone(), (Side::Local, version(5, "local"))),
    ///         (row.clone(), (Side::Remote, version(9, "remote"))),
    ///     ]);
    ///     let (_, agreed) = scope.new_collection_from(Vec::<((String, String), Version)>::new());
    ///     sides.sync_diff(agreed).inner.capture()
    /// });
    /// let actions: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
    /// assert_eq!(actions.len(), 1);
    /// assert_eq!(actions[0].0.action, SyncActionKind::Pull);
    /// ```
    fn sync_diff(
        self,
        agreed: VecCollection<'scope, u64, (RowKey, Version), isize>,
    ) -> VecCollection<'scope, u64, SyncAction, isize>;
}

/// Where a version in the diff's input comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
enum Slot {
    Agreed,
    Local,
    Remote,
}

impl<'scope> SyncDiff<'scope> for VecCollection<'scope, u64, (RowKey, (Side, Version)), isize> {
    fn sync_diff(
        self,
        agreed: VecCollection<'scope, u64, (RowKey, Version), isize>,
    ) -> VecCollection<'scope, u64, SyncAction, isize> {
        let sides = self.map(|(row, (side, version))| {
            let slot = match side {
                Side::Local => Slot::Local,
                Side::Remote => Slot::Remote,
            };
            (row, (slot, version))
        });
        agreed
            .map(|(row, version)| (row, (Slot::Agreed, version)))
            .concat(sides)
            .reduce_named("SyncDiff", |row, versions, out| {
                // One version per slot; should a slot hold more, the newest counts.
                let newest = |slot: Slot| {
                    versions
                        .iter()
                        .filter(|((s, _), count)| *s == slot && *count > 0)
                        .map(|((_, v), _)| v)
                        .max()
                };
                let (local, remote) = (newest(Slot::Local), newest(Slot::Remote));
                if let Some(action) = decide(row, local, remote, newest(Slot::Agreed)) {
                    out.push((action, 1));
                }
            })
            .map(|(_, action)| action)
    }
}

/// The action for one row, if the sides disagree.
fn decide(
    (table, key): &RowKey,
    local: Option<&Version>,
    remote: Option<&Version>,
    agreed: Option<&Version>,
) -> Option<SyncAction> {
    let (winner, side, reason) = match (local, remote) {
        (None, None) => return None,
        (Some(l), None) => (l, Side::Local, "only the local replica has the row"),
        (None, Some(r)) => (r, Side::Remote, "only the remote replica has the row"),
        (Some(l), Some(r)) if l.same_row(r) => return None,
        (Some(l), Some(r)) => {
            let side = if l > r { Side::Local } else { Side::Remote };
            let reason = match l.updated_at.cmp(&r.updated_at) {
                std::cmp::Ordering::Equal => "written at the same time: the greater origin wins",
                _ if side == Side::Local => "the local version is newer",
                _ => "the remote version is newer",
            };
            (if side == Side::Local { l } else { r }, side, reason)
        }
    };
    // A row deleted on one side and never seen on the other needs nothing.
    if winner.row.is_none() && (local.is_none() || remote.is_none()) {
        return None;
    }
    let action = match (side, winner.row.is_some()) {
        (Side::Local, true) => SyncActionKind::Push,
        (Side::Local, false) => SyncActionKind::DeleteRemote,
        (Side::Remote, true) => SyncActionKind::Pull,
        (Side::Remote, false) => SyncActionKind::DeleteLocal,
    };
    let conflict = match (local, remote, agreed) {
        (Some(l), Some(r), Some(a)) => !l.same_row(a) && !r.same_row(a),
        (Some(l), Some(r), None) => l.row.is_some() && r.row.is_some(),
        _ => false,
    };
    Some(SyncAction {
        table: table.clone(),
        key: key.clone(),
        action,
        winner_origin: winner.origin.clone(),
        winner_updated_at: winner.updated_at,
        conflict,
        reason: reason.to_owned(),
        row: winner.row.clone(),
    })
}

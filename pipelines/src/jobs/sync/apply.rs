//! Applying a table's actions to the replicas: the upserts and deletes each side is due, in
//! batches of `--batch-rows`, each batch one transaction of idempotent statements, so that a
//! pass interrupted anywhere repeats harmlessly; then the conflicts, to the log.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use tracing::info;
use vigil_operators::{RowKey, SyncAction, SyncActionKind};

use crate::connect::replica::{Replica, TableInfo};
use crate::jobs::sync::agreed::{key_row, parse_row};
use crate::jobs::sync::conflicts::{conflict_row, log_conflicts};
use crate::jobs::sync::job::{SyncJob, SyncSummary};

/// Rows to upsert and keys to delete on one side.
type Writes = (Vec<Map<String, Value>>, Vec<Map<String, Value>>);

/// The side an action writes to: 0 for the local replica, 1 for the remote.
pub(crate) fn target(action: SyncActionKind) -> usize {
    match action {
        SyncActionKind::Pull | SyncActionKind::DeleteLocal => 0,
        SyncActionKind::Push | SyncActionKind::DeleteRemote => 1,
    }
}

/// Applies one table's actions to the replicas (local first, then remote), and logs its
/// conflicts with both versions as `rows` (local, remote) hold them before the writes.
/// Actions the job's direction holds back are counted and left alone; the others are counted
/// by kind in `summary` and returned.
pub(crate) fn apply<'a>(
    job: &SyncJob,
    replicas: [&mut Replica; 2],
    rows: [&BTreeMap<RowKey, Map<String, Value>>; 2],
    info: &TableInfo,
    actions: &[&'a SyncAction],
    summary: &mut SyncSummary,
) -> anyhow::Result<Vec<&'a SyncAction>> {
    let mut writes: [Writes; 2] = Default::default();
    let mut conflicts = Vec::new();
    let mut applied = Vec::new();
    for &action in actions {
        if !job.direction_allows(action.action) {
            summary.held_back += 1;
            continue;
        }
        let side = &mut writes[target(action.action)];
        match &action.row {
            Some(row) => side.0.push(parse_row(row)?),
            None => side.1.push(key_row(info, &action.key)?),
        }
        match action.action {
            SyncActionKind::Push => summary.pushed += 1,
            SyncActionKind::Pull => summary.pulled += 1,
            SyncActionKind::DeleteLocal => summary.deleted_local += 1,
            SyncActionKind::DeleteRemote => summary.deleted_remote += 1,
        }
        if action.conflict {
            summary.conflicts += 1;
            let key = (info.name.clone(), action.key.clone());
            let [local, remote] = rows.map(|side| side.get(&key));
            conflicts.push(conflict_row(
                job,
                info,
                &action.key,
                local,
                remote,
                &action.winner_origin,
            ));
        }
        applied.push(action);
    }
    let batch = job.batch_rows.max(1);
    let [local, remote] = replicas;
    for (replica, (upserts, deletes)) in [(&mut *local, &writes[0]), (remote, &writes[1])] {
        for chunk in upserts.chunks(batch) {
            replica.apply(info, chunk, &[])?;
        }
        for chunk in deletes.chunks(batch) {
            replica.apply(info, &[], chunk)?;
        }
    }
    log_conflicts(local, &conflicts)?;
    if !applied.is_empty() {
        info!(message = "Table synced.", table = %info.name, applied = applied.len(), conflicts = conflicts.len());
    }
    Ok(applied)
}

//! The conflict log, `sync_state` on the local replica: every row both replicas changed
//! since they last agreed, with both versions and the winner, so that the loser is never
//! lost.

use serde_json::{Map, Value};
use vigil_datasets::changes::{row_text, time_of};

use crate::connect::replica::{Replica, TableInfo};
use crate::jobs::sync::agreed::object;
use crate::jobs::sync::job::SyncJob;

/// A row of the conflict log: both versions (row text and time) as the sides held them
/// before the winner was written, and the winner's origin.
pub(crate) fn conflict_row(
    job: &SyncJob,
    info: &TableInfo,
    key: &str,
    local: Option<&Map<String, Value>>,
    remote: Option<&Map<String, Value>>,
    winner: &str,
) -> Map<String, Value> {
    let version = |row: Option<&Map<String, Value>>| {
        row.map(|r| {
            let at = r.get(&job.updated_at_column).and_then(time_of);
            (row_text(r), at)
        })
    };
    let (local, remote) = (version(local), version(remote));
    object(serde_json::json!({
        "table_name": info.name,
        "row_key": key,
        "local_row": local.as_ref().map(|v| &v.0),
        "local_updated_at": local.as_ref().and_then(|v| v.1),
        "remote_row": remote.as_ref().map(|v| &v.0),
        "remote_updated_at": remote.as_ref().and_then(|v| v.1),
        "winner": winner,
    }))
}

/// Appends rows to the conflict log on the local replica.
pub(crate) fn log_conflicts(
    local: &mut Replica,
    rows: &[Map<String, Value>],
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let log = local.table("sync_state")?;
    let log = TableInfo {
        // The id and time are the database's to fill.
        columns: log
            .columns
            .into_iter()
            .filter(|(c, _)| c != "id" && c != "decided_at")
            .collect(),
        ..log
    };
    local.insert_rows(&log, rows)
}

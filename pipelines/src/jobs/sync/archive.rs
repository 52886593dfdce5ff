//! What the sync job keeps of its passes: the actions, in the archive's and the SQL replica's
//! `sync_actions` table, and the changes a slot gave that could not be used, as dead letters.

use std::sync::atomic::Ordering;

use tokio::runtime::Runtime;
use tracing::info;
use vigil_operators::{DeadLetter, Record as _, SyncAction};

use crate::jobs::sync::job::SyncJob;
use crate::sinks::archive::{ArchiveLocation, write_records};
use crate::sinks::replica::{Batch, Output, ReplicaSink, ReplicaTable, TableChange};

/// Writes actions to the archive's `sync_actions` table, if the job has an archive, and to
/// the replica's, if it has a replica.
pub(crate) fn archive_actions(
    job: &SyncJob,
    runtime: &Runtime,
    actions: &[SyncAction],
) -> anyhow::Result<()> {
    if actions.is_empty() {
        return Ok(());
    }
    replicate_actions(job, actions)?;
    let Some(archive) = &job.archive else {
        return Ok(());
    };
    let location = ArchiveLocation::parse(archive)?;
    let files = runtime.block_on(write_records(&location, actions, &run_name()))?;
    info!(message = "Sync actions archived.", files, archive = %location);
    Ok(())
}

/// Writes the changes a slot gave that could not be used to the archive's errors table, if
/// the job has an archive.
pub(crate) fn archive_dead_letters(
    job: &SyncJob,
    runtime: &Runtime,
    dead_letters: &[DeadLetter],
) -> anyhow::Result<()> {
    let Some(archive) = job.archive.as_deref().filter(|_| !dead_letters.is_empty()) else {
        return Ok(());
    };
    let location = ArchiveLocation::parse(archive)?;
    runtime.block_on(write_records(&location, dead_letters, &run_name()))?;
    Ok(())
}

/// The name of this pass's files in the archive: its wall-clock time.
fn run_name() -> String {
    format!("sync-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"))
}

/// Upserts actions into the replica's `sync_actions` table, if the job has a replica; each
/// pass is one transaction, its position the pass's wall-clock time.
fn replicate_actions(job: &SyncJob, actions: &[SyncAction]) -> anyhow::Result<()> {
    let Some(options) = &job.replica else {
        return Ok(());
    };
    let sink = ReplicaSink::start(
        options.clone(),
        "sync",
        &[Output::SyncActions],
        1,
        None,
        &crate::runtime::metrics::Metrics::default(),
    )?;
    sink.send(Batch {
        part: "sync_actions/0of1".into(),
        before: chrono::Utc::now().timestamp_millis(),
        changes: vec![TableChange {
            table: ReplicaTable::SyncActions,
            deletes: Vec::new(),
            upserts: vec![SyncAction::to_batch(actions)?],
        }],
    })?;
    let stats = sink.finish()?;
    info!(
        message = "Sync actions replicated.",
        rows = stats.rows.load(Ordering::Relaxed),
        spilled = stats.spilled.load(Ordering::Relaxed)
    );
    Ok(())
}

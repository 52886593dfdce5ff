//! The sync job: make a local replica and a remote one agree, last writer wins.
//!
//! A round reads the tables on both sides, turns every row into a version (its `updated_at`
//! and `origin` columns say when and where it was written), adds a tombstone for every row
//! the replicas once agreed on that one side no longer has, and feeds them to the sync diff
//! (`vigil_operators::sync`) with the versions last agreed (`sync_agreed`). The actions are
//! applied in batches inside transactions with idempotent upserts and deletes, so a round
//! interrupted anywhere repeats harmlessly; conflicts go to the `sync_state` log with both
//! versions; the agreed versions are recorded last. Applied rows keep the winning version's
//! `origin` and `updated_at`, so they read back as the same version on the other side and
//! are never sent back.
//!
//! One pass (`--once`, [`run_once`]) is the first round over whole tables, and no more;
//! following ([`follow::follow`]) is one round after another, each reading only what changed.
//!
//! # Layout
//! - `job`: the job ([`SyncJob`]), its direction and capture, and a pass's [`SyncSummary`].
//! - `round`: one round — read, diff, apply, agree — for `--once` and following alike.
//! - `capture`: how each side's changes are read (slot, poll or scan).
//! - `diff`: the one runner of the sync-diff dataflow, fed round by round.
//! - `apply`: a table's actions written to the replicas, in batches.
//! - `conflicts`: the `sync_state` conflict log.
//! - `agreed`: the agreed versions (`sync_agreed`) and the rows and versions they are made of.
//! - `archive`: the actions, archived and replicated as `sync_actions`; dead letters.
//! - `follow`: following both replicas, round after round, with metrics.
//! - `restore`: `--restore`, the local tables created from the remote's columns.
//! - `demo`: the two SQLite replicas of the demonstration.

mod agreed;
mod apply;
mod archive;
mod capture;
mod conflicts;
mod demo;
mod diff;
pub mod follow;
mod job;
mod restore;
mod round;

pub use demo::{DEMO_TABLE, prepare_demo};
pub use job::{Capture, Direction, SyncJob, SyncSummary};

use std::sync::Arc;
use std::time::Instant;

use vigil_operators::{Record as _, Side, SyncAction};

use crate::connect::migrations;
use crate::connect::replica::Replica;
use crate::jobs::sync::archive::archive_actions;
use crate::jobs::sync::capture::{Feed, SideState};
use crate::jobs::sync::restore::restore_table;
use crate::jobs::sync::round::Rounds;

/// Runs one pass — the first round of following, over scans of whole tables, and no more —
/// and returns what it did and the actions (planned, with `dry_run`).
pub fn run_once(job: &SyncJob) -> anyhow::Result<(SyncSummary, Vec<SyncAction>)> {
    let started = Instant::now();
    anyhow::ensure!(
        !job.tables.is_empty(),
        "no table to sync: name them with --table"
    );
    let runtime = Arc::new(crate::runtime::io::background("I/O")?);
    let mut local = Replica::connect(&job.local, &runtime)?;
    let mut remote = Replica::connect(&job.remote, &runtime)?;
    for replica in [&mut local, &mut remote] {
        // A dry run only says which migrations it would apply.
        for name in migrations::migrate(replica, job.dry_run)? {
            if job.dry_run {
                println!("-- would apply to {}: {name}", replica.name());
            }
        }
    }
    if job.restore {
        for table in &job.tables {
            restore_table(&mut local, &mut remote, table, job.dry_run)?;
        }
    }
    let local = SideState::new(Side::Local, local, Feed::scan());
    let remote = SideState::new(Side::Remote, remote, Feed::scan());
    let mut rounds = Rounds::open(job, &runtime, local, remote)?;
    let round = rounds.round()?;
    if !job.dry_run {
        // The roles are granted the tables once a restore has created them.
        for replica in rounds.replicas() {
            migrations::ensure_roles(replica, &job.tables)?;
        }
        // A pass archives every action it planned, those the direction held back included.
        archive_actions(job, &runtime, &round.planned)?;
    }
    let summary = SyncSummary {
        elapsed: started.elapsed(),
        ..round.summary
    };
    Ok((summary, round.planned))
}

/// Prints planned actions as NDJSON (a dry run).
pub fn print_actions(actions: &[SyncAction]) {
    for action in actions {
        println!("{}", action.to_json());
    }
}

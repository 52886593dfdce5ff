//! What a sync job is told to do ([`SyncJob`]) and what a pass of it did ([`SyncSummary`]).

use std::time::Duration;

use serde_json::Value;
use vigil_operators::SyncActionKind;

use crate::connect::replica::ReplicaUrl;
use crate::runtime::dir_lock::{self, DirLock};
use crate::sinks::replica::ReplicaParams;

/// Which way rows may flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Local to remote only: pushes and remote deletes.
    Up,
    /// Remote to local only: pulls and local deletes.
    Down,
    /// Both ways.
    Both,
}

impl Direction {
    /// `up`, `down` or `both`.
    pub fn parse(text: &str) -> anyhow::Result<Direction> {
        match text {
            "up" => Ok(Direction::Up),
            "down" => Ok(Direction::Down),
            "both" => Ok(Direction::Both),
            other => anyhow::bail!("--direction {other}: use up, down or both"),
        }
    }

    fn allows(self, action: SyncActionKind) -> bool {
        match action {
            SyncActionKind::Push | SyncActionKind::DeleteRemote => self != Direction::Down,
            SyncActionKind::Pull | SyncActionKind::DeleteLocal => self != Direction::Up,
        }
    }
}

/// How a followed replica's changes are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capture {
    /// A logical replication slot where PostgreSQL can decode logically, else polling
    /// (PostgreSQL) or scans (SQLite).
    Auto,
    /// A logical replication slot (PostgreSQL with wal2json); an error otherwise.
    Slot,
    /// Rows whose `updated_at` is newer than the last seen, the key breaking ties; deletes
    /// noticed by the keys. Any database speaking the PostgreSQL protocol.
    Poll,
    /// Every row, compared with the previous scan.
    Scan,
}

impl Capture {
    /// `auto`, `slot`, `poll` or `scan`.
    pub fn parse(text: &str) -> anyhow::Result<Capture> {
        match text {
            "auto" => Ok(Capture::Auto),
            "slot" => Ok(Capture::Slot),
            "poll" => Ok(Capture::Poll),
            "scan" => Ok(Capture::Scan),
            other => anyhow::bail!("--capture {other}: use auto, slot, poll or scan"),
        }
    }
}

/// What a sync job does.
#[derive(Clone, Debug)]
pub struct SyncJob {
    /// The local replica (fast, close to the application).
    pub local: ReplicaUrl,
    /// The remote replica (the durable primary).
    pub remote: ReplicaUrl,
    /// The tables to sync (`orders`, `public.orders`).
    pub tables: Vec<String>,
    /// Which way rows may flow.
    pub direction: Direction,
    /// Print the planned actions and change nothing.
    pub dry_run: bool,
    /// Build the local replica's tables from the remote (they must be missing or empty).
    pub restore: bool,
    /// Timely workers for the diff.
    pub workers: usize,
    /// The column that says when a row was written.
    pub updated_at_column: String,
    /// The column that says which replica wrote a row.
    pub origin_column: String,
    /// The origin of local rows without an origin column value.
    pub local_origin: String,
    /// The origin of remote rows without an origin column value.
    pub remote_origin: String,
    /// Rows per transaction when applying.
    pub batch_rows: usize,
    /// Where the applied actions are archived (`sync_actions`); `None` for nowhere.
    pub archive: Option<String>,
    /// How a followed replica's changes are read.
    pub capture: Capture,
    /// The SQL replica the applied actions are also upserted into (`sync_actions`).
    pub replica: Option<ReplicaParams>,
}

impl SyncJob {
    /// A job between two replicas with the defaults.
    pub fn new(local: ReplicaUrl, remote: ReplicaUrl, tables: Vec<String>) -> Self {
        Self {
            local,
            remote,
            tables,
            direction: Direction::Both,
            dry_run: false,
            restore: false,
            workers: 1,
            updated_at_column: "updated_at".into(),
            origin_column: "origin".into(),
            local_origin: "local".into(),
            remote_origin: "remote".into(),
            batch_rows: 1000,
            archive: None,
            capture: Capture::Auto,
            replica: None,
        }
    }

    /// Whether the job's direction lets `action` be applied.
    pub fn direction_allows(&self, action: SyncActionKind) -> bool {
        self.direction.allows(action)
    }

    /// Locks the spill directory the job's replica writer uses, for as long as the lock is
    /// held: two sync jobs spilling into one directory would interleave their batches. A dry
    /// run writes nothing and locks nothing. The archive is not locked: the sync job only adds
    /// files of its own, named by the time of each pass, beside those other jobs write.
    pub fn lock_directories(&self) -> anyhow::Result<Vec<DirLock>> {
        let mut dirs = Vec::new();
        if let Some(options) = self.replica.as_ref().filter(|_| !self.dry_run) {
            dirs.push((options.spill_dir.clone(), "spill directory", "--spill"));
        }
        dir_lock::lock_all(&dirs)
    }
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Rows read on each side.
    pub local_rows: u64,
    /// Rows read on the remote side.
    pub remote_rows: u64,
    /// Actions the diff planned (all of them with `--dry-run`).
    pub planned: u64,
    /// Rows written to the remote.
    pub pushed: u64,
    /// Rows written to the local replica.
    pub pulled: u64,
    /// Rows deleted on the local replica.
    pub deleted_local: u64,
    /// Rows deleted on the remote.
    pub deleted_remote: u64,
    /// Actions that were conflicts (logged in `sync_state`).
    pub conflicts: u64,
    /// Actions the direction held back.
    pub held_back: u64,
    /// How long the pass took.
    pub elapsed: Duration,
}

impl SyncSummary {
    /// The summary as JSON, with the `sync_*` counter names.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "sync_local_rows": self.local_rows,
            "sync_remote_rows": self.remote_rows,
            "sync_planned": self.planned,
            "sync_push": self.pushed,
            "sync_pull": self.pulled,
            "sync_delete_local": self.deleted_local,
            "sync_delete_remote": self.deleted_remote,
            "sync_conflicts": self.conflicts,
            "sync_held_back": self.held_back,
            "elapsed_s": self.elapsed.as_secs_f64(),
        })
    }
}

impl std::fmt::Display for SyncSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rows local {} remote {}, actions {}: push {}, pull {}, delete_local {}, delete_remote {}, conflicts {}, held back {}, {:.2}s",
            self.local_rows,
            self.remote_rows,
            self.planned,
            self.pushed,
            self.pulled,
            self.deleted_local,
            self.deleted_remote,
            self.conflicts,
            self.held_back,
            self.elapsed.as_secs_f64()
        )
    }
}

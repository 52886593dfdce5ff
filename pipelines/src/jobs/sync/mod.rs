//! The sync job: make a local replica and a remote one agree, last writer wins.
//!
//! One pass (`--once`): read the tables on both sides, turn every row into a version (its
//! `updated_at` and `origin` columns say when and where it was written), add a tombstone for
//! every row the replicas once agreed on that one side no longer has, and run the sync diff
//! (`vigil_operators::sync`) over them with the versions last agreed (`sync_agreed`). The
//! actions are applied in batches inside transactions with idempotent upserts and deletes, so
//! a pass interrupted anywhere repeats harmlessly; conflicts go to the `sync_state` log with
//! both versions; the agreed versions are recorded last. Applied rows keep the winning
//! version's `origin` and `updated_at`, so they read back as the same version on the other
//! side and are never sent back.

pub mod follow;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Map, Value};
use timely::dataflow::operators::capture::Extract;
use timely::dataflow::operators::{Capture as _, Input};
use tracing::info;
use vigil_datasets::changes::{key_of, row_text, time_of};
use vigil_operators::{
    Change, CurrentVersions, Record, RowKey, Side, SyncAction, SyncActionKind, SyncDiff, Version,
};

use crate::connect::column_type::ColumnType;
use crate::connect::migrations;
use crate::connect::replica::{Dialect, Replica, ReplicaUrl, TableInfo, quote, quote_column};

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
    pub replica: Option<crate::sinks::replica::ReplicaOptions>,
}

impl SyncJob {
    /// Whether the job's direction lets `action` be applied.
    pub fn direction_allows(&self, action: SyncActionKind) -> bool {
        self.direction.allows(action)
    }

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

/// One table's rows on both sides, by key.
struct Sides {
    info: TableInfo,
    local: BTreeMap<String, Map<String, Value>>,
    remote: BTreeMap<String, Map<String, Value>>,
    agreed: BTreeMap<String, Version>,
}

/// Runs one pass; returns what it did and the actions (planned, with `dry_run`).
pub fn run_once(job: &SyncJob) -> anyhow::Result<(SyncSummary, Vec<SyncAction>)> {
    let started = Instant::now();
    anyhow::ensure!(
        !job.tables.is_empty(),
        "no table to sync: name them with --table"
    );
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the I/O runtime")?,
    );
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
    let mut summary = SyncSummary::default();
    let mut all_actions = Vec::new();
    for table in &job.tables {
        if job.restore {
            restore_table(&mut local, &mut remote, table, job.dry_run)?;
        }
        let sides = read_sides(job, &mut local, &mut remote, table)?;
        summary.local_rows += sides.local.len() as u64;
        summary.remote_rows += sides.remote.len() as u64;
        let actions = diff(job, &sides)?;
        summary.planned += actions.len() as u64;
        if !job.dry_run {
            apply(job, &mut local, &mut remote, &sides, &actions, &mut summary)?;
        }
        all_actions.extend(actions);
    }
    if !job.dry_run {
        for replica in [&mut local, &mut remote] {
            migrations::ensure_roles(replica, &job.tables)?;
        }
        archive_actions(job, &runtime, &all_actions)?;
    }
    summary.elapsed = started.elapsed();
    Ok((summary, all_actions))
}

/// Writes applied actions to the archive's `sync_actions` table, if the job has an archive.
pub(crate) fn archive_actions(
    job: &SyncJob,
    runtime: &tokio::runtime::Runtime,
    actions: &[SyncAction],
) -> anyhow::Result<()> {
    if actions.is_empty() {
        return Ok(());
    }
    replicate_actions(job, actions)?;
    let Some(archive) = &job.archive else {
        return Ok(());
    };
    let location = crate::sinks::archive::ArchiveLocation::parse(archive)?;
    let run = format!("sync-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"));
    let files = runtime.block_on(crate::sinks::archive::write_records(&location, actions, &run))?;
    info!(message = "Sync actions archived.", files, archive = %location);
    Ok(())
}

/// Upserts applied actions into the replica's `sync_actions` table, if the job has a
/// replica; each pass is one transaction, its position the pass's wall-clock time.
fn replicate_actions(job: &SyncJob, actions: &[SyncAction]) -> anyhow::Result<()> {
    let Some(options) = &job.replica else {
        return Ok(());
    };
    use crate::sinks::replica::{Batch, Output, ReplicaSink, ReplicaTable, TableChange};
    let sink = ReplicaSink::start(options.clone(), "sync", &[Output::SyncActions], 1, None)?;
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
        rows = stats.rows.load(std::sync::atomic::Ordering::Relaxed),
        spilled = stats.spilled.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

/// Creates the local table from the remote's columns when it is missing; refuses when it
/// holds rows (a restore builds a new replica, it does not merge into one).
fn restore_table(
    local: &mut Replica,
    remote: &mut Replica,
    table: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    let info = remote.table(table)?;
    if local.table_exists(table)? {
        let rows = local.query_text(
            &format!("SELECT CAST(count(*) AS TEXT) FROM {}", quote(table)),
            &[],
        )?;
        let count = rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .flatten()
            .unwrap_or_default();
        anyhow::ensure!(
            count == "0",
            "--restore builds a new local replica, but {table} on {} holds {count} rows: drop \
             it, or sync without --restore",
            local.name()
        );
        return Ok(());
    }
    let columns: Vec<String> = info
        .columns
        .iter()
        .map(|(name, kind)| {
            let kind = portable_type(kind, local.dialect()).with_context(|| {
                format!(
                    "--restore cannot create {table} on {}: column {name:?} has type {kind:?} \
                     on {}, which is not one it maps (integer kinds, numeric, real, double \
                     precision, text, varchar, char, boolean, timestamp, date, time, interval, \
                     bytea, json, jsonb, uuid, arrays and enums as text): create the table, \
                     empty, on the local replica, then restore again",
                    local.name(),
                    remote.name()
                )
            })?;
            Ok(format!("{} {kind}", quote_column(name)))
        })
        .collect::<anyhow::Result<_>>()?;
    let key: Vec<String> = info.key.iter().map(|k| quote_column(k)).collect();
    let sql = format!(
        "CREATE TABLE {} ({}, PRIMARY KEY ({}))",
        quote(table),
        columns.join(", "),
        key.join(", ")
    );
    if dry_run {
        println!("-- would create: {sql}");
        return Ok(());
    }
    local.execute_batch(&sql)?;
    info!(message = "Local table created from the remote's columns.", table, replica = %local.name());
    Ok(())
}

/// A column type of the remote as the local dialect declares it; `None` for a type PostgreSQL
/// would be given that vigil does not know. The remote's text never reaches the statement:
/// PostgreSQL gets the canonical spelling of an allowlisted type, SQLite one of three
/// affinities.
fn portable_type(kind: &str, dialect: Dialect) -> Option<String> {
    match dialect {
        // An unknown type is an error rather than text: a restore builds the twin of the
        // durable replica, and a column quietly changed to text would compare, sort and
        // constrain differently from the remote's without anyone having chosen that.
        Dialect::Postgres => ColumnType::parse(kind).map(ColumnType::postgres),
        // SQLite stores any value under any declared type; the affinity only keeps numbers
        // numbers, so an unknown type is text there, as it always was.
        Dialect::Sqlite => Some(
            if kind.contains("int") || kind.contains("INT") {
                "INTEGER"
            } else if ["double", "real", "numeric", "REAL", "NUMERIC"]
                .iter()
                .any(|t| kind.contains(t))
            {
                "REAL"
            } else {
                "TEXT"
            }
            .into(),
        ),
    }
}

fn read_sides(
    job: &SyncJob,
    local: &mut Replica,
    remote: &mut Replica,
    table: &str,
) -> anyhow::Result<Sides> {
    let info = remote
        .table(table)?
        .newer_wins(&job.updated_at_column, &job.origin_column);
    let local_info = match local.table(table) {
        Ok(info) => info,
        Err(_) if job.dry_run && job.restore => info.clone(),
        Err(error) => return Err(error),
    };
    anyhow::ensure!(
        local_info.key == info.key,
        "table {table} has primary key ({}) on {} but ({}) on {}: the replicas must share the key",
        local_info.key.join(", "),
        local.name(),
        info.key.join(", "),
        remote.name()
    );
    let by_key =
        |rows: Vec<Map<String, Value>>| -> anyhow::Result<BTreeMap<String, Map<String, Value>>> {
            rows.into_iter()
                .map(|row| Ok((key_of(&row, &info.key).map_err(anyhow::Error::msg)?, row)))
                .collect()
        };
    let local_rows = if local.table_exists(table)? {
        by_key(local.scan(&local_info)?)?
    } else {
        BTreeMap::new()
    };
    let remote_rows = by_key(remote.scan(&info)?)?;
    let agreed = if local.table_exists("sync_agreed")? {
        crate::jobs::sync::follow::load_agreed(local, &[table.to_owned()])?
            .into_iter()
            .map(|((_, key), version)| (key, version))
            .collect()
    } else {
        BTreeMap::new()
    };
    Ok(Sides {
        info,
        local: local_rows,
        remote: remote_rows,
        agreed,
    })
}

/// The version a row is in on `side`.
pub(crate) fn version_of(job: &SyncJob, side: Side, row: &Map<String, Value>) -> Version {
    let origin = match row.get(&job.origin_column) {
        Some(Value::String(o)) if !o.is_empty() => o.clone(),
        _ => match side {
            Side::Local => job.local_origin.clone(),
            Side::Remote => job.remote_origin.clone(),
        },
    };
    Version {
        updated_at: row
            .get(&job.updated_at_column)
            .and_then(time_of)
            .unwrap_or(0),
        origin,
        row: Some(row_text(row)),
        position: "scan".into(),
    }
}

/// The sync diff over one table's sides.
fn diff(job: &SyncJob, sides: &Sides) -> anyhow::Result<Vec<SyncAction>> {
    let table = &sides.info.name;
    let now = chrono::Utc::now().timestamp_millis();
    let mut changes: Vec<(Side, Change)> = Vec::new();
    let mut push = |side: Side, key: &str, version: Version| {
        changes.push((side, version.into_change(table, key)));
    };
    for (side, rows) in [(Side::Local, &sides.local), (Side::Remote, &sides.remote)] {
        for (key, row) in rows {
            push(side, key, version_of(job, side, row));
        }
        // A row both once held and this side no longer has was deleted here; the scan cannot
        // tell when, so the tombstone takes the time it is noticed.
        for key in sides.agreed.keys().filter(|k| !rows.contains_key(*k)) {
            let origin = match side {
                Side::Local => job.local_origin.clone(),
                Side::Remote => job.remote_origin.clone(),
            };
            let tombstone = Version {
                updated_at: now,
                origin,
                row: None,
                position: "scan".into(),
            };
            push(side, key, tombstone);
        }
    }
    let agreed: Vec<(RowKey, Version)> = sides
        .agreed
        .iter()
        .map(|(key, v)| ((table.clone(), key.clone()), v.clone()))
        .collect();
    Ok(diff_dataflow(changes, agreed, job.workers))
}

/// Runs the sync operators over one round of changes; the final actions.
fn diff_dataflow(
    changes: Vec<(Side, Change)>,
    agreed: Vec<(RowKey, Version)>,
    workers: usize,
) -> Vec<SyncAction> {
    let changes = Arc::new(changes);
    let agreed = Arc::new(agreed);
    let out: Arc<Mutex<Vec<(SyncAction, isize)>>> = Arc::default();
    let sink = out.clone();
    let result = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut agreed_in =
            differential_dataflow::input::InputSession::<u64, (RowKey, Version), isize>::new();
        let (mut changes_in, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (changes_in, changes) = scope.new_input::<Vec<(Side, Change)>>();
            let diff = changes
                .current_versions()
                .sync_diff(agreed_in.to_collection(scope));
            (changes_in, diff.inner.capture())
        });
        for change in changes.iter().skip(index).step_by(peers) {
            changes_in.send(change.clone());
        }
        for version in agreed.iter().skip(index).step_by(peers) {
            agreed_in.insert(version.clone());
        }
        drop(changes_in);
        drop(agreed_in);
        while worker.step_or_park(None) {}
        let updates: Vec<(SyncAction, isize)> = captured
            .extract()
            .into_iter()
            .flat_map(|(_, data)| data)
            .map(|(action, _, diff)| (action, diff))
            .collect();
        if let Ok(mut all) = sink.lock() {
            all.extend(updates);
        }
    });
    if let Ok(guards) = result {
        drop(guards.join());
    }
    let mut net: BTreeMap<SyncAction, isize> = BTreeMap::new();
    for (action, diff) in out
        .lock()
        .map(|mut o| std::mem::take(&mut *o))
        .unwrap_or_default()
    {
        *net.entry(action).or_default() += diff;
    }
    net.into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(a, _)| a)
        .collect()
}

/// A row's key columns as an object, from its key array.
pub(crate) fn key_row(info: &TableInfo, key: &str) -> anyhow::Result<Map<String, Value>> {
    let values: Vec<Value> = serde_json::from_str(key).with_context(|| format!("key {key}"))?;
    anyhow::ensure!(
        values.len() == info.key.len(),
        "key {key} does not fit ({})",
        info.key.join(", ")
    );
    Ok(info.key.iter().cloned().zip(values).collect())
}

pub(crate) fn parse_row(text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(text)? {
        Value::Object(map) => Ok(map),
        _ => anyhow::bail!("a row that is not a JSON object"),
    }
}

fn apply(
    job: &SyncJob,
    local: &mut Replica,
    remote: &mut Replica,
    sides: &Sides,
    actions: &[SyncAction],
    summary: &mut SyncSummary,
) -> anyhow::Result<()> {
    let info = &sides.info;
    let mut to_local = (Vec::new(), Vec::new());
    let mut to_remote = (Vec::new(), Vec::new());
    let mut applied: BTreeMap<&str, &SyncAction> = BTreeMap::new();
    for action in actions {
        if !job.direction_allows(action.action) {
            summary.held_back += 1;
            continue;
        }
        let target = match action.action {
            SyncActionKind::Push | SyncActionKind::DeleteRemote => &mut to_remote,
            SyncActionKind::Pull | SyncActionKind::DeleteLocal => &mut to_local,
        };
        match &action.row {
            Some(row) => target.0.push(parse_row(row)?),
            None => target.1.push(key_row(info, &action.key)?),
        }
        match action.action {
            SyncActionKind::Push => summary.pushed += 1,
            SyncActionKind::Pull => summary.pulled += 1,
            SyncActionKind::DeleteLocal => summary.deleted_local += 1,
            SyncActionKind::DeleteRemote => summary.deleted_remote += 1,
        }
        summary.conflicts += u64::from(action.conflict);
        applied.insert(&action.key, action);
    }
    let batch = job.batch_rows.max(1);
    for (replica, (upserts, deletes)) in [(&mut *remote, &to_remote), (&mut *local, &to_local)] {
        for chunk in upserts.chunks(batch) {
            replica.apply(info, chunk, &[])?;
        }
        for chunk in deletes.chunks(batch) {
            replica.apply(info, &[], chunk)?;
        }
    }
    // The conflict log: both versions, and which won.
    let conflicts: Vec<Map<String, Value>> = applied
        .values()
        .filter(|a| a.conflict)
        .map(|a| {
            let side = |rows: &BTreeMap<String, Map<String, Value>>| {
                rows.get(&a.key)
                    .map(|r| (row_text(r), r.get(&job.updated_at_column).and_then(time_of)))
            };
            let (l, r) = (side(&sides.local), side(&sides.remote));
            conflict_row(info, &a.key, l, r, &a.winner_origin)
        })
        .collect();
    if !conflicts.is_empty() {
        log_conflicts(local, &conflicts)?;
    }
    // What the replicas agree on now: every row written, and every row already equal.
    let planned: BTreeSet<&str> = actions.iter().map(|a| a.key.as_str()).collect();
    let agreed_table = local.table("sync_agreed")?;
    let mut agree = Vec::new();
    let mut forget = Vec::new();
    let keys: BTreeSet<&String> = sides
        .local
        .keys()
        .chain(sides.remote.keys())
        .chain(sides.agreed.keys())
        .collect();
    for key in keys {
        let now = match applied.get(key.as_str()) {
            Some(action) => action.row.as_ref().map(|row| {
                (
                    action.winner_updated_at,
                    action.winner_origin.clone(),
                    row.clone(),
                )
            }),
            None if planned.contains(key.as_str()) => continue, // held back
            None => match (sides.local.get(key), sides.remote.get(key)) {
                (Some(row), Some(_)) => {
                    let v = version_of(job, Side::Local, row);
                    v.row.map(|r| (v.updated_at, v.origin, r))
                }
                _ => None,
            },
        };
        match now {
            Some((at, origin, row))
                if sides.agreed.get(key).and_then(|a| a.row.as_ref()) != Some(&row) =>
            {
                agree.push(agreed_row(&info.name, key, at.into(), &origin, &row));
            }
            Some(_) => {}
            None if sides.agreed.contains_key(key) => {
                forget.push(object(
                    serde_json::json!({"table_name": info.name, "row_key": key}),
                ));
            }
            None => {}
        }
    }
    for chunk in agree.chunks(batch) {
        local.apply(&agreed_table, chunk, &[])?;
    }
    for chunk in forget.chunks(batch) {
        local.apply(&agreed_table, &[], chunk)?;
    }
    info!(message = "Table synced.", table = %info.name, applied = applied.len(), conflicts = conflicts.len());
    Ok(())
}

/// A row of the conflict log: both versions (row text and time), and the winner.
pub(crate) fn conflict_row(
    info: &TableInfo,
    key: &str,
    local: Option<(String, Option<i64>)>,
    remote: Option<(String, Option<i64>)>,
    winner: &str,
) -> Map<String, Value> {
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

/// A JSON object literal as a row.
fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A `sync_agreed` row.
pub(crate) fn agreed_row(
    table: &str,
    key: &str,
    at: Value,
    origin: &str,
    row: &str,
) -> Map<String, Value> {
    object(serde_json::json!({
        "table_name": table,
        "row_key": key,
        "updated_at": at,
        "origin": origin,
        "row_json": row,
    }))
}

/// Prints planned actions as NDJSON (a dry run).
pub fn print_actions(actions: &[SyncAction]) {
    for action in actions {
        println!("{}", action.to_json());
    }
}

impl SyncJob {
    /// The job the command line describes; with neither replica given, the demonstration on
    /// two SQLite files under `./vigil-sync/` (prepared by [`prepare_demo`]).
    pub fn from_args(args: &crate::cli::SyncArgs) -> anyhow::Result<SyncJob> {
        let (local, remote, tables) = match (&args.local, &args.remote) {
            (Some(local), Some(remote)) => (
                ReplicaUrl::parse(local)?,
                ReplicaUrl::parse(remote)?,
                args.tables.clone(),
            ),
            (None, None) => {
                let dir = std::path::Path::new("vigil-sync");
                prepare_demo(dir)?;
                let tables = if args.tables.is_empty() {
                    vec![DEMO_TABLE.to_owned()]
                } else {
                    args.tables.clone()
                };
                (
                    ReplicaUrl::Sqlite(dir.join("local.db")),
                    ReplicaUrl::Sqlite(dir.join("remote.db")),
                    tables,
                )
            }
            _ => anyhow::bail!(
                "give both --local and --remote, or neither for the SQLite demonstration"
            ),
        };
        anyhow::ensure!(
            !tables.is_empty(),
            "no table to sync: name them with --table"
        );
        Ok(SyncJob {
            direction: Direction::parse(&args.direction)?,
            capture: Capture::parse(&args.capture)?,
            dry_run: args.dry_run,
            restore: args.restore,
            workers: args.workers.max(1),
            batch_rows: args.batch_rows.max(1),
            archive: (args.archive != "none").then(|| args.archive.clone()),
            replica: match args.replica.as_deref() {
                None => Some(crate::config::default_replica()?),
                Some("none" | "off") => None,
                Some(url) => Some(crate::sinks::replica::ReplicaOptions {
                    role: args.replica_role.clone(),
                    migrate: args.replica_migrate,
                    ..crate::sinks::replica::ReplicaOptions::new(ReplicaUrl::parse(url)?)
                }),
            }
            .map(|options| match &args.spill {
                Some(dir) => crate::sinks::replica::ReplicaOptions {
                    spill_dir: dir.join("replica"),
                    ..options
                },
                None => options,
            }),
            ..SyncJob::new(local, remote, tables)
        })
    }
}

impl SyncJob {
    /// Locks the spill directory the job's replica writer uses, for as long as the lock is
    /// held: two sync jobs spilling into one directory would interleave their batches. A dry
    /// run writes nothing and locks nothing. The archive is not locked: the sync job only adds
    /// files of its own, named by the time of each pass, beside those other jobs write.
    pub fn lock_directories(&self) -> anyhow::Result<Vec<crate::runtime::dir_lock::DirLock>> {
        let mut dirs = Vec::new();
        if let Some(options) = self.replica.as_ref().filter(|_| !self.dry_run) {
            dirs.push((options.spill_dir.clone(), "spill directory", "--spill"));
        }
        crate::runtime::dir_lock::lock_all(&dirs)
    }
}

/// The demonstration's table.
pub const DEMO_TABLE: &str = "vehicles";

/// Creates the demonstration's two SQLite replicas under `dir` unless they exist: a
/// `vehicles` table the replicas once agreed on, then edited on both sides — an edit on
/// each, an edit of the same row on both (a conflict), a row added on each, a row deleted
/// on the remote.
pub fn prepare_demo(dir: &std::path::Path) -> anyhow::Result<()> {
    let local_path = dir.join("local.db");
    if local_path.exists() {
        return Ok(());
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    );
    let schema = format!(
        "CREATE TABLE {DEMO_TABLE} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, \
         updated_at INTEGER NOT NULL, origin TEXT NOT NULL DEFAULT 'local')"
    );
    let base = 1_767_225_600_000i64; // 2026-01-01
    let agreed: Vec<(i64, &str, &str)> = vec![
        (1, "falcon-1", "parked"),
        (2, "falcon-2", "parked"),
        (3, "rover-3", "charging"),
        (4, "rover-4", "parked"),
        (5, "drone-5", "flying"),
    ];
    let insert = |rows: &[(i64, &str, &str, i64, &str)]| {
        rows.iter()
            .map(|(id, name, status, at, origin)| {
                format!(
                    "INSERT INTO {DEMO_TABLE} VALUES ({id}, '{name}', '{status}', {}, '{origin}');",
                    base + at
                )
            })
            .collect::<String>()
    };
    let seeded: Vec<(i64, &str, &str, i64, &str)> = agreed
        .iter()
        .map(|(id, n, s)| (*id, *n, *s, 0, "remote"))
        .collect();
    let mut replicas = Vec::new();
    for (file, edits) in [
        (
            "local.db",
            format!(
                "UPDATE {DEMO_TABLE} SET status = 'on patrol', updated_at = {}, origin = 'local' WHERE id = 2;\
                 UPDATE {DEMO_TABLE} SET status = 'maintenance', updated_at = {}, origin = 'local' WHERE id = 4;{}",
                base + 60_000,
                base + 90_000,
                insert(&[(6, "rover-6", "parked", 30_000, "local")])
            ),
        ),
        (
            "remote.db",
            format!(
                "UPDATE {DEMO_TABLE} SET status = 'docked', updated_at = {}, origin = 'remote' WHERE id = 3;\
                 UPDATE {DEMO_TABLE} SET status = 'retired', updated_at = {}, origin = 'remote' WHERE id = 4;\
                 DELETE FROM {DEMO_TABLE} WHERE id = 5;{}",
                base + 45_000,
                base + 120_000,
                insert(&[(7, "drone-7", "flying", 50_000, "remote")])
            ),
        ),
    ] {
        let url = ReplicaUrl::Sqlite(dir.join(file));
        let mut replica = Replica::connect(&url, &runtime)?;
        migrations::migrate(&mut replica, false)?;
        replica.execute_batch(&format!("{schema};{}", insert(&seeded)))?;
        replicas.push((replica, edits));
    }
    // Both once agreed on the seeded rows: the local replica remembers it.
    let (local, _) = &mut replicas[0];
    let info = local.table(DEMO_TABLE)?;
    let rows = local.scan(&info)?;
    let agreed_rows: Vec<Map<String, Value>> = rows
        .iter()
        .map(|row| {
            let key = key_of(row, &info.key).unwrap_or_default();
            let at = row.get("updated_at").cloned().unwrap_or(Value::Null);
            agreed_row(DEMO_TABLE, &key, at, "remote", &row_text(row))
        })
        .collect();
    let agreed_table = local.table("sync_agreed")?;
    local.apply(&agreed_table, &agreed_rows, &[])?;
    for (replica, edits) in &mut replicas {
        replica.execute_batch(edits)?;
    }
    info!(message = "Demonstration replicas created.", dir = %dir.display());
    Ok(())
}

//! Continuous sync: the diff dataflow lives across rounds and is fed what changed on each side.
//!
//! Round 0 reads both sides whole. After that, each round takes from each side only what
//! changed: from a PostgreSQL replica, the changes its logical replication slot decoded since
//! the last round (the slot is created before the first read, so nothing falls between); from
//! any other replica, a comparison of a fresh scan with the previous one. The rows named by
//! the slot are read back with `row_to_json`, so both ways of seeing a row give the same text.
//! The differential dataflow updates the current versions and the diff incrementally; the
//! actions not applied yet are applied, conflicts logged, agreed versions recorded, and only
//! then is the slot advanced — a crash repeats the round.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use timely::dataflow::operators::{Input, Inspect, Probe};
use tracing::{info, warn};
use vigil_datasets::changes::{FeedOptions, key_of, row_text};
use vigil_operators::{
    Change, ChangeOp, CurrentVersions, RowKey, Side, SyncAction, SyncActionKind, SyncDiff, Version,
};

use crate::runtime::metrics::Metrics;
use crate::connect::migrations;
use crate::sources::pg_capture::LogicalSlot;
use crate::connect::replica::{Dialect, Replica, TableInfo};
use crate::jobs::sync::{Capture, SyncJob, SyncSummary, agreed_row, key_row, parse_row, version_of};

/// One round's input to the diff dataflow.
struct RoundInput {
    changes: Vec<(Side, Change)>,
    agreed: Vec<((RowKey, Version), isize)>,
}

/// The sync operators running on timely workers in the background, fed round by round.
struct DiffRunner {
    rounds: Option<mpsc::Sender<RoundInput>>,
    done: mpsc::Receiver<()>,
    updates: mpsc::Receiver<(SyncAction, isize)>,
    /// The diff's contents: every action with its count.
    contents: BTreeMap<SyncAction, isize>,
    guards: Option<timely::communication::initialize::WorkerGuards<()>>,
}

impl DiffRunner {
    fn start(workers: usize) -> anyhow::Result<DiffRunner> {
        let (round_tx, round_rx) = mpsc::channel::<RoundInput>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (update_tx, update_rx) = mpsc::channel::<(SyncAction, isize)>();
        let round_rx = Arc::new(Mutex::new(Some(round_rx)));
        let done_tx = Arc::new(Mutex::new(Some(done_tx)));
        let update_tx = Arc::new(Mutex::new(update_tx));
        // The round every worker's inputs advance to, and whether the input has ended.
        let round = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
            let index = worker.index();
            let Ok(sender) = update_tx.lock().map(|s| s.clone()) else {
                return;
            };
            let probe = timely::dataflow::ProbeHandle::new();
            let mut agreed_in =
                differential_dataflow::input::InputSession::<u64, (RowKey, Version), isize>::new();
            let mut changes_in = worker.dataflow::<u64, _, _>(|scope| {
                let (changes_in, changes) = scope.new_input::<Vec<(Side, Change)>>();
                changes
                    .current_versions()
                    .sync_diff(agreed_in.to_collection(scope))
                    .inner
                    .inspect(move |(action, _time, diff)| {
                        let _ = sender.send((action.clone(), *diff));
                    })
                    .probe_with(&probe);
                changes_in
            });
            if index == 0 {
                let rounds = round_rx.lock().ok().and_then(|mut r| r.take());
                let done = done_tx.lock().ok().and_then(|mut d| d.take());
                if let (Some(rounds), Some(done)) = (rounds, done) {
                    loop {
                        match rounds.recv_timeout(Duration::from_millis(1)) {
                            Ok(input) => {
                                for change in input.changes {
                                    changes_in.send(change);
                                }
                                for (version, diff) in input.agreed {
                                    agreed_in.update(version, diff);
                                }
                                let next = round.fetch_add(1, Ordering::SeqCst) + 1;
                                changes_in.advance_to(next);
                                agreed_in.advance_to(next);
                                agreed_in.flush();
                                while probe.less_than(&next) {
                                    worker.step();
                                }
                                let _ = done.send(());
                            }
                            Err(RecvTimeoutError::Timeout) => {
                                worker.step();
                            }
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                }
                closed.store(true, Ordering::SeqCst);
            } else {
                // The other workers keep their (empty) inputs at worker 0's round.
                while !closed.load(Ordering::SeqCst) {
                    let at = round.load(Ordering::SeqCst);
                    if *changes_in.time() < at {
                        changes_in.advance_to(at);
                        agreed_in.advance_to(at);
                        agreed_in.flush();
                    }
                    worker.step_or_park(Some(Duration::from_millis(1)));
                }
            }
            drop(changes_in);
            drop(agreed_in);
            while worker.step_or_park(None) {}
        })
        .map_err(|e| anyhow::anyhow!("starting the sync workers failed: {e}"))?;
        Ok(DiffRunner {
            rounds: Some(round_tx),
            done: done_rx,
            updates: update_rx,
            contents: BTreeMap::new(),
            guards: Some(guards),
        })
    }

    /// Feeds one round and returns the diff after it.
    fn round(&mut self, input: RoundInput) -> anyhow::Result<Vec<SyncAction>> {
        let rounds = self
            .rounds
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the sync workers stopped"))?;
        rounds
            .send(input)
            .map_err(|_| anyhow::anyhow!("the sync workers stopped"))?;
        self.done
            .recv()
            .map_err(|_| anyhow::anyhow!("the sync workers stopped"))?;
        while let Ok((action, diff)) = self.updates.try_recv() {
            let count = self.contents.entry(action).or_default();
            *count += diff;
        }
        self.contents.retain(|_, count| *count != 0);
        Ok(self
            .contents
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(action, _)| action.clone())
            .collect())
    }
}

impl Drop for DiffRunner {
    fn drop(&mut self) {
        self.rounds = None;
        if let Some(guards) = self.guards.take() {
            drop(guards.join());
        }
    }
}

/// How a side's changes are read.
enum Feed {
    /// A PostgreSQL logical replication slot, and the position to advance it to once the
    /// round is applied.
    Slot {
        slot: LogicalSlot,
        upto: Option<String>,
    },
    /// Scans compared with the previous scan: (table, key) → row text.
    Scan { last: BTreeMap<RowKey, String> },
    /// Rows whose `updated_at` is past the last seen (the key breaks ties), per table; and
    /// the keys seen, to notice deletes.
    Poll {
        marks: BTreeMap<String, Map<String, Value>>,
        known: std::collections::BTreeSet<RowKey>,
    },
}

/// One side: its replica, feed, tables and the rows it holds now (for the conflict log).
struct SideState {
    side: Side,
    replica: Replica,
    feed: Feed,
    /// The rows as last seen, by table and key.
    rows: BTreeMap<RowKey, Map<String, Value>>,
}

/// Follows both replicas until `stop`, one round per `interval` (randomized by half either
/// way); `on_round` gets each round's summary, and `metrics` the `sync_*` counters.
pub fn follow(
    job: &SyncJob,
    stop: &AtomicBool,
    interval: Duration,
    metrics: &Metrics,
    mut on_round: impl FnMut(&SyncSummary),
) -> anyhow::Result<SyncSummary> {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?,
    );
    let mut total = SyncSummary::default();
    let mut sides = Vec::new();
    for (side, url) in [(Side::Local, &job.local), (Side::Remote, &job.remote)] {
        let mut replica = Replica::connect(url, &runtime)?;
        migrations::migrate(&mut replica, false)?;
        migrations::ensure_roles(&mut replica, &job.tables)?;
        let feed = open_feed(job, side, &mut replica)?;
        sides.push(SideState {
            side,
            replica,
            feed,
            rows: BTreeMap::new(),
        });
    }
    let infos: Vec<TableInfo> = {
        let remote = &mut sides[1].replica;
        job.tables
            .iter()
            .map(|t| {
                Ok(remote
                    .table(t)?
                    .newer_wins(&job.updated_at_column, &job.origin_column))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut runner = DiffRunner::start(job.workers)?;
    // A round that takes far longer than the interval means the job is stuck.
    metrics.stale_after((interval * 10).max(Duration::from_secs(60)));
    let mut agreed: BTreeMap<RowKey, Version> = load_agreed(&mut sides[0].replica, &job.tables)?;
    let mut agreed_input: Vec<((RowKey, Version), isize)> = agreed
        .iter()
        .map(|(k, v)| ((k.clone(), v.clone()), 1))
        .collect();
    let mut applied: BTreeMap<RowKey, SyncAction> = BTreeMap::new();
    let mut first = true;
    let mut written: Vec<(Side, Change)> = Vec::new();
    loop {
        let started = std::time::Instant::now();
        // What the job wrote last round, as the side it wrote to now holds it: a poll by
        // `updated_at` would not see it (the winner keeps its older time), the others repeat it.
        let mut changes = std::mem::take(&mut written);
        let mut dead_letters = Vec::new();
        for state in &mut sides {
            changes.extend(read_side(
                job,
                state,
                &infos,
                &agreed,
                first,
                &mut dead_letters,
            )?);
        }
        if let Some(archive) = job.archive.as_deref().filter(|_| !dead_letters.is_empty()) {
            let location = crate::sinks::archive::ArchiveLocation::parse(archive)?;
            let run = format!("sync-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"));
            runtime.block_on(crate::sinks::archive::write_records(
                &location,
                &dead_letters,
                &run,
            ))?;
        }
        first = false;
        let touched: std::collections::BTreeSet<RowKey> = changes
            .iter()
            .map(|(_, c)| (c.table.clone(), c.key.clone()))
            .collect();
        let input = RoundInput {
            changes,
            agreed: std::mem::take(&mut agreed_input),
        };
        let actions = runner.round(input)?;
        let mut summary = SyncSummary {
            planned: actions.len() as u64,
            ..SyncSummary::default()
        };
        let by_row: BTreeMap<RowKey, &SyncAction> = actions
            .iter()
            .map(|a| ((a.table.clone(), a.key.clone()), a))
            .collect();
        // Applied actions stay noted while the diff still holds them unchanged.
        applied.retain(|key, action| by_row.get(key).is_some_and(|a| *a == action));
        let fresh: Vec<&SyncAction> = actions
            .iter()
            .filter(|a| !applied.contains_key(&(a.table.clone(), a.key.clone())))
            .collect();
        for info in &infos {
            let mine: Vec<&SyncAction> = fresh
                .iter()
                .copied()
                .filter(|a| a.table == info.name)
                .collect();
            apply_round(job, &mut sides, info, &mine, &mut summary)?;
            for action in mine.iter().filter(|a| job.direction_allows(a.action)) {
                let key = (action.table.clone(), action.key.clone());
                applied.insert(key.clone(), (*action).clone());
                // What both will hold once applied: the winner.
                let winner = Version {
                    updated_at: action.winner_updated_at,
                    origin: action.winner_origin.clone(),
                    row: action.row.clone(),
                    position: "agreed".into(),
                };
                let (target, index) = match action.action {
                    SyncActionKind::Pull | SyncActionKind::DeleteLocal => (Side::Local, 0),
                    SyncActionKind::Push | SyncActionKind::DeleteRemote => (Side::Remote, 1),
                };
                let copy = Version {
                    position: "written".into(),
                    ..winner.clone()
                };
                written.push((target, copy.into_change(&key.0, &key.1)));
                match action.row.as_deref().map(parse_row).transpose()? {
                    Some(row) => sides[index].rows.insert(key.clone(), row),
                    None => sides[index].rows.remove(&key),
                };
                if let Some(before) = agreed.insert(key.clone(), winner.clone()) {
                    agreed_input.push(((key.clone(), before), -1));
                }
                agreed_input.push(((key, winner), 1));
            }
            record_agreed(&mut sides[0].replica, info, &mine, job)?;
        }
        // Rows both sides hold alike, unless an action is about them, are agreed on too: a
        // later change on just one side is then no conflict.
        let mut alike = Vec::new();
        for key in &touched {
            if by_row.contains_key(key) {
                continue;
            }
            let (Some(l), Some(r)) = (sides[0].rows.get(key), sides[1].rows.get(key)) else {
                continue;
            };
            let version = version_of(job, Side::Local, l);
            if version.row != Some(row_text(r))
                || agreed.get(key).map(|a| &a.row) == Some(&version.row)
            {
                continue;
            }
            let version = Version {
                position: "agreed".into(),
                ..version
            };
            if let Some(before) = agreed.insert(key.clone(), version.clone()) {
                agreed_input.push(((key.clone(), before), -1));
            }
            agreed_input.push(((key.clone(), version.clone()), 1));
            alike.push(agreed_row(
                &key.0,
                &key.1,
                version.updated_at.into(),
                &version.origin,
                version.row.as_deref().unwrap_or_default(),
            ));
        }
        if !alike.is_empty() {
            let table = sides[0].replica.table("sync_agreed")?;
            for chunk in alike.chunks(job.batch_rows.max(1)) {
                sides[0].replica.apply(&table, chunk, &[])?;
            }
        }
        // Applied: the slots may move on.
        for state in &mut sides {
            if let Feed::Slot { slot, upto } = &mut state.feed
                && let Some(lsn) = upto.take()
            {
                slot.advance(&mut state.replica, &lsn)?;
            }
        }
        summary.elapsed = started.elapsed();
        summary.local_rows = sides[0].rows.len() as u64;
        summary.remote_rows = sides[1].rows.len() as u64;
        total.local_rows = summary.local_rows;
        total.remote_rows = summary.remote_rows;
        total.planned = summary.planned;
        total.pushed += summary.pushed;
        total.pulled += summary.pulled;
        total.deleted_local += summary.deleted_local;
        total.deleted_remote += summary.deleted_remote;
        total.conflicts += summary.conflicts;
        total.held_back = summary.held_back;
        let archived: Vec<SyncAction> = fresh
            .iter()
            .filter(|a| job.direction_allows(a.action))
            .map(|a| (*a).clone())
            .collect();
        crate::jobs::sync::archive_actions(job, &runtime, &archived)?;
        record(metrics, &summary, &archived);
        on_round(&summary);
        let pause = interval.mul_f64(rand::random_range(0.5..1.5));
        let until = std::time::Instant::now() + pause;
        while std::time::Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                return Ok(total);
            }
            std::thread::sleep(Duration::from_millis(20).min(pause));
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(total);
        }
    }
}

/// The feed `job.capture` asks for; with `auto`, a slot for a PostgreSQL side that can decode
/// logically, polling for other PostgreSQL sides, scans for SQLite.
fn open_feed(job: &SyncJob, side: Side, replica: &mut Replica) -> anyhow::Result<Feed> {
    let postgres = replica.dialect() == Dialect::Postgres;
    let poll = |replica: &mut Replica| -> anyhow::Result<Feed> {
        for table in &job.tables {
            let info = replica.table(table)?;
            let nullable = info
                .columns
                .iter()
                .any(|(c, _)| *c == job.updated_at_column)
                && replica_allows_null(replica, table, &job.updated_at_column)?;
            anyhow::ensure!(
                !nullable && info.has(&job.updated_at_column),
                "polling {table} on {} by {} needs that column NOT NULL (a NULL would stop the \
                 poll): add the constraint, or follow with --capture scan",
                replica.name(),
                job.updated_at_column
            );
        }
        Ok(Feed::Poll {
            marks: BTreeMap::new(),
            known: Default::default(),
        })
    };
    match job.capture {
        Capture::Scan => {
            return Ok(Feed::Scan {
                last: BTreeMap::new(),
            });
        }
        Capture::Poll => return poll(replica),
        Capture::Slot | Capture::Auto if postgres => {}
        Capture::Slot => {
            anyhow::bail!("--capture slot needs PostgreSQL; {} is not", replica.name())
        }
        Capture::Auto => {
            return Ok(Feed::Scan {
                last: BTreeMap::new(),
            });
        }
    }
    let name = format!(
        "vigil_sync_{:016x}",
        xxhash_rust::xxh3::xxh3_64(
            format!("{side:?}{}{:?}", replica.name(), job.tables).as_bytes()
        )
    );
    // Temporary: the first round reads everything anyway, so a slot need not outlive the job.
    let slot = LogicalSlot::new(&name, &job.tables).and_then(|slot| {
        let slot = slot.temporary();
        slot.ensure(replica)?;
        Ok(slot)
    });
    match (slot, job.capture) {
        (Ok(slot), _) => {
            info!(message = "Following the replica's changes through a logical replication slot.", replica = %replica.name(), slot = %name);
            Ok(Feed::Slot { slot, upto: None })
        }
        (Err(error), Capture::Slot) => Err(error),
        (Err(error), _) => {
            warn!(
                message = "No logical decoding on this replica; it is polled by updated_at instead (deletes are noticed by its keys).",
                replica = %replica.name(),
                error = %format!("{error:#}")
            );
            poll(replica)
        }
    }
}

/// Whether a column of a table may hold NULL.
fn replica_allows_null(replica: &mut Replica, table: &str, column: &str) -> anyhow::Result<bool> {
    let rows = match replica.dialect() {
        Dialect::Postgres => {
            let (schema, name) = table.rsplit_once('.').unwrap_or(("public", table));
            replica.query_text(
                "SELECT is_nullable::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
                &[schema, name, column],
            )?
        }
        Dialect::Sqlite => replica.query_text(
            "SELECT CASE WHEN \"notnull\" = 1 THEN 'NO' ELSE 'YES' END \
             FROM pragma_table_info($1) WHERE name = $2",
            &[table, column],
        )?,
    };
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .cloned()
        .flatten()
        .as_deref()
        != Some("NO"))
}

/// The versions both replicas last agreed on, of the given tables (from `sync_agreed` on the
/// local replica).
pub(crate) fn load_agreed(
    local: &mut Replica,
    tables: &[String],
) -> anyhow::Result<BTreeMap<RowKey, Version>> {
    let mut agreed = BTreeMap::new();
    for table in tables {
        // `$1` is a parameter in both dialects (SQLite binds it by position too).
        let rows = local.query_text(
            "SELECT row_key, CAST(updated_at AS TEXT), origin, row_json FROM sync_agreed WHERE table_name = $1",
            &[table],
        )?;
        for row in rows {
            let mut row = row.into_iter();
            if let (Some(Some(key)), Some(Some(at)), Some(Some(origin)), Some(json)) =
                (row.next(), row.next(), row.next(), row.next())
            {
                let version = Version {
                    updated_at: at.parse().unwrap_or(0),
                    origin,
                    row: json,
                    position: "agreed".into(),
                };
                agreed.insert((table.clone(), key), version);
            }
        }
    }
    Ok(agreed)
}

/// The job's name of a table a feed names (`public.orders` is the job's `orders`).
fn job_table<'a>(job: &'a SyncJob, feed_table: &str) -> Option<&'a String> {
    job.tables.iter().find(|t| {
        *t == feed_table
            || (!t.contains('.') && feed_table.strip_prefix("public.") == Some(t.as_str()))
    })
}

/// What changed on one side since the last round (everything, in the first round).
fn read_side(
    job: &SyncJob,
    state: &mut SideState,
    infos: &[TableInfo],
    agreed: &BTreeMap<RowKey, Version>,
    first: bool,
    dead_letters: &mut Vec<vigil_operators::DeadLetter>,
) -> anyhow::Result<Vec<(Side, Change)>> {
    let mut round = Round {
        job,
        side: state.side,
        now: chrono::Utc::now().timestamp_millis(),
        out: Vec::new(),
    };
    for info in infos {
        match &mut state.feed {
            Feed::Poll { marks, known } => {
                // Rows written since the last round, page by page.
                loop {
                    let rows = state.replica.poll(
                        info,
                        &job.updated_at_column,
                        marks.get(&info.name),
                        POLL_PAGE,
                    )?;
                    let full = rows.len() == POLL_PAGE;
                    for row in rows {
                        let mark: Map<String, Value> = row
                            .iter()
                            .filter(|(c, _)| **c == job.updated_at_column || info.key.contains(c))
                            .map(|(c, v)| (c.clone(), v.clone()))
                            .collect();
                        marks.insert(info.name.clone(), mark);
                        round.row(&info.name, &info.key, &row, &mut state.rows)?;
                    }
                    if !full {
                        break;
                    }
                }
                // Deletes leave no row to poll: the keys tell.
                let keys: std::collections::BTreeSet<RowKey> = state
                    .replica
                    .scan_keys(info)?
                    .iter()
                    .map(|k| {
                        Ok((
                            info.name.clone(),
                            key_of(k, &info.key).map_err(anyhow::Error::msg)?,
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?;
                let before = if first {
                    of_table(agreed.keys(), &info.name)
                } else {
                    of_table(known.iter(), &info.name)
                };
                for key in before.into_iter().filter(|k| !keys.contains(k)) {
                    round.gone(&key, round.now, &mut state.rows);
                }
                known.retain(|k| k.0 != info.name);
                known.extend(keys);
            }
            Feed::Scan { last } => {
                let seen = scan_table(&mut state.replica, info)?;
                let before = if first {
                    of_table(agreed.keys(), &info.name)
                } else {
                    of_table(last.keys(), &info.name)
                };
                for (key, row) in &seen {
                    if first || last.get(key) != Some(&row_text(row)) {
                        round.row(&key.0, &info.key, row, &mut state.rows)?;
                    }
                }
                for key in before.into_iter().filter(|k| !seen.contains_key(k)) {
                    round.gone(&key, round.now, &mut state.rows);
                }
                last.retain(|k, _| k.0 != info.name);
                last.extend(seen.iter().map(|(k, row)| (k.clone(), row_text(row))));
            }
            Feed::Slot { .. } if first => {
                // The slot was made before this read, so nothing falls between the two.
                let seen = scan_table(&mut state.replica, info)?;
                for row in seen.values() {
                    round.row(&info.name, &info.key, row, &mut state.rows)?;
                }
                for key in agreed
                    .keys()
                    .filter(|k| k.0 == info.name && !seen.contains_key(*k))
                {
                    round.gone(key, round.now, &mut state.rows);
                }
            }
            Feed::Slot { .. } => {}
        }
    }
    if let Feed::Slot { slot, upto } = &mut state.feed {
        let options = FeedOptions {
            origin: round.origin(),
            updated_at_column: job.updated_at_column.clone(),
            ..FeedOptions::default()
        };
        let captured = slot.peek(&mut state.replica, 10_000, &options)?;
        for dead in &captured.dead_letters {
            warn!(message = "A change the slot gave could not be used; it goes to the errors table.", origin = %dead.origin, reason = %dead.reason);
        }
        dead_letters.extend(captured.dead_letters);
        // What the slot gives again after the first read is in it already: a repeated version
        // changes nothing.
        *upto = captured.upto;
        for info in infos {
            let mut keys: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
            let mut deletes: BTreeMap<String, i64> = BTreeMap::new();
            for c in captured
                .changes
                .iter()
                .filter(|c| job_table(job, &c.table) == Some(&info.name))
            {
                // The key in the table's own key order, from the row (or the old key) itself.
                let row = c
                    .after
                    .as_deref()
                    .or(c.before.as_deref())
                    .map(parse_row)
                    .transpose()?
                    .unwrap_or_default();
                let key = key_of(&row, &info.key).map_err(anyhow::Error::msg)?;
                if c.op == ChangeOp::Delete {
                    keys.remove(&key);
                    deletes.insert(key, c.updated_at.unwrap_or(round.now));
                } else {
                    deletes.remove(&key);
                    keys.insert(key.clone(), key_row(info, &key)?);
                }
            }
            // The rows as they are now, read the same way a scan reads them.
            let key_rows: Vec<Map<String, Value>> = keys.into_values().collect();
            for row in state.replica.fetch(info, &key_rows)? {
                round.row(&info.name, &info.key, &row, &mut state.rows)?;
            }
            for (key, at) in deletes {
                round.gone(&(info.name.clone(), key), at, &mut state.rows);
            }
        }
    }
    Ok(round.out)
}

/// The rows of `table` among `keys`.
fn of_table<'a>(keys: impl Iterator<Item = &'a RowKey>, table: &str) -> Vec<RowKey> {
    keys.filter(|k| k.0 == table).cloned().collect()
}

/// Rows asked for per poll.
const POLL_PAGE: usize = 10_000;

/// One side's changes of one round, being collected.
struct Round<'a> {
    job: &'a SyncJob,
    side: Side,
    now: i64,
    out: Vec<(Side, Change)>,
}

impl Round<'_> {
    fn origin(&self) -> String {
        match self.side {
            Side::Local => self.job.local_origin.clone(),
            Side::Remote => self.job.remote_origin.clone(),
        }
    }

    /// A row as it is now.
    fn row(
        &mut self,
        table: &str,
        key_columns: &[String],
        row: &Map<String, Value>,
        rows: &mut BTreeMap<RowKey, Map<String, Value>>,
    ) -> anyhow::Result<()> {
        let key = key_of(row, key_columns).map_err(anyhow::Error::msg)?;
        let version = version_of(self.job, self.side, row);
        self.out.push((self.side, change(table, &key, version)));
        rows.insert((table.to_owned(), key), row.clone());
        Ok(())
    }

    /// A row that is gone, deleted at `at`.
    fn gone(&mut self, key: &RowKey, at: i64, rows: &mut BTreeMap<RowKey, Map<String, Value>>) {
        let version = Version {
            updated_at: at,
            origin: self.origin(),
            row: None,
            position: "feed".into(),
        };
        self.out.push((self.side, change(&key.0, &key.1, version)));
        rows.remove(key);
    }
}

/// A table's rows by key.
fn scan_table(
    replica: &mut Replica,
    info: &TableInfo,
) -> anyhow::Result<BTreeMap<RowKey, Map<String, Value>>> {
    replica
        .scan(info)?
        .into_iter()
        .map(|row| {
            let key = key_of(&row, &info.key).map_err(anyhow::Error::msg)?;
            Ok(((info.name.clone(), key), row))
        })
        .collect()
}

fn change(table: &str, key: &str, version: Version) -> Change {
    version.into_change(table, key)
}

/// Rows to upsert and keys to delete on one side.
type Writes = (Vec<Map<String, Value>>, Vec<Map<String, Value>>);

/// Applies one table's new actions of a round, in batches, and logs its conflicts.
fn apply_round(
    job: &SyncJob,
    sides: &mut [SideState],
    info: &TableInfo,
    actions: &[&SyncAction],
    summary: &mut SyncSummary,
) -> anyhow::Result<()> {
    let mut writes: [Writes; 2] = Default::default();
    let mut conflicts = Vec::new();
    for action in actions {
        if !job.direction_allows(action.action) {
            summary.held_back += 1;
            continue;
        }
        let target = match action.action {
            SyncActionKind::Pull | SyncActionKind::DeleteLocal => 0,
            SyncActionKind::Push | SyncActionKind::DeleteRemote => 1,
        };
        match &action.row {
            Some(row) => writes[target].0.push(parse_row(row)?),
            None => writes[target].1.push(key_row(info, &action.key)?),
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
            let row = |i: usize| {
                sides[i].rows.get(&key).map(|r| {
                    (
                        row_text(r),
                        r.get(&job.updated_at_column)
                            .and_then(vigil_datasets::changes::time_of),
                    )
                })
            };
            let (l, r) = (row(0), row(1));
            conflicts.push(crate::jobs::sync::conflict_row(
                info,
                &action.key,
                l,
                r,
                &action.winner_origin,
            ));
        }
    }
    let batch = job.batch_rows.max(1);
    for (state, (upserts, deletes)) in sides.iter_mut().zip(&writes) {
        for chunk in upserts.chunks(batch) {
            state.replica.apply(info, chunk, &[])?;
        }
        for chunk in deletes.chunks(batch) {
            state.replica.apply(info, &[], chunk)?;
        }
    }
    if !conflicts.is_empty() {
        crate::jobs::sync::log_conflicts(&mut sides[0].replica, &conflicts)?;
    }
    Ok(())
}

/// Records the winners of applied actions as agreed (deleted rows are forgotten).
fn record_agreed(
    local: &mut Replica,
    info: &TableInfo,
    actions: &[&SyncAction],
    job: &SyncJob,
) -> anyhow::Result<()> {
    let table = local.table("sync_agreed")?;
    let (mut agree, mut forget) = (Vec::new(), Vec::new());
    for action in actions.iter().filter(|a| job.direction_allows(a.action)) {
        match &action.row {
            Some(row) => agree.push(agreed_row(
                &info.name,
                &action.key,
                action.winner_updated_at.into(),
                &action.winner_origin,
                row,
            )),
            None => forget.push(agreed_row(&info.name, &action.key, Value::Null, "", "")),
        }
    }
    local.apply(&table, &agree, &forget)
}

/// A round's figures into the `sync_*` metrics.
fn record(metrics: &Metrics, summary: &SyncSummary, applied: &[SyncAction]) {
    const APPLIED: &str = "Actions applied, by kind.";
    for (kind, n) in [
        ("push", summary.pushed),
        ("pull", summary.pulled),
        ("delete_local", summary.deleted_local),
        ("delete_remote", summary.deleted_remote),
    ] {
        metrics.add(
            "sync_actions_total",
            &format!("kind=\"{kind}\""),
            APPLIED,
            n,
        );
    }
    metrics.add(
        "sync_conflicts_total",
        "",
        "Rows both replicas changed since they last agreed; the loser is in sync_state.",
        summary.conflicts,
    );
    metrics.add("sync_rounds_total", "", "Rounds run.", 1);
    metrics.set(
        "sync_pending_actions",
        "",
        "Actions in the diff after the last round (held back by --direction, or awaiting their echo).",
        summary.planned,
    );
    for (side, rows) in [
        ("local", summary.local_rows),
        ("remote", summary.remote_rows),
    ] {
        metrics.set(
            "sync_rows",
            &format!("side=\"{side}\""),
            "Rows of the synced tables.",
            rows,
        );
    }
    // How long the newest write applied this round waited: from its updated_at to now.
    let now = chrono::Utc::now().timestamp_millis();
    let lag = applied
        .iter()
        .filter(|a| a.winner_updated_at > 0)
        .map(|a| (now - a.winner_updated_at).max(0) as u64)
        .min();
    if let Some(lag) = lag {
        metrics.set(
            "sync_lag_milliseconds",
            "",
            "From the newest write applied in the last round to its application.",
            lag,
        );
    }
    metrics.beat();
}

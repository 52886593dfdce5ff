//! How each side's changes are read, round by round: a PostgreSQL logical replication slot,
//! polling by `updated_at`, or scans compared with the previous one. Whatever the feed, the
//! first round reads both sides whole and adds a tombstone for every row the replicas once
//! agreed on that a side no longer has; a `--once` pass is that first round over scans. The
//! rows named by a slot are read back with `row_to_json`, so both ways of seeing a row give
//! the same text.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use tracing::{info, warn};
use vigil_datasets::changes::{FeedParams, key_of, row_text};
use vigil_operators::{Change, ChangeOp, DeadLetter, RowKey, Side, Version};

use crate::connect::replica::{Dialect, Replica, TableInfo};
use crate::jobs::sync::agreed::{key_row, parse_row, version_of};
use crate::jobs::sync::job::{Capture, SyncJob};
use crate::sources::pg_capture::LogicalSlot;

/// How a side's changes are read.
pub(crate) enum Feed {
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
        known: BTreeSet<RowKey>,
    },
}

impl Feed {
    /// Whole tables, compared with the previous scan.
    pub fn scan() -> Feed {
        Feed::Scan {
            last: BTreeMap::new(),
        }
    }
}

/// One side: its replica, feed, and the rows it holds now (for the conflict log).
pub(crate) struct SideState {
    /// Which side it is.
    pub side: Side,
    /// Its connection.
    pub replica: Replica,
    /// How its changes are read.
    pub feed: Feed,
    /// The rows as last seen, by table and key.
    pub rows: BTreeMap<RowKey, Map<String, Value>>,
    /// The job's tables the side does not have yet, read as empty: only in the dry run of a
    /// `--restore`, which creates nothing.
    pub absent: BTreeSet<String>,
}

impl SideState {
    /// A side whose rows are yet to be read.
    pub fn new(side: Side, replica: Replica, feed: Feed) -> SideState {
        SideState {
            side,
            replica,
            feed,
            rows: BTreeMap::new(),
            absent: BTreeSet::new(),
        }
    }

    /// Lets a slot forget what the last round read, once that round is applied; a crash
    /// before this repeats the round.
    pub fn advance(&mut self) -> anyhow::Result<()> {
        if let Feed::Slot { slot, upto } = &mut self.feed
            && let Some(lsn) = upto.take()
        {
            slot.advance(&mut self.replica, &lsn)?;
        }
        Ok(())
    }
}

/// The feed `job.capture` asks for; with `auto`, a slot for a PostgreSQL side that can decode
/// logically, polling for other PostgreSQL sides, scans for SQLite.
pub(crate) fn open_feed(job: &SyncJob, side: Side, replica: &mut Replica) -> anyhow::Result<Feed> {
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
            return Ok(Feed::scan());
        }
        Capture::Poll => return poll(replica),
        Capture::Slot | Capture::Auto if postgres => {}
        Capture::Slot => {
            anyhow::bail!("--capture slot needs PostgreSQL; {} is not", replica.name())
        }
        Capture::Auto => {
            return Ok(Feed::scan());
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

/// The job's name of a table a feed names (`public.orders` is the job's `orders`).
fn job_table<'a>(job: &'a SyncJob, feed_table: &str) -> Option<&'a String> {
    job.tables.iter().find(|t| {
        *t == feed_table
            || (!t.contains('.') && feed_table.strip_prefix("public.") == Some(t.as_str()))
    })
}

/// What changed on one side since the last round (everything, in the first round).
pub(crate) fn read_side(
    job: &SyncJob,
    state: &mut SideState,
    infos: &[TableInfo],
    agreed: &BTreeMap<RowKey, Version>,
    first: bool,
    dead_letters: &mut Vec<DeadLetter>,
) -> anyhow::Result<Vec<(Side, Change)>> {
    let mut reading = Reading {
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
                        reading.row(&info.name, &info.key, &row, &mut state.rows)?;
                    }
                    if !full {
                        break;
                    }
                }
                // Deletes leave no row to poll: the keys tell.
                let keys: BTreeSet<RowKey> = state
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
                    reading.gone(&key, reading.now, &mut state.rows);
                }
                known.retain(|k| k.0 != info.name);
                known.extend(keys);
            }
            Feed::Scan { last } => {
                let seen = scan_table(&mut state.replica, &state.absent, info)?;
                let before = if first {
                    of_table(agreed.keys(), &info.name)
                } else {
                    of_table(last.keys(), &info.name)
                };
                for (key, row) in &seen {
                    if first || last.get(key) != Some(&row_text(row)) {
                        reading.row(&key.0, &info.key, row, &mut state.rows)?;
                    }
                }
                for key in before.into_iter().filter(|k| !seen.contains_key(k)) {
                    reading.gone(&key, reading.now, &mut state.rows);
                }
                last.retain(|k, _| k.0 != info.name);
                last.extend(seen.iter().map(|(k, row)| (k.clone(), row_text(row))));
            }
            Feed::Slot { .. } if first => {
                // The slot was made before this read, so nothing falls between the two.
                let seen = scan_table(&mut state.replica, &state.absent, info)?;
                for row in seen.values() {
                    reading.row(&info.name, &info.key, row, &mut state.rows)?;
                }
                for key in agreed
                    .keys()
                    .filter(|k| k.0 == info.name && !seen.contains_key(*k))
                {
                    reading.gone(key, reading.now, &mut state.rows);
                }
            }
            Feed::Slot { .. } => {}
        }
    }
    if let Feed::Slot { slot, upto } = &mut state.feed {
        let options = FeedParams {
            origin: reading.origin(),
            updated_at_column: job.updated_at_column.clone(),
            ..FeedParams::default()
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
                    deletes.insert(key, c.updated_at.unwrap_or(reading.now));
                } else {
                    deletes.remove(&key);
                    keys.insert(key.clone(), key_row(info, &key)?);
                }
            }
            // The rows as they are now, read the same way a scan reads them.
            let key_rows: Vec<Map<String, Value>> = keys.into_values().collect();
            for row in state.replica.fetch(info, &key_rows)? {
                reading.row(&info.name, &info.key, &row, &mut state.rows)?;
            }
            for (key, at) in deletes {
                reading.gone(&(info.name.clone(), key), at, &mut state.rows);
            }
        }
    }
    Ok(reading.out)
}

/// The rows of `table` among `keys`.
fn of_table<'a>(keys: impl Iterator<Item = &'a RowKey>, table: &str) -> Vec<RowKey> {
    keys.filter(|k| k.0 == table).cloned().collect()
}

/// Rows asked for per poll.
const POLL_PAGE: usize = 10_000;

/// One side's changes of one round, being collected.
struct Reading<'a> {
    job: &'a SyncJob,
    side: Side,
    now: i64,
    out: Vec<(Side, Change)>,
}

impl Reading<'_> {
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

/// A table's rows by key; none of a table the side does not have (`absent`).
fn scan_table(
    replica: &mut Replica,
    absent: &BTreeSet<String>,
    info: &TableInfo,
) -> anyhow::Result<BTreeMap<RowKey, Map<String, Value>>> {
    if absent.contains(&info.name) {
        return Ok(BTreeMap::new());
    }
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

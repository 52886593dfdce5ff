//! Folding what a part emits into per-table changes until a batch is cut: telemetry as it
//! comes, alerts into open alerts and their history, collections into the newest record per
//! key.

use std::collections::HashMap;
use std::hash::Hash;

use arrow::record_batch::RecordBatch;
use tracing::warn;
use vigil_operators::archaeology::entanglements::Entanglement;
use vigil_operators::model::{Alert, AlertStatus, Pattern, Record, Session};

use super::batch::TableChange;
use super::write::written_columns;
use crate::connect::tables::ReplicaTable;

/// Per-key folding of what a part emits, until a batch is cut.
pub(super) trait Fold: 'static {
    /// What the stream carries.
    type Item;
    /// Takes items received at `time` (dropping what is before `skip_before`).
    fn receive(&mut self, time: u64, items: &mut Vec<Self::Item>, skip_before: i64) -> u64;
    /// Rows waiting.
    fn pending(&self) -> usize;
    /// The changes of everything before `before` (everything with `None`).
    fn cut(&mut self, before: Option<u64>) -> Vec<TableChange>;
}

/// Telemetry: batches of readings as they are, projected to the metadata columns.
pub(super) struct TelemetryFold {
    pending: Vec<RecordBatch>,
    rows: usize,
    payload: bool,
}

impl TelemetryFold {
    /// Nothing pending; the readings' ciphertext goes too with `payload`.
    pub(super) fn new(payload: bool) -> TelemetryFold {
        TelemetryFold {
            pending: Vec::new(),
            rows: 0,
            payload,
        }
    }
}

impl Fold for TelemetryFold {
    type Item = RecordBatch;

    fn receive(&mut self, time: u64, items: &mut Vec<RecordBatch>, skip_before: i64) -> u64 {
        let skip = (time as i64) < skip_before;
        let mut skipped = 0;
        for batch in items.drain(..) {
            if skip {
                skipped += batch.num_rows() as u64;
                continue;
            }
            let columns = written_columns(ReplicaTable::TelemetryMeta, self.payload);
            let indices: Vec<usize> = columns
                .iter()
                .filter_map(|c| batch.schema().index_of(&c.name).ok())
                .collect();
            match batch.project(&indices) {
                Ok(projected) => {
                    self.rows += projected.num_rows();
                    self.pending.push(projected);
                }
                Err(error) => {
                    warn!(message = "Readings could not be replicated.", %error);
                }
            }
        }
        skipped
    }

    fn pending(&self) -> usize {
        self.rows
    }

    fn cut(&mut self, _before: Option<u64>) -> Vec<TableChange> {
        // Readings are never retracted: everything received goes, complete or not.
        self.rows = 0;
        if self.pending.is_empty() {
            return Vec::new();
        }
        vec![TableChange {
            table: ReplicaTable::TelemetryMeta,
            deletes: Vec::new(),
            upserts: std::mem::take(&mut self.pending),
        }]
    }
}

/// Alerts: a raise upserts the open alert, a clear deletes it; both are appended to the
/// history.
/// Each alert with the time it was emitted at, which decides its batch.
#[derive(Default)]
pub(super) struct AlertFold {
    pending: Vec<(u64, Alert)>,
}

impl Fold for AlertFold {
    type Item = Alert;

    fn receive(&mut self, time: u64, items: &mut Vec<Alert>, skip_before: i64) -> u64 {
        if (time as i64) < skip_before {
            let skipped = items.len() as u64;
            items.clear();
            return skipped;
        }
        self.pending.extend(items.drain(..).map(|a| (time, a)));
        0
    }

    fn pending(&self) -> usize {
        self.pending.len()
    }

    fn cut(&mut self, before: Option<u64>) -> Vec<TableChange> {
        let mut ready: Vec<Alert> = match before {
            Some(bound) => self
                .pending
                .extract_if(.., |(time, _)| *time < bound)
                .map(|(_, a)| a)
                .collect(),
            None => self.pending.drain(..).map(|(_, a)| a).collect(),
        };
        if ready.is_empty() {
            return Vec::new();
        }
        ready.sort_unstable_by(|a, b| {
            (a.ts, &a.alert_id, a.status).cmp(&(b.ts, &b.alert_id, b.status))
        });
        let mut latest: HashMap<&str, &Alert> = HashMap::new();
        let mut history: HashMap<(&str, AlertStatus), &Alert> = HashMap::new();
        for alert in &ready {
            latest.insert(alert.alert_id.as_str(), alert);
            history.insert((alert.alert_id.as_str(), alert.status), alert);
        }
        let (open, closed): (Vec<Alert>, Vec<Alert>) = latest
            .into_values()
            .cloned()
            .partition(|a| a.status == AlertStatus::Raised);
        let history: Vec<Alert> = history.into_values().cloned().collect();
        let mut alerts = TableChange {
            table: ReplicaTable::Alerts,
            deletes: Vec::new(),
            upserts: Vec::new(),
        };
        let mut log = TableChange {
            table: ReplicaTable::AlertHistory,
            deletes: Vec::new(),
            upserts: Vec::new(),
        };
        push_batch(&mut alerts.deletes, &closed);
        push_batch(&mut alerts.upserts, &open);
        push_batch(&mut log.upserts, &history);
        vec![alerts, log]
    }
}

/// Records of `rows` as one batch, when there are any.
fn push_batch<R: Record>(into: &mut Vec<RecordBatch>, rows: &[R]) {
    if rows.is_empty() {
        return;
    }
    match R::to_batch(rows) {
        Ok(batch) => into.push(batch),
        // Records are built by vigil and always fit their own schema.
        Err(error) => warn!(message = "Records could not be replicated.", table = R::TABLE, %error),
    }
}

/// A record kept in a replica table by its key.
pub trait Keyed: Record + Clone + Eq + Hash + 'static {
    /// The key's value, as one comparable string.
    fn replica_key(&self) -> String;
}

impl Keyed for Pattern {
    fn replica_key(&self) -> String {
        self.pattern_id.to_string()
    }
}

impl Keyed for Session {
    fn replica_key(&self) -> String {
        format!("{}\u{0}{}", self.key, self.start)
    }
}

impl Keyed for Entanglement {
    fn replica_key(&self) -> String {
        format!("{}\u{0}{}", self.a, self.b)
    }
}

/// A differential collection's updates, folded per key: the newest record with a positive
/// count is upserted; a key whose records were all retracted is deleted.
pub(super) struct CollectionFold<R> {
    table: ReplicaTable,
    pending: Vec<(R, u64, isize)>,
}

impl<R> CollectionFold<R> {
    /// Nothing pending, for `table`.
    pub(super) fn new(table: ReplicaTable) -> CollectionFold<R> {
        CollectionFold {
            table,
            pending: Vec::new(),
        }
    }
}

impl<R: Keyed> Fold for CollectionFold<R> {
    type Item = (R, u64, isize);

    fn receive(&mut self, _time: u64, items: &mut Vec<(R, u64, isize)>, skip_before: i64) -> u64 {
        let mut skipped = 0;
        for update in items.drain(..) {
            if (update.1 as i64) < skip_before {
                skipped += 1;
            } else {
                self.pending.push(update);
            }
        }
        skipped
    }

    fn pending(&self) -> usize {
        self.pending.len()
    }

    fn cut(&mut self, before: Option<u64>) -> Vec<TableChange> {
        let mut ready: Vec<(R, u64, isize)> = match before {
            Some(bound) => self.pending.extract_if(.., |u| u.1 < bound).collect(),
            None => std::mem::take(&mut self.pending),
        };
        if ready.is_empty() {
            return Vec::new();
        }
        ready.sort_by_key(|u| u.1);
        let mut state: HashMap<String, (R, bool)> = HashMap::new();
        let mut at = 0;
        while at < ready.len() {
            let time = ready[at].1;
            let end = at + ready[at..].iter().take_while(|u| u.1 == time).count();
            // Consolidate the time's updates, then apply retractions before insertions.
            let mut net: HashMap<&R, isize> = HashMap::new();
            for (record, _, diff) in &ready[at..end] {
                *net.entry(record).or_default() += diff;
            }
            let (gone, came): (Vec<_>, Vec<_>) = net
                .into_iter()
                .filter(|(_, d)| *d != 0)
                .partition(|(_, d)| *d < 0);
            for (record, _) in gone {
                state.insert(record.replica_key(), (record.clone(), false));
            }
            for (record, _) in came {
                state.insert(record.replica_key(), (record.clone(), true));
            }
            at = end;
        }
        let (kept, dropped): (Vec<_>, Vec<_>) = state.into_values().partition(|(_, up)| *up);
        let kept: Vec<R> = kept.into_iter().map(|(r, _)| r).collect();
        let dropped: Vec<R> = dropped.into_iter().map(|(r, _)| r).collect();
        let mut change = TableChange {
            table: self.table,
            deletes: Vec::new(),
            upserts: Vec::new(),
        };
        push_batch(&mut change.deletes, &dropped);
        push_batch(&mut change.upserts, &kept);
        vec![change]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, BTreeSet};

    use compact_str::format_compact;
    use rand::{RngExt, SeedableRng};

    use super::*;

    /// Applies cut changes to a model of the table: deletes, then upserts, by key.
    fn apply<R: Keyed>(model: &mut BTreeMap<String, R>, changes: Vec<TableChange>) {
        for change in changes {
            for batch in &change.deletes {
                for record in R::from_batch(batch).unwrap() {
                    model.remove(&record.replica_key());
                }
            }
            for batch in &change.upserts {
                for record in R::from_batch(batch).unwrap() {
                    model.insert(record.replica_key(), record);
                }
            }
        }
    }

    /// A collection of pairs changed at random over time, its updates shuffled within each
    /// time, cut into batches at random frontiers: the table the cuts build equals the
    /// collection's final content, and equals its content at every frontier cut at.
    #[test]
    fn collection_folds_equal_a_sequential_reference() {
        for seed in 0..20 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut current: BTreeMap<String, Entanglement> = BTreeMap::new();
            let mut updates: Vec<(Entanglement, u64, isize)> = Vec::new();
            let mut snapshots: Vec<BTreeMap<String, Entanglement>> = Vec::new();
            for time in 0..200u64 {
                let mut at_time = Vec::new();
                for _ in 0..rng.random_range(0..4) {
                    let a = format_compact!("dev-{}", rng.random_range(0..6));
                    let pair = Entanglement {
                        a: a.clone(),
                        b: "hub".into(),
                        together: rng.random_range(1..50),
                        lift_milli: 1_500,
                        since: time as i64,
                    };
                    let key = pair.replica_key();
                    if let Some(old) = current.remove(&key) {
                        at_time.push((old, time, -1));
                    }
                    if rng.random_bool(0.7) {
                        current.insert(key, pair.clone());
                        at_time.push((pair, time, 1));
                    }
                }
                // A record inserted and retracted at the same time nets to nothing.
                if rng.random_bool(0.2) {
                    let ghost = Entanglement {
                        a: "ghost".into(),
                        b: "hub".into(),
                        together: 1,
                        lift_milli: 1,
                        since: 0,
                    };
                    at_time.push((ghost.clone(), time, 1));
                    at_time.push((ghost, time, -1));
                }
                for i in (1..at_time.len()).rev() {
                    at_time.swap(i, rng.random_range(0..=i));
                }
                updates.extend(at_time);
                snapshots.push(current.clone());
            }
            let mut fold = CollectionFold {
                table: ReplicaTable::Entanglements,
                pending: Vec::new(),
            };
            let mut model = BTreeMap::new();
            let mut frontier = 0u64;
            for chunk in updates.chunks(7) {
                let mut items = chunk.to_vec();
                fold.receive(chunk[0].1, &mut items, i64::MIN);
                let seen = chunk.last().map_or(0, |u| u.1);
                if rng.random_bool(0.3) && seen > frontier {
                    frontier = rng.random_range(frontier + 1..=seen);
                    apply(&mut model, fold.cut(Some(frontier)));
                    assert_eq!(model, snapshots[frontier as usize - 1], "seed {seed}");
                }
            }
            apply(&mut model, fold.cut(None));
            assert_eq!(model, current, "seed {seed}");
        }
    }

    /// Raises and clears of many alerts, cut at random frontiers: `alerts` ends with the
    /// alerts still open, `alert_history` with every raise and clear once.
    #[test]
    fn alert_folds_equal_a_sequential_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut fold = AlertFold::default();
        let (mut open, mut history) = (BTreeMap::new(), BTreeMap::new());
        let (mut expected_open, mut expected_history) = (BTreeSet::new(), BTreeSet::new());
        let mut raised: Vec<String> = Vec::new();
        let mut frontier = 0;
        for time in 0..500u64 {
            let alert = if !raised.is_empty() && rng.random_bool(0.4) {
                let id = raised.swap_remove(rng.random_range(0..raised.len()));
                expected_open.remove(&id);
                alert(&id, time, AlertStatus::Cleared)
            } else {
                let id = format!("a{time}");
                raised.push(id.clone());
                expected_open.insert(id.clone());
                alert(&id, time, AlertStatus::Raised)
            };
            expected_history.insert((alert.alert_id.to_string(), alert.status));
            fold.receive(time, &mut vec![alert], i64::MIN);
            if rng.random_bool(0.1) {
                frontier = rng.random_range(frontier..=time + 1);
                for change in fold.cut(Some(frontier)) {
                    let target = match change.table {
                        ReplicaTable::Alerts => &mut open,
                        _ => &mut history,
                    };
                    for batch in &change.deletes {
                        for a in Alert::from_batch(batch).unwrap() {
                            target.remove(&(a.alert_id.to_string(), a.status));
                            target.remove(&(a.alert_id.to_string(), AlertStatus::Raised));
                        }
                    }
                    for batch in &change.upserts {
                        for a in Alert::from_batch(batch).unwrap() {
                            let key = (a.alert_id.to_string(), a.status);
                            assert!(
                                change.table == ReplicaTable::Alerts || !target.contains_key(&key),
                                "history written twice: {key:?}"
                            );
                            target.insert(key, a);
                        }
                    }
                }
            }
        }
        for change in fold.cut(None) {
            let target = match change.table {
                ReplicaTable::Alerts => &mut open,
                _ => &mut history,
            };
            for batch in &change.deletes {
                for a in Alert::from_batch(batch).unwrap() {
                    target.remove(&(a.alert_id.to_string(), AlertStatus::Raised));
                }
            }
            for batch in &change.upserts {
                for a in Alert::from_batch(batch).unwrap() {
                    target.insert((a.alert_id.to_string(), a.status), a);
                }
            }
        }
        let open: BTreeSet<String> = open.into_keys().map(|(id, _)| id).collect();
        assert_eq!(open, expected_open);
        assert_eq!(
            history.into_keys().collect::<BTreeSet<_>>(),
            expected_history
        );
    }

    fn alert(id: &str, ts: u64, status: AlertStatus) -> Alert {
        Alert {
            alert_id: id.into(),
            guard: "zscore".into(),
            severity: "warning".into(),
            source: "veh-0".into(),
            name: "altitude_m".into(),
            ts: ts as i64,
            window_start: ts as i64,
            window_end: ts as i64,
            observed: 1.0,
            expected: 0.0,
            score: 4.0,
            status,
            reaction: "telemetry-alerts".into(),
        }
    }
}

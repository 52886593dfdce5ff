//! The sync diff against a plain sequential reference, at 1 and 2 workers, on seeded histories
//! with updates, deletes, repeats, late versions and rows that were copied across; then the
//! diff applied, after which it must be empty.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use differential_dataflow::input::InputSession;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::operators::capture::Extract;
use timely::dataflow::operators::{Capture, Input, Probe};
use vigil_operators::*;

/// A change of one row on one side, sent in round `round`.
#[derive(Clone, Debug)]
struct Step {
    round: u64,
    side: Side,
    change: Change,
}

fn change(table: &str, key: u32, version: &Version) -> Change {
    Change {
        table: table.into(),
        key: format!("[{key}]"),
        op: if version.row.is_some() {
            ChangeOp::Update
        } else {
            ChangeOp::Delete
        },
        before: None,
        after: version.row.clone(),
        updated_at: Some(version.updated_at),
        origin: version.origin.clone(),
        position: version.position.clone(),
    }
}

fn origin(side: Side) -> &'static str {
    match side {
        Side::Local => "local",
        Side::Remote => "remote",
    }
}

/// Seeded histories of both sides over `rounds` rounds, and versions the sides agreed on.
fn histories(seed: u64, rounds: u64) -> (Vec<Step>, Vec<(RowKey, Version)>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps: Vec<Step> = Vec::new();
    let mut newest: BTreeMap<(Side, String, u32), Version> = BTreeMap::new();
    let mut agreed = Vec::new();
    let mut clock = 1_000i64;
    for round in 0..rounds {
        for _ in 0..rng.random_range(5..30) {
            let table = ["orders", "vehicles"][rng.random_range(0..2)];
            let key = rng.random_range(0..25u32);
            let side = if rng.random_bool(0.5) {
                Side::Local
            } else {
                Side::Remote
            };
            let other = if side == Side::Local {
                Side::Remote
            } else {
                Side::Local
            };
            clock += rng.random_range(0..3);
            let position = format!("{}-{}", origin(side), steps.len());
            let version = match rng.random_range(0..10) {
                // Copied from the other side, as sync applies it: the same version there.
                0 | 1 => match newest.get(&(other, table.into(), key)) {
                    Some(v) => Version {
                        position,
                        ..v.clone()
                    },
                    None => continue,
                },
                // A repeat of this side's newest (a feed delivering at least once).
                2 => match newest.get(&(side, table.into(), key)) {
                    Some(v) => v.clone(),
                    None => continue,
                },
                // A late version, older than what the side has.
                3 => Version {
                    updated_at: clock - 50,
                    origin: origin(side).into(),
                    row: Some(format!("{{\"late\":{}}}", rng.random_range(0..3))),
                    position,
                },
                4 => Version {
                    updated_at: clock,
                    origin: origin(side).into(),
                    row: None,
                    position,
                },
                _ => Version {
                    // Now and then both sides write at the same millisecond.
                    updated_at: clock,
                    origin: origin(side).into(),
                    row: Some(format!("{{\"v\":{}}}", rng.random_range(0..4))),
                    position,
                },
            };
            let slot = newest
                .entry((side, table.into(), key))
                .or_insert(version.clone());
            if version > *slot {
                *slot = version.clone();
            }
            steps.push(Step {
                round,
                side,
                change: change(table, key, &version),
            });
            if rng.random_bool(0.05) {
                agreed.push(((table.to_owned(), format!("[{key}]")), version));
            }
        }
    }
    // One agreed version per row at most: the last noted.
    let agreed: BTreeMap<RowKey, Version> = agreed.into_iter().collect();
    (steps, agreed.into_iter().collect())
}

/// The reference: per row the newest version on each side, and the rules written out plainly.
fn reference(steps: &[Step], agreed: &[(RowKey, Version)], upto: u64) -> BTreeSet<SyncAction> {
    let mut sides: BTreeMap<RowKey, (Option<Version>, Option<Version>)> = BTreeMap::new();
    for step in steps.iter().filter(|s| s.round <= upto) {
        let row = (step.change.table.clone(), step.change.key.clone());
        let entry = sides.entry(row).or_default();
        let slot = match step.side {
            Side::Local => &mut entry.0,
            Side::Remote => &mut entry.1,
        };
        let version = Version::of(&step.change);
        if slot.as_ref().is_none_or(|v| version > *v) {
            *slot = Some(version);
        }
    }
    let agreed: BTreeMap<&RowKey, &Version> = agreed.iter().map(|(r, v)| (r, v)).collect();
    let mut out = BTreeSet::new();
    for (row, (local, remote)) in &sides {
        let (winner, from_local) = match (local, remote) {
            (Some(l), Some(r)) if l.row == r.row => continue,
            (Some(l), Some(r)) => {
                if (l.updated_at, &l.origin, &l.row, &l.position)
                    > (r.updated_at, &r.origin, &r.row, &r.position)
                {
                    (l, true)
                } else {
                    (r, false)
                }
            }
            (Some(l), None) => (l, true),
            (None, Some(r)) => (r, false),
            (None, None) => continue,
        };
        let one_sided = local.is_none() || remote.is_none();
        if winner.row.is_none() && one_sided {
            continue;
        }
        let action = match (from_local, winner.row.is_some()) {
            (true, true) => SyncActionKind::Push,
            (true, false) => SyncActionKind::DeleteRemote,
            (false, true) => SyncActionKind::Pull,
            (false, false) => SyncActionKind::DeleteLocal,
        };
        let conflict = match (local, remote, agreed.get(row)) {
            (Some(l), Some(r), Some(a)) => l.row != a.row && r.row != a.row,
            (Some(l), Some(r), None) => l.row.is_some() && r.row.is_some(),
            _ => false,
        };
        let reason = match (local, remote) {
            (Some(_), None) => "only the local replica has the row",
            (None, Some(_)) => "only the remote replica has the row",
            (Some(l), Some(r)) if l.updated_at == r.updated_at => {
                "written at the same time: the greater origin wins"
            }
            _ if from_local => "the local version is newer",
            _ => "the remote version is newer",
        };
        out.insert(SyncAction {
            table: row.0.clone(),
            key: row.1.clone(),
            action,
            winner_origin: winner.origin.clone(),
            winner_updated_at: winner.updated_at,
            conflict,
            reason: reason.to_owned(),
            row: winner.row.clone(),
        });
    }
    out
}

/// Runs the diff over the steps on `workers` workers; returns the diff's updates.
fn run(
    steps: &[Step],
    agreed: &[(RowKey, Version)],
    workers: usize,
) -> Vec<(SyncAction, u64, isize)> {
    let steps = Arc::new(steps.to_vec());
    let agreed = Arc::new(agreed.to_vec());
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let probe = timely::dataflow::ProbeHandle::new();
        let mut agreed_in: InputSession<u64, (RowKey, Version), isize> = InputSession::new();
        let (mut changes, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (changes_in, changes) = scope.new_input::<Vec<(Side, Change)>>();
            let agreed = agreed_in.to_collection(scope);
            let diff = changes.current_versions().sync_diff(agreed);
            diff.inner.clone().probe_with(&probe);
            (changes_in, diff.inner.capture())
        });
        if index == 0 {
            for (row, version) in agreed.iter() {
                agreed_in.insert((row.clone(), version.clone()));
            }
        }
        let rounds = steps.iter().map(|s| s.round).max().unwrap_or(0);
        for round in 0..=rounds {
            for (i, step) in steps.iter().enumerate().filter(|(_, s)| s.round == round) {
                if i % peers == index {
                    changes.send((step.side, step.change.clone()));
                }
            }
            changes.advance_to(round + 1);
            agreed_in.advance_to(round + 1);
            agreed_in.flush();
            while probe.less_than(changes.time()) {
                worker.step();
            }
        }
        drop(changes);
        drop(agreed_in);
        while worker.step_or_park(None) {}
        let updates: Vec<_> = captured
            .extract()
            .into_iter()
            .flat_map(|(_, data)| data)
            .collect();
        sink.lock().unwrap().extend(updates);
    })
    .unwrap();
    std::mem::take(&mut *out.lock().unwrap())
}

/// The diff's contents at `time`, from its updates.
fn at(updates: &[(SyncAction, u64, isize)], time: u64) -> BTreeSet<SyncAction> {
    let mut net: BTreeMap<&SyncAction, isize> = BTreeMap::new();
    for (action, t, diff) in updates {
        if *t <= time {
            *net.entry(action).or_default() += diff;
        }
    }
    for (action, count) in &net {
        assert!(*count == 0 || *count == 1, "{action:?} counted {count}");
    }
    net.into_iter()
        .filter(|(_, c)| *c == 1)
        .map(|(a, _)| a.clone())
        .collect()
}

#[test]
fn the_diff_equals_the_reference_at_every_round_and_worker_count() {
    let mut kinds = BTreeSet::new();
    let mut conflicts = 0;
    for seed in [1, 2, 3] {
        let (steps, agreed) = histories(seed, 12);
        for workers in [1, 2] {
            let updates = run(&steps, &agreed, workers);
            assert!(
                updates.iter().any(|(_, _, d)| *d < 0),
                "the history retracts actions"
            );
            for round in 0..12 {
                let expected = reference(&steps, &agreed, round);
                assert_eq!(
                    at(&updates, round),
                    expected,
                    "seed {seed}, {workers} workers, round {round}"
                );
                kinds.extend(expected.iter().map(|a| a.action));
                conflicts += expected.iter().filter(|a| a.conflict).count();
            }
        }
    }
    assert_eq!(kinds.len(), 4, "every kind of action occurs: {kinds:?}");
    assert!(conflicts > 0, "conflicts occur");
}

#[test]
fn applying_the_diff_empties_it() {
    let (mut steps, agreed) = histories(9, 6);
    let before = reference(&steps, &agreed, 5);
    assert!(before.len() > 10, "{} actions", before.len());
    // Apply every action as the sync job does: the winning version, with its origin and time,
    // written to the other side, whose feed then reports it.
    for (i, action) in before.iter().enumerate() {
        let side = match action.action {
            SyncActionKind::Push | SyncActionKind::DeleteRemote => Side::Remote,
            SyncActionKind::Pull | SyncActionKind::DeleteLocal => Side::Local,
        };
        let version = Version {
            updated_at: action.winner_updated_at,
            origin: action.winner_origin.clone(),
            row: action.row.clone(),
            position: format!("applied-{i}"),
        };
        let mut applied = change(&action.table, 0, &version);
        applied.key.clone_from(&action.key);
        steps.push(Step {
            round: 6,
            side,
            change: applied,
        });
    }
    let updates = run(&steps, &agreed, 2);
    assert_eq!(at(&updates, 5), before);
    assert_eq!(at(&updates, 6), BTreeSet::new(), "the replicas agree");
}

#[test]
fn a_version_copied_across_is_not_sent_back() {
    let row = |v: i64| Version {
        updated_at: v,
        origin: "remote".into(),
        row: Some(format!("{{\"v\":{v}}}")),
        position: format!("p{v}"),
    };
    let steps = vec![
        Step {
            round: 0,
            side: Side::Remote,
            change: change("t", 1, &row(5)),
        },
        // The local replica receives the remote version (sync applied it); its own feed then
        // reports it with the remote origin and time, at its own position.
        Step {
            round: 1,
            side: Side::Local,
            change: change(
                "t",
                1,
                &Version {
                    position: "local-lsn".into(),
                    ..row(5)
                },
            ),
        },
    ];
    let updates = run(&steps, &[], 1);
    let first = at(&updates, 0);
    assert_eq!(first.len(), 1);
    assert_eq!(first.iter().next().unwrap().action, SyncActionKind::Pull);
    assert!(at(&updates, 1).is_empty());
    let events: Vec<_> = updates.iter().filter(|(_, t, _)| *t == 1).collect();
    assert_eq!(events.len(), 1, "only the pull's retraction: {events:?}");
}

//! Archaeology operators against plain sequential references, at 1 and 2 workers, on seeded
//! events that arrive out of order within each batch.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::operators::capture::Extract;
use timely::dataflow::operators::{Capture, Input, Probe};
use vigil_operators::*;

/// Seeded events in rooms: bursts of activity separated by quiet spells of varying length.
fn room_events(seed: u64) -> Vec<SessionEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut events = Vec::new();
    for room in 0..6 {
        let mut ts = rng.random_range(0..5_000i64);
        for _ in 0..rng.random_range(40..120) {
            // Mostly close together; now and then a pause longer or shorter than the gap.
            ts += match rng.random_range(0..10) {
                0 => rng.random_range(3_000..20_000),
                1 => rng.random_range(1_500..2_600),
                _ => rng.random_range(0..800),
            };
            events.push(SessionEvent {
                key: format!("room-{room}"),
                participant: format!("dev-{}", rng.random_range(0..8)),
                ts,
            });
        }
    }
    events
}

/// The reference: per key in time order, a new session whenever the pause exceeds the gap.
fn reference(events: &[SessionEvent], gap: i64) -> BTreeSet<Session> {
    let mut by_key: BTreeMap<&str, Vec<&SessionEvent>> = BTreeMap::new();
    for e in events {
        by_key.entry(&e.key).or_default().push(e);
    }
    let mut out = BTreeSet::new();
    for (key, mut es) in by_key {
        es.sort_by_key(|e| e.ts);
        let mut current: Option<(i64, i64, BTreeSet<String>, u64)> = None;
        for e in es {
            match &mut current {
                Some((_, end, who, n)) if e.ts - *end <= gap => {
                    *end = e.ts;
                    who.insert(e.participant.clone());
                    *n += 1;
                }
                _ => {
                    if let Some((start, end, who, n)) = current.take() {
                        out.insert(session(key, start, end, who, n));
                    }
                    current = Some((e.ts, e.ts, BTreeSet::from([e.participant.clone()]), 1));
                }
            }
        }
        if let Some((start, end, who, n)) = current {
            out.insert(session(key, start, end, who, n));
        }
    }
    out
}

fn session(key: &str, start: i64, end: i64, who: BTreeSet<String>, events: u64) -> Session {
    Session {
        key: key.to_owned(),
        start,
        end,
        participants: who.into_iter().collect(),
        events,
        open: false,
    }
}

/// Runs `sessions` on `workers` workers, events sent in shuffled batches at their watermark;
/// returns every update.
fn run(events: &[SessionEvent], gap: u64, workers: usize) -> Vec<(Session, u64, isize)> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.ts);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut batches: Vec<Vec<SessionEvent>> = sorted.chunks(23).map(<[_]>::to_vec).collect();
    for batch in &mut batches {
        for i in (1..batch.len()).rev() {
            batch.swap(i, rng.random_range(0..=i));
        }
    }
    let batches = Arc::new(batches);
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = out.clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let probe = timely::dataflow::ProbeHandle::new();
        let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_input::<Vec<SessionEvent>>();
            let sessions = events.sessions(gap);
            sessions.inner.clone().probe_with(&probe);
            (input, sessions.inner.capture())
        });
        let mine: Vec<&Vec<SessionEvent>> = batches.iter().skip(index).step_by(peers).collect();
        for (k, batch) in mine.iter().enumerate() {
            input.send_batch(&mut (*batch).clone());
            if let Some(next) = mine.get(k + 1) {
                let low = next.iter().map(|e| e.ts).min().unwrap_or(0).max(0) as u64;
                input.advance_to(low.max(*input.time()));
                while probe.less_than(input.time()) {
                    worker.step();
                }
            }
        }
        drop(input);
        while worker.step_or_park(None) {}
        let updates: Vec<_> = captured
            .extract()
            .into_iter()
            .flat_map(|(_, d)| d)
            .collect();
        sink.lock().unwrap().extend(updates);
    })
    .unwrap();
    std::mem::take(&mut *out.lock().unwrap())
}

fn net(updates: &[(Session, u64, isize)]) -> BTreeSet<Session> {
    let mut counts: BTreeMap<&Session, isize> = BTreeMap::new();
    for (s, _, d) in updates {
        *counts.entry(s).or_default() += d;
    }
    counts
        .into_iter()
        .filter(|(s, c)| {
            assert!(*c == 0 || *c == 1, "{s:?} counted {c}");
            *c == 1
        })
        .map(|(s, _)| s.clone())
        .collect()
}

#[test]
fn sessions_equal_the_reference_at_one_and_two_workers() {
    for seed in [1, 2, 3] {
        let events = room_events(seed);
        let expected = reference(&events, 2_000);
        assert!(expected.len() > 20, "{} sessions", expected.len());
        assert!(expected.iter().any(|s| s.participants.len() > 3));
        for workers in [1, 2] {
            let updates = run(&events, 2_000, workers);
            assert_eq!(net(&updates), expected, "seed {seed}, {workers} workers");
            // Open sessions were visible before they closed, and retracted when they grew.
            assert!(updates.iter().any(|(s, _, d)| s.open && *d == 1));
            assert!(updates.iter().any(|(s, _, d)| s.open && *d == -1));
        }
    }
}

#[test]
fn a_session_closes_once_the_watermark_passes_its_end_and_the_gap() {
    // Room A is quiet after 1 s; room B goes on to 60 s, moving the watermark far past A.
    let mut events = vec![SessionEvent {
        key: "a".into(),
        participant: "dev-1".into(),
        ts: 1_000,
    }];
    for t in (0..60).map(|s| s * 1_000) {
        events.push(SessionEvent {
            key: "b".into(),
            participant: "dev-2".into(),
            ts: t,
        });
    }
    let updates = run(&events, 5_000, 1);
    // A's closed record appears before the input ends: at a time below B's last event.
    let closed_at = updates
        .iter()
        .find(|(s, _, d)| s.key == "a" && !s.open && *d == 1)
        .map(|(_, t, _)| *t)
        .unwrap();
    assert!(closed_at < 59_000, "closed at {closed_at}");
}

//! Archaeology operators against plain sequential references, at 1 and 2 workers, on seeded
//! events that arrive out of order within each batch.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeMap, BTreeSet};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vigil_operators::*;

mod common;
use common::run_points;

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
    common::run_batches(
        batches,
        |e: &SessionEvent| e.ts,
        workers,
        move |events| events.sessions(gap),
    )
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

mod field {
    use super::*;
    use vigil_operators::archaeology::field::{
        Field, FieldItem, FieldParams, FieldSnapshot, Particle,
    };

    /// The reference: every snapshot from the one after the first event to the one after the
    /// last, over the events of its window, and the newest high-intensity events; the newest
    /// of each kept.
    fn reference(events: &[Reading], params: FieldParams) -> BTreeSet<String> {
        let mut sorted: Vec<&Reading> = events.iter().collect();
        sorted.sort_by(|a, b| {
            (a.ts, &a.source, &a.name)
                .cmp(&(b.ts, &b.source, &b.name))
                .then(a.value.total_cmp(&b.value))
        });
        let every = params.every_ms as i64;
        let first = (sorted[0].ts.div_euclid(every) + 1) * every;
        let last = (sorted[sorted.len() - 1].ts.div_euclid(every) + 1) * every;
        let mut snapshots = Vec::new();
        let mut at = first;
        while at <= last {
            let inside: Vec<&&Reading> = sorted
                .iter()
                .filter(|r| r.ts >= at - params.window_ms as i64 && r.ts < at)
                .collect();
            let sources: BTreeSet<&str> = inside.iter().map(|r| r.source.as_str()).collect();
            snapshots.push(FieldSnapshot {
                at,
                resonance: if inside.is_empty() {
                    0.0
                } else {
                    inside.iter().map(|r| r.value).sum::<f64>() / inside.len() as f64
                },
                active_sources: sources.len() as u64,
                events: inside.len() as u64,
            });
            at += every;
        }
        let particles: Vec<Particle> = sorted
            .iter()
            .filter(|r| r.value >= params.high_intensity)
            .map(|r| Particle {
                ts: r.ts,
                source: r.source.as_str().into(),
                name: r.name.as_str().into(),
                intensity: r.value,
            })
            .collect();
        let keep = |n: usize, k: usize| n.saturating_sub(k);
        snapshots[keep(snapshots.len(), params.snapshots)..]
            .iter()
            .map(|s| format!("{:?}", FieldItem::Snapshot(s.clone())))
            .chain(
                particles[keep(particles.len(), params.particles)..]
                    .iter()
                    .map(|p| format!("{:?}", FieldItem::Particle(p.clone()))),
            )
            .collect()
    }

    #[test]
    fn the_field_equals_the_reference_and_stays_bounded() {
        let spec = vigil_datasets::generator::DeviceParams {
            devices: 40,
            ticks: 600,
            ..Default::default()
        };
        let events: Vec<Reading> = vigil_datasets::generator::device_events(&spec).collect();
        let params = FieldParams {
            window_ms: 30_000,
            every_ms: 5_000,
            high_intensity: 0.9,
            particles: 50,
            snapshots: 10,
        };
        let expected = reference(&events, params);
        assert_eq!(expected.len(), 60, "10 snapshots and 50 particles are kept");
        for workers in [1, 2] {
            let updates = run_points(&events, workers, move |p| p.field(params));
            let mut net: BTreeMap<String, isize> = BTreeMap::new();
            for (item, d) in &updates {
                *net.entry(format!("{item:?}")).or_default() += d;
            }
            let now: BTreeSet<String> = net
                .into_iter()
                .filter(|(k, c)| {
                    assert!(*c == 0 || *c == 1, "{k} counted {c}");
                    *c == 1
                })
                .map(|(k, _)| k)
                .collect();
            assert_eq!(now, expected, "{workers} workers");
            let retracted = updates.iter().filter(|(_, d)| *d < 0).count();
            assert!(
                retracted > 100,
                "old particles and snapshots leave: {retracted}"
            );
        }
    }
}

mod entangled {
    use super::common::net;
    use super::*;
    use vigil_operators::archaeology::entanglements::{
        EntangleParams, Entanglement, Entanglements,
    };

    /// The reference at the last evaluation: every pair of events of two sources at most
    /// δ apart, the later one in the window, counted plainly, against the average pair.
    fn reference(
        events: &[Reading],
        params: EntangleParams,
    ) -> BTreeSet<(String, String, u64, u64)> {
        let mut sorted: Vec<&Reading> = events.iter().collect();
        sorted.sort_by(|a, b| {
            (a.ts, &a.source, &a.name)
                .cmp(&(b.ts, &b.source, &b.name))
                .then(a.value.total_cmp(&b.value))
        });
        let every = params.every_ms as i64;
        let at = (sorted[sorted.len() - 1].ts.div_euclid(every) + 1) * every;
        let from = at - params.window_ms as i64;
        let mut n: BTreeMap<&str, u64> = BTreeMap::new();
        for r in sorted.iter().filter(|r| r.ts >= from && r.ts < at) {
            *n.entry(r.source.as_str()).or_default() += 1;
        }
        let mut together: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (j, later) in sorted.iter().enumerate() {
            if later.ts < from || later.ts >= at {
                continue;
            }
            for earlier in &sorted[..j] {
                if later.ts - earlier.ts <= params.delta_ms as i64 && earlier.source != later.source
                {
                    let (a, b) = if earlier.source < later.source {
                        (earlier.source.to_string(), later.source.to_string())
                    } else {
                        (later.source.to_string(), earlier.source.to_string())
                    };
                    *together.entry((a, b)).or_default() += 1;
                }
            }
        }
        let total: f64 = n.values().map(|v| *v as f64).sum();
        let squares: f64 = n.values().map(|v| (*v as f64).powi(2)).sum();
        let chance = together.values().sum::<u64>() as f64 / ((total * total - squares) / 2.0);
        together
            .into_iter()
            .filter_map(|((a, b), count)| {
                let expected = n[a.as_str()] as f64 * n[b.as_str()] as f64 * chance;
                let lift = count as f64 / expected;
                (count >= params.min_count && lift >= params.min_lift)
                    .then(|| (a, b, count, (lift * 1000.0).round() as u64))
            })
            .collect()
    }

    /// The pairs the collection holds at the end: names, count and lift.
    fn pairs_now(updates: &[(Entanglement, isize)]) -> BTreeSet<(String, String, u64, u64)> {
        net(updates)
            .into_iter()
            .map(|e| (e.a.into(), e.b.into(), e.together, e.lift_milli))
            .collect()
    }

    #[test]
    fn the_planted_pairs_are_found_and_equal_the_reference() {
        let spec = vigil_datasets::generator::DeviceParams {
            devices: 30,
            ticks: 1_200,
            ..Default::default()
        };
        let events: Vec<Reading> = vigil_datasets::generator::device_events(&spec).collect();
        let planted: BTreeSet<(String, String)> = vigil_datasets::generator::device_pairs(&spec)
            .into_iter()
            .collect();
        assert!(planted.len() >= 2, "{planted:?}");
        let params = EntangleParams {
            delta_ms: 1_000,
            window_ms: 1_200_000,
            every_ms: 30_000,
            min_count: 5,
            min_lift: 1.5,
        };
        let expected = reference(&events, params);
        for workers in [1, 2] {
            let now = pairs_now(&run_points(&events, workers, move |p| {
                p.entanglements(params)
            }));
            assert_eq!(now, expected, "{workers} workers");
            let found: BTreeSet<(String, String)> = now
                .iter()
                .map(|(a, b, _, _)| (a.clone(), b.clone()))
                .collect();
            let recall = planted.intersection(&found).count() as f64 / planted.len() as f64;
            assert_eq!(
                recall, 1.0,
                "every planted pair is found: {found:?} vs {planted:?}"
            );
            let precision = planted.intersection(&found).count() as f64 / found.len() as f64;
            assert!(precision >= 0.75, "precision {precision}: {found:?}");
        }
    }

    #[test]
    fn sources_that_come_and_go_are_counted_as_new() {
        // Every 200 ticks the devices take new names: old ones leave the window for good and
        // new ones take their place, as a fleet replaced over time.
        let spec = vigil_datasets::generator::DeviceParams {
            devices: 20,
            ticks: 1_500,
            ..Default::default()
        };
        let events: Vec<Reading> = vigil_datasets::generator::device_events(&spec)
            .map(|mut r| {
                let epoch = r.seq.unwrap_or(0) / 200;
                r.source = format!("{}-e{epoch}", r.source).into();
                r
            })
            .collect();
        let params = EntangleParams {
            delta_ms: 1_000,
            window_ms: 250_000,
            every_ms: 10_000,
            min_count: 3,
            min_lift: 1.5,
        };
        let expected = reference(&events, params);
        assert!(!expected.is_empty());
        for workers in [1, 2] {
            let now = pairs_now(&run_points(&events, workers, move |p| {
                p.entanglements(params)
            }));
            assert_eq!(now, expected, "{workers} workers");
        }
    }
}

mod sequences {
    use super::common::net;
    use super::*;
    use vigil_operators::archaeology::sequences::{KIND, SequenceParams, Sequences};

    /// The reference: a plain PrefixSpan over each source's events in time order, growing a
    /// pattern by the event right after each of its occurrences when it came within the gap,
    /// and pruning as soon as a prefix lacks support (which only falls as a pattern grows).
    fn prefix_span(events: &[Reading], params: SequenceParams) -> BTreeSet<Pattern> {
        let mut db: BTreeMap<&str, Vec<&Reading>> = BTreeMap::new();
        for r in events {
            db.entry(r.source.as_str()).or_default().push(r);
        }
        for seq in db.values_mut() {
            seq.sort_by(|a, b| {
                (a.ts, &a.name)
                    .cmp(&(b.ts, &b.name))
                    .then(a.value.total_cmp(&b.value))
            });
        }
        let mut singles: BTreeMap<&str, Vec<(&str, usize, i64)>> = BTreeMap::new();
        for (source, seq) in &db {
            for (i, r) in seq.iter().enumerate() {
                singles
                    .entry(r.name.as_str())
                    .or_default()
                    .push((source, i, r.ts));
            }
        }
        let mut out = BTreeSet::new();
        for (name, positions) in singles {
            grow(&db, params, vec![name.to_string()], positions, &mut out);
        }
        out
    }

    fn grow(
        db: &BTreeMap<&str, Vec<&Reading>>,
        params: SequenceParams,
        prefix: Vec<String>,
        positions: Vec<(&str, usize, i64)>,
        out: &mut BTreeSet<Pattern>,
    ) {
        let sources: BTreeSet<&str> = positions.iter().map(|p| p.0).collect();
        if (sources.len() as u64) < params.min_support
            || (positions.len() as u64) < params.min_occurrences
        {
            return;
        }
        if prefix.len() >= 2 {
            out.insert(Pattern {
                pattern_id: Pattern::id(KIND, None, &prefix),
                kind: KIND.into(),
                items: prefix.iter().map(|s| s.as_str().into()).collect(),
                support: sources.len() as u64,
                occurrences: positions.len() as u64,
                first_seen: positions.iter().map(|p| p.2).min().unwrap(),
                last_seen: positions.iter().map(|p| db[p.0][p.1].ts).max().unwrap(),
                sources: sources
                    .iter()
                    .take(Pattern::LISTED_SOURCES)
                    .map(|s| (*s).into())
                    .collect(),
            });
        }
        if prefix.len() == params.max_len {
            return;
        }
        let mut projected: BTreeMap<&str, Vec<(&str, usize, i64)>> = BTreeMap::new();
        for &(source, i, start) in &positions {
            let seq = &db[source];
            if let Some(next) = seq.get(i + 1)
                && next.ts - seq[i].ts <= params.max_gap_ms as i64
            {
                projected
                    .entry(next.name.as_str())
                    .or_default()
                    .push((source, i + 1, start));
            }
        }
        for (name, positions) in projected {
            let mut longer = prefix.clone();
            longer.push(name.to_string());
            grow(db, params, longer, positions, out);
        }
    }

    /// Seeded events of a few names in many sources, with ties in event time.
    fn random_events(seed: u64) -> Vec<Reading> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let names = ["A", "B", "C", "D"];
        let mut events = Vec::new();
        for source in 0..30 {
            let mut ts = rng.random_range(0..10_000i64);
            for _ in 0..rng.random_range(20..80) {
                ts += match rng.random_range(0..10) {
                    0 => rng.random_range(5_000..30_000),
                    1 => 0,
                    _ => rng.random_range(200..2_500),
                };
                let name = names[rng.random_range(0..names.len())];
                events.push(Reading::new(&format!("s-{source}"), name, ts, 1.0));
            }
        }
        events
    }

    #[test]
    fn sequences_equal_prefix_span_at_one_and_two_workers() {
        let events = random_events(11);
        for params in [
            SequenceParams {
                max_len: 3,
                max_gap_ms: 2_000,
                min_support: 5,
                min_occurrences: 8,
            },
            SequenceParams {
                max_len: 4,
                max_gap_ms: 1_000,
                min_support: 1,
                min_occurrences: 1,
            },
        ] {
            let expected = prefix_span(&events, params);
            assert!(expected.len() > 10, "{} patterns", expected.len());
            assert!(expected.iter().any(|p| p.items.len() == params.max_len));
            for workers in [1, 2] {
                let updates = run_points(&events, workers, move |p| p.sequences(params));
                assert_eq!(net(&updates), expected, "{params:?} at {workers} workers");
                let retracted = updates.iter().filter(|(_, d)| *d < 0).count();
                assert!(retracted > 0, "records are replaced as counts grow");
            }
        }
    }

    #[test]
    fn the_planted_rituals_are_found() {
        let spec = vigil_datasets::generator::DeviceParams {
            devices: 40,
            ticks: 900,
            ..Default::default()
        };
        let events: Vec<Reading> = vigil_datasets::generator::device_events(&spec).collect();
        let params = SequenceParams {
            max_len: 3,
            max_gap_ms: 1_000,
            min_support: 10,
            min_occurrences: 20,
        };
        let expected = prefix_span(&events, params);
        for workers in [1, 2] {
            let found = net(&run_points(&events, workers, move |p| p.sequences(params)));
            assert_eq!(found, expected, "{workers} workers");
        }
        let items: BTreeSet<Vec<&str>> = expected
            .iter()
            .map(|p| p.items.iter().map(|s| s.as_str()).collect())
            .collect();
        for planted in [
            vec!["BREATH", "SPIRAL"],
            vec!["SPIRAL", "BLOOM"],
            vec!["BREATH", "SPIRAL", "BLOOM"],
        ] {
            assert!(items.contains(&planted), "{planted:?} not among {items:?}");
        }
    }
}

//! Motifs against a plain batch reference computed from scratch, at 1 and 2 workers, on seeded
//! series (one with a planted shape) and on the rocket generator.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeMap, BTreeSet};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vigil_datasets::generator::{RocketParams, rocket_readings};
use vigil_operators::archaeology::motifs::{MotifParams, Motifs};
use vigil_operators::{Pattern, Reading};

mod common;
use common::{net, run_points};

/// The planted shape: four parts at levels ±3 and ±1 (±1.34 and ±0.45 standard deviations),
/// each well inside one letter's band at 8 letters, where its word is `hafc`.
const SHAPE: [f64; 16] = [
    2.5, 3.0, 3.5, 3.0, -2.5, -3.0, -3.5, -3.0, 1.0, 1.5, 1.0, 0.5, -1.0, -1.5, -1.0, -0.5,
];

/// How many times the shape is planted.
const PLANTINGS: usize = 12;

/// The series the shape is planted in.
const PLANTED: (&str, &str) = ("veh-0", "shape");

/// Seeded series: the planted shape amid noise, random walks, and a valve that holds 0 or 1
/// for runs (flat windows and held shapes). Event times step irregularly, and outside the
/// planted series sometimes repeat. Also returns the event times of the first and last
/// reading of each planting.
fn seeded_readings(seed: u64) -> (Vec<Reading>, Vec<(i64, i64)>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    // The shape, with a little noise, between stretches of noise as wide as the shape.
    let (source, name) = PLANTED;
    let mut ts = rng.random_range(0..1_000i64);
    let mut plantings = Vec::new();
    for _ in 0..PLANTINGS {
        for _ in 0..rng.random_range(8..40) {
            out.push(Reading::new(source, name, ts, rng.random_range(-3.0..3.0)));
            ts += rng.random_range(100..1_500);
        }
        let start = ts;
        for (k, level) in SHAPE.into_iter().enumerate() {
            let value = level + rng.random_range(-0.2..0.2);
            out.push(Reading::new(source, name, ts, value));
            if k + 1 < SHAPE.len() {
                ts += rng.random_range(100..1_500);
            }
        }
        plantings.push((start, ts));
        ts += rng.random_range(100..1_500);
    }
    let step = |rng: &mut ChaCha8Rng, ts: &mut i64| {
        *ts += match rng.random_range(0..10) {
            0 => 0,
            _ => rng.random_range(100..1_500),
        };
    };
    for v in 1..4 {
        let source = format!("veh-{v}");
        for name in ["temp", "drift"] {
            let mut ts = rng.random_range(0..1_000i64);
            let mut x = 0.0;
            for _ in 0..rng.random_range(150..300) {
                x += rng.random_range(-1.0..1.0);
                out.push(Reading::new(&source, name, ts, x));
                step(&mut rng, &mut ts);
            }
        }
        let mut ts = rng.random_range(0..1_000i64);
        let mut level = 0.0;
        for _ in 0..rng.random_range(150..300) {
            if rng.random_range(0..6) == 0 {
                level = 1.0 - level;
            }
            out.push(Reading::new(&source, "valve", ts, level));
            step(&mut rng, &mut ts);
        }
    }
    (out, plantings)
}

/// A few rocket vehicles over a few hundred ticks.
fn rocket(seed: u64) -> Vec<Reading> {
    rocket_readings(&RocketParams {
        vehicles: 3,
        ticks: 300,
        interval_ms: 1_000,
        start_ms: 0,
        seed,
        anomaly_rate: 1.0 / 200.0,
    })
    .collect()
}

/// The standard SAX breakpoints for 3 to 8 letters, entered again for the reference.
fn reference_breakpoints(alphabet: usize) -> Vec<f64> {
    match alphabet {
        3 => vec![-0.43, 0.43],
        4 => vec![-0.67, 0.0, 0.67],
        5 => vec![-0.84, -0.25, 0.25, 0.84],
        6 => vec![-0.97, -0.43, 0.0, 0.43, 0.97],
        7 => vec![-1.07, -0.57, -0.18, 0.18, 0.57, 1.07],
        8 => vec![-1.15, -0.67, -0.32, 0.0, 0.32, 0.67, 1.15],
        _ => panic!("no table for {alphabet} letters"),
    }
}

/// The word of one window from scratch, or `None` when it is flat.
fn reference_word(window: &[f64], params: &MotifParams) -> Option<String> {
    let m = window.len() as f64;
    let mut sum = 0.0;
    for x in window {
        sum += x;
    }
    let mean = sum / m;
    let mut squares = 0.0;
    for x in window {
        squares += (x - mean) * (x - mean);
    }
    let std = (squares / m).sqrt();
    if !std.is_finite() || std <= 1e-9 * mean.abs().max(1.0) {
        return None;
    }
    let breakpoints = reference_breakpoints(params.alphabet);
    let len = window.len() / params.segments;
    let mut word = String::new();
    for part in window.chunks(len) {
        let mut z = 0.0;
        for x in part {
            z += (x - mean) / std;
        }
        let paa = z / len as f64;
        let letter = breakpoints.iter().filter(|b| **b <= paa).count();
        word.push(char::from(b'a' + letter as u8));
    }
    Some(word)
}

/// The word table of every series: (source, name) → word → (occurrences, first, last seen).
type Tables = BTreeMap<(String, String), BTreeMap<String, (u64, i64, i64)>>;

/// The reference tables: per series in time order (ties by value), every full window's word,
/// counted when it differs from the previous window's.
fn reference_tables(readings: &[Reading], params: &MotifParams) -> Tables {
    let mut series: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
    for r in readings {
        series
            .entry((r.source.to_string(), r.name.to_string()))
            .or_default()
            .push((r.ts, r.value));
    }
    let mut tables = Tables::new();
    for (key, mut points) in series {
        points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let values: Vec<f64> = points.iter().map(|p| p.1).collect();
        let table = tables.entry(key).or_default();
        let mut previous: Option<String> = None;
        for end in params.window - 1..points.len() {
            let start = end + 1 - params.window;
            let word = reference_word(&values[start..=end], params);
            if let Some(w) = &word
                && previous.as_ref() != Some(w)
            {
                let entry = table
                    .entry(w.clone())
                    .or_insert((0, points[start].0, points[end].0));
                entry.0 += 1;
                entry.2 = points[end].0;
            }
            previous = word;
        }
    }
    tables
}

/// The reference collection: per series, the top words by count (ties: word) of those
/// counted at least `min_count` times.
fn reference(readings: &[Reading], params: &MotifParams) -> BTreeSet<Pattern> {
    let mut out = BTreeSet::new();
    for ((source, name), table) in reference_tables(readings, params) {
        let mut ranked: Vec<(&String, &(u64, i64, i64))> = table
            .iter()
            .filter(|(_, (count, _, _))| *count >= params.min_count)
            .collect();
        ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        for (word, &(occurrences, first_seen, last_seen)) in ranked.into_iter().take(params.top_k) {
            let items = vec![name.clone(), word.clone()];
            out.insert(Pattern {
                pattern_id: Pattern::id("motif", Some(&source), &items),
                kind: "motif".into(),
                items: items.iter().map(|s| s.as_str().into()).collect(),
                support: 1,
                occurrences,
                first_seen,
                last_seen,
                sources: vec![source.as_str().into()],
            });
        }
    }
    out
}

/// Checks the operator against the reference at 1 and 2 workers; returns the reference.
fn check(readings: &[Reading], params: MotifParams, what: &str) -> BTreeSet<Pattern> {
    let expected = reference(readings, &params);
    let series: BTreeSet<_> = expected.iter().map(|p| (&p.sources, &p.items[0])).collect();
    assert!(
        series.len() > 3,
        "{what}: motifs in {} series",
        series.len()
    );
    for workers in [1, 2] {
        let updates = run_points(readings, workers, move |points| points.motifs(params));
        assert_eq!(net(&updates), expected, "{what}, {workers} workers");
        let retractions = updates.iter().filter(|(_, d)| *d < 0).count();
        assert!(retractions > 0, "{what}, {workers} workers: no retraction");
    }
    expected
}

#[test]
fn motifs_equal_the_reference_at_one_and_two_workers() {
    for seed in [1, 2, 3] {
        let (readings, _) = seeded_readings(seed);
        check(&readings, MotifParams::default(), &format!("seed {seed}"));
        let params = MotifParams {
            window: 12,
            segments: 3,
            alphabet: 6,
            top_k: 4,
            min_count: 2,
        };
        check(&readings, params, &format!("seed {seed}, 12/3/6"));
    }
}

#[test]
fn motifs_of_rocket_flights_equal_the_reference() {
    let readings = rocket(7);
    check(&readings, MotifParams::default(), "rocket");
    let params = MotifParams {
        window: 8,
        segments: 8,
        alphabet: 3,
        top_k: 2,
        min_count: 3,
    };
    check(&readings, params, "rocket, 8/8/3");
}

#[test]
fn a_planted_shape_is_its_series_top_motif() {
    let params = MotifParams {
        alphabet: 8,
        ..MotifParams::default()
    };
    let planted = reference_word(&SHAPE, &params).unwrap();
    assert_eq!(planted, "hafc");
    let (source, name) = PLANTED;
    for seed in [1, 2, 3] {
        let (readings, plantings) = seeded_readings(seed);
        let mut top: Vec<Pattern> = check(&readings, params, &format!("planted, seed {seed}"))
            .into_iter()
            .filter(|p| p.sources == [source] && p.items[0] == name)
            .collect();
        top.sort_by(|a, b| {
            b.occurrences
                .cmp(&a.occurrences)
                .then(a.items.cmp(&b.items))
        });
        let words: Vec<_> = top.iter().map(|p| (&p.items[1], p.occurrences)).collect();
        assert_eq!(top.len(), params.top_k, "seed {seed}: {words:?}");
        // First of the top, once per planting (the windows around it that read the same are
        // one occurrence), from the start of the first planting to the end of the last.
        let first = &top[0];
        assert_eq!(first.items[1], planted, "seed {seed}: {words:?}");
        assert_eq!(
            first.occurrences, PLANTINGS as u64,
            "seed {seed}: {words:?}"
        );
        assert_eq!(first.first_seen, plantings[0].0);
        assert_eq!(first.last_seen, plantings[PLANTINGS - 1].1);
        assert!(
            top[1].occurrences < first.occurrences,
            "seed {seed}: {words:?}"
        );
    }
}

//! Guards against plain sequential references, at 1 and 2 workers, on seeded data with spikes.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::operators::capture::Event;
use timely::dataflow::operators::{Capture, Input};
use vigil_operators::*;

/// Seeded telemetry: noisy series with spikes and level shifts, a constant series, and ties
/// in event time, so that ordering, clears and std = 0 are all exercised.
fn dataset(seed: u64) -> Vec<Reading> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut readings = Vec::new();
    for s in 0..12 {
        let source = format!("veh-{}", s % 4);
        let name = ["temp_c", "pressure_kpa", "fuel_pct"][s / 4];
        let base: f64 = rng.random_range(-50.0..500.0);
        let mut shift = 0.0;
        for i in 0..700u64 {
            // Several readings share a timestamp; seq, or else the value, breaks the tie.
            let ts = 1_000_000 + (i / 2) as i64 * 1000;
            if rng.random_bool(0.003) {
                shift = if shift == 0.0 { 40.0 } else { 0.0 };
            }
            let noise: f64 = (0..4).map(|_| rng.random_range(-1.0..1.0)).sum();
            let spike = if rng.random_bool(0.01) {
                rng.random_range(15.0..40.0)
            } else {
                0.0
            };
            let value = base + noise + shift + spike;
            // Every fifth series has no sequence numbers, so equal timestamps tie on value.
            let reading = Reading::new(&source, name, ts, value);
            readings.push(if s % 5 == 4 {
                reading
            } else {
                reading.with_seq(i)
            });
        }
    }
    for i in 0..200u64 {
        readings.push(
            Reading::new("veh-const", "temp_c", 1_000_000 + i as i64 * 500, 21.5).with_seq(i),
        );
    }
    readings
}

/// What an alert is compared on.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    id: String,
    status: AlertStatus,
    ts: i64,
    source: String,
    name: String,
    observed: f64,
    expected: f64,
    score: f64,
}

fn seen(alert: &Alert) -> Seen {
    Seen {
        id: alert.alert_id.to_string(),
        status: alert.status,
        ts: alert.ts,
        source: alert.source.to_string(),
        name: alert.name.to_string(),
        observed: alert.observed,
        expected: alert.expected,
        score: alert.score,
    }
}

/// The sequential reference: per series in (ts, seq, value) order, a verdict function giving
/// (score, expected) from the series' history of (ts, value), and the raise/clear state
/// machine written out plainly: raise at a score of at least `raise`, clear below `clear`.
fn reference(
    readings: &[Reading],
    guard: &str,
    (raise, clear): (f64, f64),
    mut verdict: impl FnMut(&[(i64, f64)], &Reading) -> Option<(f64, f64)>,
) -> Vec<Seen> {
    let mut by_series: BTreeMap<(String, String), Vec<&Reading>> = BTreeMap::new();
    for r in readings {
        by_series
            .entry((r.source.to_string(), r.name.to_string()))
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for ((source, name), mut rs) in by_series {
        rs.sort_by(|a, b| {
            (a.ts, a.seq)
                .cmp(&(b.ts, b.seq))
                .then(a.value.total_cmp(&b.value))
        });
        let mut history: Vec<(i64, f64)> = Vec::new();
        let mut open: Option<String> = None;
        for r in rs {
            if let Some((score, expected)) = verdict(&history, r) {
                let make = |id: &str, status| Seen {
                    id: id.to_owned(),
                    status,
                    ts: r.ts,
                    source: source.clone(),
                    name: name.clone(),
                    observed: r.value,
                    expected,
                    score,
                };
                if score >= raise && open.is_none() {
                    let id = alert_id(guard, &source, &name, r.ts).to_string();
                    out.push(make(&id, AlertStatus::Raised));
                    open = Some(id);
                } else if score < clear
                    && let Some(id) = open.take()
                {
                    out.push(make(&id, AlertStatus::Cleared));
                }
            }
            history.push((r.ts, r.value));
        }
    }
    sort(&mut out);
    out
}

/// z-score with raise at `threshold` deviations and clear below `clear`; the score is
/// z / (z + threshold), 0.5 at the threshold.
fn zscore_reference(readings: &[Reading], window: usize, threshold: f64, clear: f64) -> Vec<Seen> {
    let score = move |z: f64| z / (z + threshold);
    reference(
        readings,
        "zscore",
        (0.5, score(clear)),
        move |history, r| {
            if history.len() < window {
                return None;
            }
            let last: Vec<f64> = history[history.len() - window..]
                .iter()
                .map(|h| h.1)
                .collect();
            let mean = last.iter().sum::<f64>() / window as f64;
            let var = last.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / window as f64;
            let std = var.sqrt();
            let z = if is_degenerate_std(std, mean) {
                0.0
            } else {
                (r.value - mean).abs() / std
            };
            Some((score(z), mean))
        },
    )
}

fn sort(alerts: &mut [Seen]) {
    alerts.sort_by(|a, b| (a.ts, &a.id, a.status).cmp(&(b.ts, &b.id, b.status)));
}

/// Runs `build` over the readings on `workers` workers, feeding them the way the pipeline
/// does: in event-time batches spread over workers, each sent at its worker's watermark.
fn run_dataflow<F>(
    readings: &[Reading],
    workers: usize,
    build: F,
) -> (Vec<Alert>, Vec<(OpenAlert, isize)>)
where
    F: Fn(
            timely::dataflow::Stream<'_, u64, Vec<Point>>,
        ) -> timely::dataflow::Stream<'_, u64, Vec<Alert>>
        + Send
        + Sync
        + 'static,
{
    let mut sorted = readings.to_vec();
    sorted.sort_by_key(|r| r.ts);
    // Shuffle inside each batch so that the operator's own ordering is what is tested.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut batches: Vec<Vec<Reading>> = sorted.chunks(97).map(<[Reading]>::to_vec).collect();
    for batch in &mut batches {
        for i in (1..batch.len()).rev() {
            batch.swap(i, rng.random_range(0..=i));
        }
    }
    let batches = Arc::new(batches);
    let alerts = Arc::new(Mutex::new(Vec::new()));
    let open = Arc::new(Mutex::new(Vec::new()));
    let (alerts_out, open_out) = (alerts.clone(), open.clone());
    let build = Arc::new(build);
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let build = build.clone();
        let (mut input, alerts_rx, open_rx) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, readings) = scope.new_input::<Vec<Point>>();
            let alerts = build(readings);
            let open = alerts.clone().open_alerts().consolidate();
            (input, alerts.capture(), open.inner.capture())
        });
        let mine: Vec<&Vec<Reading>> = batches.iter().skip(index).step_by(peers).collect();
        for (k, batch) in mine.iter().enumerate() {
            input.send_batch(&mut batch.iter().map(Point::from).collect());
            if let Some(next) = mine.get(k + 1) {
                let next_min = next.iter().map(|r| r.ts).min().unwrap_or(0) as u64;
                input.advance_to(next_min.max(*input.time()));
            }
            worker.step();
        }
        drop(input);
        while worker.step_or_park(None) {}
        alerts_out.lock().unwrap().extend(messages(alerts_rx));
        open_out.lock().unwrap().extend(messages(open_rx));
    })
    .expect("timely runs");
    let alerts = std::mem::take(&mut *alerts.lock().unwrap());
    let mut net: BTreeMap<OpenAlert, isize> = BTreeMap::new();
    for (key, _time, diff) in std::mem::take(&mut *open.lock().unwrap()) {
        *net.entry(key).or_default() += diff;
    }
    (alerts, net.into_iter().filter(|(_, d)| *d != 0).collect())
}

fn assert_same(actual: &[Alert], expected: &[Seen]) {
    let mut actual: Vec<Seen> = actual.iter().map(seen).collect();
    sort(&mut actual);
    assert_eq!(
        actual.len(),
        expected.len(),
        "alert count differs from the reference"
    );
    for (a, e) in actual.iter().zip(expected) {
        assert_eq!(
            (&a.id, a.status, a.ts, &a.source, &a.name),
            (&e.id, e.status, e.ts, &e.source, &e.name)
        );
        for (x, y) in [
            (a.observed, e.observed),
            (a.expected, e.expected),
            (a.score, e.score),
        ] {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{a:?} vs {e:?}");
        }
    }
}

fn open_set(expected: &[Seen]) -> BTreeSet<String> {
    let mut open = BTreeSet::new();
    for alert in expected {
        match alert.status {
            AlertStatus::Raised => open.insert(alert.id.clone()),
            AlertStatus::Cleared => open.remove(&alert.id),
        };
    }
    open
}

#[test]
fn zscore_matches_reference_at_one_and_two_workers() {
    for seed in [1, 2, 3] {
        let readings = dataset(seed);
        let expected = zscore_reference(&readings, 60, 6.0, 3.0);
        let raised = expected
            .iter()
            .filter(|a| a.status == AlertStatus::Raised)
            .count();
        let cleared = expected
            .iter()
            .filter(|a| a.status == AlertStatus::Cleared)
            .count();
        assert!(
            raised > 5 && cleared > 5,
            "the data must exercise raises and clears ({raised}/{cleared})"
        );
        assert!(
            !expected.iter().any(|a| a.source == "veh-const"),
            "a constant series never alerts"
        );
        for workers in [1, 2] {
            let (alerts, open) = run_dataflow(&readings, workers, |s| {
                s.guard(GuardLabel::new("zscore"), ZScore::default())
            });
            assert_same(&alerts, &expected);
            let open_ids: BTreeSet<String> =
                open.iter().map(|((id, ..), _)| id.to_string()).collect();
            assert_eq!(
                open_ids,
                open_set(&expected),
                "open alerts after retractions, {workers} workers"
            );
            assert!(open.iter().all(|(_, diff)| *diff == 1));
        }
    }
}

#[test]
fn zscore_small_window_and_threshold() {
    let readings = dataset(11);
    // Without hysteresis (clear at the threshold) and with it.
    for clear in [3.0, 1.0] {
        let expected = zscore_reference(&readings, 10, 3.0, clear);
        assert!(expected.len() > 20);
        for workers in [1, 2] {
            let (alerts, _) = run_dataflow(&readings, workers, move |s| {
                s.guard(
                    GuardLabel::new("zscore"),
                    ZScore::new(10, 3.0).clear_below(clear),
                )
            });
            assert_same(&alerts, &expected);
        }
    }
}

#[test]
fn threshold_matches_reference() {
    let readings = dataset(5);
    let (min, max) = (-20.0, 300.0);
    let expected = reference(&readings, "threshold", (0.5, 0.5), |_, r| {
        (r.name == "temp_c").then(|| {
            if r.value < min {
                (1.0, min)
            } else if r.value > max {
                (1.0, max)
            } else {
                (0.0, (min + max) / 2.0)
            }
        })
    });
    assert!(expected.iter().any(|a| a.status == AlertStatus::Raised));
    for workers in [1, 2] {
        let (alerts, _) = run_dataflow(&readings, workers, move |s| {
            s.guard(
                GuardLabel::new("threshold"),
                Threshold::new().bound("temp_c", Some(min), Some(max)),
            )
        });
        assert_same(&alerts, &expected);
    }
}

/// Every record a captured stream carried.
fn messages<D>(rx: std::sync::mpsc::Receiver<Event<u64, Vec<D>>>) -> Vec<D> {
    rx.try_iter()
        .flat_map(|event| match event {
            Event::Messages(_, data) => data,
            Event::Progress(_) => Vec::new(),
        })
        .collect()
}

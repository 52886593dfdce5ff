//! Guards against plain sequential references, at 1 and 2 workers, on seeded data with spikes.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use timely::dataflow::operators::capture::Event;
use timely::dataflow::operators::{Capture, Input, Probe};
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

/// Builds the guards under test on a worker's stream of points.
trait BuildGuards:
    Fn(
        timely::dataflow::Stream<'_, u64, Vec<SeriesReading>>,
    ) -> timely::dataflow::Stream<'_, u64, Vec<Alert>>
    + Send
    + Sync
    + 'static
{
}

impl<F> BuildGuards for F where
    F: Fn(
            timely::dataflow::Stream<'_, u64, Vec<SeriesReading>>,
        ) -> timely::dataflow::Stream<'_, u64, Vec<Alert>>
        + Send
        + Sync
        + 'static
{
}

/// Runs `build` over the readings on `workers` workers, feeding them the way the pipeline
/// does: in event-time batches spread over workers, each sent at its worker's watermark.
fn run_dataflow(
    readings: &[Reading],
    workers: usize,
    build: impl BuildGuards,
) -> (Vec<Alert>, Vec<(OpenAlert, isize)>) {
    run_dataflow_paced(readings, workers, false, build)
}

/// As [`run_dataflow`]; `paced`: each worker lets the dataflow catch up with its input time
/// after every batch, as the job's reading loop does, so the guards see the frontier move in
/// small steps instead of all at once.
fn run_dataflow_paced(
    readings: &[Reading],
    workers: usize,
    paced: bool,
    build: impl BuildGuards,
) -> (Vec<Alert>, Vec<(OpenAlert, isize)>) {
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
        let probe = timely::dataflow::ProbeHandle::new();
        let (mut input, alerts_rx, open_rx) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, readings) = scope.new_input::<Vec<SeriesReading>>();
            let alerts = build(readings);
            alerts.clone().probe_with(&probe);
            let open = alerts.clone().open_alerts().consolidate();
            (input, alerts.capture(), open.inner.capture())
        });
        let mine: Vec<&Vec<Reading>> = batches.iter().skip(index).step_by(peers).collect();
        for (k, batch) in mine.iter().enumerate() {
            input.send_batch(&mut batch.iter().map(SeriesReading::from).collect());
            if let Some(next) = mine.get(k + 1) {
                let next_min = next.iter().map(|r| r.ts).min().unwrap_or(0) as u64;
                input.advance_to(next_min.max(*input.time()));
                while paced && probe.less_than(input.time()) {
                    worker.step();
                }
            }
            worker.step();
        }
        // As the job does at the end of its input: time reaches the newest event of the whole
        // input before the input closes.
        let last = batches.iter().flatten().map(|r| r.ts).max().unwrap_or(0) as u64 + 1;
        input.advance_to(last.max(*input.time()));
        while probe.less_than(&last) {
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

/// d / (d + t): the score a guard gives a distance `d` under threshold `t`.
fn dscore(d: f64, t: f64) -> f64 {
    d / (d + t)
}

#[test]
fn ewma_matches_reference() {
    let readings = dataset(21);
    let g = Ewma::default();
    let expected = reference(
        &readings,
        "ewma",
        (0.5, dscore(g.clear, g.threshold)),
        |history, r| {
            if history.len() < g.warmup as usize {
                return None;
            }
            // The exponentially weighted mean and variance, folded in from the first reading.
            let (mut mean, mut var) = (history[0].1, 0.0);
            for &(_, x) in &history[1..] {
                let diff = x - mean;
                mean += g.alpha * diff;
                var = (1.0 - g.alpha) * (var + diff * g.alpha * diff);
            }
            let std: f64 = var.sqrt();
            let d = if is_degenerate_std(std, mean) {
                0.0
            } else {
                (r.value - mean).abs() / std
            };
            Some((dscore(d, g.threshold), mean))
        },
    );
    assert!(expected.iter().any(|a| a.status == AlertStatus::Cleared));
    for workers in [1, 2] {
        let (alerts, _) = run_dataflow(&readings, workers, move |s| {
            s.guard(GuardLabel::new("ewma"), g)
        });
        assert_same(&alerts, &expected);
    }
}

#[test]
fn mad_matches_reference() {
    let readings = dataset(22);
    let g = Mad::default();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let expected = reference(
        &readings,
        "mad",
        (0.5, dscore(g.clear, g.threshold)),
        |history, r| {
            if history.len() < g.window {
                return None;
            }
            let mut last: Vec<f64> = history[history.len() - g.window..]
                .iter()
                .map(|h| h.1)
                .collect();
            let m = median(&mut last);
            let mut dev: Vec<f64> = last.iter().map(|v| (v - m).abs()).collect();
            let mean_abs = dev.iter().sum::<f64>() / dev.len() as f64;
            let mad = median(&mut dev);
            let spread = if mad > 0.0 {
                mad * 1.4826
            } else {
                mean_abs * 1.2533
            };
            let d = if is_degenerate_std(spread, m) {
                0.0
            } else {
                (r.value - m).abs() / spread
            };
            Some((dscore(d, g.threshold), m))
        },
    );
    assert!(expected.iter().any(|a| a.status == AlertStatus::Cleared));
    for workers in [1, 2] {
        let (alerts, _) = run_dataflow(&readings, workers, move |s| {
            s.guard(GuardLabel::new("mad"), g)
        });
        assert_same(&alerts, &expected);
    }
}

#[test]
fn rate_with_a_bound_matches_reference() {
    let readings = dataset(23);
    let g = Rate::bounded(20.0);
    let expected = reference(
        &readings,
        "rate",
        (0.5, dscore(10.0, 20.0)),
        |history, r| {
            // The rate against the latest earlier reading at a different event time.
            let &(t0, x0) = history.iter().rev().find(|(t, _)| *t < r.ts)?;
            let rate = (r.value - x0) / ((r.ts - t0) as f64 / 1000.0);
            Some((dscore(rate.abs(), 20.0), 20.0f64.copysign(rate)))
        },
    );
    assert!(expected.iter().any(|a| a.status == AlertStatus::Cleared));
    for workers in [1, 2] {
        let (alerts, _) = run_dataflow(&readings, workers, move |s| {
            s.guard(GuardLabel::new("rate"), g)
        });
        // Observed is the rate, not the value: compare ids, times and status.
        let mut got: Vec<(String, AlertStatus, i64)> = alerts
            .iter()
            .map(|a| (a.alert_id.to_string(), a.status, a.ts))
            .collect();
        got.sort();
        let mut want: Vec<(String, AlertStatus, i64)> = expected
            .iter()
            .map(|a| (a.id.clone(), a.status, a.ts))
            .collect();
        want.sort();
        assert_eq!(got, want, "{workers} workers");
    }
}

/// Several guards in one operator give, per guard, what each gives alone in a plain replay
/// of each series, at one and two workers.
#[test]
fn guard_set_matches_replay_per_series() {
    let readings = dataset(24);
    let build = || {
        vec![
            Guard::new(GuardLabel::new("composite"), Composite::default()),
            Guard::new(GuardLabel::new("level_shift"), LevelShift::default()),
            Guard::new(
                GuardLabel::new("seasonal"),
                Seasonal {
                    period_ms: 60_000,
                    buckets: 6,
                    ..Seasonal::default()
                },
            ),
            Guard::new(GuardLabel::new("rate"), Rate::default()),
            Guard::new(
                GuardLabel::new("rate_change"),
                Rate {
                    order: 2,
                    ..Rate::default()
                },
            ),
            Guard::new(GuardLabel::new("ewma"), Ewma::default()),
            Guard::new(GuardLabel::new("mad"), Mad::default()),
        ]
    };
    let mut by_series: BTreeMap<(String, String), Vec<SeriesReading>> = BTreeMap::new();
    for r in &readings {
        by_series
            .entry((r.source.to_string(), r.name.to_string()))
            .or_default()
            .push(SeriesReading::from(r));
    }
    let mut expected: Vec<Seen> = Vec::new();
    for guard in build() {
        let mut raised = 0;
        for points in by_series.values_mut() {
            points.sort_by(SeriesReading::guard_order);
            let alerts = guard.replay(points);
            raised += alerts
                .iter()
                .filter(|a| a.status == AlertStatus::Raised)
                .count();
            expected.extend(alerts.iter().map(seen));
        }
        assert!(
            raised > 0,
            "{} must raise on this data",
            guard.label().guard
        );
    }
    sort(&mut expected);
    for workers in [1, 2] {
        let (alerts, _) = run_dataflow(&readings, workers, move |s| {
            s.guards(build(), GuardOperatorParams::default())
        });
        assert_same(&alerts, &expected);
    }
}

#[test]
fn composite_catches_a_spike_and_a_shift_and_ignores_a_flat_series() {
    let mut rng = ChaCha8Rng::seed_from_u64(25);
    let mut points = Vec::new();
    for i in 0..3000i64 {
        let noise: f64 = (0..4).map(|_| rng.random_range(-1.0..1.0)).sum();
        let value =
            100.0 + noise + if i == 1500 { 40.0 } else { 0.0 } + if i >= 2500 { 25.0 } else { 0.0 };
        points.push(SeriesReading::from(&Reading::new(
            "dev",
            "load",
            i * 60_000,
            value,
        )));
    }
    let guard = Guard::new(GuardLabel::new("composite"), Composite::default());
    let raised: Vec<i64> = guard
        .replay(&points)
        .iter()
        .filter(|a| a.status == AlertStatus::Raised)
        .map(|a| a.ts / 60_000)
        .collect();
    assert!(raised.contains(&1500), "the spike is caught: {raised:?}");
    assert!(
        raised.iter().any(|&i| (2500..2510).contains(&i)),
        "the shift is caught within ten readings: {raised:?}"
    );
    assert!(raised.len() <= 10, "few alerts on noise: {raised:?}");
    let flat: Vec<SeriesReading> = (0..500)
        .map(|i| SeriesReading::from(&Reading::new("dev", "flat", i * 1000, 7.0)))
        .collect();
    assert!(guard.replay(&flat).is_empty());
}

/// Series at a one-second cadence with gaps: one goes quiet for 100 s, one for 50 s, one for
/// 3 s (under the silence factor); all resume.
fn gappy() -> Vec<Reading> {
    let mut readings = Vec::new();
    for (source, quiet) in [
        ("veh-1", 200..300),
        ("veh-2", 500..550),
        ("veh-3", 100..103),
    ] {
        for s in 0..600i64 {
            if !quiet.contains(&s) {
                readings.push(Reading::new(source, "temp_c", s * 1000, 20.0));
            }
        }
    }
    readings
}

#[test]
fn silence_raises_at_the_due_time_and_clears_when_data_returns() {
    let readings = gappy();
    let g = Silence::default();
    // The reference: per series, the usual interval as an exponentially weighted mean of the
    // gaps; a reading that comes later than last + factor × interval ends a silence that began
    // at that due time.
    let mut expected = Vec::new();
    for source in ["veh-1", "veh-2", "veh-3"] {
        let ts: Vec<i64> = readings
            .iter()
            .filter(|r| r.source == source)
            .map(|r| r.ts)
            .collect();
        let (mut interval, mut n) = (0.0, 0);
        for w in ts.windows(2) {
            let gap = (w[1] - w[0]) as f64;
            if n >= g.warmup {
                let due = w[0] + (interval * g.factor).max(g.min_ms as f64).ceil() as i64;
                if w[1] > due {
                    let id = alert_id("silence", source, "temp_c", due).to_string();
                    expected.push((id.clone(), AlertStatus::Raised, due));
                    expected.push((id, AlertStatus::Cleared, w[1]));
                }
            }
            interval = if n == 0 {
                gap
            } else {
                interval + g.alpha * (gap - interval)
            };
            n += 1;
        }
    }
    expected.sort();
    assert_eq!(expected.len(), 4, "two silences: {expected:?}");
    assert_eq!(
        expected
            .iter()
            .find(|a| a.1 == AlertStatus::Raised)
            .map(|a| a.2),
        Some(204_000)
    );

    let guard = Guard::new(GuardLabel::new("silence"), g);
    for workers in [1, 2] {
        let (alerts, open) = run_dataflow(&readings, workers, move |s| {
            s.guard(GuardLabel::new("silence"), g)
        });
        let mut got: Vec<(String, AlertStatus, i64)> = alerts
            .iter()
            .map(|a| (a.alert_id.to_string(), a.status, a.ts))
            .collect();
        got.sort();
        assert_eq!(got, expected, "{workers} workers");
        assert!(open.is_empty(), "every silence ended");
    }
    // The per-series replay agrees.
    let mut replayed: Vec<(String, AlertStatus, i64)> = Vec::new();
    for source in ["veh-1", "veh-2", "veh-3"] {
        let points: Vec<SeriesReading> = readings
            .iter()
            .filter(|r| r.source == source)
            .map(SeriesReading::from)
            .collect();
        replayed.extend(
            guard
                .replay(&points)
                .iter()
                .map(|a| (a.alert_id.to_string(), a.status, a.ts)),
        );
    }
    replayed.sort();
    assert_eq!(replayed, expected);
}

#[test]
fn silence_is_noticed_from_the_watermark_alone() {
    // veh-1 stops for good; veh-2 keeps reporting, so the watermark passes veh-1's due time.
    let mut readings = Vec::new();
    for s in 0..300i64 {
        if s < 100 {
            readings.push(Reading::new("veh-1", "temp_c", s * 1000, 1.0));
        }
        readings.push(Reading::new("veh-2", "temp_c", s * 1000, 1.0));
    }
    for workers in [1, 2] {
        let (alerts, open) = run_dataflow(&readings, workers, |s| {
            s.guard(GuardLabel::new("silence"), Silence::default())
        });
        let raised: Vec<(&str, i64)> = alerts.iter().map(|a| (a.source.as_str(), a.ts)).collect();
        assert_eq!(raised, [("veh-1", 104_000)], "{workers} workers");
        assert_eq!(open.len(), 1, "the silence is still open");
    }
}

/// Per-source readings: ticks of three metrics sharing a sequence number, with a gap, a
/// duplicated record and a replay of older ticks on veh-1, and a clean veh-2.
fn sequenced() -> Vec<Reading> {
    let mut readings = Vec::new();
    for source in ["veh-1", "veh-2"] {
        let mut ticks: Vec<u64> = (0..100).collect();
        if source == "veh-1" {
            ticks.retain(|t| !(40..43).contains(t)); // a gap of three ticks
            ticks.insert(70, 60); // an old tick replayed (arrives in event-time order below)
        }
        for (i, &tick) in ticks.iter().enumerate() {
            for name in ["alt", "vel", "temp"] {
                let ts = i as i64 * 1000;
                readings.push(Reading::new(source, name, ts, tick as f64).with_seq(tick));
            }
        }
        if source == "veh-1" {
            // The same record twice.
            readings.push(Reading::new(source, "vel", 20_000, 20.0).with_seq(20));
        }
    }
    readings
}

/// Runs per-source guards over the readings at `workers` workers.
fn by_source<L: SeriesLogic + Clone + Send + Sync>(
    readings: &[Reading],
    workers: usize,
    name: &'static str,
    logic: L,
) -> Vec<(String, String, AlertStatus, i64)> {
    let (alerts, _) = run_dataflow(readings, workers, move |s| {
        s.guards_by_source(
            vec![Guard::new(GuardLabel::new(name), logic.clone())],
            GuardOperatorParams::default(),
        )
    });
    let mut got: Vec<_> = alerts
        .iter()
        .map(|a| (a.source.to_string(), a.name.to_string(), a.status, a.ts))
        .collect();
    got.sort_by_key(|a| (a.3, a.0.clone()));
    got
}

#[test]
fn sequence_flags_gaps_duplicates_and_replays_per_source() {
    let readings = sequenced();
    // The reference: per source in (ts, seq, value) order, the highest seq so far and the
    // names seen at it.
    let mut expected = Vec::new();
    for source in ["veh-1", "veh-2"] {
        let mut rs: Vec<&Reading> = readings.iter().filter(|r| r.source == source).collect();
        rs.sort_by(|a, b| {
            (a.ts, a.seq)
                .cmp(&(b.ts, b.seq))
                .then(a.value.total_cmp(&b.value))
        });
        let (mut last, mut names, mut open): (Option<u64>, Vec<String>, bool) =
            (None, vec![], false);
        for r in rs {
            let seq = r.seq.unwrap();
            let bad = match last {
                None => false,
                Some(l) if seq == l => names.contains(&r.name.to_string()),
                Some(l) if seq < l => true,
                Some(l) => seq > l + 1,
            };
            if last.is_none_or(|l| seq > l) {
                last = Some(seq);
                names.clear();
            }
            if last == Some(seq) && !names.contains(&r.name.to_string()) {
                names.push(r.name.to_string());
            }
            if bad && !open {
                expected.push((source.to_owned(), "*".to_owned(), AlertStatus::Raised, r.ts));
                open = true;
            } else if !bad && open {
                expected.push((
                    source.to_owned(),
                    "*".to_owned(),
                    AlertStatus::Cleared,
                    r.ts,
                ));
                open = false;
            }
        }
    }
    expected.sort_by_key(|a| (a.3, a.0.clone()));
    assert_eq!(
        expected
            .iter()
            .filter(|a| a.2 == AlertStatus::Raised)
            .count(),
        3,
        "gap, duplicate and replay: {expected:?}"
    );
    assert!(expected.iter().all(|a| a.0 == "veh-1"));
    for workers in [1, 2] {
        assert_eq!(
            by_source(&readings, workers, "sequence", Sequence::default()),
            expected
        );
    }
}

#[test]
fn unknown_sources_and_auth_failure_bursts() {
    let mut readings = Vec::new();
    for s in 0..200i64 {
        readings.push(Reading::new("veh-1", "temp_c", s * 1000, 1.0));
        if s >= 50 {
            readings.push(Reading::new("rogue-9", "temp_c", s * 1000, 1.0));
        }
        // veh-1 fails to authenticate 8 times within 16 s, then once a minute.
        if (100..116).contains(&s) && s % 2 == 0 || (s > 116 && s % 60 == 0) {
            readings.push(Reading::new("veh-1", "AUTH_FAILURE", s * 1000 + 1, 1.0));
        }
    }
    for workers in [1, 2] {
        let got = by_source(
            &readings,
            workers,
            "unknown_source",
            Registry::new(["veh-*"]),
        );
        assert_eq!(
            got,
            [(
                "rogue-9".to_owned(),
                "*".to_owned(),
                AlertStatus::Raised,
                50_000
            )],
            "{workers} workers"
        );
        let got = by_source(&readings, workers, "auth_failures", Burst::auth_failures());
        // The sixth failure (at 110 s) is more than five within a minute; it clears once at
        // most two remain in the window: those at 114 s and 120 s, from the first reading
        // after 172.001 s (a minute after the one at 112 s).
        let raised: Vec<i64> = got
            .iter()
            .filter(|a| a.2 == AlertStatus::Raised)
            .map(|a| a.3)
            .collect();
        assert_eq!(raised, [110_001], "{workers} workers: {got:?}");
        let cleared: Vec<i64> = got
            .iter()
            .filter(|a| a.2 == AlertStatus::Cleared)
            .map(|a| a.3)
            .collect();
        assert_eq!(cleared, [173_000], "{workers} workers: {got:?}");
    }
}

#[test]
fn hysteresis_keeps_a_noisy_series_from_flapping() {
    // A series climbing at about the bound of 5 units/s, its rate bouncing across the bound.
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let readings: Vec<Reading> = (0..4000i64)
        .map(|i| {
            let noise: f64 = (0..4).map(|_| rng.random_range(-0.2..0.2)).sum();
            Reading::new("veh-1", "temp_c", i * 1000, 5.0 * i as f64 + noise)
        })
        .collect();
    let raises = |clear: f64| {
        let (alerts, _) = run_dataflow(&readings, 2, move |s| {
            s.guard(
                GuardLabel::new("rate"),
                Rate {
                    clear,
                    ..Rate::bounded(5.0)
                },
            )
        });
        alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Raised)
            .count()
    };
    // Clearing at the bound itself, the alert flaps with every bounce; clearing below half of
    // it (the default), it opens once and stays open while the rate stays near the bound.
    let (flapping, steady) = (raises(1.0), raises(0.5));
    assert!(
        flapping > 500,
        "without hysteresis the alert flaps: {flapping}"
    );
    assert_eq!(steady, 1, "with hysteresis it does not");
}

#[test]
fn level_shift_and_seasonal_match_references() {
    let readings = dataset(26);
    // CUSUM reference: a slow EWMA baseline, two one-sided sums of standardized deviations
    // less the drift; at an alarm the baseline moves to the reading and the sum that tripped
    // is held at the threshold.
    let g = LevelShift::default();
    let expected = reference(
        &readings,
        "level_shift",
        (0.5, dscore(g.clear, g.threshold)),
        {
            // Per series: baseline mean, variance, readings, and the two sums.
            type Cusum = (f64, f64, u32, f64, f64);
            let mut memo: BTreeMap<(String, String), Cusum> = BTreeMap::new();
            move |_history, r| {
                let key = (r.source.to_string(), r.name.to_string());
                let (mean, var, n, up, down) = memo.entry(key).or_insert((0.0, 0.0, 0, 0.0, 0.0));
                let std = var.max(0.0).sqrt();
                let mut out = None;
                if *n >= g.warmup && !is_degenerate_std(std, *mean) {
                    let z = (r.value - *mean) / std;
                    *up = (*up + z - g.drift).max(0.0);
                    *down = (*down - z - g.drift).max(0.0);
                    let sum = up.max(*down);
                    out = Some((dscore(sum, g.threshold), *mean));
                    if sum >= g.threshold {
                        *mean = r.value;
                        if *up >= *down {
                            (*up, *down) = (g.threshold, 0.0);
                        } else {
                            (*up, *down) = (0.0, g.threshold);
                        }
                    }
                }
                if *n == 0 {
                    *mean = r.value;
                } else {
                    let diff = r.value - *mean;
                    *mean += g.alpha * diff;
                    *var = (1.0 - g.alpha) * (*var + diff * g.alpha * diff);
                }
                *n += 1;
                out
            }
        },
    );
    assert!(expected.iter().any(|a| a.status == AlertStatus::Raised));
    for workers in [1, 2] {
        let (alerts, _) = run_dataflow(&readings, workers, move |s| {
            s.guard(GuardLabel::new("level_shift"), g)
        });
        assert_same(&alerts, &expected);
    }

    // Seasonal reference: per phase of a 60 s period in 6 buckets, an exponentially weighted
    // mean and variance kept in f32, judged once two periods have passed.
    let g = Seasonal {
        period_ms: 60_000,
        buckets: 6,
        ..Seasonal::default()
    };
    let expected = reference(
        &readings,
        "seasonal",
        (0.5, dscore(g.clear, g.threshold)),
        {
            type Phases = (Vec<(f32, f32, u32)>, f64, Option<i64>);
            let mut memo: BTreeMap<(String, String), Phases> = BTreeMap::new();
            move |_history, r| {
                let key = (r.source.to_string(), r.name.to_string());
                let (phases, residual_sq, first) =
                    memo.entry(key)
                        .or_insert((vec![(0.0, 0.0, 0); 6], 0.0, None));
                let first = *first.get_or_insert(r.ts);
                let phase = ((r.ts.rem_euclid(60_000)) / 10_000) as usize;
                let (pm, pv, pn) = &mut phases[phase];
                let mean = f64::from(*pm);
                let mut out = None;
                if r.ts - first >= 120_000 && *pn >= 2 {
                    let spread = f64::from(*pv)
                        .max(0.0)
                        .sqrt()
                        .max(0.25 * residual_sq.sqrt());
                    let d = if is_degenerate_std(spread, mean) {
                        0.0
                    } else {
                        (r.value - mean).abs() / spread
                    };
                    out = Some((dscore(d, g.threshold), mean));
                }
                if *pn == 0 {
                    *pm = r.value as f32;
                } else {
                    let diff = r.value - mean;
                    *residual_sq += g.alpha * 0.1 * (diff * diff - *residual_sq);
                    let incr = g.alpha * diff;
                    *pm = (mean + incr) as f32;
                    *pv = ((1.0 - g.alpha) * (f64::from(*pv) + diff * incr)) as f32;
                }
                *pn += 1;
                out
            }
        },
    );
    assert!(expected.iter().any(|a| a.status == AlertStatus::Raised));
    for workers in [1, 2] {
        let (alerts, _) = run_dataflow(&readings, workers, move |s| {
            s.guard(GuardLabel::new("seasonal"), g)
        });
        assert_same(&alerts, &expected);
    }
}

/// Snapshot bytes by operator.
type Blobs = BTreeMap<String, Vec<Vec<u8>>>;

/// Snapshots taken: (operator, at) → (workers that took it, worker → bytes).
type Saved = BTreeMap<(String, u64), (usize, BTreeMap<usize, Vec<u8>>)>;

/// Keeps snapshots in memory, targets the next boundary as soon as the last target is
/// complete, and restores a given one.
struct MemoryStore {
    every_ms: u64,
    /// (newest frontier reported, current target)
    targets: Mutex<(u64, Option<u64>)>,
    restore: Option<(u64, Blobs)>,
    saved: Mutex<Saved>,
    failed: Mutex<Vec<String>>,
}

impl MemoryStore {
    fn new(every_ms: u64) -> Self {
        Self {
            every_ms,
            targets: Mutex::default(),
            restore: None,
            saved: Mutex::default(),
            failed: Mutex::default(),
        }
    }

    /// Snapshots every worker took, by time, for `operator`.
    fn complete(&self, operator: &str) -> BTreeMap<u64, Vec<Vec<u8>>> {
        let saved = self.saved.lock().unwrap();
        saved
            .iter()
            .filter(|((op, _), (peers, by_worker))| op == operator && by_worker.len() == *peers)
            .map(|((_, at), (_, by_worker))| (*at, by_worker.values().cloned().collect()))
            .collect()
    }
}

impl SnapshotStore for MemoryStore {
    fn target(&self, frontier: u64) -> Option<u64> {
        let mut targets = self.targets.lock().unwrap();
        targets.0 = targets.0.max(frontier);
        let complete = |at: u64| {
            let saved = self.saved.lock().unwrap();
            saved
                .iter()
                .any(|((_, t), (peers, by_worker))| *t == at && by_worker.len() == *peers)
        };
        if let Some(at) = targets.1
            && !complete(at)
        {
            return Some(at);
        }
        let next = (targets.0 / self.every_ms + 1) * self.every_ms;
        targets.1 = Some(next);
        Some(next)
    }

    fn final_at(&self) -> Option<u64> {
        None
    }

    fn save(&self, operator: &str, worker: usize, peers: usize, at: u64, bytes: Vec<u8>) {
        let mut saved = self.saved.lock().unwrap();
        let entry = saved
            .entry((operator.to_owned(), at))
            .or_insert_with(|| (peers, BTreeMap::new()));
        entry.1.insert(worker, bytes);
    }

    fn restore(&self, operator: &str) -> Option<(u64, Vec<Vec<u8>>)> {
        let (at, blobs) = self.restore.as_ref()?;
        Some((*at, blobs.get(operator)?.clone()))
    }

    fn restore_failed(&self, operator: &str, error: &str) {
        self.failed
            .lock()
            .unwrap()
            .push(format!("{operator}: {error}"));
    }
}

#[test]
fn restored_from_a_snapshot_the_guards_go_on_as_if_never_stopped() {
    // Noisy series with spikes and shifts, and series that fall silent, over 350 s.
    let mut readings = dataset(31);
    readings.extend(gappy().into_iter().map(|r| {
        let ts = r.ts;
        Reading::new(
            &format!("quiet-{}", r.source),
            &r.name,
            1_000_000 + ts / 2,
            r.value,
        )
    }));
    let build = || {
        vec![
            Guard::new(GuardLabel::new("zscore"), ZScore::new(30, 3.0)),
            Guard::new(GuardLabel::new("composite"), Composite::default()),
            Guard::new(GuardLabel::new("mad"), Mad::default()),
            Guard::new(GuardLabel::new("rate"), Rate::default()),
            Guard::new(GuardLabel::new("level_shift"), LevelShift::default()),
            Guard::new(GuardLabel::new("silence"), Silence::default()),
        ]
    };
    let store = Arc::new(MemoryStore::new(60_000));
    let snapshotting = |store: &Arc<MemoryStore>| GuardOperatorParams {
        metrics: None,
        snapshots: Some(Snapshots {
            store: store.clone(),
            operator: "series",
        }),
        ..GuardOperatorParams::default()
    };
    let options = snapshotting(&store);
    let (full, _) = run_dataflow_paced(&readings, 2, true, move |s| {
        s.guards(build(), options.clone())
    });
    let snapshots = store.complete("series");
    assert!(
        snapshots.len() >= 3,
        "a snapshot at most boundaries the frontier passed: {:?}",
        snapshots.keys().collect::<Vec<_>>()
    );
    let raised_total = full
        .iter()
        .filter(|a| a.status == AlertStatus::Raised)
        .count();
    assert!(raised_total > 10, "the data raises alerts: {raised_total}");
    let mut silence_checked = 0;
    for (at, blobs) in snapshots.into_iter().skip(1).step_by(2) {
        let mut expected: Vec<Seen> = full
            .iter()
            .filter(|a| a.ts >= at as i64)
            .map(seen)
            .collect();
        sort(&mut expected);
        let silence_after = full
            .iter()
            .filter(|a| a.ts >= at as i64 && a.guard == "silence")
            .count();
        silence_checked += silence_after;
        // Restored by another number of workers than took the snapshot: series move.
        for workers in [1, 3] {
            let mut restoring = MemoryStore::new(60_000);
            restoring.restore = Some((at, BTreeMap::from([("series".to_owned(), blobs.clone())])));
            let restoring = Arc::new(restoring);
            let options = snapshotting(&restoring);
            // The whole input again, as a source replaying from an earlier position would
            // send it: what lies before the snapshot is in it already.
            let (alerts, _) = run_dataflow(&readings, workers, move |s| {
                s.guards(build(), options.clone())
            });
            assert!(restoring.failed.lock().unwrap().is_empty());
            let mut actual: Vec<Seen> = alerts.iter().map(seen).collect();
            sort(&mut actual);
            assert_eq!(
                actual.len(),
                expected.len(),
                "restored at {at} on {workers} workers: as many alerts as the uninterrupted run from there ({silence_after} of silence)"
            );
            assert_eq!(actual, expected, "restored at {at} on {workers} workers");
        }
    }
    assert!(
        silence_checked > 0,
        "silence alerts follow some snapshot, so overdue series are restored too"
    );
}

#[test]
fn a_snapshot_of_other_guards_is_refused_and_the_state_starts_empty() {
    let readings = dataset(5);
    let store = Arc::new(MemoryStore::new(60_000));
    let options = GuardOperatorParams {
        metrics: None,
        snapshots: Some(Snapshots {
            store: store.clone(),
            operator: "series",
        }),
        ..GuardOperatorParams::default()
    };
    let zscore = || vec![Guard::new(GuardLabel::new("zscore"), ZScore::new(30, 3.0))];
    run_dataflow(&readings, 1, move |s| s.guards(zscore(), options.clone()));
    let (at, blobs) = store.complete("series").into_iter().nth(1).unwrap();

    let mut restoring = MemoryStore::new(60_000);
    restoring.restore = Some((at, BTreeMap::from([("series".to_owned(), blobs)])));
    let restoring = Arc::new(restoring);
    let options = GuardOperatorParams {
        metrics: None,
        snapshots: Some(Snapshots {
            store: restoring.clone(),
            operator: "series",
        }),
        ..GuardOperatorParams::default()
    };
    let ewma = || vec![Guard::new(GuardLabel::new("ewma"), Ewma::default())];
    let (alerts, _) = run_dataflow(&readings, 1, move |s| s.guards(ewma(), options.clone()));
    let failed = restoring.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("zscore"), "{failed:?}");
    // Started empty and judged the whole input, not only what follows the snapshot.
    assert!(
        alerts.iter().any(|a| a.ts < at as i64),
        "{} alerts",
        alerts.len()
    );
}

/// A series of steady readings every second from `from`, then a spike at `spike`.
fn steady_then_spike(source: &str, from: i64, count: i64, spike: i64) -> Vec<Reading> {
    let mut readings: Vec<Reading> = (0..count)
        .map(|i| {
            Reading::new(
                source,
                "temp_c",
                from + i * 1000,
                20.0 + (i % 5) as f64 * 0.1,
            )
        })
        .collect();
    readings.push(Reading::new(source, "temp_c", spike, 95.0));
    readings
}

#[test]
fn random_series_stay_bounded_and_a_watched_series_keeps_its_alert() {
    // 20,000 sources seen once each (random names, say), and one real series with a spike.
    let mut readings = steady_then_spike("veh-1", 1_000_000, 200, 1_250_000);
    readings.extend(
        (0..20_000)
            .map(|i| Reading::new(&format!("random-{i}"), "temp_c", 1_000_000 + i * 10, 1.0)),
    );
    let limits = SeriesLimits {
        max_series: Some(1_000),
        idle_ms: None,
    };
    let zscore = || vec![Guard::new(GuardLabel::new("zscore"), ZScore::new(30, 3.0))];
    let metrics = GuardMetrics::default();
    let options = GuardOperatorParams {
        metrics: Some(metrics.clone()),
        limits,
        ..GuardOperatorParams::default()
    };
    let (alerts, _) = run_dataflow(&readings, 1, move |s| s.guards(zscore(), options.clone()));
    use std::sync::atomic::Ordering::Relaxed;
    let held = metrics.series.load(Relaxed);
    assert!(held <= 1_000, "{held} series held past the limit of 1,000");
    assert!(metrics.evicted.load(Relaxed) >= 19_000);
    assert_eq!(metrics.refused.load(Relaxed), 0);
    // The spike of the watched series is still caught, as without a limit.
    let (unbounded, _) = run_dataflow(&readings, 1, move |s| {
        s.guards(zscore(), GuardOperatorParams::default())
    });
    let spikes = |alerts: &[Alert]| -> Vec<(String, i64)> {
        alerts
            .iter()
            .filter(|a| a.source == "veh-1")
            .map(|a| (a.alert_id.to_string(), a.ts))
            .collect()
    };
    assert!(!spikes(&unbounded).is_empty());
    assert_eq!(spikes(&alerts), spikes(&unbounded));
    // At two workers the same alerts.
    let (two, _) = run_dataflow(&readings, 2, move |s| {
        s.guards(
            zscore(),
            GuardOperatorParams {
                limits,
                ..GuardOperatorParams::default()
            },
        )
    });
    assert_eq!(spikes(&two), spikes(&alerts));
}

#[test]
fn a_series_quiet_past_the_idle_time_starts_afresh_at_any_worker_count() {
    // A steady series, a gap of an hour, then a spike: with a state of an hour ago the spike
    // is an anomaly; forgotten after 10 minutes of quiet, the series starts afresh and the
    // z-score guard is still warming up at the spike.
    let mut readings = steady_then_spike("veh-1", 1_000_000, 200, 1_000_000 + 199_000 + 3_600_000);
    // Other series keep the frontier moving through the gap, so sweeps run too.
    readings.extend((0..400).map(|i| Reading::new("veh-2", "temp_c", 1_000_000 + i * 10_000, 5.0)));
    let zscore = || vec![Guard::new(GuardLabel::new("zscore"), ZScore::new(30, 3.0))];
    let forgetting = GuardOperatorParams {
        limits: SeriesLimits {
            max_series: None,
            idle_ms: Some(600_000),
        },
        ..GuardOperatorParams::default()
    };
    let spike_alerts = |alerts: &[Alert]| alerts.iter().filter(|a| a.source == "veh-1").count();
    let (kept, _) = run_dataflow(&readings, 1, move |s| {
        s.guards(zscore(), GuardOperatorParams::default())
    });
    assert!(
        spike_alerts(&kept) > 0,
        "without idle forgetting the spike is caught"
    );
    let mut seen = Vec::new();
    for workers in [1, 2] {
        for paced in [false, true] {
            let options = forgetting.clone();
            let (alerts, _) = run_dataflow_paced(&readings, workers, paced, move |s| {
                s.guards(zscore(), options.clone())
            });
            assert_eq!(spike_alerts(&alerts), 0, "workers {workers}, paced {paced}");
            let mut ids: Vec<String> = alerts.iter().map(|a| a.alert_id.to_string()).collect();
            ids.sort();
            seen.push(ids);
        }
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    // All at once, in one batch judged in one step: the gap inside the step counts too.
    let points: Vec<SeriesReading> = readings.iter().map(SeriesReading::from).collect();
    let captured = timely::example(move |scope| {
        use timely::dataflow::operators::ToStream;
        points
            .to_stream(scope)
            .container::<Vec<_>>()
            .guards(zscore(), forgetting)
            .capture()
    });
    let at_once: Vec<Alert> = captured
        .try_iter()
        .flat_map(|event| match event {
            Event::Messages(_, alerts) => alerts,
            Event::Progress(_) => Vec::new(),
        })
        .collect();
    assert_eq!(spike_alerts(&at_once), 0);
}

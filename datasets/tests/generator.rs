//! The seeded generator: deterministic, partition-independent, and its labels are the truth.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::{BTreeSet, HashMap};

use vigil_datasets::generator::{
    self, ANOMALY_BLOCK_TICKS, ANOMALY_KINDS, DEVICE_EVENTS, DeviceParams, Label,
    ROCKET_ANOMALY_SCALE, ROCKET_METRICS, ROCKET_NOISE_STD, RocketParams,
};
use vigil_operators::{Kind, Reading};

/// A small rocket spec with many anomalies, so every kind shows up.
fn rocket_spec(anomaly_rate: f64) -> RocketParams {
    RocketParams {
        vehicles: 10,
        ticks: 1100,
        interval_ms: 250,
        seed: 7,
        anomaly_rate,
        ..RocketParams::default()
    }
}

fn device_spec() -> DeviceParams {
    DeviceParams {
        devices: 40,
        ticks: 2000,
        seed: 11,
        ..DeviceParams::default()
    }
}

fn rocket_tick_vec(
    spec: &RocketParams,
    tick: u64,
    sources: std::ops::Range<usize>,
) -> Vec<Reading> {
    let mut out = Vec::new();
    generator::rocket_tick(spec, tick, sources, &mut |r| out.push(r));
    out
}

fn device_tick_vec(
    spec: &DeviceParams,
    tick: u64,
    sources: std::ops::Range<usize>,
) -> Vec<Reading> {
    let mut out = Vec::new();
    generator::device_tick(spec, tick, sources, &mut |r| out.push(r));
    out
}

fn vehicle_of(source: &str) -> usize {
    source
        .strip_prefix("veh-")
        .and_then(|i| i.parse().ok())
        .expect("a vehicle name")
}

fn metric_of(name: &str) -> usize {
    ROCKET_METRICS
        .iter()
        .position(|m| *m == name)
        .expect("a rocket metric")
}

/// Readings keyed by (vehicle, metric, tick).
fn by_key(readings: impl Iterator<Item = Reading>) -> HashMap<(usize, usize, u64), f64> {
    readings
        .map(|r| {
            (
                (
                    vehicle_of(&r.source),
                    metric_of(&r.name),
                    r.seq.expect("seq"),
                ),
                r.value,
            )
        })
        .collect()
}

fn tick_of(spec: &RocketParams, ts: i64) -> u64 {
    ((ts - spec.start_ms) / spec.interval_ms) as u64
}

#[test]
fn runs_are_deterministic() {
    let spec = rocket_spec(0.002);
    let first: Vec<Reading> = generator::rocket_readings(&spec).collect();
    let second: Vec<Reading> = generator::rocket_readings(&spec).collect();
    assert_eq!(first, second);
    assert_eq!(
        generator::rocket_labels(&spec),
        generator::rocket_labels(&spec)
    );

    let devices = device_spec();
    let first: Vec<Reading> = generator::device_events(&devices).collect();
    let second: Vec<Reading> = generator::device_events(&devices).collect();
    assert_eq!(first, second);

    let other_seed = RocketParams {
        seed: 8,
        ..spec.clone()
    };
    assert_ne!(
        generator::rocket_readings(&spec)
            .take(1000)
            .collect::<Vec<_>>(),
        generator::rocket_readings(&other_seed)
            .take(1000)
            .collect::<Vec<_>>()
    );
}

#[test]
fn output_does_not_depend_on_the_partition() {
    let spec = rocket_spec(0.004);
    let all: Vec<Reading> = generator::rocket_readings(&spec).collect();
    let per_tick = spec.vehicles * ROCKET_METRICS.len();
    // Sources split among workers, and ticks generated in any order.
    for tick in (0..spec.ticks).rev() {
        let whole = rocket_tick_vec(&spec, tick, 0..10);
        let mut split = rocket_tick_vec(&spec, tick, 0..4);
        split.extend(rocket_tick_vec(&spec, tick, 4..10));
        assert_eq!(whole, split, "tick {tick}");
        let start = tick as usize * per_tick;
        assert_eq!(whole, all[start..start + per_tick], "tick {tick}");
    }
    // A spec with more vehicles generates the same readings for the vehicles both have.
    let wider = RocketParams {
        vehicles: 25,
        ..spec.clone()
    };
    assert_eq!(
        rocket_tick_vec(&wider, 500, 0..10),
        rocket_tick_vec(&spec, 500, 0..10)
    );

    let devices = device_spec();
    for tick in 0..devices.ticks {
        let whole = device_tick_vec(&devices, tick, 0..devices.devices);
        let mut split = device_tick_vec(&devices, tick, 0..13);
        split.extend(device_tick_vec(&devices, tick, 13..devices.devices));
        assert_eq!(whole, split, "tick {tick}");
    }
}

#[test]
fn rocket_counts_names_and_kinds() {
    let spec = rocket_spec(0.002);
    let readings: Vec<Reading> = generator::rocket_readings(&spec).collect();
    assert_eq!(
        readings.len(),
        spec.vehicles * ROCKET_METRICS.len() * spec.ticks as usize
    );
    assert_eq!(readings.len() as u64, spec.readings());
    for (i, r) in readings.iter().enumerate() {
        let tick = (i / (spec.vehicles * ROCKET_METRICS.len())) as u64;
        let vehicle = i / ROCKET_METRICS.len() % spec.vehicles;
        let metric = i % ROCKET_METRICS.len();
        assert_eq!(r.source, format!("veh-{vehicle}"));
        assert_eq!(r.name, ROCKET_METRICS[metric]);
        assert_eq!(r.kind, Kind::Reading);
        assert_eq!(r.seq, Some(tick));
        assert_eq!(r.ts, spec.start_ms + tick as i64 * spec.interval_ms);
        assert_eq!(
            r.event_id,
            format!("veh-{vehicle}-{}-{tick}", ROCKET_METRICS[metric])
        );
        assert!(r.value.is_finite());
        assert!(r.attrs.is_none() && r.payload.is_none() && r.key_id.is_none());
    }
    // The profile is a flight: some vehicle climbs above 100 km, and pressure falls with altitude.
    let values = by_key(readings.into_iter());
    let max_altitude = values
        .iter()
        .filter(|((_, m, _), _)| *m == 0)
        .map(|(_, v)| *v)
        .fold(0.0, f64::max);
    assert!(
        max_altitude > 100_000.0,
        "highest altitude {max_altitude} m"
    );
    for vehicle in 0..spec.vehicles {
        for tick in 0..spec.ticks {
            let altitude = generator::rocket_profile(&spec, vehicle, 0, tick).expect("altitude");
            let pressure = generator::rocket_profile(&spec, vehicle, 4, tick).expect("pressure");
            if altitude > 20_000.0 {
                assert!(pressure < 10.0, "{pressure} kPa at {altitude} m");
            }
        }
    }
}

#[test]
fn labels_are_exactly_the_injected_anomalies() {
    let spec = rocket_spec(0.004);
    let clean_spec = RocketParams {
        anomaly_rate: 0.0,
        ..spec.clone()
    };
    assert!(generator::rocket_labels(&clean_spec).is_empty());
    let with = by_key(generator::rocket_readings(&spec));
    let without = by_key(generator::rocket_readings(&clean_spec));
    let labels = generator::rocket_labels(&spec);

    let mut sorted = labels.clone();
    sorted.sort_by_key(|l| (l.start_ms, vehicle_of(&l.source), metric_of(&l.name)));
    assert_eq!(labels, sorted, "labels are in stream order");
    for kind in ANOMALY_KINDS {
        assert!(
            labels.iter().any(|l| l.kind == kind),
            "no {kind} among {} labels",
            labels.len()
        );
    }

    // Every reading that differs from the anomaly-free run is covered by a label, and every
    // reading of a spike or level shift differs. A stuck reading differs unless the moving
    // series happens to pass through the stuck value (readings have three decimals); the first
    // reading of a stuck window is where it sticks.
    let mut expected = BTreeSet::new();
    let mut stuck = BTreeSet::new();
    let mut blocks = BTreeSet::new();
    for label in &labels {
        let (vehicle, metric) = (vehicle_of(&label.source), metric_of(&label.name));
        let (start, end) = (tick_of(&spec, label.start_ms), tick_of(&spec, label.end_ms));
        assert!(start <= end && end < spec.ticks);
        assert_eq!(
            start / ANOMALY_BLOCK_TICKS,
            end / ANOMALY_BLOCK_TICKS,
            "{label:?} leaves its block"
        );
        assert!(
            blocks.insert((vehicle, metric, start / ANOMALY_BLOCK_TICKS)),
            "two anomalies in a block"
        );
        let keys = (start..=end).map(|tick| (vehicle, metric, tick));
        if label.kind == "stuck" {
            stuck.extend(keys.skip(1))
        } else {
            expected.extend(keys)
        }
        check_label_deviates(&spec, label, &with, &without);
    }
    let differing: BTreeSet<_> = with
        .iter()
        .filter(|(k, v)| without[k] != **v)
        .map(|(k, _)| *k)
        .collect();
    let unexplained: Vec<_> = differing
        .iter()
        .filter(|k| !expected.contains(k) && !stuck.contains(k))
        .collect();
    assert!(
        unexplained.is_empty(),
        "readings differ without a label: {unexplained:?}"
    );
    let missing: Vec<_> = expected.difference(&differing).collect();
    assert!(
        missing.is_empty(),
        "labelled spikes or shifts that do not differ: {missing:?}"
    );
    let stuck_differing = stuck.intersection(&differing).count();
    assert!(
        stuck_differing as f64 >= 0.95 * stuck.len() as f64,
        "{stuck_differing} of {}",
        stuck.len()
    );
}

fn check_label_deviates(
    spec: &RocketParams,
    label: &Label,
    with: &HashMap<(usize, usize, u64), f64>,
    without: &HashMap<(usize, usize, u64), f64>,
) {
    let (vehicle, metric) = (vehicle_of(&label.source), metric_of(&label.name));
    let ticks = tick_of(spec, label.start_ms)..=tick_of(spec, label.end_ms);
    let scale = ROCKET_ANOMALY_SCALE[metric];
    // The noise is bounded at ±3.5 standard deviations.
    let slack = 4.0 * ROCKET_NOISE_STD[metric];
    let deviation = |tick| {
        (with[&(vehicle, metric, tick)]
            - generator::rocket_profile(spec, vehicle, metric, tick).expect("a metric"))
        .abs()
    };
    // Windows last 30 to 120 ticks, unless the run ends first.
    let window_ok = || {
        let len = ticks.clone().count();
        len <= 120 && (len >= 30 || *ticks.end() == spec.ticks - 1)
    };
    match label.kind.as_str() {
        "spike" => {
            assert_eq!(ticks.clone().count(), 1);
            let d = deviation(*ticks.start());
            assert!(
                d >= 2.0 * scale - slack,
                "{label:?}: spike deviates by only {d}"
            );
        }
        "level_shift" => {
            assert!(window_ok(), "{label:?}");
            for tick in ticks {
                let d = deviation(tick);
                assert!(
                    d >= scale - slack,
                    "{label:?}: shifted by only {d} at tick {tick}"
                );
            }
        }
        "stuck" => {
            assert!(window_ok(), "{label:?}");
            let stuck: BTreeSet<u64> = ticks
                .clone()
                .map(|t| with[&(vehicle, metric, t)].to_bits())
                .collect();
            assert_eq!(stuck.len(), 1, "{label:?}: a stuck value repeats exactly");
            let normal: BTreeSet<u64> = ticks
                .map(|t| without[&(vehicle, metric, t)].to_bits())
                .collect();
            assert!(
                normal.len() > 5,
                "{label:?}: without the anomaly the series moves"
            );
        }
        other => panic!("unknown anomaly kind {other}"),
    }
}

#[test]
fn device_events_are_well_formed() {
    let spec = device_spec();
    let events: Vec<Reading> = generator::device_events(&spec).collect();
    assert!(events.len() > 1000, "{} events", events.len());
    let mut seen = BTreeSet::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        assert_eq!(e.kind, Kind::Event);
        let tick = e.seq.expect("seq");
        assert!(tick < spec.ticks);
        assert_eq!(e.ts, spec.start_ms + tick as i64 * spec.interval_ms);
        assert!((0.0..=1.0).contains(&e.value), "intensity {}", e.value);
        let name = DEVICE_EVENTS
            .iter()
            .find(|n| **n == e.name)
            .expect("a device event name");
        *names.entry(name).or_default() += 1;
        let device: usize = e
            .source
            .strip_prefix("dev-")
            .and_then(|i| i.parse().ok())
            .expect("dev-N");
        assert!(device < spec.devices);
        assert!(
            seen.insert((device, tick)),
            "two events of dev-{device} at tick {tick}"
        );
    }
    let ticks: Vec<u64> = events.iter().map(|e| e.seq.unwrap_or(0)).collect();
    assert!(ticks.is_sorted(), "tick-major order");
    for name in DEVICE_EVENTS {
        assert!(names.get(name).copied().unwrap_or(0) > 0, "no {name}");
    }
    let sacred = names["SACRED_PHRASE"] as f64 / events.len() as f64;
    assert!(sacred < 0.02, "SACRED_PHRASE is rare: {sacred}");

    // Entangled pairs: the odd device echoes most events of its partner one tick later.
    let pairs = generator::device_pairs(&spec);
    assert!(!pairs.is_empty());
    let by_source_tick: HashMap<(&str, u64), &str> = events
        .iter()
        .map(|e| ((e.source.as_str(), e.seq.unwrap_or(0)), e.name.as_str()))
        .collect();
    for (leader, follower) in &pairs {
        let led: Vec<_> = by_source_tick
            .iter()
            .filter(|((s, _), _)| s == leader)
            .collect();
        let echoed = led
            .iter()
            .filter(|((_, tick), name)| {
                by_source_tick.get(&(follower.as_str(), tick + 1)) == Some(*name)
            })
            .count();
        assert!(
            echoed as f64 >= 0.6 * led.len() as f64,
            "{follower} echoes {echoed} of {} events",
            led.len()
        );
    }
}

#[test]
fn ndjson_output_is_the_reading_serde_form() {
    let spec = RocketParams {
        vehicles: 3,
        ticks: 20,
        ..RocketParams::default()
    };
    let mut out = Vec::new();
    let lines = generator::write_rocket_ndjson(&spec, &mut out).expect("write to a Vec");
    assert_eq!(lines, spec.readings());
    let text = String::from_utf8(out).expect("UTF-8");
    let readings: Vec<Reading> = generator::rocket_readings(&spec).collect();
    assert_eq!(text.lines().count(), readings.len());
    for (line, reading) in text.lines().zip(&readings) {
        assert_eq!(line, serde_json::to_string(reading).expect("serialize"));
        let back: Reading = serde_json::from_str(line).expect("parse back");
        assert_eq!(&back, reading);
    }

    let devices = DeviceParams {
        devices: 5,
        ticks: 50,
        ..DeviceParams::default()
    };
    let mut out = Vec::new();
    let lines = generator::write_device_ndjson(&devices, &mut out).expect("write to a Vec");
    assert_eq!(lines as usize, generator::device_events(&devices).count());
    assert!(
        String::from_utf8(out)
            .expect("UTF-8")
            .contains(r#""kind":"event""#)
    );
}

#[test]
fn specs_parse_from_queries() {
    let spec =
        RocketParams::parse("vehicles=1000&ticks=250&seed=7&interval_ms=100&anomaly_rate=0.001")
            .expect("parse");
    assert_eq!(
        spec,
        RocketParams {
            vehicles: 1000,
            ticks: 250,
            seed: 7,
            interval_ms: 100,
            anomaly_rate: 0.001,
            ..RocketParams::default()
        }
    );
    assert_eq!(
        RocketParams::parse("").expect("empty"),
        RocketParams::default()
    );
    assert_eq!(DeviceParams::parse("devices=3").expect("parse").devices, 3);

    let unknown = format!(
        "{:#}",
        RocketParams::parse("vehicles=3&cars=2").expect_err("unknown key")
    );
    assert!(
        unknown.contains("cars") && unknown.contains("anomaly_rate"),
        "{unknown}"
    );
    let unknown = format!(
        "{:#}",
        DeviceParams::parse("vehicles=3").expect_err("unknown key")
    );
    assert!(unknown.contains("devices, ticks"), "{unknown}");
    let bad = format!(
        "{:#}",
        RocketParams::parse("ticks=many").expect_err("bad value")
    );
    assert!(bad.contains("ticks"), "{bad}");
    assert!(RocketParams::parse("ticks=1&ticks=2").is_err());
    assert!(RocketParams::parse("vehicles=0").is_err());
    assert!(RocketParams::parse("anomaly_rate=2").is_err());
    assert!(DeviceParams::parse("interval_ms=0").is_err());
    assert!(DeviceParams::parse("start_ms=253402300799000&ticks=10").is_err());
}

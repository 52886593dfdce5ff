//! `vigil-bench launch`: do the guards flag the flight events of real launches?
//!
//! For each flight of the SpaceX webcast telemetry (a directory with `analysed.ndjson`, one row
//! per second of flight, and `events.ndjson`), replays velocity and altitude through the given
//! guards and matches the raised alerts to the engine events of the flight (main engine cut-off,
//! second engine start/cut-off, boostback, entry and landing burns, throttle changes): an event
//! is caught when an alert rises within [-5 s, +10 s] of it. Prints recall, the timing error of
//! the caught events, and the alerts that match no event at all.

use std::path::Path;

use anyhow::Context;
use vigil_operators::{AlertStatus, Reading, SeriesReading};
use vigil_pipelines::jobs::guard::registry::GuardParams;

/// Events where the engines change thrust, which the velocity's rate of change shows.
const ENGINE_EVENTS: [&str; 11] = [
    "meco",
    "ses1",
    "seco1",
    "boostback_start",
    "boostback_end",
    "entry_start",
    "entry_end",
    "landing_start",
    "landing_end",
    "throttle_down_start",
    "throttle_down_end",
];

/// An alert this far before an event still counts (the webcast clock is coarse).
const EARLY_S: f64 = 5.0;
/// And this far after it.
const LATE_S: f64 = 10.0;

/// Runs the evaluation over every flight directory under `dir`.
pub fn run(dir: &Path, guards: &[String]) -> anyhow::Result<()> {
    let specs = GuardParams::parse_all(guards)?;
    let mut flights: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the launch dataset {}: pass --dir", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("analysed.ndjson").exists() && p.join("events.ndjson").exists())
        .collect();
    flights.sort();
    anyhow::ensure!(!flights.is_empty(), "no flights under {}", dir.display());
    println!(
        "Launch events, vigil guards --guard {} on velocity and altitude (1 Hz)",
        guards.join(" --guard ")
    );
    println!(
        "{:<22} {:>7} {:>7} {:>10} {:>12}  missed",
        "flight", "events", "caught", "error (s)", "other alerts"
    );
    let (mut events_total, mut caught_total, mut error_sum, mut other_total) = (0, 0, 0.0, 0);
    for flight in &flights {
        let name = flight.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let series = load_series(&flight.join("analysed.ndjson"), name)?;
        let events = load_events(&flight.join("events.ndjson"))?;
        let mut raised: Vec<f64> = Vec::new();
        for spec in &specs {
            let guard = spec.build();
            for points in &series {
                raised.extend(
                    guard
                        .replay(points)
                        .iter()
                        .filter(|a| a.status == AlertStatus::Raised)
                        .map(|a| a.ts as f64 / 1000.0),
                );
            }
        }
        raised.sort_by(f64::total_cmp);
        let engine: Vec<&(String, f64)> = events
            .iter()
            .filter(|(e, _)| ENGINE_EVENTS.contains(&e.as_str()))
            .collect();
        let mut missed = Vec::new();
        let mut caught = 0u32;
        let mut flight_error = 0.0;
        for (event, t) in &engine {
            match raised
                .iter()
                .filter(|r| **r >= t - EARLY_S && **r <= t + LATE_S)
                .min_by(|a, b| (*a - t).abs().total_cmp(&(*b - t).abs()))
            {
                Some(r) => {
                    caught += 1;
                    flight_error += (r - t).abs();
                }
                None => missed.push(event.as_str()),
            }
        }
        let other = raised
            .iter()
            .filter(|r| {
                !events
                    .iter()
                    .any(|(_, t)| **r >= t - EARLY_S && **r <= t + LATE_S)
            })
            .count();
        error_sum += flight_error;
        println!(
            "{:<22} {:>7} {:>7} {:>10.1} {:>12}  {}",
            name,
            engine.len(),
            caught,
            flight_error / f64::from(caught.max(1)),
            other,
            missed.join(", ")
        );
        events_total += engine.len();
        caught_total += caught as usize;
        other_total += other;
    }
    println!(
        "total: recall {caught_total}/{events_total} = {:.0} %, mean timing error {:.1} s, {other_total} alerts away from any event",
        100.0 * caught_total as f64 / events_total.max(1) as f64,
        error_sum / caught_total.max(1) as f64
    );
    Ok(())
}

/// The velocity (m/s) and altitude (km) series of a flight, as points in time order.
fn load_series(path: &Path, flight: &str) -> anyhow::Result<Vec<Vec<SeriesReading>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut velocity = Vec::new();
    let mut altitude = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let row: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let (Some(t), Some(v), Some(a)) = (
            row["time"].as_f64(),
            row["velocity"].as_f64(),
            row["altitude"].as_f64(),
        ) else {
            continue;
        };
        let ts = (t * 1000.0).round() as i64;
        velocity.push(SeriesReading::from(&Reading::new(
            flight,
            "velocity_mps",
            ts,
            v,
        )));
        altitude.push(SeriesReading::from(&Reading::new(
            flight,
            "altitude_km",
            ts,
            a,
        )));
    }
    Ok(vec![velocity, altitude])
}

/// The flight's events with their times in seconds after lift-off (events without a time are
/// left out).
fn load_events(path: &Path) -> anyhow::Result<Vec<(String, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut events = Vec::new();
    for line in text.lines() {
        let row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)?;
        for (name, t) in row {
            if let Some(t) = t.as_f64() {
                events.push((name, t));
            }
        }
    }
    Ok(events)
}

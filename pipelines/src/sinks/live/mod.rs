//! The live view of a running job (`--serve ADDR`): what the page at `/` shows and what `/ws`
//! streams — alerts as they are raised and cleared, the readings of the series that have an
//! open or recent alert, and the job's progress.
//!
//! The dataflow never waits for a viewer. Its taps hand readings over once per batch, under a
//! short lock, and only for charted series; messages go out on a broadcast channel whose
//! sender never blocks, so a viewer that reads too slowly misses messages (it is told how
//! many, and fetches the state again) instead of holding anything back.
//!
//! # Layout
//! - here: the [`LiveHub`] the taps, the alert output and the server share.
//! - `tap`: the operators that hand a worker's readings and scores to the hub.
//! - `routes`: the page, its assets, the JSON API and the WebSocket stream.

pub mod routes;
mod tap;

pub use tap::{TapReadings, TapScores};

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::broadcast;
use vigil_operators::{Alert, AlertStatus, Record};

use crate::sinks::alerts::AlertWatcher;

/// Raises and clears kept for a page that opens late.
const RECENT_ALERTS: usize = 500;
/// Readings kept per charted series.
const POINTS_PER_SERIES: usize = 2_000;
/// Series charted at once: those with the most recent alerts.
const CHARTED_SERIES: usize = 64;
/// Messages a viewer may fall behind by before it is told it missed some.
const CHANNEL: usize = 1_024;
/// How often new readings go out, batched per series.
const POINTS_EVERY: Duration = Duration::from_millis(250);
/// How often the progress goes out.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// One reading of a charted series: event time (ms), value, and the first guard's score.
type Point = (i64, f64, Option<f64>);

/// A series' key: source and name.
type SeriesKey = (String, String);

/// What one job shows live.
pub struct LiveHub {
    job: &'static str,
    input: String,
    started_ms: i64,
    /// The guards' catalogue, as `/api/guards` serves it.
    guards: Value,
    /// The guard whose score is charted under the readings.
    scored_guard: Option<String>,
    /// Whether alerting series are charted (the guard job), or only progress is shown.
    charts: bool,
    state: Mutex<LiveState>,
    /// Series charted now, by [`vigil_operators::series_hash`]; `generation` moves when it
    /// changes, so that the taps refresh their copy only then.
    charted: Mutex<HashSet<u64>>,
    generation: AtomicU64,
    events_in: AtomicU64,
    /// The event time every worker has passed, in ms (0 before the first).
    watermark: AtomicU64,
    finished: AtomicBool,
    /// When the input ended (ms), which fixes the rate shown after it.
    finished_ms: AtomicU64,
    raised: AtomicU64,
    cleared: AtomicU64,
    tx: broadcast::Sender<Arc<str>>,
    /// What archaeology shows (patterns, entangled pairs, sessions per room), as JSON.
    findings: Mutex<Option<ArchaeologyView>>,
}

/// The lists the archaeology page shows.
#[derive(Clone, Debug, Default)]
pub struct ArchaeologyView {
    /// `[{"pattern", "support"}]`, biggest first.
    pub patterns: Value,
    /// `[{"a", "b", "score"}]`.
    pub entanglements: Value,
    /// `[{"room", "sessions"}]`.
    pub sessions: Value,
}

#[derive(Default)]
struct LiveState {
    open: BTreeMap<String, Alert>,
    recent: VecDeque<Alert>,
    series: HashMap<SeriesKey, Chart>,
    /// Readings not sent yet, per series.
    pending: HashMap<SeriesKey, Vec<Point>>,
}

/// A charted series: its readings and its alert intervals.
#[derive(Default)]
struct Chart {
    points: VecDeque<Point>,
    /// (guard, alert id, start ms, end ms once cleared).
    alerts: Vec<(String, String, i64, Option<i64>)>,
    last_alert_ms: i64,
    hash: u64,
}

impl LiveHub {
    /// A hub for `job` (`guard` or `archaeology`) reading `input`, with the guard catalogue
    /// `guards` (a JSON array) and the guard whose score is charted.
    pub fn new(
        job: &'static str,
        input: String,
        guards: Value,
        scored_guard: Option<String>,
    ) -> Arc<LiveHub> {
        let (tx, _) = broadcast::channel(CHANNEL);
        Arc::new(LiveHub {
            job,
            input,
            started_ms: now_ms(),
            charts: job == "guard",
            guards,
            scored_guard,
            state: Mutex::default(),
            charted: Mutex::default(),
            generation: AtomicU64::new(0),
            events_in: AtomicU64::new(0),
            watermark: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            finished_ms: AtomicU64::new(0),
            raised: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
            tx,
            findings: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `message` to every viewer; never waits.
    fn send(&self, message: &Value) {
        let _ = self.tx.send(Arc::from(message.to_string()));
    }

    /// A worker read `events` more records and its input has passed `watermark_ms`.
    pub fn progress(&self, events: u64, watermark_ms: u64) {
        self.events_in.fetch_add(events, Ordering::Relaxed);
        self.watermark.fetch_max(watermark_ms, Ordering::Relaxed);
    }

    /// The input has ended: every output is final.
    pub fn finish(&self) {
        self.finished_ms.store(now_ms() as u64, Ordering::Relaxed);
        self.finished.store(true, Ordering::Relaxed);
        self.flush_points();
        self.send(&self.status());
    }

    /// Replaces what the archaeology page shows, and tells viewers to fetch it.
    pub fn set_findings(&self, view: ArchaeologyView) {
        *self.findings.lock().unwrap_or_else(|p| p.into_inner()) = Some(view);
        self.send(&json!({"type": "refresh"}));
    }

    /// The job's progress, as `/api/status` and the `status` message give it.
    pub fn status(&self) -> Value {
        let events = self.events_in.load(Ordering::Relaxed);
        let until = match self.finished_ms.load(Ordering::Relaxed) {
            0 => now_ms(),
            at => at as i64,
        };
        let elapsed = (until - self.started_ms).max(1) as f64 / 1000.0;
        let watermark = self.watermark.load(Ordering::Relaxed);
        let raised = self.raised.load(Ordering::Relaxed);
        let cleared = self.cleared.load(Ordering::Relaxed);
        let state = self.state();
        json!({
            "type": "status",
            "job": self.job,
            "input": self.input,
            "started_unix_ms": self.started_ms,
            "events_in": events,
            "events_per_s": events as f64 / elapsed,
            "alerts_raised": raised,
            "alerts_cleared": cleared,
            "open_alerts": state.open.len(),
            "watermark_ms": (watermark > 0).then_some(watermark),
            "finished": self.finished.load(Ordering::Relaxed),
        })
    }

    /// Open alerts and the recent raises and clears, oldest first.
    fn alerts(&self) -> Value {
        let state = self.state();
        let open: Vec<Value> = state.open.values().map(alert_json).collect();
        let recent: Vec<Value> = state.recent.iter().map(alert_json).collect();
        json!({"open": open, "recent": recent})
    }

    /// The charted series, most recently alerted first.
    fn series_list(&self) -> Value {
        let state = self.state();
        let mut list: Vec<(&SeriesKey, &Chart)> = state.series.iter().collect();
        list.sort_by_key(|(_, c)| std::cmp::Reverse(c.last_alert_ms));
        Value::Array(
            list.into_iter()
                .map(|((source, name), chart)| {
                    json!({
                        "source": source,
                        "name": name,
                        "open": chart.alerts.iter().any(|a| a.3.is_none()),
                        "last_alert_ms": chart.last_alert_ms,
                    })
                })
                .collect(),
        )
    }

    /// One series' readings between `from` and `to` (ms) and its alert intervals; `None` when
    /// it is not charted.
    fn series(
        &self,
        source: &str,
        name: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Option<Value> {
        let state = self.state();
        let chart = state.series.get(&(source.to_owned(), name.to_owned()))?;
        let points: Vec<Value> = chart
            .points
            .iter()
            .filter(|p| from.is_none_or(|f| p.0 >= f) && to.is_none_or(|t| p.0 <= t))
            .map(|p| json!([p.0, finite(p.1), p.2.and_then(finite)]))
            .collect();
        let alerts: Vec<Value> = chart
            .alerts
            .iter()
            .map(|(guard, _, start, end)| json!({"guard": guard, "start": start, "end": end}))
            .collect();
        Some(json!({"source": source, "name": name, "points": points, "alerts": alerts}))
    }

    /// The charted series' hashes and their generation, for a tap to refresh its copy.
    fn charted(&self, seen: u64) -> Option<(u64, HashSet<u64>)> {
        let generation = self.generation.load(Ordering::Acquire);
        if generation == seen {
            return None;
        }
        let charted = self.charted.lock().unwrap_or_else(|p| p.into_inner());
        Some((generation, charted.clone()))
    }

    /// Readings of charted series from a tap: `(series, ts, value)`. A tap sends the readings
    /// it kept of a series once the series is charted, so they may be older than the newest.
    fn readings(&self, readings: Vec<(SeriesKey, i64, f64)>) {
        let mut state = self.state();
        for (key, ts, value) in readings {
            let Some(chart) = state.series.get_mut(&key) else {
                continue;
            };
            let at = chart.points.partition_point(|p| p.0 <= ts);
            if chart
                .points
                .get(at.wrapping_sub(1))
                .is_some_and(|p| p.0 == ts && p.1.to_bits() == value.to_bits())
            {
                continue;
            }
            chart.points.insert(at, (ts, value, None));
            if chart.points.len() > POINTS_PER_SERIES {
                chart.points.pop_front();
            }
            state
                .pending
                .entry(key)
                .or_default()
                .push((ts, value, None));
        }
    }

    /// Scores of charted series from a tap, for the guard charted under the readings.
    fn scores(&self, scores: Vec<(SeriesKey, String, i64, f64)>) {
        let Some(scored) = &self.scored_guard else {
            return;
        };
        let mut state = self.state();
        for (key, guard, ts, score) in scores {
            if &guard != scored {
                continue;
            }
            let Some(chart) = state.series.get_mut(&key) else {
                continue;
            };
            // Scores follow their readings closely: look from the newest back.
            if let Some(point) = chart.points.iter_mut().rev().take(256).find(|p| p.0 == ts) {
                point.2 = Some(score);
            }
            if let Some(pending) = state.pending.get_mut(&key)
                && let Some(point) = pending.iter_mut().rev().find(|p| p.0 == ts)
            {
                point.2 = Some(score);
            }
        }
    }

    /// Sends the readings gathered since the last time, one message per series.
    fn flush_points(&self) {
        let pending = std::mem::take(&mut self.state().pending);
        for ((source, name), mut points) in pending {
            points.sort_by_key(|p| p.0);
            let points: Vec<Value> = points
                .into_iter()
                .map(|p| json!([p.0, finite(p.1), p.2.and_then(finite)]))
                .collect();
            self.send(&json!({"type": "points", "source": source, "name": name, "points": points}));
        }
    }

    fn archaeology(&self) -> ArchaeologyView {
        self.findings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Sends progress every second and gathered readings every quarter second, from the
    /// server's runtime, until the hub is dropped.
    pub(crate) fn start_ticker(self: &Arc<LiveHub>, runtime: &tokio::runtime::Handle) {
        let hub = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(POINTS_EVERY);
            let mut n: u64 = 0;
            loop {
                ticks.tick().await;
                let Some(hub) = hub.upgrade() else {
                    return;
                };
                hub.flush_points();
                n += 1;
                if n.is_multiple_of((STATUS_EVERY.as_millis() / POINTS_EVERY.as_millis()) as u64) {
                    hub.send(&hub.status());
                }
            }
        });
    }
}

impl AlertWatcher for LiveHub {
    fn alert(&self, alert: &Alert) {
        let key = (alert.source.to_string(), alert.name.to_string());
        let mut newly_charted = None;
        {
            let mut state = self.state();
            match alert.status {
                AlertStatus::Raised => {
                    self.raised.fetch_add(1, Ordering::Relaxed);
                    state.open.insert(alert.alert_id.to_string(), alert.clone());
                }
                AlertStatus::Cleared => {
                    self.cleared.fetch_add(1, Ordering::Relaxed);
                    state.open.remove(alert.alert_id.as_str());
                }
            }
            if state.recent.len() >= RECENT_ALERTS {
                state.recent.pop_front();
            }
            state.recent.push_back(alert.clone());
            if !state.series.contains_key(&key) {
                if state.series.len() >= CHARTED_SERIES {
                    // Room for the new one: the series whose last alert is oldest and closed.
                    let oldest = state
                        .series
                        .iter()
                        .filter(|(_, c)| c.alerts.iter().all(|a| a.3.is_some()))
                        .min_by_key(|(_, c)| c.last_alert_ms)
                        .map(|(k, c)| (k.clone(), c.hash));
                    if let Some((old, hash)) = oldest {
                        state.series.remove(&old);
                        state.pending.remove(&old);
                        self.charted
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&hash);
                    }
                }
                if state.series.len() < CHARTED_SERIES {
                    let hash = vigil_operators::series_hash(&alert.source, &alert.name);
                    state.series.insert(
                        key.clone(),
                        Chart {
                            hash,
                            ..Chart::default()
                        },
                    );
                    newly_charted = Some(hash);
                }
            }
            if let Some(chart) = state.series.get_mut(&key) {
                chart.last_alert_ms = chart.last_alert_ms.max(alert.ts);
                match alert.status {
                    AlertStatus::Raised => chart.alerts.push((
                        alert.guard.to_string(),
                        alert.alert_id.to_string(),
                        alert.ts,
                        None,
                    )),
                    AlertStatus::Cleared => {
                        if let Some(open) = chart
                            .alerts
                            .iter_mut()
                            .rev()
                            .find(|a| a.1 == alert.alert_id.as_str() && a.3.is_none())
                        {
                            open.3 = Some(alert.ts);
                        }
                    }
                }
            }
        }
        if let Some(hash) = newly_charted {
            self.charted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hash);
            self.generation.fetch_add(1, Ordering::Release);
        }
        self.send(&json!({"type": "alert", "alert": alert_json(alert)}));
    }
}

fn alert_json(alert: &Alert) -> Value {
    serde_json::from_str(&alert.to_json()).unwrap_or(Value::Null)
}

/// JSON has no NaN or infinity: they are sent as null.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn alert(series: usize, ts: i64, status: AlertStatus) -> Alert {
        let (source, name) = (format!("veh-{series}"), "temp_c".to_owned());
        Alert {
            alert_id: vigil_operators::alert_id("zscore", &source, &name, series as i64),
            guard: "zscore".into(),
            severity: "warning".into(),
            source: source.into(),
            name: name.into(),
            ts,
            window_start: ts - 1_000,
            window_end: ts,
            observed: 9.0,
            expected: 1.0,
            score: 0.9,
            status,
            reaction: "telemetry-alerts".into(),
        }
    }

    #[test]
    fn a_viewer_that_does_not_read_never_holds_the_job_back() {
        let hub = LiveHub::new("guard", "test".into(), json!([]), None);
        let mut viewer = hub.tx.subscribe();
        // Far more messages than the channel holds, with nobody reading: each returns at once.
        for i in 0..(CHANNEL * 4) {
            hub.alert(&alert(i % 8, i as i64, AlertStatus::Raised));
        }
        match viewer.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                assert_eq!(missed as usize, CHANNEL * 3, "the oldest are dropped")
            }
            other => panic!("the slow viewer is told it missed messages, got {other:?}"),
        }
        // After the gap it goes on from what is still there, up to the newest.
        let mut last = None;
        while let Ok(message) = viewer.try_recv() {
            last = Some(message);
        }
        let last: Value = serde_json::from_str(&last.unwrap()).unwrap();
        assert_eq!(last["alert"]["ts"], (CHANNEL * 4 - 1) as i64);
    }

    #[test]
    fn charts_are_bounded_and_readings_kept_in_order() {
        let hub = LiveHub::new("guard", "test".into(), json!([]), Some("zscore".into()));
        for series in 0..(CHARTED_SERIES + 10) {
            hub.alert(&alert(series, 1_000 + series as i64, AlertStatus::Raised));
            hub.alert(&alert(series, 2_000 + series as i64, AlertStatus::Cleared));
        }
        assert_eq!(hub.state().series.len(), CHARTED_SERIES);
        assert_eq!(hub.charted.lock().unwrap().len(), CHARTED_SERIES);
        let key = (format!("veh-{}", CHARTED_SERIES + 9), "temp_c".to_owned());
        // Newer readings first, then the history a tap kept from before the alert.
        hub.readings(vec![(key.clone(), 3_000, 3.0), (key.clone(), 4_000, 4.0)]);
        hub.readings(vec![(key.clone(), 500, 0.5), (key.clone(), 3_000, 3.0)]);
        hub.scores(vec![(key.clone(), "zscore".into(), 4_000, 0.7)]);
        let chart = hub.series(&key.0, &key.1, None, None).unwrap();
        assert_eq!(
            chart["points"],
            json!([[500, 0.5, null], [3_000, 3.0, null], [4_000, 4.0, 0.7]])
        );
        assert_eq!(chart["alerts"][0]["end"], 2_000 + CHARTED_SERIES as i64 + 9);
        assert!(
            hub.series("veh-0", "temp_c", None, None).is_none(),
            "the oldest gave way"
        );
    }
}

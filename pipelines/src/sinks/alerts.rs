//! Alerts out of the dataflow, in event-time order, so the output is identical from run to run:
//! as NDJSON lines (stdout or a file) or to Kafka topics.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use tracing::error;
use vigil_operators::{Alert, AlertStatus, Record};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::runtime::metrics::{Label, Metrics};
use crate::sinks::kafka::KafkaAlerts;

/// The alert figures a run exposes: raised, cleared and open by guard, and how long after
/// its event time each raised alert went out.
#[derive(Clone)]
struct AlertFigures {
    raised: Family<Label, Counter>,
    cleared: Family<Label, Counter>,
    open: Family<Label, Gauge>,
    latency: Histogram,
}

impl std::fmt::Debug for AlertFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertFigures").finish_non_exhaustive()
    }
}

impl AlertFigures {
    fn register(metrics: &Metrics, guards: &[String]) -> AlertFigures {
        let figures = AlertFigures {
            raised: metrics.family("alerts_raised", "Alerts raised, by guard."),
            cleared: metrics.family("alerts_cleared", "Alerts cleared, by guard."),
            open: metrics.family("open_alerts", "Alerts raised and not cleared, by guard."),
            latency: metrics.latency(
                "alert_latency",
                "From a raised alert's event time to its output, by the wall clock (in a backfill of old data, the data's age).",
            ),
        };
        // Each guard's series are there from the start, at 0.
        for guard in guards {
            let label = [("guard", guard.clone())];
            let _ = figures.raised.get_or_create(&label);
            let _ = figures.cleared.get_or_create(&label);
            let _ = figures.open.get_or_create(&label);
        }
        figures
    }

    fn note(&self, alert: &Alert, now_ms: i64) {
        let guard = [("guard", alert.guard.to_string())];
        match alert.status {
            AlertStatus::Raised => {
                self.raised.get_or_create(&guard).inc();
                self.open.get_or_create(&guard).inc();
                self.latency
                    .observe((now_ms - alert.ts).max(0) as f64 / 1000.0);
            }
            AlertStatus::Cleared => {
                self.cleared.get_or_create(&guard).inc();
                self.open.get_or_create(&guard).dec();
            }
        }
    }
}

/// Counts of alerts written.
#[derive(Default)]
pub struct AlertCounts {
    /// Alerts raised.
    pub raised: AtomicU64,
    /// Alerts cleared.
    pub cleared: AtomicU64,
    /// For raised alerts, how long after their event time (by the wall clock) they were sent:
    /// in a live run, how far behind real time the alerts are. Kept for the first
    /// [`LAGS_KEPT`] alerts.
    lags_ms: Mutex<Vec<i64>>,
    /// The same, as metrics.
    figures: Option<AlertFigures>,
    /// Who else watches the alerts as they go out (the live page).
    watchers: Vec<Arc<dyn AlertWatcher>>,
}

impl std::fmt::Debug for AlertCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertCounts")
            .field("raised", &self.raised)
            .field("cleared", &self.cleared)
            .finish_non_exhaustive()
    }
}

/// Something that sees every alert as it goes out, in order (the live page's feed).
pub trait AlertWatcher: Send + Sync {
    /// An alert was written.
    fn alert(&self, alert: &Alert);
}

/// Alert lags kept for the summary's percentiles.
pub const LAGS_KEPT: usize = 100_000;

impl AlertCounts {
    /// Counts of the alerts of `guards` that are also exposed as `vigil_alerts_*` metrics, and
    /// shown to `watchers`.
    pub fn new(
        metrics: &Metrics,
        guards: &[String],
        watchers: Vec<Arc<dyn AlertWatcher>>,
    ) -> AlertCounts {
        AlertCounts {
            figures: Some(AlertFigures::register(metrics, guards)),
            watchers,
            ..AlertCounts::default()
        }
    }

    /// The 50th and 99th percentile of the lags noted, in ms.
    pub fn lag_percentiles(&self) -> Option<(i64, i64)> {
        let mut lags = self.lags_ms.lock().ok()?.clone();
        if lags.is_empty() {
            return None;
        }
        lags.sort_unstable();
        let at = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}

/// Where worker 0 sends alerts.
pub enum AlertTarget {
    /// JSON lines to a writer.
    Lines(Box<dyn Write + Send>),
    /// To the Kafka topic each alert's reaction names.
    Kafka(Arc<KafkaAlerts>),
}

/// Writes alerts as JSON.
pub trait WriteAlerts {
    /// Gathers every alert on worker 0 and sends those the watermark has passed, ordered by
    /// event time and then alert id. `out` is used on worker 0 only; `None` only counts.
    fn publish(self, out: Option<AlertTarget>, counts: Arc<AlertCounts>);
}

impl WriteAlerts for Stream<'_, u64, Vec<Alert>> {
    fn publish(self, mut out: Option<AlertTarget>, counts: Arc<AlertCounts>) {
        let mut pending: Vec<Alert> = Vec::new();
        let mut line = String::new();
        self.sink(Exchange::new(|_: &Alert| 0), "AlertsNdjson", move |(input, frontier)| {
            input.for_each_stamp(|_cap, data| {
                for batch in data {
                    pending.append(batch);
                }
            });
            let bound = frontier.frontier().first().copied();
            let mut ready: Vec<Alert> = match bound {
                Some(bound) => pending.extract_if(.., |a| (a.ts as u64) < bound).collect(),
                None => std::mem::take(&mut pending),
            };
            ready.sort_unstable_by(|a, b| (a.ts, &a.alert_id, a.status).cmp(&(b.ts, &b.alert_id, b.status)));
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for alert in &ready {
                if alert.status == AlertStatus::Raised
                    && let Ok(mut lags) = counts.lags_ms.lock()
                    && lags.len() < LAGS_KEPT
                {
                    lags.push(now_ms - alert.ts);
                }
                let counter = match alert.status {
                    AlertStatus::Raised => &counts.raised,
                    AlertStatus::Cleared => &counts.cleared,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(figures) = &counts.figures {
                    figures.note(alert, now_ms);
                }
                for watcher in &counts.watchers {
                    watcher.alert(alert);
                }
                match out.as_mut() {
                    Some(AlertTarget::Lines(writer)) => {
                        line.clear();
                        line.push_str(&alert.to_json());
                        line.push('\n');
                        if let Err(e) = writer.write_all(line.as_bytes()) {
                            error!(message = "Writing alerts failed; further alerts are only archived.", error = %e);
                            out = None;
                        }
                    }
                    Some(AlertTarget::Kafka(producer)) => producer.send(alert, &alert.to_json()),
                    None => {}
                }
            }
            if let Some(AlertTarget::Kafka(producer)) = &out {
                producer.mark_published(bound.map_or(i64::MAX, |b| b as i64));
            }
            if bound.is_none()
                && let Some(AlertTarget::Lines(writer)) = out.as_mut()
                && let Err(e) = writer.flush()
            {
                error!(message = "Flushing alerts failed.", error = %e);
            }
        });
    }
}

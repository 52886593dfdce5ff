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

use crate::sinks::kafka::KafkaAlerts;

/// Counts of alerts written.
#[derive(Debug, Default)]
pub struct AlertCounts {
    /// Alerts raised.
    pub raised: AtomicU64,
    /// Alerts cleared.
    pub cleared: AtomicU64,
    /// For raised alerts, how long after their event time (by the wall clock) they were sent:
    /// in a live run, how far behind real time the alerts are. Kept for the first
    /// [`LAGS_KEPT`] alerts.
    lags_ms: Mutex<Vec<i64>>,
}

/// Alert lags kept for the summary's percentiles.
pub const LAGS_KEPT: usize = 100_000;

impl AlertCounts {
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

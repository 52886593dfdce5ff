//! The figures a dataflow run exposes while it runs (`vigil_events_in_total`,
//! `vigil_dead_letters_total{class}`, the watermark and how far it lags the wall clock), updated
//! by each worker's reading loop once per batch it sends, never per record.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::runtime::metrics::{Label, Metrics, SecondsGauge};

/// The classes of dead letters the readers and the feeder make.
const DEAD_LETTER_CLASSES: &[&str] = &["late", "parse", "schema", "oversize", "file"];

/// The engine's metrics, registered once per run and shared by its workers.
#[derive(Clone)]
pub(crate) struct EngineFigures {
    events_in: Counter,
    dead_letters: Family<Label, Counter>,
    watermark: SecondsGauge,
    watermark_lag: SecondsGauge,
    metrics: Metrics,
}

impl EngineFigures {
    pub(crate) fn register(metrics: &Metrics) -> EngineFigures {
        let figures = EngineFigures {
            events_in: metrics.counter("events_in", "Valid records read."),
            dead_letters: metrics.family(
                "dead_letters",
                "Records that went to the errors table instead, by class (late, parse, schema, oversize, …).",
            ),
            watermark: metrics.seconds(
                "watermark",
                "The event time every worker has passed, in Unix seconds: output before it is final.",
            ),
            watermark_lag: metrics.seconds(
                "watermark_lag",
                "How far the watermark is behind the wall clock (large in a backfill of old data).",
            ),
            metrics: metrics.clone(),
        };
        // Every class is there from the start, at 0, so that a rate over it has a series.
        for class in DEAD_LETTER_CLASSES {
            let _ = figures
                .dead_letters
                .get_or_create(&[("class", (*class).to_owned())]);
        }
        figures
    }

    /// A worker sent `events` records and these dead letters, and its input time is now
    /// `watermark_ms`; also a beat for `/health`.
    pub(crate) fn sent<'a>(
        &self,
        events: u64,
        dead: impl Iterator<Item = &'a str>,
        watermark_ms: u64,
    ) {
        if events > 0 {
            self.events_in.inc_by(events);
        }
        for class in dead {
            self.dead_letters
                .get_or_create(&[("class", class.to_owned())])
                .inc();
        }
        let seconds = watermark_ms as f64 / 1000.0;
        // Each worker has its own input time; the gauge keeps the newest any worker has
        // reached (the slowest may be behind it by a batch), which is enough for a dashboard.
        if seconds > self.watermark.get() || self.watermark.get() == 0.0 {
            self.watermark.set(seconds);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.watermark_lag.set((now - seconds).max(0.0));
        }
        self.metrics.beat();
    }
}

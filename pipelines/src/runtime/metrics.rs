//! Metrics, liveness and readiness over HTTP, served by every job that runs for a long time
//! (`--metrics 127.0.0.1:9464`): `/metrics` in the OpenMetrics text format that Prometheus
//! scrapes, `/health` (is the job alive and making progress?) and `/ready` (is its input
//! connected and its state loaded?).
//!
//! Every metric is named `vigil_…`, times are in seconds, and a part registers the metrics it
//! updates when it starts ([`Metrics::counter`], [`Metrics::family`], …). The process's own
//! figures (CPU, memory, open files, start time) and `vigil_build_info` come with every
//! registry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry, Unit};
use tracing::info;

/// A gauge of seconds (or another fractional unit).
pub type SecondsGauge = Gauge<f64, AtomicU64>;

/// Labels of one dimension, e.g. `[("guard", "zscore".into())]`.
pub type Label = [(&'static str, String); 1];

/// Labels of two dimensions, e.g. topic and partition.
pub type Labels2 = [(&'static str, String); 2];

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics of a job, shared between the job's parts and the HTTP server.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// When the job last made progress (a batch read, a round done), in Unix seconds.
    heartbeat: Arc<AtomicU64>,
    /// Seconds without a beat after which `/health` says the job is stuck (0: never).
    stale_after: Arc<AtomicU64>,
    /// What the job waits for before it is ready, and whether each is done.
    readiness: Arc<Mutex<Vec<(&'static str, bool)>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vigil");
        registry.register(
            "build",
            "The version of vigil that runs.",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            heartbeat: Arc::default(),
            stale_after: Arc::default(),
            readiness: Arc::default(),
        }
    }
}

impl Metrics {
    /// Registers `metric` as `vigil_{name}` (counters get `_total`) and returns it.
    pub fn register<M: Metric + Clone>(&self, name: &str, help: &str, metric: M) -> M {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.register(name, help, metric.clone());
        metric
    }

    /// Registers `metric` as `vigil_{name}_{unit}` and returns it.
    pub fn register_with_unit<M: Metric + Clone>(
        &self,
        name: &str,
        help: &str,
        unit: Unit,
        metric: M,
    ) -> M {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.register_with_unit(name, help, unit, metric.clone());
        metric
    }

    /// A counter `vigil_{name}_total`.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        self.register(name, help, Counter::default())
    }

    /// A gauge `vigil_{name}`.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.register(name, help, Gauge::default())
    }

    /// A gauge of seconds, `vigil_{name}_seconds`.
    pub fn seconds(&self, name: &str, help: &str) -> SecondsGauge {
        self.register_with_unit(name, help, Unit::Seconds, SecondsGauge::default())
    }

    /// A family of counters or gauges by label, `vigil_{name}`.
    pub fn family<L, M>(&self, name: &str, help: &str) -> Family<L, M>
    where
        L: prometheus_client::encoding::EncodeLabelSet
            + Clone
            + std::hash::Hash
            + Eq
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        M: Metric + Default + prometheus_client::metrics::TypedMetric,
        Family<L, M>: Metric + Clone,
    {
        self.register(name, help, Family::<L, M>::default())
    }

    /// A histogram of durations in seconds, `vigil_{name}_seconds`, with buckets from 100 µs
    /// to about a minute.
    pub fn latency(&self, name: &str, help: &str) -> Histogram {
        let histogram = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            1e-4, 2.5, 15,
        ));
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.register_with_unit(name, help, Unit::Seconds, histogram.clone());
        histogram
    }

    /// Says how long without a beat means the job is stuck.
    pub fn stale_after(&self, after: std::time::Duration) {
        self.stale_after
            .store(after.as_secs().max(1), Ordering::Relaxed);
    }

    /// Notes that the job is alive and making progress.
    pub fn beat(&self) {
        self.heartbeat.store(unix_seconds(), Ordering::Relaxed);
    }

    /// Declares what the job must have done before it is ready (`input`, `state`): `/ready`
    /// answers 503 until each is [`Metrics::ready`].
    pub fn wait_for(&self, what: &[&'static str]) {
        let mut readiness = self.readiness.lock().unwrap_or_else(|p| p.into_inner());
        for w in what {
            if !readiness.iter().any(|(r, _)| r == w) {
                readiness.push((w, false));
            }
        }
    }

    /// Notes that `what` is done (the input is connected, the state loaded).
    pub fn ready(&self, what: &'static str) {
        let mut readiness = self.readiness.lock().unwrap_or_else(|p| p.into_inner());
        match readiness.iter_mut().find(|(r, _)| *r == what) {
            Some(entry) => entry.1 = true,
            None => readiness.push((what, true)),
        }
    }

    /// What the job still waits for; empty once it is ready.
    pub fn waiting(&self) -> Vec<&'static str> {
        let readiness = self.readiness.lock().unwrap_or_else(|p| p.into_inner());
        if readiness.is_empty() {
            return vec!["start"];
        }
        readiness
            .iter()
            .filter(|(_, done)| !done)
            .map(|(what, _)| *what)
            .collect()
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(message = "The metrics could not be encoded.", %error);
        }
        out
    }

    /// `/metrics`, `/health` and `/ready`, to serve alone or merged into a job's own routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .with_state(self.clone())
    }

    /// Serves [`Metrics::router`] on `addr` from `runtime`; returns the bound address (port 0
    /// picks a free one).
    ///
    /// # Errors
    /// When `addr` cannot be bound, said with the flag that chose it.
    pub fn serve(
        &self,
        addr: SocketAddr,
        runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<SocketAddr> {
        self.serve_with(addr, Router::new(), runtime)
    }

    /// Serves [`Metrics::router`] merged with a job's own `routes` (the live page) on `addr`.
    ///
    /// # Errors
    /// When `addr` cannot be bound, said with the flag that chose it.
    pub fn serve_with(
        &self,
        addr: SocketAddr,
        routes: Router,
        runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<SocketAddr> {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| {
                format!("binding the metrics address {addr}: choose a free one with --metrics")
            })?;
        let bound = listener.local_addr()?;
        let app = self.router().merge(routes);
        runtime.spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(message = "The metrics server stopped.", %error);
            }
        });
        info!(message = "Serving metrics, health and readiness.", address = %bound);
        Ok(bound)
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], metrics.render())
}

/// Liveness: 200 while the job makes progress; 503 before its first beat and once it has
/// gone longer than its stale limit without one.
async fn health(State(metrics): State<Metrics>) -> impl IntoResponse {
    let beat = metrics.heartbeat.load(Ordering::Relaxed);
    let stale_after = metrics.stale_after.load(Ordering::Relaxed);
    let (status, word) = if beat == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if stale_after > 0 && unix_seconds().saturating_sub(beat) > stale_after {
        (StatusCode::SERVICE_UNAVAILABLE, "stuck")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"status": word, "last_beat_unix_s": beat}).to_string(),
    )
}

/// Readiness: 200 once the input is connected and the state loaded, else 503 with what is
/// still awaited.
async fn ready(State(metrics): State<Metrics>) -> impl IntoResponse {
    let waiting = metrics.waiting();
    let status = if waiting.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"ready": waiting.is_empty(), "waiting_for": waiting}).to_string(),
    )
}

/// The process's CPU time, resident memory, open files and start time, read from `/proc` at
/// each scrape (Linux; nothing elsewhere).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(process) = ProcessFigures::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(process.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "CPU time the process used, user and system.",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(process.resident_bytes as i64);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            None,
            rss.metric_type(),
        )?)?;
        let fds = ConstGauge::new(process.open_fds as i64);
        fds.encode(encoder.encode_descriptor(
            "process_open_fds",
            "File descriptors the process holds open.",
            None,
            fds.metric_type(),
        )?)?;
        let start = ConstGauge::new(process.start_unix_s as i64);
        start.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "When the process started, in Unix seconds.",
            None,
            start.metric_type(),
        )?)?;
        Ok(())
    }
}

/// What `/proc/self` says of the process.
struct ProcessFigures {
    cpu_seconds: f64,
    resident_bytes: u64,
    open_fds: usize,
    start_unix_s: u64,
}

impl ProcessFigures {
    fn read() -> Option<ProcessFigures> {
        const TICKS: f64 = 100.0;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After the command name (which ends with ')'): utime, stime are fields 14 and 15 of
        // the line, starttime 22 (in ticks since boot), rss 24 (in pages).
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        let cpu_seconds = (number(11)? + number(12)?) / TICKS;
        let resident_bytes = number(21)? as u64 * 4096;
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let started_after_boot = number(19)? / TICKS;
        let start_unix_s = unix_seconds().saturating_sub((uptime - started_after_boot) as u64);
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        Some(ProcessFigures {
            cpu_seconds,
            resident_bytes,
            open_fds,
            start_unix_s,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn renders_openmetrics_with_the_prefix_units_and_process_figures() {
        let metrics = Metrics::default();
        let actions: Family<Label, Counter> = metrics.family("sync_actions", "Actions applied.");
        actions.get_or_create(&[("kind", "push".into())]).inc_by(3);
        actions.get_or_create(&[("kind", "pull".into())]).inc_by(2);
        metrics
            .gauge("sync_pending_actions", "Actions planned, not yet applied.")
            .set(7);
        metrics
            .latency("replica_write", "How long a batch write took.")
            .observe(0.02);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE vigil_sync_actions counter\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_sync_actions_total{kind=\"push\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("vigil_sync_pending_actions 7\n"), "{text}");
        assert!(
            text.contains("vigil_replica_write_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "vigil_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(
            text.contains("vigil_process_resident_memory_bytes "),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn ready_once_everything_awaited_is_done() {
        let metrics = Metrics::default();
        assert_eq!(metrics.waiting(), ["start"]);
        metrics.wait_for(&["input", "state"]);
        metrics.ready("input");
        assert_eq!(metrics.waiting(), ["state"]);
        metrics.ready("state");
        assert!(metrics.waiting().is_empty());
    }
}

//! Health and Prometheus metrics over HTTP: `/metrics` in the text exposition format and
//! `/health`, served by a job that runs for a long time (`--metrics 127.0.0.1:9464`).

use std::collections::BTreeMap;
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
use tracing::info;

/// A metric's kind, as Prometheus names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric family: its help text, kind, and values by label set (`kind="push"`).
struct Family {
    help: &'static str,
    kind: Kind,
    values: BTreeMap<String, Arc<AtomicU64>>,
}

/// The metrics of a job, shared between the job and the HTTP server.
#[derive(Clone, Default)]
pub struct Metrics {
    families: Arc<Mutex<BTreeMap<&'static str, Family>>>,
    /// When the job last finished a unit of work (a round, a batch), in Unix seconds.
    heartbeat: Arc<AtomicU64>,
    /// Seconds without a beat after which `/health` says the job is stuck (0: never).
    stale_after: Arc<AtomicU64>,
}

impl Metrics {
    /// The value cell of `name{labels}`, registered on first use. `labels` is the inside of
    /// the braces (`kind="push"`), or empty.
    pub fn cell(
        &self,
        name: &'static str,
        labels: &str,
        kind: Kind,
        help: &'static str,
    ) -> Arc<AtomicU64> {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            values: BTreeMap::new(),
        });
        family.values.entry(labels.to_owned()).or_default().clone()
    }

    /// Adds `by` to a counter.
    pub fn add(&self, name: &'static str, labels: &str, help: &'static str, by: u64) {
        self.cell(name, labels, Kind::Counter, help)
            .fetch_add(by, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, labels: &str, help: &'static str, value: u64) {
        self.cell(name, labels, Kind::Gauge, help)
            .store(value, Ordering::Relaxed);
    }

    /// Says how long without a beat means the job is stuck.
    pub fn stale_after(&self, after: std::time::Duration) {
        self.stale_after
            .store(after.as_secs().max(1), Ordering::Relaxed);
    }

    /// Notes that the job is alive and working.
    pub fn beat(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.heartbeat.store(now, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            out.push_str(&format!(
                "# HELP {name} {}\n# TYPE {name} {kind}\n",
                family.help
            ));
            for (labels, value) in &family.values {
                let value = value.load(Ordering::Relaxed);
                if labels.is_empty() {
                    out.push_str(&format!("{name} {value}\n"));
                } else {
                    out.push_str(&format!("{name}{{{labels}}} {value}\n"));
                }
            }
        }
        out
    }

    /// Serves `/metrics` and `/health` on `addr` from `runtime`; returns the bound address
    /// (port 0 picks a free one).
    pub fn serve(
        &self,
        addr: SocketAddr,
        runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<SocketAddr> {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| {
                format!("binding the metrics address {addr}: choose a free one with --metrics")
            })?;
        let bound = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .with_state(self.clone());
        runtime.spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(message = "The metrics server stopped.", %error);
            }
        });
        info!(message = "Serving metrics.", address = %bound);
        Ok(bound)
    }
}

async fn metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

async fn health(State(metrics): State<Metrics>) -> impl IntoResponse {
    let beat = metrics.heartbeat.load(Ordering::Relaxed);
    let stale_after = metrics.stale_after.load(Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (status, word) = if beat == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if stale_after > 0 && now.saturating_sub(beat) > stale_after {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn renders_the_exposition_format() {
        let metrics = Metrics::default();
        metrics.add("sync_actions_total", "kind=\"push\"", "Actions applied.", 3);
        metrics.add("sync_actions_total", "kind=\"pull\"", "Actions applied.", 2);
        metrics.set(
            "sync_pending_actions",
            "",
            "Actions planned, not yet applied.",
            7,
        );
        let text = metrics.render();
        assert!(
            text.contains("# TYPE sync_actions_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("sync_actions_total{kind=\"push\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("sync_pending_actions 7\n"), "{text}");
    }
}

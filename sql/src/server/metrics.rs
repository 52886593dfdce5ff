//! The server's own figures over HTTP (`vigil-sql --serve --metrics ADDR`): `/metrics` in the
//! OpenMetrics text format (`vigil_sql_*`, `vigil_build_info`), `/health` and `/ready`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tracing::info;

/// How a statement ended, as `vigil_sql_queries_total{outcome}` counts it.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// It answered.
    Ok,
    /// It failed (refused by the policy, a planning or execution error).
    Error,
    /// It ran past its statement timeout.
    Timeout,
}

/// What the server counts.
pub struct SqlMetrics {
    registry: Registry,
    connections: Gauge,
    refused: Counter,
    queries: Family<[(&'static str, &'static str); 1], Counter>,
    latency: Histogram,
    ready: AtomicBool,
}

impl Default for SqlMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vigil");
        registry.register(
            "build",
            "The version of vigil that runs.",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let connections = Gauge::default();
        registry.register(
            "sql_connections",
            "Clients connected now.",
            connections.clone(),
        );
        let refused = Counter::default();
        registry.register(
            "sql_connections_refused",
            "Clients turned away at --max-connections.",
            refused.clone(),
        );
        let queries = Family::default();
        registry.register(
            "sql_queries",
            "Statements run, by outcome (ok, error, timeout).",
            queries.clone(),
        );
        for outcome in ["ok", "error", "timeout"] {
            let _ = queries.get_or_create(&[("outcome", outcome)]);
        }
        let latency = Histogram::new(exponential_buckets(1e-3, 2.5, 14));
        registry.register_with_unit(
            "sql_query",
            "From a statement's arrival to its answer (the first rows of a query).",
            Unit::Seconds,
            latency.clone(),
        );
        SqlMetrics {
            registry,
            connections,
            refused,
            queries,
            latency,
            ready: AtomicBool::new(false),
        }
    }
}

impl SqlMetrics {
    /// A client connected; the returned guard counts it until dropped.
    pub fn connected(self: &Arc<Self>) -> Connected {
        self.connections.inc();
        Connected(self.clone())
    }

    /// A client was turned away at the connection limit.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// A statement ended after `took`.
    pub fn query(&self, outcome: Outcome, took: Duration) {
        let label = match outcome {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        };
        self.queries.get_or_create(&[("outcome", label)]).inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// The server accepts clients.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(message = "The metrics could not be encoded.", %error);
        }
        out
    }

    /// Serves `/metrics`, `/health` and `/ready` on `addr`; returns the bound address.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn serve(self: &Arc<Self>, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("binding the metrics address {addr}: choose a free one with --metrics")
        })?;
        let bound = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .with_state(self.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(message = "The metrics server stopped.", %error);
            }
        });
        info!(message = "Serving metrics, health and readiness.", address = %bound);
        Ok(bound)
    }
}

/// A connected client, counted until dropped.
pub struct Connected(Arc<SqlMetrics>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

async fn metrics(State(metrics): State<Arc<SqlMetrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

async fn ready(State(metrics): State<Arc<SqlMetrics>>) -> impl IntoResponse {
    let ready = metrics.ready.load(Ordering::Relaxed);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"ready":{ready}}}"#),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_connections_and_statements() {
        let metrics = Arc::new(SqlMetrics::default());
        let client = metrics.connected();
        metrics.query(Outcome::Ok, Duration::from_millis(20));
        metrics.query(Outcome::Timeout, Duration::from_secs(2));
        metrics.refused();
        let text = metrics.render();
        assert!(text.contains("vigil_sql_connections 1\n"), "{text}");
        assert!(
            text.contains("vigil_sql_queries_total{outcome=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("vigil_sql_queries_total{outcome=\"error\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("vigil_sql_query_seconds_count 2\n"), "{text}");
        assert!(
            text.contains("vigil_sql_connections_refused_total 1\n"),
            "{text}"
        );
        drop(client);
        assert!(metrics.render().contains("vigil_sql_connections 0\n"));
    }
}

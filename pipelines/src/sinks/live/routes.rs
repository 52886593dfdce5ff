//! The live view over HTTP: the page and its assets (embedded in the binary: the page works
//! offline), the JSON API, and `/ws`, the WebSocket stream of alerts, readings and progress.
//!
//! Only these fixed paths are served; nothing is read from disk. A viewer that reads more
//! slowly than messages come is told how many it missed (`lagged`) and goes on from the newest;
//! one that takes longer than [`SEND_TIMEOUT`] to take a message is dropped; at most
//! [`MAX_VIEWERS`] are connected at once.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Semaphore, broadcast};

use super::LiveHub;

/// Viewers connected to `/ws` at once; one more is refused with 503.
pub const MAX_VIEWERS: usize = 32;
/// How long one message may take to reach a viewer before the viewer is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

const INDEX: &str = include_str!("../../../assets/live/index.html");
const APP: &str = include_str!("../../../assets/live/app.js");
const STYLE: &str = include_str!("../../../assets/live/style.css");

/// What the handlers share.
#[derive(Clone)]
struct Live {
    hub: Arc<LiveHub>,
    viewers: Arc<Semaphore>,
}

/// The routes of the page of `hub`, if there is one, with its periodic messages sent from
/// `runtime`; no routes without a hub.
pub fn routes_of(hub: Option<&Arc<LiveHub>>, runtime: &tokio::runtime::Handle) -> Router {
    match hub {
        Some(hub) => {
            hub.start_ticker(runtime);
            routes(hub.clone())
        }
        None => Router::new(),
    }
}

/// The routes of the live view of `hub`.
pub fn routes(hub: Arc<LiveHub>) -> Router {
    let live = Live {
        hub,
        viewers: Arc::new(Semaphore::new(MAX_VIEWERS)),
    };
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/status", get(status))
        .route("/api/guards", get(guards))
        .route("/api/alerts", get(alerts))
        .route("/api/series", get(series_list))
        .route("/api/series/{source}/{name}", get(series))
        .route("/api/patterns", get(patterns))
        .route("/api/entanglements", get(entanglements))
        .route("/api/sessions", get(sessions))
        .route("/ws", get(ws))
        .with_state(live)
}

/// An embedded asset, with headers that keep the page to its own origin.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn json_response(value: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn status(State(live): State<Live>) -> Response {
    let mut status = live.hub.status();
    if let Some(object) = status.as_object_mut() {
        object.remove("type");
    }
    json_response(status)
}

async fn guards(State(live): State<Live>) -> Response {
    json_response(live.hub.guards.clone())
}

async fn alerts(State(live): State<Live>) -> Response {
    json_response(live.hub.alerts())
}

async fn series_list(State(live): State<Live>) -> Response {
    json_response(live.hub.series_list())
}

/// `?from=MS&to=MS`, both optional.
#[derive(Debug, Deserialize)]
struct Range {
    from: Option<i64>,
    to: Option<i64>,
}

async fn series(
    State(live): State<Live>,
    Path((source, name)): Path<(String, String)>,
    Query(range): Query<Range>,
) -> Response {
    match live.hub.series(&source, &name, range.from, range.to) {
        Some(series) => json_response(series),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": "this series is not charted: only series with an open or recent alert are"})
                .to_string(),
        )
            .into_response(),
    }
}

async fn patterns(State(live): State<Live>) -> Response {
    json_response(live.hub.archaeology().patterns)
}

async fn entanglements(State(live): State<Live>) -> Response {
    json_response(live.hub.archaeology().entanglements)
}

async fn sessions(State(live): State<Live>) -> Response {
    json_response(live.hub.archaeology().sessions)
}

async fn ws(State(live): State<Live>, upgrade: WebSocketUpgrade) -> Response {
    let Ok(permit) = live.viewers.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_VIEWERS} viewers are connected already; try again later"),
        )
            .into_response();
    };
    let rx = live.hub.tx.subscribe();
    let hello = json!({"type": "hello", "job": live.hub.job}).to_string();
    // Viewers send nothing that matters: small frames only.
    upgrade
        .max_message_size(4096)
        .on_upgrade(move |socket| async move {
            viewer(socket, rx, hello).await;
            drop(permit);
        })
}

/// Streams the hub's messages to one viewer until it leaves, falls too far behind, or is too
/// slow to take a message.
async fn viewer(mut socket: WebSocket, mut rx: broadcast::Receiver<Arc<str>>, hello: String) {
    if send(&mut socket, hello).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            message = rx.recv() => {
                let text = match message {
                    Ok(text) => text.to_string(),
                    Err(broadcast::error::RecvError::Lagged(dropped)) => {
                        json!({"type": "lagged", "dropped": dropped}).to_string()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if send(&mut socket, text).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Sends one message, or fails when the viewer does not take it within [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, text: String) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

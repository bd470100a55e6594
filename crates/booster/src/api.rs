//! The control API (HTTP + JSON) on `--api`, default `127.0.0.1:4884`, with the web dashboard
//! at `/` and Prometheus metrics at `/metrics`. It reads the node's one live state.
//!
//! With `api_token` set, every `/api/*` and `/metrics` request needs
//! `Authorization: Bearer <api_token>` (a node refuses to start with the API off loopback
//! without one). The event stream also takes `?token=`, because a browser's `EventSource`
//! cannot send headers. The dashboard's own files are public: they hold no data.
//!
//! Endpoints by concept: [`policies`] (list, create, delete), [`usage`] (per month against
//! caps), [`events`] (the snapshot and its SSE stream), and the read-only views here.

pub mod events;
pub mod listener;
pub mod policies;
pub mod usage;

use crate::state::Node;
use axum::{
    extract::{FromRef, Query, Request, State},
    http::{header, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;
use std::sync::{atomic::Ordering::Relaxed, Arc};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// What the API's handlers share.
#[derive(Clone)]
pub struct Api {
    pub node: Arc<Node>,
    /// Cancelled when the node stops: open event streams end, so the server can shut down.
    pub stop: CancellationToken,
    /// Woken by edits made through the API, so event streams push at once.
    pub changed: Arc<Notify>,
    /// Bounds the event streams open at once (see [`events::MAX_STREAMS`]).
    pub streams: Arc<Semaphore>,
    /// Ids for policies added on a node without a database (never reused).
    pub next_memory_id: Arc<std::sync::atomic::AtomicI64>,
}

impl FromRef<Api> for Arc<Node> {
    fn from_ref(api: &Api) -> Arc<Node> {
        api.node.clone()
    }
}

pub fn router(node: Arc<Node>, stop: CancellationToken) -> Router {
    let api = Api {
        node,
        stop,
        changed: Arc::new(Notify::new()),
        streams: Arc::new(Semaphore::new(events::MAX_STREAMS)),
        next_memory_id: Arc::new(std::sync::atomic::AtomicI64::new(1)),
    };
    Router::new()
        .route("/api/health", get(health))
        .route("/api/status", get(status))
        .route("/api/sources", get(sources))
        .route("/api/peers", get(peers).post(connect_peer))
        .route("/api/peers/{peer}", axum::routing::delete(disconnect_peer))
        .route("/api/connections", get(connections))
        .route("/api/policies", get(policies::list).post(policies::create))
        .route("/api/policies/{id}", axum::routing::delete(policies::delete))
        .route("/api/usage", get(usage::get))
        .route("/api/relays", get(relays))
        .route("/api/events", get(events::stream))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed") })
        .layer(middleware::from_fn_with_state(api.node.clone(), auth))
        .with_state(api)
}

pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message, "status": status.as_u16() }))).into_response()
}

/// Does this request need the token? Everything but the dashboard's static files.
fn protected(path: &str) -> bool {
    path.starts_with("/api/") || path == "/metrics"
}

/// The token a request carries: the `Authorization: Bearer` header, or for the event stream
/// only, a `token` query parameter.
fn given_token(req: &Request) -> Option<String> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(t) = header {
        return Some(t.to_string());
    }
    if req.method() == Method::GET && req.uri().path() == "/api/events" {
        let Query(q) = Query::<std::collections::HashMap<String, String>>::try_from_uri(req.uri()).ok()?;
        return q.get("token").cloned();
    }
    None
}

async fn auth(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    if let Some(token) = &node.config.api_token {
        if protected(req.uri().path()) {
            let given = given_token(&req);
            if !given.is_some_and(|g| crate::proxy::secret_eq(g.as_bytes(), token.expose().as_bytes())) {
                return error(StatusCode::UNAUTHORIZED, "missing or wrong API token");
            }
        }
    }
    next.run(req).await
}

async fn health(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let usable = node
        .sources()
        .iter()
        .filter(|s| s.usable(std::time::Instant::now()))
        .count();
    Json(json!({ "ok": usable > 0, "usable_sources": usable, "uptime_secs": node.started.elapsed().as_secs() }))
}

async fn sources(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(json!(node.views()))
}

pub fn status_json(node: &Node) -> serde_json::Value {
    let heap = crate::sys::heap();
    json!({
        "node": {
            "listen": node.config.listen,
            "uptime_secs": node.started.elapsed().as_secs(),
            "clients_open": node.clients_open.load(Relaxed),
            "clients_total": node.clients_total.load(Relaxed),
            "clients_refused": node.clients_refused.load(Relaxed),
            "tasks": alive_tasks(),
            "heap_bytes": heap.map(|h| h.in_use),
            "heap_held_bytes": heap.map(|h| h.held),
            "month": crate::store::current_month(),
        },
        "sources": node.views(),
        "policies": node.policies().entries(),
        "peers": crate::peer::list(node),
        "available": available(node),
        "lending": lending(node),
        "connections": { "open": node.conns.open(), "per_source": node.conns.per_source() },
        "relays": node.relays_json(),
    })
}

/// Tasks alive on the node's runtime (connections, pumps, timers): a leak shows here first.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0)
}

async fn status(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(status_json(&node))
}

fn available(node: &Node) -> Vec<crate::mdns::Discovered> {
    node.mdns
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|m| m.available())
        .unwrap_or_default()
}

fn lending(node: &Node) -> serde_json::Value {
    json!({
        "enabled": node.config.lend.enabled,
        "peer_listen": node.config.peer_listen,
        "max_rate": node.config.lend.max_rate,
        "cap": node.config.lend.cap,
        "uplinks": crate::lend::loads(node).iter().map(|u| json!({
            "name": u.name,
            "cap_left": if u.cap_left == u64::MAX { None } else { Some(u.cap_left) },
            "lent_month_bytes": node.lent(&u.name).month_bytes(),
        })).collect::<Vec<_>>(),
    })
}

async fn peers(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(json!({ "peers": crate::peer::list(&node), "available": available(&node) }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectBody {
    addr: String,
}

async fn connect_peer(
    State(api): State<Api>,
    body: Result<Json<ConnectBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected JSON {\"addr\": \"host[:port]\"}");
    };
    let addr = match crate::config::peer_addr(&body.addr) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match crate::peer::connect(&api.node, addr.clone()) {
        Ok(()) => {
            api.changed.notify_waiters();
            (
                StatusCode::ACCEPTED,
                Json(json!({ "addr": addr, "state": "connecting" })),
            )
                .into_response()
        }
        Err(e) => error(StatusCode::CONFLICT, &e),
    }
}

async fn disconnect_peer(State(api): State<Api>, axum::extract::Path(peer): axum::extract::Path<String>) -> Response {
    let node = &api.node;
    let which = crate::config::peer_addr(&peer)
        .ok()
        .filter(|a| node.peers.lock().unwrap_or_else(|e| e.into_inner()).contains_key(a))
        .unwrap_or(peer);
    if crate::peer::disconnect(node, &which) {
        api.changed.notify_waiters();
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such peer")
    }
}

/// Most connections one `GET /api/connections` lists unless `limit` says otherwise.
const DEFAULT_CONN_LIMIT: usize = 1000;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnQuery {
    limit: Option<usize>,
}

async fn connections(
    State(node): State<Arc<Node>>,
    query: Result<Query<ConnQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "expected ?limit=N (a non-negative integer)");
    };
    let list = node.conns.views(q.limit.unwrap_or(DEFAULT_CONN_LIMIT));
    Json(json!({ "open": node.conns.open(), "total": node.conns.total(), "connections": list })).into_response()
}

async fn relays(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(node.relays_json())
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    match crate::metrics::encode(&node) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics"),
    }
}

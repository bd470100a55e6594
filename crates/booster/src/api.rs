//! The control API (HTTP + JSON) on `--api`, default `127.0.0.1:4884`. It reads the node's one
//! live state. Off loopback it requires `Authorization: Bearer <api_token>`.

use crate::state::Node;
use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;
use std::sync::{atomic::Ordering::Relaxed, Arc};

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/status", get(status))
        .route("/api/sources", get(sources))
        .route("/api/peers", get(peers).post(connect_peer))
        .route("/api/peers/{peer}", axum::routing::delete(disconnect_peer))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed") })
        .layer(middleware::from_fn_with_state(node.clone(), auth))
        .with_state(node)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message, "status": status.as_u16() }))).into_response()
}

async fn auth(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    if let Some(token) = &node.config.api_token {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| crate::proxy::secret_eq(g.as_bytes(), token.expose().as_bytes())) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong API token");
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
    json!({
        "node": {
            "listen": node.config.listen,
            "uptime_secs": node.started.elapsed().as_secs(),
            "clients_open": node.clients_open.load(Relaxed),
            "clients_total": node.clients_total.load(Relaxed),
            "clients_refused": node.clients_refused.load(Relaxed),
            "month": crate::store::current_month(),
        },
        "sources": node.views(),
        "policies": node.policies().specs(),
        "peers": crate::peer::list(node),
        "available": available(node),
        "lending": lending(node),
    })
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
    State(node): State<Arc<Node>>,
    body: Result<Json<ConnectBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected JSON {\"addr\": \"host[:port]\"}");
    };
    let addr = match crate::config::peer_addr(&body.addr) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match crate::peer::connect(&node, addr.clone()) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({ "addr": addr, "state": "connecting" })),
        )
            .into_response(),
        Err(e) => error(StatusCode::CONFLICT, &e),
    }
}

async fn disconnect_peer(
    State(node): State<Arc<Node>>,
    axum::extract::Path(peer): axum::extract::Path<String>,
) -> Response {
    let which = crate::config::peer_addr(&peer)
        .ok()
        .filter(|a| node.peers.lock().unwrap_or_else(|e| e.into_inner()).contains_key(a))
        .unwrap_or(peer);
    if crate::peer::disconnect(&node, &which) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such peer")
    }
}

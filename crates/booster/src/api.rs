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
    })
}

async fn status(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    Json(status_json(&node))
}

//! The web dashboard, served at `/` on the API address. Its three files are compiled into the
//! binary (`assets/dashboard.{html,css,js}`): no build step, no CDN, nothing fetched from
//! elsewhere. The page reads the event stream (`/api/events`, pushed, not polled) and draws
//! its charts as inline SVG; it edits policies through `/api/policies`.
//!
//! These files are public: they hold no data. With `api_token` set, the page asks for the
//! token and sends it as `Authorization: Bearer` on fetches and as `?token=` on the event
//! stream (a browser's `EventSource` cannot send headers); see docs/api.md.

use axum::{
    http::header,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

pub const HTML: &str = include_str!("../assets/dashboard.html");
pub const CSS: &str = include_str!("../assets/dashboard.css");
pub const JS: &str = include_str!("../assets/dashboard.js");

/// The page may load only its own files and talk only to its own node.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `/`, `/dashboard.css` and `/dashboard.js`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", HTML) }))
        .route(
            "/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
}

//! `GET /api/events`: a Server-Sent Events stream of snapshots of the node, one about every
//! second ([`EVERY`]) and one at once after an edit made through the API (a policy or a peer).
//! The dashboard and `booster monitor` read it; `booster monitor --json` prints each snapshot
//! as one line.
//!
//! A snapshot is built from the live state on each push, and nothing is kept between pushes
//! except the sequence number: a slow client gets the next snapshot, never a backlog.

use super::{error, Api};
use crate::state::Node;
use axum::{
    extract::State,
    http::StatusCode,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use serde_json::{json, Value};
use std::{convert::Infallible, time::Duration};

/// How often a snapshot is pushed without any change.
pub const EVERY: Duration = Duration::from_secs(1);
/// Event streams open at once. Each costs one snapshot a second; a few dashboards and monitors
/// are the expected load, and the bound keeps a runaway script from making the node busy.
pub const MAX_STREAMS: usize = 64;

/// Everything the dashboard and the monitor show, read from the live state now: the status
/// (node, sources with their rates, policies, peers, lending, connections, relays), this
/// month's usage, and the time.
pub fn snapshot(node: &Node, seq: u64) -> Value {
    let mut v = super::status_json(node);
    v["type"] = json!("snapshot");
    v["seq"] = json!(seq);
    v["ts_ms"] = json!(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0));
    v["usage"] = super::usage::current(node);
    v["connections"]["total"] = json!(node.conns.total());
    v
}

pub async fn stream(State(api): State<Api>) -> Response {
    let Ok(permit) = api.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("too many event streams open (at most {MAX_STREAMS})"),
        );
    };
    let events = futures::stream::unfold((api, 0u64, permit), |(api, seq, permit)| async move {
        if seq > 0 {
            tokio::select! {
                _ = api.stop.cancelled() => return None,
                _ = api.changed.notified() => {}
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
        if api.stop.is_cancelled() {
            return None;
        }
        let data = snapshot(&api.node, seq).to_string();
        let event = Event::default().event("snapshot").id(seq.to_string()).data(data);
        Some((Ok::<_, Infallible>(event), (api, seq + 1, permit)))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

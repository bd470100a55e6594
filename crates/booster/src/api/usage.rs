//! `GET /api/usage[?month=YYYY-MM]`: data used per source per calendar month (UTC), against
//! each source's monthly cap, and what this node lent to peers.
//!
//! The current month is read live from the sources' counters (what the store holds plus what
//! is not flushed yet); earlier months come from the database.

use super::error;
use crate::state::Node;
use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    month: Option<String>,
}

/// Is `s` a month as the store keys them (`YYYY-MM`)?
fn is_month(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit)
        && matches!(s[5..].parse::<u8>(), Ok(1..=12))
}

/// One usage row against a cap.
fn row(name: &str, month_bytes: u64, cap: Option<u64>) -> Value {
    json!({
        "name": name,
        "month_bytes": month_bytes,
        "cap_bytes": cap,
        "cap_left": cap.map(|c| c.saturating_sub(month_bytes)),
        "used_fraction": cap.map(|c| if c == 0 { 1.0 } else { month_bytes as f64 / c as f64 }),
        "over_cap": cap.is_some_and(|c| month_bytes >= c),
    })
}

/// The current month, live (no database read: the event stream sends this every second).
pub fn current(node: &Node) -> Value {
    let sources: Vec<Value> = node
        .sources()
        .iter()
        .map(|s| row(&s.name, s.month_bytes(), s.cap))
        .collect();
    let mut lent: Vec<(String, u64)> = node
        .lent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(uplink, s)| (uplink.clone(), s.month_bytes()))
        .collect();
    lent.sort();
    json!({
        "month": crate::store::current_month(),
        "live": true,
        "sources": sources,
        "lent": lent.iter().map(|(u, b)| json!({ "uplink": u, "month_bytes": b })).collect::<Vec<_>>(),
    })
}

fn months(node: &Node) -> Vec<String> {
    let mut m = node.store.as_ref().and_then(|s| s.months().ok()).unwrap_or_default();
    let now = crate::store::current_month();
    if !m.contains(&now) {
        m.push(now);
    }
    m
}

/// An earlier month, from the database. Caps are today's caps of the sources of that name.
fn stored(node: &Node, month: &str) -> Result<Value, String> {
    let Some(store) = &node.store else {
        return Ok(json!({ "month": month, "live": false, "sources": [], "lent": [] }));
    };
    let rows = store.month_usage(month).map_err(|e| e.to_string())?;
    let cap_of = |name: &str| node.source(name).and_then(|s| s.cap);
    let mut sources = Vec::new();
    let mut lent = Vec::new();
    for (name, rx, tx) in rows {
        match name.strip_prefix("lent:") {
            Some(uplink) => lent.push(json!({ "uplink": uplink, "month_bytes": rx + tx })),
            None => {
                let mut r = row(&name, rx + tx, cap_of(&name));
                r["rx_bytes"] = json!(rx);
                r["tx_bytes"] = json!(tx);
                sources.push(r);
            }
        }
    }
    Ok(json!({ "month": month, "live": false, "sources": sources, "lent": lent }))
}

pub async fn get(State(node): State<Arc<Node>>, query: Result<Query<UsageQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "expected ?month=YYYY-MM");
    };
    let month = q.month.unwrap_or_else(crate::store::current_month);
    if !is_month(&month) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("`{month}` is not a month: expected YYYY-MM"),
        );
    }
    let n = node.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut v = if month == crate::store::current_month() {
            current(&n)
        } else {
            stored(&n, &month)?
        };
        v["months"] = json!(months(&n));
        Ok::<_, String>(v)
    });
    match read.await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot read usage: {e}")),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot read usage"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_checked() {
        assert!(is_month("2026-11"));
        assert!(!is_month("2026-13"));
        assert!(!is_month("2026-1"));
        assert!(!is_month("26-11-01"));
        assert!(!is_month("abcd-ef"));
    }

    #[test]
    fn rows_measure_against_the_cap() {
        let r = row("usb0", 750, Some(1000));
        assert_eq!(r["cap_left"], 250);
        assert_eq!(r["used_fraction"], 0.75);
        assert_eq!(r["over_cap"], false);
        let r = row("eth0", 750, None);
        assert!(r["cap_left"].is_null() && r["used_fraction"].is_null());
    }
}

//! `booster status`: what a node is doing, from its API.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The node's API address.
    #[arg(long, default_value = crate::config::DEFAULT_API)]
    pub node: String,
    /// Print the same data as JSON (one line) instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// API token, for a node whose API is off loopback.
    #[arg(long, env = "BOOSTER_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub async fn run(args: StatusArgs) -> ExitCode {
    let value = match crate::client::get_json(&args.node, "/api/status", args.token.as_deref()).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("booster: cannot reach the node at {}: {e}", args.node);
            return ExitCode::from(1);
        }
    };
    if args.json {
        println!("{value}");
        return ExitCode::SUCCESS;
    }
    print!("{}", render(&value));
    ExitCode::SUCCESS
}

/// The human-readable status table.
pub fn render(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let n = &v["node"];
    let _ = writeln!(
        out,
        "node   proxy {}  up {}s  clients open {}  total {}  refused {}",
        n["listen"].as_str().unwrap_or("?"),
        n["uptime_secs"],
        n["clients_open"],
        n["clients_total"],
        n["clients_refused"]
    );
    let _ = writeln!(
        out,
        "{:<16} {:<9} {:<8} {:>5} {:>11} {:>11} {:>9} {:>18}",
        "SOURCE", "TIER", "HEALTH", "OPEN", "DOWN", "CAPACITY", "RTT", "MONTH / CAP"
    );
    for s in v["sources"].as_array().into_iter().flatten() {
        let rate = |x: &serde_json::Value| format!("{:.1} Mbit/s", x.as_f64().unwrap_or(0.0) * 8.0 / 1e6);
        let rtt = s["rtt_ms"]
            .as_f64()
            .map(|r| format!("{r:.0} ms"))
            .unwrap_or_else(|| "-".into());
        let month = crate::units::ByteSize(s["month_bytes"].as_u64().unwrap_or(0));
        let cap = s["cap_bytes"]
            .as_u64()
            .map(|c| crate::units::ByteSize(c).to_string())
            .unwrap_or_else(|| "no cap".into());
        let _ = writeln!(
            out,
            "{:<16} {:<9} {:<8} {:>5} {:>11} {:>11} {:>9} {:>18}",
            s["name"].as_str().unwrap_or("?"),
            s["tier"].as_str().unwrap_or("?"),
            s["health"].as_str().unwrap_or("?"),
            s["open"].to_string(),
            rate(&s["rate_rx"]),
            rate(&s["capacity"]),
            rtt,
            format!("{month} / {cap}")
        );
    }
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    if !peers.is_empty() {
        let _ = writeln!(
            out,
            "{:<22} {:<14} {:<11} UPLINKS / LAST ERROR",
            "PEER", "NAME", "STATE"
        );
        for p in &peers {
            let uplinks: Vec<&str> = p["uplinks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str())
                .collect();
            let detail = if uplinks.is_empty() {
                p["last_error"].as_str().unwrap_or("-").to_string()
            } else {
                uplinks.join(", ")
            };
            let _ = writeln!(
                out,
                "{:<22} {:<14} {:<11} {}",
                p["addr"].as_str().unwrap_or("?"),
                p["name"].as_str().unwrap_or("-"),
                p["state"].as_str().unwrap_or("?"),
                detail
            );
        }
    }
    for a in v["available"].as_array().into_iter().flatten() {
        let addrs: Vec<String> = a["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect();
        let _ = writeln!(
            out,
            "available on the LAN: {} at {} port {} (booster connect {}:{})",
            a["node"].as_str().unwrap_or("?"),
            addrs.join(", "),
            a["port"],
            addrs.first().cloned().unwrap_or_default(),
            a["port"]
        );
    }
    let lending = &v["lending"];
    if lending["enabled"] == true {
        let _ = writeln!(
            out,
            "lending on {} ({})",
            lending["peer_listen"].as_str().unwrap_or("-"),
            lending["uplinks"].as_array().map(|u| u.len()).unwrap_or(0).to_string() + " uplinks"
        );
    }
    connections(&mut out, v);
    policies(&mut out, v);
    relays(&mut out, &v["relays"]);
    out
}

fn connections(out: &mut String, v: &serde_json::Value) {
    use std::fmt::Write;
    let c = &v["connections"];
    let mut per: Vec<String> = c["per_source"]
        .as_object()
        .map(|o| o.iter().map(|(k, n)| format!("{k} {n}")).collect())
        .unwrap_or_default();
    per.sort();
    let _ = writeln!(
        out,
        "connections: {} open{}",
        c["open"],
        if per.is_empty() {
            String::new()
        } else {
            format!(" ({})", per.join(", "))
        }
    );
}

fn policies(out: &mut String, v: &serde_json::Value) {
    use std::fmt::Write;
    let list = v["policies"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "policies: {}", list.len());
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {:<10} {:<8} {:<16} {:<8} HOSTS", "ID", "KIND", "UPLINK", "FROM");
    for p in &list {
        let hosts: Vec<&str> = p["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str())
            .collect();
        let ttl = p["ttl"].as_str().map(|t| format!(" (for {t})")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<10} {:<8} {:<16} {:<8} {}{ttl}",
            p["id"].as_str().unwrap_or("?"),
            p["kind"].as_str().unwrap_or("?"),
            p["uplink"].as_str().unwrap_or("any"),
            p["origin"].as_str().unwrap_or("?"),
            if hosts.is_empty() {
                "all".to_string()
            } else {
                hosts.join(", ")
            }
        );
    }
}

/// The bond's relays and their paths (schema: `Node::relays_json`).
pub fn relays(out: &mut String, relays: &serde_json::Value) {
    use std::fmt::Write;
    let list = relays.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        let _ = writeln!(out, "bond: no relays");
        return;
    }
    for r in &list {
        let _ = writeln!(
            out,
            "relay {} {}  streams {}  sent twice {}",
            r["relay"].as_str().unwrap_or("?"),
            r["state"].as_str().unwrap_or("?"),
            r["streams"],
            crate::units::ByteSize(r["redundant_bytes"].as_u64().unwrap_or(0))
        );
        for p in r["paths"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  path {:<16} {:<10} rtt {:>8}  loss {:>5.1} %  {:>6.1} Mbit/s  in flight {}",
                p["source"].as_str().unwrap_or("?"),
                p["state"].as_str().unwrap_or("?"),
                p["rtt_ms"]
                    .as_f64()
                    .map(|r| format!("{r:.1} ms"))
                    .unwrap_or_else(|| "-".into()),
                p["loss"].as_f64().unwrap_or(0.0) * 100.0,
                p["rate_bps"].as_f64().unwrap_or(0.0) / 1e6,
                crate::units::ByteSize(p["inflight"].as_u64().unwrap_or(0))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_lists_connections_policies_and_bond_paths() {
        let v = json!({
            "node": {"listen": "127.0.0.1:1080", "uptime_secs": 5, "clients_open": 2, "clients_total": 9, "clients_refused": 0},
            "sources": [{"name": "eth1", "tier": "primary", "health": "up", "open": 2, "rate_rx": 125000.0,
                         "capacity": 2500000.0, "rtt_ms": 12.5, "month_bytes": 1000, "cap_bytes": null}],
            "connections": {"open": 2, "per_source": {"eth1": 2}},
            "policies": [{"id": "config-1", "origin": "config", "kind": "block", "uplink": null,
                          "hosts": ["ads.example"], "ttl": null}],
            "relays": [{"relay": "relay.example:4886", "state": "up", "streams": 1, "redundant_bytes": 0,
                        "paths": [{"source": "eth1", "state": "up", "rtt_ms": 12.5, "loss": 0.0,
                                   "rate_bps": 2500000.0, "inflight": 12345, "tx_bytes": 1, "rx_bytes": 2}]}],
        });
        let text = render(&v);
        assert!(text.contains("connections: 2 open (eth1 2)"), "{text}");
        assert!(text.contains("config-1") && text.contains("ads.example"), "{text}");
        assert!(
            text.contains("relay relay.example:4886 up") && text.contains("rtt  12.5 ms"),
            "{text}"
        );
        let text = render(&json!({"relays": []}));
        assert!(text.contains("bond: no relays"), "{text}");
    }
}

//! `booster status`: what a node is doing, from its API.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The node's API address.
    #[arg(long, default_value = crate::config::DEFAULT_API)]
    pub node: String,
    /// Print the raw JSON instead of a table.
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
    let policies = v["policies"].as_array().map(|p| p.len()).unwrap_or(0);
    let _ = writeln!(out, "policies: {policies}");
    out
}

//! `booster connect` and `booster disconnect`: make a peer boost a node, or stop.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The peer to borrow uplinks from: host or host:port (default port 4885).
    pub peer: String,
    /// The API of the node that borrows.
    #[arg(long, default_value = crate::config::DEFAULT_API)]
    pub node: String,
    /// API token, for a node whose API is off loopback.
    #[arg(long, env = "BOOSTER_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    /// The peer, by address or node name.
    pub peer: String,
    #[arg(long, default_value = crate::config::DEFAULT_API)]
    pub node: String,
    #[arg(long, env = "BOOSTER_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub async fn connect(args: ConnectArgs) -> ExitCode {
    let addr = match crate::config::peer_addr(&args.peer) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("booster: {e}");
            return ExitCode::from(2);
        }
    };
    let body = serde_json::json!({ "addr": addr }).to_string();
    match crate::client::request(&args.node, "POST", "/api/peers", Some(body), args.token.as_deref()).await {
        Ok((status, v)) if status < 300 => {
            println!(
                "connecting to {} (see `booster status`)",
                v["addr"].as_str().unwrap_or(&addr)
            );
            ExitCode::SUCCESS
        }
        Ok((_, v)) => {
            eprintln!("booster: {}", v["error"].as_str().unwrap_or("the node refused"));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("booster: cannot reach the node at {}: {e}", args.node);
            ExitCode::from(1)
        }
    }
}

pub async fn disconnect(args: DisconnectArgs) -> ExitCode {
    let path = format!("/api/peers/{}", args.peer);
    match crate::client::request(&args.node, "DELETE", &path, None, args.token.as_deref()).await {
        Ok((status, _)) if status < 300 => {
            println!("disconnected from {}", args.peer);
            ExitCode::SUCCESS
        }
        Ok((_, v)) => {
            eprintln!("booster: {}", v["error"].as_str().unwrap_or("the node refused"));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("booster: cannot reach the node at {}: {e}", args.node);
            ExitCode::from(1)
        }
    }
}

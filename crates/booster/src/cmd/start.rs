//! `booster start`: run a node.

use crate::{
    config::{Config, FileConfig, Overrides},
    run::{self, Extras},
};
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// TOML config file; flags override its keys.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Proxy address (SOCKS5 and HTTP on one port) [default: 127.0.0.1:1080].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Control API address [default: 127.0.0.1:4884].
    #[arg(long)]
    pub api: Option<SocketAddr>,
    /// Use this interface as an uplink (repeatable). Without it, uplinks are discovered.
    #[arg(long = "iface", value_name = "NAME")]
    pub iface: Vec<String>,
    /// Where usage counters are kept [default: ~/.local/share/booster].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// host:port that reachability probes connect to, or "none".
    #[arg(long)]
    pub probe_target: Option<String>,
    /// This node's name on the peer network [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    /// The network secret shared by your nodes (visible in `ps`: prefer --secret-file).
    #[arg(long, env = "BOOSTER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the network secret.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Peer port address, or "off" [default: 0.0.0.0:4885 when a secret is set].
    #[arg(long)]
    pub peer_listen: Option<String>,
    /// Borrow uplinks from this peer (host[:port], repeatable).
    #[arg(long = "peer", value_name = "HOST[:PORT]")]
    pub peers: Vec<String>,
    /// Do not announce or discover nodes on the LAN by mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Bond through this relay (host[:port], default port 4886; repeatable).
    #[arg(long = "relay", value_name = "HOST[:PORT]")]
    pub relays: Vec<String>,
    /// Bond these TCP streams over every uplink: all, HOST, :PORT or CIDR (repeatable).
    #[arg(long = "bond", value_name = "RULE")]
    pub bond: Vec<String>,
    /// Send these streams on every path, for latency: all, HOST, :PORT, CIDR or none
    /// (repeatable) [default with a relay: :22 :3389 :5900].
    #[arg(long = "redundant", value_name = "RULE")]
    pub redundant: Vec<String>,
}

pub async fn run(args: StartArgs) -> ExitCode {
    let config = match config(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let running = match run::start(config, Extras::default()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("booster: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = shutdown_signal();
    eprintln!(
        "booster: proxy on {} (SOCKS5 and HTTP), API on {}",
        running.proxy_addr,
        running.api_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
    );
    stop.await;
    eprintln!("booster: shutting down, draining open connections");
    let cut = running.shutdown().await;
    if cut > 0 {
        eprintln!("booster: closed {cut} connection(s) still open after the drain timeout");
    }
    ExitCode::SUCCESS
}

/// The node's config from the file and the flags, with `max_connections` fitted to the
/// open-file limit. Errors are printed; the exit code is returned.
pub fn config(args: StartArgs) -> Result<Config, ExitCode> {
    let file = match &args.config {
        Some(path) => match FileConfig::load(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("booster: {e}");
                return Err(ExitCode::from(2));
            }
        },
        None => FileConfig::default(),
    };
    let flags = Overrides {
        listen: args.listen,
        api: args.api,
        iface: args.iface,
        data_dir: args.data_dir,
        probe_target: args.probe_target,
        name: args.name,
        secret: args.secret.map(crate::config::Secret::new),
        secret_file: args.secret_file,
        peer_listen: args.peer_listen,
        peers: args.peers,
        no_mdns: args.no_mdns,
        relays: args.relays,
        bond: args.bond,
        redundant: args.redundant,
    };
    let config = match Config::build(file, flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("booster: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let mut config = config;
    match crate::sys::raise_nofile_limit() {
        Ok(nofile) => {
            let fits = connections_for_nofile(nofile);
            if config.max_connections > fits {
                if config.max_connections == crate::config::DEFAULT_MAX_CONNECTIONS {
                    tracing::info!(
                        nofile,
                        max_connections = fits,
                        "max_connections lowered to fit the open-file limit"
                    );
                } else {
                    tracing::warn!(
                        nofile,
                        max_connections = config.max_connections,
                        "the open-file limit allows only {fits} connections (two sockets each); raise it (ulimit -n)"
                    );
                }
                config.max_connections = fits.max(1);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    Ok(config)
}

/// The most connections an open-file limit of `nofile` leaves room for: two sockets per
/// connection (client or peer channel, and its upstream), after headroom for uplinks, probes,
/// DNS, the store and the API, and one socket for each peer handshake that may be under way.
pub fn connections_for_nofile(nofile: u64) -> usize {
    let headroom = 256 + crate::lend::MAX_HANDSHAKES;
    (nofile as usize).saturating_sub(headroom) / 2
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// it is first awaited: call it before announcing that the node is up, so a signal sent
/// right after the announcement is never missed (and never kills the process outright).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

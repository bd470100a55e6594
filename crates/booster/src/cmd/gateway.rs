//! `booster gateway`: run a node in transparent mode on a Linux router.

use crate::{
    cmd::start::{self, StartArgs},
    gateway::{self, Rules},
    policy::Pattern,
    run::{self, Extras},
};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// The LAN interface whose TCP traffic is steered into booster (or `[gateway] lan`).
    #[arg(long)]
    pub lan: Option<String>,
    /// Port redirected connections arrive on [default: 4887].
    #[arg(long)]
    pub port: Option<u16>,
    /// Leave traffic to this network alone (CIDR or IP; repeatable; added to `[gateway] exclude`).
    #[arg(long = "exclude", value_name = "CIDR")]
    pub exclude: Vec<String>,
    /// Remove the gateway's rules (after a crash) and exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Do not start the watchdog that removes the rules if this process dies.
    #[arg(long)]
    pub no_watchdog: bool,
    /// Internal: be the watchdog of this gateway process.
    #[arg(long, hide = true, requires = "watch_handle")]
    pub watch_pid: Option<u32>,
    /// Internal: the nftables handle of the table the watched gateway installed.
    #[arg(long, hide = true)]
    pub watch_handle: Option<u64>,
    #[command(flatten)]
    pub node: StartArgs,
}

pub async fn run(args: GatewayArgs) -> ExitCode {
    if let (Some(pid), Some(handle)) = (args.watch_pid, args.watch_handle) {
        return match tokio::task::spawn_blocking(move || gateway::watch(pid, handle)).await {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("booster: watchdog: {e}");
                ExitCode::from(1)
            }
            Err(_) => ExitCode::from(1),
        };
    }
    if args.cleanup {
        return match gateway::remove() {
            Ok(true) => {
                eprintln!("booster: gateway rules removed");
                ExitCode::SUCCESS
            }
            Ok(false) => {
                eprintln!("booster: no gateway rules were installed");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("booster: {e}");
                ExitCode::from(1)
            }
        };
    }
    let mut config = match start::config(args.node) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for cidr in &args.exclude {
        if !Pattern::parse(cidr).is_ok_and(|p| p.is_address()) {
            eprintln!("booster: --exclude `{cidr}` is not a CIDR or an IP address");
            return ExitCode::from(2);
        }
    }
    config.gateway.exclude.extend(args.exclude);
    if let Some(port) = args.port {
        config.gateway.port = port;
    }
    let Some(lan) = args.lan.or(config.gateway.lan.clone()) else {
        eprintln!("booster: gateway needs the LAN interface: --lan IFACE or `[gateway] lan`");
        return ExitCode::from(2);
    };
    let mut wan: Vec<String> = config.uplinks.iter().map(|u| u.name.clone()).collect();
    wan.extend(crate::sys::default_route_ifaces());
    wan.sort();
    wan.dedup();
    wan.retain(|w| *w != lan);
    let rules = Rules {
        lan,
        port: config.gateway.port,
        exclude: config.gateway.exclude.clone(),
        wan,
    };
    let watchdog = config.gateway.watchdog && !args.no_watchdog;
    let listeners = match gateway::listeners(rules.port) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("booster: cannot listen on the gateway port {}: {e}", rules.port);
            return ExitCode::from(1);
        }
    };
    let running = match run::start(config, Extras::default()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("booster: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = rules.install() {
        eprintln!("booster: {e}");
        running.shutdown().await;
        return ExitCode::from(
            if matches!(e, gateway::GatewayError::NoLan(_) | gateway::GatewayError::BadLan(_)) {
                2
            } else {
                1
            },
        );
    }
    let handle = gateway::table_handle().ok().flatten();
    if watchdog {
        let started = match handle {
            Some(h) => gateway::spawn_watchdog(std::process::id(), h),
            None => Err(std::io::Error::other("the table's handle is unknown")),
        };
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the gateway watchdog; after a crash run `booster gateway --cleanup`");
        }
    }
    for l in listeners {
        running.serve_gateway(l);
    }
    let stop = start::shutdown_signal();
    eprintln!(
        "booster: gateway on {} (TCP from the LAN is steered to port {}), proxy on {}, API on {}",
        rules.lan,
        rules.port,
        running.proxy_addr,
        running.api_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
    );
    stop.await;
    // Rules first: from now on the LAN's traffic is routed as if booster were not there. By
    // handle: a newer gateway that replaced our table keeps its own.
    let removed = match handle {
        Some(h) => gateway::remove_handle(h),
        None => gateway::remove(),
    };
    if let Err(e) = removed {
        eprintln!("booster: could not remove the gateway rules ({e}); run `booster gateway --cleanup`");
    }
    eprintln!("booster: gateway rules removed; draining open connections");
    running.shutdown().await;
    ExitCode::SUCCESS
}

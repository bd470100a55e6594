//! `booster relay`: run the far end of bonds on a server.

use crate::{
    noise::Identity,
    policy::Pattern,
    relay::{self, Relay, RelayConfig},
};
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Address to accept paths on.
    #[arg(long, default_value = "0.0.0.0:4886")]
    pub listen: SocketAddr,
    /// The network secret shared by your nodes (visible in `ps`: prefer --secret-file).
    #[arg(long, env = "BOOSTER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the network secret.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Let bonded streams reach this network although it is private or special
    /// (CIDR or IP; repeatable). By default only public addresses are reachable.
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<String>,
}

pub async fn run(args: RelayArgs) -> ExitCode {
    let secret = match (&args.secret, &args.secret_file) {
        (Some(s), None) => s.clone(),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(s) => s.trim().to_string(),
            Err(e) => {
                eprintln!("booster: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        (Some(_), Some(_)) => {
            eprintln!("booster: give --secret or --secret-file, not both");
            return ExitCode::from(2);
        }
        (None, None) => {
            eprintln!("booster: a relay needs the network secret (--secret-file F, --secret S or BOOSTER_SECRET)");
            return ExitCode::from(2);
        }
    };
    if secret.is_empty() {
        eprintln!("booster: the network secret is empty");
        return ExitCode::from(2);
    }
    let allow = match args
        .allow
        .iter()
        .map(|a| Pattern::parse(a))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(a) if a.iter().all(Pattern::is_address) => a,
        Ok(_) => {
            eprintln!("booster: --allow takes a CIDR or an IP address");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("booster: --allow: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("booster: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let psk = match tokio::task::spawn_blocking(move || crate::noise::derive_psk(&secret)).await {
        Ok(psk) => psk,
        Err(e) => {
            eprintln!("booster: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = CancellationToken::new();
    let relay = Relay::new(
        RelayConfig {
            psk,
            identity: Identity::generate(),
            allow,
        },
        stop.clone(),
    );
    let addr = listener.local_addr().map_or(args.listen, |a| a);
    let signal = crate::cmd::start::shutdown_signal();
    eprintln!("booster: relay on {addr}");
    tokio::select! {
        () = relay::serve(listener, relay) => {}
        () = signal => {}
    }
    stop.cancel();
    ExitCode::SUCCESS
}

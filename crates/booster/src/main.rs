//! The `booster` command line. Exit codes: 0 ok, 1 runtime failure, 2 usage or config error.

use booster::cmd;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "booster",
    version,
    about = "Join several slow or metered uplinks into one fast connection"
)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (warnings and errors only).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: a SOCKS5 and HTTP proxy over every uplink.
    Start(Box<cmd::start::StartArgs>),
    /// Show a node's sources, peers, load, usage and policies.
    Status(cmd::status::StatusArgs),
    /// Watch a node live: `net` (throughput, connections, caps, bond paths) or `node` (peers).
    Monitor(cmd::monitor::MonitorArgs),
    /// Make a peer boost a node: borrow the uplinks it lends.
    Connect(cmd::peers::ConnectArgs),
    /// Stop borrowing from a peer.
    Disconnect(cmd::peers::DisconnectArgs),
    /// Download one HTTP(S) file over every uplink at once, by byte ranges.
    Get(Box<cmd::get::GetArgs>),
    /// Run the thesis's speedtest jobs (JSON) through a node and plot per-source throughput.
    Speedtest(cmd::speedtest::SpeedtestArgs),
    /// Transparent mode on a Linux router: boost every LAN device with no setting on it.
    Gateway(Box<cmd::gateway::GatewayArgs>),
    /// Run the far end of bonds on a server: reassemble bonded streams and connect them.
    Relay(cmd::relay::RelayArgs),
    /// Run the whole system on emulated uplinks (no root, no setup) and compare it with each link.
    Demo(cmd::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The demo prints its own story; its node only logs problems unless asked.
    // The demo, get and speedtest print their own story; their nodes only log problems. The
    // monitor owns the terminal.
    let quiet = cli.quiet
        || matches!(
            cli.command,
            Command::Demo(_) | Command::Get(_) | Command::Speedtest(_) | Command::Monitor(_)
        );
    let level = match (quiet, cli.verbose) {
        (_, 1) => "debug",
        (_, 2..) => "trace",
        (true, _) => "warn",
        (false, _) => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("booster={level},lab={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // No colour codes into journald, logread or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("booster: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Start(a) => cmd::start::run(*a).await,
            Command::Status(a) => cmd::status::run(a).await,
            Command::Monitor(a) => cmd::monitor::run(a).await,
            Command::Demo(a) => cmd::demo::run(a).await,
            Command::Get(mut a) => {
                a.quiet |= cli.quiet;
                cmd::get::run(*a).await
            }
            Command::Speedtest(a) => cmd::speedtest::run(a).await,
            Command::Relay(a) => cmd::relay::run(a).await,
            Command::Gateway(a) => cmd::gateway::run(*a).await,
            Command::Connect(a) => cmd::peers::connect(a).await,
            Command::Disconnect(a) => cmd::peers::disconnect(a).await,
        }
    })
}

//! `lab`: build a profile's namespaces by hand, run the origin, run the benchmark, clean up.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};

use lab::bench::{self, BenchArgs};
use lab::netns;
use lab::origin::{Faults, Origin};
use lab::profile;
use lab::topology::Lab;

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    version,
    about = "booster's network lab: namespaces, origin, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a profile's namespaces, run the origin on 10.99.0.1:80, wait for Ctrl-C, tear down.
    Up {
        /// home, peers, skewed or lossy.
        profile: String,
    },
    /// Run the lab origin server (GET /file/<size>[?seed=N], /health) until Ctrl-C.
    Origin {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Measure booster against the link sum and the anchors; write docs/benchmarks.md.
    Bench(BenchArgs),
    /// Mixed traffic for N minutes under a chaos loop on the `peers` lab; writes docs/soak.md.
    Soak(lab::soak::SoakArgs),
    /// Delete stale bt-* namespaces left by lab processes that died.
    Cleanup,
    /// One node on loopback under 10,000 connections with steady transfers, a throughput run
    /// and sequential connects: memory per connection, CPU per Gbit/s, connect p50/p99.
    Load(lab::load::LoadArgs),
    /// Measure every link of the profiles (default: all four) against its rate and RTT, one lab
    /// at a time; print a table, write docs/calibration.md; exit 1 if any is out of 10%.
    Calibrate(lab::calibrate::CalibrateArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Up { profile } => up(&profile),
        Cmd::Origin { listen } => origin(listen),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Soak(args) => soak(&args),
        Cmd::Cleanup => cleanup(),
        Cmd::Load(args) => lab::load::run(args),
        Cmd::Calibrate(args) => lab::calibrate::run(args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Waits for Ctrl-C or SIGTERM.
async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn up(name: &str) -> Result<()> {
    let prof = profile::profile(name)
        .ok_or_else(|| anyhow!("unknown profile `{name}` (try: {})", profile::PROFILE_NAMES.join(", ")))?;
    let rt = runtime()?;
    let _enter = rt.enter();
    let lab = Lab::build(&prof)?;
    let addr = SocketAddr::from((lab.origin_ip(), 80));
    let listener = lab
        .in_ns(lab.internet_ns(), move || std::net::TcpListener::bind(addr))?
        .with_context(|| format!("binding the origin on {addr}"))?;
    let origin = Origin::serve(listener, Faults::default())?;

    println!("lab `{}` is up ({}).", prof.name, prof.why);
    println!("namespaces:");
    for ns in lab.namespaces() {
        println!("  {ns}");
    }
    println!(
        "origin: http://{} (lab origin: /file/<size>[?seed=N], /health) in {}",
        origin.local_addr(),
        lab.internet_ns()
    );
    println!("uplinks:");
    println!(
        "  {:<10} {:<10} {:<28} {:<16} {:<16} {:>9} {:>7} {:>6}",
        "node", "iface", "namespace", "address", "gateway", "rate", "RTT", "loss"
    );
    for u in lab.uplinks() {
        println!(
            "  {:<10} {:<10} {:<28} {:<16} {:<16} {:>4} Mbit {:>4} ms {:>5.1}%",
            u.node,
            u.iface,
            u.node_ns,
            format!("{}/24", u.addr),
            u.gateway.to_string(),
            u.spec.rate_bps / 1_000_000,
            u.spec.rtt.as_millis(),
            u.spec.loss * 100.0
        );
    }
    for node in lab.nodes() {
        if let Some(ip) = lab.lan_ip(node) {
            println!("  LAN: {node} is {ip}/24 on lan0");
        }
    }
    if let Some(u) = lab.uplinks().first() {
        println!("try:");
        println!(
            "  ip netns exec {} curl --interface {} -o /dev/null http://{}/file/10MB",
            u.node_ns, u.iface, addr
        );
        println!(
            "  ip netns exec {} booster start {}--probe-target {addr}",
            u.node_ns,
            lab.uplinks()
                .iter()
                .filter(|x| x.node_ns == u.node_ns)
                .map(|x| format!("--iface {} ", x.iface))
                .collect::<String>()
        );
    }
    println!("Ctrl-C tears everything down.");
    rt.block_on(wait_for_signal())?;
    println!("tearing down ...");
    drop(origin);
    drop(lab);
    Ok(())
}

fn origin(listen: SocketAddr) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let listener = std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        let origin = Origin::serve(listener, Faults::default())?;
        println!(
            "origin on http://{} (GET /file/<size>[?seed=N], /health); Ctrl-C stops it",
            origin.local_addr()
        );
        wait_for_signal().await?;
        drop(origin);
        Ok(())
    })
}

fn soak(args: &lab::soak::SoakArgs) -> Result<()> {
    let s = lab::soak::run(args)?;
    lab::soak::print(&s);
    if args.out.as_os_str() != "-" {
        std::fs::write(&args.out, s.markdown()).with_context(|| format!("writing {}", args.out.display()))?;
        println!("wrote {}", args.out.display());
    }
    Ok(())
}

fn cleanup() -> Result<()> {
    let deleted = netns::cleanup_stale()?;
    if deleted.is_empty() {
        println!("no stale lab namespaces");
    } else {
        for n in &deleted {
            println!("deleted {n}");
        }
    }
    Ok(())
}

//! `booster demo`: the whole system on emulated uplinks shaped like the seed's story (a slow
//! ADSL line plus two phones on 4G), in-process, with no root and no setup. It measures, side
//! by side in one run, each link alone, the link sum, and booster, then prints a table and
//! writes a plot of per-link throughput over time.

use crate::{
    client::get_count,
    config::{Config, FileConfig, Overrides, Tier},
    run::{self, Extras},
    source::{Source, SourceKind},
};
use lab::{emulink::EmuLink, origin::Origin, plot, profile};
use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Lab profile to emulate.
    #[arg(long, default_value = "home")]
    pub profile: String,
    /// Where to write the throughput plot.
    #[arg(long, default_value = "booster-demo.svg")]
    pub plot: PathBuf,
    /// Parallel downloads in the "many connections" run.
    #[arg(long, default_value_t = 12)]
    pub parallel: usize,
    /// Seconds each link is measured alone.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Per-link byte counters sampled over the whole demo, for the plot.
type Samples = Arc<Mutex<Vec<(f64, Vec<u64>)>>>;

pub async fn run(args: DemoArgs) -> ExitCode {
    match demo(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("booster demo: {e}");
            ExitCode::from(1)
        }
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let Some(prof) = profile::profile(&args.profile) else {
        anyhow::bail!(
            "unknown profile `{}` (try: {})",
            args.profile,
            profile::PROFILE_NAMES.join(", ")
        );
    };
    let specs: Vec<profile::LinkSpec> = prof.links().map(|(_, l)| l.clone()).collect();
    let desc: Vec<String> = specs
        .iter()
        .map(|l| format!("{} {} Mbit/{} ms", l.name, l.rate_bps / 1_000_000, l.rtt.as_millis()))
        .collect();
    println!(
        "booster demo: the `{}` profile emulated in-process ({})",
        prof.name,
        desc.join(", ")
    );
    println!("Each link is shaped in both directions (rate, RTT); the origin and the node run on loopback.\n");

    let origin = Origin::serve(std::net::TcpListener::bind("127.0.0.1:0")?, Default::default())?;
    let origin_addr = origin.local_addr();
    let links: Vec<EmuLink> = specs.iter().map(EmuLink::new).collect();

    // Sample every link's counter every 250 ms for the plot.
    let t0 = Instant::now();
    let samples: Samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (links, samples) = (links.clone(), samples.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let v = links.iter().map(|l| l.bytes_down()).collect();
                samples
                    .lock()
                    .expect("sampler lock")
                    .push((t0.elapsed().as_secs_f64(), v));
            }
        })
    };

    // 1. Every link alone, all at the same time: the link sum, and the best single link.
    let secs = args.seconds.max(2);
    println!("[1/5] measuring each link alone, all at once, for {secs} s ...");
    let alone = futures::future::join_all(links.iter().map(|link| {
        let link = link.clone();
        async move {
            let stop = Instant::now() + Duration::from_secs(secs);
            let start = Instant::now();
            let s = link.connect(origin_addr).await?;
            let n = get_count(s, &origin_addr.to_string(), "/file/1GB", Some(stop))
                .await
                .map_err(anyhow::Error::msg)?;
            anyhow::Ok(n as f64 / start.elapsed().as_secs_f64())
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<f64>, _>>()?;
    let link_sum: f64 = alone.iter().sum();
    let (best_i, best) = alone
        .iter()
        .copied()
        .enumerate()
        .fold((0, 0.0), |a, (i, r)| if r > a.1 { (i, r) } else { a });

    let node = demo_node("home", &links, None, None, vec![], None).await?;
    let proxy = node.proxy_addr;
    const BIG: u64 = 16;
    println!("[2/5] booster node on {proxy}: warming up (learning link capacities) ...");
    parallel(proxy, origin_addr, args.parallel, "/file/2MB").await?;
    println!(
        "[3/5] {} parallel 3 MB downloads through booster's proxy ...",
        args.parallel
    );
    let (bytes, took) = parallel(proxy, origin_addr, args.parallel, "/file/3MB").await?;
    let boosted = bytes as f64 / took;

    // One download over every link: `booster get`'s engine, then the proxy splitting a plain
    // GET by itself (any HTTP client gets this, with no configuration).
    println!("      one {BIG} MB download with booster get, then one through the proxy ...");
    let big_size = BIG * 1_000_000;
    let url = format!("http://{origin_addr}/file/{big_size}");
    let mut req = crate::fetch::Request::new(url.clone(), crate::fetch::Output::Stream(Box::new(tokio::io::sink())));
    req.sha256 = Some(lab::origin::sha256_hex(big_size, big_size));
    let connector = std::sync::Arc::new(crate::fetch::NodeConnector::new(node.node.clone()));
    let opts = crate::fetch::Options {
        notify: std::sync::Arc::new(|_| {}),
        ..Default::default()
    };
    let t = Instant::now();
    crate::fetch::download(req, connector, opts)
        .await
        .map_err(|e| anyhow::anyhow!("booster get: {e}"))?;
    let got = big_size as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let n = get_count(
        tokio::net::TcpStream::connect(proxy).await?,
        &origin_addr.to_string(),
        &url,
        None,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(n == big_size, "the proxy delivered {n} of {big_size} bytes");
    let split = big_size as f64 / t.elapsed().as_secs_f64();
    node.shutdown().await;

    // 3. The seed's story: the first link stays at home, every other link is a phone's, lent
    // to the home node over the encrypted peer network.
    println!("[4/5] the same, with the 4G links lent by phone nodes over the peer network ...");
    const SECRET: &str = "demo household secret";
    let mut phones = Vec::new();
    for (i, l) in links.iter().enumerate().skip(1) {
        phones.push(
            demo_node(
                &format!("phone-{i}"),
                std::slice::from_ref(l),
                Some(SECRET),
                Some(true),
                vec![],
                None,
            )
            .await?,
        );
    }
    let peers: Vec<String> = phones
        .iter()
        .filter_map(|p| p.peer_addr.map(|a| a.to_string()))
        .collect();
    let home = demo_node("home", &links[..1], Some(SECRET), Some(false), peers, None).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while home
        .node
        .sources()
        .iter()
        .filter(|s| s.name.contains('/') && s.usable(std::time::Instant::now()))
        .count()
        < phones.len()
    {
        if Instant::now() > deadline {
            anyhow::bail!("the phone nodes did not join the home node");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let proxy = home.proxy_addr;
    parallel(proxy, origin_addr, args.parallel, "/file/2MB").await?;
    let (bytes, took) = parallel(proxy, origin_addr, args.parallel, "/file/3MB").await?;
    let via_peers = bytes as f64 / took;
    home.shutdown().await;
    for p in phones {
        p.shutdown().await;
    }

    // 4. One TCP stream over every link: the bond, through a relay (in-process here; on a
    // server of yours for real).
    println!("[5/5] one {BIG} MB stream over the bond: a relay, and a node bonding every link to it ...");
    let bonded = bond_stream(&links, origin_addr, big_size).await?;
    sampler.abort();

    let mb = |r: f64| r / 1e6;
    println!();
    println!(
        "{:<44} {:>8} {:>12} {:>13}",
        "what", "MB/s", "of link sum", "vs best link"
    );
    println!(
        "{:<44} {:>8.2} {:>11.0}% {:>13}",
        "each link alone, all at once (the link sum)",
        mb(link_sum),
        100.0,
        ""
    );
    for (l, r) in specs.iter().zip(&alone) {
        println!(
            "{:<44} {:>8.2} {:>11.0}% {:>12.2}×",
            format!("  {} alone", l.name),
            mb(*r),
            r / link_sum * 100.0,
            r / best
        );
    }
    println!(
        "{:<44} {:>8.2} {:>11.0}% {:>12.2}×",
        format!("best single link ({})", specs[best_i].name),
        mb(best),
        best / link_sum * 100.0,
        1.0
    );
    println!(
        "{:<44} {:>8.2} {:>11.0}% {:>12.2}×",
        format!("{} parallel downloads through booster", args.parallel),
        mb(boosted),
        boosted / link_sum * 100.0,
        boosted / best
    );

    println!(
        "{:<44} {:>8.2} {:>11.0}% {:>12.2}×",
        "the same, 4G links lent by 2 phones (peers)",
        mb(via_peers),
        via_peers / link_sum * 100.0,
        via_peers / best
    );
    for (what, r) in [
        (format!("one {BIG} MB download, booster get (sha256 ok)"), got),
        (format!("one {BIG} MB download via the proxy (split)"), split),
    ] {
        println!(
            "{:<44} {:>8.2} {:>11.0}% {:>12.2}×",
            what,
            mb(r),
            r / link_sum * 100.0,
            r / best
        );
    }
    println!(
        "{:<44} {:>8.2} {:>11.0}% {:>12.2}×",
        format!("one {BIG} MB TCP stream over the bond (relay)"),
        mb(bonded),
        bonded / link_sum * 100.0,
        bonded / best
    );
    let samples = samples.lock().expect("sampler lock").clone();
    let series: Vec<plot::Series> = specs
        .iter()
        .enumerate()
        .map(|(i, l)| plot::Series {
            label: format!("{} ({} Mbit/s)", l.name, l.rate_bps / 1_000_000),
            points: plot::rates_mbit(&samples.iter().map(|(t, v)| (*t, v[i])).collect::<Vec<_>>()),
        })
        .collect();
    plot::line_chart_svg(
        &args.plot,
        "booster demo: throughput per link (first: each alone; then through booster)",
        "Mbit/s",
        &series,
    )?;
    println!("\nplot of per-link throughput over time: {}", args.plot.display());
    println!("Next: `booster start` runs a real node on your own uplinks; see README.md.");
    Ok(())
}

/// Starts an in-process node whose uplinks are `links`. A node with `lend` set gets the peer
/// port on loopback (`Some(true)`: it lends; `Some(false)`: closed) and borrows from `peers`.
/// Nodes start cold, as after installation; the caller warms them up (a real node remembers
/// link capacities across restarts).
async fn demo_node(
    name: &str,
    links: &[EmuLink],
    secret: Option<&str>,
    lend: Option<bool>,
    peers: Vec<String>,
    relay: Option<std::net::SocketAddr>,
) -> anyhow::Result<run::Running> {
    let mut cfg = Config::build(
        FileConfig::default(),
        Overrides {
            listen: Some("127.0.0.1:0".parse()?),
            api: Some("127.0.0.1:0".parse()?),
            probe_target: Some("none".into()),
            no_mdns: true,
            name: Some(name.to_string()),
            secret: secret.map(crate::config::Secret::new),
            peer_listen: Some(if lend == Some(true) {
                "127.0.0.1:0".into()
            } else {
                "off".into()
            }),
            peers,
            relays: relay.iter().map(|r| r.to_string()).collect(),
            bond: if relay.is_some() { vec!["all".into()] } else { vec![] },
            ..Default::default()
        },
    )?;
    // Only the emulated links: never the machine's own interfaces.
    cfg.uplinks.clear();
    cfg.discover = false;
    let sources = links
        .iter()
        .map(|l| {
            Source::new(
                l.name().to_string(),
                SourceKind::Emulated(l.clone()),
                Tier::Primary,
                None,
                None,
            )
        })
        .collect();
    Ok(run::start(
        cfg,
        Extras {
            sources,
            no_store: true,
        },
    )
    .await?)
}

/// Starts a relay on loopback and a node bonding every link to it, then downloads `size`
/// bytes as one TCP stream through the node's proxy. Returns bytes per second.
async fn bond_stream(links: &[EmuLink], origin: std::net::SocketAddr, size: u64) -> anyhow::Result<f64> {
    const SECRET: &str = "demo bond secret";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let relay_addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let relay = crate::relay::Relay::new(
        crate::relay::RelayConfig {
            psk: crate::noise::derive_psk(SECRET),
            identity: crate::noise::Identity::generate(),
            // The demo's origin is on loopback; a real relay refuses that.
            allow: vec![crate::policy::Pattern::parse("127.0.0.0/8").map_err(anyhow::Error::msg)?],
        },
        stop.clone(),
    );
    tokio::spawn(crate::relay::serve(listener, relay));
    let node = demo_node("home", links, Some(SECRET), Some(false), vec![], Some(relay_addr)).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while crate::bond::relays_json(&node.node)[0]["paths"]
        .as_array()
        .map_or(0, Vec::len)
        < links.len()
    {
        anyhow::ensure!(Instant::now() < deadline, "the bond's paths did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("http://{origin}/file/{size}");
    let t = Instant::now();
    let n = get_count(
        tokio::net::TcpStream::connect(node.proxy_addr).await?,
        &origin.to_string(),
        &url,
        None,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(n == size, "the bond delivered {n} of {size} bytes");
    let rate = size as f64 / t.elapsed().as_secs_f64();
    node.shutdown().await;
    stop.cancel();
    Ok(rate)
}

/// Runs `n` downloads of `path` at once through the proxy; returns (bytes, seconds until the last finished).
async fn parallel(
    proxy: std::net::SocketAddr,
    origin: std::net::SocketAddr,
    n: usize,
    path: &str,
) -> anyhow::Result<(u64, f64)> {
    let start = Instant::now();
    let url = format!("http://{origin}{path}");
    let results = futures::future::join_all((0..n).map(|_| {
        let url = url.clone();
        async move {
            let s = tokio::net::TcpStream::connect(proxy).await?;
            get_count(s, &origin.to_string(), &url, None)
                .await
                .map_err(anyhow::Error::msg)
        }
    }))
    .await;
    let mut total = 0;
    for r in results {
        total += r?;
    }
    Ok((total, start.elapsed().as_secs_f64()))
}

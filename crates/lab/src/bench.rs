//! `lab bench`: booster against the link sum and the anchors, side by side in one run on the
//! same namespaces.
//!
//! For a profile with one node (`home`, `skewed`, `lossy`), per run (default 3, `--quick` 1):
//! 1. the **link sum**: each uplink alone, all at once, for a fixed time;
//! 2. **booster**: 12 parallel 10 MB downloads through a node's SOCKS5 proxy (after one
//!    warm-up round), with the bytes each uplink carried;
//! 3. **`booster get`** over every uplink, one file, SHA-256 checked, with its tail rate (the
//!    rate of the last 10% of bytes, from interface counters sampled every 100 ms);
//! 4. **aria2c** `--multiple-interface` over every uplink, one file (anchor), with its tail;
//! 5. **kernel MPTCP** via `mptcpize`, one stream (anchor);
//! 6. **aggligator** `agg-tunnel`, one stream (anchor, when installed: [`aggligator`]);
//! 7. **booster's bond**: one stream through a relay ([`bond`]).
//!
//! Then, once: the failover runs of MPTCP and of the bond (one uplink blackholed 10 s), the
//! bond's redundant-mode round trips against each uplink alone, and (`home` only) on
//! loopback the proxy overhead (1 GB direct vs through a node), the added connect latency and
//! the memory of 10,000 idle proxied connections.
//!
//! `peers` ([`peers::phase`]): the phones lend their 4G uplinks to home over the peer network;
//! per run the link sum (each uplink from its own node), 12 parallel downloads through home's
//! proxy, one `booster get --node` download, and one stream pinned to `phone-2/4g` through
//! home's proxy against the same file fetched on phone-2 directly.
//!
//! Each profile's results go to `docs/bench-<profile>.json`; `docs/benchmarks.md` is rebuilt
//! from all of those, so running one profile keeps the others' sections.
//!
//! Every child (nginx, booster, curl, aria2c) is a [`procs::Proc`] killed on drop, every wait
//! is bounded, Ctrl-C unwinds through the guards, and the [`Lab`] deletes its namespaces on drop.
//! Results go to stdout, `docs/bench-<profile>.json`, `docs/benchmarks.md` and
//! `docs/bench-<profile>.svg`.

mod aggligator;
pub(crate) mod bond;
mod files;
mod gateway;
pub(crate) mod loopback;
pub(crate) mod net;
mod peers;
pub(crate) mod procs;
mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::{self, Netns};
use crate::profile::{self, Profile};
use crate::topology::Lab;
use files::{FileSet, Kind, Server, MB};
use procs::{Proc, TempDir};
use report::{Failover, Loopback, Results, Row};

/// `lab bench` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Lab profile: home, peers, skewed or lossy.
    #[arg(default_value = "home")]
    pub profile: String,
    /// Runs of each measurement (the median is reported) [default: 3, or 1 with --quick].
    #[arg(long)]
    pub runs: Option<usize>,
    /// One run, shorter link-sum window and smaller aria2c/MPTCP files.
    #[arg(long)]
    pub quick: bool,
    /// Where to write the report (the plot goes next to it as bench-<profile>.svg).
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
    /// The booster binary to measure.
    #[arg(long, default_value = "target/release/booster")]
    pub booster: PathBuf,
}

/// Parallel downloads through booster, and their sizes.
const PARALLEL: usize = 12;
const FILE_MB: u64 = 10;
const WARM_MB: u64 = 2;
/// Idle connections held open through the node on loopback.
const IDLE_CONNS: usize = 10_000;
/// Connect-latency pairs (and unrecorded warm-up pairs).
const LATENCY_PAIRS: usize = 200;
const LATENCY_WARM: usize = 20;

pub(crate) struct Plan {
    runs: usize,
    alone: Duration,
    big_mb: u64,
}

/// Runs the bench; prints the table and writes the report.
pub fn run(args: BenchArgs) -> Result<()> {
    let started = Instant::now();
    let prof = profile::profile(&args.profile).ok_or_else(|| {
        anyhow!(
            "unknown profile `{}` (try: {})",
            args.profile,
            profile::PROFILE_NAMES.join(", ")
        )
    })?;
    let plan = Plan {
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        alone: Duration::from_secs(if args.quick { 8 } else { 15 }),
        big_mb: if args.quick { 20 } else { 50 },
    };
    let single = prof.nodes.len() == 1;
    netns::check_prereqs()?;
    procs::install_interrupt_handler();
    let nofile = procs::raise_nofile(65_536).context("raising RLIMIT_NOFILE")?;

    let booster = if args.booster.is_file() {
        Some(args.booster.canonicalize()?)
    } else {
        bail!(
            "{} not found: build it first with cargo build --release -p booster",
            args.booster.display()
        );
    };
    let tool = |t: &str, what: &str| -> Option<String> {
        if procs::have(t) {
            None
        } else {
            let why = format!("`{t}` is not installed (apt-get install -y {what})");
            println!("skipping what needs {t}: {why}");
            Some(why)
        }
    };
    let no_curl = tool("curl", "curl");
    let no_nginx = tool("nginx", "nginx-light");
    let no_aria2 = tool("aria2c", "aria2");
    let no_mptcpize = tool("mptcpize", "mptcpize");

    let work = TempDir::new(prof.name)?;
    let kind = if no_nginx.is_none() { Kind::Nginx } else { Kind::Ours };
    let origin_desc = match kind {
        Kind::Nginx => nginx_version(),
        Kind::Ours => "the lab origin (nginx is not installed)".to_owned(),
    };
    // Tokio runtime for our in-process origin (fallback) and nothing else.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _rt = rt.enter();

    let mut wanted: Vec<(String, u64)> = vec![("f1g".into(), 1000 * MB), ("f50m".into(), 50 * MB)];
    if plan.big_mb != 50 {
        wanted.push((format!("f{}m", plan.big_mb), plan.big_mb * MB));
    }
    if !single && plan.big_mb != peers::PINNED_MB {
        wanted.push((format!("f{}m", peers::PINNED_MB), peers::PINNED_MB * MB));
    }
    for i in 0..PARALLEL {
        wanted.push((format!("f{FILE_MB}m-{i}"), FILE_MB * MB));
        wanted.push((format!("f{WARM_MB}m-{i}"), WARM_MB * MB));
    }
    println!(
        "lab bench {}: {} run(s); origin: {origin_desc}; open-file limit {nofile}",
        prof.name, plan.runs
    );
    let t = Instant::now();
    let files = files::make(&work.path().join("www"), &wanted, kind == Kind::Nginx)?;
    if kind == Kind::Nginx {
        println!(
            "wrote {} files with known SHA-256 in {:.1} s",
            files.files.len(),
            t.elapsed().as_secs_f64()
        );
    }

    let mut results = Results {
        profile: prof.clone(),
        runs: plan.runs,
        quick: args.quick,
        command: command_line(),
        date: date(),
        machine: machine(),
        origin: origin_desc.clone(),
        booster_version: booster
            .as_deref()
            .map(booster_version)
            .unwrap_or_else(|| "not used".into()),
        link_names: prof
            .links()
            .map(|(n, l)| {
                if single {
                    l.name.to_owned()
                } else {
                    format!("{}/{}", n.name, l.name)
                }
            })
            .collect(),
        alone: Vec::new(),
        alone_secs: plan.alone.as_secs(),
        rows: Vec::new(),
        booster_splits: Vec::new(),
        booster_parallel: PARALLEL,
        booster_file_mb: FILE_MB,
        mptcp_splits: Vec::new(),
        aria_splits: Vec::new(),
        get_splits: Vec::new(),
        pinned_source: String::new(),
        pinned: Vec::new(),
        failover: Err("not run".into()),
        bond_failover: Err("not run".into()),
        agg_failover: Err("not run".into()),
        bond_splits: Vec::new(),
        redundant: Err("not run".into()),
        loopback: Err("not run".into()),
        notes: Vec::new(),
        elapsed_secs: 0.0,
    };

    let samples = if single {
        lab_phase(
            &prof,
            &plan,
            &files,
            work.path(),
            kind,
            booster.as_deref(),
            &mut results,
            Tools {
                curl: no_curl.clone(),
                aria2: no_aria2,
                mptcpize: no_mptcpize,
            },
        )?
    } else {
        if let Some(why) = &no_curl {
            bail!("the `{}` bench needs curl: {why}", prof.name);
        }
        let bin = booster.as_deref().ok_or_else(|| anyhow!("no booster binary"))?;
        peers::phase(&prof, &plan, &files, work.path(), kind, bin, &mut results)?
    };

    // The loopback figures do not depend on the profile: measured with `home` only.
    results.loopback = match (&booster, &no_curl) {
        _ if prof.name != "home" => Err("not run".into()),
        (None, _) => Err("no booster binary".into()),
        (_, Some(why)) => Err(why.clone()),
        (Some(b), None) => {
            println!("loopback: proxy overhead, connect latency, {IDLE_CONNS} idle connections ...");
            loopback_phase(b, &files, kind, work.path(), plan.runs).map_err(|e| {
                procs::check_interrupt()
                    .err()
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| {
                        println!("  loopback measurements failed: {e:#}");
                        format!("failed: {e:#}")
                    })
            })
        }
    };
    procs::check_interrupt()?;

    add_notes(&mut results, &plan);
    results.elapsed_secs = started.elapsed().as_secs_f64();
    results.print();
    let svg = args
        .out
        .parent()
        .unwrap_or(Path::new(""))
        .join(format!("bench-{}.svg", prof.name));
    results.write(&args.out, &svg, &samples)?;
    println!("\nwrote {} and {}", args.out.display(), svg.display());
    Ok(())
}

/// Why a tool-dependent measurement is skipped (None = the tool is there).
struct Tools {
    curl: Option<String>,
    aria2: Option<String>,
    mptcpize: Option<String>,
}

/// Everything on the namespace lab of a single-node profile (`peers` is [`peers::phase`]).
/// Returns the counter samples of the plotted booster round.
#[allow(clippy::too_many_arguments)]
fn lab_phase(
    prof: &Profile,
    plan: &Plan,
    files: &FileSet,
    work: &Path,
    kind: Kind,
    booster: Option<&Path>,
    res: &mut Results,
    tools: Tools,
) -> Result<net::Samples> {
    println!("building the `{}` lab ...", prof.name);
    let lab = Lab::build_with(prof, gateway::lab_options(prof))?;
    let inet = lab.internet_ns().to_owned();
    let origin = net::origin_addr(&lab, 80);
    let base = format!("http://{}", lab.origin_ip());
    let _origin = files::start(kind, &inet, origin.into(), files, &work.join("nginx"))?;
    let _probe = net::answer_default_probe(&lab)?;
    let dl = work.join("dl");
    std::fs::create_dir_all(&dl)?;
    let home_ifaces: Vec<String> = lab.uplinks().iter().map(|u| u.iface.clone()).collect();

    // Rows, in table order.
    let booster_what = format!("booster: {PARALLEL} parallel {FILE_MB} MB downloads through its SOCKS5 proxy");
    let aria_what = format!(
        "aria2c --multiple-interface, -x16 -s16 -k1M, one {} MB download",
        plan.big_mb
    );
    let mptcp_what = format!("kernel MPTCP (mptcpize curl ↔ nginx), one {} MB stream", plan.big_mb);
    let mut booster_row = Row::new("booster", &booster_what);
    let mut aria_row = Row::new("aria2c", &aria_what);
    let mut aria_tail = Row::new("aria2c-tail", "  aria2c's last 10% of bytes (tail rate)");
    let mut mptcp_row = Row::new("mptcp", &mptcp_what);
    let mut get_row = Row::new(
        "get",
        &format!("one {} MB download over every link (`booster get`)", plan.big_mb),
    );
    let mut get_tail = Row::new("get-tail", "  its last 10% of bytes (tail rate)");
    let mut bond_row = Row::new(
        "bond",
        &format!("booster's bond (`--bond all`): one {} MB TCP stream", plan.big_mb),
    );
    let mut bond_tail = Row::new("bond-tail", "  its last 10% of bytes (tail rate)");
    let mut agg_row = match aggligator::version() {
        Ok(v) => Row::new(
            "aggligator",
            &format!("{v} (aggligator, anchor), one {} MB stream", plan.big_mb),
        ),
        Err(why) => {
            println!("skipping aggligator: {why}");
            let mut r = Row::new("aggligator", "aggligator `agg-tunnel` (anchor), one stream");
            r.skip = Some(why);
            r
        }
    };
    match (&tools.curl, booster) {
        (_, None) => get_row.skip = Some("no booster binary".into()),
        (_, Some(bin)) => {
            if let Err(why) = has_get(bin) {
                println!("skipping booster get: {why}");
                get_row.skip = Some(why);
            }
        }
    }

    // MPTCP: endpoints, limits, a second origin on port 81 under mptcpize.
    let mut mptcp_server: Option<Server> = None;
    {
        if let Some(why) = &tools.mptcpize {
            mptcp_row.skip = Some(why.clone());
        } else {
            let r = net::setup_mptcp(&lab).and_then(|()| {
                let listen: SocketAddr = net::origin_addr(&lab, 81).into();
                let w = work.join("nginx-mptcp");
                Ok(match kind {
                    Kind::Nginx => Server::Nginx(files::start_nginx(&inet, listen, files, &w, true)?),
                    Kind::Ours => Server::OursChild(files::start_ours_child(&inet, listen, &w, true)?),
                })
            });
            match r {
                Ok(s) => {
                    println!(
                        "MPTCP: {} under mptcpize on port 81, one subflow endpoint per uplink",
                        s.describe()
                    );
                    mptcp_server = Some(s);
                }
                Err(e) => {
                    println!("skipping MPTCP: {e:#}");
                    mptcp_row.skip = Some(format!("MPTCP could not be set up: {e:#}"));
                }
            }
        }
        if let Some(why) = &tools.aria2 {
            aria_row.skip = Some(why.clone());
        }
    }

    // The booster node, warmed up once.
    let mut node: Option<net::Booster> = None;
    {
        match (&tools.curl, booster) {
            (Some(why), _) => booster_row.skip = Some(why.clone()),
            (None, None) => booster_row.skip = Some("no booster binary".into()),
            (None, Some(bin)) => {
                let home = lab.node_ns("home").to_owned();
                let data = work.join("booster-data");
                std::fs::create_dir_all(&data)?;
                println!("starting booster in the home namespace ...");
                let mut b = net::Booster::start(
                    bin,
                    &home,
                    &home_ifaces,
                    &[],
                    home_ifaces.len(),
                    net::lo(1080),
                    net::lo(4884),
                    &origin.to_string(),
                    &data,
                    &work.join("booster.log"),
                )?;
                let names: Vec<String> = (0..PARALLEL).map(|i| format!("f{WARM_MB}m-{i}")).collect();
                let r = net::parallel_round(&home, b.proxy, &base, files, &names, &dl, Duration::from_secs(120))
                    .with_context(|| format!("booster warm-up round\n{}", b.proc.log_tail()))?;
                println!(
                    "  warm-up: {PARALLEL} × {WARM_MB} MB in {:.1} s ({:.2} MB/s)",
                    r.secs,
                    r.bytes as f64 / r.secs / 1e6
                );
                b.proc.ensure_running()?;
                node = Some(b);
            }
        }
    }

    // The transparent gateway (`home`): a client behind home with no proxy setting.
    let mut gw = gateway::Phase::start(&lab, booster, &tools.curl, files, &base, work, &dl, plan)?;

    // The bond: a relay next to the origin, a second node bonding through it, and an echo
    // server for redundant mode's round trips.
    let echo = net::origin_addr(&lab, bond::ECHO_PORT);
    let mut bonder: Option<bond::BondNode> = None;
    let mut _echo: Option<bond::Echo> = None;
    match (&tools.curl, booster) {
        (Some(why), _) => bond_row.skip = Some(why.clone()),
        (None, None) => bond_row.skip = Some("no booster binary".into()),
        (None, Some(bin)) => {
            println!("starting booster relay (internet) and a bonding node (home) ...");
            let started = bond::BondNode::start(bin, &lab, &home_ifaces, work).and_then(|b| {
                let name = format!("f{FILE_MB}m-0");
                let url = format!("{base}{}", files.path(&name));
                let cmd = b.curl_cmd(&url, &dl, &name, 120);
                let (rate, secs) = net::timed_download(
                    cmd,
                    "bonded curl (warm-up)",
                    files,
                    &name,
                    &dl,
                    Duration::from_secs(130),
                )
                .with_context(|| b.log_tails())?;
                println!(
                    "  warm-up: one {FILE_MB} MB stream in {secs:.1} s ({:.2} MB/s)",
                    rate / 1e6
                );
                Ok(b)
            });
            match started {
                Ok(b) => bonder = Some(b),
                Err(e) => {
                    procs::check_interrupt()?;
                    println!("  the bond could not be measured: {e:#}");
                    bond_row.skip = Some(format!("failed: {e:#}"));
                }
            }
            match bond::Echo::start(&inet, echo) {
                Ok(e) => _echo = Some(e),
                Err(e) => res.redundant = Err(format!("echo server: {e:#}")),
            }
        }
    }

    // The aggligator anchor: a tunnel server next to the origin, its client in home.
    let mut agg: Option<aggligator::Aggligator> = None;
    if let (None, None) = (&agg_row.skip, &tools.curl) {
        println!("starting agg-tunnel server (internet) and client (home) ...");
        let started = aggligator::Aggligator::start(&lab, work).and_then(|a| {
            let name = format!("f{FILE_MB}m-0");
            let cmd = a.curl_cmd(&files.path(&name), &dl, &name, 120);
            let (rate, secs) = net::timed_download(
                cmd,
                "curl through agg-tunnel (warm-up)",
                files,
                &name,
                &dl,
                Duration::from_secs(130),
            )
            .with_context(|| a.log_tails())?;
            println!(
                "  warm-up: one {FILE_MB} MB stream in {secs:.1} s ({:.2} MB/s)",
                rate / 1e6
            );
            Ok(a)
        });
        match started {
            Ok(a) => agg = Some(a),
            Err(e) => {
                procs::check_interrupt()?;
                println!("  aggligator could not be measured: {e:#}");
                agg_row.skip = Some(format!("failed: {e:#}"));
            }
        }
    }

    let mut rounds: Vec<(f64, net::Samples)> = Vec::new();
    for run in 0..plan.runs {
        procs::check_interrupt()?;
        println!("run {}/{}", run + 1, plan.runs);
        let alone_path = files.path("f1g");
        let rates = net::link_sum(&lab, origin, &alone_path, plan.alone)?;
        let parts: Vec<String> = lab
            .uplinks()
            .iter()
            .zip(&rates)
            .map(|(u, r)| format!("{} {:.2}", u.iface, r / 1e6))
            .collect();
        println!(
            "  link sum {:.2} MB/s ({})",
            rates.iter().sum::<f64>() / 1e6,
            parts.join(" + ")
        );
        res.alone.push(rates);

        if let Some(b) = node.as_mut() {
            let home = b.ns.clone();
            let names: Vec<String> = (0..PARALLEL).map(|i| format!("f{FILE_MB}m-{i}")).collect();
            let before = net::rx_counters(&lab)?;
            let sampler = net::Sampler::start(lab.uplinks());
            let r = net::parallel_round(&home, b.proxy, &base, files, &names, &dl, Duration::from_secs(240));
            let samples = sampler.finish();
            let after = net::rx_counters(&lab)?;
            record_round(
                r,
                &before,
                &after,
                samples,
                &mut b.proc,
                &mut booster_row,
                &mut res.booster_splits,
                &mut rounds,
            )?;
        }
        gw.run(&lab, files, &base, &dl)?;

        if let (Some(bin), None) = (booster, &get_row.skip) {
            let name = format!("f{}m", plan.big_mb);
            let url = format!("{base}{}", files.path(&name));
            let sha = files.get(&name).sha256.clone().unwrap_or_default();
            let cmd = net::booster_get_cmd(bin, lab.node_ns("home"), &home_ifaces, None, &url, &dl, &name, &sha);
            match net::sampled_download(
                lab.uplinks(),
                cmd,
                "booster get",
                files,
                &name,
                &dl,
                Duration::from_secs(300),
            ) {
                Ok(s) => {
                    print_sampled("booster get", &s);
                    get_row.samples.push(s.rate);
                    if let Some(t) = &s.tail {
                        get_tail.samples.push(t.rate);
                    }
                    res.get_splits.push(s.split);
                }
                Err(e) => {
                    procs::check_interrupt()?;
                    println!("  booster get failed: {e:#}");
                    get_row.skip = Some(format!("failed: {e:#}"));
                }
            }
        }

        if aria_row.skip.is_none() {
            let name = format!("f{}m", plan.big_mb);
            let url = format!("{base}{}", files.path(&name));
            let cmd = net::aria2_cmd(lab.node_ns("home"), &home_ifaces, &url, &dl, &name);
            match net::sampled_download(
                lab.uplinks(),
                cmd,
                "aria2c",
                files,
                &name,
                &dl,
                Duration::from_secs(300),
            ) {
                Ok(s) => {
                    print_sampled("aria2c", &s);
                    aria_row.samples.push(s.rate);
                    if let Some(t) = &s.tail {
                        aria_tail.samples.push(t.rate);
                    }
                    res.aria_splits.push(s.split);
                }
                Err(e) => {
                    procs::check_interrupt()?;
                    println!("  aria2c failed: {e:#}");
                    aria_row.skip = Some(format!("failed: {e:#}"));
                }
            }
        }

        if mptcp_server.is_some() && mptcp_row.skip.is_none() {
            let name = format!("f{}m", plan.big_mb);
            let url = format!("http://{}{}", net::origin_addr(&lab, 81), files.path(&name));
            let cmd = net::mptcp_curl_cmd(lab.node_ns("home"), &url, &dl, &name, 300);
            let before = net::rx_counters(&lab)?;
            match net::timed_download(cmd, "mptcpize curl", files, &name, &dl, Duration::from_secs(300)) {
                Ok((rate, secs)) => {
                    let (split, spread) = net::spread(&before, &net::rx_counters(&lab)?);
                    println!(
                        "  MPTCP {:.2} MB/s ({:.1} s; per uplink MB: {}){}",
                        rate / 1e6,
                        secs,
                        split
                            .iter()
                            .map(|b| format!("{:.1}", *b as f64 / 1e6))
                            .collect::<Vec<_>>()
                            .join(" / "),
                        if spread {
                            ""
                        } else {
                            " — only one uplink carried data: MPTCP fell back to TCP?"
                        }
                    );
                    mptcp_row.samples.push(rate);
                    res.mptcp_splits.push(split);
                }
                Err(e) => {
                    procs::check_interrupt()?;
                    println!("  MPTCP failed: {e:#}");
                    mptcp_row.skip = Some(format!("failed: {e:#}"));
                }
            }
        }

        if let (Some(a), None) = (agg.as_mut(), &agg_row.skip) {
            let name = format!("f{}m", plan.big_mb);
            let cmd = a.curl_cmd(&files.path(&name), &dl, &name, 300);
            match net::sampled_download(
                lab.uplinks(),
                cmd,
                "curl through agg-tunnel",
                files,
                &name,
                &dl,
                Duration::from_secs(310),
            ) {
                Ok(s) => {
                    print_sampled("aggligator", &s);
                    agg_row.samples.push(s.rate);
                }
                Err(e) => {
                    procs::check_interrupt()?;
                    println!("  aggligator failed: {e:#}\n{}", a.log_tails());
                    agg_row.skip = Some(format!("failed: {e:#}"));
                }
            }
        }

        if let (Some(b), None) = (bonder.as_mut(), &bond_row.skip) {
            let name = format!("f{}m", plan.big_mb);
            let url = format!("{base}{}", files.path(&name));
            let cmd = b.curl_cmd(&url, &dl, &name, 300);
            match net::sampled_download(
                lab.uplinks(),
                cmd,
                "bonded curl",
                files,
                &name,
                &dl,
                Duration::from_secs(310),
            ) {
                Ok(s) => {
                    print_sampled("bond (one stream)", &s);
                    bond_row.samples.push(s.rate);
                    if let Some(t) = &s.tail {
                        bond_tail.samples.push(t.rate);
                    }
                    res.bond_splits.push(s.split);
                }
                Err(e) => {
                    procs::check_interrupt()?;
                    println!("  bonded stream failed: {e:#}\n{}", b.log_tails());
                    bond_row.skip = Some(format!("failed: {e:#}"));
                    b.node.ensure_running()?;
                }
            }
        }
    }

    // False alarms: stalls declared while no link was impaired (warm-up and the runs).
    let clean_stalls = bonder.as_ref().map(bond::BondNode::stalls);

    // Failover: MPTCP, aggligator, then the bond, on the same link.
    res.failover = if mptcp_server.is_some() && mptcp_row.skip.is_none() {
        let url = format!("http://{}{}", net::origin_addr(&lab, 81), files.path("f50m"));
        let cmd = net::mptcp_curl_cmd(lab.node_ns("home"), &url, &dl, "f50m", 180);
        failover(&lab, files, cmd, "kernel MPTCP", &dl, res)
    } else {
        Err(mptcp_row.skip.clone().unwrap_or_else(|| "MPTCP not available".into()))
    };
    res.agg_failover = match (&agg, &agg_row.skip) {
        (Some(a), None) => {
            let cmd = a.curl_cmd(&files.path("f50m"), &dl, "f50m", 180);
            let r = failover(&lab, files, cmd, "aggligator", &dl, res);
            if r.is_err() {
                println!("{}", a.log_tails());
            }
            r
        }
        (_, Some(why)) => Err(why.clone()),
        (None, None) => Err("no tunnel".into()),
    };
    drop(agg);
    res.bond_failover = match (&bonder, &bond_row.skip) {
        (Some(b), None) => {
            let url = format!("{base}{}", files.path("f50m"));
            let cmd = b.curl_cmd(&url, &dl, "f50m", 180);
            let r = failover(&lab, files, cmd, "booster bond", &dl, res);
            if r.is_err() {
                println!("{}", b.log_tails());
            }
            r
        }
        (_, Some(why)) => Err(why.clone()),
        (None, None) => Err("no bonding node".into()),
    };
    if let (Some(b), true) = (&mut bonder, res.redundant.is_err()) {
        if res.redundant.as_ref().err().is_some_and(|e| e == "not run") {
            println!(
                "redundant mode: {} round trips of {} bytes through the bond, then over each uplink ...",
                bond::RTT_N,
                bond::RTT_BYTES
            );
            res.redundant = b
                .node
                .ensure_running()
                .and_then(|()| bond::redundant_latency(&lab, b, echo))
                .map_err(|e| {
                    println!("  redundant-mode measurement failed: {e:#}");
                    format!("failed: {e:#}")
                });
            if let Ok(r) = &res.redundant {
                use loopback::percentile as pc;
                let best = r
                    .direct
                    .iter()
                    .find(|d| d.0 == r.best)
                    .map(|d| d.2.clone())
                    .unwrap_or_default();
                println!(
                    "  through the bond p50 {:.1} ms p99 {:.1} ms; {} alone p50 {:.1} ms p99 {:.1} ms",
                    pc(&r.bond_ms, 50.0),
                    pc(&r.bond_ms, 99.0),
                    r.best,
                    pc(&best, 50.0),
                    pc(&best, 99.0)
                );
            }
        }
    }
    if let Some(mut b) = bonder.take() {
        let (clean, all) = (clean_stalls.unwrap_or_default(), b.stalls());
        res.notes.push(format!(
            "Bond paths dropped as dead (no ack for 5 s: the connection is closed, its frames go \
             on the others, and it is redialled; a shorter stall only copies its frames to the \
             others), from the node's and the relay's logs: {} at the node and {} at the relay \
             during the {} clean bonded streams (no link impaired: each is a false alarm); {} \
             and {} in all, failover and round trips included.",
            clean.0,
            clean.1,
            bond_row.samples.len() + 1,
            all.0,
            all.1
        ));
        b.node.kill();
        b.relay.kill();
    }

    if let Some(mut b) = node.take() {
        if let Ok(s) = b.status() {
            if let Some(src) = s.get("sources") {
                res.notes.push(format!(
                    "booster's view of its uplinks at the end of the lab runs (`/api/status`): `{}`",
                    summarize_sources(src)
                ));
            }
        }
        b.proc.kill();
    }
    let gateway_rows = gw.finish(res);
    drop(mptcp_server);
    println!("tearing the lab down ...");
    drop(lab);

    for r in [
        booster_row,
        get_row,
        get_tail,
        aria_row,
        aria_tail,
        mptcp_row,
        agg_row,
        bond_row,
        bond_tail,
    ]
    .into_iter()
    .chain(gateway_rows)
    {
        if !r.samples.is_empty() || (r.skip.is_some() && !r.what.starts_with("  ")) {
            res.rows.push(r);
        }
    }

    // Plot the median booster round.
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(rounds
        .get(rounds.len().saturating_sub(1) / 2)
        .map(|r| r.1.clone())
        .unwrap_or_default())
}

/// One failover run of `cmd` (a download of `f50m` into `dl`): the fastest uplink (by this
/// bench's median rate alone, the worst one to lose) blackholed for 10 s from t = 3 s.
fn failover(
    lab: &Lab,
    files: &FileSet,
    cmd: std::process::Command,
    who: &str,
    dl: &Path,
    res: &Results,
) -> Result<Failover, String> {
    let n = res.link_names.len();
    let med: Vec<f64> = (0..n)
        .map(|i| report::median(&res.alone.iter().map(|r| r[i]).collect::<Vec<_>>()))
        .collect();
    let i = (0..n).max_by(|a, b| med[*a].total_cmp(&med[*b])).unwrap_or(0);
    let up = lab.uplinks()[i].clone();
    let sum: f64 = med.iter().sum();
    let size = files.get("f50m").size as f64;
    let hole = Duration::from_secs(10);
    println!(
        "failover: {who}, 50 MB, {} blackholed for 10 s from t = 3 s ...",
        up.iface
    );
    let r = bond::failover_run(
        lab,
        &up,
        cmd,
        &format!("{who} (failover)"),
        files,
        "f50m",
        dl,
        Duration::from_secs(3),
        hole,
        Duration::from_secs(190),
    );
    match r {
        Ok(run) => {
            // Ideal: the sum rate except the dead link's share for 10 s.
            let ideal = (size + med[i] * hole.as_secs_f64()) / sum;
            println!(
                "  {:.1} s (ideal {ideal:.1} s), longest stall {:.2} s from t = {:.1} s, file intact",
                run.secs, run.stall, run.stall_at
            );
            Ok(Failover {
                who: who.to_owned(),
                link: up.iface.clone(),
                size_mb: size / 1e6,
                secs: run.secs,
                ideal_secs: ideal,
                stall_secs: run.stall,
                stall_at: run.stall_at,
            })
        }
        Err(e) => {
            println!("  failover run failed: {e:#}");
            Err(format!("failed: {e:#}"))
        }
    }
}

/// The loopback measurements, in a fresh namespace with only `lo`.
fn loopback_phase(booster: &Path, files: &FileSet, kind: Kind, work: &Path, runs: usize) -> Result<Loopback> {
    let ns = Netns::create(&netns::ns_name(&netns::unique_id(), "loop"))?;
    let name = ns.name().to_owned();
    let origin_addr = net::lo(8080);
    let _origin = files::start(kind, &name, origin_addr, files, &work.join("nginx-loop"))?;
    let data = work.join("booster-loop");
    std::fs::create_dir_all(&data)?;
    let mut node = net::Booster::start(
        booster,
        &name,
        &["lo".to_owned()],
        &[],
        1,
        net::lo(1080),
        net::lo(4884),
        &origin_addr.to_string(),
        &data,
        &work.join("booster-loop.log"),
    )?;
    let load = load_average();
    let mut out = Loopback {
        origin: match kind {
            Kind::Nginx => "nginx".into(),
            Kind::Ours => "the lab origin".into(),
        },
        ..Default::default()
    };
    out.notes.push(format!(
        "Load average when the loopback measurements started: {} (2 CPUs; other engineers' builds \
         and tests share this machine, which shows most in these CPU-bound figures).",
        load
    ));
    let url = format!("http://{origin_addr}{}", files.path("f1g"));
    let size = files.get("f1g").size;
    let get = |proxy: Option<SocketAddr>| -> Result<f64> {
        let mut cmd = procs::curl(&name);
        if let Some(p) = proxy {
            cmd.arg("-x").arg(format!("socks5h://{p}"));
        }
        cmd.args(["--max-time", "120", "-o", "/dev/null", "-w", procs::CURL_W])
            .arg(&url);
        let mut p = Proc::spawn_piped("curl (loopback)", &mut cmd)?;
        let st = p.wait_timeout(Duration::from_secs(130))?;
        let (o, e) = p.output();
        anyhow::ensure!(st.success(), "curl failed ({st}): {}", e.trim());
        let (n, secs, code) = procs::parse_curl_w(&o)?;
        anyhow::ensure!(code == 200 && n == size, "curl got HTTP {code}, {n} of {size} bytes");
        Ok(n as f64 / secs)
    };
    // The anchor: fast-socks5 1.0 in the same namespace, measured in the same rounds.
    // A comparison only: without it the phase still measures booster.
    let anchor = crate::load::Anchor::start(Some(&name))
        .inspect_err(|e| println!("  fast-socks5 anchor not started: {e:#}"))
        .ok();
    // Warm the page cache and every path once, unrecorded.
    get(None)?;
    for _ in 0..runs {
        let d = get(None)?;
        let p = get(Some(node.proxy)).with_context(|| node.proc.log_tail())?;
        println!(
            "  1 GB: direct {:.2} GB/s, through booster {:.2} GB/s",
            d / 1e9,
            p / 1e9
        );
        out.direct.push(d);
        out.proxied.push(p);
        if let Some(anchor) = &anchor {
            let a = get(Some(anchor.proxy)).context("through fast-socks5")?;
            println!("  1 GB through fast-socks5 {:.2} GB/s", a / 1e9);
            out.anchor.push(a);
        }
    }

    let holder = loopback::Holder::start(&name, std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9000))?;
    out.latency = loopback::connect_latency(&name, node.proxy, holder.addr, LATENCY_WARM, LATENCY_PAIRS)
        .with_context(|| node.proc.log_tail())?;
    if let Some(anchor) = anchor {
        out.anchor_latency = loopback::connect_latency(&name, anchor.proxy, holder.addr, LATENCY_WARM, LATENCY_PAIRS)
            .context("connects through fast-socks5")?;
    }
    let added =
        |pairs: &[(f64, f64)], p: f64| loopback::percentile(&pairs.iter().map(|(d, x)| x - d).collect::<Vec<_>>(), p);
    println!(
        "  added connect latency: p50 {:.0} µs, p99 {:.0} µs (fast-socks5: {:.0} / {:.0} µs)",
        added(&out.latency, 50.0),
        added(&out.latency, 99.0),
        added(&out.anchor_latency, 50.0),
        added(&out.anchor_latency, 99.0)
    );
    procs::sleep(Duration::from_millis(500))?;
    holder.clear();
    procs::sleep(Duration::from_millis(500))?;

    let idle = idle_connections(&name, &mut node, &holder, &mut out);
    if let Err(e) = idle {
        procs::check_interrupt()?;
        println!("  idle-connection test failed: {e:#}");
        out.idle_error = Some(format!("{e:#}"));
    }
    node.proc.kill();
    drop(holder);
    drop(ns);
    Ok(out)
}

/// Opens as many idle proxied connections as the open-file limit allows (10,000 when it can)
/// and records the node's RSS before, with them open, and after closing them.
fn idle_connections(name: &str, node: &mut net::Booster, holder: &loopback::Holder, out: &mut Loopback) -> Result<()> {
    // Two descriptors per proxied connection, in the node and in this process (client side
    // plus the holder's side); without CAP_SYS_RESOURCE the hard limit cannot be raised. The
    // node holds as many as `booster start` fits to the limit: (limit − 512) / 2, see
    // `connections_for_nofile` in crates/booster/src/cmd/start.rs.
    let hard = procs::nofile_hard();
    let n = IDLE_CONNS.min((hard.saturating_sub(512) / 2) as usize);
    if n < IDLE_CONNS {
        let why = format!(
            "{n} instead of {IDLE_CONNS} connections: the hard open-file limit here is {hard} and \
             cannot be raised (no CAP_SYS_RESOURCE); the node needs two descriptors per proxied \
             connection"
        );
        println!("  {why}");
        out.notes.push(why);
    }
    let pid = node.proc.pid();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    anyhow::ensure!(comm.trim() == "booster", "pid {pid} is {comm:?}, not booster");
    out.rss_before_kib = procs::rss_kib(pid)?;
    let a0 = holder.accepted();
    let t = Instant::now();
    let conns = loopback::open_many(name, node.proxy, holder.addr, n).with_context(|| node.proc.log_tail())?;
    loopback::wait_accepted(holder, a0 + n, Duration::from_secs(30))?;
    let opened = t.elapsed().as_secs_f64();
    procs::sleep(Duration::from_secs(1))?;
    out.rss_after_kib = procs::rss_kib(pid)?;
    out.clients_open = node
        .status()
        .ok()
        .and_then(|s| s.pointer("/node/clients_open").and_then(|v| v.as_u64()));
    out.idle_n = conns.len();
    drop(conns);
    holder.clear();
    procs::sleep(Duration::from_secs(2))?;
    out.rss_closed_kib = procs::rss_kib(pid)?;
    // Open them all again: if RSS stays put, the first round's memory was kept for reuse by
    // the allocator rather than leaked.
    let a1 = holder.accepted();
    let again = loopback::open_many(name, node.proxy, holder.addr, n).with_context(|| node.proc.log_tail())?;
    loopback::wait_accepted(holder, a1 + n, Duration::from_secs(30))?;
    procs::sleep(Duration::from_secs(1))?;
    out.rss_reopened_kib = procs::rss_kib(pid)?;
    drop(again);
    holder.clear();
    println!(
        "  {n} idle connections opened in {opened:.1} s: RSS {} → {} KiB ({:.1} KiB each), {} KiB after \
         closing, {} KiB with {n} open again",
        out.rss_before_kib,
        out.rss_after_kib,
        (out.rss_after_kib as f64 - out.rss_before_kib as f64) / n as f64,
        out.rss_closed_kib,
        out.rss_reopened_kib
    );
    out.notes.push(format!(
        "The {n} connections were opened one after another in {opened:.1} s \
         ({:.0} µs each, handshake included).",
        opened * 1e6 / n as f64
    ));
    Ok(())
}

fn add_notes(res: &mut Results, plan: &Plan) {
    let n = res.link_names.len();
    let med: Vec<f64> = (0..n)
        .map(|i| report::median(&res.alone.iter().map(|r| r[i]).collect::<Vec<_>>()))
        .collect();
    let sum: f64 = med.iter().sum();
    if !res.booster_splits.is_empty() && sum > 0.0 {
        let (ceiling, split) = report::integer_ceiling(&med, PARALLEL, (FILE_MB * MB) as f64);
        let ideal: Vec<String> = med
            .iter()
            .zip(&res.link_names)
            .map(|(r, l)| format!("{l} {:.2}", r / sum * PARALLEL as f64))
            .collect();
        let best: Vec<String> = split
            .iter()
            .zip(&res.link_names)
            .map(|(k, l)| format!("{l} {k}"))
            .collect();
        res.notes.push(format!(
            "**Connection-level balancing is integer-limited.** {PARALLEL} equal downloads that \
             all start at once, each pinned to one uplink for its life: the ideal split by rate \
             ({}) is impossible in whole connections. The best whole split ({}) finishes at \
             {:.2} MB/s = **{:.0}% of this run's link sum**, and that is the ceiling for any \
             proxy that balances whole connections, however smart. booster goes past it by \
             tail stealing: a download forwarded whole has its end fetched by ranges over the \
             first uplink that goes idle, racing the original connection (`steal.rs`; the \
             node's debug log says `tail steal`).",
            ideal.join(", "),
            best.join(", "),
            ceiling / 1e6,
            ceiling / sum * 100.0
        ));
    }
    res.notes.push(
        "The link sum is measured with one TCP connection per uplink; booster's round uses 12 \
         connections, which keep a link busier through loss recovery, so a ratio slightly above \
         what one connection per link gets is not impossible."
            .into(),
    );
    res.notes.push(format!(
        "The machine has {} CPUs and other builds may run at the same time; the delay lines \
         are userspace threads, so a busy host adds jitter. The min–max columns show the spread.",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    ));
    if plan.big_mb != 50 {
        res.notes.push(format!(
            "`--quick`: aria2c and MPTCP used a {} MB file instead of 50 MB; the link sum window \
             was {} s.",
            plan.big_mb,
            plan.alone.as_secs()
        ));
    }
}

/// Prints one sampled download's rate, split and tail.
fn print_sampled(what: &str, s: &net::Sampled) {
    println!(
        "  {what} {:.2} MB/s ({:.1} s; per uplink MB: {}){}",
        s.rate / 1e6,
        s.secs,
        s.split
            .iter()
            .map(|b| format!("{:.1}", *b as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(" / "),
        s.tail
            .as_ref()
            .map(|t| format!(
                "; 1% in by {:.1} s; last 10% at {:.2} MB/s ({:.1}–{:.1} s)",
                t.t1,
                t.rate / 1e6,
                t.t90,
                t.t100
            ))
            .unwrap_or_default()
    );
}

/// Whether this booster binary has `get` (`booster get --help` succeeds).
fn has_get(bin: &Path) -> Result<(), String> {
    match std::process::Command::new(bin)
        .args(["get", "--help"])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{} get --help` failed: {}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("")
        )),
        Err(e) => Err(format!("running {}: {e}", bin.display())),
    }
}

fn summarize_sources(v: &serde_json::Value) -> String {
    let Some(a) = v.as_array() else {
        return v.to_string();
    };
    a.iter()
        .map(|s| {
            let name = s.get("name").and_then(|n| n.as_str()).unwrap_or("?");
            let cap = s
                .get("capacity")
                .and_then(|c| c.as_f64())
                .map(|c| format!(" capacity {:.2} MB/s", c / 1e6))
                .unwrap_or_default();
            let conns = s
                .get("conns_total")
                .and_then(|c| c.as_u64())
                .map(|c| format!(", {c} connections in total"))
                .unwrap_or_default();
            format!("{name}{cap}{conns}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn nginx_version() -> String {
    std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .ok()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stderr).trim().to_owned();
            s.strip_prefix("nginx version: ").unwrap_or(&s).to_owned()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "nginx".into())
}

fn booster_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "booster".into())
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` writes them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run -p booster-lab --release -- {}", args.join(" "))
}

pub(crate) fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

pub(crate) fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|m| m.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}, {mem} RAM", kernel.trim())
}

/// Records one measured round of parallel downloads through booster's proxy: prints it, and
/// keeps its rate, its split over the uplinks and its samples. A failed round is recorded as
/// skipped (with the node's log), and the node must still be running.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_round(
    round: Result<net::Round>,
    before: &[u64],
    after: &[u64],
    samples: net::Samples,
    proc: &mut procs::Proc,
    row: &mut report::Row,
    splits: &mut Vec<report::Split>,
    rounds: &mut Vec<(f64, net::Samples)>,
) -> Result<()> {
    match round {
        Ok(r) => {
            let rate = r.bytes as f64 / r.secs;
            let (split, _) = net::spread(before, after);
            let per: Vec<String> = split.iter().map(|b| format!("{:.1}", *b as f64 / 1e6)).collect();
            println!(
                "  booster {:.2} MB/s ({} MB in {:.1} s; per uplink MB: {})",
                rate / 1e6,
                r.bytes / MB,
                r.secs,
                per.join(" / ")
            );
            row.samples.push(rate);
            splits.push(split);
            rounds.push((rate, samples));
        }
        Err(e) => {
            procs::check_interrupt()?;
            println!("  booster round failed: {e:#}\n{}", proc.log_tail());
            row.skip = Some(format!("failed: {e:#}"));
            proc.ensure_running()?;
        }
    }
    Ok(())
}

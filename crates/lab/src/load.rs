//! `lab load`: one node under load on loopback, measured the way proxies measure themselves.
//!
//! - **Held load**: as many concurrent proxied SOCKS5 connections as asked (10,000 by default)
//!   to a server that streams to each one slowly and steadily, held for a while: node memory per
//!   connection, node CPU, and how steadily every connection received.
//! - **Throughput**: a few connections moving data as fast as they can: node CPU per Gbit/s.
//! - **Connect latency**: sequential connects, direct and through the proxy: p50 and p99.
//!
//! Three processes, so each stays under the open-file limit and each is measured alone: the
//! node (`booster start`, uplink `lo`), the servers (this binary, `lab load --serve`), and the
//! clients (this process). Everything is on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bench::procs;

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The booster binary [default: `booster` next to this binary].
    #[arg(long)]
    pub booster: Option<PathBuf>,
    /// Concurrent proxied connections to hold.
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,
    /// Seconds to hold them.
    #[arg(long, default_value_t = 30)]
    pub hold: u64,
    /// Bytes per second each held connection receives.
    #[arg(long, default_value_t = 4096)]
    pub rate: u64,
    /// Connections in the throughput run.
    #[arg(long, default_value_t = 4)]
    pub bulk: usize,
    /// Seconds of the throughput run.
    #[arg(long, default_value_t = 10)]
    pub bulk_secs: u64,
    /// Sequential connects in the latency run (each direct and through the proxy).
    #[arg(long, default_value_t = 1000)]
    pub connects: usize,
    /// Internal: run the servers and print their addresses.
    #[arg(long, hide = true)]
    pub serve: bool,
    /// Internal: run the anchor proxy (fast-socks5) and print its address.
    #[arg(long, hide = true)]
    pub anchor: bool,
}

/// The slow server writes this often.
const TICK: Duration = Duration::from_millis(250);
/// Connections being opened at once while filling up.
const OPENING: usize = 200;

pub fn run(args: LoadArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if args.serve {
        return rt.block_on(serve(args.rate));
    }
    if args.anchor {
        return rt.block_on(serve_anchor());
    }
    let nofile = procs::raise_nofile(1 << 20)?;
    let booster = match &args.booster {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("no directory for this binary"))?
            .join("booster"),
    };
    let servers = Servers::start(args.rate)?;
    let node = Node::start(&booster)?;
    println!(
        "node pid {} on {}; servers: slow {}, bulk {}, plain {}; open-file limit here {nofile}",
        node.pid(),
        node.proxy,
        servers.slow,
        servers.bulk,
        servers.plain
    );
    println!("{}", node.note.trim());

    let anchor = Anchor::start(None)?;
    // Warm up: the runtime and allocator make their lazy structures on first use.
    for _ in 0..200 {
        drop(socks_connect(node.proxy, servers.plain)?);
        drop(socks_connect(anchor.proxy, servers.plain)?);
    }
    std::thread::sleep(Duration::from_secs(1));

    let latency = connect_latency(&node, &anchor, &servers, args.connects)?;
    drop(anchor);
    let bulk = throughput(&node, &servers, args.bulk, Duration::from_secs(args.bulk_secs))?;
    let held = rt.block_on(held_load(&node, &servers, &args))?;
    report(&args, &node, &latency, &bulk, &held);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The servers (`lab load --serve`).

async fn serve(rate: u64) -> Result<()> {
    procs::raise_nofile(1 << 20)?;
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bulk = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "slow {} bulk {} plain {}",
        slow.local_addr()?,
        bulk.local_addr()?,
        plain.local_addr()?
    );
    std::io::stdout().flush()?;
    let per_tick = (rate as f64 * TICK.as_secs_f64()).max(1.0) as usize;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = slow.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0x61u8; per_tick];
                let mut tick = tokio::time::interval(TICK);
                loop {
                    tick.tick().await;
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = bulk.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0x62u8; 256 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = plain.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    until_parent_exits().await
}

/// The anchor for connect latency: fast-socks5 1.0's server, in its own process on a runtime
/// like the node's (two worker threads), doing what its example server does (no auth,
/// `run_tcp_proxy`). Its authors publish about 90 µs added at p50; this measures it here, in
/// the same run as booster.
async fn serve_anchor() -> Result<()> {
    use fast_socks5::server::{run_tcp_proxy, DnsResolveHelper as _, Socks5ServerProtocol};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("fast-socks5 {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let session = async {
                    let (proto, cmd, target) = Socks5ServerProtocol::accept_no_auth(s)
                        .await?
                        .read_command()
                        .await?
                        .resolve_dns()
                        .await?;
                    if cmd == fast_socks5::Socks5Command::TCPConnect {
                        run_tcp_proxy(proto, &target, Duration::from_secs(10), false).await?;
                    }
                    Ok::<(), fast_socks5::SocksError>(())
                };
                let _ = session.await;
            });
        }
    });
    until_parent_exits().await
}

/// A helper process (`lab load --serve`, `--anchor`) runs until the parent goes away: the
/// parent holds its stdin.
async fn until_parent_exits() -> Result<()> {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    Ok(())
}

/// Starts `lab load ARGS` (a helper process), in network namespace `ns` if given, and returns
/// it with the line it printed first.
fn helper(ns: Option<&str>, args: &[&str]) -> Result<(ChildGuard, String)> {
    let exe = std::env::current_exe()?;
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let mut child = cmd
        .arg("load")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let child = ChildGuard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok((child, line))
}

/// fast-socks5 1.0 in its own process (see `serve_anchor`), on loopback.
pub struct Anchor {
    pub proxy: SocketAddr,
    _child: ChildGuard,
}

impl Anchor {
    /// Starts the anchor in network namespace `ns`, or in this process's namespace.
    pub fn start(ns: Option<&str>) -> Result<Anchor> {
        let (child, line) = helper(ns, &["--anchor"]).context("starting the anchor proxy")?;
        let addr = line
            .strip_prefix("fast-socks5 ")
            .ok_or_else(|| anyhow!("the anchor said {line:?}"))?;
        Ok(Anchor {
            proxy: addr.trim().parse()?,
            _child: child,
        })
    }
}

struct Servers {
    slow: SocketAddr,
    bulk: SocketAddr,
    plain: SocketAddr,
    _child: ChildGuard,
}

impl Servers {
    fn start(rate: u64) -> Result<Servers> {
        let (child, line) = helper(None, &["--serve", "--rate", &rate.to_string()]).context("starting the servers")?;
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() != 6 {
            bail!("servers said {line:?}");
        }
        Ok(Servers {
            slow: w[1].parse()?,
            bulk: w[3].parse()?,
            plain: w[5].parse()?,
            _child: child,
        })
    }
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The node.

struct Node {
    child: ChildGuard,
    proxy: SocketAddr,
    api: SocketAddr,
    /// What the node said while starting (its open-file fit).
    note: String,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Node {
    fn start(booster: &std::path::Path) -> Result<Node> {
        let dir = std::env::temp_dir().join(format!("booster-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut child = Command::new(booster)
            .args([
                "start",
                "--iface",
                "lo",
                "--listen",
                "127.0.0.1:0",
                "--api",
                "127.0.0.1:0",
            ])
            .args(["--probe-target", "none", "--no-mdns", "--data-dir"])
            .arg(&dir)
            .env("RUST_LOG", "booster=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", booster.display()))?;
        let mut err = BufReader::new(child.stderr.take().expect("piped"));
        let mut note = String::new();
        let mut line = String::new();
        let (proxy, api) = loop {
            line.clear();
            if err.read_line(&mut line)? == 0 {
                bail!("booster exited:\n{note}");
            }
            if line.contains("max_connections") {
                note.push_str(&procs::strip_ansi(&line));
            }
            if let Some(rest) = line.trim().strip_prefix("booster: proxy on ") {
                let proxy = rest.split_whitespace().next().unwrap_or_default().parse()?;
                let api = rest.rsplit("API on ").next().unwrap_or_default().trim().parse()?;
                break (proxy, api);
            }
        };
        std::thread::spawn(move || for _ in err.lines() {});
        Ok(Node {
            child: ChildGuard(child),
            proxy,
            api,
            note,
            _dir: tempdir::Dir(dir),
        })
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn rss_kib(&self) -> u64 {
        procs::rss_kib(self.pid()).unwrap_or(0)
    }

    /// CPU time (user + system) the node used so far.
    fn cpu(&self) -> Duration {
        cpu_time(self.pid()).unwrap_or_default()
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    fn clients_open(&self) -> Option<u64> {
        let mut s = TcpStream::connect(self.api).ok()?;
        s.write_all(b"GET /api/status HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v.pointer("/node/clients_open")?.as_u64()
    }
}

/// utime + stime of `pid`, from `/proc/<pid>/stat` (every thread, live or gone).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(") ").ok_or_else(|| anyhow!("odd stat"))?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

// ---------------------------------------------------------------------------------------------
// SOCKS5 clients.

/// A SOCKS5 CONNECT the way RFC 1928 clients do it: greeting, wait, request, wait.
fn socks_connect(proxy: SocketAddr, target: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(proxy)?;
    s.set_nodelay(true)?;
    s.write_all(&[5, 1, 0])?;
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel)?;
    s.write_all(&request(target))?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply)?;
    if sel != [5, 0] || reply[1] != 0 {
        bail!("SOCKS5 refused: {sel:?} {reply:?}");
    }
    Ok(s)
}

fn request(target: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(t) = target else {
        unreachable!("the servers listen on 127.0.0.1")
    };
    let mut v = vec![5, 1, 0, 1];
    v.extend_from_slice(&t.ip().octets());
    v.extend_from_slice(&t.port().to_be_bytes());
    v
}

async fn socks_connect_async(proxy: SocketAddr, target: SocketAddr) -> Result<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(proxy).await?;
    s.write_all(&[5, 1, 0]).await?;
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).await?;
    s.write_all(&request(target)).await?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await?;
    if sel != [5, 0] || reply[1] != 0 {
        bail!("SOCKS5 refused: {sel:?} {reply:?}");
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// The three measurements.

struct Latency {
    direct: Vec<f64>,
    proxied: Vec<f64>,
    /// Through the anchor, fast-socks5.
    anchor: Vec<f64>,
}

/// Sequential connects to the plain server, direct, through the node and through the anchor,
/// in turn; in µs.
fn connect_latency(node: &Node, anchor: &Anchor, servers: &Servers, n: usize) -> Result<Latency> {
    let mut direct = Vec::with_capacity(n);
    let mut proxied = Vec::with_capacity(n);
    let mut anchored = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let s = TcpStream::connect(servers.plain)?;
        direct.push(t.elapsed().as_secs_f64() * 1e6);
        drop(s);
        let t = Instant::now();
        let s = socks_connect(node.proxy, servers.plain)?;
        proxied.push(t.elapsed().as_secs_f64() * 1e6);
        drop(s);
        let t = Instant::now();
        let s = socks_connect(anchor.proxy, servers.plain)?;
        anchored.push(t.elapsed().as_secs_f64() * 1e6);
        drop(s);
    }
    Ok(Latency {
        direct,
        proxied,
        anchor: anchored,
    })
}

struct Bulk {
    direct_bps: f64,
    proxied_bps: f64,
    /// Node CPU seconds during the proxied run.
    node_cpu: f64,
    secs: f64,
}

/// `conns` connections reading the bulk server as fast as they can for `dur`: bits per second.
fn drain(conns: Vec<TcpStream>, dur: Duration) -> f64 {
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            let total = total.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                while start.elapsed() < dur {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            total.fetch_add(n as u64, Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    total.load(Relaxed) as f64 * 8.0 / start.elapsed().as_secs_f64()
}

fn throughput(node: &Node, servers: &Servers, n: usize, dur: Duration) -> Result<Bulk> {
    let direct: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(servers.bulk))
        .collect::<std::io::Result<_>>()?;
    let direct_bps = drain(direct, dur);
    std::thread::sleep(Duration::from_secs(1));
    let proxied: Vec<TcpStream> = (0..n)
        .map(|_| socks_connect(node.proxy, servers.bulk))
        .collect::<Result<_>>()?;
    let cpu0 = node.cpu();
    let t = Instant::now();
    let proxied_bps = drain(proxied, dur);
    let secs = t.elapsed().as_secs_f64();
    let node_cpu = (node.cpu() - cpu0).as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    Ok(Bulk {
        direct_bps,
        proxied_bps,
        node_cpu,
        secs,
    })
}

struct Held {
    asked: usize,
    opened: usize,
    refused: usize,
    open_secs: f64,
    clients_open: Option<u64>,
    rss_idle: u64,
    rss_held: u64,
    rss_peak_held: u64,
    rss_closed: u64,
    fds_held: usize,
    node_cpu_held: f64,
    hold_secs: f64,
    /// Bytes each connection received during the hold, sorted.
    received: Vec<u64>,
    /// Connections that got nothing at all in some 2-second window of the hold.
    starved: usize,
}

async fn held_load(node: &Node, servers: &Servers, args: &LoadArgs) -> Result<Held> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = node.rss_kib();
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..args.conns).map(|_| AtomicU64::new(0)).collect());
    let opened = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let t = Instant::now();
    for i in 0..args.conns {
        let permit = gate.clone().acquire_owned().await?;
        let (counters, opened, refused, stop) = (counters.clone(), opened.clone(), refused.clone(), stop.clone());
        let (proxy, slow) = (node.proxy, servers.slow);
        tasks.spawn(async move {
            let s = socks_connect_async(proxy, slow).await;
            drop(permit);
            let Ok(mut s) = s else {
                refused.fetch_add(1, Relaxed);
                return;
            };
            opened.fetch_add(1, Relaxed);
            let mut buf = vec![0u8; 4096];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => { counters[i].fetch_add(n as u64, Relaxed); }
                    },
                }
            }
        });
    }
    let _ = gate.acquire_many(OPENING as u32).await?;
    let open_secs = t.elapsed().as_secs_f64();
    let (opened, refused) = (opened.load(Relaxed), refused.load(Relaxed));
    println!("held load: {opened} connections open in {open_secs:.1} s ({refused} refused)");
    // Let every connection get going, then hold and sample.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = |c: &Arc<Vec<AtomicU64>>| c.iter().map(|x| x.load(Relaxed)).collect::<Vec<u64>>();
    let first = snapshot(&counters);
    let cpu0 = node.cpu();
    let start = Instant::now();
    let mut rss_peak_held = 0;
    let mut last = first.clone();
    let mut starved = vec![false; args.conns];
    let mut fds_held = 0;
    while start.elapsed() < Duration::from_secs(args.hold) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss_peak_held = rss_peak_held.max(node.rss_kib());
        fds_held = fds_held.max(node.fds());
        let now = snapshot(&counters);
        for (i, (a, b)) in last.iter().zip(&now).enumerate() {
            if a == b && b > &0 {
                starved[i] = true;
            }
        }
        last = now;
        println!(
            "  {:>3.0} s: node RSS {} KiB, {} fds",
            start.elapsed().as_secs_f64(),
            node.rss_kib(),
            node.fds()
        );
    }
    let hold_secs = start.elapsed().as_secs_f64();
    let node_cpu_held = (node.cpu() - cpu0).as_secs_f64();
    let rss_held = node.rss_kib();
    let clients_open = node.clients_open();
    let end = snapshot(&counters);
    let mut received: Vec<u64> = first
        .iter()
        .zip(&end)
        .filter(|(_, e)| **e > 0)
        .map(|(f, e)| e - f)
        .collect();
    received.sort_unstable();
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(Held {
        asked: args.conns,
        opened,
        refused,
        open_secs,
        clients_open,
        rss_idle,
        rss_held,
        rss_peak_held,
        rss_closed: node.rss_kib(),
        fds_held,
        node_cpu_held,
        hold_secs,
        received,
        starved: starved.iter().filter(|s| **s).count(),
    })
}

// ---------------------------------------------------------------------------------------------
// The report (markdown on stdout).

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn report(args: &LoadArgs, node: &Node, lat: &Latency, bulk: &Bulk, held: &Held) {
    let per_conn = (held.rss_held as f64 - held.rss_idle as f64) / held.opened.max(1) as f64;
    let gbit = bulk.proxied_bps / 1e9;
    let cpu_share = bulk.node_cpu / bulk.secs;
    let bits = bulk.proxied_bps * bulk.secs;
    let r = &held.received;
    let q = |p: f64| {
        r.get(((p / 100.0) * (r.len().max(1) - 1) as f64) as usize)
            .copied()
            .unwrap_or(0)
    };
    let expected = args.rate as f64 * held.hold_secs;
    println!();
    println!("### Load on loopback");
    println!();
    println!("| what | result |");
    println!("|---|---|");
    println!(
        "| connections held | {} of {} asked ({} refused by the node at its limit), opened in {:.1} s; node reports {} open |",
        held.opened,
        held.asked,
        held.refused,
        held.open_secs,
        held.clients_open.map_or("?".into(), |c| c.to_string())
    );
    println!(
        "| steady transfers | each connection receives {} B/s; over {:.0} s each got {} / {} / {} bytes (min / median / max; {:.0} expected); {} connections had a 2 s window with nothing |",
        args.rate,
        held.hold_secs,
        q(0.0),
        q(50.0),
        q(100.0),
        expected,
        held.starved
    );
    println!(
        "| node memory | {:.1} MiB idle → {:.1} MiB held (peak {:.1}) = **{:.1} KiB per connection**; {:.1} MiB after closing them |",
        held.rss_idle as f64 / 1024.0,
        held.rss_held as f64 / 1024.0,
        held.rss_peak_held as f64 / 1024.0,
        per_conn,
        held.rss_closed as f64 / 1024.0
    );
    println!(
        "| node descriptors | at most {} while holding {} connections ({:.2} per connection) |",
        held.fds_held,
        held.opened,
        held.fds_held as f64 / held.opened.max(1) as f64
    );
    println!(
        "| node CPU while holding | {:.1}% of one core ({:.1} s over {:.0} s) for {:.1} MB/s in total |",
        100.0 * held.node_cpu_held / held.hold_secs,
        held.node_cpu_held,
        held.hold_secs,
        held.received.iter().sum::<u64>() as f64 / held.hold_secs / 1e6
    );
    println!(
        "| throughput, {} connections, {} s | {:.2} Gbit/s through the node ({:.2} Gbit/s direct, {:.0}%) |",
        args.bulk,
        args.bulk_secs,
        gbit,
        bulk.direct_bps / 1e9,
        100.0 * bulk.proxied_bps / bulk.direct_bps
    );
    println!(
        "| node CPU per Gbit/s | {:.0}% of a core at {:.2} Gbit/s = **{:.2} cores per Gbit/s** ({:.2} CPU-s per Gbit moved) |",
        100.0 * cpu_share,
        gbit,
        cpu_share / gbit,
        bulk.node_cpu / (bits / 1e9)
    );
    println!(
        "| connect latency, {} sequential | direct p50 {:.0} µs, p99 {:.0} µs; through the proxy (SOCKS5 greeting, request, reply) p50 {:.0} µs, p99 {:.0} µs: **+{:.0} µs at p50, +{:.0} µs at p99** |",
        args.connects,
        percentile(&lat.direct, 50.0),
        percentile(&lat.direct, 99.0),
        percentile(&lat.proxied, 50.0),
        percentile(&lat.proxied, 99.0),
        percentile(&lat.proxied, 50.0) - percentile(&lat.direct, 50.0),
        percentile(&lat.proxied, 99.0) - percentile(&lat.direct, 99.0)
    );
    println!(
        "| the same through fast-socks5 1.0 (anchor, same run) | p50 {:.0} µs, p99 {:.0} µs: **+{:.0} µs at p50, +{:.0} µs at p99**; booster minus fast-socks5: {:+.0} µs at p50 |",
        percentile(&lat.anchor, 50.0),
        percentile(&lat.anchor, 99.0),
        percentile(&lat.anchor, 50.0) - percentile(&lat.direct, 50.0),
        percentile(&lat.anchor, 99.0) - percentile(&lat.direct, 99.0),
        percentile(&lat.proxied, 50.0) - percentile(&lat.anchor, 50.0)
    );
    if !node.note.is_empty() {
        println!();
        println!("The node said at start: `{}`", node.note.trim());
    }
}

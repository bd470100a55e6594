//! `lab calibrate`: measures every link of the namespace lab against its profile and reports
//! the figures (a benchmark, not a test: `cargo test` checks only how the lab is configured,
//! because wall-clock thresholds flake on a shared 2-core machine).
//!
//! For each profile, one at a time: build the lab, start a small measuring [`Server`] in the
//! internet namespace, and for every uplink (from a socket bound to the uplink's device in
//! the node namespace) measure
//! - the RTT: median of 9 TCP connects (SYN → SYN-ACK, answered by the server's kernel), from
//!   a real-time thread so a busy host's scheduling delay stays out of the samples;
//! - the download and upload goodput of one bulk TCP flow: bytes counted in [`BUCKET`]-sized
//!   buckets, the median bucket after a warm-up of 1 s + 2 RTT (slow start), 2 s measured.
//!
//! The lossy link is measured with loss off (loss caps a single TCP flow far below the link
//! rate); the loss itself is counted by the `loss_matches_profile` test. Where the profile has
//! a LAN, phone-1 measures it against a server on home's LAN address (RTT bound: 5 ms). Where
//! it has `home/adsl`, that link is then set to 2 Mbit/s with [`Lab::set_rate`] and measured
//! again. A link is "ok" when down, up and RTT are all within [`TOLERANCE`] of nominal; each
//! link gets up to `--attempts` tries (a shaping error fails every one, a busy moment on a
//! shared machine only one) and the table shows the last.
//!
//! The measuring helpers are public: the namespace tests use the same server and clients to
//! check that data moves, cut / blackhole / restore, and jitter.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bench::{command_line, date, load_average, machine};
use crate::profile::{self, Profile};
use crate::topology::{Lab, LAN_IFACE};

/// How far a measured figure may be from nominal and still count as "ok".
pub const TOLERANCE: f64 = 0.10;
/// Throughput sample length: long enough to hold many packets even at 4 Mbit (~85).
pub const BUCKET: Duration = Duration::from_millis(250);
/// Upper bound of the LAN's RTT (it has no delay line; veths take well under 1 ms).
pub const LAN_RTT_LIMIT: Duration = Duration::from_millis(5);
/// The rate the set_rate check gives `home/adsl`.
pub const SET_RATE_BPS: u64 = 2_000_000;

/// `lab calibrate` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Profiles to measure, one lab at a time (default: home peers skewed lossy).
    pub profiles: Vec<String>,
    /// Markdown report ("-": none).
    #[arg(long, default_value = "docs/calibration.md")]
    pub out: PathBuf,
    /// Tries per link before it counts as out of tolerance.
    #[arg(long, default_value_t = 3)]
    pub attempts: usize,
}

// ---------------------------------------------------------------------------------------
// A tiny measurement server (std threads, blocking sockets).
// Protocol: the client sends one command byte and a u32 (big endian) argument.
//   b'E' _      : echo every byte back (ping-pong RTT).
//   b'D' ms     : send bulk data for `ms` milliseconds, then close (download rate).
//   b'U' _      : read until EOF, counting bytes into BUCKET-sized buckets from the first
//                 byte; reply with the bucket counts as `u64`s, warmup handled by the client.
//   b'N' n      : send exactly `n` bytes, then close (data moves, no clock).
//   b'S' _      : read until EOF, reply with the byte count as a `u64` (data moves, no clock).
// ---------------------------------------------------------------------------------------

/// Bytes received per [`BUCKET`], counted from the first byte.
#[derive(Default)]
struct Buckets {
    start: Option<Instant>,
    counts: Vec<u64>,
}

impl Buckets {
    fn add(&mut self, n: usize) {
        let t0 = *self.start.get_or_insert_with(Instant::now);
        let i = (t0.elapsed().as_nanos() / BUCKET.as_nanos()) as usize;
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += n as u64;
    }
}

/// The measuring server: one listener, a thread per connection. Stops accepting on drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on the origin address in the internet namespace.
    pub fn start(lab: &Lab) -> Result<Server> {
        Self::start_at(lab, lab.internet_ns(), lab.origin_ip())
    }

    /// Listens on `ip` (any port) in namespace `ns`.
    pub fn start_at(lab: &Lab, ns: &str, ip: Ipv4Addr) -> Result<Server> {
        let listener = lab
            .in_ns(ns, move || TcpListener::bind((ip, 0)))?
            .with_context(|| format!("binding the measuring server on {ip} in {ns}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        if c.set_nonblocking(false).is_ok() {
                            std::thread::spawn(move || serve(c));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut c: TcpStream) {
    let _ = c.set_nodelay(true);
    let mut hdr = [0u8; 5];
    if c.read_exact(&mut hdr).is_err() {
        return;
    }
    let arg = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]);
    match hdr[0] {
        b'E' => {
            let mut b = [0u8; 64];
            while let Ok(n) = c.read(&mut b) {
                if n == 0 || c.write_all(&b[..n]).is_err() {
                    break;
                }
            }
        }
        b'D' => {
            let chunk = vec![0x5au8; 64 * 1024];
            let end = Instant::now() + Duration::from_millis(arg.into());
            while Instant::now() < end {
                if c.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
        b'U' => {
            let mut b = vec![0u8; 64 * 1024];
            let mut buckets = Buckets::default();
            while let Ok(n) = c.read(&mut b) {
                if n == 0 {
                    break;
                }
                buckets.add(n);
            }
            let out: Vec<u8> = buckets.counts.iter().flat_map(|b| b.to_be_bytes()).collect();
            let _ = c.write_all(&out);
        }
        b'N' => {
            let chunk = vec![0x3cu8; 64 * 1024];
            let mut left = arg as usize;
            while left > 0 {
                let n = left.min(chunk.len());
                if c.write_all(&chunk[..n]).is_err() {
                    break;
                }
                left -= n;
            }
        }
        b'S' => {
            let mut b = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            while let Ok(n) = c.read(&mut b) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = c.write_all(&total.to_be_bytes());
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------
// Clients: sockets are created inside the node namespace and bound to the uplink device.
// ---------------------------------------------------------------------------------------

/// A TCP socket made in namespace `ns` and bound to device `dev` (SO_BINDTODEVICE).
pub fn socket(lab: &Lab, ns: &str, dev: &str) -> Result<tokio::net::TcpSocket> {
    let dev = dev.to_owned();
    let s = lab.in_ns(ns, move || {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.bind_device(Some(dev.as_bytes()))?;
        Ok::<_, std::io::Error>(s)
    })??;
    Ok(s)
}

/// Where a client socket is made: a namespace, the device it binds to, and the path's RTT.
#[derive(Debug, Clone)]
pub struct Path {
    pub ns: String,
    pub dev: String,
    pub rtt: Duration,
}

/// The path through uplink `node/link`.
pub fn uplink_path(lab: &Lab, node: &str, link: &str) -> Path {
    let u = lab.uplink(node, link);
    Path {
        ns: u.node_ns.clone(),
        dev: u.iface.clone(),
        rtt: u.spec.rtt,
    }
}

/// The path from `node` over the LAN (`lan0`), for profiles with a LAN.
pub fn lan_path(lab: &Lab, node: &str) -> Path {
    Path {
        ns: lab.node_ns(node).to_owned(),
        dev: LAN_IFACE.to_owned(),
        rtt: Duration::from_millis(1),
    }
}

/// Connects through `path` to `server`, giving up after `timeout`.
pub async fn connect(
    lab: &Lab,
    path: &Path,
    server: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let s = socket(lab, &path.ns, &path.dev).map_err(std::io::Error::other)?;
    match tokio::time::timeout(timeout, s.connect(server)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// A command for the [`Server`]: one byte and a big-endian u32 argument.
pub fn header(cmd: u8, arg: u32) -> [u8; 5] {
    let a = arg.to_be_bytes();
    [cmd, a[0], a[1], a[2], a[3]]
}

fn median(mut v: Vec<f64>) -> Result<f64> {
    if v.is_empty() {
        bail!("no samples");
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

/// Median of TCP connect times (SYN → SYN-ACK: one round trip, answered by the server's
/// kernel). The client runs on its own real-time thread, so a busy host (parallel builds)
/// does not add its scheduling delay to the samples.
pub fn measure_rtt(lab: &Lab, path: &Path, server: SocketAddr) -> Result<Duration> {
    let dev = path.dev.clone();
    let samples = lab.in_ns(&path.ns, move || -> std::io::Result<Vec<f64>> {
        let _ = crate::delayline::set_thread_realtime(10);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let mut samples = Vec::new();
            for _ in 0..9 {
                let s = tokio::net::TcpSocket::new_v4()?;
                s.bind_device(Some(dev.as_bytes()))?;
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(5), s.connect(server)).await {
                    Ok(c) => drop(c?),
                    Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
                }
                samples.push(t.elapsed().as_secs_f64());
            }
            Ok(samples)
        })
    })?;
    let samples = samples.with_context(|| format!("connecting to {server} through {}", path.dev))?;
    Ok(Duration::from_secs_f64(median(samples)?))
}

/// Per-bucket rates (bit/s) after `warmup`, dropping the last, possibly partial bucket.
pub fn steady_rates(buckets: &[u64], warmup: Duration) -> Vec<f64> {
    let skip = (warmup.as_nanos() / BUCKET.as_nanos()) as usize;
    let n = buckets.len().saturating_sub(1);
    buckets[skip.min(n)..n]
        .iter()
        .map(|b| *b as f64 * 8.0 / BUCKET.as_secs_f64())
        .collect()
}

/// Warmup and total duration of a bulk transfer: slow start needs a few RTTs.
fn durations(rtt: Duration) -> (Duration, Duration) {
    let warmup = Duration::from_millis(1000) + rtt * 2;
    (warmup, warmup + Duration::from_millis(2000))
}

/// Download goodput (bit/s) of one TCP flow through `path`: median steady bucket.
pub async fn measure_download(lab: &Lab, path: &Path, server: SocketAddr) -> Result<f64> {
    let (warmup, total) = durations(path.rtt);
    let mut c = connect(lab, path, server, Duration::from_secs(5)).await?;
    c.write_all(&header(b'D', total.as_millis() as u32)).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut buckets = Buckets::default();
    loop {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        buckets.add(n);
    }
    median(steady_rates(&buckets.counts, warmup))
}

/// Upload goodput (bit/s) of one TCP flow through `path`, as the server counted it.
pub async fn measure_upload(lab: &Lab, path: &Path, server: SocketAddr) -> Result<f64> {
    let (warmup, total) = durations(path.rtt);
    let mut c = connect(lab, path, server, Duration::from_secs(5)).await?;
    c.write_all(&header(b'U', 0)).await?;
    let chunk = vec![0xa5u8; 64 * 1024];
    let end = Instant::now() + total;
    while Instant::now() < end {
        c.write_all(&chunk).await?;
    }
    c.shutdown().await?;
    let mut out = Vec::new();
    c.read_to_end(&mut out).await?;
    let buckets: Vec<u64> = out
        .chunks_exact(8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("chunks of 8")))
        .collect();
    median(steady_rates(&buckets, warmup))
}

/// Downloads exactly `bytes` through `path` and returns how many arrived (no clock involved:
/// the caller only learns whether data moves).
pub async fn download_bytes(lab: &Lab, path: &Path, server: SocketAddr, bytes: u32) -> Result<u64> {
    let mut c = connect(lab, path, server, Duration::from_secs(10)).await?;
    c.write_all(&header(b'N', bytes)).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            return Ok(got);
        }
        got += n as u64;
    }
}

/// Uploads `bytes` through `path` and returns how many the server counted.
pub async fn upload_bytes(lab: &Lab, path: &Path, server: SocketAddr, bytes: u32) -> Result<u64> {
    let mut c = connect(lab, path, server, Duration::from_secs(10)).await?;
    c.write_all(&header(b'S', 0)).await?;
    let chunk = vec![0x6bu8; bytes as usize];
    c.write_all(&chunk).await?;
    c.shutdown().await?;
    let mut out = [0u8; 8];
    c.read_exact(&mut out).await?;
    Ok(u64::from_be_bytes(out))
}

/// Whether `measured` is within [`TOLERANCE`] of `nominal`.
pub fn within(measured: f64, nominal: f64) -> bool {
    (measured - nominal).abs() <= TOLERANCE * nominal
}

// ---------------------------------------------------------------------------------------
// The calibration run.
// ---------------------------------------------------------------------------------------

/// One measured link.
#[derive(Debug, Clone)]
pub struct Row {
    pub node: String,
    /// Link name, or a description for the LAN and the set_rate check.
    pub link: String,
    pub rate_bps: u64,
    pub down_bps: f64,
    pub up_bps: f64,
    /// Nominal RTT; `None` for the LAN (bound: [`LAN_RTT_LIMIT`]).
    pub nominal_rtt: Option<Duration>,
    pub rtt: Duration,
    pub tries: usize,
    pub ok: bool,
}

impl Row {
    fn judge(&mut self) {
        let rtt_ok = match self.nominal_rtt {
            Some(n) => within(self.rtt.as_secs_f64(), n.as_secs_f64()),
            None => self.rtt < LAN_RTT_LIMIT,
        };
        let rate = self.rate_bps as f64;
        self.ok = rtt_ok && within(self.down_bps, rate) && within(self.up_bps, rate);
    }
}

/// One profile's rows.
#[derive(Debug, Clone)]
pub struct ProfileReport {
    pub profile: String,
    pub rows: Vec<Row>,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub command: String,
    pub date: String,
    pub machine: String,
    pub load: String,
    pub profiles: Vec<ProfileReport>,
}

/// Measures `path` up to `attempts` times (stopping at the first in tolerance).
async fn measure_row(lab: &Lab, path: &Path, server: SocketAddr, mut row: Row, attempts: usize) -> Result<Row> {
    for i in 1..=attempts.max(1) {
        row.tries = i;
        row.rtt = measure_rtt(lab, path, server)?;
        row.down_bps = measure_download(lab, path, server).await?;
        row.up_bps = measure_upload(lab, path, server).await?;
        row.judge();
        eprintln!("  {}", row_line(&row));
        if row.ok {
            break;
        }
    }
    Ok(row)
}

fn row_line(r: &Row) -> String {
    format!(
        "{:8} {:22} rate {:6.1} Mbit: down {:7.2} up {:7.2} | rtt {:>4} ms: {:7.2} ms  try {} {}",
        r.node,
        r.link,
        r.rate_bps as f64 / 1e6,
        r.down_bps / 1e6,
        r.up_bps / 1e6,
        r.nominal_rtt.map_or("-".to_owned(), |d| d.as_millis().to_string()),
        r.rtt.as_secs_f64() * 1e3,
        r.tries,
        verdict(r)
    )
}

fn verdict(r: &Row) -> &'static str {
    if r.ok {
        "ok"
    } else {
        "out of 10%"
    }
}

/// Builds `p`'s lab, measures every link (and the LAN, and the set_rate check), tears down.
pub async fn calibrate_profile(p: &Profile, attempts: usize) -> Result<ProfileReport> {
    let lab = Lab::build(p).with_context(|| format!("building the {} lab", p.name))?;
    let server = Server::start(&lab)?;
    let mut rows = Vec::new();
    for u in lab.uplinks().to_vec() {
        let (node, link) = (u.node.as_str(), u.spec.name);
        // Loss caps a single TCP flow far below the link rate (Mathis), so the lossy link's
        // rate and RTT are measured with loss off; loss itself is checked separately.
        let control = lab.delay_control(node, link)?;
        control.set_loss(0.0);
        let row = Row {
            node: node.to_owned(),
            link: if u.spec.loss > 0.0 {
                format!("{link} (loss off)")
            } else {
                link.to_owned()
            },
            rate_bps: u.spec.rate_bps,
            down_bps: 0.0,
            up_bps: 0.0,
            nominal_rtt: Some(u.spec.rtt),
            rtt: Duration::ZERO,
            tries: 0,
            ok: false,
        };
        let row = measure_row(&lab, &uplink_path(&lab, node, link), server.addr, row, attempts).await;
        control.set_loss(u.spec.loss);
        rows.push(row?);
    }
    if let (Some(rate), Some(home_ip)) = (p.lan_rate_bps, lab.lan_ip("home")) {
        // The LAN: phone-1 downloads from and uploads to a server on home's LAN address.
        let lan_server = Server::start_at(&lab, lab.node_ns("home"), home_ip)?;
        let row = Row {
            node: "phone-1".to_owned(),
            link: format!("{LAN_IFACE} (to home)"),
            rate_bps: rate,
            down_bps: 0.0,
            up_bps: 0.0,
            nominal_rtt: None,
            rtt: Duration::ZERO,
            tries: 0,
            ok: false,
        };
        rows.push(measure_row(&lab, &lan_path(&lab, "phone-1"), lan_server.addr, row, attempts).await?);
    }
    if let Some(u) = lab.uplinks().iter().find(|u| u.node == "home" && u.spec.name == "adsl") {
        // set_rate takes effect at runtime: adsl at 2 Mbit/s.
        let rtt = u.spec.rtt;
        lab.set_rate("home", "adsl", SET_RATE_BPS)?;
        let row = Row {
            node: "home".to_owned(),
            link: format!("adsl set_rate {} Mbit", SET_RATE_BPS / 1_000_000),
            rate_bps: SET_RATE_BPS,
            down_bps: 0.0,
            up_bps: 0.0,
            nominal_rtt: Some(rtt),
            rtt: Duration::ZERO,
            tries: 0,
            ok: false,
        };
        rows.push(measure_row(&lab, &uplink_path(&lab, "home", "adsl"), server.addr, row, attempts).await?);
    }
    drop(server);
    drop(lab);
    Ok(ProfileReport {
        profile: p.name.to_owned(),
        rows,
    })
}

impl ProfileReport {
    /// The markdown table of this profile.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "| node | link | rate Mbit/s | down Mbit/s | down/rate | up Mbit/s | up/rate \
             | RTT ms | measured RTT ms | RTT ratio | tries | result |\n",
        );
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for r in &self.rows {
            let rate = r.rate_bps as f64;
            let (nominal, ratio) = match r.nominal_rtt {
                Some(n) => (
                    format!("{}", n.as_millis()),
                    format!("{:.3}", r.rtt.as_secs_f64() / n.as_secs_f64()),
                ),
                None => (format!("< {}", LAN_RTT_LIMIT.as_millis()), "–".to_owned()),
            };
            s.push_str(&format!(
                "| {} | {} | {:.1} | {:.2} | {:.3} | {:.2} | {:.3} | {} | {:.2} | {} | {} | {} |\n",
                r.node,
                r.link,
                rate / 1e6,
                r.down_bps / 1e6,
                r.down_bps / rate,
                r.up_bps / 1e6,
                r.up_bps / rate,
                nominal,
                r.rtt.as_secs_f64() * 1e3,
                ratio,
                r.tries,
                verdict(r)
            ));
        }
        s
    }
}

impl Report {
    /// Links out of tolerance, over every profile.
    pub fn out_of_tolerance(&self) -> Vec<String> {
        self.profiles
            .iter()
            .flat_map(|p| {
                p.rows
                    .iter()
                    .filter(|r| !r.ok)
                    .map(move |r| format!("{}/{}/{}", p.profile, r.node, r.link))
            })
            .collect()
    }

    /// The whole report: what is measured, how, and a table per profile.
    pub fn markdown(&self) -> String {
        let mut s = String::from("# Lab calibration: do the namespace lab's links match their profiles?\n\n");
        s.push_str(&format!(
            "Written by `lab calibrate` (`crates/lab/src/calibrate.rs`). For each profile it builds the \
             namespace lab alone and measures every uplink from a socket bound to the uplink in the \
             node's namespace, against a server in the internet namespace: the RTT (median of 9 TCP \
             connects, SYN to SYN-ACK) and the download and upload goodput of one TCP flow (median of \
             {} ms buckets after a warm-up of 1 s + 2 RTT, 2 s measured; the rate is TCP goodput, which \
             is what the profile's rate means). The lossy link is measured with its loss off, since loss \
             caps a single flow far below the link rate (the loss is counted by the `loss_matches_profile` \
             test). The LAN (in `peers`) is measured from phone-1 to home over `lan0`, and must have an \
             RTT under {} ms. The `set_rate` row sets `home/adsl` to {} Mbit/s at runtime and measures \
             it again. A link is ok when down, up and RTT are all within {}% of nominal; each link gets \
             up to `--attempts` tries and the table shows the last. The command exits non-zero when any \
             link is out of tolerance. The profile tests in `crates/lab/tests/netns.rs` time nothing: they \
             check the shaping configured in the kernel (tc), the delay lines' settings and that data \
             moves through every link. \
             Re-run with `nice -n 10 cargo run -p booster-lab --release -- calibrate [PROFILE...] \
             [--out FILE]` (as root; default: all four profiles, written here).\n\n",
            BUCKET.as_millis(),
            LAN_RTT_LIMIT.as_millis(),
            SET_RATE_BPS / 1_000_000,
            (TOLERANCE * 100.0).round()
        ));
        s.push_str(&format!(
            "Command: `{}`, at {} on {}; load average at the start: {}.\n",
            self.command, self.date, self.machine, self.load
        ));
        for p in &self.profiles {
            s.push_str(&format!("\n## {}\n\n", p.profile));
            s.push_str(&p.table());
        }
        s
    }
}

/// Measures the profiles one at a time and returns the report.
pub fn measure(args: &CalibrateArgs) -> Result<Report> {
    let names: Vec<String> = if args.profiles.is_empty() {
        profile::PROFILE_NAMES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.profiles.clone()
    };
    let profiles = names
        .iter()
        .map(|n| {
            profile::profile(n)
                .ok_or_else(|| anyhow!("unknown profile `{n}` (try: {})", profile::PROFILE_NAMES.join(", ")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut report = Report {
        command: command_line(),
        date: date(),
        machine: machine(),
        load: load_average(),
        profiles: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for p in &profiles {
        eprintln!("calibrating {} ...", p.name);
        let r = rt.block_on(calibrate_profile(p, args.attempts))?;
        println!("\n## {}\n\n{}", r.profile, r.table());
        report.profiles.push(r);
    }
    Ok(report)
}

/// `lab calibrate`: measures, prints, writes the markdown, and fails when any link is out of
/// tolerance (after writing, so the figures are kept).
pub fn run(args: CalibrateArgs) -> Result<()> {
    let report = measure(&args)?;
    if args.out.as_os_str() != "-" {
        std::fs::write(&args.out, report.markdown()).with_context(|| format!("writing {}", args.out.display()))?;
        println!("wrote {}", args.out.display());
    }
    let out = report.out_of_tolerance();
    if !out.is_empty() {
        bail!(
            "{} link(s) out of {}% of nominal: {}",
            out.len(),
            (TOLERANCE * 100.0).round(),
            out.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(down: f64, up: f64, rtt_ms: u64, nominal_rtt: Option<u64>) -> Row {
        let mut r = Row {
            node: "home".into(),
            link: "adsl".into(),
            rate_bps: 4_000_000,
            down_bps: down,
            up_bps: up,
            nominal_rtt: nominal_rtt.map(Duration::from_millis),
            rtt: Duration::from_millis(rtt_ms),
            tries: 1,
            ok: false,
        };
        r.judge();
        r
    }

    #[test]
    fn a_row_is_ok_only_when_rates_and_rtt_are_within_tolerance() {
        assert!(row(3.9e6, 4.1e6, 31, Some(30)).ok);
        assert!(!row(3.5e6, 4.0e6, 30, Some(30)).ok, "download 12% low");
        assert!(!row(4.0e6, 4.5e6, 30, Some(30)).ok, "upload 12% high");
        assert!(!row(4.0e6, 4.0e6, 34, Some(30)).ok, "RTT 13% high");
        assert!(row(4.0e6, 4.0e6, 1, None).ok, "LAN RTT under the bound");
        assert!(!row(4.0e6, 4.0e6, 6, None).ok, "LAN RTT over the bound");
    }

    #[test]
    fn the_report_names_what_is_out_of_tolerance() {
        let report = Report {
            command: "calibrate".into(),
            date: String::new(),
            machine: String::new(),
            load: String::new(),
            profiles: vec![ProfileReport {
                profile: "home".into(),
                rows: vec![row(4.0e6, 4.0e6, 30, Some(30)), row(2.0e6, 4.0e6, 30, Some(30))],
            }],
        };
        assert_eq!(report.out_of_tolerance(), ["home/home/adsl"]);
        let md = report.markdown();
        assert!(md.contains("| home | adsl | 4.0 | 4.00 | 1.000 |"), "{md}");
        assert!(md.contains("| out of 10% |"), "{md}");
    }
}

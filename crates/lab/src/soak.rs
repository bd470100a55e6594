//! `lab soak`: mixed traffic through a home node for N minutes while a chaos loop cuts,
//! blackholes and restores uplinks, kills and restarts a peer, and restarts the relay.
//!
//! The `peers` lab: home (adsl) borrows the 4G uplinks of phone-1 and phone-2 over the peer
//! network and bonds `:7000` through `booster relay` in the internet namespace, with `:7007`
//! (an echo server) redundant. Four workloads loop until the end ([`Workload`]):
//! - `parallel`: 6 × 5 MB curls through home's SOCKS5 proxy, each checked by SHA-256;
//! - `get`: `booster get --node <home api>` of 20 MB with `--sha256`, checked again here;
//! - `bonded`: one 20 MB curl of the origin on the bonded port `:7000`, SHA-256;
//! - `redundant`: one line every 200 ms to the echo server; every echo must match.
//!
//! What is judged:
//! - every transfer completes with the right bytes, or fails; each failure is attributed to the
//!   chaos events overlapping it (plus [`SETTLE`] after each event), and the redundant session
//!   may only be reset by a relay restart;
//! - home's RSS, open fds, threads and runtime tasks, sampled every [`SAMPLE_EVERY`], idle
//!   after warm-up vs idle at the end, and RSS over the run (flat, or growing?);
//! - home's usage counters of its local uplink vs the kernel's interface counters over the same
//!   interval, headers taken out per packet ([`Mark`]).
//!
//! Everything runs in `bt-` namespaces owned by one [`Lab`], torn down on drop (Ctrl-C sets a
//! flag that every wait checks, so the drop still runs).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::bench::bond::Echo;
use crate::bench::procs::{self, Proc};
use crate::bench::{loopback, net};
use crate::netns;
use crate::origin::{self, Faults, Origin};
use crate::profile;
use crate::topology::Lab;

/// The origin also listens here; home bonds this port (`--bond :7000`).
pub const BOND_PORT: u16 = 7000;
/// The echo server; home sends it redundantly (`--redundant :7007`).
pub const ECHO_PORT: u16 = 7007;
pub const RELAY_PORT: u16 = 4886;
const PHONES: [&str; 2] = ["phone-1", "phone-2"];
const PARALLEL: usize = 6;
const PARALLEL_BYTES: u64 = 5_000_000;
const GET_BYTES: u64 = 20_000_000;
const BONDED_BYTES: u64 = 20_000_000;
/// Keystroke-like pacing of the interactive session.
const ECHO_GAP: Duration = Duration::from_millis(200);
/// An echo slower than this is logged (the session stalled: no path carried it).
const SLOW_ECHO: Duration = Duration::from_secs(2);
/// An echo later than this ends the session (counted as a reset).
const ECHO_TIMEOUT: Duration = Duration::from_secs(30);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Idle time before the baseline and before the final sample.
const IDLE: Duration = Duration::from_secs(10);
/// A failure this long after a chaos event ended is still attributed to it (reconnects,
/// probes and peer handshakes take a few seconds).
const SETTLE: f64 = 10.0;
/// Open fds at the end may differ from the baseline by this much (peer and bond reconnects
/// in progress, the API connection of the sampler).
pub const FD_SLACK: i64 = 8;
/// Per packet bytes on the uplinks that are not TCP payload: IPv4 (20) + TCP with timestamps
/// (32), plus the link header (14 on Ethernet, 0 on a TUN).
const L3L4_HEADER: u64 = 52;

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// How long the mixed traffic and the chaos loop run.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Seed of the chaos schedule.
    #[arg(long, default_value_t = 9)]
    pub seed: u64,
    /// Markdown summary ("-": none).
    #[arg(long, default_value = "docs/soak.md")]
    pub out: PathBuf,
    /// The booster binary (build it with `cargo build --release -p booster`).
    #[arg(long, default_value = "target/release/booster")]
    pub booster: PathBuf,
}

/// The four kinds of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    Parallel,
    Get,
    Bonded,
    Redundant,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Parallel => "parallel 6×5 MB (SOCKS5)",
            Workload::Get => "booster get --node 20 MB",
            Workload::Bonded => "bonded 20 MB (:7000)",
            Workload::Redundant => "redundant echo session (:7007)",
        }
    }
}

/// One chaos event, in seconds since the start of the soak.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: f64,
    pub until: f64,
    pub kind: &'static str,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok,
    /// Failed with an error (no data accepted).
    Failed(String),
    /// Completed with the wrong bytes: always a bug.
    Corrupt(String),
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub what: Workload,
    pub start: f64,
    pub end: f64,
    pub bytes: u64,
    pub outcome: Outcome,
}

/// How a failure is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// The relay was restarting: the bonded and redundant streams had no path.
    NoPath,
    /// A chaos event overlapped it (the event's kinds are listed with it).
    DuringFault,
    /// No event explains it, or the redundant session reset without a relay restart.
    Unexplained,
    /// Wrong bytes.
    Corrupt,
}

/// One resource sample of home's process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub t: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
    /// Tasks alive on home's runtime (`/api/status` `node.tasks`); 0 if the API did not answer.
    pub tasks: u64,
    /// Heap allocated and not freed (`node.heap_bytes`): level under steady traffic unless
    /// something leaks, whatever RSS does. 0 if unknown.
    pub heap_kib: u64,
    /// Heap the allocator holds from the OS (`node.heap_held_bytes`): its high-water mark,
    /// which RSS follows until the node trims the heap when quiet (trimmed pages still count).
    pub heap_held_kib: u64,
}

/// Usage vs kernel counters of one uplink over the measured interval.
#[derive(Debug, Clone)]
pub struct UsageCheck {
    pub uplink: String,
    pub api_bytes: u64,
    pub kernel_bytes: u64,
    pub kernel_packets: u64,
    pub header_per_packet: u64,
    /// `api / (kernel bytes − packets × header)`.
    pub ratio: f64,
}

pub struct Summary {
    pub secs: f64,
    pub seed: u64,
    pub events: Vec<Event>,
    pub transfers: Vec<Transfer>,
    pub echo_lines: u64,
    pub echo_max_ms: f64,
    pub baseline: Sample,
    pub last: Sample,
    pub samples: Vec<Sample>,
    pub usage: Vec<UsageCheck>,
    pub command: String,
}

impl Summary {
    /// Every failure with its verdict and the event kinds overlapping it.
    pub fn judged(&self) -> Vec<(&Transfer, Verdict, Vec<String>)> {
        self.transfers
            .iter()
            .filter(|t| t.outcome != Outcome::Ok)
            .map(|t| {
                let over: Vec<&Event> = self
                    .events
                    .iter()
                    .filter(|e| e.at <= t.end && e.until + SETTLE >= t.start)
                    .collect();
                let names = over.iter().map(|e| format!("{} {}", e.kind, e.target)).collect();
                let relay = over.iter().any(|e| e.kind == "relay-restart");
                let v = match (&t.outcome, t.what) {
                    (Outcome::Corrupt(_), _) => Verdict::Corrupt,
                    (_, Workload::Bonded | Workload::Redundant) if relay => Verdict::NoPath,
                    (_, Workload::Redundant) => Verdict::Unexplained,
                    _ if !over.is_empty() => Verdict::DuringFault,
                    _ => Verdict::Unexplained,
                };
                (t, v, names)
            })
            .collect()
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.judged().iter().filter(|j| j.1 == v).count()
    }

    /// RSS and heap per tenth of the run (the highest and the last sample), so growth shows as
    /// a trend rather than as one number: a leak climbs tenth after tenth in the heap's bytes
    /// in use; an allocator settling on its working set climbs early in RSS and then stays.
    fn rss_over_time(&self, s: &mut String) {
        let tenths = 10;
        let span = self.secs / tenths as f64;
        if self.samples.is_empty() || span <= 0.0 {
            return;
        }
        let mib = |k: u64| k as f64 / 1024.0;
        s.push_str(
            "Memory over the run (MiB; the highest and the last 10 s sample of each tenth; heap: \
             allocated and not freed, and held by the allocator):\n\n",
        );
        s.push_str(
            "| from (s) | RSS highest | RSS last | heap in use highest | heap in use last | heap held last | tasks (last) |\n\
             |---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut peaks = Vec::new();
        let mut heap_peaks = Vec::new();
        for i in 0..tenths {
            let (from, to) = (span * i as f64, span * (i + 1) as f64);
            let part: Vec<&Sample> = self.samples.iter().filter(|x| x.t >= from && x.t < to).collect();
            let (Some(high), Some(last)) = (part.iter().map(|x| x.rss_kib).max(), part.last()) else {
                continue;
            };
            let heap_high = part.iter().map(|x| x.heap_kib).max().unwrap_or(0);
            peaks.push(high);
            heap_peaks.push(heap_high);
            s.push_str(&format!(
                "| {from:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
                mib(high),
                mib(last.rss_kib),
                mib(heap_high),
                mib(last.heap_kib),
                mib(last.heap_held_kib),
                last.tasks
            ));
        }
        if peaks.len() >= 4 {
            let halves = |v: &[u64]| {
                let half = v.len() / 2;
                let first = *v[..half].iter().max().unwrap_or(&0);
                let second = *v[half..].iter().max().unwrap_or(&0);
                (mib(first), mib(second))
            };
            let (first, second) = halves(&peaks);
            let (heap_first, heap_second) = halves(&heap_peaks);
            s.push_str(&format!(
                "\nHighest RSS in the first half {first:.1} MiB, in the second half {second:.1} MiB \
                 ({:+.1} MiB); highest heap in use {heap_first:.1} and {heap_second:.1} MiB ({:+.1} MiB).\n",
                second - first,
                heap_second - heap_first
            ));
        }
        s.push('\n');
    }

    pub fn fd_delta(&self) -> i64 {
        self.last.fds as i64 - self.baseline.fds as i64
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let w = |s: &mut String, l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        w(
            &mut s,
            format!("# Soak: {:.0} minutes of mixed traffic under chaos", self.secs / 60.0),
        );
        w(&mut s, String::new());
        w(
            &mut s,
            format!(
                "Command: `{}` (seed {}). Ran {:.1} min of traffic and chaos on the `peers` lab: home (adsl 4 Mbit/s, \
                 30 ms) borrows phone-1/4g (20 Mbit/s, 60 ms) and phone-2/4g (20 Mbit/s, 45 ms) and bonds `:{BOND_PORT}` \
                 through `booster relay`, with `:{ECHO_PORT}` redundant. Code: `crates/lab/src/soak.rs`; a 60 s version \
                 is a test (`crates/lab/tests/soak_smoke.rs`), part of `cargo test --workspace`.",
                self.command,
                self.seed,
                self.secs / 60.0
            ),
        );
        w(&mut s, String::new());
        w(&mut s, "## Transfers".into());
        w(&mut s, String::new());
        w(
            &mut s,
            "| workload | ok | failed, no path (relay down) | failed during a fault | unexplained | wrong bytes | MB verified |"
                .into(),
        );
        w(&mut s, "|---|---:|---:|---:|---:|---:|---:|".into());
        let judged = self.judged();
        for wl in [Workload::Parallel, Workload::Get, Workload::Bonded, Workload::Redundant] {
            let ok: Vec<&Transfer> = self
                .transfers
                .iter()
                .filter(|t| t.what == wl && t.outcome == Outcome::Ok)
                .collect();
            let n = |v: Verdict| judged.iter().filter(|j| j.0.what == wl && j.1 == v).count();
            let ok_s = if wl == Workload::Redundant {
                format!(
                    "{} sessions, {} echoes (max round trip {:.0} ms)",
                    ok.len(),
                    self.echo_lines,
                    self.echo_max_ms
                )
            } else {
                ok.len().to_string()
            };
            w(
                &mut s,
                format!(
                    "| {} | {} | {} | {} | {} | {} | {:.0} |",
                    wl.name(),
                    ok_s,
                    n(Verdict::NoPath),
                    n(Verdict::DuringFault),
                    n(Verdict::Unexplained),
                    n(Verdict::Corrupt),
                    ok.iter().map(|t| t.bytes).sum::<u64>() as f64 / 1e6
                ),
            );
        }
        w(&mut s, String::new());
        w(
            &mut s,
            format!(
                "A failure is attributed to every chaos event it overlaps (until {SETTLE:.0} s after the event ended). \
                 The redundant session counts as reset (a row in the failures) when an echo fails or takes over {} s; it \
                 reconnects at once; only a relay restart may reset it. A redundant session that ended only because the \
                 soak ended counts as ok.",
                ECHO_TIMEOUT.as_secs()
            ),
        );
        w(&mut s, String::new());
        if !judged.is_empty() {
            w(&mut s, "Every failure:".into());
            w(&mut s, String::new());
            w(
                &mut s,
                "| t (s) | workload | verdict | overlapping events | error |".into(),
            );
            w(&mut s, "|---:|---|---|---|---|".into());
            for (t, v, names) in &judged {
                let msg = match &t.outcome {
                    Outcome::Failed(m) | Outcome::Corrupt(m) => m.replace('|', "/").replace('\n', " "),
                    Outcome::Ok => String::new(),
                };
                w(
                    &mut s,
                    format!(
                        "| {:.1}–{:.1} | {} | {:?} | {} | {} |",
                        t.start,
                        t.end,
                        wl_short(t.what),
                        v,
                        names.join(", "),
                        msg.chars().take(160).collect::<String>()
                    ),
                );
            }
            w(&mut s, String::new());
        }
        w(&mut s, "## Chaos events".into());
        w(&mut s, String::new());
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &self.events {
            *kinds.entry(e.kind).or_default() += 1;
        }
        w(
            &mut s,
            format!(
                "{} events: {}.",
                self.events.len(),
                kinds
                    .iter()
                    .map(|(k, n)| format!("{n} × {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        w(&mut s, String::new());
        w(&mut s, "| t (s) | event | target | lasted (s) |".into());
        w(&mut s, "|---:|---|---|---:|".into());
        for e in &self.events {
            w(
                &mut s,
                format!("| {:.1} | {} | {} | {:.1} |", e.at, e.kind, e.target, e.until - e.at),
            );
        }
        w(&mut s, String::new());
        w(&mut s, "## Home node: memory, fds, threads".into());
        w(&mut s, String::new());
        let max_rss = self.samples.iter().map(|x| x.rss_kib).max().unwrap_or(0);
        let max_fds = self.samples.iter().map(|x| x.fds).max().unwrap_or(0);
        let max_thr = self.samples.iter().map(|x| x.threads).max().unwrap_or(0);
        let max_tasks = self.samples.iter().map(|x| x.tasks).max().unwrap_or(0);
        w(
            &mut s,
            "| | idle after warm-up | idle at the end | max under load (every 10 s) |".into(),
        );
        w(&mut s, "|---|---:|---:|---:|".into());
        w(
            &mut s,
            format!(
                "| RSS (MiB) | {:.1} | {:.1} | {:.1} |",
                self.baseline.rss_kib as f64 / 1024.0,
                self.last.rss_kib as f64 / 1024.0,
                max_rss as f64 / 1024.0
            ),
        );
        let max_heap = self.samples.iter().map(|x| x.heap_kib).max().unwrap_or(0);
        w(
            &mut s,
            format!(
                "| heap in use (MiB) | {:.1} | {:.1} | {:.1} |",
                self.baseline.heap_kib as f64 / 1024.0,
                self.last.heap_kib as f64 / 1024.0,
                max_heap as f64 / 1024.0
            ),
        );
        w(
            &mut s,
            format!("| open fds | {} | {} | {} |", self.baseline.fds, self.last.fds, max_fds),
        );
        w(
            &mut s,
            format!(
                "| threads | {} | {} | {} |",
                self.baseline.threads, self.last.threads, max_thr
            ),
        );
        w(
            &mut s,
            format!(
                "| runtime tasks | {} | {} | {} |",
                self.baseline.tasks, self.last.tasks, max_tasks
            ),
        );
        w(&mut s, String::new());
        w(
            &mut s,
            format!(
                "fds at the end minus the baseline: {:+} (slack ±{FD_SLACK}); tasks {:+}. {} samples.",
                self.fd_delta(),
                self.last.tasks as i64 - self.baseline.tasks as i64,
                self.samples.len()
            ),
        );
        w(&mut s, String::new());
        self.rss_over_time(&mut s);
        w(&mut s, "## Usage counters vs interface counters".into());
        w(&mut s, String::new());
        w(
            &mut s,
            "Over the same interval (idle after warm-up to idle at the end, both after 10 s without traffic), the \
             node's `/api/status` `rx_bytes` and `tx_bytes` of the uplink (what booster counts: TCP payload on \
             sockets bound to it, bond paths included, as they cross the socket) against the kernel's interface \
             counters (`ip -s -j link`) of the node-side interface, per direction. The kernel counts headers, so \
             per packet a fixed IPv4 + TCP-with-timestamps header (52 bytes) plus the link header is taken out. \
             That is exact for full data segments; ACKs carrying SACK blocks are longer than the fixed header, so \
             for the direction that carries mostly ACKs (tx: home downloads) the estimate overstates the payload \
             and the ratio reads low. The rx row (downloads: payload we know moved, SHA-checked) is the one the 1% \
             bar applies to. Retransmitted segments are also in the kernel's figure and not in booster's."
                .into(),
        );
        w(&mut s, String::new());
        w(
            &mut s,
            "| uplink | booster (MB) | kernel (MB, with headers) | packets | header/packet | ratio |".into(),
        );
        w(&mut s, "|---|---:|---:|---:|---:|---:|".into());
        for u in &self.usage {
            w(
                &mut s,
                format!(
                    "| {} | {:.3} | {:.3} | {} | {} | {:.4} |",
                    u.uplink,
                    u.api_bytes as f64 / 1e6,
                    u.kernel_bytes as f64 / 1e6,
                    u.kernel_packets,
                    u.header_per_packet,
                    u.ratio
                ),
            );
        }
        s
    }
}

fn wl_short(w: Workload) -> &'static str {
    match w {
        Workload::Parallel => "parallel",
        Workload::Get => "get",
        Workload::Bonded => "bonded",
        Workload::Redundant => "redundant",
    }
}

/// What the workers share with the chaos loop.
struct Shared {
    t0: Instant,
    stop: AtomicBool,
    seed: AtomicU64,
    transfers: Mutex<Vec<Transfer>>,
    echo_lines: AtomicU64,
    echo_max_us: AtomicU64,
    samples: Mutex<Vec<Sample>>,
}

impl Shared {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || procs::check_interrupt().is_err()
    }

    fn next_seed(&self) -> u64 {
        self.seed.fetch_add(1, Ordering::SeqCst)
    }

    /// Records a finished transfer; one cancelled by the end of the soak (`Failed("")`) is
    /// not counted.
    fn record(&self, t: Transfer) {
        if t.outcome == Outcome::Failed(String::new()) {
            return;
        }
        if t.outcome != Outcome::Ok {
            println!("[{:7.1} s] {} FAILED: {:?}", t.end, wl_short(t.what), t.outcome);
        }
        self.transfers.lock().unwrap_or_else(|e| e.into_inner()).push(t);
    }
}

/// Everything the workers need to reach home.
#[derive(Clone)]
struct Target {
    bin: PathBuf,
    home_ns: String,
    proxy: SocketAddr,
    api: SocketAddr,
    origin_ip: std::net::Ipv4Addr,
    dl: PathBuf,
}

/// Runs the soak; returns the summary (the caller prints and writes it).
pub fn run(args: &SoakArgs) -> Result<Summary> {
    if !netns::is_root() {
        bail!("the soak needs root (network namespaces)");
    }
    netns::check_prereqs()?;
    procs::install_interrupt_handler();
    let bin = std::fs::canonicalize(&args.booster)
        .with_context(|| format!("{} (cargo build --release -p booster)", args.booster.display()))?;
    let work = std::env::temp_dir().join(format!("bt-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    println!("soak: logs in {}", work.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _enter = rt.enter();

    let prof = profile::profile("peers").ok_or_else(|| anyhow!("no `peers` profile"))?;
    println!("building the `peers` lab ...");
    let lab = Lab::build(&prof)?;
    let inet = lab.internet_ns().to_owned();
    let serve = |port: u16| -> Result<Origin> {
        let addr = net::origin_addr(&lab, port);
        let l = netns::in_netns(&inet, move || std::net::TcpListener::bind(addr))??;
        Ok(Origin::serve(l, Faults::default())?)
    };
    let _origin = serve(80)?;
    let _bond_origin = serve(BOND_PORT)?;
    let _probe = net::answer_default_probe(&lab)?;
    let _echo = Echo::start(&inet, net::origin_addr(&lab, ECHO_PORT))?;
    let probe = net::origin_addr(&lab, 80).to_string();

    let secret = work.join("secret");
    std::fs::write(&secret, format!("{:032x}\n", rand::random::<u128>()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    }
    let ctx = Ctx {
        bin: bin.clone(),
        lab: &lab,
        work: work.clone(),
        secret: secret.clone(),
        probe: probe.clone(),
    };
    let mut relay = ctx.start_relay()?;
    let mut phones: Vec<net::Booster> = Vec::new();
    for p in PHONES {
        phones.push(ctx.start_phone(p)?);
    }
    let home_ns = lab.node_ns("home").to_owned();
    let mut extra: Vec<String> = [
        "--name",
        "home",
        "--secret-file",
        &secret.to_string_lossy(),
        "--no-mdns",
    ]
    .map(str::to_owned)
    .to_vec();
    for p in PHONES {
        let lan = lab.lan_ip(p).ok_or_else(|| anyhow!("no LAN address for {p}"))?;
        extra.extend(["--peer".to_owned(), lan.to_string()]);
    }
    extra.extend([
        "--relay".to_owned(),
        net::origin_addr(&lab, RELAY_PORT).to_string(),
        "--bond".to_owned(),
        format!(":{BOND_PORT}"),
        "--redundant".to_owned(),
        format!(":{ECHO_PORT}"),
    ]);
    let data = work.join("home-data");
    std::fs::create_dir_all(&data)?;
    println!("starting home: adsl + both phones + the relay ...");
    let mut home = net::Booster::start(
        &bin,
        &home_ns,
        &["adsl".to_owned()],
        &extra,
        1,
        net::lo(1080),
        net::lo(4884),
        &probe,
        &data,
        &work.join("home.log"),
    )?;
    let sources: Vec<String> = ["adsl", "phone-1/4g", "phone-2/4g"].map(str::to_owned).to_vec();
    home.wait_sources(&sources, Duration::from_secs(60))?;
    let home_pid = home.proc.pid();
    let dl = work.join("dl");
    std::fs::create_dir_all(&dl)?;
    let target = Target {
        bin: bin.clone(),
        home_ns: home_ns.clone(),
        proxy: home.proxy,
        api: home.api,
        origin_ip: lab.origin_ip(),
        dl,
    };

    let shared = Shared {
        t0: Instant::now(),
        stop: AtomicBool::new(false),
        seed: AtomicU64::new(args.seed * 1_000_000 + 1),
        transfers: Mutex::new(Vec::new()),
        echo_lines: AtomicU64::new(0),
        echo_max_us: AtomicU64::new(0),
        samples: Mutex::new(Vec::new()),
    };
    // Warm-up: one of each, not counted; then idle, then the baseline. Paths, peers and
    // capacities are still being learned, so a failed round is tried again (twice at most);
    // wrong bytes end the run at once.
    println!("warm-up: one round of each workload ...");
    let rounds: [&dyn Fn() -> Vec<Transfer>; 3] = [
        &|| parallel_round(&target, &shared),
        &|| vec![get_one(&target, &shared)],
        &|| vec![bonded_one(&target, &shared)],
    ];
    for round in rounds {
        for attempt in 1..=3 {
            let failed = round().into_iter().find(|t| t.outcome != Outcome::Ok);
            let Some(t) = failed else { break };
            let corrupt = matches!(t.outcome, Outcome::Corrupt(_));
            if corrupt || attempt == 3 {
                bail!(
                    "warm-up {} failed: {:?}\n{}\n{}",
                    wl_short(t.what),
                    t.outcome,
                    home.proc.log_tail(),
                    relay.log_tail()
                );
            }
            println!("warm-up {} failed ({:?}); again", wl_short(t.what), t.outcome);
            procs::sleep(Duration::from_secs(2))?;
        }
    }
    warm_echo(&target).context("warm-up echo session")?;
    procs::sleep(IDLE)?;
    let baseline = sample(home_pid, &target, 0.0)?;
    let marks0 = usage_marks(&lab, &home)?;
    println!(
        "baseline (idle after warm-up): RSS {:.1} MiB (heap {:.1} in use), {} fds, {} threads, {} tasks",
        baseline.rss_kib as f64 / 1024.0,
        baseline.heap_kib as f64 / 1024.0,
        baseline.fds,
        baseline.threads,
        baseline.tasks
    );

    let shared = Shared {
        t0: Instant::now(),
        ..shared
    };
    let dur = Duration::from_secs_f64(args.minutes * 60.0);
    let mut events: Vec<Event> = Vec::new();
    let chaos = std::thread::scope(|sc| {
        let sh = &shared;
        let tg = &target;
        sc.spawn(move || {
            while !sh.stopped() {
                for t in parallel_round(tg, sh) {
                    sh.record(t);
                }
            }
        });
        sc.spawn(move || {
            while !sh.stopped() {
                let t = get_one(tg, sh);
                sh.record(t);
            }
        });
        sc.spawn(move || {
            while !sh.stopped() {
                let t = bonded_one(tg, sh);
                sh.record(t);
            }
        });
        sc.spawn(move || echo_session(tg, sh));
        sc.spawn(move || {
            while !sh.stopped() {
                if let Ok(s) = sample(home_pid, tg, sh.now()) {
                    sh.samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                }
                let end = Instant::now() + SAMPLE_EVERY;
                while Instant::now() < end && !sh.stopped() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        let r = chaos_loop(
            &ctx,
            &shared,
            dur,
            args,
            &mut relay,
            &mut phones,
            &mut home,
            &mut events,
        );
        shared.stop.store(true, Ordering::SeqCst);
        println!("[{:7.1} s] stopping the traffic ...", shared.now());
        r
    });
    let secs = shared.now();
    // Restore everything (the chaos loop restores as it goes; this is the belt).
    for u in lab.uplinks() {
        let _ = lab.restore(&u.node, &u.iface);
    }
    chaos?;
    procs::check_interrupt()?;
    home.proc.ensure_running()?;
    home.wait_sources(&sources, Duration::from_secs(60))?;
    procs::sleep(IDLE)?;
    let last = sample(home_pid, &target, secs)?;
    let marks1 = usage_marks(&lab, &home)?;
    let usage = marks0
        .iter()
        .zip(&marks1)
        .flat_map(|(a, b)| a.check(b))
        .collect::<Vec<_>>();
    home.proc.ensure_running()?;

    let transfers = std::mem::take(&mut *shared.transfers.lock().unwrap_or_else(|e| e.into_inner()));
    let samples = std::mem::take(&mut *shared.samples.lock().unwrap_or_else(|e| e.into_inner()));
    let summary = Summary {
        secs,
        seed: args.seed,
        events,
        transfers,
        echo_lines: shared.echo_lines.load(Ordering::SeqCst),
        echo_max_ms: shared.echo_max_us.load(Ordering::SeqCst) as f64 / 1e3,
        baseline,
        last,
        samples,
        usage,
        command: format!(
            "cargo run -p booster-lab --release -- soak --minutes {} --seed {} (as root)",
            args.minutes, args.seed
        ),
    };
    home.proc.kill();
    for mut p in phones {
        p.proc.kill();
    }
    relay.kill();
    println!("tearing the lab down ...");
    drop(lab);
    let _ = std::fs::remove_dir_all(work.join("dl"));
    Ok(summary)
}

/// Starts and restarts the processes of the lab.
struct Ctx<'a> {
    bin: PathBuf,
    lab: &'a Lab,
    work: PathBuf,
    secret: PathBuf,
    probe: String,
}

impl Ctx<'_> {
    /// `booster relay --listen 10.99.0.1:4886 --secret-file F --allow 10.99.0.0/16` (as the bench).
    fn start_relay(&self) -> Result<Proc> {
        let inet = self.lab.internet_ns();
        let addr = net::origin_addr(self.lab, RELAY_PORT);
        let mut cmd = netns::exec(inet, &self.bin.to_string_lossy());
        cmd.arg("relay")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--secret-file")
            .arg(&self.secret)
            .args(["--allow", "10.99.0.0/16"])
            .env("RUST_LOG", "booster=info")
            .env("NO_COLOR", "1");
        // A fresh log per start; the previous ones are kept.
        let n = (0..)
            .find(|i| !self.work.join(format!("relay.{i}.log")).exists())
            .unwrap_or(0);
        let mut p = Proc::spawn(
            "booster relay",
            &mut cmd,
            Some(&self.work.join(format!("relay.{n}.log"))),
        )?;
        procs::wait_listening(inet, addr.into(), &mut p, Duration::from_secs(20))?;
        Ok(p)
    }

    /// A phone lending its 4g (as the bench's `peers` phase).
    fn start_phone(&self, phone: &str) -> Result<net::Booster> {
        let lan = self
            .lab
            .lan_ip(phone)
            .ok_or_else(|| anyhow!("no LAN address for {phone}"))?;
        let extra: Vec<String> = [
            "--name",
            phone,
            "--peer-listen",
            &format!("{lan}:4885"),
            "--secret-file",
            &self.secret.to_string_lossy(),
            "--no-mdns",
        ]
        .map(str::to_owned)
        .to_vec();
        let data = self.work.join(format!("{phone}-data"));
        std::fs::create_dir_all(&data)?;
        // A fresh log per start; the previous one is kept.
        let n = (0..)
            .find(|i| !self.work.join(format!("{phone}.{i}.log")).exists())
            .unwrap_or(0);
        net::Booster::start(
            &self.bin,
            self.lab.node_ns(phone),
            &["4g".to_owned()],
            &extra,
            1,
            net::lo(1080),
            net::lo(4884),
            &self.probe,
            &data,
            &self.work.join(format!("{phone}.{n}.log")),
        )
    }
}

fn sigkill(p: &mut Proc) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    p.kill();
}

/// Restores an uplink whatever happens.
struct Restore<'a>(&'a Lab, String, String);
impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = self.0.restore(&self.1, &self.2);
    }
}

#[allow(clippy::too_many_arguments)]
fn chaos_loop(
    ctx: &Ctx,
    sh: &Shared,
    dur: Duration,
    args: &SoakArgs,
    relay: &mut Proc,
    phones: &mut [net::Booster],
    home: &mut net::Booster,
    events: &mut Vec<Event>,
) -> Result<()> {
    let lab = ctx.lab;
    let mut rng = StdRng::seed_from_u64(args.seed);
    // Short runs (CI) get events more often so that each kind has a chance.
    let (gap_lo, gap_hi) = if args.minutes < 3.0 { (8.0, 15.0) } else { (20.0, 40.0) };
    let end = dur.as_secs_f64();
    let mut next: f64 = rng.random_range(gap_lo..gap_hi) / 2.0;
    let wait_until = |t: f64, home: &mut net::Booster| -> Result<()> {
        while sh.now() < t {
            procs::check_interrupt()?;
            home.proc.ensure_running()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    loop {
        wait_until(next.min(end), home)?;
        if sh.now() >= end {
            return Ok(());
        }
        let at = sh.now();
        let links: Vec<(String, String)> = lab
            .uplinks()
            .iter()
            .map(|u| (u.node.clone(), u.iface.clone()))
            .collect();
        let kind = rng.random_range(0..4u32);
        let ev = match kind {
            0 | 1 => {
                let (node, iface) = links[rng.random_range(0..links.len())].clone();
                let hold = rng.random_range(5.0..15.0);
                let what = if kind == 0 { "cut" } else { "blackhole" };
                println!("[{at:7.1} s] {what} {node}/{iface} for {hold:.1} s");
                {
                    let _g = Restore(lab, node.clone(), iface.clone());
                    if kind == 0 {
                        lab.cut(&node, &iface)?;
                    } else {
                        lab.blackhole(&node, &iface)?;
                    }
                    wait_until(at + hold, home)?;
                }
                println!("[{:7.1} s] restored {node}/{iface}", sh.now());
                Event {
                    at,
                    until: sh.now(),
                    kind: what,
                    target: format!("{node}/{iface}"),
                }
            }
            2 => {
                let i = rng.random_range(0..phones.len());
                let name = PHONES[i];
                let down = rng.random_range(5.0..10.0);
                println!("[{at:7.1} s] kill -9 {name}, restart in {down:.1} s");
                sigkill(&mut phones[i].proc);
                wait_until(at + down, home)?;
                phones[i] = ctx.start_phone(name).with_context(|| format!("restarting {name}"))?;
                println!("[{:7.1} s] {name} restarted", sh.now());
                Event {
                    at,
                    until: sh.now(),
                    kind: "kill-peer",
                    target: name.to_owned(),
                }
            }
            _ => {
                println!("[{at:7.1} s] relay restart (kill -9, start again)");
                sigkill(relay);
                *relay = ctx.start_relay().context("restarting the relay")?;
                println!("[{:7.1} s] relay listening again", sh.now());
                Event {
                    at,
                    until: sh.now(),
                    kind: "relay-restart",
                    target: "relay".to_owned(),
                }
            }
        };
        events.push(ev);
        next = at + rng.random_range(gap_lo..gap_hi);
    }
}

/// Runs `cmd` to its end, at most `timeout`; `None` when the soak stopped first (then it is
/// killed and not counted).
fn run_to_end(sh: &Shared, what: &str, cmd: &mut Command, timeout: Duration) -> Result<Option<(bool, String, String)>> {
    let mut p = Proc::spawn_piped(what, cmd)?;
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = p.try_wait()? {
            let (o, e) = p.output();
            return Ok(Some((st.success(), o, format!("{st}: {}", e.trim()))));
        }
        if sh.stopped() {
            p.kill();
            return Ok(None);
        }
        if Instant::now() >= end {
            p.kill();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn file_sha(p: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((n, hex::encode(h.finalize())))
}

/// Judges a finished download into `file` of `(seed, size)`.
fn verify(file: &Path, seed: u64, size: u64) -> Outcome {
    let r = match file_sha(file) {
        Ok((n, _)) if n != size => Outcome::Corrupt(format!("{n} bytes instead of {size}")),
        Ok((_, sha)) if sha != origin::sha256_hex(seed, size) => Outcome::Corrupt(format!("SHA-256 {sha} differs")),
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Failed(format!("reading {}: {e}", file.display())),
    };
    let _ = std::fs::remove_file(file);
    r
}

fn curl_via(tg: &Target, url: &str, out: &Path) -> Command {
    let mut cmd = procs::curl(&tg.home_ns);
    cmd.arg("-x")
        .arg(format!("socks5h://{}", tg.proxy))
        .args(["--max-time", "240", "-o"])
        .arg(out)
        .arg("-w")
        .arg(procs::CURL_W)
        .arg(url);
    cmd
}

/// Judges a curl run.
fn curl_outcome(r: (bool, String, String), out: &Path, seed: u64, size: u64) -> Outcome {
    let (ok, o, e) = r;
    if !ok {
        let _ = std::fs::remove_file(out);
        return Outcome::Failed(format!("curl {e}"));
    }
    match procs::parse_curl_w(&o) {
        Ok((_, _, 200)) => verify(out, seed, size),
        Ok((_, _, code)) => {
            let _ = std::fs::remove_file(out);
            Outcome::Failed(format!("HTTP {code}"))
        }
        Err(e) => Outcome::Failed(format!("{e}")),
    }
}

fn parallel_round(tg: &Target, sh: &Shared) -> Vec<Transfer> {
    let start = sh.now();
    let mut running = Vec::new();
    for i in 0..PARALLEL {
        let seed = sh.next_seed();
        let out = tg.dl.join(format!("par-{i}"));
        let url = format!("http://{}/file/{PARALLEL_BYTES}?seed={seed}", tg.origin_ip);
        let r = Proc::spawn_piped("curl", &mut curl_via(tg, &url, &out));
        running.push((seed, out, r));
    }
    let deadline = Instant::now() + Duration::from_secs(250);
    let mut done: Vec<Option<Transfer>> = (0..PARALLEL).map(|_| None).collect();
    loop {
        let mut all = true;
        for (i, (seed, out, p)) in running.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let outcome = match p {
                Err(e) => Some(Some(Outcome::Failed(format!("spawning curl: {e}")))),
                Ok(p) => match p.try_wait() {
                    Ok(Some(st)) => {
                        let (o, e) = p.output();
                        Some(Some(curl_outcome(
                            (st.success(), o, format!("{st}: {}", e.trim())),
                            out,
                            *seed,
                            PARALLEL_BYTES,
                        )))
                    }
                    Ok(None) if sh.stopped() => {
                        p.kill();
                        Some(None)
                    }
                    Ok(None) if Instant::now() >= deadline => {
                        p.kill();
                        Some(Some(Outcome::Failed("no end within 250 s".into())))
                    }
                    Ok(None) => None,
                    Err(e) => Some(Some(Outcome::Failed(format!("waiting for curl: {e}")))),
                },
            };
            match outcome {
                None => all = false,
                Some(o) => {
                    done[i] = Some(Transfer {
                        what: Workload::Parallel,
                        start,
                        end: sh.now(),
                        bytes: PARALLEL_BYTES,
                        // Cancelled at the end of the soak: not counted.
                        outcome: o.unwrap_or(Outcome::Failed(String::new())),
                    })
                }
            }
        }
        if all {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done.into_iter()
        .flatten()
        .filter(|t| t.outcome != Outcome::Failed(String::new()))
        .collect()
}

fn one(tg: &Target, sh: &Shared, what: Workload, mut cmd: Command, out: &Path, seed: u64, size: u64) -> Transfer {
    let start = sh.now();
    let outcome = match run_to_end(sh, wl_short(what), &mut cmd, Duration::from_secs(300)) {
        Ok(None) => Outcome::Failed(String::new()),
        Ok(Some(r)) if what == Workload::Get => {
            if r.0 {
                verify(out, seed, size)
            } else {
                let _ = std::fs::remove_file(out);
                let _ = std::fs::remove_file(out.with_extension("part"));
                let last = r.2.lines().last().unwrap_or("").to_owned();
                Outcome::Failed(format!("booster get {last}"))
            }
        }
        Ok(Some(r)) => curl_outcome(r, out, seed, size),
        Err(e) => Outcome::Failed(format!("{e:#}")),
    };
    let _ = tg;
    Transfer {
        what,
        start,
        end: sh.now(),
        bytes: size,
        outcome,
    }
}

fn get_one(tg: &Target, sh: &Shared) -> Transfer {
    let seed = sh.next_seed();
    let url = format!("http://{}/file/{GET_BYTES}?seed={seed}", tg.origin_ip);
    let sha = origin::sha256_hex(seed, GET_BYTES);
    let cmd = net::booster_get_cmd(&tg.bin, &tg.home_ns, &[], Some(tg.api), &url, &tg.dl, "get", &sha);
    one(tg, sh, Workload::Get, cmd, &tg.dl.join("get"), seed, GET_BYTES)
}

fn bonded_one(tg: &Target, sh: &Shared) -> Transfer {
    let seed = sh.next_seed();
    let out = tg.dl.join("bonded");
    let url = format!("http://{}:{BOND_PORT}/file/{BONDED_BYTES}?seed={seed}", tg.origin_ip);
    one(
        tg,
        sh,
        Workload::Bonded,
        curl_via(tg, &url, &out),
        &out,
        seed,
        BONDED_BYTES,
    )
}

fn echo_connect(tg: &Target) -> Result<std::net::TcpStream> {
    let proxy = tg.proxy;
    let to = SocketAddrV4::new(tg.origin_ip, ECHO_PORT);
    let s = netns::in_netns(&tg.home_ns, move || loopback::socks_connect(proxy, to))??;
    s.set_read_timeout(Some(ECHO_TIMEOUT))?;
    Ok(s)
}

fn echo_line(s: &mut std::net::TcpStream, line: &[u8]) -> Result<Duration> {
    let t = Instant::now();
    s.write_all(line)?;
    let mut back = vec![0u8; line.len()];
    s.read_exact(&mut back).context("reading the echo")?;
    if back != line {
        bail!(
            "CORRUPT: echo {:?} for {:?}",
            String::from_utf8_lossy(&back),
            String::from_utf8_lossy(line)
        );
    }
    Ok(t.elapsed())
}

fn warm_echo(tg: &Target) -> Result<()> {
    let mut s = echo_connect(tg)?;
    for i in 0..10 {
        echo_line(&mut s, format!("warm {i}\n").as_bytes())?;
        std::thread::sleep(ECHO_GAP);
    }
    Ok(())
}

/// The interactive session: one line every 200 ms; on a reset, counted, and reconnect.
fn echo_session(tg: &Target, sh: &Shared) {
    let mut seq = 0u64;
    while !sh.stopped() {
        let start = sh.now();
        let mut s = match echo_connect(tg) {
            Ok(s) => s,
            Err(_) => {
                // Cannot connect (e.g. relay down): retry, the next session's start shows the gap.
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let mut lines = 0u64;
        let outcome = loop {
            if sh.stopped() {
                break Outcome::Ok;
            }
            seq += 1;
            let line = format!("soak line {seq} {}\n", "x".repeat((seq % 50) as usize));
            match echo_line(&mut s, line.as_bytes()) {
                Ok(d) => {
                    lines += 1;
                    sh.echo_lines.fetch_add(1, Ordering::SeqCst);
                    sh.echo_max_us.fetch_max(d.as_micros() as u64, Ordering::SeqCst);
                    if d > SLOW_ECHO {
                        println!("[{:7.1} s] redundant: one echo took {:.1} s", sh.now(), d.as_secs_f64());
                    }
                }
                Err(e) => {
                    let m = format!("after {lines} echoes: {e:#}");
                    break if m.contains("CORRUPT") {
                        Outcome::Corrupt(m)
                    } else {
                        Outcome::Failed(m)
                    };
                }
            }
            std::thread::sleep(ECHO_GAP);
        };
        let end = sh.now();
        sh.record(Transfer {
            what: Workload::Redundant,
            // A reset is judged by what happened just before it, not over the whole session.
            start: if outcome == Outcome::Ok {
                start
            } else {
                (end - ECHO_TIMEOUT.as_secs_f64() - 1.0).max(start)
            },
            end,
            bytes: 0,
            outcome,
        });
    }
}

fn sample(pid: u32, home: &Target, t: f64) -> Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |k: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no {k} for pid {pid}"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    let node = procs::http_get(&home.home_ns, home.api, "/api/status")
        .ok()
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .map(|v| v["node"].clone())
        .unwrap_or_default();
    let number = |k: &str| node[k].as_u64().unwrap_or(0);
    Ok(Sample {
        t,
        rss_kib: field("VmRSS:")?,
        fds,
        threads: field("Threads:")?,
        tasks: number("tasks"),
        heap_kib: number("heap_bytes") / 1024,
        heap_held_kib: number("heap_held_bytes") / 1024,
    })
}

/// One uplink's counters at one moment: booster's and the kernel's, per direction (rx, tx).
struct Mark {
    uplink: String,
    api: [u64; 2],
    bytes: [u64; 2],
    packets: [u64; 2],
    link_header: u64,
}

impl Mark {
    /// The interval from `self` to `later`, rx then tx.
    fn check(&self, later: &Mark) -> Vec<UsageCheck> {
        ["rx", "tx"]
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let api = later.api[i].saturating_sub(self.api[i]);
                let bytes = later.bytes[i].saturating_sub(self.bytes[i]);
                let packets = later.packets[i].saturating_sub(self.packets[i]);
                let hdr = L3L4_HEADER + self.link_header;
                let payload = bytes.saturating_sub(packets * hdr);
                UsageCheck {
                    uplink: format!("{} {dir}", self.uplink),
                    api_bytes: api,
                    kernel_bytes: bytes,
                    kernel_packets: packets,
                    header_per_packet: hdr,
                    ratio: if payload == 0 {
                        f64::NAN
                    } else {
                        api as f64 / payload as f64
                    },
                }
            })
            .collect()
    }
}

/// Home's local uplinks: booster's `rx_bytes`, `tx_bytes` and the kernel's rx, tx.
fn usage_marks(lab: &Lab, home: &net::Booster) -> Result<Vec<Mark>> {
    let status = home.status()?;
    let mut out = Vec::new();
    for u in lab.uplinks().iter().filter(|u| u.node == "home") {
        let src = status["sources"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == u.iface.as_str()))
            .ok_or_else(|| anyhow!("home's /api/status has no source {}", u.iface))?;
        let api = [
            src["rx_bytes"].as_u64().unwrap_or(0),
            src["tx_bytes"].as_u64().unwrap_or(0),
        ];
        let json = netns::ip(&u.node_ns, &["-s", "-j", "link", "show", "dev", &u.iface])?;
        let v: serde_json::Value = serde_json::from_str(&json)?;
        let link = &v[0];
        let st = link
            .get("stats64")
            .or_else(|| link.get("stats"))
            .ok_or_else(|| anyhow!("no stats"))?;
        let g = |d: &str, k: &str| st[d][k].as_u64().unwrap_or(0);
        let link_header = if link["link_type"] == "ether" { 14 } else { 0 };
        out.push(Mark {
            uplink: format!("{}/{}", u.node, u.iface),
            api,
            bytes: [g("rx", "bytes"), g("tx", "bytes")],
            packets: [g("rx", "packets"), g("tx", "packets")],
            link_header,
        });
    }
    Ok(out)
}

/// Prints the summary's main lines.
pub fn print(s: &Summary) {
    println!("{}", s.markdown());
}

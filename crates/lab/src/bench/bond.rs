//! The bond on the namespace lab: `booster relay` in the internet namespace, a node in home
//! bonding through it over every uplink, and what the bond is judged by:
//! - one TCP stream (curl through the node's proxy, `--bond all`), per run;
//! - failover: one uplink blackholed for 10 s in the middle of one stream, with the longest
//!   stall of the received bytes ([`failover_run`], shared with the MPTCP anchor);
//! - redundant mode: request/response round trips of a small echo through the bond vs each
//!   uplink directly ([`redundant_latency`]).
//!
//! The stall is measured on what the client got, not on interface counters: the output file
//! of curl is sampled every [`STALL_SAMPLE`] and the longest interval in which it did not
//! grow (between its first and its last byte) is the stall. Counters would count bytes that
//! arrived but sat in a reorder buffer, or re-sent duplicates.

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::files::FileSet;
use super::loopback;
use super::net;
use super::procs::{self, Proc};
use crate::netns;
use crate::topology::{Lab, Uplink};

/// The relay listens here, in the internet namespace (next to the origin).
pub const RELAY_PORT: u16 = 4886;
/// The bonding node's proxy and API in home (the balancing node has 1080 / 4884).
pub const PROXY_PORT: u16 = 1081;
pub const API_PORT: u16 = 4894;
/// The echo server for round trips, in the internet namespace; the node's `--redundant` rule
/// names this port, everything else it bonds for bandwidth.
pub const ECHO_PORT: u16 = 7007;
/// How often the failover run samples the size of what the client received.
pub const STALL_SAMPLE: Duration = Duration::from_millis(20);
/// Round trips per latency series (after [`RTT_WARM`] unrecorded ones), their size and the
/// pause between them (keystroke-like: each request waits for its answer, then a short pause).
pub const RTT_N: usize = 200;
pub const RTT_WARM: usize = 10;
pub const RTT_BYTES: usize = 64;
const RTT_GAP: Duration = Duration::from_millis(10);

/// A relay process and a node bonding through it over every uplink of home.
pub struct BondNode {
    pub relay: Proc,
    pub node: Proc,
    pub ns: String,
    pub proxy: SocketAddr,
    log: PathBuf,
    relay_log: PathBuf,
}

impl BondNode {
    /// Starts `booster relay` in the internet namespace and `booster start --relay … --bond
    /// all --redundant :ECHO_PORT` in home, then waits until the node logged a path up
    /// through every uplink (paths are not in `/api/status`; the node logs each at debug).
    pub fn start(bin: &Path, lab: &Lab, ifaces: &[String], work: &Path) -> Result<BondNode> {
        let secret = work.join("bond.secret");
        std::fs::write(&secret, "booster bench bond secret")?;
        let inet = lab.internet_ns().to_owned();
        let relay_addr = net::origin_addr(lab, RELAY_PORT);
        let bin_s = bin.to_string_lossy().into_owned();

        let mut cmd = netns::exec(&inet, &bin_s);
        cmd.arg("relay")
            .arg("--listen")
            .arg(relay_addr.to_string())
            .arg("--secret-file")
            .arg(&secret)
            .args(["--allow", "10.99.0.0/16"])
            .env("RUST_LOG", "booster=info")
            .env("NO_COLOR", "1");
        let relay_log = work.join("relay.log");
        let mut relay = Proc::spawn("booster relay", &mut cmd, Some(&relay_log))?;
        procs::wait_listening(&inet, relay_addr.into(), &mut relay, Duration::from_secs(20))?;

        let home = lab.node_ns("home").to_owned();
        let proxy = net::lo(PROXY_PORT);
        let data = work.join("booster-bond-data");
        std::fs::create_dir_all(&data)?;
        let log = work.join("booster-bond.log");
        let mut cmd = netns::exec(&home, &bin_s);
        cmd.arg("start");
        for i in ifaces {
            cmd.arg("--iface").arg(i);
        }
        cmd.arg("--listen")
            .arg(proxy.to_string())
            .arg("--api")
            .arg(net::lo(API_PORT).to_string())
            .arg("--probe-target")
            .arg(net::origin_addr(lab, 80).to_string())
            .arg("--data-dir")
            .arg(&data)
            .arg("--secret-file")
            .arg(&secret)
            .arg("--relay")
            .arg(relay_addr.to_string())
            .args(["--bond", "all", "--redundant", &format!(":{ECHO_PORT}")])
            .args(["--peer-listen", "off", "--no-mdns"])
            .env("RUST_LOG", "booster=debug")
            .env("NO_COLOR", "1");
        let mut node = Proc::spawn("booster (bond)", &mut cmd, Some(&log))?;
        procs::wait_listening(&home, proxy, &mut node, Duration::from_secs(20))?;
        let mut b = BondNode {
            relay,
            node,
            ns: home,
            proxy,
            log,
            relay_log,
        };
        b.wait_paths(ifaces, Duration::from_secs(30))?;
        Ok(b)
    }

    /// Waits until the node's log shows a path up through each of `ifaces`.
    fn wait_paths(&mut self, ifaces: &[String], timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            self.node.ensure_running()?;
            self.relay.ensure_running()?;
            let text = procs::strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
            let missing: Vec<&String> = ifaces
                .iter()
                .filter(|i| {
                    let field = format!("source={i} ");
                    !text.lines().any(|l| l.contains("bond path up") && l.contains(&field))
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= end {
                bail!(
                    "no bond path through {missing:?} after {timeout:?}\n{}\n{}",
                    self.node.log_tail(),
                    self.relay.log_tail()
                );
            }
            procs::sleep(Duration::from_millis(100))?;
        }
    }

    /// `curl -x socks5h://PROXY URL -o out/name` in home: one stream through the bond.
    pub fn curl_cmd(&self, url: &str, out: &Path, name: &str, max_secs: u64) -> Command {
        let mut cmd = procs::curl(&self.ns);
        cmd.arg("-x")
            .arg(format!("socks5h://{}", self.proxy))
            .arg("--max-time")
            .arg(max_secs.to_string())
            .arg("-o")
            .arg(out.join(name))
            .arg(url);
        cmd
    }

    /// Both processes' last log lines, for error messages.
    pub fn log_tails(&self) -> String {
        format!("{}\n{}", self.node.log_tail(), self.relay.log_tail())
    }

    /// "bond path dead" events so far, as logged by (the node, the relay): each is a path
    /// whose acks stopped while others progressed, which is then dropped and redialled.
    pub fn stalls(&self) -> (usize, usize) {
        let count = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("bond path dead"))
                .count()
        };
        (count(&self.log), count(&self.relay_log))
    }
}

/// One failover run's outcome.
pub struct FailoverRun {
    /// From spawn to exit.
    pub secs: f64,
    /// The longest interval in which the received file did not grow, and when it began
    /// (seconds since spawn).
    pub stall: f64,
    pub stall_at: f64,
}

/// One download by `cmd` into `out/name`, with `uplink` blackholed (interface up, every
/// packet dropped in its delay line) from `at` for `hole`; the output file is sampled every
/// [`STALL_SAMPLE`] for the longest stall. The file is verified (size, SHA-256).
#[allow(clippy::too_many_arguments)]
pub fn failover_run(
    lab: &Lab,
    uplink: &Uplink,
    mut cmd: Command,
    what: &str,
    files: &FileSet,
    name: &str,
    out: &Path,
    at: Duration,
    hole: Duration,
    timeout: Duration,
) -> Result<FailoverRun> {
    let target = out.join(name);
    let _ = std::fs::remove_file(&target);
    /// Restores the link whatever happens.
    struct Restore<'a>(&'a Lab, &'a Uplink);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let _ = self.0.restore(&self.1.node, &self.1.iface);
        }
    }
    let t0 = Instant::now();
    let mut p = Proc::spawn_piped(what, &mut cmd)?;
    let mut guard: Option<Restore> = None;
    let mut holed = false;
    let (mut last_size, mut last_growth) = (0u64, None::<f64>);
    let (mut stall, mut stall_at) = (0.0f64, 0.0f64);
    let status = loop {
        let now = t0.elapsed();
        if !holed && now >= at {
            if p.try_wait()?.is_some() {
                bail!("the transfer ended before the blackhole started");
            }
            lab.blackhole(&uplink.node, &uplink.iface)?;
            guard = Some(Restore(lab, uplink));
            holed = true;
        }
        if holed && now >= at + hole {
            guard.take();
        }
        let size = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        let t = now.as_secs_f64();
        if size > last_size {
            if let Some(g) = last_growth {
                if t - g > stall {
                    (stall, stall_at) = (t - g, g);
                }
            }
            (last_size, last_growth) = (size, Some(t));
        }
        if let Some(st) = p.try_wait()? {
            break st;
        }
        if now >= timeout {
            p.kill();
            bail!("{what} did not finish within {timeout:?}");
        }
        procs::check_interrupt()?;
        std::thread::sleep(STALL_SAMPLE);
    };
    let secs = t0.elapsed().as_secs_f64();
    drop(guard);
    let (o, e) = p.output();
    if !status.success() {
        bail!("{what} failed ({status}): {} {}", o.trim(), e.trim());
    }
    files.verify(name, &target)?;
    let _ = std::fs::remove_file(&target);
    Ok(FailoverRun { secs, stall, stall_at })
}

/// An echo server in a namespace (TCP_NODELAY, one thread per connection); stops on drop.
pub struct Echo {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Echo {
    pub fn start(ns: &str, addr: SocketAddrV4) -> Result<Echo> {
        let l = netns::in_netns(ns, move || TcpListener::bind(addr))??;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        let flag = flag.clone();
                        conns.push(std::thread::spawn(move || echo(s, &flag)));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Ok(Echo {
            stop,
            handle: Some(handle),
        })
    }
}

fn echo(mut s: TcpStream, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// `warm` then `n` request/response round trips of `size` bytes on `s`, a short pause
/// between them; returns each recorded round trip in milliseconds.
fn round_trips(s: &mut TcpStream, warm: usize, n: usize, size: usize) -> Result<Vec<f64>> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut out = Vec::with_capacity(n);
    let mut back = vec![0u8; size];
    for i in 0..warm + n {
        procs::check_interrupt()?;
        let msg: Vec<u8> = (0..size).map(|k| (i + k) as u8).collect();
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back).with_context(|| format!("round trip {i}"))?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(back == msg, "round trip {i}: the echo differs");
        if i >= warm {
            out.push(ms);
        }
        std::thread::sleep(RTT_GAP);
    }
    Ok(out)
}

/// Round trips in milliseconds through a redundant bonded stream and over each uplink alone.
pub struct Redundant {
    pub n: usize,
    pub bytes: usize,
    pub bond_ms: Vec<f64>,
    /// Per uplink: its name, whether it is lossy, and its round trips directly.
    pub direct: Vec<(String, bool, Vec<f64>)>,
    /// The uplink redundant mode is judged against: the lowest-RTT one without loss.
    pub best: String,
    /// Bytes the bond sent while the bonded series ran, per uplink (tx counters), for the
    /// cost in traffic.
    pub tx_split: Vec<u64>,
}

/// Measures [`Redundant`]: `RTT_N` round trips of `RTT_BYTES` through the node's proxy to the
/// echo server (the node's `--redundant` rule covers its port), then over each uplink
/// directly (a socket bound to the interface).
pub fn redundant_latency(lab: &Lab, node: &BondNode, echo: SocketAddrV4) -> Result<Redundant> {
    let home = node.ns.clone();
    let proxy = node.proxy;
    let mut s = netns::in_netns(&home, move || loopback::socks_connect(proxy, echo))??;
    let before = tx_counters(lab)?;
    let bond_ms = round_trips(&mut s, RTT_WARM, RTT_N, RTT_BYTES).with_context(|| node.log_tails())?;
    let after = tx_counters(lab)?;
    drop(s);
    let tx_split = after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).collect();
    let mut direct = Vec::new();
    for u in lab.uplinks() {
        let iface = u.iface.clone();
        let mut s = netns::in_netns(&u.node_ns, move || net::connect_bound(&iface, echo))??;
        let ms =
            round_trips(&mut s, RTT_WARM, RTT_N, RTT_BYTES).with_context(|| format!("directly over {}", u.iface))?;
        direct.push((u.iface.clone(), u.spec.loss > 0.0, ms));
    }
    let best = lab
        .uplinks()
        .iter()
        .filter(|u| u.spec.loss == 0.0)
        .min_by_key(|u| u.spec.rtt)
        .or_else(|| lab.uplinks().iter().min_by_key(|u| u.spec.rtt))
        .map(|u| u.iface.clone())
        .unwrap_or_default();
    Ok(Redundant {
        n: RTT_N,
        bytes: RTT_BYTES,
        bond_ms,
        direct,
        best,
        tx_split,
    })
}

/// tx bytes of every uplink (node side), in uplink order.
fn tx_counters(lab: &Lab) -> Result<Vec<u64>> {
    lab.uplinks()
        .iter()
        .map(|u| lab.counters(&u.node, &u.iface).map(|c| c.1))
        .collect()
}

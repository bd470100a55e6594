//! Measurements on the namespace lab: each uplink alone (the link sum), a booster node with
//! parallel downloads, aria2c over every interface and kernel MPTCP.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::files::FileSet;
use super::procs::{self, Proc};
use crate::netns;
use crate::topology::{Lab, Uplink};

/// Downloads `path` from `origin` over one uplink (socket bound to its device, created in its
/// node's namespace) for `dur`, or until the body ends. Returns (body bytes, seconds).
fn download_for(
    ns: &str,
    iface: &str,
    origin: SocketAddrV4,
    path: &str,
    dur: Duration,
) -> Result<JoinHandle<Result<(u64, f64)>>> {
    let (iface, path) = (iface.to_owned(), path.to_owned());
    netns::spawn_in_netns(ns, move || -> Result<(u64, f64)> {
        let start = Instant::now();
        let deadline = start + dur;
        let mut s = connect_bound(&iface, origin)?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            origin.ip()
        )?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut head = Vec::new();
        let mut body = 0u64;
        let mut in_body = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
            let n = match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                Err(e) => return Err(e).context("reading the body"),
            };
            if in_body {
                body += n as u64;
            } else {
                head.extend_from_slice(&buf[..n]);
                if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    let status = String::from_utf8_lossy(&head[..i]);
                    if !status.starts_with("HTTP/1.1 200") {
                        bail!("origin answered {:?}", status.lines().next());
                    }
                    body += (head.len() - i - 4) as u64;
                    in_body = true;
                }
            }
        }
        Ok((body, start.elapsed().as_secs_f64()))
    })
}

/// A TCP connection bound to device `iface` (SO_BINDTODEVICE), in the calling thread's namespace.
pub fn connect_bound(iface: &str, to: SocketAddrV4) -> Result<TcpStream> {
    // SAFETY: plain socket syscalls on a descriptor we own; it is wrapped in a TcpStream (which
    // closes it) right after creation.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let name = iface.as_bytes();
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context(format!("binding to {iface}"));
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: to.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*to.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context(format!("connecting to {to} over {iface}"));
        }
        Ok(stream)
    }
}

/// Each uplink alone, all at the same time, for `dur`: bytes/s per uplink, in uplink order.
pub fn link_sum(lab: &Lab, origin: SocketAddrV4, path: &str, dur: Duration) -> Result<Vec<f64>> {
    let handles = lab
        .uplinks()
        .iter()
        .map(|u| download_for(&u.node_ns, &u.iface, origin, path, dur))
        .collect::<Result<Vec<_>>>()?;
    let mut rates = Vec::new();
    for (h, u) in handles.into_iter().zip(lab.uplinks()) {
        let (bytes, secs) = h
            .join()
            .map_err(|_| anyhow!("link-sum thread of {} panicked", u.iface))?
            .with_context(|| format!("measuring {} alone", u.iface))?;
        rates.push(bytes as f64 / secs);
    }
    procs::check_interrupt()?;
    Ok(rates)
}

/// Counter samples: (seconds since start, rx bytes of every uplink).
pub type Samples = Vec<(f64, Vec<u64>)>;

/// Reads rx counters of uplinks cheaply: `/proc/thread-self/net/dev` opened once inside each
/// uplink's namespace (the open file keeps showing that namespace), then re-read with a seek.
/// Spawning `ip -s link` per sample would cost a process per uplink every 100 ms.
pub struct Counters {
    /// Per uplink: index into `files`, and the interface name.
    ifs: Vec<(usize, String)>,
    files: Vec<std::fs::File>,
    buf: String,
}

impl Counters {
    pub fn open(uplinks: &[Uplink]) -> Result<Counters> {
        let mut nss: Vec<String> = Vec::new();
        let mut files = Vec::new();
        let mut ifs = Vec::new();
        for u in uplinks {
            let i = match nss.iter().position(|n| *n == u.node_ns) {
                Some(i) => i,
                None => {
                    let f = netns::in_netns(&u.node_ns, || std::fs::File::open("/proc/thread-self/net/dev"))?
                        .with_context(|| format!("opening /proc/thread-self/net/dev in {}", u.node_ns))?;
                    nss.push(u.node_ns.clone());
                    files.push(f);
                    files.len() - 1
                }
            };
            ifs.push((i, u.iface.clone()));
        }
        let mut c = Counters {
            ifs,
            files,
            buf: String::new(),
        };
        c.read().context("reading interface counters")?;
        Ok(c)
    }

    /// rx bytes of every uplink, in uplink order.
    pub fn read(&mut self) -> Result<Vec<u64>> {
        use std::io::Seek;
        let mut per_file: Vec<Vec<(String, u64)>> = Vec::with_capacity(self.files.len());
        for f in &mut self.files {
            f.seek(std::io::SeekFrom::Start(0))?;
            self.buf.clear();
            f.read_to_string(&mut self.buf)?;
            per_file.push(parse_net_dev(&self.buf));
        }
        self.ifs
            .iter()
            .map(|(i, name)| {
                per_file[*i]
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, b)| *b)
                    .ok_or_else(|| anyhow!("no {name} in /proc/net/dev"))
            })
            .collect()
    }
}

/// `(interface, rx bytes)` from the text of `/proc/net/dev`.
fn parse_net_dev(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let rx = rest.split_whitespace().next()?.parse().ok()?;
            Some((name.trim().to_owned(), rx))
        })
        .collect()
}

/// Samples every uplink's rx counter on a thread, every `period` (250 ms for plots, 100 ms
/// for tail rates).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Samples>>,
}

impl Sampler {
    pub fn start(uplinks: &[Uplink]) -> Sampler {
        Self::start_every(uplinks, Duration::from_millis(250))
    }

    pub fn start_every(uplinks: &[Uplink], period: Duration) -> Sampler {
        let ifs: Vec<(String, String)> = uplinks.iter().map(|u| (u.node_ns.clone(), u.iface.clone())).collect();
        let mut fast = Counters::open(uplinks).ok();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut out = Vec::new();
            let mut next = t0;
            loop {
                let v = match fast.as_mut().map(|c| c.read()) {
                    Some(Ok(v)) => v,
                    _ => ifs
                        .iter()
                        .map(|(ns, i)| netns::counters(ns, i).map(|c| c.0).unwrap_or(0))
                        .collect(),
                };
                out.push((t0.elapsed().as_secs_f64(), v));
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
            out
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling (after one last sample) and returns the samples.
    pub fn finish(mut self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The tail of a transfer from counter samples (summed over uplinks): the times at which the
/// cumulative count passed 90% and 100% of its final value, and the rate of that last 10%
/// (bytes/s). Crossings are interpolated within a sample interval; the 100% crossing assumes
/// the rate of the interval before it (the last interval is usually only partly used).
pub struct Tail {
    /// When 1% of the bytes had arrived (the start-up delay, roughly).
    pub t1: f64,
    pub t90: f64,
    pub t100: f64,
    pub rate: f64,
}

pub fn tail(samples: &Samples) -> Option<Tail> {
    let first: u64 = samples.first()?.1.iter().sum();
    let cum: Vec<(f64, f64)> = samples
        .iter()
        .map(|(t, v)| (*t, v.iter().sum::<u64>().saturating_sub(first) as f64))
        .collect();
    let total = cum.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let cross = |x: f64| -> Option<usize> { cum.iter().position(|(_, c)| *c >= x) };
    let t1 = cum[cross(0.01 * total)?].0;
    let k90 = cross(0.9 * total)?;
    let t90 = if k90 == 0 {
        cum[0].0
    } else {
        let ((ta, ca), (tb, cb)) = (cum[k90 - 1], cum[k90]);
        ta + (0.9 * total - ca) / (cb - ca) * (tb - ta)
    };
    let k100 = cross(total)?;
    let t100 = if k100 < 2 {
        cum[k100].0
    } else {
        let ((tp, cp), (ta, ca), (tb, _)) = (cum[k100 - 2], cum[k100 - 1], cum[k100]);
        let r = (ca - cp) / (ta - tp);
        if r > 0.0 {
            (ta + (total - ca) / r).min(tb)
        } else {
            tb
        }
    };
    let span = t100 - t90;
    (span > 0.0).then(|| Tail {
        t1,
        t90,
        t100,
        rate: 0.1 * total / span,
    })
}

/// rx bytes of every uplink (node side), in uplink order.
pub fn rx_counters(lab: &Lab) -> Result<Vec<u64>> {
    lab.uplinks()
        .iter()
        .map(|u| lab.counters(&u.node, &u.iface).map(|c| c.0))
        .collect()
}

/// A running booster node.
pub struct Booster {
    pub proc: Proc,
    pub ns: String,
    pub proxy: SocketAddr,
    pub api: SocketAddr,
}

impl Booster {
    /// `booster start --iface … --listen … --api … --probe-target … --data-dir … EXTRA…` in
    /// `ns` ("" = ours), then waits until `want_usable` sources are usable (at most 20 s).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        binary: &Path,
        ns: &str,
        ifaces: &[String],
        extra: &[String],
        want_usable: usize,
        proxy: SocketAddr,
        api: SocketAddr,
        probe_target: &str,
        data_dir: &Path,
        log: &Path,
    ) -> Result<Booster> {
        let mut cmd = if ns.is_empty() {
            std::process::Command::new(binary)
        } else {
            netns::exec(ns, &binary.to_string_lossy())
        };
        cmd.arg("start");
        for i in ifaces {
            cmd.arg("--iface").arg(i);
        }
        cmd.arg("--listen")
            .arg(proxy.to_string())
            .arg("--api")
            .arg(api.to_string())
            .arg("--probe-target")
            .arg(probe_target)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        cmd.env("RUST_LOG", "warn").env("NO_COLOR", "1");
        let mut proc = Proc::spawn("booster", &mut cmd, Some(log))?;
        procs::wait_listening(ns, proxy, &mut proc, Duration::from_secs(20))?;
        let mut b = Booster {
            proc,
            ns: ns.to_owned(),
            proxy,
            api,
        };
        b.wait_usable(want_usable, Duration::from_secs(20))?;
        Ok(b)
    }

    /// Waits until `/api/status` lists every one of `names` as a usable source; fails after
    /// `timeout` with the last status.
    pub fn wait_sources(&mut self, names: &[String], timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        let mut last = serde_json::Value::Null;
        loop {
            self.proc.ensure_running()?;
            if let Ok(v) = self.status() {
                let usable = |n: &String| {
                    v.get("sources")
                        .and_then(|s| s.as_array())
                        .is_some_and(|a| a.iter().any(|s| s["name"] == n.as_str() && s["usable"] == true))
                };
                if names.iter().all(usable) {
                    return Ok(());
                }
                last = v;
            }
            if Instant::now() >= end {
                bail!(
                    "sources {} not all usable after {timeout:?}; last status: {}\n{}",
                    names.join(", "),
                    last,
                    self.proc.log_tail()
                );
            }
            procs::sleep(Duration::from_millis(200))?;
        }
    }

    /// Waits until `/api/health` reports `n` usable uplinks; warns (does not fail) on timeout.
    fn wait_usable(&mut self, n: usize, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < end {
            self.proc.ensure_running()?;
            if let Ok((200, body)) = procs::http_get(&self.ns, self.api, "/api/health") {
                let usable = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("usable_sources").and_then(|u| u.as_u64()))
                    .unwrap_or(0);
                if usable as usize >= n {
                    return Ok(());
                }
                last = body;
            }
            procs::sleep(Duration::from_millis(200))?;
        }
        eprintln!("  warning: booster reports fewer than {n} usable uplinks after {timeout:?}: {last}");
        Ok(())
    }

    /// The node's `/api/status` as JSON.
    pub fn status(&self) -> Result<serde_json::Value> {
        let (code, body) = procs::http_get(&self.ns, self.api, "/api/status")?;
        anyhow::ensure!(code == 200, "/api/status answered {code}");
        Ok(serde_json::from_str(&body)?)
    }
}

/// One round of parallel downloads through the proxy.
pub struct Round {
    pub bytes: u64,
    pub secs: f64,
}

/// `names.len()` curls at once through the SOCKS5 proxy, each to its own file under `out`;
/// verified, then deleted. Throughput = all bytes / time until the last one finished.
pub fn parallel_round(
    ns: &str,
    proxy: SocketAddr,
    base: &str,
    files: &FileSet,
    names: &[String],
    out: &Path,
    timeout: Duration,
) -> Result<Round> {
    std::fs::create_dir_all(out)?;
    let t0 = Instant::now();
    let mut procs_ = Vec::new();
    for name in names {
        let mut cmd = procs::curl(ns);
        cmd.arg("-x")
            .arg(format!("socks5h://{proxy}"))
            .arg("--max-time")
            .arg(timeout.as_secs().to_string())
            .arg("-o")
            .arg(out.join(name))
            .arg("-w")
            .arg(procs::CURL_W)
            .arg(format!("{base}{}", files.path(name)));
        procs_.push(Proc::spawn_piped(&format!("curl {name}"), &mut cmd)?);
    }
    let end = t0 + timeout + Duration::from_secs(5);
    let mut done = vec![false; procs_.len()];
    let mut last = t0;
    while done.iter().any(|d| !d) {
        for (p, d) in procs_.iter_mut().zip(done.iter_mut()) {
            if !*d && p.try_wait()?.is_some() {
                *d = true;
                last = Instant::now();
            }
        }
        if Instant::now() > end {
            bail!("parallel downloads did not finish within {timeout:?}");
        }
        procs::check_interrupt()?;
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = (last - t0).as_secs_f64();
    let mut bytes = 0;
    for (p, name) in procs_.iter_mut().zip(names) {
        let status = p.try_wait()?.ok_or_else(|| anyhow!("curl still running"))?;
        let (o, e) = p.output();
        if !status.success() {
            bail!("curl {name} through the proxy failed ({status}): {}", e.trim());
        }
        let (n, _, code) = procs::parse_curl_w(&o)?;
        anyhow::ensure!(code == 200, "curl {name}: HTTP {code}");
        let path = out.join(name);
        files.verify(name, &path)?;
        let _ = std::fs::remove_file(&path);
        bytes += n;
    }
    Ok(Round { bytes, secs })
}

/// One timed download by an external tool (aria2c, mptcpize curl) into `out/name`, verified.
/// Returns bytes/s measured from spawn to exit.
pub fn timed_download(
    mut cmd: std::process::Command,
    what: &str,
    files: &FileSet,
    name: &str,
    out: &Path,
    timeout: Duration,
) -> Result<(f64, f64)> {
    let target = out.join(name);
    let _ = std::fs::remove_file(&target);
    let t0 = Instant::now();
    let mut p = Proc::spawn_piped(what, &mut cmd)?;
    let status = p.wait_timeout(timeout)?;
    let secs = t0.elapsed().as_secs_f64();
    let (o, e) = p.output();
    if !status.success() {
        bail!("{what} failed ({status}): {} {}", o.trim(), e.trim());
    }
    files.verify(name, &target)?;
    let _ = std::fs::remove_file(&target);
    Ok((files.get(name).size as f64 / secs, secs))
}

/// A timed download with the uplinks' rx counters sampled every 100 ms.
pub struct Sampled {
    /// File bytes / seconds from spawn to exit.
    pub rate: f64,
    pub secs: f64,
    /// rx bytes per uplink (interface counters, headers included).
    pub split: Vec<u64>,
    pub tail: Option<Tail>,
}

/// [`timed_download`] with a 100 ms counter sampler over `uplinks` for the split and tail rate.
pub fn sampled_download(
    uplinks: &[Uplink],
    cmd: std::process::Command,
    what: &str,
    files: &FileSet,
    name: &str,
    out: &Path,
    timeout: Duration,
) -> Result<Sampled> {
    let sampler = Sampler::start_every(uplinks, Duration::from_millis(100));
    let r = timed_download(cmd, what, files, name, out, timeout);
    let samples = sampler.finish();
    let (rate, secs) = r?;
    let split = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => b.1.iter().zip(&a.1).map(|(b, a)| b.saturating_sub(*a)).collect(),
        _ => vec![0; uplinks.len()],
    };
    Ok(Sampled {
        rate,
        secs,
        split,
        tail: tail(&samples),
    })
}

/// `booster get URL -o out/name --sha256 HEX --quiet --no-progress --no-resume`, over
/// `--iface` each of `ifaces`, or through a node's sources with `--node API`, in `ns`.
#[allow(clippy::too_many_arguments)]
pub fn booster_get_cmd(
    binary: &Path,
    ns: &str,
    ifaces: &[String],
    node: Option<SocketAddr>,
    url: &str,
    out: &Path,
    name: &str,
    sha256: &str,
) -> std::process::Command {
    let mut cmd = netns::exec(ns, &binary.to_string_lossy());
    for v in ["http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(v);
    }
    cmd.env("NO_COLOR", "1")
        .arg("get")
        .arg(url)
        .arg("-o")
        .arg(out.join(name));
    for i in ifaces {
        cmd.arg("--iface").arg(i);
    }
    if let Some(api) = node {
        cmd.arg("--node").arg(api.to_string());
    }
    cmd.args(["--sha256", sha256, "--quiet", "--no-progress", "--no-resume"]);
    cmd
}

/// `aria2c --multiple-interface=… -x16 -s16 -k1M` in `ns`.
pub fn aria2_cmd(ns: &str, ifaces: &[String], url: &str, out: &Path, name: &str) -> std::process::Command {
    let mut cmd = netns::exec(ns, "aria2c");
    for v in ["http_proxy", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(v);
    }
    cmd.arg(format!("--multiple-interface={}", ifaces.join(",")))
        .args(["-x16", "-s16", "-k1M"])
        .args([
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--file-allocation=none",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--download-result=hide",
            "--connect-timeout=10",
            "--timeout=30",
            "--max-tries=3",
            "--no-conf=true",
        ])
        .arg("-d")
        .arg(out)
        .arg("-o")
        .arg(name)
        .arg(url);
    cmd
}

/// `mptcpize run curl … URL -o out/name` in `ns`.
pub fn mptcp_curl_cmd(ns: &str, url: &str, out: &Path, name: &str, max_secs: u64) -> std::process::Command {
    let mut cmd = netns::exec(ns, "mptcpize");
    for v in ["http_proxy", "all_proxy", "ALL_PROXY"] {
        cmd.env_remove(v);
    }
    cmd.args(["run", "curl", "-q", "-sS", "--connect-timeout", "10"])
        .arg("--max-time")
        .arg(max_secs.to_string())
        .arg("-o")
        .arg(out.join(name))
        .arg(url);
    cmd
}

/// Configures kernel MPTCP for the lab: limits on both ends, one subflow endpoint per uplink
/// of the `home` node. Returns why it cannot be used, if it cannot.
pub fn setup_mptcp(lab: &Lab) -> Result<()> {
    let home = lab.node_ns("home").to_owned();
    let inet = lab.internet_ns().to_owned();
    for ns in [&home, &inet] {
        let enabled = netns::in_netns(ns, || std::fs::read_to_string("/proc/sys/net/mptcp/enabled"))?
            .context("this kernel has no MPTCP (no /proc/sys/net/mptcp/enabled)")?;
        if enabled.trim() != "1" {
            netns::sysctls(ns, &[("net/mptcp/enabled", "1")])?;
        }
        netns::ip(
            ns,
            &["mptcp", "limits", "set", "subflow", "8", "add_addr_accepted", "8"],
        )
        .context("ip mptcp limits (iproute2 too old?)")?;
    }
    for u in lab.uplinks().iter().filter(|u| u.node_ns == home) {
        let addr = u.addr.to_string();
        netns::ip(&home, &["mptcp", "endpoint", "add", &addr, "dev", &u.iface, "subflow"])?;
    }
    Ok(())
}

/// Whether MPTCP spread a transfer: per-uplink rx deltas, and true when more than one uplink
/// carried at least 5% of the bytes.
pub fn spread(before: &[u64], after: &[u64]) -> (Vec<u64>, bool) {
    let d: Vec<u64> = after.iter().zip(before).map(|(a, b)| a.saturating_sub(*b)).collect();
    let total: u64 = d.iter().sum();
    let busy = d.iter().filter(|x| **x * 20 >= total.max(1)).count();
    (d, busy > 1)
}

/// booster's default probe target, which `booster get --iface` probes each uplink against
/// before it starts (it has no `--probe-target`).
pub const DEFAULT_PROBE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(1, 1, 1, 1), 443);

/// Makes the lab's internet answer [`DEFAULT_PROBE`] as the real one does: the address on
/// `lo` of the internet namespace and a listener that accepts there. Without it every probe
/// waits for booster's 3 s probe timeout. Needs a tokio runtime context.
pub fn answer_default_probe(lab: &Lab) -> Result<crate::origin::Origin> {
    let inet = lab.internet_ns();
    netns::ip(
        inet,
        &["addr", "add", &format!("{}/32", DEFAULT_PROBE.ip()), "dev", "lo"],
    )
    .context("adding the default probe target's address in the internet namespace")?;
    super::files::start_ours(inet, DEFAULT_PROBE.into())
}

/// The origin's socket address for a port.
pub fn origin_addr(lab: &Lab, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(lab.origin_ip(), port)
}

/// Loopback address helper.
pub fn lo(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_dev() {
        let text = "Inter-|   Receive                            |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    \
                    lo:    1234      10    0    0    0     0          0         0     1234\n  \
                    4g-a: 987654321  700    0    0    0     0          0         0     5555\n";
        let v = parse_net_dev(text);
        assert_eq!(v, [("lo".to_owned(), 1234), ("4g-a".to_owned(), 987_654_321)]);
    }

    #[test]
    fn tail_rate_of_a_steady_transfer_and_of_a_slow_tail() {
        // 1 MB/s over two uplinks for 10 s, sampled every 100 ms: the tail runs at 1 MB/s.
        let steady: Samples = (0..=100)
            .map(|i| (i as f64 / 10.0, vec![i * 50_000, i * 50_000]))
            .collect();
        let t = tail(&steady).unwrap();
        assert!((t.rate - 1e6).abs() < 1e4, "{}", t.rate);
        assert!((t.t90 - 9.0).abs() < 0.01 && (t.t100 - 10.0).abs() < 0.01);
        // 9 MB at 1 MB/s, then the last 1 MB at 0.25 MB/s (one slow link left).
        let mut slow: Samples = (0..=90).map(|i| (i as f64 / 10.0, vec![i * 100_000])).collect();
        slow.extend((1..=40).map(|i| (9.0 + i as f64 / 10.0, vec![9_000_000 + i * 25_000])));
        // Idle samples after the end do not move the end.
        slow.extend((1..=5).map(|i| (13.0 + i as f64 / 10.0, vec![10_000_000])));
        let t = tail(&slow).unwrap();
        assert!((t.rate - 0.25e6).abs() < 1e4, "{}", t.rate);
        assert!((t.t100 - 13.0).abs() < 0.01, "{}", t.t100);
        assert!(tail(&vec![(0.0, vec![5]), (0.1, vec![5])]).is_none());
    }
}

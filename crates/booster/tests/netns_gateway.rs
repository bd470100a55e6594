//! `booster gateway` in the namespace lab: a client namespace with **no proxy settings** sits on
//! a LAN behind the `home` namespace, which is its router (IP forwarding, a plain masquerade,
//! a default route via `adsl`) and owns the three shaped uplinks of the `home` profile. The
//! router runs `booster gateway --lan lan-cl`; curl and aria2c in the client just fetch
//! `http://10.99.0.1/...`. Checked with SHA-256 of what arrived, the router's per-uplink byte
//! counters and the nftables ruleset of the router namespace.
//!
//! Correctness only, no timing thresholds. The tests take turns (one lab at a time) so that two
//! shared cores are not split between several shaped labs.
//!
//! These need root (network namespaces, nftables); without it they say so and pass vacuously.

mod common;

use common::netlab::{root, wait_status};
use lab::{
    origin::{sha256_hex, Origin},
    profile::profile,
    topology::{Client, Lab, LabOptions},
};
use nix::{sys::signal::Signal, unistd::Pid};
use sha2::{Digest, Sha256};
use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

const UPLINKS: [&str; 3] = ["adsl", "4g-a", "4g-b"];
const TABLE: &str = "booster_gateway";
const API: &str = "127.0.0.1:4884";
/// The uplink the router's own default route uses (metric 10): where traffic goes without
/// booster.
const DEFAULT_UPLINK: &str = "adsl";

/// One lab at a time (see the module header).
static SERIAL: Mutex<()> = Mutex::new(());

struct World {
    lab: Lab,
    _rt: tokio::runtime::Runtime,
    origin: Origin,
    dir: tempfile::TempDir,
    /// Gateways started so far (each gets its own data dir).
    started: usize,
}

fn world() -> World {
    let lab = Lab::build_with(
        &profile("home").unwrap(),
        LabOptions {
            client_behind: Some("home"),
            ..Default::default()
        },
    )
    .expect("lab builds");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = common::netlab::lab_origin(&lab, &rt);
    World {
        lab,
        _rt: rt,
        origin,
        dir: tempfile::tempdir().unwrap(),
        started: 0,
    }
}

/// A `booster gateway` process in the router namespace; killed (SIGKILL) on drop.
struct Gateway {
    child: Option<Child>,
    /// Every stderr line so far (the reader thread keeps appending).
    log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    /// Waits (bounded) for the process to exit and reaps it.
    fn wait(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "booster gateway did not exit within {within:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a download in the client namespace got.
struct Got {
    ok: bool,
    http: u16,
    sha: String,
    stderr: String,
}

impl World {
    fn client(&self) -> &Client {
        self.lab.client().expect("built with a client")
    }

    fn router(&self) -> String {
        self.client().router_ns.clone()
    }

    /// `booster` with its arguments, inside the router namespace.
    fn booster(&self) -> Command {
        self.lab.command(&self.router(), env!("CARGO_BIN_EXE_booster"))
    }

    /// Spawns `booster gateway --lan lan-cl` with the three uplinks named and `extra`, and
    /// returns once it said it is ready. Does not wait for the uplinks to be usable.
    fn spawn_gateway(&mut self, extra: &[&str]) -> Gateway {
        self.started += 1;
        let cfg = self.dir.path().join(format!("gateway-{}.toml", self.started));
        std::fs::write(
            &cfg,
            "probe_interval = \"500ms\"\ndiscover_interval = \"500ms\"\nconnect_timeout = \"2s\"\n",
        )
        .unwrap();
        let mut cmd = self.booster();
        cmd.args(["gateway", "--lan", &self.client().router_iface])
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("data-{}", self.started)))
            .args(["--listen", "127.0.0.1:1080", "--api", API])
            .args(["--probe-target", "10.99.0.1:80", "--no-mdns"]);
        for u in UPLINKS {
            cmd.args(["--iface", u]);
        }
        let mut child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        let lines = log.clone();
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                if std::env::var_os("BOOSTER_TEST_LOGS").is_some() {
                    eprintln!("gateway: {l}");
                }
                if l.contains("booster: gateway on") {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap().push(format!("{l}\n"));
            }
        });
        let mut gw = Gateway {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ready_rx.recv_timeout(Duration::from_millis(100)).is_err() {
            if let Some(st) = gw.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("booster gateway exited ({st}) before it was ready:\n{}", gw.log());
            }
            assert!(
                Instant::now() < deadline,
                "booster gateway not ready after 30 s:\n{}",
                gw.log()
            );
        }
        gw
    }

    /// [`World::spawn_gateway`], then waits until every uplink is usable.
    fn gateway(&mut self, extra: &[&str]) -> Gateway {
        let gw = self.spawn_gateway(extra);
        let router = self.router();
        wait_status(&self.lab, &router, API, "every uplink usable", |v| {
            UPLINKS
                .iter()
                .all(|u| common::netlab::source(v, u).is_some_and(|s| s["usable"] == true))
        });
        gw
    }

    /// Whether the router namespace has booster's nftables table.
    fn table_installed(&self) -> bool {
        self.lab
            .command(&self.router(), "nft")
            .args(["list", "table", "inet", TABLE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Polls until the table is gone; false if it is still there after `within`.
    fn wait_table_gone(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.table_installed() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// A plain command in the client namespace, with every proxy variable removed.
    fn in_client(&self, program: &str) -> Command {
        let mut cmd = self.lab.command(&self.client().ns, program);
        for v in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            cmd.env_remove(v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// curl in the client (no proxy): `url` into a file, then its SHA-256.
    fn curl(&self, url: &str, name: &str) -> Got {
        let out = self.path(name);
        let _ = std::fs::remove_file(&out);
        let o = self
            .in_client("curl")
            .args(["-sS", "--noproxy", "*", "--connect-timeout", "10", "--max-time", "120"])
            .args(["-w", "%{http_code}", "-o"])
            .arg(&out)
            .arg(url)
            .output()
            .unwrap();
        let got = Got {
            ok: o.status.success(),
            http: String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0),
            sha: file_sha(&out),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        let _ = std::fs::remove_file(&out);
        got
    }

    /// `curl` of file `size` (bytes), asserting it arrived whole.
    fn curl_ok(&self, size: u64, seed: u64, name: &str) {
        let url = format!("http://10.99.0.1/file/{size}?seed={seed}");
        let got = self.curl(&url, name);
        assert!(
            got.ok && got.http == 200,
            "curl {url} from the client failed: {}",
            got.stderr
        );
        assert_eq!(got.sha, sha256_hex(seed, size), "curl {url}: wrong bytes");
    }

    fn rx(&self, iface: &str) -> u64 {
        self.lab.counters("home", iface).unwrap().0
    }

    fn rx_all(&self) -> Vec<u64> {
        UPLINKS.iter().map(|u| self.rx(u)).collect()
    }

    /// Bytes each uplink received since `before`, for assertions and their messages.
    fn since(&self, before: &[u64]) -> Vec<u64> {
        self.rx_all().iter().zip(before).map(|(a, b)| a - b).collect()
    }
}

fn file_sha(p: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(p) else {
        return String::new();
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return hex::encode(h.finalize()),
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return String::new(),
        }
    }
}

fn per_uplink(bytes: &[u64]) -> String {
    UPLINKS
        .iter()
        .zip(bytes)
        .map(|(u, b)| format!("{u} {b}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn curl_and_aria2c_from_an_unconfigured_client_reach_the_origin_over_several_uplinks() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut w = world();

    // Without booster the client is routed out by the router's default route, adsl only.
    let before = w.rx_all();
    w.curl_ok(1_000_000, 1, "plain");
    let moved = w.since(&before);
    assert!(moved[0] > 900_000, "the default route is adsl: {}", per_uplink(&moved));
    assert!(
        moved[1] < 50_000 && moved[2] < 50_000,
        "without booster only adsl is used: {}",
        per_uplink(&moved)
    );

    let _gw = w.gateway(&[]);
    assert!(w.table_installed());

    // 12 parallel curls, 1 MB each: every one whole, and the load spread over the uplinks.
    let before = w.rx_all();
    std::thread::scope(|s| {
        for i in 0..12u64 {
            let w = &w;
            s.spawn(move || w.curl_ok(1_000_000, 100 + i, &format!("par-{i}")));
        }
    });
    let moved = w.since(&before);
    eprintln!("12 parallel 1 MB downloads, bytes per uplink: {}", per_uplink(&moved));
    for (u, b) in UPLINKS.iter().zip(&moved) {
        assert!(*b > 100_000, "{u} carried too little: {}", per_uplink(&moved));
    }
    let v = common::netlab::status(&w.lab, &w.router(), API);
    assert!(
        v["node"]["clients_total"].as_u64().unwrap_or(0) >= 12,
        "the gateway did not see the connections: {v:#}"
    );

    // aria2c, several ranged connections of one 10 MB file, no proxy configured either.
    if !lab_tool("aria2c") {
        eprintln!("aria2c is not installed: its part is skipped");
        return;
    }
    let (size, seed) = (10_000_000u64, 7u64);
    let before = w.rx_all();
    let o = w
        .in_client("aria2c")
        .args(["-x8", "-s8", "-k1M", "--no-conf=true", "--allow-overwrite=true"])
        .args([
            "--auto-file-renaming=false",
            "--file-allocation=none",
            "--summary-interval=0",
        ])
        .args(["--console-log-level=warn", "--download-result=hide", "--timeout=60"])
        .arg("-d")
        .arg(w.dir.path())
        .args(["-o", "aria"])
        .arg(format!("http://10.99.0.1/file/{size}?seed={seed}"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "aria2c from the client failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(file_sha(&w.path("aria")), sha256_hex(seed, size), "aria2c: wrong bytes");
    let moved = w.since(&before);
    eprintln!(
        "aria2c -x8, one 10 MB download, bytes per uplink: {}",
        per_uplink(&moved)
    );
    let busy = moved.iter().filter(|b| **b > 500_000).count();
    assert!(
        busy >= 2,
        "aria2c's connections used one uplink: {}",
        per_uplink(&moved)
    );
}

#[test]
fn a_large_plain_http_download_from_the_client_is_split_over_uplinks() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut w = world();
    let _gw = w.gateway(&[]);
    let (size, seed) = (30_000_000u64, 3u64);
    let requests = w.origin.requests();
    let before = w.rx_all();
    w.curl_ok(size, seed, "big");
    let moved = w.since(&before);
    eprintln!(
        "one 30 MB download, bytes per uplink: {}; origin requests: {}",
        per_uplink(&moved),
        w.origin.requests() - requests
    );
    let carried = moved.iter().filter(|b| **b > 1_000_000).count();
    assert!(
        carried >= 2,
        "one download was not split (per uplink: {})",
        per_uplink(&moved)
    );
    assert!(
        w.origin.requests() - requests >= 2,
        "the origin saw one request: no range requests"
    );
}

#[test]
fn rules_come_off_when_the_gateway_exits_on_sigterm() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut w = world();
    let mut gw = w.gateway(&[]);
    assert!(w.table_installed());
    gw.signal(Signal::SIGTERM);
    let st = gw.wait(Duration::from_secs(30));
    assert!(
        st.success(),
        "booster gateway exited with {st} on SIGTERM:\n{}",
        gw.log()
    );
    assert!(!w.table_installed(), "the table survived SIGTERM:\n{}", gw.log());
    assert!(gw.log().contains("gateway rules removed"), "{}", gw.log());
    // The client is routed as if booster had never been there.
    let before = w.rx(DEFAULT_UPLINK);
    w.curl_ok(1_000_000, 11, "after-term");
    assert!(w.rx(DEFAULT_UPLINK) - before > 900_000, "not via the default route");
}

#[test]
fn after_kill_9_without_the_watchdog_cleanup_removes_the_rules() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut w = world();
    let mut gw = w.gateway(&["--no-watchdog"]);
    gw.signal(Signal::SIGKILL);
    assert!(!gw.wait(Duration::from_secs(10)).success());
    // Nobody removed the rules: the LAN's TCP is redirected to a port nobody listens on.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        w.table_installed(),
        "without the watchdog the table should still be there"
    );
    let got = w.curl("http://10.99.0.1/file/1000", "blackholed");
    assert!(
        !got.ok,
        "with stale rules and no gateway the client should not get through"
    );

    let o = w.booster().args(["gateway", "--cleanup"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "--cleanup failed ({}): {err}", o.status);
    assert!(err.contains("gateway rules removed"), "{err}");
    assert!(!w.table_installed());
    let before = w.rx(DEFAULT_UPLINK);
    w.curl_ok(1_000_000, 12, "after-cleanup");
    assert!(w.rx(DEFAULT_UPLINK) - before > 900_000, "not via the default route");

    // A second cleanup has nothing to do, and says so.
    let o = w.booster().args(["gateway", "--cleanup"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "a second --cleanup failed: {err}");
    assert!(err.contains("no gateway rules"), "{err}");
}

#[test]
fn the_watchdog_removes_the_rules_after_kill_9() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut w = world();
    let mut gw = w.gateway(&[]);
    assert!(w.table_installed());
    // SIGKILL and do not reap yet: the watchdog must also see a zombie as gone.
    gw.signal(Signal::SIGKILL);
    let gone = w.wait_table_gone(Duration::from_secs(10));
    gw.wait(Duration::from_secs(10));
    assert!(gone, "the watchdog did not remove the table within 10 s:\n{}", gw.log());
    let before = w.rx(DEFAULT_UPLINK);
    w.curl_ok(1_000_000, 13, "after-watchdog");
    assert!(w.rx(DEFAULT_UPLINK) - before > 900_000, "not via the default route");
}

#[test]
fn a_quick_restart_keeps_the_new_gateways_rules() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut w = world();
    // A restart as a service manager that does not kill the old watchdog does it (procd, a
    // shell loop): the old gateway exits on SIGTERM, the new one starts at once.
    let mut old = w.gateway(&[]);
    old.signal(Signal::SIGTERM);
    assert!(old.wait(Duration::from_secs(30)).success());
    let _new = w.spawn_gateway(&[]);
    // The old watchdog polls every 200 ms; give it ample time to act wrongly.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        w.table_installed(),
        "the new gateway runs without its table:\nold gateway and its watchdog:\n{}",
        old.log()
    );
}

#[test]
fn a_missing_lan_interface_or_nft_is_a_clear_error() {
    if !root() {
        return;
    }
    let _one = serial();
    let w = world();
    let common = |cmd: &mut Command| {
        cmd.args(["--iface", "adsl", "--probe-target", "10.99.0.1:80", "--no-mdns"])
            .arg("--data-dir")
            .arg(w.dir.path().join("data"))
            .stdin(Stdio::null());
    };

    let mut cmd = w.booster();
    cmd.args(["gateway", "--lan", "bt-nope0"]);
    common(&mut cmd);
    let o = run_bounded(cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "a missing LAN interface: {err}");
    assert!(
        err.contains("bt-nope0"),
        "the message does not name the interface: {err}"
    );
    assert!(!w.table_installed());

    // No `nft` on PATH: the message says to install nftables.
    let mut cmd = w.lab.command(&w.router(), "env");
    cmd.arg("PATH=/nonexistent").arg(env!("CARGO_BIN_EXE_booster")).args([
        "gateway",
        "--lan",
        &w.client().router_iface,
    ]);
    common(&mut cmd);
    let o = run_bounded(cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "nft missing: {err}");
    assert!(
        err.contains("nftables"),
        "the message does not say what is missing: {err}"
    );
    assert!(!w.table_installed());
}

#[test]
fn a_direct_connection_to_the_gateway_port_is_closed_without_being_proxied() {
    if !root() {
        return;
    }
    let _one = serial();
    let mut w = world();
    let _gw = w.gateway(&[]);
    let requests = w.origin.requests();
    let router_ip = w.client().router_ip;
    // From the client to the router's LAN address, and from the router itself over loopback.
    for (ns, addr) in [
        (w.client().ns.clone(), format!("{router_ip}:4887")),
        (w.router(), "127.0.0.1:4887".to_owned()),
    ] {
        let mut s = w
            .lab
            .in_ns(&ns, move || std::net::TcpStream::connect(addr))
            .unwrap()
            .expect("the gateway port accepts");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"GET /file/1000 HTTP/1.1\r\nHost: 10.99.0.1\r\nConnection: close\r\n\r\n");
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) => assert!(buf.is_empty(), "got an answer: {:?}", String::from_utf8_lossy(&buf)),
            Err(e) => assert!(
                e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut,
                "the connection was left open (from {ns})"
            ),
        }
    }
    assert_eq!(w.origin.requests(), requests, "a direct connection reached the origin");
    // The gateway still serves redirected connections.
    w.curl_ok(100_000, 14, "still");
}

/// Runs `cmd` to completion, killing it after `within`.
fn run_bounded(mut cmd: Command, within: Duration) -> std::process::Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            panic!("{cmd:?} did not exit within {within:?}");
        }
    }
}

fn lab_tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

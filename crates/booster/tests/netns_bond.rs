//! The bond in the namespace lab: `booster relay` as a process in the internet namespace, a
//! node process in the `home` namespace with its three shaped uplinks named, our origin on
//! 10.99.0.1:80, curl and a small SOCKS5 echo client as the clients. Checked with SHA-256 of
//! what arrived and the kernel's per-interface byte counters. The loopback version, with
//! emulated links and no root, is `bond.rs`.
//!
//! Only correctness is asserted, never timing: every wait is bounded but generous, because
//! two shared cores run the delay lines, the node, the relay and the clients.
//!
//! These need root (network namespaces); without it they say so and pass vacuously.

mod common;

use common::netlab::root;
use lab::{
    origin::{sha256_hex, Origin},
    profile::profile,
    topology::Lab,
};
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

const UPLINKS: [&str; 3] = ["adsl", "4g-a", "4g-b"];
const SECRET: &str = "netns bond test secret";
const RELAY: &str = "10.99.0.1:4886";
/// Where the echo server listens in the internet namespace.
const ECHO: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 1), 7007);
/// Bounded waits: generous, since nothing here asserts timing.
const WAIT: Duration = Duration::from_secs(60);

/// One lab at a time: each runs three delay lines, a relay and a node on two shared cores.
static ONE_LAB: Mutex<()> = Mutex::new(());

/// A booster process (node or relay) whose stderr is kept for waiting on log lines and for
/// failure messages; killed on drop.
struct Booster {
    child: Option<Child>,
    what: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Booster {
    /// Spawns `booster ARGS` in `ns` with debug logs and waits for the stderr line containing
    /// `ready`.
    fn spawn(lab: &Lab, ns: &str, what: &str, args: &[String], ready: &str) -> Booster {
        let mut child = lab
            .command(ns, env!("CARGO_BIN_EXE_booster"))
            .args(args)
            .env("RUST_LOG", "booster=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let tag = what.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                if std::env::var_os("BOOSTER_TEST_LOGS").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                sink.lock().unwrap().push(line);
            }
        });
        let b = Booster {
            child: Some(child),
            what: what.to_owned(),
            log,
        };
        b.wait_line(0, |l| l.contains(ready), ready);
        b
    }

    /// Log lines so far.
    fn lines(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Waits until a log line at index ≥ `from` satisfies `pred`.
    fn wait_line(&self, from: usize, pred: impl Fn(&str) -> bool, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.log.lock().unwrap().iter().skip(from).any(|l| pred(l)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: never logged {what:?}\n{}",
                self.what,
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the node logged a path up through each of `sources` since log line `from`.
    fn wait_paths(&self, from: usize, sources: &[&str]) {
        for s in sources {
            let field = format!("source={s} ");
            self.wait_line(
                from,
                |l| l.contains("bond path up") && l.contains(&field),
                &format!("bond path up through {s}"),
            );
        }
    }

    fn count(&self, pat: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(pat)).count()
    }

    /// The last 40 log lines, for assertion messages.
    fn tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let from = log.len().saturating_sub(40);
        format!("--- last lines of {} ---\n{}", self.what, log[from..].join("\n"))
    }

    fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                panic!("{} exited ({st})\n{}", self.what, self.tail());
            }
        }
    }
}

impl Drop for Booster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A TCP echo server in a namespace: one thread per connection, stopped on drop.
struct EchoServer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    fn start(lab: &Lab, ns: &str, addr: SocketAddrV4) -> EchoServer {
        let listener = lab.in_ns(ns, move || TcpListener::bind(addr)).unwrap().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let flag = flag.clone();
                        std::thread::spawn(move || {
                            s.set_nonblocking(false).unwrap();
                            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                            let mut buf = [0u8; 16 * 1024];
                            while !flag.load(Ordering::SeqCst) {
                                match s.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            return;
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => return,
                                }
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => return,
                }
            }
        });
        EchoServer {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The `home` lab with our origin, a relay in the internet namespace and a secret file.
struct World {
    // Field order is drop order: processes and servers before the lab.
    relay: Option<Booster>,
    _origin: Origin,
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    lab: Lab,
    _one: std::sync::MutexGuard<'static, ()>,
}

fn world() -> World {
    let one = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::build(&profile("home").unwrap()).expect("lab builds");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = common::netlab::lab_origin(&lab, &rt);
    let dir = tempfile::tempdir().unwrap();
    let mut w = World {
        relay: None,
        _origin: origin,
        _rt: rt,
        dir,
        lab,
        _one: one,
    };
    let secret = w.secret_file("relay.secret", SECRET);
    let args: Vec<String> = [
        "relay",
        "--listen",
        RELAY,
        "--secret-file",
        &secret.to_string_lossy(),
        "--allow",
        "10.99.0.0/16",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let inet = w.lab.internet_ns().to_owned();
    w.relay = Some(Booster::spawn(&w.lab, &inet, "relay", &args, "booster: relay on"));
    w
}

impl World {
    fn home(&self) -> String {
        self.lab.node_ns("home").to_string()
    }

    fn secret_file(&self, name: &str, secret: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, secret).unwrap();
        p
    }

    fn relay(&self) -> &Booster {
        self.relay.as_ref().unwrap()
    }

    /// Starts a node in home with the three uplinks named, `--relay`, the given secret,
    /// proxy on 127.0.0.1:`port` and extra TOML (bond / redundant rules).
    fn node(&self, name: &str, port: u16, secret: &str, toml: &str) -> Booster {
        let secret = self.secret_file(&format!("{name}.secret"), secret);
        let cfg = format!(
            "listen = \"127.0.0.1:{port}\"\napi = \"127.0.0.1:{api}\"\nprobe_target = \"10.99.0.1:80\"\n\
             probe_interval = \"500ms\"\ndiscover_interval = \"500ms\"\nconnect_timeout = \"2s\"\n\
             peer_listen = \"off\"\nmdns = false\nsecret_file = \"{secret}\"\nrelay = [\"{RELAY}\"]\n{toml}\n",
            api = port + 3800,
            secret = secret.display()
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, cfg).unwrap();
        let data = self.dir.path().join(format!("{name}.data"));
        let mut args: Vec<String> = vec![
            "start".into(),
            "--config".into(),
            path.to_string_lossy().into_owned(),
            "--data-dir".into(),
            data.to_string_lossy().into_owned(),
        ];
        for u in UPLINKS {
            args.extend(["--iface".into(), u.into()]);
        }
        Booster::spawn(&self.lab, &self.home(), name, &args, "booster: proxy on")
    }

    /// rx bytes (downloads) of every uplink, in `UPLINKS` order.
    fn rx(&self) -> Vec<u64> {
        UPLINKS
            .iter()
            .map(|u| self.lab.counters("home", u).unwrap().0)
            .collect()
    }

    /// curl in home through the SOCKS5 proxy on `port`, into `out`, in the background.
    fn curl_to(&self, port: u16, url: &str, out: &Path) -> Child {
        self.lab
            .command(&self.home(), "curl")
            .args(["-q", "-sS", "--max-time", "300", "-o"])
            .arg(out)
            .arg("-x")
            .arg(format!("socks5h://127.0.0.1:{port}"))
            .arg(url)
            .env_remove("http_proxy")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Waits for curl (bounded by its own --max-time) and asserts it succeeded.
fn curl_ok(mut c: Child, node: &Booster, relay: &Booster) {
    let st = c.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = c.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        st.success(),
        "curl failed ({st}): {err}\n{}\n{}",
        node.tail(),
        relay.tail()
    );
}

fn sha256_file(p: &Path) -> (u64, String) {
    let data = std::fs::read(p).unwrap();
    (data.len() as u64, common::sha256(&data))
}

/// Waits until `out` holds at least `bytes` (the transfer is under way), bounded.
fn wait_file(out: &Path, bytes: u64, curl: &mut Child) {
    let deadline = Instant::now() + WAIT;
    loop {
        let len = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        if len >= bytes {
            return;
        }
        assert!(
            curl.try_wait().unwrap().is_none(),
            "curl ended at {len} bytes, before {bytes}"
        );
        assert!(Instant::now() < deadline, "only {len} of {bytes} bytes after {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn file_url(size: u64) -> String {
    format!("http://10.99.0.1/file/{size}")
}

/// Downloads `size` bytes through the bonded proxy on `port`, calling `during` once a
/// quarter has arrived; asserts the bytes are exact. Returns the rx bytes per uplink.
fn bonded_download(w: &World, node: &mut Booster, port: u16, size: u64, during: impl FnOnce()) -> Vec<u64> {
    let out = w.dir.path().join(format!("dl-{size}-{}", node.lines()));
    let before = w.rx();
    let mut c = w.curl_to(port, &file_url(size), &out);
    wait_file(&out, size / 4, &mut c);
    during();
    curl_ok(c, node, w.relay());
    node.assert_running();
    let after = w.rx();
    let (len, sha) = sha256_file(&out);
    assert_eq!(len, size, "{}", node.tail());
    assert_eq!(sha, sha256_hex(size, size), "the bytes differ\n{}", node.tail());
    let _ = std::fs::remove_file(&out);
    after.iter().zip(&before).map(|(a, b)| a - b).collect()
}

#[test]
fn a_bonded_curl_gets_exact_bytes_over_several_uplinks() {
    if !root() {
        return;
    }
    let w = world();
    let mut node = w.node("node", 1080, SECRET, "bond = [\"all\"]\nredundant = []");
    node.wait_paths(0, &UPLINKS);
    let size = 20_000_000;
    let rx = bonded_download(&w, &mut node, 1080, size, || {});
    // One TCP stream, yet at least two uplinks carried a real share of it.
    let busy = rx.iter().filter(|&&b| b > 1_000_000).count();
    assert!(
        busy >= 2,
        "one bonded stream used {busy} uplink(s): rx {rx:?} ({UPLINKS:?})"
    );
    node.wait_line(0, |l| l.contains("bonded stream open"), "a bonded stream");
}

#[test]
fn a_cut_uplink_mid_transfer_loses_nothing_and_its_path_returns() {
    if !root() {
        return;
    }
    let w = world();
    let mut node = w.node("node", 1080, SECRET, "bond = [\"all\"]\nredundant = []");
    node.wait_paths(0, &UPLINKS);
    let size = 20_000_000;
    bonded_download(&w, &mut node, 1080, size, || w.lab.cut("home", "4g-b").unwrap());
    // The cut interface closes its path, whether or not the stall detector got there first:
    // a socket left waiting on a dead interface would come back with it (or, on a phone
    // with a new address, never), instead of a fresh path.
    node.wait_line(
        0,
        |l| {
            l.contains("source=4g-b")
                && (l.contains("bond path dead") || l.contains("bond path closed: its uplink went down"))
        },
        "the path through 4g-b closed",
    );
    // Restored, the uplink gets a path again and carries bonded bytes.
    let mark = node.lines();
    w.lab.restore("home", "4g-b").unwrap();
    node.wait_paths(mark, &["4g-b"]);
    let rx = bonded_download(&w, &mut node, 1080, 10_000_000, || {});
    assert!(rx[2] > 500_000, "the restored uplink carried {} bytes", rx[2]);
}

#[test]
fn a_blackholed_uplink_mid_transfer_loses_nothing_and_its_path_returns() {
    if !root() {
        return;
    }
    let w = world();
    let mut node = w.node("node", 1080, SECRET, "bond = [\"all\"]\nredundant = []");
    node.wait_paths(0, &UPLINKS);
    let size = 20_000_000;
    bonded_download(&w, &mut node, 1080, size, || w.lab.blackhole("home", "4g-a").unwrap());
    // The interface stayed up; only the missing acks told. Restore it and use it again.
    w.lab.restore("home", "4g-a").unwrap();
    let rx = bonded_download(&w, &mut node, 1080, 10_000_000, || {});
    assert!(
        rx[1] > 500_000,
        "the restored uplink carried {} bytes\n{}",
        rx[1],
        node.tail()
    );
}

#[test]
fn a_node_with_the_wrong_secret_is_refused_and_the_right_one_still_works() {
    if !root() {
        return;
    }
    let w = world();
    let wrong = w.node(
        "wrong",
        1081,
        "not the network secret",
        "bond = [\"all\"]\nredundant = []",
    );
    let mut right = w.node("right", 1080, SECRET, "bond = [\"all\"]\nredundant = []");
    right.wait_paths(0, &UPLINKS);
    // The wrong node never gets a path; its bonded stream fails after the connect timeout.
    let out = w
        .lab
        .command(&w.home(), "curl")
        .args(["-q", "-s", "--max-time", "60", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-x", "http://127.0.0.1:1081"])
        .arg(file_url(1000))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "502",
        "{}\n{}",
        wrong.tail(),
        w.relay().tail()
    );
    assert_eq!(wrong.count("bond path up"), 0, "{}", wrong.tail());
    w.relay().wait_line(0, |l| l.contains("path refused"), "path refused");
    // SOCKS5 fails too (no bytes, an error from curl).
    let out = w
        .lab
        .command(&w.home(), "curl")
        .args([
            "-q",
            "-s",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-x",
            "socks5h://127.0.0.1:1081",
        ])
        .arg(file_url(1000))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bonded stream opened with the wrong secret");
    // The relay still serves the node that holds the secret.
    bonded_download(&w, &mut right, 1080, 5_000_000, || {});
}

/// SOCKS5 CONNECT through `proxy` (in home) to `target`, no auth.
fn socks_connect(w: &World, proxy: SocketAddrV4, target: SocketAddrV4) -> TcpStream {
    let mut s = w
        .lab
        .in_ns(&w.home(), move || TcpStream::connect(proxy))
        .unwrap()
        .unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut r = [0u8; 2];
    s.read_exact(&mut r).unwrap();
    assert_eq!(r, [5, 0], "SOCKS5 greeting refused");
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&target.ip().octets());
    req.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 0, "SOCKS5 CONNECT failed with reply {}", reply[1]);
    s
}

#[test]
fn redundant_mode_keeps_an_echo_session_alive_while_uplinks_die_one_after_another() {
    if !root() {
        return;
    }
    let w = world();
    let inet = w.lab.internet_ns().to_owned();
    let _echo = EchoServer::start(&w.lab, &inet, ECHO);
    let mut node = w.node("node", 1080, SECRET, "redundant = [\"all\"]");
    node.wait_paths(0, &UPLINKS);
    let proxy = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1080);
    let mut s = socks_connect(&w, proxy, ECHO);
    // The node logs the stream's mode as it opens (read from its stderr by another thread).
    node.wait_line(
        0,
        |l| l.contains("bonded stream open") && l.contains("mode=Redundant"),
        "a redundant bonded stream",
    );
    let mut buf = [0u8; 256];
    for round in 0..45 {
        match round {
            15 => w.lab.cut("home", "adsl").unwrap(),
            30 => w.lab.blackhole("home", "4g-a").unwrap(),
            _ => {}
        }
        let line = format!("keystroke {round:03} {}\n", "x".repeat(40));
        s.write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("round {round}: write failed: {e}\n{}", node.tail()));
        let mut got = Vec::new();
        while got.len() < line.len() {
            let n = s
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("round {round}: no echo: {e}\n{}", node.tail()));
            assert!(n > 0, "round {round}: the session closed\n{}", node.tail());
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, line.as_bytes(), "round {round}");
        std::thread::sleep(Duration::from_millis(200));
    }
    node.assert_running();
    drop(s);
    w.lab.restore("home", "adsl").unwrap();
    w.lab.restore("home", "4g-a").unwrap();
}

//! The peer network in the namespace lab (`peers` profile): a home node with a slow ADSL line,
//! and two phone nodes on 4G joined to it by a LAN. The phones lend their uplinks over the
//! encrypted peer channel; traffic through home's proxy must leave on the phones' uplinks.
//! Checked with the kernel's per-interface counters on each phone.

mod common;

use common::netlab::{fetch_parallel, root, source, start_node, status, wait_status, NodeProc};
use lab::{origin::Origin, profile::profile, topology::Lab};
use std::time::{Duration, Instant};

const SECRET: &str = "correct horse battery staple";

struct World {
    lab: Lab,
    _rt: tokio::runtime::Runtime,
    origin: Origin,
    dir: tempfile::TempDir,
}

fn world() -> World {
    let lab = Lab::build(&profile("peers").unwrap()).expect("lab builds");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = common::netlab::lab_origin(&lab, &rt);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    std::fs::write(dir.path().join("wrong"), "not the household secret").unwrap();
    World {
        lab,
        _rt: rt,
        origin,
        dir,
    }
}

const BASE: &str = "listen = \"127.0.0.1:1080\"\napi = \"127.0.0.1:4884\"\nprobe_target = \"10.99.0.1:80\"\n\
                    probe_interval = \"500ms\"\nconnect_timeout = \"2s\"\nmdns = false\n";

impl World {
    fn ns(&self, node: &str) -> String {
        self.lab.node_ns(node).to_string()
    }

    fn lan(&self, node: &str) -> String {
        self.lab.lan_ip(node).unwrap().to_string()
    }

    fn phone(&self, name: &str, secret_file: &str, extra: &str) -> NodeProc {
        let listen = format!("{}:4885", self.lan(name));
        let secret = self.dir.path().join(secret_file);
        start_node(
            &self.lab,
            &self.ns(name),
            self.dir.path(),
            &format!("{name}.toml"),
            &format!("{BASE}{extra}"),
            &[
                "--iface",
                "4g",
                "--name",
                name,
                "--peer-listen",
                &listen,
                "--secret-file",
                secret.to_str().unwrap(),
            ],
        )
    }

    fn home(&self, extra: &str, peers: &[&str]) -> NodeProc {
        let secret = self.dir.path().join("secret");
        let mut args = vec![
            "--iface",
            "adsl",
            "--name",
            "home",
            "--secret-file",
            secret.to_str().unwrap(),
        ];
        let addrs: Vec<String> = peers.iter().map(|p| self.lan(p)).collect();
        for a in &addrs {
            args.extend(["--peer", a.as_str()]);
        }
        start_node(
            &self.lab,
            &self.ns("home"),
            self.dir.path(),
            "home.toml",
            &format!("{BASE}{extra}"),
            &args,
        )
    }

    fn status(&self) -> serde_json::Value {
        status(&self.lab, &self.ns("home"), "127.0.0.1:4884")
    }

    fn wait(&self, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        wait_status(&self.lab, &self.ns("home"), "127.0.0.1:4884", what, cond)
    }

    fn fetch_parallel(&self, n: usize, size: &str) -> usize {
        fetch_parallel(&self.lab, &self.ns("home"), "127.0.0.1:1080", n, |i| {
            format!("http://10.99.0.1/file/{size}?seed={i}")
        })
    }

    fn rx(&self, node: &str, iface: &str) -> u64 {
        self.lab.counters(node, iface).unwrap().0
    }
}

fn usable(v: &serde_json::Value, name: &str) -> bool {
    source(v, name).is_some_and(|s| s["usable"] == true)
}

#[test]
fn phones_lend_their_uplinks_and_a_dead_phone_is_routed_around() {
    if !root() {
        return;
    }
    let w = world();
    let mut p1 = w.phone("phone-1", "secret", "");
    let _p2 = w.phone("phone-2", "secret", "");
    let _home = w.home("", &["phone-1", "phone-2"]);
    w.wait("both phones' uplinks as sources", |v| {
        usable(v, "phone-1/4g") && usable(v, "phone-2/4g")
    });

    let before = (w.rx("phone-1", "4g"), w.rx("phone-2", "4g"));
    assert_eq!(w.fetch_parallel(12, "300kB"), 12);
    let lent1 = w.rx("phone-1", "4g") - before.0;
    let lent2 = w.rx("phone-2", "4g") - before.1;
    assert!(
        lent1 > 300_000 && lent2 > 300_000,
        "phones carried {lent1} and {lent2} bytes"
    );
    assert!(w.origin.requests() >= 12);

    // Kill phone-1's node: home notices, drops its source, and every client still gets a reply.
    p1.kill();
    let killed = Instant::now();
    w.wait("phone-1 declared dead", |v| {
        v["peers"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "phone-1" && p["state"] != "up"))
    });
    eprintln!("phone-1 declared dead after {:?}", killed.elapsed());
    let v = w.status();
    assert!(
        !usable(&v, "phone-1/4g"),
        "a dead peer's source is still offered: {v:#}"
    );
    assert_eq!(w.fetch_parallel(6, "100kB"), 6);

    // Restart it: it rejoins, and is used again.
    let _p1 = w.phone("phone-1", "secret", "");
    w.wait("phone-1 back", |v| usable(v, "phone-1/4g"));
    let before = w.rx("phone-1", "4g");
    assert_eq!(w.fetch_parallel(12, "200kB"), 12);
    assert!(
        w.rx("phone-1", "4g") - before > 100_000,
        "a rejoined peer was not used again"
    );
}

#[test]
fn a_wrong_secret_gets_nothing() {
    if !root() {
        return;
    }
    let w = world();
    let _p1 = w.phone("phone-1", "wrong", "");
    let _home = w.home("", &["phone-1"]);
    // The link never comes up, with a clear reason, and no source from that phone appears.
    let v = w.wait("a refused handshake", |v| {
        v["peers"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["last_error"].as_str().is_some_and(|e| e.contains("handshake")))
        })
    });
    assert!(source(&v, "phone-1/4g").is_none(), "{v:#}");
    std::thread::sleep(Duration::from_secs(2));
    let v = w.status();
    assert!(v["peers"][0]["state"] != "up", "{v:#}");
    assert!(source(&v, "phone-1/4g").is_none());
}

#[test]
fn lender_limits_hold() {
    if !root() {
        return;
    }
    let w = world();
    // phone-1 lends at most 4 Mbit/s; phone-2 lends at most 1 MB this month.
    let _p1 = w.phone("phone-1", "secret", "[lend]\nmax_rate = \"4Mbit\"\n");
    let _p2 = w.phone("phone-2", "secret", "[lend]\ncap = \"1MB\"\n");
    // Home uses only phone-1 for the rate check: adsl and phone-2 blocked by policy.
    let _home = w.home(
        "[[policy]]\nkind = \"block\"\nuplink = \"adsl\"\n[[policy]]\nkind = \"block\"\nuplink = \"phone-2/4g\"\n",
        &["phone-1", "phone-2"],
    );
    w.wait("phone-1 lends", |v| usable(v, "phone-1/4g"));
    let v = w.status();
    let cap = source(&v, "phone-1/4g").unwrap()["capacity"].as_f64().unwrap();
    assert!(
        cap <= 4e6 / 8.0 + 1.0,
        "home must see the lender's rate limit as capacity: {cap}"
    );
    // 1.5 MB at 4 Mbit/s takes at least 3 s (a lower bound: it cannot flake by being slow).
    let started = Instant::now();
    assert_eq!(w.fetch_parallel(3, "500kB"), 3);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "1.5 MB through a 4 Mbit/s lending limit took only {took:?}"
    );
}

#[test]
fn a_lending_cap_is_respected() {
    if !root() {
        return;
    }
    let w = world();
    let _p2 = w.phone("phone-2", "secret", "[lend]\ncap = \"1MB\"\n");
    let _home = w.home("[[policy]]\nkind = \"block\"\nuplink = \"adsl\"\n", &["phone-2"]);
    w.wait("phone-2 lends", |v| usable(v, "phone-2/4g"));
    // Spend the cap.
    let ok = w.fetch_parallel(3, "500kB");
    assert!(ok >= 2, "downloads within the cap failed");
    // Home sees the cap is used up and stops offering the source; the lender refuses anyway.
    let v = w.wait("the cap reported as used up", |v| !usable(v, "phone-2/4g"));
    let before = w.rx("phone-2", "4g");
    let ok = w.fetch_parallel(2, "300kB");
    assert_eq!(
        ok, 0,
        "with adsl blocked and the cap used, nothing should get through: {v:#}"
    );
    assert!(
        w.rx("phone-2", "4g") - before < 50_000,
        "the lender kept lending past its cap"
    );
}

//! LAN discovery by mDNS between nodes in one process. Each node runs inside a network
//! namespace of its own (`bt-mdns-<pid>-a` and `-b`, joined by a veth pair), so the test sends
//! nothing on the machine's real network; the loopback case runs inside a third namespace.
//!
//! These need root (network namespaces); without it they say so and pass vacuously.

use booster::mdns::{Discovered, Mdns, PROTOCOL_VERSION};
use lab::netns::{self, Netns};
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(10);

fn root() -> bool {
    if !netns::is_root() {
        eprintln!("not root: mDNS namespace tests skipped");
        return false;
    }
    true
}

/// `bt-mdns-<pid>-<role>`; namespaces of that form whose owner died are removed first.
fn ns(role: &str) -> Netns {
    let me = std::process::id();
    if let Ok(names) = netns::list() {
        for name in names {
            let Some(rest) = name.strip_prefix("bt-mdns-") else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let stale = pid == me && rest == format!("{me}-{role}")
                || pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists();
            if stale {
                netns::delete(&name);
            }
        }
    }
    Netns::create(&format!("bt-mdns-{me}-{role}")).expect("create namespace")
}

/// Two namespaces joined by a veth pair: `veth-a` 10.201.0.1/24 and `veth-b` 10.201.0.2/24.
fn pair() -> (Netns, Netns) {
    let a = ns("a");
    let b = ns("b");
    netns::ip(
        a.name(),
        &[
            "link",
            "add",
            "veth-a",
            "type",
            "veth",
            "peer",
            "name",
            "veth-b",
            "netns",
            b.name(),
        ],
    )
    .expect("veth pair");
    for (n, dev, addr) in [(&a, "veth-a", "10.201.0.1/24"), (&b, "veth-b", "10.201.0.2/24")] {
        netns::ip(n.name(), &["addr", "add", addr, "dev", dev]).unwrap();
        netns::ip(n.name(), &["link", "set", dev, "multicast", "on", "up"]).unwrap();
    }
    (a, b)
}

fn start_in(ns: &Netns, node: &'static str, port: u16, ifaces: &[&str], allow_loopback: bool) -> Mdns {
    let ifaces: Vec<String> = ifaces.iter().map(|s| s.to_string()).collect();
    netns::in_netns(ns.name(), move || Mdns::start(node, port, &ifaces, allow_loopback))
        .expect("thread in namespace")
        .expect("mDNS starts")
}

/// Polls until `who` lists `node` with address `addr`, or `WAIT` passes.
fn wait_for(who: &Mdns, node: &str, addr: IpAddr) -> Option<Discovered> {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = who.available();
        if let Some(d) = seen.iter().find(|d| d.node == node && d.addrs.contains(&addr)) {
            return Some(d.clone());
        }
        if Instant::now() >= deadline {
            eprintln!("{} does not list {node} at {addr}; it lists {seen:?}", who.fullname());
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nodes_in_two_namespaces_find_each_other_and_see_goodbyes() {
    if !root() {
        return;
    }
    // Declared before the nodes, so the nodes stop first and the namespaces go last,
    // also when an assertion panics.
    let (na, nb) = pair();
    let a = start_in(&na, "node-a", 4885, &[], false);
    let b = start_in(&nb, "node-b", 4886, &[], false);

    let seen_by_a = wait_for(&a, "node-b", "10.201.0.2".parse().unwrap()).expect("a finds b");
    let seen_by_b = wait_for(&b, "node-a", "10.201.0.1".parse().unwrap()).expect("b finds a");
    assert_eq!(seen_by_a.port, 4886);
    assert_eq!(seen_by_b.port, 4885);
    assert_eq!(seen_by_a.version, PROTOCOL_VERSION);
    assert!(seen_by_a.last_seen_secs_ago < 60);
    // Never ourselves, and never a loopback address.
    for (me, list) in [("node-a", a.available()), ("node-b", b.available())] {
        assert!(list.iter().all(|d| d.node != me), "{me} lists itself: {list:?}");
        assert!(
            list.iter().flat_map(|d| &d.addrs).all(|ip| !ip.is_loopback()),
            "loopback announced: {list:?}"
        );
    }

    // b leaves: its goodbye removes it from a's list.
    drop(b);
    let deadline = Instant::now() + WAIT;
    while a.available().iter().any(|d| d.node == "node-b") {
        assert!(
            Instant::now() < deadline,
            "node-b still listed after goodbye: {:?}",
            a.available()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn loopback_only_when_allowed() {
    if !root() {
        return;
    }
    let n = ns("lo");
    let one = start_in(&n, "one", 4885, &["lo"], true);
    let two = start_in(&n, "two", 4886, &["lo"], true);
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let d = wait_for(&one, "two", lo).expect("one finds two on loopback");
    assert_eq!(d.port, 4886);
    assert!(wait_for(&two, "one", lo).is_some(), "two finds one on loopback");
    // Without `allow_loopback`, a node in a namespace that has nothing but loopback is silent.
    let three = start_in(&n, "three", 4887, &["lo"], false);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        one.available().iter().all(|d| d.node != "three"),
        "{:?}",
        one.available()
    );
    assert!(three.available().is_empty(), "{:?}", three.available());
}

//! The namespace lab's own tests: every profile's lab is configured as the profile says (the
//! kernel's tbf rate on both sides of every link, each delay line's one-way delay, jitter and
//! loss, and data moving through every uplink and the LAN), cut / blackhole / restore /
//! set_rate behave, and nothing named `bt-<id>-…` survives a drop or a panic.
//!
//! Whether the links *measure* at their rate and RTT is not asserted here: wall-clock
//! thresholds flake on a shared 2-core machine. That is `lab calibrate`'s job (see
//! `crates/lab/src/calibrate.rs` and docs/calibration.md), which reports the figures.
//!
//! They need root (namespaces, veth, tc, TUN). Without root they print a skip line and pass.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use lab::calibrate::{connect, download_bytes, header, measure_rtt, socket, uplink_path, upload_bytes, Server};
use lab::delayline::Direction;
use lab::netns;
use lab::profile::profile;
use lab::topology::{Lab, LabOptions, LAN_IFACE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn root_or_skip(test: &str) -> bool {
    if netns::is_root() {
        return true;
    }
    eprintln!("skipping {test}: the namespace lab needs root");
    false
}

// ---------------------------------------------------------------------------------------
// What the kernel and the delay lines are configured with (no clock involved).
// ---------------------------------------------------------------------------------------

/// The tbf rate (bit/s) a link of TCP goodput `rate_bps` must have: tbf counts whole
/// Ethernet frames, 1514 bytes for a full segment that carries 1448 bytes of payload.
fn expected_tbf_bps(rate_bps: u64) -> u64 {
    rate_bps * 1514 / 1448
}

/// The rate (bit/s) of the root qdisc of `dev` in namespace `ns`, read back from the kernel
/// with `tc -j qdisc show`; fails unless that root qdisc is a tbf.
fn kernel_tbf_bps(ns: &str, dev: &str) -> u64 {
    let out = netns::tc(ns, &["-j", "qdisc", "show", "dev", dev]).unwrap();
    let qdiscs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let roots: Vec<&serde_json::Value> = qdiscs
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["root"] == true)
        .collect();
    assert_eq!(roots.len(), 1, "{ns}/{dev}: expected one root qdisc: {out}");
    assert_eq!(roots[0]["kind"], "tbf", "{ns}/{dev}: root qdisc is not a tbf: {out}");
    // tc's JSON gives the rate in bytes per second.
    roots[0]["options"]["rate"].as_u64().unwrap() * 8
}

/// The tbf on `dev` in `ns` shapes to goodput `rate_bps`. tc keeps bytes per second (our
/// bit rate / 8, rounded down), hence the 8 bit/s of slack.
fn assert_shaped(ns: &str, dev: &str, rate_bps: u64, what: &str) {
    let (got, want) = (kernel_tbf_bps(ns, dev), expected_tbf_bps(rate_bps));
    assert!(
        got.abs_diff(want) < 8,
        "{what}: tbf on {ns}/{dev} is {got} bit/s, want {want} (goodput {rate_bps} bit/s)"
    );
}

/// Bytes moved each way through every path: many full segments, so they cross the delay
/// line as dozens of packets, and a fraction of a second even at 4 Mbit.
const MOVE_BYTES: u32 = 128 * 1024;
/// Only keeps a dead path from hanging the test (it then fails): never a speed bound, it is
/// ~200 times what MOVE_BYTES take at 4 Mbit.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Downloads and uploads MOVE_BYTES through `path` and checks that all of them arrived.
async fn assert_data_moves(lab: &Lab, path: &lab::calibrate::Path, server: std::net::SocketAddr, what: &str) {
    let down = tokio::time::timeout(HANG_GUARD, download_bytes(lab, path, server, MOVE_BYTES))
        .await
        .unwrap_or_else(|_| panic!("{what}: download hung"))
        .unwrap_or_else(|e| panic!("{what}: download failed: {e:#}"));
    assert_eq!(down, u64::from(MOVE_BYTES), "{what}: bytes downloaded");
    let up = tokio::time::timeout(HANG_GUARD, upload_bytes(lab, path, server, MOVE_BYTES))
        .await
        .unwrap_or_else(|_| panic!("{what}: upload hung"))
        .unwrap_or_else(|e| panic!("{what}: upload failed: {e:#}"));
    assert_eq!(up, u64::from(MOVE_BYTES), "{what}: bytes the server received");
}

/// Test (a): a profile's lab is built as the profile says.
/// - It has exactly the profile's uplinks, in order.
/// - Every uplink is shaped in the kernel at the profile's rate (as a tbf rate, see
///   [`expected_tbf_bps`]): upload on the node's veth, download on the router's veth.
/// - Every uplink's delay line holds half the profile's RTT each way, its jitter and its loss.
/// - A TCP connection bound to the uplink moves data both ways, through that uplink's
///   interface and through its delay line (which counts the packets it passed).
/// - With a LAN: every node's `lan0` and its bridge port are shaped at the LAN rate, and data
///   moves from phone-1 to home over it.
async fn check_configured(name: &str) {
    let p = profile(name).unwrap();
    let lab = Lab::build(&p).unwrap();
    let server = Server::start(&lab).unwrap();
    let built: Vec<(&str, &str)> = lab.uplinks().iter().map(|u| (u.node.as_str(), u.spec.name)).collect();
    let wanted: Vec<(&str, &str)> = p.links().map(|(n, l)| (n.name, l.name)).collect();
    assert_eq!(built, wanted, "{name}: uplinks built");
    for (n, spec) in p.links() {
        let (node, link) = (n.name, spec.name);
        let what = format!("{name} {node}/{link}");
        let u = lab.uplink(node, link);
        assert_shaped(&u.node_ns, &u.iface, spec.rate_bps, &format!("{what} upload"));
        assert_shaped(&u.router_ns, "node", spec.rate_bps, &format!("{what} download"));
        assert_eq!(lab.rate(node, link).unwrap(), spec.rate_bps, "{what}: lab's rate");

        let c = lab.delay_control(node, link).unwrap();
        assert_eq!(c.delay(Direction::Up), spec.rtt / 2, "{what}: one-way delay up");
        assert_eq!(c.delay(Direction::Down), spec.rtt / 2, "{what}: one-way delay down");
        assert_eq!(c.jitter(), spec.jitter, "{what}: jitter");
        assert!(
            (c.loss() - spec.loss).abs() < 1e-6,
            "{what}: loss {} ≠ {}",
            c.loss(),
            spec.loss
        );
        assert!(!c.is_blackholed(), "{what}: blackholed from the start");

        let passed0 = c.stats().passed;
        let (rx0, tx0) = lab.counters(node, link).unwrap();
        assert_data_moves(&lab, &uplink_path(&lab, node, link), server.addr, &what).await;
        let (rx1, tx1) = lab.counters(node, link).unwrap();
        let passed = c.stats().passed - passed0;
        let bytes = u64::from(MOVE_BYTES);
        assert!(
            rx1 - rx0 >= bytes && tx1 - tx0 >= bytes,
            "{what}: the data did not cross {}",
            u.iface
        );
        // Each direction carried at least MOVE_BYTES in segments of at most 1448 bytes.
        let segments = 2 * bytes.div_ceil(1448);
        assert!(
            passed >= segments,
            "{what}: delay line passed {passed} packets, < {segments}"
        );
    }
    if let Some(rate) = p.lan_rate_bps {
        let lan = lab.lan_ns().expect("a profile with a LAN rate has a LAN");
        for node in lab.nodes() {
            assert_shaped(lab.node_ns(node), LAN_IFACE, rate, &format!("{name} {node} LAN upload"));
            let port = lab::topology::lan_port(node);
            assert_shaped(lan, &port, rate, &format!("{name} {node} LAN download"));
        }
        let home_ip = lab.lan_ip("home").unwrap();
        let lan_server = Server::start_at(&lab, lab.node_ns("home"), home_ip).unwrap();
        let path = lab::calibrate::lan_path(&lab, "phone-1");
        assert_data_moves(&lab, &path, lan_server.addr, &format!("{name} phone-1 LAN")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_links_configured_as_profile() {
    if root_or_skip("home_links_configured_as_profile") {
        check_configured("home").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_links_configured_as_profile() {
    if root_or_skip("peers_links_configured_as_profile") {
        check_configured("peers").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_links_configured_as_profile() {
    if root_or_skip("skewed_links_configured_as_profile") {
        check_configured("skewed").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_links_configured_as_profile() {
    if root_or_skip("lossy_links_configured_as_profile") {
        check_configured("lossy").await;
    }
}

/// The delay line drops about the configured fraction of packets (lossy: 2% on `4g`).
#[test]
fn loss_matches_profile() {
    if !root_or_skip("loss_matches_profile") {
        return;
    }
    let p = profile("lossy").unwrap();
    let lab = Lab::build(&p).unwrap();
    let ip = lab.origin_ip();
    let rx = lab
        .in_ns(lab.internet_ns(), move || std::net::UdpSocket::bind((ip, 0)))
        .unwrap()
        .unwrap();
    let to = rx.local_addr().unwrap();
    let addr = lab.uplink("home", "4g").addr;
    let tx = lab
        .in_ns(lab.node_ns("home"), move || std::net::UdpSocket::bind((addr, 0)))
        .unwrap()
        .unwrap();
    const N: u32 = 3000;
    // Receive while sending: a socket buffer holds only a few hundred small datagrams.
    rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let receiver = std::thread::spawn(move || {
        let mut got = 0u32;
        let mut b = [0u8; 16];
        while rx.recv(&mut b).is_ok() {
            got += 1;
        }
        got
    });
    for i in 0..N {
        tx.send_to(&i.to_be_bytes(), to).unwrap();
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1)); // stay far below the link rate
        }
    }
    let got = receiver.join().unwrap();
    let loss = 1.0 - f64::from(got) / f64::from(N);
    println!("lossy/4g: {got}/{N} received, loss {:.2}% (nominal 2%)", loss * 100.0);
    // 3000 packets at 2%: mean 60 lost, sd ~7.7; [1%, 3.3%] is beyond 3.5 sd either way.
    assert!((0.01..=0.033).contains(&loss), "loss {loss}");
    assert!(lab.delay_control("home", "4g").unwrap().stats().lost > 0);
}

/// Jitter spreads RTTs within `[rtt, rtt + 2 × jitter]` but never reorders packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_rtt_but_keeps_order() {
    if !root_or_skip("jitter_spreads_rtt_but_keeps_order") {
        return;
    }
    let lab = Lab::build(&profile("skewed").unwrap()).unwrap();
    let server = Server::start(&lab).unwrap();
    let control = lab.delay_control("home", "fiber").unwrap();
    control.set_jitter(Duration::from_millis(10));
    let path = uplink_path(&lab, "home", "fiber");
    let rtt = measure_rtt(&lab, &path, server.addr).unwrap();
    println!("fiber 10 ms with 10 ms jitter each way: median rtt {rtt:?}");
    // Jitter only adds delay (about 10 ms at the median here), so a lower bound needs no
    // quiet machine; an upper bound would measure the machine's load.
    assert!(rtt > Duration::from_millis(11), "jitter added nothing: {rtt:?}");

    // UDP carries sequence numbers; a reordering delay line would show it here.
    let ip = lab.origin_ip();
    let rx = lab
        .in_ns(lab.internet_ns(), move || std::net::UdpSocket::bind((ip, 0)))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let to = rx.local_addr().unwrap();
    let receiver = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut b = [0u8; 16];
        while let Ok(n) = rx.recv(&mut b) {
            seen.push(u32::from_be_bytes(b[..n].try_into().unwrap()));
        }
        seen
    });
    let addr = path_addr(&lab, "home", "fiber");
    let tx = lab
        .in_ns(&path.ns, move || std::net::UdpSocket::bind((addr, 0)))
        .unwrap()
        .unwrap();
    for i in 0..500u32 {
        tx.send_to(&i.to_be_bytes(), to).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    let seen = receiver.join().unwrap();
    assert_eq!(seen.len(), 500, "lost packets without loss configured");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "jitter reordered packets");
}

fn path_addr(lab: &Lab, node: &str, link: &str) -> Ipv4Addr {
    lab.uplink(node, link).addr
}

/// Test (b): cut, blackhole and restore; set_rate; counters; the spare interface.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_blackhole_restore() {
    if !root_or_skip("cut_blackhole_restore") {
        return;
    }
    let p = profile("home").unwrap();
    let lab = Lab::build_with(
        &p,
        LabOptions {
            extra_unnamed_iface: true,
            ..Default::default()
        },
    )
    .unwrap();
    let server = Server::start(&lab).unwrap();
    let (node, link) = ("home", "4g-b");
    let iface = lab.uplink(node, link).iface.clone();
    let ns = lab.node_ns(node).to_owned();
    let short = Duration::from_millis(1500);
    let path = uplink_path(&lab, node, link);

    // Works at first, and the counters see it.
    let (rx0, tx0) = lab.counters(node, link).unwrap();
    let rtt = measure_rtt(&lab, &path, server.addr).unwrap();
    let (rx1, tx1) = lab.counters(node, link).unwrap();
    assert!(rx1 > rx0 && tx1 > tx0, "counters did not move");
    assert!(rtt >= Duration::from_millis(40), "rtt {rtt:?}");

    // Cut: the interface is down and connecting through it fails.
    lab.cut(node, link).unwrap();
    assert!(!netns::is_up(&ns, &iface).unwrap());
    assert!(lab.is_cut(node, link).unwrap());
    assert!(
        connect(&lab, &path, server.addr, short).await.is_err(),
        "connect through a cut link"
    );
    // The other uplinks are unaffected.
    measure_rtt(&lab, &uplink_path(&lab, node, "adsl"), server.addr).unwrap();

    // Restore: up again, default route back, works.
    lab.restore(node, link).unwrap();
    assert!(netns::is_up(&ns, &iface).unwrap());
    let routes = netns::ip(&ns, &["route", "show", "default", "dev", &iface]).unwrap();
    assert!(routes.contains("via"), "default route not restored: {routes}");
    measure_rtt(&lab, &path, server.addr).unwrap();

    // Blackhole: an established connection stalls and new connects time out, while the
    // interface stays up.
    let mut old = connect(&lab, &path, server.addr, short).await.unwrap();
    old.set_nodelay(true).unwrap();
    old.write_all(&header(b'E', 0)).await.unwrap();
    lab.blackhole(node, link).unwrap();
    assert!(
        netns::is_up(&ns, &iface).unwrap(),
        "blackhole must leave the interface up"
    );
    assert!(
        connect(&lab, &path, server.addr, short).await.is_err(),
        "connect through a blackhole"
    );
    old.write_all(b"?").await.unwrap();
    let mut b = [0u8; 1];
    let stalled = tokio::time::timeout(short, old.read_exact(&mut b)).await.is_err();
    assert!(stalled, "echo came back through a blackhole");
    assert!(lab.delay_control(node, link).unwrap().stats().blackholed > 0);

    // Restore: the old connection recovers (TCP retransmits) and new ones work.
    lab.restore(node, link).unwrap();
    tokio::time::timeout(Duration::from_secs(10), old.read_exact(&mut b))
        .await
        .expect("old connection did not recover after restore")
        .unwrap();
    assert_eq!(&b, b"?");
    measure_rtt(&lab, &path, server.addr).unwrap();

    // set_rate takes effect: the kernel shapes adsl at 2 Mbit/s on both sides, the other
    // links keep their rate, and data still moves. (`lab calibrate` measures the new rate.)
    lab.set_rate(node, "adsl", 2_000_000).unwrap();
    let adsl = lab.uplink(node, "adsl");
    assert_shaped(&adsl.node_ns, &adsl.iface, 2_000_000, "adsl upload after set_rate");
    assert_shaped(&adsl.router_ns, "node", 2_000_000, "adsl download after set_rate");
    assert_eq!(lab.rate(node, "adsl").unwrap(), 2_000_000);
    let other = lab.uplink(node, link);
    assert_shaped(
        &other.node_ns,
        &other.iface,
        other.spec.rate_bps,
        "4g-b after adsl's set_rate",
    );
    assert_shaped(
        &other.router_ns,
        "node",
        other.spec.rate_bps,
        "4g-b after adsl's set_rate",
    );
    assert_data_moves(&lab, &uplink_path(&lab, node, "adsl"), server.addr, "adsl at 2 Mbit").await;

    // spare0 reaches the origin directly.
    let spare = lab.spare().unwrap().clone();
    let s = socket(&lab, &ns, &spare.iface).unwrap();
    tokio::time::timeout(short, s.connect(server.addr))
        .await
        .unwrap()
        .unwrap();
}

fn lab_namespaces_left(id: &str) -> Vec<String> {
    let prefix = format!("bt-{id}-");
    netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Test (c): no namespace of a lab survives its drop, nor a panic in the test body, and
/// processes left inside are killed.
#[test]
fn namespaces_are_removed_on_drop_and_panic() {
    if !root_or_skip("namespaces_are_removed_on_drop_and_panic") {
        return;
    }
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Lab>(); // tests and benchmarks share one lab across tasks

    let p = profile("peers").unwrap();
    let t = Instant::now();
    let lab = Lab::build(&p).unwrap();
    println!("peers lab built in {:?}", t.elapsed());
    let id = lab.id().to_owned();
    let names: Vec<String> = lab.namespaces().map(str::to_owned).collect();
    assert_eq!(lab_namespaces_left(&id).len(), names.len());
    assert!(names.iter().all(|n| n.starts_with("bt-")));
    let t = Instant::now();
    drop(lab);
    println!("peers lab dropped in {:?}", t.elapsed());
    assert_eq!(lab_namespaces_left(&id), Vec::<String>::new());

    let ids = std::sync::Mutex::new(None);
    let child_pid = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::build(&profile("skewed").unwrap()).unwrap();
        *ids.lock().unwrap() = Some(lab.id().to_owned());
        let child = lab.command(lab.internet_ns(), "sleep").arg("600").spawn().unwrap();
        *child_pid.lock().unwrap() = Some(child.id());
        std::mem::forget(child);
        panic!("test body panics with the lab alive");
    }));
    assert!(result.is_err());
    let id = ids.lock().unwrap().clone().unwrap();
    assert_eq!(lab_namespaces_left(&id), Vec::<String>::new());
    let pid = child_pid.lock().unwrap().unwrap();
    // The killed child is a zombie until reaped; a zombie has state Z.
    std::thread::sleep(Duration::from_millis(100));
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("X");
    assert!(
        state == "Z" || state == "X",
        "process in the namespace survived: state {state}"
    );
}

/// The namespace primitives on their own: run in a namespace, read counters, stale cleanup
/// leaves live owners alone.
#[test]
fn netns_primitives() {
    if !root_or_skip("netns_primitives") {
        return;
    }
    let name = netns::ns_name(&netns::unique_id(), "prim");
    let ns = netns::Netns::create(&name).unwrap();
    netns::ip(&name, &["addr", "add", "127.0.0.2/8", "dev", "lo"]).ok();
    // A listener made inside the namespace is only reachable from inside it.
    let l = netns::in_netns(&name, || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .unwrap()
        .unwrap();
    let port = l.local_addr().unwrap().port();
    let (rx0, _) = netns::counters(&name, "lo").unwrap();
    netns::in_netns(&name, move || TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map(drop))
        .unwrap()
        .unwrap();
    let (rx1, tx1) = netns::counters(&name, "lo").unwrap();
    assert!(rx1 > rx0 && tx1 > 0);
    let out = netns::run(netns::exec(&name, "ip").args(["-o", "link"])).unwrap();
    assert!(out.contains("lo"));
    // A panic inside is an error for the caller (resume_unwind: no noise on stderr).
    assert!(netns::in_netns(&name, || std::panic::resume_unwind(Box::new("boom"))).is_err());
    assert!(netns::in_netns("bt-does-not-exist", || ()).is_err());
    // Our own namespace has a live owner (us), so cleanup must leave it.
    let deleted = netns::cleanup_stale().unwrap();
    assert!(!deleted.contains(&name));
    assert!(netns::list().unwrap().contains(&name));
    drop(ns);
    assert!(!netns::list().unwrap().contains(&name));

    // A namespace whose owner died is stale: a reaped child's pid is (briefly) unused.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = netns::ns_name(&format!("{dead:x}x0000"), "stale");
    netns::ip("", &["netns", "add", &stale]).unwrap();
    let deleted = netns::cleanup_stale().unwrap();
    assert!(deleted.contains(&stale), "{deleted:?}");
    assert!(!netns::list().unwrap().contains(&stale));
}

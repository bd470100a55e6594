//! The bond on loopback: a relay in-process, a node whose sources are three emulated uplinks
//! (no root), our origin, and real clients (curl, tokio-socks). The namespace-lab version,
//! with real interfaces, is in `netns_bond.rs`.

mod common;

use booster::{
    noise::Identity,
    policy::Pattern,
    relay::{self, Relay, RelayConfig},
    run::Running,
};
use common::{curl, sha256};
use lab::{emulink::EmuLink, origin::sha256_hex};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "bond test secret";

/// A relay on loopback that may reach loopback targets (tests only).
async fn start_relay(secret: &str) -> (SocketAddr, Arc<Relay>, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (relay, stop) = serve_relay(listener, secret, vec![Pattern::parse("127.0.0.0/8").unwrap()]);
    (addr, relay, stop)
}

/// Runs a relay on `listener` that may reach the special networks in `allow`.
fn serve_relay(
    listener: tokio::net::TcpListener,
    secret: &str,
    allow: Vec<Pattern>,
) -> (Arc<Relay>, CancellationToken) {
    let stop = CancellationToken::new();
    let relay = Relay::new(
        RelayConfig {
            psk: booster::noise::derive_psk(secret),
            identity: Identity::generate(),
            allow,
        },
        stop.clone(),
    );
    tokio::spawn(relay::serve(listener, relay.clone()));
    (relay, stop)
}

async fn bonded_node(relay: SocketAddr, secret: &str, rules: &str, links: &[EmuLink]) -> Running {
    let toml = format!("secret = \"{secret}\"\npeer_listen = \"off\"\nrelay = [\"{relay}\"]\n{rules}");
    common::emulated_node(&toml, links).await
}

/// A TCP echo server on loopback.
async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

fn links() -> Vec<EmuLink> {
    common::emu_links()
}

/// Waits until the node has a path to its relay on each of `n` sources.
async fn wait_paths(r: &Running, n: usize) {
    for _ in 0..200 {
        let relays = booster::bond::relays_json(&r.node);
        if relays[0]["paths"].as_array().map_or(0, Vec::len) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("paths never came up: {}", booster::bond::relays_json(&r.node));
}

/// Writes `data` through a bonded SOCKS5 connection to the echo server and reads it back,
/// calling `during` once a quarter of it came back.
async fn echo_through(proxy: SocketAddr, echo: SocketAddr, data: Vec<u8>, during: impl FnOnce()) -> Vec<u8> {
    let s = tokio_socks::tcp::Socks5Stream::connect(proxy, echo).await.unwrap();
    let (mut r, mut w) = tokio::io::split(s);
    let len = data.len();
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(64 * 1024) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(len);
    let mut buf = vec![0u8; 64 * 1024];
    let mut during = Some(during);
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), r.read(&mut buf))
            .await
            .expect("the bonded stream stalled for 30 s")
            .unwrap();
        if n == 0 {
            break;
        }
        back.extend_from_slice(&buf[..n]);
        if back.len() >= len / 4 {
            if let Some(f) = during.take() {
                f();
            }
        }
    }
    writer.await.unwrap();
    back
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bonded_download_through_curl_is_exact_and_uses_every_link() {
    let (relay, _r, _stop) = start_relay(SECRET).await;
    let o = common::origin();
    let links = links();
    let node = bonded_node(relay, SECRET, "bond = [\"all\"]", &links).await;
    wait_paths(&node, 3).await;
    let size = 12_000_000;
    let (code, body, err) = curl(vec![
        "-sS".into(),
        "-x".into(),
        format!("socks5h://{}", node.proxy_addr),
        common::file_url(&o, size),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len() as u64, size);
    assert_eq!(sha256(&body), sha256_hex(size, size));
    // One TCP stream, yet every uplink carried part of it. How much is timing (on a quiet
    // machine about 2.5 / 4.9 / 4.6 MB, by rate; under CPU contention a path judged stalled
    // for a while gets less: 1.0 MB once in CI), so shares are the benchmark's to measure.
    for l in &links {
        assert!(l.bytes_down() > 250_000, "{}", common::per_link(&links));
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_are_bonded_and_exact() {
    let (relay, _r, _stop) = start_relay(SECRET).await;
    let echo = echo_server().await;
    let links = links();
    let node = bonded_node(relay, SECRET, "bond = [\"all\"]", &links).await;
    wait_paths(&node, 3).await;
    let data = pattern(6_000_000);
    let back = echo_through(node.proxy_addr, echo, data.clone(), || {}).await;
    assert!(
        back == data,
        "echo differs: {} of {} bytes back",
        back.len(),
        data.len()
    );
    let up: Vec<u64> = links.iter().map(EmuLink::bytes_up).collect();
    assert!(
        up.iter().filter(|&&b| b > 500_000).count() >= 2,
        "upload used one link: {up:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_or_blackholed_mid_stream_loses_nothing() {
    let (relay, _r, _stop) = start_relay(SECRET).await;
    let echo = echo_server().await;
    let links = links();
    let node = bonded_node(relay, SECRET, "bond = [\"all\"]", &links).await;
    wait_paths(&node, 3).await;
    let data = pattern(8_000_000);
    let (cut, stalled) = (links[1].clone(), links[2].clone());
    let back = echo_through(node.proxy_addr, echo, data.clone(), move || {
        cut.cut();
        stalled.stall(true);
    })
    .await;
    assert!(
        back == data,
        "echo differs: {} of {} bytes back",
        back.len(),
        data.len()
    );
    // The cut link's path comes back once it is restored.
    links[1].restore();
    links[2].restore();
    wait_paths(&node, 3).await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundant_mode_keeps_an_echo_session_alive_while_links_die_one_by_one() {
    let (relay, _r, _stop) = start_relay(SECRET).await;
    let echo = echo_server().await;
    let links = links();
    let node = bonded_node(relay, SECRET, "redundant = [\"all\"]", &links).await;
    wait_paths(&node, 3).await;
    let mut s = tokio_socks::tcp::Socks5Stream::connect(node.proxy_addr, echo)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    for round in 0..30 {
        if round == 10 {
            links[0].cut();
        }
        if round == 20 {
            links[1].stall(true);
        }
        let line = format!("keystroke {round}\n");
        s.write_all(line.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        while got.len() < line.len() {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("round {round}: no echo in 10 s"))
                .unwrap();
            assert!(n > 0, "round {round}: the session closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, line.as_bytes());
    }
    let relays = booster::bond::relays_json(&node.node);
    assert!(relays[0]["redundant_bytes"].as_u64().unwrap() > 0, "{relays}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_gets_nothing() {
    let (relay_addr, relay, _stop) = start_relay(SECRET).await;
    let o = common::origin();
    let links = links();
    let node = bonded_node(relay_addr, "another secret", "bond = [\"all\"]", &links).await;
    let (_code, body, err) = curl(vec![
        "-sS".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "-x".into(),
        format!("http://{}", node.proxy_addr),
        common::file_url(&o, 1000),
    ])
    .await;
    // No path ever comes up, so the bonded stream fails after the connect timeout: 502.
    assert_eq!(String::from_utf8_lossy(&body), "502", "{err}");
    assert!(relay.refused.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_eq!(relay.link_count(), 0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_refuses_private_targets_unless_allowed() {
    // This relay allows nothing special: loopback targets are refused.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _relay = serve_relay(listener, SECRET, Vec::new());
    let o = common::origin();
    let links = links();
    let node = bonded_node(addr, SECRET, "bond = [\"all\"]", &links).await;
    wait_paths(&node, 3).await;
    let (_code, body, err) = curl(vec![
        "-s".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "-x".into(),
        format!("http://{}", node.proxy_addr),
        common::file_url(&o, 1000),
    ])
    .await;
    assert_eq!(String::from_utf8_lossy(&body), "403", "{err}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_not_matching_a_rule_are_not_bonded() {
    let (relay, _r, _stop) = start_relay(SECRET).await;
    let o = common::origin();
    let links = links();
    let node = bonded_node(relay, SECRET, "bond = [\":9\"]\nredundant = []", &links).await;
    wait_paths(&node, 3).await;
    let (code, body, err) = curl(vec![
        "-sS".into(),
        "-x".into(),
        format!("http://{}", node.proxy_addr),
        common::file_url(&o, 100_000),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 100_000);
    let relays = booster::bond::relays_json(&node.node);
    assert_eq!(relays[0]["bonded_rx_bytes"].as_u64(), Some(0), "{relays}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_over_the_redundant_bond_arrives_once_each_way() {
    let (relay, _r, _stop) = start_relay(SECRET).await;
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            server.send_to(&reply, from).await.unwrap();
        }
    });
    let links = links();
    let node = bonded_node(relay, SECRET, "redundant = [\"all\"]", &links).await;
    wait_paths(&node, 3).await;
    let backing = tokio::net::TcpStream::connect(node.proxy_addr).await.unwrap();
    let dgram = fast_socks5::client::Socks5Datagram::bind(backing, "127.0.0.1:0")
        .await
        .expect("UDP ASSOCIATE accepted");
    for i in 0..10 {
        let msg = format!("datagram {i}");
        dgram.send_to(msg.as_bytes(), server_addr).await.unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), dgram.recv_from(&mut buf))
            .await
            .expect("reply arrives")
            .unwrap();
        assert_eq!(&buf[..n], format!("echo:{msg}").as_bytes());
        assert_eq!(from.to_string(), server_addr.to_string());
    }
    // Every datagram went on three paths, yet the server saw each once and the client got
    // one reply each: nothing more arrives.
    let mut buf = [0u8; 2048];
    let extra = tokio::time::timeout(Duration::from_millis(500), dgram.recv_from(&mut buf)).await;
    assert!(extra.is_err(), "a duplicate reached the client");
    assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), 10);
    node.shutdown().await;
}

/// One echo round trip of `line` on `s`, within `limit`.
async fn echo_once<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    line: &str,
    limit: Duration,
) -> std::io::Result<()> {
    s.write_all(line.as_bytes()).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < line.len() {
        let n = tokio::time::timeout(limit, s.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no echo"))??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, line.as_bytes());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_every_path_dropping_for_a_few_seconds() {
    let (relay, _r, _stop) = start_relay(SECRET).await;
    let echo = echo_server().await;
    let links = links();
    let node = bonded_node(relay, SECRET, "bond = [\"all\"]", &links).await;
    wait_paths(&node, 3).await;
    let mut s = tokio_socks::tcp::Socks5Stream::connect(node.proxy_addr, echo)
        .await
        .unwrap();
    echo_once(&mut s, "before\n", Duration::from_secs(10)).await.unwrap();
    for l in &links {
        l.cut();
    }
    // Written while no path exists: it waits in the link.
    s.write_all(b"during\n").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for l in &links {
        l.restore();
    }
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("the session resumed")
        .unwrap();
    assert_eq!(&buf[..n], b"during\n");
    echo_once(&mut s, "after\n", Duration::from_secs(10)).await.unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restart_resets_old_streams_cleanly_and_new_ones_work() {
    let (relay_addr, _relay, stop) = start_relay(SECRET).await;
    let echo = echo_server().await;
    let links = links();
    let node = bonded_node(relay_addr, SECRET, "bond = [\"all\"]", &links).await;
    wait_paths(&node, 3).await;
    let mut old = tokio_socks::tcp::Socks5Stream::connect(node.proxy_addr, echo)
        .await
        .unwrap();
    echo_once(&mut old, "hello\n", Duration::from_secs(10)).await.unwrap();
    // The relay process "restarts": every path and all its state go; a new one takes the port.
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = loop {
        match tokio::net::TcpListener::bind(relay_addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let _relay = serve_relay(listener, SECRET, vec![Pattern::parse("127.0.0.0/8").unwrap()]);
    // The old stream fails with an error, not a hang and not silently wrong data.
    let r = echo_once(&mut old, "lost?\n", Duration::from_secs(20)).await;
    let e = r.expect_err("a stream of the old relay cannot survive its restart");
    assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "reset, not left hanging");
    wait_paths(&node, 3).await;
    let mut new = tokio_socks::tcp::Socks5Stream::connect(node.proxy_addr, echo)
        .await
        .unwrap();
    echo_once(&mut new, "again\n", Duration::from_secs(10)).await.unwrap();
    node.shutdown().await;
}

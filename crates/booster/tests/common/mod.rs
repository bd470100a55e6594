//! Shared helpers for the integration tests: a node on loopback with every listener on port 0,
//! our origin server, and real clients (curl as a subprocess).
#![allow(dead_code)]

pub mod netlab;

use booster::{
    config::{Config, FileConfig, Overrides},
    run::{self, Extras, Running},
};
use std::{net::SocketAddr, process::Command};

pub struct TestNode {
    pub running: Option<Running>,
    pub proxy: SocketAddr,
    pub api: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TestNode {
    pub async fn shutdown(mut self) -> usize {
        self.running.take().expect("running").shutdown().await
    }
    pub fn node(&self) -> &std::sync::Arc<booster::state::Node> {
        &self.running.as_ref().expect("running").node
    }
}

/// Starts a node whose only uplink is `lo`, with extra TOML config.
pub async fn node_with(toml: &str) -> TestNode {
    node_with_ifaces(toml, &["lo"]).await
}

pub async fn node_with_ifaces(toml: &str, ifaces: &[&str]) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    // Every test node asks our own nameserver, so no test query leaves the machine.
    let dns = fake_dns().await;
    let toml = format!("dns_servers = [\"{dns}\"]\n{toml}");
    let file = FileConfig::parse(&toml).expect("test config parses");
    let flags = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        api: Some("127.0.0.1:0".parse().unwrap()),
        iface: ifaces.iter().map(|s| s.to_string()).collect(),
        data_dir: Some(dir.path().to_owned()),
        probe_target: Some("none".into()),
        no_mdns: true,
        ..Default::default()
    };
    let cfg = Config::build(file, flags).expect("test config is valid");
    let running = run::start(cfg, Extras::default()).await.expect("node starts");
    TestNode {
        proxy: running.proxy_addr,
        api: running.api_addr.unwrap(),
        running: Some(running),
        dir,
    }
}

/// Our origin on loopback.
pub fn origin() -> lab::origin::Origin {
    origin_with(Default::default())
}

/// Our origin on loopback, with fault modes.
pub fn origin_with(faults: lab::origin::Faults) -> lab::origin::Origin {
    lab::origin::Origin::serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), faults).unwrap()
}

/// The URL of a `size`-byte file on `origin`.
pub fn file_url(origin: &lab::origin::Origin, size: u64) -> String {
    format!("http://{}/file/{size}", origin.local_addr())
}

/// "name bytes, ..." of what each emulated link carried down, for assertion messages.
pub fn per_link(links: &[lab::emulink::EmuLink]) -> String {
    links
        .iter()
        .map(|l| format!("{} {}", l.name(), l.bytes_down()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs curl with `args`, returning (exit code, stdout bytes, stderr text).
pub async fn curl(args: Vec<String>) -> (i32, Vec<u8>, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60"])
            .args(&args)
            .output()
            .expect("curl is installed");
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A nameserver on loopback: names under `test.booster` are 127.0.0.1, everything else is
/// NXDOMAIN.
pub async fn fake_dns() -> SocketAddr {
    use hickory_proto::{
        op::{Message, MessageType, ResponseCode},
        rr::{rdata::A, RData, Record, RecordType},
    };
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_recursion_available(true);
            for query in q.queries() {
                r.add_query(query.clone());
                let name = query.name().to_ascii().to_ascii_lowercase();
                if name.trim_end_matches('.').ends_with("test.booster") {
                    if query.query_type() == RecordType::A {
                        r.add_answer(Record::from_rdata(
                            query.name().clone(),
                            60,
                            RData::A(A::new(127, 0, 0, 1)),
                        ));
                    }
                } else {
                    r.set_response_code(ResponseCode::NXDomain);
                }
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
        }
    });
    addr
}

/// An emulated uplink with `mbit` Mbit/s each way and `rtt_ms` of round trip.
pub fn emu_link(name: &'static str, mbit: u64, rtt_ms: u64) -> lab::emulink::EmuLink {
    lab::emulink::EmuLink::new(&lab::profile::LinkSpec {
        name,
        rate_bps: mbit * 1_000_000,
        rtt: std::time::Duration::from_millis(rtt_ms),
        jitter: std::time::Duration::ZERO,
        loss: 0.0,
    })
}

/// Three unequal emulated uplinks, modest enough for fast tests.
pub fn emu_links() -> Vec<lab::emulink::EmuLink> {
    vec![
        emu_link("slow", 20, 30),
        emu_link("fast-a", 40, 20),
        emu_link("fast-b", 40, 40),
    ]
}

/// A loopback config (port 0 listeners, no probes, no mDNS) whose only uplinks will be
/// emulated ones: nothing is discovered.
pub fn emulated_config(toml: &str) -> Config {
    let mut cfg = Config::build(
        FileConfig::parse(toml).expect("test config parses"),
        Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            api: Some("127.0.0.1:0".parse().unwrap()),
            probe_target: Some("none".into()),
            no_mdns: true,
            ..Default::default()
        },
    )
    .unwrap();
    cfg.uplinks.clear();
    cfg.discover = false;
    cfg
}

/// A running node on loopback whose only sources are `links`.
pub async fn emulated_node(toml: &str, links: &[lab::emulink::EmuLink]) -> Running {
    let sources = links.iter().map(booster::source::Source::emulated).collect();
    run::start(
        emulated_config(toml),
        Extras {
            sources,
            no_store: true,
        },
    )
    .await
    .unwrap()
}

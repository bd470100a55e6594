//! `booster monitor --json` in the namespace lab: the `home` profile's three shaped uplinks,
//! booster as its own process, downloads with curl, and the monitor's stdout read line by line.
//! The sources and their throughput must appear in the stream, and the monitor must keep
//! running across a restart of the node, saying it is reconnecting.
//!
//! These need root (network namespaces); without it they say so and pass vacuously.

mod common;

use common::netlab::{fetch_parallel, lab_origin, root, start_node};
use lab::{profile::profile, topology::Lab};
use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const UPLINKS: [&str; 3] = ["adsl", "4g-a", "4g-b"];
const CONFIG: &str = "listen = \"127.0.0.1:1080\"\napi = \"127.0.0.1:4884\"\nprobe_target = \"10.99.0.1:80\"\n\
                      probe_interval = \"500ms\"\ndiscover_interval = \"500ms\"\nconnect_timeout = \"2s\"\n";
/// Bound on each wait for a line we expect (a hang fails the test; no timing is asserted).
const WAIT: Duration = Duration::from_secs(60);

/// A `booster monitor` process whose stdout lines arrive on a channel; killed on drop.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(lab: &Lab, ns: &str, view: &str) -> Monitor {
        let mut child = lab
            .command(ns, env!("CARGO_BIN_EXE_booster"))
            .args(["monitor", view, "--json", "--target", "127.0.0.1:4884"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Monitor { child, lines }
    }

    /// Reads lines until one, parsed, satisfies `want`; fails after [`WAIT`].
    fn until(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
                    if want(&v) {
                        return v;
                    }
                    last = line;
                }
                Err(_) => panic!("the monitor never printed {what}; last line: {last}"),
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rate(v: &Value, source: &str) -> f64 {
    v["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == source)
        .and_then(|s| s["rate_rx"].as_f64())
        .unwrap_or(0.0)
}

#[test]
fn monitor_json_shows_sources_and_throughput_and_outlives_a_node_restart() {
    if !root() {
        return;
    }
    let lab = Lab::build(&profile("home").unwrap()).expect("lab builds");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _origin = lab_origin(&lab, &rt);
    let dir = tempfile::tempdir().unwrap();
    let home = lab.node_ns("home").to_string();
    let args: Vec<&str> = UPLINKS.iter().flat_map(|u| ["--iface", *u]).collect();
    let mut node = start_node(&lab, &home, dir.path(), "booster.toml", CONFIG, &args);
    let net = Monitor::start(&lab, &home, "net");
    let peers = Monitor::start(&lab, &home, "node");

    let first = net.until("a snapshot", |v| v["type"] == "snapshot");
    let names = |v: &Value| -> Vec<String> {
        v["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(&first), UPLINKS, "{first}");
    assert_eq!(first["relays"], serde_json::json!([]));
    let busy = std::thread::scope(|s| {
        let traffic = s.spawn(|| {
            fetch_parallel(&lab, &home, "127.0.0.1:1080", 12, |i| {
                format!("http://10.99.0.1/file/3MB?seed={i}")
            })
        });
        let busy = net.until("throughput on two uplinks or more", |v| {
            v["type"] == "snapshot" && UPLINKS.iter().filter(|u| rate(v, u) > 100_000.0).count() >= 2
        });
        assert_eq!(traffic.join().unwrap(), 12, "every download succeeded");
        busy
    });
    assert!(busy["connections"]["total"].as_u64().unwrap() >= 1, "{busy}");
    let line = peers.until("the node view", |v| v["type"] == "peers");
    assert_eq!(line["peers"], serde_json::json!([]), "{line}");

    // The node goes away: the monitor says so and keeps running.
    node.kill();
    let lost = net.until("reconnecting", |v| v["type"] == "reconnecting");
    assert_eq!(lost["target"], "127.0.0.1:4884");
    // It comes back (same data dir): the stream resumes from a fresh node.
    let _node = start_node(&lab, &home, dir.path(), "booster.toml", CONFIG, &args);
    let again = net.until("a snapshot after the restart", |v| v["type"] == "snapshot");
    assert_eq!(again["seq"], 0, "a new stream from the new node: {again}");
    assert_eq!(names(&again), UPLINKS, "{again}");
}

//! Helpers for namespace-lab tests: booster nodes as processes inside namespaces, curl as the
//! client, status over the API.

use lab::topology::Lab;
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

pub fn root() -> bool {
    if !lab::netns::is_root() {
        eprintln!("not root: namespace tests skipped");
        return false;
    }
    true
}

/// A booster process; killed on drop.
pub struct NodeProc(pub Option<Child>);

impl NodeProc {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `booster start --config <dir>/<file> <args>` in `ns` and waits until it listens.
pub fn start_node(lab: &Lab, ns: &str, dir: &Path, file: &str, toml: &str, args: &[&str]) -> NodeProc {
    let cfg = dir.join(file);
    std::fs::write(&cfg, toml).unwrap();
    let data = dir.join(format!("{file}.data"));
    let mut child = lab
        .command(ns, env!("CARGO_BIN_EXE_booster"))
        .arg("start")
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("booster exited before listening:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains("booster: proxy on") {
            break;
        }
    }
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            if std::env::var_os("BOOSTER_TEST_LOGS").is_some() {
                eprintln!("{l}");
            }
        }
    });
    NodeProc(Some(child))
}

/// curl in `ns` through the SOCKS5 proxy at `proxy`; returns (ok, bytes).
pub fn fetch(lab: &Lab, ns: &str, proxy: &str, url: &str) -> (bool, u64) {
    let out = lab
        .command(ns, "curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "-x",
        ])
        .arg(format!("socks5h://{proxy}"))
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0),
    )
}

/// `n` downloads at once of `url_of(i)`; returns how many succeeded.
pub fn fetch_parallel(lab: &Lab, ns: &str, proxy: &str, n: usize, url_of: impl Fn(usize) -> String + Sync) -> usize {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let url = url_of(i);
                s.spawn(move || fetch(lab, ns, proxy, &url))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).filter(|(ok, _)| *ok).count()
    })
}

pub fn status(lab: &Lab, ns: &str, api: &str) -> serde_json::Value {
    let out = lab
        .command(ns, env!("CARGO_BIN_EXE_booster"))
        .args(["status", "--json", "--node", api])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

pub fn source(v: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    v["sources"].as_array()?.iter().find(|s| s["name"] == name).cloned()
}

/// Polls `cond` on the node's status until it holds (bounded wait, no timing assertion).
pub fn wait_status(
    lab: &Lab,
    ns: &str,
    api: &str,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = status(lab, ns, api);
        if cond(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never saw: {what}\nlast status: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Our origin on 10.99.0.1:80 inside the lab's internet namespace, served by `rt`.
pub fn lab_origin(lab: &Lab, rt: &tokio::runtime::Runtime) -> lab::origin::Origin {
    let listener = lab
        .in_ns(lab.internet_ns(), || std::net::TcpListener::bind("10.99.0.1:80"))
        .unwrap()
        .unwrap();
    let _g = rt.enter();
    lab::origin::Origin::serve(listener, Default::default()).unwrap()
}

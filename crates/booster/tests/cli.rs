//! The `booster` binary as a user meets it: exit codes, config errors, signals, persistence.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

fn booster() -> Command {
    Command::new(env!("CARGO_BIN_EXE_booster"))
}

#[test]
fn an_open_proxy_is_refused_with_exit_code_2() {
    let out = booster()
        .args([
            "start",
            "--listen",
            "0.0.0.0:0",
            "--api",
            "127.0.0.1:0",
            "--probe-target",
            "none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("open proxy"), "{err}");
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("booster.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nbogus_key = 1\n").unwrap();
    let out = booster().args(["start", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("booster.toml") && err.contains("line 2") && err.contains("bogus_key"),
        "{err}"
    );

    std::fs::write(&path, "[[uplink]]\nname = \"wwan0\"\ncap = \"lots\"\n").unwrap();
    let out = booster().args(["start", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("lots"), "{err}");

    let out = booster().args(["start", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("booster.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\nprobe_target = \"none\"\n[auth]\nusername = \"u\"\npassword = \"hunter2-very-secret\"\n").unwrap();
    let mut child = booster()
        .args(["-vv", "start", "--iface", "lo", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains("proxy on") {
            break;
        }
        line.clear();
    }
    nix_kill(child.id(), "TERM");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    seen.push_str(&rest);
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}");
    assert!(!seen.contains("hunter2"), "{seen}");
}

fn nix_kill(pid: u32, sig: &str) {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
}

/// Starts the binary on loopback and returns (child, proxy addr, api addr). The caller waits
/// for the child.
#[allow(clippy::zombie_processes)]
fn spawn_node(dir: &std::path::Path) -> (std::process::Child, String, String) {
    let mut child = booster()
        .args([
            "start",
            "--iface",
            "lo",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--probe-target",
            "none",
            "--data-dir",
        ])
        .arg(dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node exited early");
        }
        if let Some(rest) = line.trim().strip_prefix("booster: proxy on ") {
            let proxy = rest.split_whitespace().next().unwrap().to_string();
            let api = rest.rsplit("API on ").next().unwrap().trim().to_string();
            // Keep draining stderr so the node never blocks on a full pipe.
            std::thread::spawn(move || for _ in stderr.lines() {});
            return (child, proxy, api);
        }
    }
}

#[tokio::test]
async fn status_and_persisted_usage_across_restart_and_kill_9() {
    let origin = common::origin();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/file/2MB", origin.local_addr());

    // Run, move 2 MB, stop with SIGTERM: the flush on shutdown saves the count.
    let (child, proxy, api) = spawn_node(dir.path());
    let (code, body, err) = common::curl(vec!["-x".into(), format!("socks5h://{proxy}"), url.clone()]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 2_000_000);

    let out = booster().args(["status", "--json", "--node", &api]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lo = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "lo")
        .unwrap()
        .clone();
    assert!(lo["rx_bytes"].as_u64().unwrap() >= 2_000_000, "{lo}");
    let out = booster().args(["status", "--node", &api]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("SOURCE") && table.contains("lo "), "{table}");

    nix_kill(child.id(), "TERM");
    let mut child = child;
    assert!(child.wait().unwrap().success());

    // Run again, move 1 MB more, then kill -9 after a flush interval: counts survive.
    let (mut child, proxy, api) = spawn_node(dir.path());
    let url1 = format!("http://{}/file/1MB", origin.local_addr());
    let (code, _, err) = common::curl(vec!["-x".into(), format!("socks5h://{proxy}"), url1]).await;
    assert_eq!(code, 0, "{err}");
    tokio::time::sleep(booster::store::FLUSH_EVERY * 2 + Duration::from_millis(500)).await;
    let _ = api;
    nix_kill(child.id(), "KILL");
    let _ = child.wait();

    let store = booster::store::Store::open(dir.path()).unwrap();
    let (rx, _tx) = store.usage("lo", &booster::store::current_month()).unwrap();
    assert!(rx >= 3_000_000, "usage after restart and kill -9: {rx}");
}

#[test]
fn status_against_no_node_fails_with_exit_code_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = booster()
        .args(["status", "--node", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

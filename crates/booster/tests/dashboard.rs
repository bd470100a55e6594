//! The web dashboard in a real browser: Debian's Chromium, headless, against a running node
//! with traffic on three emulated uplinks. It checks that the charts drew live data from the
//! node, and saves a screenshot as `target/artifacts/dashboard.png`.
//!
//! The page is opened with `?frames=N`: it draws N snapshots from the event stream, then
//! closes the stream, so Chromium's virtual clock (which waits while a request is open) can
//! run out its budget and dump the DOM or take the screenshot.
//!
//! Chromium is required: CI installs it (`.ci/run`). Without it these tests fail and say so,
//! unless `BOOSTER_SKIP_BROWSER=1` is set.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The flags every run gets: headless, and nothing that reaches out to the network.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];
/// Virtual time the page gets after its stream closed; real time passes while it is open.
const BUDGET_MS: &str = "30000";
/// A browser run that takes longer than this is stuck: it is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if std::env::var_os("BOOSTER_SKIP_BROWSER").is_some() {
        eprintln!("chromium not found and BOOSTER_SKIP_BROWSER is set: browser test skipped");
        return None;
    }
    panic!(
        "chromium is not installed, so the dashboard cannot be tested in a browser: \
         install Debian's chromium (apt-get install chromium; .ci/run does), \
         or set BOOSTER_SKIP_BROWSER=1 to skip this test"
    );
}

/// Runs Chromium on `url` with `extra` flags and a fresh profile; returns its stdout.
fn browse(chrome: &Path, extra: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chrome)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish {url} within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The attributes of every `<polyline>` in `dom` (Chromium serializes attributes as `k="v"`).
fn polylines(dom: &str) -> Vec<Vec<(String, String)>> {
    dom.split("<polyline ")
        .skip(1)
        .map(|tag| {
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            tag.split("\" ")
                .filter_map(|kv| kv.split_once("=\""))
                .map(|(k, v)| (k.trim().to_string(), v.trim_end_matches('"').to_string()))
                .collect()
        })
        .collect()
}

fn attr<'a>(line: &'a [(String, String)], key: &str) -> Option<&'a str> {
    line.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Downloads through the node's proxy, paced so that they last a while: the traffic the
/// dashboard must show. Killed on drop.
struct Traffic(Vec<Child>);

impl Traffic {
    fn start(proxy: std::net::SocketAddr, origin: &lab::origin::Origin, n: usize) -> Traffic {
        Traffic(
            (0..n)
                .map(|i| {
                    Command::new("curl")
                        .args([
                            "-s",
                            "-o",
                            "/dev/null",
                            "--limit-rate",
                            "600k",
                            "--max-time",
                            "90",
                            "-x",
                        ])
                        .arg(format!("socks5h://{proxy}"))
                        .arg(format!("{}?seed={i}", common::file_url(origin, 60_000_000)))
                        .spawn()
                        .expect("curl is installed")
                })
                .collect(),
        )
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_draws_live_data_from_a_node_with_traffic() {
    let Some(chrome) = chromium() else { return };
    let origin = common::origin();
    let links = common::emu_links();
    let running = common::emulated_node(
        "[[policy]]\nkind = \"avoid\"\nuplink = \"slow\"\nhosts = [\"video.example\"]\n",
        &links,
    )
    .await;
    let api = format!("http://{}", running.api_addr.unwrap());
    let (code, out, err) = common::curl(vec![
        "-X".into(),
        "POST".into(),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        r#"{"kind":"block","hosts":["ads.example"]}"#.into(),
        format!("{api}/api/policies"),
    ])
    .await;
    assert_eq!(code, 0, "{err} {}", String::from_utf8_lossy(&out));
    let traffic = Traffic::start(running.proxy_addr, &origin, 6);
    // Let the downloads get going, so the first snapshots already carry throughput.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let page = format!("{api}/?frames=6");
    let budget = format!("--virtual-time-budget={BUDGET_MS}");
    let dom = {
        let chrome = chrome.clone();
        let page = page.clone();
        let budget = budget.clone();
        tokio::task::spawn_blocking(move || browse(&chrome, &["--dump-dom", &budget], &page))
            .await
            .unwrap()
    };
    assert!(
        dom.contains("stopped after 6 updates"),
        "the page never got 6 snapshots:\n{dom}"
    );
    let lines = polylines(&dom);
    for link in ["slow", "fast-a", "fast-b"] {
        let samples: Vec<u32> = lines
            .iter()
            .filter(|l| attr(l, "data-source") == Some(link))
            .filter_map(|l| attr(l, "data-samples")?.parse().ok())
            .collect();
        assert_eq!(samples.len(), 2, "{link}: one line in each chart:\n{dom}");
        assert!(samples.iter().all(|n| *n >= 6), "{link}: {samples:?}");
    }
    let moving: Vec<f64> = lines
        .iter()
        .filter(|l| attr(l, "points").is_some() && attr(l, "class").is_some_and(|c| !c.contains("total")))
        .filter_map(|l| attr(l, "data-last")?.parse().ok())
        .collect();
    assert!(
        moving.iter().any(|v| *v > 0.5),
        "no source showed throughput or open connections: {moving:?}\n{dom}"
    );
    let clients = lines
        .iter()
        .find(|l| attr(l, "data-source") == Some("clients"))
        .expect("clients line");
    let open: f64 = attr(clients, "data-last").unwrap().parse().unwrap();
    assert!(open >= 1.0, "open connections over time shows {open}");
    for text in [
        "ads.example",
        "video.example",
        "config file",
        "no relays",
        "no peers",
        "no cap",
        "fast-a",
    ] {
        assert!(dom.contains(text), "the page does not show {text:?}:\n{dom}");
    }

    let shot = artifacts().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot = format!("--screenshot={}", shot.display());
    let page = format!("{api}/?frames=8");
    tokio::task::spawn_blocking(move || browse(&chrome, &[&screenshot, "--window-size=1280,900", &budget], &page))
        .await
        .unwrap();
    drop(traffic);
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a screenshot of {} bytes is too small to hold the charts",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_asks_for_the_token_of_a_node_that_has_one() {
    let Some(chrome) = chromium() else { return };
    let links = common::emu_links();
    let running = common::emulated_node("api_token = \"dashboard-secret\"\n", &links[..1]).await;
    let page = format!("http://{}/", running.api_addr.unwrap());
    let budget = format!("--virtual-time-budget={BUDGET_MS}");
    let dom = tokio::task::spawn_blocking(move || browse(&chrome, &["--dump-dom", &budget], &page))
        .await
        .unwrap();
    assert!(dom.contains("needs token"), "{dom}");
    assert!(
        dom.contains("<form id=\"token-form\" class=\"card\">"),
        "the token form is hidden:\n{dom}"
    );
    assert!(!dom.contains("data-source"), "drew data without the token:\n{dom}");
    running.shutdown().await;
}

#[test]
fn the_dashboard_renders_bond_paths_and_caps_from_samples() {
    let Some(chrome) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/dashboard.js");
    let sample = r#"[{"relay": "relay.example:4886", "state": "up", "streams": 1, "redundant_bytes": 0,
        "paths": [{"source": "eth1", "state": "up", "rtt_ms": 12.5, "loss": 0.0, "rate_bps": 2500000.0,
                   "inflight": 12345, "tx_bytes": 1, "rx_bytes": 2}]}]"#;
    let html = format!(
        "<!doctype html><body><div id=\"some\"></div><div id=\"none\"></div>\
         <script src=\"file://{}\"></script><script>\
         document.getElementById('some').append(BoosterDashboard.renderRelays({sample}));\
         document.getElementById('none').append(BoosterDashboard.renderRelays([]));\
         document.getElementById('none').append(BoosterDashboard.renderUsage({{sources: [\
           {{name: 'usb0', month_bytes: 500000000, cap_bytes: 1000000000, over_cap: false}}]}}));\
         </script></body>",
        js.display()
    );
    let file = dir.path().join("relays.html");
    std::fs::write(&file, html).unwrap();
    let dom = browse(&chrome, &["--dump-dom"], &format!("file://{}", file.display()));
    for text in [
        "relay.example:4886",
        "1 streams",
        "eth1",
        "12.5 ms",
        "0.0 %",
        "2.5 Mbit/s",
        "12.3 kB",
        "data-relays=\"1\"",
        "no relays",
        "500.0 MB of 1.00 GB",
        "width=\"50.00\"",
    ] {
        assert!(dom.contains(text), "{text:?} missing:\n{dom}");
    }
}

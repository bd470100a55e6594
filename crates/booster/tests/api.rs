//! The control API over real HTTP, with curl as the client: auth, errors as JSON, policies
//! that apply at once and survive a restart, live connections, usage, the event stream, and
//! `/metrics` read by a Prometheus text-format parser.

mod common;

use booster::{
    config::{Config, FileConfig, Overrides},
    run::{self, Extras, Running},
};
use serde_json::{json, Value};
use std::{path::Path, process::Command, time::Duration};

/// One API request with curl: `(status, body as JSON, or Null when empty or not JSON)`.
async fn http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let (code, out) = http_raw(method, url, token, body, &[]).await;
    (code, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

/// One request with curl: `(status, body bytes)`. `extra` goes to curl as it is.
async fn http_raw(method: &str, url: &str, token: Option<&str>, body: Option<&str>, extra: &[&str]) -> (u16, Vec<u8>) {
    let mut args: Vec<String> = vec!["-X".into(), method.into(), "-w".into(), "\n%{http_code}".into()];
    if let Some(t) = token {
        args.extend(["-H".into(), format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data-binary".into(),
            b.into(),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url.into());
    let (code, out, err) = common::curl(args).await;
    assert!(code == 0 || code == 28, "curl failed ({code}): {err}");
    let split = out.iter().rposition(|b| *b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&out[split + 1..])
        .trim()
        .parse()
        .expect("status");
    (status, out[..split].to_vec())
}

/// A node on loopback with `lo` as its uplink, its data in `dir`, and extra TOML config.
async fn start(dir: &Path, toml: &str, api: &str) -> Running {
    let dns = common::fake_dns().await;
    let file = FileConfig::parse(&format!("dns_servers = [\"{dns}\"]\n{toml}")).expect("test config parses");
    let flags = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        api: Some(api.parse().unwrap()),
        iface: vec!["lo".into()],
        data_dir: Some(dir.to_owned()),
        probe_target: Some("none".into()),
        no_mdns: true,
        ..Default::default()
    };
    let cfg = Config::build(file, flags).expect("test config is valid");
    run::start(cfg, Extras::default()).await.expect("node starts")
}

fn base(r: &Running) -> String {
    format!("http://127.0.0.1:{}", r.api_addr.unwrap().port())
}

#[tokio::test]
async fn off_loopback_the_api_needs_its_token_and_says_so_in_json() {
    // Without a token, an API off loopback is refused at start (exit code 2).
    let out = Command::new(env!("CARGO_BIN_EXE_booster"))
        .args([
            "start",
            "--iface",
            "lo",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "0.0.0.0:0",
        ])
        .args(["--probe-target", "none", "--no-mdns"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api_token"));

    // With one, every API request needs it; the dashboard's own files do not.
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "api_token = \"s3cret-token\"\n", "0.0.0.0:0").await;
    let url = base(&node);
    let (status, body) = http("GET", &format!("{url}/api/status"), None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body, json!({"error": "missing or wrong API token", "status": 401}));
    let (status, _) = http("GET", &format!("{url}/api/status"), Some("wrong"), None).await;
    assert_eq!(status, 401);
    let (status, body) = http("GET", &format!("{url}/api/status"), Some("s3cret-token"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["sources"].is_array());
    for path in [
        "/metrics",
        "/api/policies",
        "/api/connections",
        "/api/events?token=wrong",
    ] {
        let (status, _) = http("GET", &format!("{url}{path}"), None, None).await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, bytes) = http_raw(
        "GET",
        &format!("{url}/api/events?token=s3cret-token"),
        None,
        None,
        &["-N", "--max-time", "2"],
    )
    .await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&bytes).contains("event: snapshot"));
    let (status, page) = http_raw("GET", &format!("{url}/"), None, None, &[]).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("booster-dashboard"));
    node.shutdown().await;
}

#[tokio::test]
async fn bad_requests_and_unknown_ids_get_json_errors_with_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        "[[policy]]\nkind = \"block\"\nhosts = [\"ads.example\"]\n",
        "127.0.0.1:0",
    )
    .await;
    let url = base(&node);
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "POST",
            "/api/policies",
            Some("{not json"),
            400,
            "expected a JSON policy",
        ),
        (
            "POST",
            "/api/policies",
            Some(r#"{"kind":"block","hosts":["a.example"],"bogus":1}"#),
            400,
            "bogus",
        ),
        (
            "POST",
            "/api/policies",
            Some(r#"{"kind":"teleport","hosts":["a.example"]}"#),
            400,
            "kind",
        ),
        (
            "POST",
            "/api/policies",
            Some(r#"{"kind":"avoid","hosts":["a.example"]}"#),
            400,
            "need an `uplink`",
        ),
        (
            "POST",
            "/api/policies",
            Some(r#"{"kind":"block","hosts":["bad host!"]}"#),
            400,
            "bad host pattern",
        ),
        ("DELETE", "/api/policies/999", None, 404, "no such policy"),
        ("DELETE", "/api/policies/config-1", None, 409, "config file"),
        ("DELETE", "/api/peers/nobody", None, 404, "no such peer"),
        ("GET", "/api/usage?month=2026-13", None, 400, "not a month"),
        ("GET", "/api/connections?limit=lots", None, 400, "limit"),
        ("GET", "/api/nothing-here", None, 404, "no such endpoint"),
        ("PUT", "/api/policies", None, 405, "method not allowed"),
    ];
    for (method, path, body, want, says) in cases {
        let (status, v) = http(method, &format!("{url}{path}"), None, *body).await;
        assert_eq!(status, *want, "{method} {path}: {v}");
        assert_eq!(v["status"], *want, "{method} {path}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{method} {path}: {error}");
    }
    // A request without the JSON content type is refused the same way.
    let (status, v) = http_raw(
        "POST",
        &format!("{url}/api/policies"),
        None,
        None,
        &["--data-binary", r#"{"kind":"block","hosts":["a.example"]}"#],
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&v));
    node.shutdown().await;
}

/// curl through the node's HTTP proxy: `(HTTP status, body)`.
async fn via_proxy(proxy: std::net::SocketAddr, url: &str) -> (u16, String) {
    let (code, out, err) = common::curl(vec![
        "-x".into(),
        format!("http://{proxy}"),
        "-w".into(),
        "\n%{http_code}".into(),
        url.into(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.trim().parse().unwrap(), body.to_string())
}

#[tokio::test]
async fn a_policy_applies_at_once_survives_a_restart_and_can_be_deleted() {
    let origin = common::origin();
    let dir = tempfile::tempdir().unwrap();
    let target = format!("http://blocked.test.booster:{}/file/1000", origin.local_addr().port());
    let node = start(dir.path(), "", "127.0.0.1:0").await;
    let url = base(&node);
    assert_eq!(via_proxy(node.proxy_addr, &target).await.0, 200);

    let (status, created) = http(
        "POST",
        &format!("{url}/api/policies"),
        None,
        Some(r#"{"kind":"block","hosts":["blocked.test.booster"]}"#),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["origin"], "api");
    let id = created["id"].as_str().expect("an id").to_string();
    let (_, list) = http("GET", &format!("{url}/api/policies"), None, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0], created);
    // In force for the very next connection, with the proxy's policy answer.
    let (status, body) = via_proxy(node.proxy_addr, &target).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not allowed by policy"), "{body}");

    // A restart with the same data dir keeps it.
    node.shutdown().await;
    let node = start(dir.path(), "", "127.0.0.1:0").await;
    let url = base(&node);
    let (_, list) = http("GET", &format!("{url}/api/policies"), None, None).await;
    assert_eq!(list, json!([created]));
    assert_eq!(via_proxy(node.proxy_addr, &target).await.0, 403);

    let (status, _) = http("DELETE", &format!("{url}/api/policies/{id}"), None, None).await;
    assert_eq!(status, 204);
    let (status, _) = http("DELETE", &format!("{url}/api/policies/{id}"), None, None).await;
    assert_eq!(status, 404, "deleted twice");
    assert_eq!(via_proxy(node.proxy_addr, &target).await.0, 200);
    node.shutdown().await;
    let node = start(dir.path(), "", "127.0.0.1:0").await;
    let (_, list) = http("GET", &format!("{}/api/policies", base(&node)), None, None).await;
    assert_eq!(list, json!([]), "a deleted policy stays deleted");
    node.shutdown().await;
}

#[tokio::test]
async fn open_connections_are_listed_with_target_source_and_bytes() {
    let origin = common::origin();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "", "127.0.0.1:0").await;
    let url = base(&node);
    // A slow download keeps one connection open while we look.
    let mut curl = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--limit-rate",
            "100k",
            "--max-time",
            "60",
            "-x",
        ])
        .arg(format!("socks5h://{}", node.proxy_addr))
        .arg(common::file_url(&origin, 20_000_000))
        .spawn()
        .expect("curl is installed");
    let want = origin.local_addr().to_string();
    let mut seen = Value::Null;
    for _ in 0..100 {
        let (_, v) = http("GET", &format!("{url}/api/connections"), None, None).await;
        let c = v["connections"].as_array().and_then(|c| c.first()).cloned();
        if let Some(c) = c.filter(|c| c["down_bytes"].as_u64().unwrap_or(0) > 10_000) {
            seen = json!({ "list": v, "conn": c });
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = curl.kill();
    let _ = curl.wait();
    let c = &seen["conn"];
    assert_eq!(seen["list"]["open"], 1, "{seen}");
    assert_eq!(c["target"], want.as_str(), "{seen}");
    assert_eq!(c["source"], "lo", "{seen}");
    assert!(c["up_bytes"].as_u64().unwrap() > 50, "the request went up: {seen}");
    assert!(c["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{seen}");
    assert!(c["age_secs"].as_f64().unwrap() >= 0.0, "{seen}");
    node.shutdown().await;
}

#[tokio::test]
async fn usage_counts_this_month_against_the_cap() {
    let origin = common::origin();
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        "[[uplink]]\nname = \"lo\"\ncap = \"100MB\"\n",
        "127.0.0.1:0",
    )
    .await;
    let url = base(&node);
    let (code, _, err) = common::curl(vec![
        "-o".into(),
        "/dev/null".into(),
        "-x".into(),
        format!("socks5h://{}", node.proxy_addr),
        common::file_url(&origin, 2_000_000),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let (status, v) = http("GET", &format!("{url}/api/usage"), None, None).await;
    assert_eq!(status, 200);
    assert_eq!(v["month"], booster::store::current_month());
    assert_eq!(v["live"], true);
    let lo = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "lo")
        .unwrap()
        .clone();
    assert!(lo["month_bytes"].as_u64().unwrap() >= 2_000_000, "{v}");
    assert_eq!(lo["cap_bytes"], 100_000_000);
    assert_eq!(
        lo["cap_left"].as_u64().unwrap(),
        100_000_000 - lo["month_bytes"].as_u64().unwrap()
    );
    assert_eq!(lo["over_cap"], false);
    let (status, old) = http("GET", &format!("{url}/api/usage?month=2001-01"), None, None).await;
    assert_eq!(status, 200);
    assert_eq!(old["live"], false);
    assert_eq!(old["sources"], json!([]));
    node.shutdown().await;
}

#[tokio::test]
async fn the_event_stream_pushes_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "", "127.0.0.1:0").await;
    let (status, bytes) = http_raw(
        "GET",
        &format!("{}/api/events", base(&node)),
        None,
        None,
        &["-N", "--max-time", "2.5"],
    )
    .await;
    assert_eq!(status, 200);
    let mut parser = booster::client::SseParser::default();
    let events = parser.push(&bytes).unwrap();
    assert!(events.len() >= 2, "{}", String::from_utf8_lossy(&bytes));
    for (i, e) in events.iter().enumerate() {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["type"], "snapshot");
        assert_eq!(v["seq"], i as u64);
        assert_eq!(v["sources"][0]["name"], "lo");
        assert_eq!(v["relays"], json!([]));
        assert!(
            v["usage"]["sources"].is_array() && v["connections"]["open"].is_u64(),
            "{v}"
        );
    }
    let (_, relays) = http("GET", &format!("{}/api/relays", base(&node)), None, None).await;
    assert_eq!(relays, json!([]));
    node.shutdown().await;
}

/// Every sample of `/metrics`, parsed by a Prometheus text-format parser.
async fn scrape(url: &str) -> (String, prometheus_parse::Scrape) {
    let (status, bytes) = http_raw("GET", &format!("{url}/metrics"), None, None, &[]).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(bytes).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    (text.clone(), prometheus_parse::Scrape::parse(lines).expect("parses"))
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use prometheus_parse::Value as V;
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match &s.value {
            V::Counter(x) | V::Gauge(x) | V::Untyped(x) => Some(*x),
            V::Histogram(h) => h.last().map(|b| b.count),
            _ => None,
        })
}

#[tokio::test]
async fn metrics_parse_with_their_types_and_byte_counters_grow_with_traffic() {
    let origin = common::origin();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "", "127.0.0.1:0").await;
    let url = base(&node);
    let (_, header) = http_raw(
        "GET",
        &format!("{url}/metrics"),
        None,
        None,
        &["-D", "-", "-o", "/dev/null"],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&header).contains("application/openmetrics-text; version=1.0.0"),
        "{}",
        String::from_utf8_lossy(&header)
    );
    let (text, before) = scrape(&url).await;
    let types = [
        ("booster_source_bytes", "counter"),
        ("booster_source_connections", "counter"),
        ("booster_source_connect_failures", "counter"),
        ("booster_client_connections", "counter"),
        ("booster_client_connections_refused", "counter"),
        ("booster_lent_bytes", "counter"),
        ("booster_source_open_connections", "gauge"),
        ("booster_client_connections_open", "gauge"),
        ("booster_source_capacity_bytes_per_second", "gauge"),
        ("booster_source_throughput_bytes_per_second", "gauge"),
        ("booster_source_usable", "gauge"),
        ("booster_source_month_bytes", "gauge"),
        ("booster_source_cap_bytes", "gauge"),
        ("booster_peers", "gauge"),
        ("booster_uptime_seconds", "gauge"),
        ("booster_connect_duration_seconds", "histogram"),
        ("booster_source_rtt_seconds", "histogram"),
    ];
    for (family, ty) in types {
        assert!(
            text.contains(&format!("# TYPE {family} {ty}\n")),
            "{family} is not a {ty}:\n{text}"
        );
        assert!(before.docs.contains_key(family), "{family} has no HELP");
    }
    assert!(text.ends_with("# EOF\n"));
    // The parser types gauges and histograms by their family; OpenMetrics counters carry
    // `_total`, which it reads as untyped samples of that name.
    let kind = |name: &str| {
        before
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| s.value.clone())
    };
    assert!(matches!(
        kind("booster_source_capacity_bytes_per_second"),
        Some(prometheus_parse::Value::Gauge(_))
    ));
    assert!(matches!(
        kind("booster_source_rtt_seconds"),
        Some(prometheus_parse::Value::Histogram(_))
    ));
    let lo_rx = [("source", "lo"), ("direction", "rx")];
    let rx0 = value(&before, "booster_source_bytes_total", &lo_rx).expect("lo rx");
    let conns0 = value(&before, "booster_source_connections_total", &[("source", "lo")]).unwrap();
    let ok0 = value(&before, "booster_connect_duration_seconds", &[("result", "ok")]).unwrap();

    let (code, _, err) = common::curl(vec![
        "-o".into(),
        "/dev/null".into(),
        "-x".into(),
        format!("socks5h://{}", node.proxy_addr),
        common::file_url(&origin, 3_000_000),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let (_, after) = scrape(&url).await;
    let rx1 = value(&after, "booster_source_bytes_total", &lo_rx).unwrap();
    assert!(rx1 - rx0 >= 3_000_000.0, "rx grew by {}", rx1 - rx0);
    let tx1 = value(
        &after,
        "booster_source_bytes_total",
        &[("source", "lo"), ("direction", "tx")],
    )
    .unwrap();
    assert!(tx1 > 0.0);
    assert_eq!(
        value(&after, "booster_source_connections_total", &[("source", "lo")]).unwrap(),
        conns0 + 1.0
    );
    assert_eq!(
        value(&after, "booster_connect_duration_seconds", &[("result", "ok")]).unwrap(),
        ok0 + 1.0
    );
    assert!(value(&after, "booster_source_rtt_seconds", &[("source", "lo")]).unwrap() >= 1.0);
    assert!(value(&after, "booster_client_connections_total", &[]).unwrap() >= 1.0);
    node.shutdown().await;
}

#[tokio::test]
async fn every_documented_path_is_served_and_every_metric_is_documented() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "", "127.0.0.1:0").await;
    let url = base(&node);
    let spec = include_str!("../../../docs/openapi.yaml");
    let api_md = include_str!("../../../docs/api.md");
    let paths: Vec<&str> = spec
        .lines()
        .filter_map(|l| l.strip_prefix("  /").map(|p| p.trim_end_matches(':')))
        .collect();
    assert!(paths.len() >= 12, "{paths:?}");
    for p in paths {
        let path = format!("/{}", p.replace("{peer}", "nobody").replace("{id}", "999"));
        assert!(
            api_md.contains(&format!(" /{}", p.split('{').next().unwrap())),
            "api.md lacks /{p}"
        );
        // Probe with a method the path takes; the stream is cut short.
        let method = if path.ends_with("999") || path.ends_with("nobody") {
            "DELETE"
        } else {
            "GET"
        };
        let (status, body) = http_raw(method, &format!("{url}{path}"), None, None, &["--max-time", "1"]).await;
        let said = String::from_utf8_lossy(&body);
        assert!(
            !said.contains("no such endpoint"),
            "{method} {path} is documented but not served"
        );
        assert!(status != 405, "{method} {path}: {said}");
    }
    let (text, _) = scrape(&url).await;
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, ty) = family.split_once(' ').unwrap();
        let sample = if ty == "counter" {
            format!("{name}_total")
        } else {
            name.to_string()
        };
        assert!(
            api_md.contains(&format!("| `{sample}` | {ty} |")),
            "metric {sample} ({ty}) is not documented in docs/api.md"
        );
    }
    node.shutdown().await;
}

#[tokio::test]
async fn one_debug_line_per_connection_failures_at_info_and_never_the_token() {
    use std::io::{BufRead, BufReader, Read};
    let origin = common::origin();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("booster.toml");
    std::fs::write(&config, "api_token = \"never-log-this-token\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_booster"))
        .args([
            "-v",
            "start",
            "--iface",
            "lo",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ])
        .args(["--probe-target", "none", "--no-mdns", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let (proxy, api) = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the node exited:\n{seen}");
        seen.push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("booster: proxy on ") {
            let proxy = rest.split_whitespace().next().unwrap().to_string();
            break (proxy, rest.rsplit("API on ").next().unwrap().trim().to_string());
        }
    };
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ok = common::curl(vec![
        "-o".into(),
        "/dev/null".into(),
        "-x".into(),
        format!("socks5h://{proxy}"),
        common::file_url(&origin, 1000),
    ])
    .await;
    assert_eq!(ok.0, 0, "{}", ok.2);
    let refused = common::curl(vec![
        "-x".into(),
        format!("socks5h://{proxy}"),
        format!("http://{closed}/"),
    ])
    .await;
    assert_ne!(refused.0, 0, "a closed port must fail");
    let (status, _) = http_raw(
        "GET",
        &format!("http://{api}/api/events?token=never-log-this-token"),
        None,
        None,
        &["-N", "--max-time", "1"],
    )
    .await;
    assert_eq!(status, 200);
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    seen.push_str(&rest.join().unwrap());
    let lines = |what: &str| seen.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        lines("connection closed"),
        2,
        "one debug line per client connection:\n{seen}"
    );
    assert!(
        seen.lines().any(|l| l.contains("DEBUG")
            && l.contains("connection closed")
            && l.contains(&origin.local_addr().to_string())),
        "{seen}"
    );
    assert_eq!(lines("CONNECT failed"), 1, "the failure at info:\n{seen}");
    assert!(
        seen.lines()
            .any(|l| l.contains("INFO") && l.contains("CONNECT failed") && l.contains("refused")),
        "{seen}"
    );
    assert!(
        !seen.contains("never-log-this-token"),
        "the token reached the log:\n{seen}"
    );
}

#[tokio::test]
async fn monitor_json_follows_the_target_and_token_it_is_given() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "api_token = \"monitor-token\"\n", "127.0.0.1:0").await;
    let target = node.api_addr.unwrap().to_string();
    let first_line = move |token: &str, view: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_booster"))
            .args(["monitor", view, "--json", "--target", &target, "--token", token])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    let (good, bad, peers) = tokio::task::spawn_blocking(move || {
        (
            first_line("monitor-token", "net"),
            first_line("wrong", "net"),
            first_line("monitor-token", "node"),
        )
    })
    .await
    .unwrap();
    assert_eq!(good["type"], "snapshot", "{good}");
    assert_eq!(good["sources"][0]["name"], "lo", "{good}");
    assert_eq!(bad["type"], "reconnecting", "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("401"), "{bad}");
    assert_eq!(peers["type"], "peers", "{peers}");
    node.shutdown().await;
}

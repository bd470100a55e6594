//! `booster speedtest` (the thesis's job format) against a real node on loopback.

mod common;

#[tokio::test]
async fn speedtest_runs_jobs_through_a_node_and_plots() {
    let origin = common::origin();
    let node = common::node_with("").await;
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs.json");
    let base = format!("http://{}", origin.local_addr());
    std::fs::write(
        &jobs,
        format!(
            r#"[{{"id": "parallel", "urls": ["{base}/file/1MB", "{base}/file/2MB", "{base}/file/300kB"], "sync": false}},
               {{"id": "one by one", "urls": ["{base}/file/100kB", "{base}/file/200kB"], "sync": true}}]"#
        ),
    )
    .unwrap();
    let plot = dir.path().join("st");
    let (proxy, api) = (node.proxy.to_string(), node.api.to_string());
    let (jobs2, plot2) = (jobs.clone(), plot.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_booster"))
            .args(["speedtest", "--json", "--proxy", &proxy, "--node", &api, "--plot"])
            .arg(&plot2)
            .arg(&jobs2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jobs"][0]["bytes"], 3_300_000);
    assert_eq!(v["jobs"][1]["bytes"], 300_000);
    assert!(v["per_source_bytes"]["lo"].as_u64().unwrap() >= 3_600_000, "{v}");
    for u in v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|j| j["urls"].as_array().unwrap())
    {
        assert!(u["error"].is_null(), "{u}");
    }
    assert!(std::fs::read_to_string(dir.path().join("st.svg"))
        .unwrap()
        .contains("<svg"));
    assert!(std::fs::read_to_string(dir.path().join("st-conns.svg"))
        .unwrap()
        .contains("<svg"));

    // A broken job file is refused with its line, exit code 2.
    std::fs::write(&jobs, "[{\"id\": \"x\",\n \"urlz\": []}]").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_booster"))
        .arg("speedtest")
        .arg(&jobs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    node.shutdown().await;
}

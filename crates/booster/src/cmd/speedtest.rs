//! `booster speedtest JOBS.json`: the thesis's evaluation tool. It runs the seed's job format
//! through a node's proxy and reports per-source bytes, total throughput and the time per
//! URL, and plots throughput per source and open connections over time (the thesis's figure).
//!
//! ```json
//! [{"id": "smart data", "urls": ["http://host/a.dat", "..."], "sync": false}]
//! ```
//! `sync: false` fetches a job's URLs in parallel, `sync: true` one after another. Jobs run in
//! order.

use crate::{
    client::get_count,
    fetch::{tls_config, Url},
};
use lab::plot;
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct SpeedtestArgs {
    /// The job file (JSON): `[{"id": ..., "urls": [...], "sync": false}]`.
    pub jobs: PathBuf,
    /// The node's proxy.
    #[arg(long, default_value = crate::config::DEFAULT_LISTEN)]
    pub proxy: String,
    /// The node's API, for per-source bytes and the plot.
    #[arg(long, default_value = crate::config::DEFAULT_API)]
    pub node: String,
    /// Where to write the plots (`PREFIX.svg` throughput, `PREFIX-conns.svg` open connections).
    #[arg(long, default_value = "speedtest")]
    pub plot: String,
    /// Print one JSON object with the results instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Extra CA certificates (PEM) for https URLs.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// API token, for a node whose API is off loopback.
    #[arg(long, env = "BOOSTER_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// One job of the seed's format.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub id: String,
    pub urls: Vec<String>,
    #[serde(default)]
    pub sync: bool,
}

/// Parses a job file, naming the line and column of a mistake.
pub fn parse_jobs(text: &str) -> Result<Vec<Job>, String> {
    let jobs: Vec<Job> =
        serde_json::from_str(text).map_err(|e| format!("line {}, column {}: {e}", e.line(), e.column()))?;
    for j in &jobs {
        if j.urls.is_empty() {
            return Err(format!("job `{}` has no urls", j.id));
        }
        for u in &j.urls {
            Url::parse(u).map_err(|e| format!("job `{}`: {e}", j.id))?;
        }
    }
    if jobs.is_empty() {
        return Err("the file has no jobs".into());
    }
    Ok(jobs)
}

#[derive(Debug, Clone, serde::Serialize)]
struct UrlResult {
    url: String,
    bytes: u64,
    secs: f64,
    error: Option<String>,
}

/// Fetches one URL through the proxy: absolute-form for http, CONNECT + TLS for https.
async fn fetch_one(proxy: &str, url: &str, tls: &Option<Arc<rustls::ClientConfig>>) -> Result<u64, String> {
    let u = Url::parse(url).map_err(|e| e.to_string())?;
    let mut tcp = tokio::net::TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("proxy {proxy}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let host = u.host_header();
    if !u.is_https() {
        return get_count(tcp, &host, url, None).await;
    }
    let authority = if u.host.contains(':') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    };
    tcp.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.map_err(|e| e.to_string())? == 0 || head.len() > 16 * 1024 {
            return Err("the proxy closed the CONNECT".into());
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
    if !status.contains(" 200") {
        return Err(format!("proxy answered `{status}`"));
    }
    let tls = tls.as_ref().ok_or("no TLS configuration")?;
    let name =
        rustls::pki_types::ServerName::try_from(u.host.clone()).map_err(|_| format!("bad TLS name `{}`", u.host))?;
    let io = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    get_count(io, &host, &u.path, None).await
}

type Timeline = Arc<Mutex<Vec<(f64, BTreeMap<String, (u64, u64)>)>>>;

pub async fn run(args: SpeedtestArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.jobs) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("booster: cannot read {}: {e}", args.jobs.display());
            return ExitCode::from(2);
        }
    };
    let jobs = match parse_jobs(&text) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("booster: {}: {e}", args.jobs.display());
            return ExitCode::from(2);
        }
    };
    let tls = if jobs.iter().flat_map(|j| &j.urls).any(|u| u.starts_with("https")) {
        match tls_config(args.cacert.as_deref()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("booster: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };

    // Sample the node's sources (bytes received, open connections) for the report and plots.
    let timeline: Timeline = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let sampler = {
        let (timeline, api, token) = (timeline.clone(), args.node.clone(), args.token.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(v) = crate::client::get_json(&api, "/api/sources", token.as_deref()).await {
                    let map = v
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| {
                            Some((
                                s["name"].as_str()?.to_string(),
                                (s["rx_bytes"].as_u64()?, s["open"].as_u64()?),
                            ))
                        })
                        .collect();
                    timeline
                        .lock()
                        .expect("timeline lock")
                        .push((started.elapsed().as_secs_f64(), map));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    // Take the first sample before any job starts, so per-source bytes count everything.
    let first_sample = Instant::now();
    while timeline.lock().expect("timeline lock").is_empty() && first_sample.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut report = Vec::new();
    let mut failed = 0;
    for job in &jobs {
        let t0 = Instant::now();
        let one = |url: String| {
            let (proxy, tls) = (args.proxy.clone(), tls.clone());
            async move {
                let t = Instant::now();
                let r = fetch_one(&proxy, &url, &tls).await;
                let secs = t.elapsed().as_secs_f64();
                match r {
                    Ok(bytes) => UrlResult {
                        url,
                        bytes,
                        secs,
                        error: None,
                    },
                    Err(e) => UrlResult {
                        url,
                        bytes: 0,
                        secs,
                        error: Some(e),
                    },
                }
            }
        };
        let results: Vec<UrlResult> = if job.sync {
            let mut v = Vec::new();
            for u in &job.urls {
                v.push(one(u.clone()).await);
            }
            v
        } else {
            futures::future::join_all(job.urls.iter().cloned().map(one)).await
        };
        let secs = t0.elapsed().as_secs_f64();
        let bytes: u64 = results.iter().map(|r| r.bytes).sum();
        failed += results.iter().filter(|r| r.error.is_some()).count();
        report.push((job.clone(), results, bytes, secs));
    }
    // And one sample after the last job.
    let samples_before = timeline.lock().expect("timeline lock").len();
    let last_sample = Instant::now();
    while timeline.lock().expect("timeline lock").len() == samples_before
        && last_sample.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sampler.abort();
    let timeline = timeline.lock().expect("timeline lock").clone();

    // Per-source bytes over the whole run.
    let mut per_source: BTreeMap<String, u64> = BTreeMap::new();
    if let (Some(first), Some(last)) = (timeline.first(), timeline.last()) {
        for (name, (rx, _)) in &last.1 {
            let before = first.1.get(name).map(|x| x.0).unwrap_or(0);
            per_source.insert(name.clone(), rx.saturating_sub(before));
        }
    }
    if args.json {
        let jobs: Vec<_> = report
            .iter()
            .map(|(j, r, b, s)| serde_json::json!({"id": j.id, "sync": j.sync, "bytes": b, "secs": s, "mb_per_s": *b as f64 / s / 1e6, "urls": r}))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "jobs": jobs, "per_source_bytes": per_source })
        );
    } else {
        for (job, results, bytes, secs) in &report {
            println!(
                "job `{}` ({}): {} in {:.1} s = {:.2} MB/s",
                job.id,
                if job.sync { "one by one" } else { "parallel" },
                crate::units::ByteSize(*bytes),
                secs,
                *bytes as f64 / secs / 1e6
            );
            for r in results {
                match &r.error {
                    None => println!(
                        "  {:>7.2} s  {:>10}  {}",
                        r.secs,
                        crate::units::ByteSize(r.bytes).to_string(),
                        r.url
                    ),
                    Some(e) => println!("  {:>7.2} s  {:>10}  {}  FAILED: {e}", r.secs, "-", r.url),
                }
            }
        }
        println!("bytes received per source:");
        for (name, b) in &per_source {
            println!("  {name:<20} {}", crate::units::ByteSize(*b));
        }
    }
    // Plots: throughput per source, and open connections per source, over time.
    let names: Vec<String> = per_source.keys().cloned().collect();
    let rates: Vec<plot::Series> = names
        .iter()
        .map(|n| plot::Series {
            label: n.clone(),
            points: plot::rates_mbit(
                &timeline
                    .iter()
                    .map(|(t, m)| (*t, m.get(n).map(|x| x.0).unwrap_or(0)))
                    .collect::<Vec<_>>(),
            ),
        })
        .collect();
    let conns: Vec<plot::Series> = names
        .iter()
        .map(|n| plot::Series {
            label: n.clone(),
            points: timeline
                .iter()
                .map(|(t, m)| (*t, m.get(n).map(|x| x.1).unwrap_or(0) as f64))
                .collect(),
        })
        .collect();
    let (p1, p2) = (
        PathBuf::from(format!("{}.svg", args.plot)),
        PathBuf::from(format!("{}-conns.svg", args.plot)),
    );
    let plotted = plot::line_chart_svg(&p1, "speedtest: throughput per source", "Mbit/s", &rates)
        .and_then(|_| plot::line_chart_svg(&p2, "speedtest: open connections per source", "connections", &conns));
    match plotted {
        Ok(()) if !args.json => println!("plots: {} and {}", p1.display(), p2.display()),
        Ok(()) => {}
        Err(e) => eprintln!("booster: cannot write the plots: {e}"),
    }
    if failed > 0 {
        eprintln!("booster: {failed} URL(s) failed");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_format_and_names_mistakes() {
        let jobs =
            parse_jobs(r#"[{"id": "smart data", "urls": ["http://h/a.dat", "https://h/b.dat"], "sync": false}]"#)
                .unwrap();
        assert_eq!(jobs[0].urls.len(), 2);
        assert!(!jobs[0].sync);
        let err = parse_jobs("[{\"id\": \"x\",\n \"url\": []}]").unwrap_err();
        assert!(err.contains("line 2") && err.contains("url"), "{err}");
        assert!(parse_jobs("[]").is_err());
        assert!(parse_jobs(r#"[{"id": "x", "urls": ["ftp://h/a"]}]"#).is_err());
    }
}

//! The transparent gateway on `home` (`booster gateway`, issue 8): a client namespace behind
//! the home namespace, which is its router ([`LabOptions::client_behind`]), downloads with no
//! proxy setting at all, and the gateway in home steers its TCP into booster.
//!
//! Per run, in the same run as the other rows, from the client:
//! - [`PARALLEL`] plain `curl`s at once, each a different [`FILE_MB`] MB file;
//! - one plain `curl` of the big file (50 MB; a plain-HTTP GET, so the gateway may split it
//!   over the uplinks), with its tail rate from the uplinks' counters.
//!
//! The gateway is its own node next to the bench's proxy node (own ports, own data dir), is
//! warmed up once like it, and is checked to have seen the client's connections, so the rows
//! can never silently measure the router's plain default route.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::files::{FileSet, MB};
use super::net;
use super::procs::{self, Proc};
use super::report::{median, Results, Row, Split};
use super::{print_sampled, Plan, FILE_MB, PARALLEL, WARM_MB};
use crate::netns;
use crate::profile::Profile;
use crate::topology::{Lab, LabOptions};

/// The gateway node's proxy and API in home (the proxy node has 1080 / 4884, the bond node
/// 1081 / 4894). Redirected connections arrive on booster's default gateway port, 4887.
const PROXY_PORT: u16 = 1082;
const API_PORT: u16 = 4895;

/// Which profiles measure the gateway: `home`, the profile.
pub fn enabled(prof: &Profile) -> bool {
    prof.name == "home" && prof.nodes.len() == 1
}

/// The lab options the bench builds `prof` with: a client behind home when the gateway is
/// measured. The client namespace changes nothing for the other rows (it only adds a LAN
/// interface and a masquerade in home).
pub fn lab_options(prof: &Profile) -> LabOptions {
    LabOptions {
        client_behind: enabled(prof).then_some("home"),
        ..Default::default()
    }
}

/// The gateway's rows through the runs of one bench.
pub struct Phase {
    /// Whether this profile measures the gateway at all (the lab has a client).
    wanted: bool,
    node: Option<Proc>,
    client_ns: String,
    api: SocketAddr,
    home: String,
    parallel: Row,
    big: Row,
    big_tail: Row,
    parallel_splits: Vec<Split>,
    big_splits: Vec<Split>,
    big_name: String,
    big_mb: u64,
}

impl Phase {
    /// Starts `booster gateway` in home and warms it up with one unrecorded round from the
    /// client. Without a client in the lab ([`lab_options`]) there is nothing to measure and no
    /// row. When the gateway cannot be measured (no binary, no curl, it fails), the rows say
    /// why and [`Phase::run`] does nothing; only Ctrl-C is an error.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        lab: &Lab,
        booster: Option<&Path>,
        no_curl: &Option<String>,
        files: &FileSet,
        base: &str,
        work: &Path,
        dl: &Path,
        plan: &Plan,
    ) -> Result<Phase> {
        let big_name = format!("f{}m", plan.big_mb);
        let mut p = Phase {
            wanted: lab.client().is_some(),
            node: None,
            client_ns: String::new(),
            api: net::lo(API_PORT),
            home: lab.node_ns("home").to_owned(),
            parallel: Row::new(
                "gateway",
                &format!(
                    "transparent gateway: {PARALLEL} parallel {FILE_MB} MB downloads from a LAN client with no settings"
                ),
            ),
            big: Row::new(
                "gateway-big",
                &format!(
                    "transparent gateway: one {} MB plain-HTTP download from that client",
                    plan.big_mb
                ),
            ),
            big_tail: Row::new("gateway-big-tail", "  its last 10% of bytes (tail rate)"),
            parallel_splits: Vec::new(),
            big_splits: Vec::new(),
            big_name,
            big_mb: plan.big_mb,
        };
        let why = match (booster, no_curl, lab.client()) {
            (_, _, None) => None,
            (None, _, _) => Some("no booster binary".to_owned()),
            (_, Some(why), _) => Some(why.clone()),
            (Some(bin), None, Some(client)) => {
                p.client_ns = client.ns.clone();
                println!(
                    "starting booster gateway in home (LAN {}, client {}) ...",
                    client.router_iface, client.ip
                );
                match start_gateway(lab, bin, &client.router_iface, work, p.api)
                    .and_then(|node| p.warm_up(node, files, base, dl))
                {
                    Ok(()) => None,
                    Err(e) => {
                        procs::check_interrupt()?;
                        println!("  the gateway could not be measured: {e:#}");
                        Some(format!("failed: {e:#}"))
                    }
                }
            }
        };
        if let Some(why) = why {
            p.parallel.skip = Some(why.clone());
            p.big.skip = Some(why);
        }
        Ok(p)
    }

    /// The warm-up round, and the check that the gateway saw the client's connections.
    fn warm_up(&mut self, mut node: Proc, files: &FileSet, base: &str, dl: &Path) -> Result<()> {
        let names: Vec<String> = (0..PARALLEL).map(|i| format!("f{WARM_MB}m-{i}")).collect();
        let r = client_round(&self.client_ns, base, files, &names, dl, Duration::from_secs(120))
            .with_context(|| format!("gateway warm-up round\n{}", node.log_tail()))?;
        println!(
            "  warm-up from the client: {PARALLEL} × {WARM_MB} MB in {:.1} s ({:.2} MB/s)",
            r.secs,
            r.bytes as f64 / r.secs / 1e6
        );
        node.ensure_running()?;
        let seen = self.clients_total()?;
        if seen < PARALLEL as u64 {
            bail!("the gateway saw {seen} connections of the client's {PARALLEL}: not steered?");
        }
        self.node = Some(node);
        Ok(())
    }

    fn clients_total(&self) -> Result<u64> {
        let (code, body) = procs::http_get(&self.home, self.api, "/api/status")?;
        anyhow::ensure!(code == 200, "the gateway's /api/status answered {code}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        v.pointer("/node/clients_total")
            .and_then(|c| c.as_u64())
            .ok_or_else(|| anyhow!("no node.clients_total in the gateway's status"))
    }

    /// One measured run: the parallel round, then the big download.
    pub fn run(&mut self, lab: &Lab, files: &FileSet, base: &str, dl: &Path) -> Result<()> {
        let Some(node) = self.node.as_mut() else {
            return Ok(());
        };
        if self.parallel.skip.is_none() {
            let names: Vec<String> = (0..PARALLEL).map(|i| format!("f{FILE_MB}m-{i}")).collect();
            let before = net::rx_counters(lab)?;
            let r = client_round(&self.client_ns, base, files, &names, dl, Duration::from_secs(240));
            let after = net::rx_counters(lab)?;
            match r {
                Ok(r) => {
                    let rate = r.bytes as f64 / r.secs;
                    let (split, _) = net::spread(&before, &after);
                    println!(
                        "  gateway {:.2} MB/s ({} MB in {:.1} s from the client; per uplink MB: {})",
                        rate / 1e6,
                        r.bytes / MB,
                        r.secs,
                        split
                            .iter()
                            .map(|b| format!("{:.1}", *b as f64 / 1e6))
                            .collect::<Vec<_>>()
                            .join(" / ")
                    );
                    self.parallel.samples.push(rate);
                    self.parallel_splits.push(split);
                }
                Err(e) => {
                    procs::check_interrupt()?;
                    println!("  gateway round failed: {e:#}\n{}", node.log_tail());
                    self.parallel.skip = Some(format!("failed: {e:#}"));
                    node.ensure_running()?;
                }
            }
        }
        if self.big.skip.is_none() {
            let name = self.big_name.clone();
            let mut cmd = procs::curl(&self.client_ns);
            cmd.args(["--max-time", "300", "-o"])
                .arg(dl.join(&name))
                .arg(format!("{base}{}", files.path(&name)));
            match net::sampled_download(
                lab.uplinks(),
                cmd,
                "curl in the client (gateway)",
                files,
                &name,
                dl,
                Duration::from_secs(310),
            ) {
                Ok(s) => {
                    print_sampled("gateway, one download from the client", &s);
                    self.big.samples.push(s.rate);
                    if let Some(t) = &s.tail {
                        self.big_tail.samples.push(t.rate);
                    }
                    self.big_splits.push(s.split);
                }
                Err(e) => {
                    procs::check_interrupt()?;
                    println!("  gateway download failed: {e:#}\n{}", node.log_tail());
                    self.big.skip = Some(format!("failed: {e:#}"));
                    node.ensure_running()?;
                }
            }
        }
        Ok(())
    }

    /// Stops the gateway (SIGTERM: it removes its rules), adds the split and how it was
    /// measured to `res.notes`, and returns the rows for the table (none when not wanted).
    pub fn finish(mut self, res: &mut Results) -> Vec<Row> {
        if let Some(mut node) = self.node.take() {
            node.kill();
        }
        if !self.wanted {
            return Vec::new();
        }
        let rows = vec![self.parallel, self.big, self.big_tail];
        if rows.iter().all(|r| r.samples.is_empty()) {
            return rows;
        }
        res.notes.push(format!(
            "**Transparent gateway** (`booster gateway`, issue 8): a `client` namespace \
             (10.201.0.2) sits on a LAN behind home, which is its router: IP forwarding, a plain \
             nftables masquerade and home's own default route (adsl). In home, `booster gateway \
             --lan lan-cl --iface <each uplink> --listen 127.0.0.1:{PROXY_PORT} --api \
             127.0.0.1:{API_PORT} --probe-target 10.99.0.1:80 --no-mdns` (its own node, next to \
             the proxy node) redirects the client's TCP to itself with an nftables table of its \
             own. The client has no proxy setting: `curl -o FILE http://10.99.0.1/…`, \
             {PARALLEL} at once of different {FILE_MB} MB files (all bytes / time until the last \
             finished), then one {} MB download timed from spawn to exit with its tail rate as \
             for `booster get`. Every file is verified. One unrecorded warm-up round ({PARALLEL} × \
             {WARM_MB} MB) runs first, and the bench checks the gateway counted the client's \
             connections.",
            self.big_mb
        ));
        for (what, splits) in [
            ("parallel downloads", &self.parallel_splits),
            ("one download", &self.big_splits),
        ] {
            if let Some(text) = split_text(&res.link_names, splits) {
                res.notes
                    .push(format!("Gateway, {what}, bytes per uplink per run: {text}."));
            }
        }
        rows
    }
}

/// Headlines of the gateway rows against the targets: (what, result, target).
pub fn headlines(rows: &[Row], sum: f64, best: f64) -> Vec<[String; 3]> {
    let row = |tag: &str| rows.iter().find(|r| r.tag == tag && !r.samples.is_empty());
    let result = |r: &Row| {
        let m = median(&r.samples);
        format!(
            "{:.2} MB/s = **{:.0}%** of the link sum ({:.2}× the best link)",
            m / 1e6,
            m / sum * 100.0,
            m / best
        )
    };
    let mut v = Vec::new();
    if let Some(r) = row("gateway") {
        v.push([
            format!("transparent gateway: {PARALLEL} parallel downloads from a client with no settings"),
            result(r),
            "≥ 95% of the link sum".into(),
        ]);
    }
    if let Some(r) = row("gateway-big") {
        let tail = row("gateway-big-tail")
            .map(|t| format!("; last 10% at {:.0}%", median(&t.samples) / sum * 100.0))
            .unwrap_or_default();
        v.push([
            "transparent gateway: one plain-HTTP download from that client".into(),
            format!("{}{tail}", result(r)),
            "≥ 90% of the link sum".into(),
        ]);
    }
    v
}

/// "adsl 1.2 MB (10%), …; …" for each run.
fn split_text(names: &[String], splits: &[Split]) -> Option<String> {
    if splits.is_empty() {
        return None;
    }
    let runs: Vec<String> = splits
        .iter()
        .map(|s| {
            let total = s.iter().sum::<u64>().max(1) as f64;
            names
                .iter()
                .zip(s)
                .map(|(n, b)| format!("{n} {:.1} MB ({:.0}%)", *b as f64 / 1e6, *b as f64 / total * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    Some(runs.join("; "))
}

/// `booster gateway` in home over every uplink; returns once it said it is ready and every
/// uplink is usable.
fn start_gateway(lab: &Lab, bin: &Path, lan: &str, work: &Path, api: SocketAddr) -> Result<Proc> {
    let home = lab.node_ns("home").to_owned();
    let data = work.join("booster-gateway-data");
    std::fs::create_dir_all(&data)?;
    let log: PathBuf = work.join("booster-gateway.log");
    let mut cmd = netns::exec(&home, &bin.to_string_lossy());
    cmd.args(["gateway", "--lan", lan]);
    for u in lab.uplinks() {
        cmd.arg("--iface").arg(&u.iface);
    }
    cmd.arg("--listen")
        .arg(net::lo(PROXY_PORT).to_string())
        .arg("--api")
        .arg(api.to_string())
        .arg("--probe-target")
        .arg(net::origin_addr(lab, 80).to_string())
        .arg("--data-dir")
        .arg(&data)
        .arg("--no-mdns")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    let mut node = Proc::spawn("booster gateway", &mut cmd, Some(&log))?;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        node.ensure_running()?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("booster: gateway on") {
            break;
        }
        if Instant::now() >= end {
            bail!("booster gateway not ready after 30 s\n{}", node.log_tail());
        }
        procs::sleep(Duration::from_millis(100))?;
    }
    let want = lab.uplinks().len() as u64;
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        node.ensure_running()?;
        let usable = procs::http_get(&home, api, "/api/health")
            .ok()
            .filter(|(code, _)| *code == 200)
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v.get("usable_sources").and_then(|u| u.as_u64()))
            .unwrap_or(0);
        if usable >= want {
            return Ok(node);
        }
        if Instant::now() >= end {
            println!("  warning: the gateway has {usable} of {want} uplinks usable after 20 s");
            return Ok(node);
        }
        procs::sleep(Duration::from_millis(200))?;
    }
}

/// `names.len()` plain curls at once in the client namespace (no proxy: the gateway steers
/// them), each to its own file under `out`; verified, then deleted. Throughput = all bytes /
/// time until the last one finished.
fn client_round(
    ns: &str,
    base: &str,
    files: &FileSet,
    names: &[String],
    out: &Path,
    timeout: Duration,
) -> Result<net::Round> {
    std::fs::create_dir_all(out)?;
    let t0 = Instant::now();
    let mut running = Vec::new();
    for name in names {
        let mut cmd = procs::curl(ns);
        cmd.arg("--max-time")
            .arg(timeout.as_secs().to_string())
            .arg("-o")
            .arg(out.join(name))
            .arg("-w")
            .arg(procs::CURL_W)
            .arg(format!("{base}{}", files.path(name)));
        running.push(Proc::spawn_piped(&format!("curl {name} (client)"), &mut cmd)?);
    }
    let end = t0 + timeout + Duration::from_secs(5);
    let mut done = vec![false; running.len()];
    let mut last = t0;
    while done.iter().any(|d| !d) {
        for (p, d) in running.iter_mut().zip(done.iter_mut()) {
            if !*d && p.try_wait()?.is_some() {
                *d = true;
                last = Instant::now();
            }
        }
        if Instant::now() > end {
            bail!("the client's downloads did not finish within {timeout:?}");
        }
        procs::check_interrupt()?;
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut bytes = 0;
    for (p, name) in running.iter_mut().zip(names) {
        let status = p.try_wait()?.ok_or_else(|| anyhow!("curl still running"))?;
        let (o, e) = p.output();
        if !status.success() {
            bail!("curl {name} in the client failed ({status}): {}", e.trim());
        }
        let (n, _, code) = procs::parse_curl_w(&o)?;
        anyhow::ensure!(code == 200, "curl {name} in the client: HTTP {code}");
        let path = out.join(name);
        files.verify(name, &path)?;
        let _ = std::fs::remove_file(&path);
        bytes += n;
    }
    Ok(net::Round {
        bytes,
        secs: (last - t0).as_secs_f64(),
    })
}

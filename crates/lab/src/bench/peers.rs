//! The `peers` profile: home (ADSL) borrows the 4G uplinks of two phone nodes over the peer
//! network. Per run: the link sum (each uplink from its own node's namespace), 12 parallel
//! downloads through home's proxy, one `booster get --node` download over every source, and one
//! stream pinned to `phone-2/4g` through home's proxy against the same file fetched on phone-2
//! directly.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use super::files::{self, FileSet, Kind};
use super::net;
use super::procs::{self, Proc};
use super::report::{Results, Row};
use super::{print_sampled, summarize_sources, Plan, FILE_MB, PARALLEL, WARM_MB};
use crate::profile::Profile;
use crate::topology::Lab;

/// Size of the single pinned stream.
pub const PINNED_MB: u64 = 20;
/// The phone whose uplink the single stream is pinned to (the faster 4G, 45 ms).
const PINNED_NODE: &str = "phone-2";
const PINNED_LINK: &str = "4g";
const PHONES: [&str; 2] = ["phone-1", "phone-2"];

/// Everything on the `peers` lab. Returns the counter samples of the plotted booster round.
pub fn phase(
    prof: &Profile,
    plan: &Plan,
    files: &FileSet,
    work: &Path,
    kind: Kind,
    bin: &Path,
    res: &mut Results,
) -> Result<net::Samples> {
    println!("building the `{}` lab ...", prof.name);
    let lab = Lab::build(prof)?;
    let inet = lab.internet_ns().to_owned();
    let origin = net::origin_addr(&lab, 80);
    let base = format!("http://{}", lab.origin_ip());
    let _origin = files::start(kind, &inet, origin.into(), files, &work.join("nginx"))?;
    let _probe = net::answer_default_probe(&lab)?;
    let dl = work.join("dl");
    std::fs::create_dir_all(&dl)?;
    let home_ns = lab.node_ns("home").to_owned();
    let probe = origin.to_string();

    // The household secret, in the bench's temp dir, readable by root only.
    let secret = work.join("peer-secret");
    std::fs::write(&secret, format!("{:032x}\n", rand::random::<u128>()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    }
    let secret_s = secret.to_string_lossy().into_owned();

    // The phones lend, home borrows from both.
    let mut phones = Vec::new();
    let mut peer_args: Vec<String> = Vec::new();
    for phone in PHONES {
        let lan = lab
            .lan_ip(phone)
            .ok_or_else(|| anyhow!("the `{}` lab has no LAN address for {phone}", prof.name))?;
        let extra: Vec<String> = [
            "--name",
            phone,
            "--peer-listen",
            &format!("{lan}:4885"),
            "--secret-file",
            &secret_s,
            "--no-mdns",
        ]
        .map(str::to_owned)
        .to_vec();
        let data = work.join(format!("{phone}-data"));
        std::fs::create_dir_all(&data)?;
        println!("starting booster on {phone}, lending its 4g ...");
        phones.push(net::Booster::start(
            bin,
            lab.node_ns(phone),
            &["4g".to_owned()],
            &extra,
            1,
            net::lo(1080),
            net::lo(4884),
            &probe,
            &data,
            &work.join(format!("{phone}.log")),
        )?);
        peer_args.extend(["--peer".to_owned(), lan.to_string()]);
    }
    let mut extra: Vec<String> = ["--name", "home", "--secret-file", &secret_s, "--no-mdns"]
        .map(str::to_owned)
        .to_vec();
    extra.extend(peer_args);
    let data = work.join("home-data");
    std::fs::create_dir_all(&data)?;
    println!("starting booster on home, borrowing from both phones ...");
    let mut home = net::Booster::start(
        bin,
        &home_ns,
        &["adsl".to_owned()],
        &extra,
        3,
        net::lo(1080),
        net::lo(4884),
        &probe,
        &data,
        &work.join("home.log"),
    )?;
    let pinned_source = format!("{PINNED_NODE}/{PINNED_LINK}");
    let sources: Vec<String> = ["adsl".to_owned(), "phone-1/4g".to_owned(), pinned_source.clone()].to_vec();
    home.wait_sources(&sources, Duration::from_secs(40))?;
    println!("  home sees {} usable", sources.join(", "));
    res.pinned_source = pinned_source.clone();

    let names: Vec<String> = (0..PARALLEL).map(|i| format!("f{WARM_MB}m-{i}")).collect();
    let r = net::parallel_round(
        &home_ns,
        home.proxy,
        &base,
        files,
        &names,
        &dl,
        Duration::from_secs(120),
    )
    .with_context(|| format!("booster warm-up round\n{}", home.proc.log_tail()))?;
    println!(
        "  warm-up: {PARALLEL} × {WARM_MB} MB in {:.1} s ({:.2} MB/s)",
        r.secs,
        r.bytes as f64 / r.secs / 1e6
    );
    home.proc.ensure_running()?;

    let mut booster_row = Row::new(
        "booster",
        &format!("booster: {PARALLEL} parallel {FILE_MB} MB downloads through home's SOCKS5 proxy"),
    );
    let mut get_row = Row::new(
        "get-node",
        &format!(
            "one {} MB download, `booster get --node` (home's sources: adsl and both phones)",
            plan.big_mb
        ),
    );
    let mut get_tail = Row::new("get-node-tail", "  its last 10% of bytes (tail rate)");
    if let Err(why) = super::has_get(bin) {
        println!("skipping booster get: {why}");
        get_row.skip = Some(why);
    }
    let mut pinned_row = Row::new(
        "pinned",
        &format!(
            "one {PINNED_MB} MB stream through home's HTTP proxy, pinned to `{pinned_source}` \
             (forwarded by {PINNED_NODE})"
        ),
    );
    let mut direct_row = Row::new(
        "direct",
        &format!("  the same file with `curl --interface {PINNED_LINK}` on {PINNED_NODE} directly"),
    );
    let pin_i = lab
        .uplinks()
        .iter()
        .position(|u| u.node == PINNED_NODE && u.iface == PINNED_LINK)
        .ok_or_else(|| anyhow!("no uplink {pinned_source}"))?;

    let mut rounds: Vec<(f64, net::Samples)> = Vec::new();
    for run in 0..plan.runs {
        procs::check_interrupt()?;
        println!("run {}/{}", run + 1, plan.runs);
        let rates = net::link_sum(&lab, origin, &files.path("f1g"), plan.alone)?;
        let parts: Vec<String> = lab
            .uplinks()
            .iter()
            .zip(&rates)
            .map(|(u, r)| format!("{}/{} {:.2}", u.node, u.iface, r / 1e6))
            .collect();
        println!(
            "  link sum {:.2} MB/s ({})",
            rates.iter().sum::<f64>() / 1e6,
            parts.join(" + ")
        );
        res.alone.push(rates);

        // 12 parallel downloads through home's proxy.
        let names: Vec<String> = (0..PARALLEL).map(|i| format!("f{FILE_MB}m-{i}")).collect();
        let before = net::rx_counters(&lab)?;
        let sampler = net::Sampler::start(lab.uplinks());
        let r = net::parallel_round(
            &home_ns,
            home.proxy,
            &base,
            files,
            &names,
            &dl,
            Duration::from_secs(240),
        );
        let samples = sampler.finish();
        let after = net::rx_counters(&lab)?;
        super::record_round(
            r,
            &before,
            &after,
            samples,
            &mut home.proc,
            &mut booster_row,
            &mut res.booster_splits,
            &mut rounds,
        )?;

        // One download with `booster get` through home's node (its own and the peers' sources).
        if get_row.skip.is_none() {
            let name = format!("f{}m", plan.big_mb);
            let url = format!("{base}{}", files.path(&name));
            let sha = files.get(&name).sha256.clone().unwrap_or_default();
            let cmd = net::booster_get_cmd(bin, &home_ns, &[], Some(home.api), &url, &dl, &name, &sha);
            match net::sampled_download(
                lab.uplinks(),
                cmd,
                "booster get --node",
                files,
                &name,
                &dl,
                Duration::from_secs(300),
            ) {
                Ok(s) => {
                    print_sampled("booster get --node", &s);
                    get_row.samples.push(s.rate);
                    if let Some(t) = &s.tail {
                        get_tail.samples.push(t.rate);
                    }
                    res.get_splits.push(s.split);
                }
                Err(e) => {
                    procs::check_interrupt()?;
                    println!("  booster get --node failed: {e:#}");
                    get_row.skip = Some(format!("failed: {e:#}"));
                }
            }
        }

        // One stream pinned to phone-2's uplink through home, then that uplink directly.
        let name = format!("f{PINNED_MB}m");
        let url = format!("{base}{}", files.path(&name));
        let before = net::rx_counters(&lab)?;
        let mut via = procs::curl(&home_ns);
        via.arg("-x")
            .arg(format!("http://{}", home.proxy))
            .arg("-H")
            .arg(format!("X-Booster-Source: {pinned_source}"));
        let via = curl_one(via, "curl through home (pinned)", files, &name, &url, &dl).and_then(|rate| {
            let (split, _) = net::spread(&before, &net::rx_counters(&lab)?);
            let total: u64 = split.iter().sum::<u64>().max(1);
            anyhow::ensure!(
                split[pin_i] * 10 >= total * 9,
                "the pinned stream did not leave on {pinned_source}: per uplink bytes {split:?}"
            );
            Ok(rate)
        });
        let mut direct = procs::curl(lab.node_ns(PINNED_NODE));
        direct.arg("--interface").arg(PINNED_LINK);
        let direct = curl_one(direct, "curl on the phone", files, &name, &url, &dl);
        match (via, direct) {
            (Ok(v), Ok(d)) => {
                println!(
                    "  one stream via {pinned_source} through home {:.2} MB/s, directly {:.2} MB/s: {:.0}%",
                    v / 1e6,
                    d / 1e6,
                    v / d * 100.0
                );
                pinned_row.samples.push(v);
                direct_row.samples.push(d);
                res.pinned.push((v, d));
            }
            (v, d) => {
                procs::check_interrupt()?;
                for (what, r, row) in [("through home", v, &mut pinned_row), ("directly", d, &mut direct_row)] {
                    if let Err(e) = r {
                        println!("  pinned stream {what} failed: {e:#}");
                        row.skip = Some(format!("failed: {e:#}"));
                    }
                }
                home.proc.ensure_running()?;
            }
        }
    }

    if let Ok(s) = home.status() {
        if let Some(src) = s.get("sources") {
            res.notes.push(format!(
                "home's view of its sources at the end of the lab runs (`/api/status`): `{}`",
                summarize_sources(src)
            ));
        }
    }
    home.proc.kill();
    for mut p in phones {
        p.proc.kill();
    }
    println!("tearing the lab down ...");
    drop(lab);

    for r in [booster_row, get_row, get_tail, pinned_row, direct_row] {
        if !r.samples.is_empty() || (r.skip.is_some() && r.tag != "get-node-tail") {
            res.rows.push(r);
        }
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(rounds
        .get(rounds.len().saturating_sub(1) / 2)
        .map(|r| r.1.clone())
        .unwrap_or_default())
}

/// One curl download of `name` into `dl`, verified; bytes / curl's `time_total`.
fn curl_one(
    mut cmd: std::process::Command,
    what: &str,
    files: &FileSet,
    name: &str,
    url: &str,
    dl: &Path,
) -> Result<f64> {
    let target = dl.join(name);
    let _ = std::fs::remove_file(&target);
    cmd.args(["--max-time", "180", "-o"])
        .arg(&target)
        .arg("-w")
        .arg(procs::CURL_W)
        .arg(url);
    let mut p = Proc::spawn_piped(what, &mut cmd)?;
    let st = p.wait_timeout(Duration::from_secs(190))?;
    let (o, e) = p.output();
    anyhow::ensure!(st.success(), "{what} failed ({st}): {}", e.trim());
    let (n, secs, code) = procs::parse_curl_w(&o)?;
    anyhow::ensure!(code == 200, "{what}: HTTP {code}");
    files.verify(name, &target)?;
    let _ = std::fs::remove_file(&target);
    Ok(n as f64 / secs)
}

//! The bench's results: the table on stdout, `docs/benchmarks.md` and the SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::plot;
use crate::profile::Profile;

/// One throughput line of the main table: samples in bytes/s (one per run), or why not.
pub struct Row {
    /// What the row is, for the summary: "booster", "get", "get-tail", "aria2c", …
    pub tag: &'static str,
    pub what: String,
    pub samples: Vec<f64>,
    /// Why there are no samples (tool missing, not built yet, failed).
    pub skip: Option<String>,
}

impl Row {
    pub fn new(tag: &'static str, what: &str) -> Row {
        Row {
            tag,
            what: what.to_owned(),
            samples: Vec::new(),
            skip: None,
        }
    }
}

/// Per-uplink bytes of one transfer, in uplink order.
pub type Split = Vec<u64>;

/// One failover run: one stream, one uplink blackholed for 10 s in the middle of it.
pub struct Failover {
    /// Who carried the stream: "kernel MPTCP", "booster bond", …
    pub who: String,
    pub link: String,
    pub size_mb: f64,
    pub secs: f64,
    pub ideal_secs: f64,
    /// The longest interval in which the client received nothing, and when it began
    /// (seconds after the start).
    pub stall_secs: f64,
    pub stall_at: f64,
}

impl Failover {
    fn line(&self) -> String {
        format!(
            "{}: {:.1} s for {:.0} MB (ideal {:.1} s, lost {:.1} s); longest stall {:.2} s (from t = {:.1} s); intact",
            self.who,
            self.secs,
            self.size_mb,
            self.ideal_secs,
            self.secs - self.ideal_secs,
            self.stall_secs,
            self.stall_at
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "who": self.who, "link": self.link, "size_mb": self.size_mb, "secs": self.secs,
            "ideal_secs": self.ideal_secs, "longest_stall_secs": self.stall_secs,
            "stall_at_secs": self.stall_at,
        })
    }
}

/// Loopback results.
#[derive(Default)]
pub struct Loopback {
    pub origin: String,
    pub direct: Vec<f64>,
    pub proxied: Vec<f64>,
    /// Through the anchor, fast-socks5 1.0, in the same rounds.
    pub anchor: Vec<f64>,
    /// (direct µs, through proxy µs) per connect pair.
    pub latency: Vec<(f64, f64)>,
    /// The same through fast-socks5.
    pub anchor_latency: Vec<(f64, f64)>,
    pub idle_n: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_closed_kib: u64,
    pub rss_reopened_kib: u64,
    pub clients_open: Option<u64>,
    pub idle_error: Option<String>,
    pub notes: Vec<String>,
}

pub struct Results {
    pub profile: Profile,
    pub runs: usize,
    pub quick: bool,
    pub command: String,
    pub date: String,
    pub machine: String,
    pub origin: String,
    pub booster_version: String,
    pub link_names: Vec<String>,
    /// Per run, per uplink: bytes/s alone (all at once).
    pub alone: Vec<Vec<f64>>,
    pub alone_secs: u64,
    pub rows: Vec<Row>,
    pub booster_splits: Vec<Split>,
    pub booster_parallel: usize,
    pub booster_file_mb: u64,
    pub mptcp_splits: Vec<Split>,
    pub aria_splits: Vec<Split>,
    /// `booster get`, bytes per uplink per run.
    pub get_splits: Vec<Split>,
    /// `peers`: the source a single stream was pinned to, and per run (through home's proxy,
    /// that uplink directly) in bytes/s.
    pub pinned_source: String,
    pub pinned: Vec<(f64, f64)>,
    /// Failover runs, MPTCP anchor then booster's bond (and aggligator when it is there).
    pub failover: Result<Failover, String>,
    pub bond_failover: Result<Failover, String>,
    pub agg_failover: Result<Failover, String>,
    /// booster's bond, one stream: bytes per uplink per run.
    pub bond_splits: Vec<Split>,
    /// Redundant mode's round trips against each uplink alone.
    pub redundant: Result<super::bond::Redundant, String>,
    pub loopback: Result<Loopback, String>,
    pub notes: Vec<String>,
    pub elapsed_secs: f64,
}

/// The first line of a (possibly multi-line) error, for tables.
pub fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// The best makespan-limited throughput when `n` equal downloads of `size` bytes all start at
/// once and each is pinned to one link for its whole life (connection-level balancing).
/// Returns (bytes/s, assignment).
pub fn integer_ceiling(rates: &[f64], n: usize, size: f64) -> (f64, Vec<usize>) {
    fn go(rates: &[f64], left: usize, cur: &mut Vec<usize>, size: f64, best: &mut (f64, Vec<usize>), total: f64) {
        if cur.len() + 1 == rates.len() {
            cur.push(left);
            let makespan = cur
                .iter()
                .zip(rates)
                .map(|(k, r)| *k as f64 * size / r)
                .fold(0.0, f64::max);
            let rate = total / makespan;
            if rate > best.0 {
                *best = (rate, cur.clone());
            }
            cur.pop();
            return;
        }
        for k in 0..=left {
            cur.push(k);
            go(rates, left - k, cur, size, best, total);
            cur.pop();
        }
    }
    let mut best = (0.0, vec![0; rates.len()]);
    if rates.is_empty() || rates.iter().any(|r| *r <= 0.0) {
        return best;
    }
    go(rates, n, &mut Vec::new(), size, &mut best, n as f64 * size);
    best
}

impl Results {
    fn sums(&self) -> Vec<f64> {
        self.alone.iter().map(|r| r.iter().sum()).collect()
    }

    fn bests(&self) -> Vec<f64> {
        self.alone
            .iter()
            .map(|r| r.iter().copied().fold(0.0, f64::max))
            .collect()
    }

    fn link_median(&self, i: usize) -> f64 {
        median(&self.alone.iter().map(|r| r[i]).collect::<Vec<_>>())
    }

    fn best_name(&self) -> String {
        let meds: Vec<f64> = (0..self.link_names.len()).map(|i| self.link_median(i)).collect();
        let i = meds
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        self.link_names[i].clone()
    }

    /// The table lines: (what, median MB/s, min–max, % of link sum, × best link).
    fn table(&self) -> Vec<[String; 5]> {
        let sum = median(&self.sums());
        let best = median(&self.bests());
        let line = |what: &str, v: &[f64]| -> [String; 5] {
            let m = median(v);
            let (lo, hi) = min_max(v);
            [
                what.to_owned(),
                format!("{:.2}", m / 1e6),
                format!("{:.2}–{:.2}", lo / 1e6, hi / 1e6),
                format!("{:.0}%", m / sum * 100.0),
                format!("{:.2}×", m / best),
            ]
        };
        let mut t = Vec::new();
        t.push(line("each uplink alone, all at once (the **link sum**)", &self.sums()));
        for (i, n) in self.link_names.iter().enumerate() {
            let v: Vec<f64> = self.alone.iter().map(|r| r[i]).collect();
            t.push(line(&format!("  {n} alone"), &v));
        }
        t.push(line(
            &format!("best single uplink ({})", self.best_name()),
            &self.bests(),
        ));
        for r in &self.rows {
            if r.samples.is_empty() {
                let why = first_line(r.skip.as_deref().unwrap_or("no result"));
                t.push([r.what.clone(), "–".into(), "–".into(), why, String::new()]);
            } else {
                t.push(line(&r.what, &r.samples));
            }
        }
        t
    }

    /// The table as plain text, for stdout.
    pub fn print(&self) {
        let t = self.table();
        println!();
        println!(
            "`{}` profile, {} run(s), median (min–max); MB = 10^6 bytes",
            self.profile.name, self.runs
        );
        println!(
            "{:<62} {:>8} {:>13} {:>10} {:>8}",
            "what", "MB/s", "min–max", "link sum", "× best"
        );
        for l in &t {
            let what = l[0].replace("**", "");
            if l[1] == "–" {
                println!("{what:<62} {:>8} {}", "–", l[3]);
            } else {
                println!("{what:<62} {:>8} {:>13} {:>10} {:>8}", l[1], l[2], l[3], l[4]);
            }
        }
        if let Some(s) = self.split_text(&self.booster_splits) {
            println!("booster bytes per uplink (measured rounds): {s}");
        }
        if let Some(s) = self.split_text(&self.aria_splits) {
            println!("aria2c bytes per uplink: {s}");
        }
        if let Some(s) = self.split_text(&self.mptcp_splits) {
            println!("MPTCP bytes per uplink: {s}");
        }
        if let Some(s) = self.split_text(&self.bond_splits) {
            println!("bond bytes per uplink: {s}");
        }
        for (who, f) in [
            ("MPTCP", &self.failover),
            ("aggligator", &self.agg_failover),
            ("bond", &self.bond_failover),
        ] {
            match f {
                Ok(f) => println!("failover ({} blackholed 10 s) {}", f.link, f.line()),
                Err(e) => println!("failover ({who}): {}", first_line(e)),
            }
        }
        match &self.redundant {
            Ok(r) => {
                for l in redundant_lines(r) {
                    println!("{}", l.join("  |  ").replace("**", ""));
                }
            }
            Err(e) => println!("redundant mode: {}", first_line(e)),
        }
        match &self.loopback {
            Ok(l) => {
                for line in self.loopback_lines(l) {
                    println!("{}", line.join("  |  ").replace("**", ""));
                }
            }
            Err(e) => println!("loopback: {e}"),
        }
        println!("bench took {:.0} s", self.elapsed_secs);
    }

    fn split_text(&self, splits: &[Split]) -> Option<String> {
        if splits.is_empty() {
            return None;
        }
        let parts: Vec<String> = splits
            .iter()
            .map(|s| {
                let total: u64 = s.iter().sum::<u64>().max(1);
                self.link_names
                    .iter()
                    .zip(s)
                    .map(|(n, b)| {
                        format!(
                            "{n} {:.1} MB ({:.0}%)",
                            *b as f64 / 1e6,
                            *b as f64 / total as f64 * 100.0
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        Some(parts.join("; "))
    }

    fn loopback_lines(&self, l: &Loopback) -> Vec<[String; 3]> {
        let mut v = Vec::new();
        let gb = |x: f64| format!("{:.2} GB/s", x / 1e9);
        let (dm, pm) = (median(&l.direct), median(&l.proxied));
        let range = |x: &[f64]| {
            let (a, b) = min_max(x);
            format!("{:.2}–{:.2}", a / 1e9, b / 1e9)
        };
        v.push([
            format!("curl 1 GB from {} on loopback, direct", l.origin),
            format!("{} ({})", gb(dm), range(&l.direct)),
            "".into(),
        ]);
        v.push([
            "the same through a booster node (`--iface lo`), SOCKS5".into(),
            format!("{} ({}), {:.0}% of direct", gb(pm), range(&l.proxied), pm / dm * 100.0),
            "≥ 90% of direct".into(),
        ]);
        if !l.anchor.is_empty() {
            let am = median(&l.anchor);
            v.push([
                "the same through fast-socks5 1.0 (anchor, same rounds)".into(),
                format!(
                    "{} ({}), {:.0}% of direct; booster moves **{:.2}×** what fast-socks5 does",
                    gb(am),
                    range(&l.anchor),
                    am / dm * 100.0,
                    pm / am
                ),
                "".into(),
            ]);
        }
        use super::loopback::percentile as pc;
        let mut latency = |what: String, pairs: &[(f64, f64)], target: &str| {
            if pairs.is_empty() {
                return;
            }
            let diff: Vec<f64> = pairs.iter().map(|(d, p)| p - d).collect();
            let d: Vec<f64> = pairs.iter().map(|x| x.0).collect();
            let p: Vec<f64> = pairs.iter().map(|x| x.1).collect();
            v.push([
                what,
                format!(
                    "p50 {:.0} µs, p99 {:.0} µs (direct p50 {:.0} µs; through the proxy p50 {:.0} µs, p99 {:.0} µs)",
                    pc(&diff, 50.0),
                    pc(&diff, 99.0),
                    pc(&d, 50.0),
                    pc(&p, 50.0),
                    pc(&p, 99.0)
                ),
                target.into(),
            ]);
        };
        latency(
            format!(
                "added connect latency ({} SOCKS5 CONNECTs vs direct connects)",
                l.latency.len()
            ),
            &l.latency,
            "≤ 100 µs at p50",
        );
        latency(
            "the same through fast-socks5 1.0 (anchor)".into(),
            &l.anchor_latency,
            "",
        );
        if let Some(e) = &l.idle_error {
            v.push([
                "idle proxied connections".into(),
                format!("failed: {}", first_line(e)),
                "bounded, small".into(),
            ]);
        } else if l.idle_n > 0 {
            let per = (l.rss_after_kib as f64 - l.rss_before_kib as f64) / l.idle_n as f64;
            let open = l
                .clients_open
                .map(|c| format!(", node reported {c} open"))
                .unwrap_or_default();
            v.push([
                format!("{} idle proxied connections: node RSS", l.idle_n),
                format!(
                    "{:.1} MiB → {:.1} MiB = **{:.1} KiB per connection**{open}; {:.1} MiB after closing \
                     them, {:.1} MiB with {} open again",
                    l.rss_before_kib as f64 / 1024.0,
                    l.rss_after_kib as f64 / 1024.0,
                    per,
                    l.rss_closed_kib as f64 / 1024.0,
                    l.rss_reopened_kib as f64 / 1024.0,
                    l.idle_n
                ),
                "bounded, small".into(),
            ]);
        }
        v
    }

    /// The profile's lab, one line.
    fn lab_line(&self) -> String {
        let p = &self.profile;
        let links: Vec<String> = p
            .links()
            .map(|(n, l)| {
                let node = if p.nodes.len() > 1 {
                    format!("{}: ", n.name)
                } else {
                    String::new()
                };
                format!(
                    "{node}`{}` {} Mbit/{} ms{}",
                    l.name,
                    l.rate_bps / 1_000_000,
                    l.rtt.as_millis(),
                    if l.loss > 0.0 {
                        format!(" {:.0}% loss", l.loss * 100.0)
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        let lan = p
            .lan_rate_bps
            .map(|r| format!("; the nodes share a {} Mbit/s LAN", r / 1_000_000))
            .unwrap_or_default();
        format!("{}{lan}", links.join(", "))
    }

    fn row(&self, tag: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.tag == tag && !r.samples.is_empty())
    }

    /// The key results against the targets: (what, result, target).
    pub fn headlines(&self) -> Vec<[String; 3]> {
        let sum = median(&self.sums());
        let best = median(&self.bests());
        let pct = |r: &Row| {
            format!(
                "{:.2} MB/s = **{:.0}%**",
                median(&r.samples) / 1e6,
                median(&r.samples) / sum * 100.0
            )
        };
        let mut v = Vec::new();
        if let Some(r) = self.row("booster") {
            v.push([
                format!(
                    "booster: {} parallel downloads through the proxy",
                    self.booster_parallel
                ),
                format!("{} of the link sum", pct(r)),
                if self.profile.name == "peers" {
                    "≥ 95% of the link sum (original booster: 38%)".into()
                } else {
                    "≥ 95% of the link sum".into()
                },
            ]);
        }
        if let Some(r) = self.row("get") {
            let tail = self
                .row("get-tail")
                .map(|t| {
                    format!(
                        "; last 10% of bytes at **{:.0}%** of the link sum",
                        median(&t.samples) / sum * 100.0
                    )
                })
                .unwrap_or_default();
            let target = if self.profile.name == "skewed" {
                "≥ 95%; tail ≥ 80%; never below the best link"
            } else {
                "≥ 95%; tail ≥ 80%"
            };
            v.push([
                "one download, `booster get`, SHA-256 verified".into(),
                format!(
                    "{} of the link sum ({:.2}× the best link){tail}",
                    pct(r),
                    median(&r.samples) / best
                ),
                target.into(),
            ]);
        }
        if let Some(r) = self.row("get-node") {
            let tail = self
                .row("get-node-tail")
                .map(|t| format!("; last 10% at {:.0}%", median(&t.samples) / sum * 100.0))
                .unwrap_or_default();
            v.push([
                "one download, `booster get --node` (home's own and the phones' uplinks)".into(),
                format!("{} of the link sum{tail}", pct(r)),
                "≥ 95%; tail ≥ 80%".into(),
            ]);
        }
        if let Some(r) = self.row("aria2c") {
            let tail = self
                .row("aria2c-tail")
                .map(|t| format!("; last 10% at {:.0}%", median(&t.samples) / sum * 100.0))
                .unwrap_or_default();
            v.push([
                "anchor: aria2c --multiple-interface, one download".into(),
                format!("{} of the link sum{tail}", pct(r)),
                String::new(),
            ]);
        }
        v.extend(super::gateway::headlines(&self.rows, sum, best));
        v.extend(self.bond_headlines(sum, best));
        if !self.pinned.is_empty() {
            let ratio: Vec<f64> = self.pinned.iter().map(|(via, direct)| via / direct).collect();
            let via: Vec<f64> = self.pinned.iter().map(|p| p.0).collect();
            let direct: Vec<f64> = self.pinned.iter().map(|p| p.1).collect();
            v.push([
                format!(
                    "one stream forwarded by a peer (`{}`) vs that uplink directly",
                    self.pinned_source
                ),
                format!(
                    "{:.2} vs {:.2} MB/s = **{:.0}%**",
                    median(&via) / 1e6,
                    median(&direct) / 1e6,
                    median(&ratio) * 100.0
                ),
                "≥ 95%".into(),
            ]);
        }
        if let Ok(l) = &self.loopback {
            if !l.direct.is_empty() && !l.proxied.is_empty() {
                let anchor = if l.anchor.is_empty() {
                    String::new()
                } else {
                    format!(" (fast-socks5 {:.0}%)", median(&l.anchor) / median(&l.direct) * 100.0)
                };
                v.push([
                    "loopback: proxy data path vs direct".into(),
                    format!("**{:.0}%**{anchor}", median(&l.proxied) / median(&l.direct) * 100.0),
                    "≥ 90%".into(),
                ]);
            }
            if !l.latency.is_empty() {
                let added = |pairs: &[(f64, f64)]| {
                    super::loopback::percentile(&pairs.iter().map(|(d, p)| p - d).collect::<Vec<_>>(), 50.0)
                };
                let anchor = if l.anchor_latency.is_empty() {
                    String::new()
                } else {
                    format!(" (fast-socks5 {:.0} µs)", added(&l.anchor_latency))
                };
                v.push([
                    "loopback: added connect latency, p50".into(),
                    format!("**{:.0} µs**{anchor}", added(&l.latency)),
                    "≤ 100 µs".into(),
                ]);
            }
        }
        v
    }

    /// The bond's lines of the summary: one stream, failover, redundant mode.
    fn bond_headlines(&self, sum: f64, best: f64) -> Vec<[String; 3]> {
        let mut v = Vec::new();
        let pct = |tag: &str| self.row(tag).map(|r| median(&r.samples) / sum * 100.0);
        if let Some(r) = self.row("bond") {
            let m = median(&r.samples);
            let anchors: Vec<String> = [("mptcp", "kernel MPTCP"), ("aggligator", "aggligator")]
                .iter()
                .filter_map(|(tag, name)| pct(tag).map(|p| format!("{name} {p:.0}%")))
                .collect();
            let anchors = if anchors.is_empty() {
                String::new()
            } else {
                format!(" ({} in the same run)", anchors.join(", "))
            };
            let target = if self.profile.name == "skewed" {
                format!("never below the best single link{anchors}")
            } else {
                format!("≥ 95% of the link sum{anchors}")
            };
            v.push([
                "one TCP stream through the bond (curl through the proxy, `--bond all`)".into(),
                format!(
                    "{:.2} MB/s = **{:.0}%** of the link sum, **{:.2}×** the best link",
                    m / 1e6,
                    m / sum * 100.0,
                    m / best
                ),
                target,
            ]);
        }
        if let Ok(f) = &self.bond_failover {
            let anchors: Vec<String> = [&self.failover, &self.agg_failover]
                .iter()
                .filter_map(|a| a.as_ref().ok())
                .map(|a| format!("{} {:.1} s, stall {:.1} s", a.who, a.secs, a.stall_secs))
                .collect();
            let anchor = if anchors.is_empty() {
                String::new()
            } else {
                format!(" (in this run: {})", anchors.join("; "))
            };
            v.push([
                format!("bond: `{}` blackholed 10 s in one {:.0} MB stream", f.link, f.size_mb),
                format!(
                    "{:.1} s vs {:.1} s ideal, longest stall **{:.2} s**, SHA-256 intact",
                    f.secs, f.ideal_secs, f.stall_secs
                ),
                format!("intact, ≤ 1 s of stall{anchor}"),
            ]);
        }
        if let Ok(r) = &self.redundant {
            use super::loopback::percentile as pc;
            if let Some((_, _, d)) = r.direct.iter().find(|(n, _, _)| *n == r.best) {
                let (b50, b99, d50, d99) = (pc(&r.bond_ms, 50.0), pc(&r.bond_ms, 99.0), pc(d, 50.0), pc(d, 99.0));
                let lossy = r.direct.iter().any(|(_, l, _)| *l);
                v.push([
                    format!("redundant mode: {}-byte round trips, p50 / p99", r.bytes),
                    format!(
                        "{b50:.1} / {b99:.1} ms vs `{}` alone {d50:.1} / {d99:.1} ms: **{:+.1} ms** at p50, \
                         **{:+.1} ms** at p99",
                        r.best,
                        b50 - d50,
                        b99 - d99
                    ),
                    if lossy {
                        "p99 no worse than on the clean path alone".into()
                    } else {
                        "within 2 ms of the best path's RTT".into()
                    },
                ]);
            }
        }
        v
    }

    /// `### Failover`: MPTCP and the bond side by side.
    fn failover_section(&self, m: &mut String) {
        let p = &self.profile;
        let _ = writeln!(m, "\n### Failover on `{}`\n", p.name);
        let _ = writeln!(
            m,
            "One {} MB stream; the fastest uplink is blackholed in its delay line (interface up, \
             every packet dropped, both directions) for 10 s starting 3 s in, then restored. \
             **Ideal** = (size + that link's rate alone × 10 s) / the link sum, i.e. the transfer \
             at the link sum with the dead link's share missing for 10 s. **Longest stall**: the \
             client's output file is sampled every {} ms; the longest interval between its first \
             and last byte in which it did not grow. Every file is checked (size and SHA-256).\n",
            self.failover
                .as_ref()
                .or(self.bond_failover.as_ref())
                .map(|f| f.size_mb)
                .unwrap_or(50.0),
            super::bond::STALL_SAMPLE.as_millis()
        );
        let _ = writeln!(
            m,
            "| who | blackholed | total time | ideal | lost vs ideal | longest stall (starts at) |"
        );
        let _ = writeln!(m, "|---|---|---:|---:|---:|---:|");
        for (who, f) in [
            ("kernel MPTCP", &self.failover),
            ("aggligator", &self.agg_failover),
            ("booster bond", &self.bond_failover),
        ] {
            match f {
                Ok(f) => {
                    let _ = writeln!(
                        m,
                        "| {} | `{}` | **{:.1} s** | {:.1} s | {:.1} s | **{:.2} s** ({:.1} s) |",
                        f.who,
                        f.link,
                        f.secs,
                        f.ideal_secs,
                        f.secs - f.ideal_secs,
                        f.stall_secs,
                        f.stall_at
                    );
                }
                Err(e) => {
                    let _ = writeln!(m, "| {who} | – | not measured: {} | | | |", first_line(e));
                }
            }
        }
        if self.agg_failover.is_err() {
            let _ = writeln!(
                m,
                "\nFrom `shared/anchors.md` (not re-run here): aggligator 18.2 s and MPTCP 18.4 s \
                 on `home`, ideal about 14.4 s."
            );
        }
    }

    /// `### Redundant mode`: round trips through the bond against each uplink alone.
    fn redundant_section(&self, m: &mut String) {
        let r = match &self.redundant {
            Ok(r) => r,
            Err(e) => {
                if e != "not run" {
                    let _ = writeln!(
                        m,
                        "\n### Redundant mode on `{}`\n\nNot measured: {}",
                        self.profile.name,
                        first_line(e)
                    );
                }
                return;
            }
        };
        let _ = writeln!(m, "\n### Redundant mode on `{}`\n", self.profile.name);
        let _ = writeln!(
            m,
            "{n} request/response round trips of {b} bytes (each waits for its echo, then 10 ms \
             of pause; {w} unrecorded ones first) to an echo server on 10.99.0.1:{port} in the \
             internet namespace: through the bonding node's SOCKS5 proxy, whose `--redundant \
             :{port}` rule sends every frame of that stream on every path (the first copy to \
             arrive wins), and then over each uplink directly (a socket bound to the interface, \
             no booster). The best path is the lowest-RTT uplink without loss (`{best}`): its \
             round trip is the ideal.\n",
            n = r.n,
            b = r.bytes,
            w = super::bond::RTT_WARM,
            port = super::bond::ECHO_PORT,
            best = r.best
        );
        let _ = writeln!(m, "| path | p50 | p99 | max |\n|---|---:|---:|---:|");
        for l in redundant_lines(r) {
            let _ = writeln!(m, "| {} | {} | {} | {} |", l[0], l[1], l[2], l[3]);
        }
        let total: u64 = r.tx_split.iter().sum();
        if total > 0 {
            let parts: Vec<String> = self
                .link_names
                .iter()
                .zip(&r.tx_split)
                .map(|(n, b)| format!("{n} {:.0} KB", *b as f64 / 1e3))
                .collect();
            let _ = writeln!(
                m,
                "\nCost in traffic: while the bonded series ran ({} × {} bytes each way), the \
                 uplinks sent {} (interface tx counters, headers and the paths' own acks and \
                 probes included).",
                r.n + super::bond::RTT_WARM,
                r.bytes,
                parts.join(", ")
            );
        }
    }

    fn split_table(&self, m: &mut String, splits: &[Split]) {
        let _ = writeln!(m, "| run | {} |", self.link_names.join(" | "));
        let _ = writeln!(m, "|---|{}", "---:|".repeat(self.link_names.len()));
        for (i, split) in splits.iter().enumerate() {
            let total: u64 = split.iter().sum::<u64>().max(1);
            let cells: Vec<String> = split
                .iter()
                .map(|b| format!("{:.1} MB ({:.0}%)", *b as f64 / 1e6, *b as f64 / total as f64 * 100.0))
                .collect();
            let _ = writeln!(m, "| {} | {} |", i + 1, cells.join(" | "));
        }
    }

    /// This profile's section of `docs/benchmarks.md`.
    pub fn section(&self, svg_name: &str) -> String {
        let mut m = String::new();
        let p = &self.profile;
        let single = p.nodes.len() == 1;
        let _ = writeln!(m, "## `{}`: {}\n", p.name, p.why);
        let _ = writeln!(
            m,
            "- **Run:** `{}` on {}, {} run(s) per measurement{}, interleaved (run 1 of \
             everything, then run 2, …); tables show the median and the min–max. MB = 10^6 bytes. \
             The whole bench took {:.0} s.",
            self.command,
            self.date,
            self.runs,
            if self.quick { " (`--quick`)" } else { "" },
            self.elapsed_secs
        );
        let _ = writeln!(
            m,
            "- **Machine:** {}; **booster:** {}",
            self.machine, self.booster_version
        );
        let _ = writeln!(
            m,
            "- **Lab:** {} — built with `Lab::build`: network namespaces, tbf for rate (both \
             directions), a userspace delay line for RTT. Origin: {} on 10.99.0.1 in the internet \
             namespace, serving files with known SHA-256; every download is verified.\n",
            self.lab_line(),
            self.origin
        );

        let _ = writeln!(m, "### Throughput on `{}`\n", p.name);
        let _ = writeln!(m, "| what | MB/s (median) | min–max | % of link sum | × best link |");
        let _ = writeln!(m, "|---|---:|---:|---:|---:|");
        for l in self.table() {
            let what = l[0].trim_start().to_owned();
            let what = if l[0].starts_with("  ") {
                format!("&nbsp;&nbsp;{what}")
            } else {
                what
            };
            let _ = writeln!(m, "| {what} | {} | {} | {} | {} |", l[1], l[2], l[3], l[4]);
        }
        let _ = writeln!(m);
        if !self.pinned.is_empty() {
            let ratios: Vec<f64> = self.pinned.iter().map(|(v, d)| v / d * 100.0).collect();
            let (lo, hi) = min_max(&ratios);
            let _ = writeln!(
                m,
                "**One stream through a peer vs that phone's uplink directly: {:.0}%** \
                 (median of the per-run ratios; {:.0}–{:.0}%; per run: {}).\n",
                median(&ratios),
                lo,
                hi,
                ratios.iter().map(|r| format!("{r:.0}%")).collect::<Vec<_>>().join(", ")
            );
        }
        let _ = writeln!(
            m,
            "- **Link sum:** each uplink downloads a large file alone (socket bound to its \
             interface{}), all at the same time, for {} s; bytes / time per uplink. Best single \
             link = the fastest of those.",
            if single { "" } else { ", from its own node's namespace" },
            self.alone_secs
        );
        if single {
            if self.rows.iter().any(|r| r.tag == "booster") {
                let _ = writeln!(
                    m,
                    "- **booster:** `booster start --iface … --listen 127.0.0.1:1080 --api \
                     127.0.0.1:4884 --probe-target 10.99.0.1:80` in the home namespace; {} `curl -x \
                     socks5h://127.0.0.1:1080` at once, each downloading a different {} MB file; \
                     throughput = all bytes / time until the last one finished. The node starts \
                     cold, so one warm-up round (the same number of 2 MB downloads) runs first to \
                     let it learn each link's capacity. A real node remembers that across restarts \
                     (it is kept in the data dir), so this is the steady state, not a trick. The \
                     same node serves every run.",
                    self.booster_parallel, self.booster_file_mb
                );
            }
        } else {
            let _ = writeln!(
                m,
                "- **booster:** on each phone, `booster start --iface 4g --name phone-N \
                 --peer-listen <its LAN address>:4885 --secret-file F --no-mdns` (lending its 4G \
                 uplink); on home, `booster start --iface adsl --name home --secret-file F --peer \
                 <phone-1> --peer <phone-2> --no-mdns` (borrowing both), each with `--listen \
                 127.0.0.1:1080 --api 127.0.0.1:4884 --probe-target 10.99.0.1:80` in its own \
                 namespace; the secret file lives in the bench's temp dir. The bench waits until \
                 home's `/api/status` shows `adsl`, `phone-1/4g` and `phone-2/4g` usable. Then, as \
                 on `home`: one warm-up round of {n} × 2 MB, and per run {n} `curl -x \
                 socks5h://127.0.0.1:1080` in home's namespace at once, each downloading a \
                 different {} MB file; all bytes / time until the last finished. Bytes per \
                 uplink are the interface counters on home/adsl, phone-1/4g and phone-2/4g.",
                self.booster_file_mb,
                n = self.booster_parallel
            );
            if !self.pinned.is_empty() || self.rows.iter().any(|r| r.tag == "pinned") {
                let _ = writeln!(
                    m,
                    "- **One stream through a peer:** `curl -x http://127.0.0.1:1080 -H \
                     \"X-Booster-Source: {src}\"` in home's namespace (the node pins the request \
                     to that source and does not forward the header), against `curl --interface \
                     4g` in {node}'s namespace, the same file, one after the other in the same \
                     run; bytes / curl's `time_total`.",
                    src = self.pinned_source,
                    node = self.pinned_source.split('/').next().unwrap_or("the phone")
                );
            }
        }
        if self.rows.iter().any(|r| r.tag == "get" || r.tag == "get-node") {
            let _ = writeln!(
                m,
                "- **`booster get`:** `booster get URL -o FILE {} --sha256 <the file's SHA-256> \
                 --quiet --no-progress --no-resume` in home's namespace, timed from spawn to exit \
                 (so the checksum check is included). **Tail rate:** every uplink's rx counter is \
                 sampled every 100 ms during the download (FILE.part is preallocated, so its size \
                 says nothing); the tail rate is 10% of the bytes / the time between the moments \
                 the summed count passed 90% and 100% of its final value (interpolated within a \
                 sample interval). The lab's internet namespace also answers booster's default \
                 probe target, 1.1.1.1:443, as the real internet does: `booster get --iface` \
                 probes every uplink there before it starts and has no `--probe-target` option; \
                 unanswered, those probes cost 3 s per uplink, one after the other.{}",
                if single {
                    "--iface <each uplink>"
                } else {
                    "--node 127.0.0.1:4884"
                },
                if self.rows.iter().any(|r| r.tag == "aria2c-tail") {
                    " The same is computed for aria2c."
                } else {
                    ""
                }
            );
        }
        if single {
            let _ = writeln!(
                m,
                "- **aria2c:** `aria2c --multiple-interface=<every uplink> -x16 -s16 -k1M`, one \
                 file, timed from start to exit.\n\
                 - **kernel MPTCP:** `mptcpize run nginx` (a second instance, port 81) in the \
                 internet namespace and `mptcpize run curl` in home; `ip mptcp limits set subflow 8 \
                 add_addr_accepted 8` on both ends and one `ip mptcp endpoint add <addr> dev \
                 <iface> subflow` per uplink; one stream."
            );
        }
        if self.row("aggligator").is_some() {
            let _ = writeln!(
                m,
                "- **aggligator:** `agg-tunnel server --no-monitor --tcp {t} -p 10.99.0.1:80:80` in \
                 the internet namespace and `agg-tunnel client --no-monitor -4 --tcp \
                 10.99.0.1:{t} -p 80:{l}` in home (one TCP link per local interface, its default \
                 link filter; IPv6 is enabled on home's `lo` only, because the client also listens \
                 on [::1]); after one unrecorded 10 MB stream, per run one `curl \
                 http://127.0.0.1:{l}/<file>` of the same file, timed from spawn to exit and \
                 verified.",
                t = super::aggligator::TUNNEL_PORT,
                l = super::aggligator::LOCAL_PORT
            );
        }
        if self.rows.iter().any(|r| r.tag == "bond") {
            let _ = writeln!(
                m,
                "- **booster's bond:** `booster relay --listen 10.99.0.1:{relay} --secret-file F \
                 --allow 10.99.0.0/16` in the internet namespace (next to the origin); in home a \
                 second node, `booster start --iface <each uplink> --listen 127.0.0.1:{proxy} \
                 --secret-file F --relay 10.99.0.1:{relay} --bond all --redundant :{echo} \
                 --peer-listen off --no-mdns`, which keeps one Noise-encrypted path per uplink to \
                 the relay (the bench waits until the node has logged a path up through every \
                 uplink, and warms it with one unrecorded 10 MB stream). Per run, one `curl -x \
                 socks5h://127.0.0.1:{proxy}` of the same file as aria2c and MPTCP, timed from \
                 spawn to exit and verified; its tail rate is computed as for `booster get`. A \
                 bonded stream is never range-split: this is one TCP connection from curl to the \
                 origin, carried over every uplink.",
                relay = super::bond::RELAY_PORT,
                proxy = super::bond::PROXY_PORT,
                echo = super::bond::ECHO_PORT,
            );
        }
        if !self.booster_splits.is_empty() {
            let _ = writeln!(m, "\n#### Where booster's bytes went\n");
            let _ = writeln!(
                m,
                "Bytes received per uplink (interface counters, so headers included) during each \
                 measured round of parallel downloads:\n"
            );
            self.split_table(&mut m, &self.booster_splits);
            let sum = median(&self.sums());
            let ideal: Vec<String> = (0..self.link_names.len())
                .map(|i| format!("{:.0}%", self.link_median(i) / sum * 100.0))
                .collect();
            let _ = writeln!(m, "| ideal (share of the link sum) | {} |", ideal.join(" | "));
        }
        for (what, splits) in [
            ("`booster get`", &self.get_splits),
            ("aria2c", &self.aria_splits),
            ("MPTCP", &self.mptcp_splits),
            ("booster's bond (one stream)", &self.bond_splits),
        ] {
            if splits.is_empty() {
                continue;
            }
            let _ = writeln!(m, "\n{what}, bytes per uplink per run:\n");
            self.split_table(&mut m, splits);
        }
        if !self.booster_splits.is_empty() {
            let _ = writeln!(
                m,
                "\n![per-uplink throughput during booster's median measured round]({svg_name})\n\n\
                 Per-uplink receive rate (interface counters every 250 ms) during the median \
                 measured round of booster's parallel downloads."
            );
        }

        if single {
            self.failover_section(&mut m);
            self.redundant_section(&mut m);
        }

        if let Ok(l) = &self.loopback {
            let _ = writeln!(m, "\n### Proxy data path on loopback\n");
            let _ = writeln!(
                m,
                "Measured with the `{}` run (it does not depend on the profile). In a fresh \
                 namespace with only `lo` (no other process shares its ports); the node is \
                 `booster start --iface lo`.\n",
                p.name
            );
            let _ = writeln!(m, "| what | result | target |\n|---|---|---|");
            for line in self.loopback_lines(l) {
                let _ = writeln!(m, "| {} | {} | {} |", line[0], line[1], line[2]);
            }
            let _ = writeln!(
                m,
                "\n- Throughput: `curl -o /dev/null` of a 1 GB file, direct vs `-x \
                 socks5h://…` through booster and through fast-socks5 1.0 (the anchor, its \
                 example server in its own process with two runtime threads, as `lab load` \
                 runs it); bytes / curl's `time_total`, {} run(s) each, the three side by side \
                 in each round. The machine has two cores: curl, nginx and the proxy share \
                 them, and every byte crosses the loopback stack twice through a proxy, once \
                 directly.\n\
                 - Connect latency: a small SOCKS5 client in the bench times greeting → \
                 method reply → CONNECT → reply, against a plain TCP connect to the same \
                 listener, in alternating pairs after 20 warm-up pairs; the difference per \
                 pair, as percentiles.\n\
                 - Idle connections: SOCKS5 CONNECTs to a loopback listener that accepts and \
                 holds them; the node's VmRSS from `/proc/<pid>/status` before and after, \
                 1 s after the last was accepted. Kernel socket buffers are not in RSS. \
                 After closing them all, the same number is opened again: RSS that does not \
                 grow the second time means the freed memory is kept by the allocator for \
                 reuse (glibc does not hand it back to the OS), not leaked.",
                l.direct.len()
            );
            for n in &l.notes {
                let _ = writeln!(m, "- {n}");
            }
        }

        if !self.notes.is_empty() {
            let _ = writeln!(m, "\n### Notes on `{}`\n", p.name);
            for n in &self.notes {
                let _ = writeln!(m, "- {n}");
            }
        }
        m
    }

    /// The raw figures, for `docs/bench-<profile>.json`.
    fn raw(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "tag": r.tag,
                    "what": r.what,
                    "bytes_per_sec": r.samples,
                    "skipped": r.skip,
                })
            })
            .collect();
        serde_json::json!({
            "link_names": self.link_names,
            "alone_bytes_per_sec": self.alone,
            "rows": rows,
            "booster_splits": self.booster_splits,
            "get_splits": self.get_splits,
            "aria_splits": self.aria_splits,
            "mptcp_splits": self.mptcp_splits,
            "pinned_source": self.pinned_source,
            "pinned_via_peer_and_direct_bytes_per_sec": self.pinned,
            "failover": self.failover.as_ref().ok().map(Failover::json),
            "bond_failover": self.bond_failover.as_ref().ok().map(Failover::json),
            "aggligator_failover": self.agg_failover.as_ref().ok().map(Failover::json),
            "bond_splits": self.bond_splits,
            "redundant": self.redundant.as_ref().ok().map(|r| serde_json::json!({
                "round_trips": r.n,
                "bytes": r.bytes,
                "best_path": r.best,
                "bond_ms": r.bond_ms,
                "direct_ms": r.direct.iter().map(|(n, lossy, ms)| serde_json::json!({
                    "uplink": n, "lossy": lossy, "ms": ms,
                })).collect::<Vec<_>>(),
                "bond_tx_bytes_per_uplink": r.tx_split,
            })),
            "loopback": self.loopback.as_ref().ok().map(|l| serde_json::json!({
                "direct_bytes_per_sec": l.direct,
                "proxied_bytes_per_sec": l.proxied,
                "fast_socks5_bytes_per_sec": l.anchor,
                "connect_us_direct_proxied": l.latency,
                "connect_us_direct_fast_socks5": l.anchor_latency,
                "idle_n": l.idle_n,
                "rss_kib": [l.rss_before_kib, l.rss_after_kib, l.rss_closed_kib, l.rss_reopened_kib],
            })),
        })
    }

    /// Writes `docs/bench-<profile>.json` (this run), the plot, and regenerates the markdown
    /// from every profile's JSON next to it (other profiles' sections are kept as they were).
    pub fn write(&self, md: &Path, svg: &Path, samples: &[(f64, Vec<u64>)]) -> Result<()> {
        let dir = md
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let svg_name = svg
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let json = serde_json::json!({
            "profile": self.profile.name,
            "date": self.date,
            "command": self.command,
            "runs": self.runs,
            "quick": self.quick,
            "elapsed_secs": self.elapsed_secs,
            "headlines": self.headlines(),
            "markdown": self.section(&svg_name),
            "raw": self.raw(),
        });
        let jpath = dir.join(format!("bench-{}.json", self.profile.name));
        std::fs::write(&jpath, serde_json::to_string_pretty(&json)? + "\n")?;
        std::fs::write(md, assemble(dir))?;
        if !samples.is_empty() {
            let series: Vec<plot::Series> = self
                .link_names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let rate = self
                        .profile
                        .links()
                        .find(|(node, l)| l.name == n || format!("{}/{}", node.name, l.name) == *n)
                        .map(|(_, l)| l.rate_bps / 1_000_000)
                        .unwrap_or(0);
                    plot::Series {
                        label: format!("{n} ({rate} Mbit/s)"),
                        points: plot::rates_mbit(&samples.iter().map(|(t, v)| (*t, v[i])).collect::<Vec<_>>()),
                    }
                })
                .collect();
            plot::line_chart_svg(
                svg,
                &format!(
                    "booster on `{}`: {} parallel {} MB downloads, receive rate per uplink",
                    self.profile.name, self.booster_parallel, self.booster_file_mb
                ),
                "Mbit/s",
                &series,
            )?;
        }
        Ok(())
    }
}

/// The redundant-mode table: (what, p50, p99, max) in ms.
fn redundant_lines(r: &super::bond::Redundant) -> Vec<[String; 4]> {
    use super::loopback::percentile as pc;
    let ms = |v: &[f64], p: f64| format!("{:.1} ms", pc(v, p));
    let mut out = vec![[
        format!("**through the bond, redundant mode** ({} round trips)", r.bond_ms.len()),
        format!("**{}**", ms(&r.bond_ms, 50.0)),
        format!("**{}**", ms(&r.bond_ms, 99.0)),
        ms(&r.bond_ms, 100.0),
    ]];
    for (name, lossy, v) in &r.direct {
        let mut what = format!("`{name}` alone, directly");
        if *lossy {
            what.push_str(" (lossy)");
        }
        if *name == r.best {
            what.push_str(" — the best path");
        }
        out.push([what, ms(v, 50.0), ms(v, 99.0), ms(v, 100.0)]);
    }
    out
}

/// `docs/benchmarks.md` from every `bench-<profile>.json` in `dir`, in profile order.
pub fn assemble(dir: &Path) -> String {
    let sections: Vec<serde_json::Value> = crate::profile::PROFILE_NAMES
        .iter()
        .filter_map(|p| std::fs::read_to_string(dir.join(format!("bench-{p}.json"))).ok())
        .filter_map(|s| serde_json::from_str(&s).ok())
        .collect();
    let mut m = String::new();
    let _ = writeln!(m, "# Benchmarks\n");
    let _ = writeln!(
        m,
        "Written by `lab bench` (crates/lab/src/bench.rs) from real runs, one section per lab \
         profile; every figure in a section comes from that profile's latest run (its date and \
         command are in the section). `lab bench PROFILE` regenerates only its own section, from \
         `docs/bench-PROFILE.json`, which also holds the raw figures; the other sections are \
         rebuilt unchanged from theirs. Re-run with:\n"
    );
    let _ = writeln!(m, "```sh\ncargo build --release -p booster -p booster-lab");
    let _ = writeln!(
        m,
        "cargo run -p booster-lab --release -- bench home     # also measures the proxy on loopback"
    );
    let _ = writeln!(m, "cargo run -p booster-lab --release -- bench peers");
    let _ = writeln!(m, "cargo run -p booster-lab --release -- bench skewed");
    let _ = writeln!(
        m,
        "cargo run -p booster-lab --release -- bench lossy    # redundant mode with a 2%-loss path\n```\n"
    );
    let _ = writeln!(
        m,
        "The aggligator anchor runs when `agg-tunnel` is on PATH: `cargo install aggligator-util \
         --version 0.18.12 --locked` (later releases need a newer rustc).\n"
    );
    let _ = writeln!(m, "## Against the targets\n");
    let _ = writeln!(m, "| profile | what | result | target |\n|---|---|---|---|");
    for s in &sections {
        let prof = s["profile"].as_str().unwrap_or("?");
        for h in s["headlines"].as_array().into_iter().flatten() {
            let cell = |i: usize| h.get(i).and_then(|c| c.as_str()).unwrap_or("").to_owned();
            let _ = writeln!(m, "| `{prof}` | {} | {} | {} |", cell(0), cell(1), cell(2));
        }
    }
    let _ = writeln!(m);
    for s in &sections {
        if let Some(md) = s["markdown"].as_str() {
            let _ = writeln!(m, "{}", md.trim_end());
            let _ = writeln!(m);
        }
    }
    let _ = writeln!(m, "## Anchors (for reference)\n");
    let _ = writeln!(
        m,
        "Measured earlier on the same kind of lab (from `shared/anchors.md`, not re-measured \
         except where a table above has a row for them):\n"
    );
    let _ = writeln!(m, "{ANCHORS}");
    m
}

/// The reference figures of `shared/anchors.md`.
const ANCHORS: &str = "\
| what | result | share of link sum |
|---|---|---|
| each uplink alone, all at once (the link sum) | 0.47 + 2.30 + 2.32 = 5.09 MB/s | 100% |
| best single uplink | 2.30 MB/s | 45% |
| aria2c 1.36 `--multiple-interface`, `-x16 -s16 -k1M`, one 50 MB download | 3.1–3.3 MB/s | 61–64% |
| kernel MPTCP (`mptcpize` curl ↔ nginx), one stream | 4.75–4.90 MB/s | 93–96% |
| aggligator 0.18 `agg-tunnel`, one stream | 4.32–4.41 MB/s | 85–87% |
| original booster (Go 0.5.4) on `peers`: one download | 2.2 MB/s | 44% |
| original booster on `peers`: 12 parallel 10 MB downloads | 1.9 MB/s | 38% |

- Failover, one 4G uplink blackholed 10 s in a 50 MB single stream: MPTCP 18.4 s, aggligator \
18.2 s, ideal about 14.4 s.
- Loopback, curl of 1 GB from nginx: direct 2.5–3.0 GB/s; through microsocks 0.25 GB/s (~10%). \
Published: fast-socks5 ~1.6 GiB/s and ~90 µs added connect latency at p50.
- **Targets:** parallel connections ≥ 95% of the link sum; proxy data path ≥ 90% of direct and \
≤ 100 µs added connect latency at p50; 10,000 connections with bounded memory.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn integer_ceiling_of_the_home_profile() {
        // 0.5 + 2.5 + 2.5 MB/s, 12 × 10 MB: 1/5/6 (or 0/6/6) finishes in 24 s → 5.0 MB/s (91%).
        let (rate, split) = integer_ceiling(&[0.5e6, 2.5e6, 2.5e6], 12, 10e6);
        assert!((rate - 5.0e6).abs() < 1.0, "{rate}");
        assert_eq!(split.iter().sum::<usize>(), 12);
        // Slightly unequal 4G links: only 1/5/6 reaches the best makespan.
        let (_, split) = integer_ceiling(&[0.50e6, 2.37e6, 2.39e6], 12, 10e6);
        assert_eq!(split, [1, 5, 6]);
    }

    #[test]
    fn the_markdown_keeps_every_profiles_section() {
        let dir = std::env::temp_dir().join(format!("bt-bench-assemble-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (p, text) in [("skewed", "## `skewed`: S\n"), ("home", "## `home`: H\n")] {
            let j = serde_json::json!({
                "profile": p,
                "headlines": [["what", format!("{p} result"), "target"]],
                "markdown": text,
            });
            std::fs::write(dir.join(format!("bench-{p}.json")), j.to_string()).unwrap();
        }
        std::fs::write(dir.join("bench-lossy.json"), "not json").unwrap();
        let m = assemble(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        let (h, s) = (m.find("## `home`").unwrap(), m.find("## `skewed`").unwrap());
        assert!(h < s, "profile order: home before skewed\n{m}");
        assert!(m.contains("| `home` | what | home result | target |"), "{m}");
        assert!(m.contains("## Anchors"));
    }
}

//! The balancer: picks the source for each new connection from live load, health, policies,
//! tiers and caps, and retries on the next source when a connect fails, before the client is
//! answered.
//!
//! The default scoring ([`ExpectedCompletion`]) estimates when a new connection would finish a
//! typical transfer on each source: its RTT plus its share of the source's capacity, counting
//! the connections already open *and* those being dialled, so a burst of simultaneous
//! connections spreads in proportion to capacity from the first instant.

use crate::{
    config::Tier,
    dial::{dial, DialError, Metered},
    policy::Verdict,
    source::{ConnectingGuard, Source},
    state::Node,
    target::Target,
};
use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

/// Scores a source for a new connection; lower is better. A small trait so tests can script it.
pub trait Scorer: Send + Sync {
    fn cost(&self, source: &Source) -> f64;
}

/// Expected time for a new connection to move `typical_bytes`:
/// `rtt + typical_bytes × (open + connecting + others + 1) / capacity`, where `others` are
/// connections other users have open through a peer's uplink (as the peer reports).
pub struct ExpectedCompletion {
    pub typical_bytes: f64,
}

/// Bytes a "typical" connection moves. Large enough that capacity, not RTT, decides for bulk
/// traffic; RTT still breaks ties between equal links and wins for idle ones.
pub const TYPICAL_BYTES: f64 = 1_000_000.0;
/// RTT assumed before one is measured.
const UNKNOWN_RTT: Duration = Duration::from_millis(100);
/// Above this utilization a source counts as saturated, and the next tier may be used.
const SATURATED: f64 = 0.9;

impl Default for ExpectedCompletion {
    fn default() -> Self {
        ExpectedCompletion {
            typical_bytes: TYPICAL_BYTES,
        }
    }
}

impl Scorer for ExpectedCompletion {
    fn cost(&self, s: &Source) -> f64 {
        let load = (s.open.load(Relaxed) + s.connecting.load(Relaxed) + s.remote_others() + 1) as f64;
        let rtt = s.rtt().unwrap_or(UNKNOWN_RTT).as_secs_f64();
        rtt + self.typical_bytes * load / s.capacity().max(1.0)
    }
}

fn effective_tier(s: &Source) -> Tier {
    if s.over_cap() {
        Tier::Backup
    } else {
        s.tier
    }
}

/// Orders the sources that may carry `target`, best first. Lower tiers come after the tiers in
/// use (used when every source above is down, saturated or fails to connect), and sources a
/// policy says to avoid come last.
pub fn rank(node: &Node, target: &Target, scorer: &dyn Scorer, now: Instant) -> Result<Vec<Arc<Source>>, DialError> {
    let policies = node.policies();
    let name = target.domain();
    if policies.refused(name, target.ip()) {
        return Err(DialError::Policy);
    }
    let mut cands: Vec<(Arc<Source>, Verdict, Tier, f64)> = Vec::new();
    for s in node.sources() {
        if !s.usable(now) {
            continue;
        }
        let v = policies.verdict(&s.name, name, target.ip());
        if v == Verdict::Deny {
            continue;
        }
        let cost = scorer.cost(&s);
        cands.push((s.clone(), v, effective_tier(&s), cost));
    }
    if cands.is_empty() {
        return Err(DialError::NoSource);
    }
    // The highest tier with an allowed, unsaturated source is the active tier; every source at
    // or above it shares the load.
    let active = [Tier::Primary, Tier::Secondary, Tier::Backup]
        .into_iter()
        .find(|t| {
            cands
                .iter()
                .any(|(s, v, tier, _)| tier == t && *v == Verdict::Allow && s.utilization() < SATURATED)
        })
        .unwrap_or(Tier::Backup);
    cands.sort_by(|a, b| {
        let key = |c: &(Arc<Source>, Verdict, Tier, f64)| (c.1, c.2.max(active));
        key(a).cmp(&key(b)).then(a.3.total_cmp(&b.3))
    });
    let mut ranked: Vec<Arc<Source>> = cands.into_iter().map(|c| c.0).collect();
    // Stickiness: a destination under a sticky rule keeps the source it had, while usable.
    if policies.sticky(name, target.ip()).is_some() {
        if let Some(stuck) = node.sticky_source(&target.host_str(), now) {
            if let Some(pos) = ranked.iter().position(|s| s.name == stuck) {
                let s = ranked.remove(pos);
                ranked.insert(0, s);
            }
        }
    }
    Ok(ranked)
}

/// Connects to `target` through the best source, trying the next ones (up to
/// `connect_attempts`) when a connect fails. Returns the connection or the most informative
/// error of all attempts.
pub async fn connect(node: &Node, target: &Target, scorer: &dyn Scorer) -> Result<Metered, DialError> {
    connect_pinned(node, target, scorer, None).await
}

/// Like [`connect`], but when `pin` names a source, only that source is tried (policies still
/// apply). `booster get --node` pins each range request to one source this way.
pub async fn connect_pinned(
    node: &Node,
    target: &Target,
    scorer: &dyn Scorer,
    pin: Option<&str>,
) -> Result<Metered, DialError> {
    let started = Instant::now();
    let result = match bond_mode(node, target, pin) {
        Some((bonds, mode)) => {
            if node.policies().refused(target.domain(), target.ip()) {
                Err(DialError::Policy)
            } else {
                crate::bond::connect(node, bonds, target, mode).await
            }
        }
        None => try_sources(node, target, scorer, pin).await,
    };
    node.metrics.observe_connect(started.elapsed(), result.is_ok());
    result
}

/// The bond and mode for `target` when a bond rule selects it. A pinned source means "this
/// source only", never the bond.
fn bond_mode<'a>(
    node: &'a Node,
    target: &Target,
    pin: Option<&str>,
) -> Option<(&'a crate::bond::Bonds, proto::bond::Mode)> {
    let bonds = node.bonds.as_ref().filter(|_| pin.is_none())?;
    bonds.mode_for(target).map(|mode| (bonds, mode))
}

/// Dials the ranked sources in turn (see [`connect_pinned`]).
async fn try_sources(
    node: &Node,
    target: &Target,
    scorer: &dyn Scorer,
    pin: Option<&str>,
) -> Result<Metered, DialError> {
    let mut ranked = rank(node, target, scorer, Instant::now())?;
    if let Some(pin) = pin {
        ranked.retain(|s| s.name == pin);
        if ranked.is_empty() {
            return Err(DialError::NoSource);
        }
    }
    let policies = node.policies();
    let name = target.domain().map(str::to_owned);
    let mut best: Option<DialError> = None;
    for source in ranked.iter().take(node.config.connect_attempts) {
        let attempt = {
            let _connecting = ConnectingGuard::new(source);
            // Address rules decide again once the name resolved.
            dial(node, source, target, &node.dial_opts, |ip| {
                policies.permits(&source.name, name.as_deref(), ip)
            })
            .await
        };
        match attempt {
            Ok(conn) => {
                source.record_success(Some(conn.connect_time));
                if let Some(ttl) = policies.sticky(name.as_deref(), target.ip()) {
                    let ttl = ttl.unwrap_or(node.config.sticky_ttl);
                    node.stick(target.host_str(), source.name.clone(), Instant::now() + ttl);
                }
                return Ok(conn);
            }
            Err(e) => {
                if e.source_fault() {
                    source.record_failure(Instant::now());
                }
                crate::logs::throttled!(info, crate::logs::DIALS, source = %source.name, %target, error = %e, "connect failed");
                if best.as_ref().is_none_or(|b| e.rank() > b.rank()) {
                    best = Some(e);
                }
            }
        }
    }
    Err(best.unwrap_or(DialError::NoSource))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Config, FileConfig, Overrides},
        policy::{Policies, PolicyKind, PolicySpec},
        source::SourceKind,
    };

    fn node() -> Node {
        let cfg = Config::build(
            FileConfig::default(),
            Overrides {
                probe_target: Some("none".into()),
                ..Default::default()
            },
        )
        .unwrap();
        Node::new(cfg, None).unwrap()
    }

    fn add(node: &Node, name: &str, tier: Tier, mbit: f64) -> Arc<Source> {
        node.add_source(Source::new(
            name.into(),
            SourceKind::Iface { name: name.into() },
            tier,
            None,
            Some(mbit * 1e6 / 8.0),
        ))
    }

    /// Simulates a burst of `n` simultaneous connections: each picks the head of the ranking
    /// and is counted as connecting before the next one is ranked.
    fn burst(node: &Node, n: usize) -> Vec<String> {
        let target = Target::new("10.99.0.1", 80);
        let mut guards = Vec::new();
        let mut picks = Vec::new();
        for _ in 0..n {
            let ranked = rank(node, &target, &ExpectedCompletion::default(), Instant::now()).unwrap();
            picks.push(ranked[0].name.clone());
            guards.push(ConnectingGuard::new(&ranked[0]));
        }
        picks
    }

    #[test]
    fn a_cold_burst_spreads_in_proportion_to_capacity() {
        let n = node();
        add(&n, "adsl", Tier::Primary, 4.0);
        add(&n, "4g-a", Tier::Primary, 20.0);
        add(&n, "4g-b", Tier::Primary, 20.0);
        let picks = burst(&n, 11);
        let count = |name: &str| picks.iter().filter(|p| *p == name).count();
        assert_eq!(count("adsl"), 1, "{picks:?}");
        assert_eq!(count("4g-a"), 5, "{picks:?}");
        assert_eq!(count("4g-b"), 5, "{picks:?}");
    }

    #[test]
    fn backup_is_used_only_when_the_others_are_down() {
        let n = node();
        let eth = add(&n, "eth0", Tier::Primary, 20.0);
        add(&n, "wwan0", Tier::Backup, 100.0);
        let target = Target::new("10.99.0.1", 80);
        let ranked = rank(&n, &target, &ExpectedCompletion::default(), Instant::now()).unwrap();
        assert_eq!(ranked[0].name, "eth0", "a faster backup still waits");
        assert_eq!(ranked.len(), 2, "but stays in the list for retry");
        eth.set_down(true);
        let ranked = rank(&n, &target, &ExpectedCompletion::default(), Instant::now()).unwrap();
        assert_eq!(ranked[0].name, "wwan0");
    }

    #[test]
    fn over_cap_uplinks_become_backup() {
        let n = node();
        add(&n, "eth0", Tier::Primary, 4.0);
        let capped = n.add_source(Source::new(
            "wwan0".into(),
            SourceKind::Iface { name: "wwan0".into() },
            Tier::Primary,
            Some(100),
            Some(20e6 / 8.0),
        ));
        let target = Target::new("10.99.0.1", 80);
        let ranked = rank(&n, &target, &ExpectedCompletion::default(), Instant::now()).unwrap();
        assert_eq!(ranked[0].name, "wwan0");
        capped.rx.store(200, Relaxed);
        let ranked = rank(&n, &target, &ExpectedCompletion::default(), Instant::now()).unwrap();
        assert_eq!(ranked[0].name, "eth0");
    }

    #[test]
    fn policies_filter_and_order() {
        let n = node();
        add(&n, "eth0", Tier::Primary, 4.0);
        add(&n, "wwan0", Tier::Primary, 20.0);
        n.set_policies(
            Policies::new(&[
                PolicySpec {
                    kind: PolicyKind::Avoid,
                    uplink: Some("wwan0".into()),
                    hosts: vec!["video.example".into()],
                    ttl: None,
                },
                PolicySpec {
                    kind: PolicyKind::Block,
                    uplink: None,
                    hosts: vec!["ads.example".into()],
                    ttl: None,
                },
            ])
            .unwrap(),
        );
        let s = ExpectedCompletion::default();
        let ranked = rank(&n, &Target::new("video.example", 443), &s, Instant::now()).unwrap();
        assert_eq!(
            ranked.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["eth0", "wwan0"]
        );
        let ranked = rank(&n, &Target::new("news.example", 443), &s, Instant::now()).unwrap();
        assert_eq!(ranked[0].name, "wwan0");
        assert!(matches!(
            rank(&n, &Target::new("ads.example", 443), &s, Instant::now()),
            Err(DialError::Policy)
        ));
    }

    #[test]
    fn sticky_destinations_keep_their_source() {
        let n = node();
        add(&n, "eth0", Tier::Primary, 20.0);
        add(&n, "wwan0", Tier::Primary, 20.0);
        n.set_policies(
            Policies::new(&[PolicySpec {
                kind: PolicyKind::Sticky,
                uplink: None,
                hosts: vec!["bank.example".into()],
                ttl: None,
            }])
            .unwrap(),
        );
        let target = Target::new("bank.example", 443);
        let s = ExpectedCompletion::default();
        let first = rank(&n, &target, &s, Instant::now()).unwrap()[0].clone();
        n.stick(
            target.host_str(),
            first.name.clone(),
            Instant::now() + Duration::from_secs(60),
        );
        // Load the stuck source so that, without stickiness, the other would win.
        first.open.store(50, Relaxed);
        assert_eq!(rank(&n, &target, &s, Instant::now()).unwrap()[0].name, first.name);
        let other = rank(&n, &Target::new("news.example", 443), &s, Instant::now()).unwrap();
        assert_ne!(other[0].name, first.name);
    }
}

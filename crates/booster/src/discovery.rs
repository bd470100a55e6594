//! Uplinks: which local interfaces are sources, kept current at runtime.
//!
//! With named uplinks (`--iface` or `[[uplink]]`), exactly those are used: each is up when its
//! interface is up with an address, down otherwise; an unnamed interface is never used. With
//! none named, the node discovers them: interfaces that are up, have an address and a default
//! route, and answer a reachability probe through them. Either way the list is refreshed every
//! `discover_interval`, so a phone tethered by USB or a lost Wi-Fi shows up within seconds.

use crate::{
    config::{Tier, UplinkConfig},
    dial::dial,
    source::{Source, SourceKind},
    state::Node,
    sys,
    target::Target,
};
use std::{collections::HashSet, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// A probe that has not connected within this long failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn iface_usable(i: &sys::Interface) -> bool {
    i.up && !i.addrs.is_empty() && sys::operstate(&i.name).as_deref() != Some("down")
}

/// Connects to the probe target through `source`; records the outcome on the source.
pub async fn probe(node: &Node, source: &Arc<Source>) -> bool {
    let Some(target) = node.config.probe_target.as_deref() else {
        return true;
    };
    let Ok(target) = Target::parse_host_port(target) else {
        return false;
    };
    let opts = crate::dial::DialOpts {
        connect_timeout: PROBE_TIMEOUT,
        ..node.dial_opts.clone()
    };
    match dial(node, source, &target, &opts, |_| true).await {
        Ok(conn) => {
            source.record_success(Some(conn.connect_time));
            true
        }
        Err(e) => {
            tracing::debug!(source = %source.name, error = %e, "probe failed");
            source.record_failure(std::time::Instant::now());
            false
        }
    }
}

fn iface_source(u: &UplinkConfig) -> Source {
    Source::new(
        u.name.clone(),
        SourceKind::Iface { name: u.name.clone() },
        u.tier,
        u.cap.map(|c| c.0),
        u.capacity.map(|r| r.bytes_per_sec()),
    )
}

/// One pass: adds, revives, marks down or retires local uplink sources.
pub async fn refresh(node: &Arc<Node>) {
    let ifaces = match sys::interfaces() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list interfaces");
            return;
        }
    };
    let named = &node.config.uplinks;
    if !named.is_empty() {
        let mut new = Vec::new();
        for u in named {
            let present = ifaces.iter().find(|i| i.name == u.name);
            let usable = present.is_some_and(iface_usable);
            match (node.source(&u.name), usable) {
                (None, true) => {
                    let s = node.add_source(iface_source(u));
                    tracing::info!(uplink = %u.name, "uplink up");
                    new.push(s);
                }
                (None, false) => {
                    // Listed so status shows it, but down until the interface appears.
                    let s = node.add_source(iface_source(u));
                    s.set_down(true);
                    tracing::warn!(uplink = %u.name, "named uplink is missing or down");
                }
                (Some(s), up) => {
                    let was_down = s.health() == crate::source::Health::Down;
                    s.set_down(!up);
                    if was_down && up {
                        tracing::info!(uplink = %u.name, "uplink back up");
                    } else if !was_down && !up {
                        tracing::warn!(uplink = %u.name, "uplink down");
                    }
                }
            }
        }
        // Probe the new ones together: one slow uplink must not delay the others.
        futures::future::join_all(new.iter().map(|s| probe(node, s))).await;
        return;
    }
    if !node.config.discover {
        return;
    }
    // Discovery.
    let candidates: Vec<&sys::Interface> = ifaces
        .iter()
        .filter(|i| !i.loopback && i.default_route && iface_usable(i))
        .collect();
    let names: HashSet<&str> = candidates.iter().map(|i| i.name.as_str()).collect();
    for s in node.sources() {
        if matches!(s.kind, SourceKind::Iface { .. })
            && !names.contains(s.name.as_str())
            && !s.retired.load(std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(uplink = %s.name, "uplink gone");
            node.retire_source(&s.name);
        }
    }
    let fresh: Vec<Arc<Source>> = candidates
        .into_iter()
        .filter(|i| {
            node.source(&i.name)
                .is_none_or(|s| s.retired.load(std::sync::atomic::Ordering::Relaxed))
        })
        .map(|i| {
            let cfg = UplinkConfig {
                name: i.name.clone(),
                tier: Tier::Primary,
                cap: None,
                lend_cap: None,
                capacity: None,
            };
            Arc::new(iface_source(&cfg))
        })
        .collect();
    // Probe every candidate at once; only those that answer become sources.
    let answered = futures::future::join_all(fresh.iter().map(|c| probe(node, c))).await;
    for (candidate, ok) in fresh.iter().zip(answered) {
        if ok {
            let cfg = UplinkConfig {
                name: candidate.name.clone(),
                tier: Tier::Primary,
                cap: None,
                lend_cap: None,
                capacity: None,
            };
            let s = node.add_source(iface_source(&cfg));
            s.record_success(candidate.rtt());
            tracing::info!(uplink = %candidate.name, "uplink discovered");
        }
    }
}

/// Refreshes uplinks every `discover_interval` and probes every source every `probe_interval`.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let mut discover = tokio::time::interval(node.config.discover_interval);
    let mut probes = tokio::time::interval(node.config.probe_interval);
    discover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = discover.tick() => refresh(&node).await,
            _ = probes.tick() => {
                if node.config.probe_target.is_some() {
                    let all: Vec<_> = node.sources().into_iter().filter(|s| s.health() != crate::source::Health::Down && !s.retired.load(std::sync::atomic::Ordering::Relaxed)).collect();
                    futures::future::join_all(all.iter().map(|s| probe(&node, s))).await;
                }
            }
        }
    }
}

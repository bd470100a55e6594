//! The node's one live state: sources, policies, stickiness and connection counts. The
//! balancer, the API, the usage store and the status views all read this, and none of them
//! keeps a second copy.

use crate::{
    config::Config,
    dial::DialOpts,
    dns::Resolver,
    policy::Policies,
    source::{Source, SourceView},
    store::Store,
};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

/// How often throughput and capacity estimates are refreshed.
pub const TICK: Duration = Duration::from_millis(250);
/// Bounds the stickiness table: when full, expired entries go, and if none had expired the
/// table is cleared (stickiness is a preference, losing it is harmless).
const MAX_STICKY: usize = 10_000;
/// Accept times remembered to recognise a burst of new connections.
pub const ACCEPT_HISTORY: usize = 16;

/// Running totals of the work a node did for others (see [`Node::activity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub clients: u64,
    pub bytes: u64,
}

/// A client connection the node took on: gives back its slot and its place in `clients_open`
/// when dropped.
pub struct Admitted {
    node: Arc<Node>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.node.clients_open.fetch_sub(1, Relaxed);
    }
}

pub struct Node {
    pub config: Config,
    pub dns: Resolver,
    pub dial_opts: DialOpts,
    pub store: Option<Store>,
    pub started: Instant,
    /// Client connections open on the proxy, and accepted since start.
    pub clients_open: AtomicU64,
    pub clients_total: AtomicU64,
    /// Client connections refused because the node was at `max_connections`.
    pub clients_refused: AtomicU64,
    /// One permit per connection the node holds for someone else: proxy and gateway clients
    /// and peers' channels, `max_connections` in all (which `booster start` fits to the
    /// open-file limit), so no port can take the descriptors another one needs.
    slots: Arc<tokio::sync::Semaphore>,
    sources: RwLock<Vec<Arc<Source>>>,
    policies: RwLock<Arc<Policies>>,
    sticky: Mutex<HashMap<String, (String, Instant)>>,
    /// Keys for the peer channel, when a network secret is set.
    pub peer_keys: Option<crate::peer::Keys>,
    /// Peers this node borrows from, by address.
    pub peers: Mutex<HashMap<String, crate::peer::PeerState>>,
    /// Bytes lent to peers per local uplink (sources named `lent:<uplink>`, never balanced).
    pub lent: Mutex<HashMap<String, Arc<Source>>>,
    /// Background tasks of the node (peer links, stream pumps), waited for on shutdown.
    pub tasks: tokio_util::task::TaskTracker,
    /// Cancelled when the node stops.
    pub stop: tokio_util::sync::CancellationToken,
    /// LAN discovery, when on.
    pub mdns: Mutex<Option<crate::mdns::Mdns>>,
    /// Paces everything this node lends to `[lend] max_rate`.
    pub lend_pacer: crate::lend::Pacer,
    /// When the last client connections were accepted (newest last), to see bursts.
    accepts: Mutex<std::collections::VecDeque<Instant>>,
    /// Relays and bond rules, when a relay is configured.
    pub bonds: Option<crate::bond::Bonds>,
    /// Downloads being split over every source right now (see [`crate::split::MAX_SPLITS`]).
    pub splits_active: std::sync::atomic::AtomicU64,
    /// Downloads split since the node started.
    pub splits_total: std::sync::atomic::AtomicU64,
    /// Tail steals since the node started, by outcome (see [`crate::steal`]).
    pub steals: crate::steal::Counts,
    /// Client connections open on the proxy port (see [`crate::conns`]).
    pub conns: crate::conns::Conns,
    /// Distributions for `/metrics` (everything else there is read from this state).
    pub metrics: crate::metrics::NodeMetrics,
    /// Serializes runtime policy edits (read, persist, swap), so two cannot lose one another.
    policy_edit: Mutex<()>,
}

impl Node {
    pub fn new(config: Config, store: Option<Store>) -> Result<Node, String> {
        let policies = Policies::new(&config.policies)?;
        let dial_opts = DialOpts {
            connect_timeout: config.connect_timeout,
            ..DialOpts::default()
        };
        Ok(Node {
            dns: Resolver::new(config.dns_servers.clone()),
            dial_opts,
            store,
            started: Instant::now(),
            clients_open: AtomicU64::new(0),
            clients_total: AtomicU64::new(0),
            clients_refused: AtomicU64::new(0),
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
            sources: RwLock::new(Vec::new()),
            policies: RwLock::new(Arc::new(policies)),
            sticky: Mutex::new(HashMap::new()),
            peer_keys: None,
            peers: Mutex::new(HashMap::new()),
            lent: Mutex::new(HashMap::new()),
            tasks: tokio_util::task::TaskTracker::new(),
            stop: tokio_util::sync::CancellationToken::new(),
            mdns: Mutex::new(None),
            bonds: None,
            accepts: Mutex::new(std::collections::VecDeque::with_capacity(ACCEPT_HISTORY)),
            lend_pacer: crate::lend::Pacer::new(config.lend.max_rate),
            splits_active: std::sync::atomic::AtomicU64::new(0),
            splits_total: std::sync::atomic::AtomicU64::new(0),
            steals: Default::default(),
            conns: Default::default(),
            metrics: Default::default(),
            policy_edit: Mutex::new(()),
            config,
        })
    }

    pub fn sources(&self) -> Vec<Arc<Source>> {
        self.sources.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn source(&self, name: &str) -> Option<Arc<Source>> {
        self.sources().into_iter().find(|s| s.name == name)
    }

    /// Adds a source, or revives a retired one of the same name (keeping its counters).
    pub fn add_source(&self, source: Source) -> Arc<Source> {
        let mut all = self.sources.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = all.iter().find(|s| s.name == source.name) {
            existing.retired.store(false, std::sync::atomic::Ordering::Relaxed);
            return existing.clone();
        }
        let source = Arc::new(source);
        if let Some(store) = &self.store {
            store.load_into(&source);
        }
        all.push(source.clone());
        source
    }

    /// Takes a source out of the balancer. Its counters stay for status and usage accounting.
    pub fn retire_source(&self, name: &str) {
        if let Some(s) = self.source(name) {
            s.retired.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn policies(&self) -> Arc<Policies> {
        self.policies.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_policies(&self, p: Policies) {
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
    }

    /// Edits the policies: `edit` gets the rules in force and returns the new set (or an error,
    /// which changes nothing). Edits run one at a time; readers keep the old set until the swap.
    pub fn update_policies<E>(&self, edit: impl FnOnce(&Policies) -> Result<Policies, E>) -> Result<(), E> {
        let _one_at_a_time = self.policy_edit.lock().unwrap_or_else(|e| e.into_inner());
        let new = edit(&self.policies())?;
        self.set_policies(new);
        Ok(())
    }

    /// A slot for one more connection, or `None` at `max_connections`: the caller closes the
    /// connection, and the refusal is counted in `clients_refused` and logged sparingly.
    pub fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slot = self.slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.clients_refused.fetch_add(1, Relaxed);
            crate::logs::throttled!(
                warn,
                crate::logs::FULL,
                max = self.config.max_connections,
                "connection limit reached; refusing new connections"
            );
        }
        slot
    }

    /// What the node has done for others so far: clients taken on plus peers' streams through
    /// its uplinks, and bytes through any source (peers' uplinks and bond paths included) or
    /// lent. Reachability probes open connections on the node's own sources every few seconds,
    /// so those sources' connection counts are left out; probes move no payload.
    pub fn activity(&self) -> Activity {
        let bytes = |s: &Source| s.rx.load(Relaxed).wrapping_add(s.tx.load(Relaxed));
        let mut a = Activity {
            clients: self.clients_total.load(Relaxed),
            bytes: 0,
        };
        for s in self.lent.lock().unwrap_or_else(|e| e.into_inner()).values() {
            a.clients = a.clients.wrapping_add(s.conns_total.load(Relaxed));
            a.bytes = a.bytes.wrapping_add(bytes(s));
        }
        for s in self.sources() {
            a.bytes = a.bytes.wrapping_add(bytes(&s));
        }
        a
    }

    /// Takes on a client connection (proxy or gateway): its slot, and its place in the counts
    /// and in the burst history. `None` at the limit (see [`Node::slot`]).
    pub fn admit_client(self: &Arc<Node>) -> Option<Admitted> {
        let slot = self.slot()?;
        self.clients_open.fetch_add(1, Relaxed);
        self.clients_total.fetch_add(1, Relaxed);
        self.note_accept(Instant::now());
        Some(Admitted {
            node: self.clone(),
            _slot: slot,
        })
    }

    /// A client connection was accepted (proxy or gateway).
    fn note_accept(&self, now: Instant) {
        let mut accepts = self.accepts.lock().unwrap_or_else(|e| e.into_inner());
        if accepts.len() == ACCEPT_HISTORY {
            accepts.pop_front();
        }
        accepts.push_back(now);
    }

    /// Client connections accepted within `window` before `now` (at most [`ACCEPT_HISTORY`]).
    pub fn recent_accepts(&self, now: Instant, window: Duration) -> usize {
        let accepts = self.accepts.lock().unwrap_or_else(|e| e.into_inner());
        accepts
            .iter()
            .rev()
            .take_while(|t| now.saturating_duration_since(**t) <= window)
            .count()
    }

    /// The relays and their bond paths, for the API, events, monitor and dashboard. Schema:
    /// `[{"relay", "state", "paths": [{"source", "state", "rtt_ms", "loss", "rate_bps",
    /// "inflight", "tx_bytes", "rx_bytes"}], "streams", "redundant_bytes"}]` (docs/api.md).
    /// The relays and their bond paths (see [`crate::bond::relays_json`]).
    pub fn relays_json(&self) -> serde_json::Value {
        crate::bond::relays_json(self)
    }

    /// The source a destination is stuck to, if its window has not expired.
    pub fn sticky_source(&self, key: &str, now: Instant) -> Option<String> {
        let map = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).filter(|(_, until)| *until > now).map(|(s, _)| s.clone())
    }

    pub fn stick(&self, key: String, source: String, until: Instant) {
        let mut map = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_STICKY {
            let now = Instant::now();
            map.retain(|_, (_, u)| *u > now);
            if map.len() >= MAX_STICKY {
                map.clear();
            }
        }
        map.insert(key, (source, until));
    }

    /// Refreshes every source's throughput and capacity estimate.
    pub fn tick(&self, now: Instant) {
        for s in self.sources() {
            s.tick(now);
        }
    }

    pub fn views(&self) -> Vec<SourceView> {
        self.sources().iter().map(|s| s.view()).collect()
    }

    /// The counter of bytes lent through a local uplink (created on first use).
    pub fn lent(&self, uplink: &str) -> Arc<Source> {
        let mut map = self.lent.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(uplink.to_string())
            .or_insert_with(|| {
                let s = Arc::new(Source::new(
                    format!("lent:{uplink}"),
                    crate::source::SourceKind::Iface {
                        name: uplink.to_string(),
                    },
                    crate::config::Tier::Primary,
                    None,
                    None,
                ));
                if let Some(store) = &self.store {
                    store.load_into(&s);
                }
                s
            })
            .clone()
    }

    /// Every source whose usage is persisted: balanced sources and lending counters.
    pub fn counted_sources(&self) -> Vec<Arc<Source>> {
        let mut all = self.sources();
        all.extend(self.lent.lock().unwrap_or_else(|e| e.into_inner()).values().cloned());
        all
    }
}

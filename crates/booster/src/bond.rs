//! The node's side of the bond: which streams are bonded ([`Rule`]), which relay carries a
//! stream (route choice), and one path per (source, relay) kept up in the background.
//!
//! A bonded stream leaves the proxy like any other upstream connection (`dial::Metered`
//! around a [`BondStream`]), so SOCKS5, HTTP CONNECT and plain HTTP all bond without knowing.
//! The sans-IO core is `proto::bond`; this module and its children only move bytes and time.
//!
//! - [`link`]: the link on tokio (shared with `relay.rs`).
//! - [`path`]: paths: dialling, the handshake, and the frame pumps.
//! - [`stream`]: a bonded stream as `AsyncRead + AsyncWrite`.

pub mod link;
pub mod path;
pub mod stream;

use crate::{
    dial::{DialError, Metered, Upstream},
    policy::Pattern,
    source::{Source, SourceKind},
    state::Node,
    target::{Host, Target},
};
use link::{Handler, Shared};
use proto::bond::{Config, Mode, Role};
use proto::socks5::Address;
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};
pub use stream::BondStream;
use tokio_util::sync::CancellationToken;

/// Default relay port.
pub const DEFAULT_RELAY_PORT: u16 = 4886;
/// Ports that get redundant mode by default once a relay is named: SSH, RDP and VNC.
pub const DEFAULT_REDUNDANT: [&str; 3] = [":22", ":3389", ":5900"];
/// Streams wait this long for a path when a link has none, then reset (the relay keeps its
/// side as long).
pub const RESUME_WINDOW: Duration = Duration::from_secs(30);

/// Which TCP streams a rule selects: `all`, `HOST` (and names under it), `*.HOST`, `:PORT`,
/// or a CIDR / IP (matched against address targets; names resolve at the relay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    text: String,
    matcher: Matcher,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    All,
    Port(u16),
    Host(Pattern),
}

impl Rule {
    pub fn parse(s: &str) -> Result<Rule, String> {
        let s = s.trim();
        let matcher = if s.eq_ignore_ascii_case("all") {
            Matcher::All
        } else if let Some(port) = s.strip_prefix(':') {
            match port.parse::<u16>() {
                Ok(p) if p != 0 => Matcher::Port(p),
                _ => return Err(format!("bad port in rule `{s}` (expected :1..65535)")),
            }
        } else {
            Pattern::parse(s)
                .map(Matcher::Host)
                .map_err(|e| format!("bad rule `{s}`: {e} (expected all, HOST, :PORT or CIDR)"))?
        };
        Ok(Rule {
            text: s.to_owned(),
            matcher,
        })
    }

    pub fn matches(&self, target: &Target) -> bool {
        match &self.matcher {
            Matcher::All => true,
            Matcher::Port(p) => target.port == *p,
            Matcher::Host(pattern) => match &target.host {
                Host::Domain(name) => pattern.matches_name(name),
                Host::Ip(ip) => pattern.matches_ip(*ip),
            },
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A relay this node bonds through.
pub struct Relay {
    /// `host:port` as configured.
    pub addr: String,
    pub target: Target,
    /// Names this node's link at the relay; new at every start.
    pub link_id: [u8; proto::bond::frame::LINK_ID_LEN],
    pub shared: Arc<Shared>,
    /// Counts the bonded streams' client bytes and open streams (not a balancer source).
    pub source: Arc<Source>,
}

/// The node's bonds: its relays and the rules that pick bonded streams.
pub struct Bonds {
    pub relays: Vec<Arc<Relay>>,
    pub bond: Vec<Rule>,
    pub redundant: Vec<Rule>,
    /// UDP flows over the bond: where each flow's replies go.
    flows: Arc<Flows>,
}

/// Datagrams coming back on a UDP flow: (sender, payload).
pub type FlowReplies = tokio::sync::mpsc::Receiver<(Address, Vec<u8>)>;
type FlowRoute = tokio::sync::mpsc::Sender<(Address, Vec<u8>)>;

#[derive(Default)]
struct Flows {
    next: std::sync::atomic::AtomicU32,
    routes: std::sync::Mutex<HashMap<u32, FlowRoute>>,
}

/// Replies queued per flow before the oldest are dropped (UDP: late is as bad as lost).
const FLOW_QUEUE: usize = 256;

/// The UDP flows of one SOCKS5 association (one per mode); closed when dropped.
#[derive(Default)]
pub struct FlowSet {
    open: Vec<(Mode, u32, Arc<Flows>)>,
}

impl FlowSet {
    /// Sends one datagram over the bond, opening the association's flow for `mode` first if
    /// needed (`spawn` gets the flow's replies). Dropped silently when no relay has a path,
    /// as a congested UDP path would.
    pub fn send(
        &mut self,
        bonds: &Bonds,
        mode: Mode,
        target: Address,
        payload: &[u8],
        spawn: impl FnOnce(FlowReplies),
    ) {
        let flow = match self.open.iter().find(|(m, ..)| *m == mode) {
            Some((_, id, _)) => *id,
            None => {
                let id =
                    bonds.flows.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & !crate::relay::FLOW_REDUNDANT;
                let id = if mode == Mode::Redundant {
                    id | crate::relay::FLOW_REDUNDANT
                } else {
                    id
                };
                let (tx, rx) = tokio::sync::mpsc::channel(FLOW_QUEUE);
                bonds
                    .flows
                    .routes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, tx);
                self.open.push((mode, id, bonds.flows.clone()));
                spawn(rx);
                id
            }
        };
        if let Some(relay) = bonds.choose(mode) {
            relay
                .source
                .tx
                .fetch_add(payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
            relay.shared.send_datagram(flow, target, payload.to_vec(), mode);
        }
    }
}

impl Drop for FlowSet {
    fn drop(&mut self) {
        for (_, id, flows) in &self.open {
            flows.routes.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        }
    }
}

impl Bonds {
    /// `None` when no relay is configured.
    pub fn new(config: &crate::config::Config, stop: &CancellationToken) -> Option<Bonds> {
        if config.relays.is_empty() {
            return None;
        }
        let flows = Arc::new(Flows::default());
        let relays = config
            .relays
            .iter()
            .map(|addr| {
                let handler: Arc<dyn Handler> = Arc::new(NodeHandler { flows: flows.clone() });
                let shared = Shared::new(Role::Node, Config::default(), handler, stop.child_token());
                Arc::new(Relay {
                    addr: addr.clone(),
                    target: Target::parse_host_port(addr).unwrap_or_else(|_| Target::new(addr, DEFAULT_RELAY_PORT)),
                    link_id: rand::random(),
                    shared,
                    source: Arc::new(Source::new(
                        format!("bond:{addr}"),
                        SourceKind::Bond { relay: addr.clone() },
                        crate::config::Tier::Primary,
                        None,
                        None,
                    )),
                })
            })
            .collect();
        Some(Bonds {
            relays,
            bond: config.bond.clone(),
            redundant: config.redundant.clone(),
            flows,
        })
    }

    /// How `target` is carried: bonded, redundant, or (`None`) by connection-level balancing.
    pub fn mode_for(&self, target: &Target) -> Option<Mode> {
        if self.redundant.iter().any(|r| r.matches(target)) {
            Some(Mode::Redundant)
        } else if self.bond.iter().any(|r| r.matches(target)) {
            Some(Mode::Bandwidth)
        } else {
            None
        }
    }

    /// Route choice: the relay for a new stream. Latency streams take the relay with the
    /// lowest-RTT path; bandwidth streams the one whose paths add up to the most. Relays
    /// without a path are skipped, so a dead relay is routed around.
    pub fn choose(&self, mode: Mode) -> Option<Arc<Relay>> {
        let scored = self.relays.iter().filter_map(|relay| {
            let infos = relay.shared.view(|inner| {
                inner
                    .link
                    .path_ids()
                    .into_iter()
                    .filter_map(|id| inner.link.path_info(id))
                    .collect::<Vec<_>>()
            });
            if infos.is_empty() {
                return None;
            }
            let score = match mode {
                Mode::Redundant => -infos
                    .iter()
                    .filter_map(|p| p.rtt)
                    .min()
                    .unwrap_or(Duration::from_secs(10))
                    .as_secs_f64(),
                Mode::Bandwidth => infos.iter().map(|p| p.rate).sum(),
            };
            Some((relay, score))
        });
        scored.max_by(|a, b| a.1.total_cmp(&b.1)).map(|(r, _)| r.clone())
    }
}

/// The node never accepts streams from a relay; datagrams come back on UDP flows.
struct NodeHandler {
    flows: Arc<Flows>,
}

impl Handler for NodeHandler {
    fn opened(&self, _link: &Arc<Shared>, stream: u32, _mode: Mode, _target: Address) {
        // Unreachable in practice: a node's link refuses `Open` as a protocol error. (This
        // runs under the link's lock, so it must not call back into the link.)
        tracing::warn!(stream, "a relay tried to open a stream on a node; ignored");
    }

    fn datagram(&self, _link: &Arc<Shared>, flow: u32, from: Address, payload: Vec<u8>) {
        let route = self
            .flows
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&flow)
            .cloned();
        match route {
            Some(tx) => {
                let _ = tx.try_send((from, payload));
            }
            None => tracing::debug!(flow, "datagram for a closed UDP flow dropped"),
        }
    }
}

/// Starts keeping paths up: one manager per relay, which runs one path per usable source.
pub fn start(node: &Arc<Node>) {
    let Some(bonds) = &node.bonds else { return };
    for relay in &bonds.relays {
        node.tasks.spawn(manage(node.clone(), relay.clone()));
    }
}

/// Runs a path supervisor for every source the node has (local uplinks and peers'), adding
/// new sources as they appear; resets streams that waited too long without any path.
async fn manage(node: Arc<Node>, relay: Arc<Relay>) {
    let stop = node.stop.clone();
    let mut running: HashMap<String, CancellationToken> = HashMap::new();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => break,
        }
        let sources = node.sources();
        running.retain(|name, token| {
            let alive = sources.iter().any(|s| &s.name == name) && !token.is_cancelled();
            if !alive {
                token.cancel();
            }
            alive
        });
        for source in sources {
            if running.contains_key(&source.name) {
                continue;
            }
            let token = stop.child_token();
            running.insert(source.name.clone(), token.clone());
            let (node, relay) = (node.clone(), relay.clone());
            node.clone().tasks.spawn(async move {
                path::supervise(node, relay, source, token.clone()).await;
                token.cancel();
            });
        }
        let pathless = relay.shared.view(|inner| inner.pathless_since);
        if pathless.is_some_and(|t| t.elapsed() > RESUME_WINDOW)
            && relay.shared.view(|inner| inner.link.stream_count()) > 0
        {
            tracing::warn!(relay = %relay.addr, "no path to the relay for 30 s; resetting its streams");
            relay.shared.abort_all("no path to the relay for 30 s");
        }
    }
    relay.shared.stop.cancel();
}

/// Opens a bonded stream to `target` through the best relay. Waits up to the connect
/// timeout for a path if none is up yet.
pub async fn connect(node: &Node, bonds: &Bonds, target: &Target, mode: Mode) -> Result<Metered, DialError> {
    let started = Instant::now();
    let deadline = started + node.config.connect_timeout;
    let relay = loop {
        if let Some(relay) = bonds.choose(mode) {
            break relay;
        }
        if Instant::now() >= deadline {
            tracing::warn!(%target, "no path to any relay; the bonded stream fails");
            return Err(DialError::NetUnreachable);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let address = match &target.host {
        Host::Ip(ip) => Address::Ip(SocketAddr::new(*ip, target.port)),
        Host::Domain(name) => Address::Domain(name.clone(), target.port),
    };
    let (id, slot, answer) = relay.shared.open(address, mode);
    let stream = BondStream::new(relay.shared.clone(), id, slot);
    let budget = node.config.connect_timeout + path::HANDSHAKE_TIMEOUT;
    let bound = match tokio::time::timeout(budget, answer).await {
        Ok(Ok(Ok(bound))) => bound,
        Ok(Ok(Err((code, reason)))) => {
            tracing::debug!(%target, code, %reason, "the relay could not connect");
            return Err(DialError::from_reply(code, reason));
        }
        Ok(Err(_)) => return Err(DialError::NetUnreachable),
        Err(_) => return Err(DialError::Timeout),
    };
    let local_addr = match bound {
        Address::Ip(addr) => addr,
        Address::Domain(..) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    };
    let peer_addr = SocketAddr::new(target.ip().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), target.port);
    tracing::debug!(%target, relay = %relay.addr, stream = id, ?mode, "bonded stream open");
    Ok(Metered::new(
        Upstream::Bond(stream),
        relay.source.open_guard(),
        (local_addr, peer_addr),
        started.elapsed(),
        target,
    ))
}

/// The relays and their paths, for the API, the monitor and the dashboard.
pub fn relays_json(node: &Node) -> serde_json::Value {
    let Some(bonds) = &node.bonds else {
        return serde_json::json!([]);
    };
    let relays: Vec<serde_json::Value> = bonds
        .relays
        .iter()
        .map(|relay| {
            relay.shared.view(|inner| {
                let paths: Vec<serde_json::Value> = inner
                    .paths
                    .iter()
                    .filter_map(|(id, slot)| {
                        let info = inner.link.path_info(*id)?;
                        Some(serde_json::json!({
                            "id": id,
                            "source": slot.source,
                            "state": if info.stalled { "stalled" } else { "up" },
                            "rtt_ms": info.rtt.map(|d| d.as_secs_f64() * 1000.0),
                            "loss": info.loss,
                            "rate_bps": info.rate,
                            "inflight": info.unacked_bytes,
                            "tx_bytes": info.tx_bytes,
                            "rx_bytes": info.rx_bytes,
                            "up_secs": slot.since.elapsed().as_secs(),
                        }))
                    })
                    .collect();
                let state = if paths.is_empty() { "down" } else { "up" };
                serde_json::json!({
                    "relay": relay.addr,
                    "state": state,
                    "paths": paths,
                    "streams": inner.link.stream_count(),
                    "redundant_bytes": inner.link.redundant_bytes,
                    "bonded_rx_bytes": relay.source.rx.load(std::sync::atomic::Ordering::Relaxed),
                    "bonded_tx_bytes": relay.source.tx.load(std::sync::atomic::Ordering::Relaxed),
                })
            })
        })
        .collect();
    serde_json::json!(relays)
}

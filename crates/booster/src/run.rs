//! Running a node: bind the listeners, start the tasks (proxy, API, uplink discovery, the
//! estimator tick, the usage flusher), and shut down in order: stop accepting, drain open
//! connections up to `drain_timeout`, then flush usage.
//!
//! Used by `booster start`, by `booster demo` and by the integration tests (with port 0).

use crate::{
    api,
    balancer::{ExpectedCompletion, Scorer},
    config::Config,
    discovery,
    proxy::{self, Ctx},
    source::Source,
    state::{Node, TICK},
    store::{Store, FLUSH_EVERY},
};
use std::{net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {err}")]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        err: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Config(String),
}

/// How often the heap keeper looks: a node that did nothing for one whole interval is quiet.
const HEAP_CHECK: std::time::Duration = std::time::Duration::from_secs(5);
/// Free memory the allocator may keep before the keeper hands it back.
const HEAP_SLACK: u64 = 4 << 20;
/// Bytes an interval may move and still be quiet: bond keepalives and heartbeats, not traffic.
const QUIET_BYTES: u64 = 64 << 10;

/// After a burst of connections glibc keeps the freed memory for reuse, so the node's RSS stays
/// at its peak. A phone lending its uplink now and then would hold that for nothing: once the
/// node has been quiet for a whole [`HEAP_CHECK`] (no client open or new, no peer's stream
/// through it, under [`QUIET_BYTES`] moved: see [`Node::activity`]) and more than
/// [`HEAP_SLACK`] sits free, give it back, once per quiet spell. Busy nodes
/// are left alone: trimming takes the allocator's locks for a few milliseconds, so it runs on
/// the blocking pool. The trim is process-wide (a `demo` runs several nodes in one process).
async fn keep_heap_small(node: &Node, stop: &CancellationToken) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut every = tokio::time::interval(HEAP_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = node.activity();
    // Whether this quiet spell was trimmed already: a trim hands pages back, but glibc still
    // counts them as held, so the slack alone cannot tell.
    let mut trimmed = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let now = node.activity();
        let quiet = now.clients == last.clients
            && now.bytes.wrapping_sub(last.bytes) < QUIET_BYTES
            && node.clients_open.load(Relaxed) == 0;
        last = now;
        if !quiet {
            trimmed = false;
            continue;
        }
        if trimmed {
            continue;
        }
        trimmed = true;
        if let Some(h) = crate::sys::heap().filter(|h| h.held.saturating_sub(h.in_use) > HEAP_SLACK) {
            let _ = tokio::task::spawn_blocking(crate::sys::trim_heap).await;
            tracing::debug!(
                held = h.held,
                in_use = h.in_use,
                "quiet: free heap handed back to the OS"
            );
        }
    }
}

/// The node's static key for the peer channel, in its data dir.
pub const IDENTITY_FILE: &str = "identity.key";

/// Extra things a caller can hand the node besides its config.
#[derive(Default)]
pub struct Extras {
    /// Sources that are not local interfaces (emulated uplinks for the demo and tests).
    pub sources: Vec<Source>,
    /// Keep usage in memory only (no data dir).
    pub no_store: bool,
}

/// A running node.
pub struct Running {
    pub node: Arc<Node>,
    pub proxy_addr: SocketAddr,
    pub api_addr: Option<SocketAddr>,
    /// The peer port, when open.
    pub peer_addr: Option<SocketAddr>,
    pub(crate) stop: CancellationToken,
    pub(crate) kill: CancellationToken,
    pub(crate) conns: TaskTracker,
    pub(crate) services: TaskTracker,
}

impl Running {
    /// Serves redirected connections on `listener` (`booster gateway`), with the proxy's
    /// context: same limits, drain and kill as proxied connections.
    pub fn serve_gateway(&self, listener: tokio::net::TcpListener) {
        let ctx = Ctx {
            node: self.node.clone(),
            scorer: Arc::new(ExpectedCompletion::default()) as Arc<dyn Scorer>,
            kill: self.kill.clone(),
        };
        self.services.spawn(crate::gateway::serve(
            listener,
            ctx,
            self.stop.clone(),
            self.conns.clone(),
        ));
    }
}

pub async fn start(config: Config, extras: Extras) -> Result<Running, StartError> {
    let store = if extras.no_store {
        None
    } else {
        Some(Store::open(&config.data_dir)?)
    };
    let proxy_listener = TcpListener::bind(config.listen)
        .await
        .map_err(|err| StartError::Listen {
            addr: config.listen,
            what: "proxy",
            err,
        })?;
    let api_listener = match config.api {
        Some(addr) => {
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|err| StartError::Listen { addr, what: "API", err })?,
            )
        }
        None => None,
    };
    let peer_listener = match config.peer_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|err| StartError::Listen {
            addr,
            what: "peer port",
            err,
        })?),
        None => None,
    };
    let mut node = Node::new(config, store).map_err(StartError::Config)?;
    if let Some(secret) = &node.config.secret {
        let path = node.config.data_dir.join(IDENTITY_FILE);
        let identity = if extras.no_store {
            crate::noise::Identity::generate()
        } else {
            crate::noise::Identity::load_or_create(&path)
                .map_err(|e| StartError::Config(format!("node identity {}: {e}", path.display())))?
        };
        // Argon2 takes a moment and a few MB: do it once, off the runtime threads.
        let secret = secret.expose().to_string();
        let psk = tokio::task::spawn_blocking(move || crate::noise::derive_psk(&secret))
            .await
            .map_err(|e| StartError::Config(e.to_string()))?;
        node.peer_keys = Some(crate::peer::Keys { identity, psk });
    }
    node.bonds = crate::bond::Bonds::new(&node.config, &node.stop);
    let node = Arc::new(node);
    api::policies::restore(&node);
    for s in extras.sources {
        node.add_source(s);
    }
    // Know the uplinks before the first client arrives.
    discovery::refresh(&node).await;

    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let conns = TaskTracker::new();
    let services = TaskTracker::new();
    let proxy_addr = proxy_listener.local_addr().expect("bound socket has an address");
    let api_addr = api_listener
        .as_ref()
        .map(|l| l.local_addr().expect("bound socket has an address"));

    let ctx = Ctx {
        node: node.clone(),
        scorer: Arc::new(ExpectedCompletion::default()) as Arc<dyn Scorer>,
        kill: kill.clone(),
    };
    services.spawn(proxy::serve(proxy_listener, ctx, stop.clone(), conns.clone()));
    if let Some(l) = api_listener {
        let router = api::router(node.clone(), stop.clone());
        let stop = stop.clone();
        services.spawn(async move {
            let _ = axum::serve(api::listener::Limited::new(l), router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }
    services.spawn(discovery::run(node.clone(), stop.clone()));
    crate::bond::start(&node);
    let peer_addr = peer_listener
        .as_ref()
        .map(|l| l.local_addr().expect("bound socket has an address"));
    if let Some(l) = peer_listener {
        services.spawn(crate::lend::serve(l, node.clone(), stop.clone()));
    }
    for p in node.config.peers.clone() {
        if let Err(e) = crate::peer::connect(&node, p) {
            tracing::warn!(error = %e, "cannot connect to peer");
        }
    }
    if node.config.mdns {
        if let Some(addr) = peer_addr {
            match crate::mdns::Mdns::start(&node.config.name, addr.port(), &[], false) {
                Ok(m) => *node.mdns.lock().unwrap_or_else(|e| e.into_inner()) = Some(m),
                Err(e) => tracing::warn!(error = %e, "LAN discovery (mDNS) is off"),
            }
        }
    }
    {
        let node = node.clone();
        let stop = stop.clone();
        services.spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    t = tick.tick() => node.tick(t.into_std()),
                }
            }
        });
    }
    {
        let node = node.clone();
        let stop = stop.clone();
        services.spawn(async move { keep_heap_small(&node, &stop).await });
    }
    if node.store.is_some() {
        let node = node.clone();
        let stop = stop.clone();
        services.spawn(async move {
            let mut every = tokio::time::interval(FLUSH_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => flush(&node).await,
                }
            }
        });
    }
    tracing::info!(proxy = %proxy_addr, api = ?api_addr, sources = ?node.sources().iter().map(|s| s.name.clone()).collect::<Vec<_>>(), "booster node running (SOCKS5 and HTTP on the proxy port)");
    Ok(Running {
        node,
        proxy_addr,
        api_addr,
        peer_addr,
        stop,
        kill,
        conns,
        services,
    })
}

async fn flush(node: &Arc<Node>) {
    let n = node.clone();
    let r =
        tokio::task::spawn_blocking(move || n.store.as_ref().map(|s| s.flush(&n.counted_sources())).transpose()).await;
    match r {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot save usage"),
        Err(e) => tracing::warn!(error = %e, "usage flush task failed"),
    }
}

impl Running {
    /// Stops accepting, lets open connections finish for up to `drain_timeout`, closes the
    /// rest, and saves usage. Returns how many connections had to be cut.
    pub async fn shutdown(self) -> usize {
        self.stop.cancel();
        self.conns.close();
        self.services.close();
        let drained = tokio::time::timeout(self.node.config.drain_timeout, self.conns.wait())
            .await
            .is_ok();
        let cut = if drained { 0 } else { self.conns.len() };
        self.kill.cancel();
        self.node.stop.cancel();
        self.conns.wait().await;
        self.services.wait().await;
        self.node.tasks.close();
        // Stream pumps end when their channels close; don't let a stuck one hold shutdown.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.node.tasks.wait()).await;
        drop(self.node.mdns.lock().unwrap_or_else(|e| e.into_inner()).take());
        flush(&self.node).await;
        cut
    }
}

//! The connection registry: one entry per client connection open on the proxy port, with its
//! client address, the target and source it was last dialled to, and the bytes it moved. It is
//! part of the node's live state ([`crate::state::Node::conns`]); the API, the event stream and
//! the dashboard read it, and nothing keeps a copy.
//!
//! The hot path stays cheap: a connection is registered once, when it is accepted (one short
//! lock), and its byte counts are relaxed atomics bumped next to the source's own counters.
//!
//! **Why a task-local.** The client connection is known where it is accepted (`proxy.rs`), but
//! the upstream bytes are counted where the upstream is dialled (`dial.rs`), several layers
//! below (SOCKS5 or HTTP session, balancer, failover). Rather than threading the entry through
//! every signature in between, the accepting task runs its session inside
//! [`Registration::scope`], and `dial` picks the entry up with [`current`], the way `tracing`
//! carries a span. Dials made by other tasks (probes, lending) see no entry and count nothing
//! here.

use crate::target::Target;
use serde::Serialize;
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Instant,
};

tokio::task_local! {
    static CURRENT: Arc<Conn>;
}

/// The client connection the running task serves, if it is a proxy session.
pub fn current() -> Option<Arc<Conn>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Every client connection open on the proxy port.
#[derive(Debug, Default)]
pub struct Conns {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: AtomicU64,
    total: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub client: SocketAddr,
    pub started: Instant,
    /// The target and source of the upstream dialled last (`None` during the handshake).
    route: Mutex<Option<(String, String)>>,
    /// Bytes sent to the network for this client (client → target).
    pub up: AtomicU64,
    /// Bytes received from the network for this client (target → client).
    pub down: AtomicU64,
}

/// A client connection as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnView {
    pub id: u64,
    pub client: String,
    pub target: Option<String>,
    pub source: Option<String>,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub age_secs: f64,
}

impl Conn {
    /// Records the upstream the connection now goes through.
    pub fn set_route(&self, target: &Target, source: &str) {
        *self.route.lock().unwrap_or_else(|e| e.into_inner()) = Some((target.to_string(), source.to_string()));
    }

    pub fn view(&self, now: Instant) -> ConnView {
        let route = self.route.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (target, source) = route.map_or((None, None), |(t, s)| (Some(t), Some(s)));
        ConnView {
            id: self.id,
            client: self.client.to_string(),
            target,
            source,
            up_bytes: self.up.load(Relaxed),
            down_bytes: self.down.load(Relaxed),
            age_secs: now.saturating_duration_since(self.started).as_secs_f64(),
        }
    }
}

impl Conns {
    /// Registers a client connection; it leaves the registry when the registration drops.
    pub fn register(&self, client: SocketAddr) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Relaxed) + 1;
        let conn = Arc::new(Conn {
            id,
            client,
            started: Instant::now(),
            route: Mutex::new(None),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        });
        self.inner.total.fetch_add(1, Relaxed);
        self.lock().insert(id, conn.clone());
        Registration {
            inner: self.inner.clone(),
            conn,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.inner.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// Client connections registered since the node started.
    pub fn total(&self) -> u64 {
        self.inner.total.load(Relaxed)
    }

    /// The open connections, oldest first, at most `limit` of them.
    pub fn views(&self, limit: usize) -> Vec<ConnView> {
        let now = Instant::now();
        let mut all: Vec<Arc<Conn>> = self.lock().values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all.iter().take(limit).map(|c| c.view(now)).collect()
    }

    /// Open connections per source they were last dialled through.
    pub fn per_source(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for c in self.lock().values() {
            if let Some((_, source)) = c.route.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                *out.entry(source.clone()).or_insert(0) += 1;
            }
        }
        out
    }
}

/// Holds a connection in the registry; dropping it removes the entry and logs the
/// connection's one debug line.
#[derive(Debug)]
pub struct Registration {
    inner: Arc<Inner>,
    conn: Arc<Conn>,
}

impl Registration {
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Runs `f` (the connection's session) with this connection as [`current`].
    pub async fn scope<F: Future>(&self, f: F) -> F::Output {
        CURRENT.scope(self.conn.clone(), f).await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.conn.id);
        let v = self.conn.view(Instant::now());
        tracing::debug!(
            conn = v.id,
            client = %v.client,
            target = v.target.as_deref().unwrap_or("-"),
            source = v.source.as_deref().unwrap_or("-"),
            up = v.up_bytes,
            down = v.down_bytes,
            secs = v.age_secs,
            "connection closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registered_connections_are_listed_until_dropped() {
        let conns = Conns::default();
        let a = conns.register("127.0.0.1:5000".parse().unwrap());
        let b = conns.register("127.0.0.1:5001".parse().unwrap());
        assert_eq!(conns.open(), 2);
        b.scope(async {
            let c = current().expect("inside the scope");
            c.set_route(&Target::new("example.com", 443), "eth0");
            c.down.fetch_add(1234, Relaxed);
        })
        .await;
        assert!(current().is_none(), "outside any scope");
        let views = conns.views(10);
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].id, a.conn().id);
        assert_eq!(views[1].target.as_deref(), Some("example.com:443"));
        assert_eq!(views[1].source.as_deref(), Some("eth0"));
        assert_eq!(views[1].down_bytes, 1234);
        assert_eq!(conns.per_source().get("eth0"), Some(&1));
        assert_eq!(conns.views(1).len(), 1);
        drop(a);
        assert_eq!(conns.open(), 1);
        assert_eq!(conns.total(), 2);
    }
}

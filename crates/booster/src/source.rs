//! Sources: anything the balancer can send a connection through. Today a local uplink (an
//! interface), an emulated uplink (the demo and tests), or an uplink a peer lends (`peer/uplink`).
//!
//! A source owns its live counters. They are atomics updated by the data path and read by the
//! balancer, the API and the usage store: one copy of the truth.

use crate::config::Tier;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    time::{Duration, Instant},
};

/// How a source reaches the network.
#[derive(Clone)]
pub enum SourceKind {
    /// A local interface; every socket is bound to it with `SO_BINDTODEVICE`.
    Iface { name: String },
    /// An in-process emulated uplink over loopback (no root needed).
    Emulated(lab::emulink::EmuLink),
    /// An uplink a peer lends: connections go over the encrypted peer channel to `addr`, and
    /// the peer dials the target on its uplink `uplink` (DNS resolves there).
    Peer { peer: String, addr: String, uplink: String },
    /// The bonded streams through one relay: counts their client bytes; never balanced.
    Bond { relay: String },
}

impl std::fmt::Debug for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKind::Iface { name } => write!(f, "iface {name}"),
            SourceKind::Emulated(l) => write!(f, "emulated {}", l.name()),
            SourceKind::Peer { peer, addr, uplink } => write!(f, "peer {peer} ({addr}) {uplink}"),
            SourceKind::Bond { relay } => write!(f, "bond through {relay}"),
        }
    }
}

/// Health as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Probes or recent connections succeeded.
    Up,
    /// Nothing known yet (no probe target, no traffic).
    Unknown,
    /// Recent connects failed; retried after a backoff.
    Degraded,
    /// Interface down, gone, or without an address.
    Down,
}

#[derive(Debug)]
struct Dynamics {
    health: Health,
    consecutive_failures: u32,
    retry_at: Option<Instant>,
    /// Smoothed connect RTT.
    rtt: Option<Duration>,
    last_tick: Instant,
    last_rx: u64,
    last_tx: u64,
    /// Smoothed throughput, bytes per second.
    rate_rx: f64,
    rate_tx: f64,
    /// Estimated capacity, bytes per second (the larger direction).
    capacity: f64,
    capacity_known: bool,
    /// Seconds the source has looked saturated while its capacity was still a guess.
    busy_secs: f64,
    /// What a lending peer last reported (peer sources only).
    remote: Option<Remote>,
}

/// A peer's own view of an uplink it lends.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Remote {
    /// Connections through the uplink at the peer, from every user (us included).
    pub open: u64,
    /// Bytes the peer will still lend this month (`u64::MAX`: no cap; `null` in JSON).
    #[serde(serialize_with = "cap_json")]
    pub cap_left: u64,
    /// The peer's rate limit for lending, bytes per second (0: none).
    pub max_rate: f64,
}

/// A source and its live state.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    pub tier: Tier,
    /// Monthly data cap in bytes.
    pub cap: Option<u64>,
    /// Bytes received from the network through this source since the node started.
    pub rx: AtomicU64,
    /// Bytes sent to the network through this source since the node started.
    pub tx: AtomicU64,
    /// Open connections through this source.
    pub open: AtomicU64,
    /// Connections being dialled through this source right now (chosen, not yet open). Counted
    /// so that a burst of simultaneous connections spreads instead of all picking the same idle
    /// source.
    pub connecting: AtomicU64,
    /// Set while a tail steal ([`crate::steal`]) runs through this source (from its choice
    /// until its range fetch ends), so two steals don't pick it.
    pub stolen: AtomicBool,
    pub conns_total: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Bytes used this month before this process counted anything (from the store).
    pub month_base: AtomicU64,
    /// `rx + tx` at the moment `month_base` was taken.
    pub month_mark: AtomicU64,
    /// The source is listed but must not get new work (interface vanished, node draining).
    pub retired: AtomicBool,
    /// Every connect-time sample (the RTT behind `rtt_ms`), for `/metrics`.
    pub rtt_seconds: prometheus_client::metrics::histogram::Histogram,
    dynamics: Mutex<Dynamics>,
}

fn cap_json<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    if *v == u64::MAX {
        s.serialize_none()
    } else {
        s.serialize_some(v)
    }
}

/// Capacity assumed for a source nobody told us about, until traffic measures it.
pub const DEFAULT_CAPACITY: f64 = 10e6 / 8.0;
/// How long a degraded source waits before it is tried again; doubles per failure up to the max.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Consecutive connect failures after which a source counts as degraded.
const FAILURES_TO_DEGRADE: u32 = 2;

/// A consistent snapshot for scoring and display.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceView {
    pub name: String,
    pub kind: String,
    pub tier: Tier,
    pub health: Health,
    pub open: u64,
    pub conns_total: u64,
    pub connect_failures: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rate_rx: f64,
    pub rate_tx: f64,
    pub capacity: f64,
    pub capacity_known: bool,
    pub rtt_ms: Option<f64>,
    pub month_bytes: u64,
    pub cap_bytes: Option<u64>,
    pub over_cap: bool,
    /// For peer sources: what the lender reports.
    pub remote: Option<Remote>,
    /// Would the balancer give it a new connection now?
    pub usable: bool,
}

impl Source {
    pub fn new(name: String, kind: SourceKind, tier: Tier, cap: Option<u64>, capacity: Option<f64>) -> Source {
        Source {
            name,
            kind,
            tier,
            cap,
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            open: AtomicU64::new(0),
            connecting: AtomicU64::new(0),
            stolen: AtomicBool::new(false),
            conns_total: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            month_base: AtomicU64::new(0),
            month_mark: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            rtt_seconds: crate::metrics::seconds_histogram(),
            dynamics: Mutex::new(Dynamics {
                health: Health::Unknown,
                consecutive_failures: 0,
                retry_at: None,
                rtt: None,
                last_tick: Instant::now(),
                last_rx: 0,
                last_tx: 0,
                rate_rx: 0.0,
                rate_tx: 0.0,
                capacity: capacity.unwrap_or(DEFAULT_CAPACITY),
                capacity_known: capacity.is_some(),
                busy_secs: 0.0,
                remote: None,
            }),
        }
    }

    fn dyn_lock(&self) -> std::sync::MutexGuard<'_, Dynamics> {
        self.dynamics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes used this calendar month, including what the store already held.
    pub fn month_bytes(&self) -> u64 {
        let now = self.rx.load(Relaxed) + self.tx.load(Relaxed);
        self.month_base.load(Relaxed) + now.saturating_sub(self.month_mark.load(Relaxed))
    }

    pub fn over_cap(&self) -> bool {
        self.cap.is_some_and(|cap| self.month_bytes() >= cap)
    }

    pub fn health(&self) -> Health {
        self.dyn_lock().health
    }

    /// May the balancer give it new work right now?
    pub fn usable(&self, now: Instant) -> bool {
        if self.retired.load(Relaxed) {
            return false;
        }
        let d = self.dyn_lock();
        if d.remote.is_some_and(|r| r.cap_left == 0) {
            return false; // the lender's cap is used up: it would refuse
        }
        match d.health {
            Health::Up | Health::Unknown => true,
            Health::Degraded => d.retry_at.is_none_or(|t| now >= t),
            Health::Down => false,
        }
    }

    pub fn set_down(&self, down: bool) {
        let mut d = self.dyn_lock();
        if down {
            d.health = Health::Down;
        } else if d.health == Health::Down {
            d.health = Health::Unknown;
            d.consecutive_failures = 0;
            d.retry_at = None;
        }
    }

    /// A connect or probe through this source succeeded after `rtt`.
    pub fn record_success(&self, rtt: Option<Duration>) {
        let mut d = self.dyn_lock();
        if d.health != Health::Down {
            d.health = Health::Up;
        }
        d.consecutive_failures = 0;
        d.retry_at = None;
        if let Some(rtt) = rtt {
            self.rtt_seconds.observe(rtt.as_secs_f64());
            d.rtt = Some(match d.rtt {
                // EWMA with weight 1/8, as TCP's SRTT.
                Some(old) => (old * 7 + rtt) / 8,
                None => rtt,
            });
        }
    }

    /// A connect or probe failed for a reason that is the source's fault (not the target's).
    pub fn record_failure(&self, now: Instant) {
        self.connect_failures.fetch_add(1, Relaxed);
        let mut d = self.dyn_lock();
        d.consecutive_failures += 1;
        if d.consecutive_failures >= FAILURES_TO_DEGRADE && d.health != Health::Down {
            d.health = Health::Degraded;
            let exp = (d.consecutive_failures - FAILURES_TO_DEGRADE).min(5);
            d.retry_at = Some(now + (BACKOFF_BASE * 2u32.pow(exp)).min(BACKOFF_MAX));
        }
    }

    /// Takes a lending peer's report: its health, capacity (bounded by its rate limit), RTT and
    /// load for this uplink.
    pub fn set_remote(&self, health: Health, capacity: f64, rtt: Option<Duration>, remote: Remote) {
        let mut d = self.dyn_lock();
        d.health = health;
        let capacity = if remote.max_rate > 0.0 {
            capacity.min(remote.max_rate)
        } else {
            capacity
        };
        if capacity > 0.0 {
            d.capacity = capacity;
            d.capacity_known = true;
        }
        if let Some(rtt) = rtt {
            d.rtt = Some(rtt);
        }
        d.remote = Some(remote);
    }

    /// Connections other nodes (or the peer itself) have open through this peer uplink.
    pub fn remote_others(&self) -> u64 {
        let d = self.dyn_lock();
        d.remote
            .map(|r| r.open.saturating_sub(self.open.load(Relaxed)))
            .unwrap_or(0)
    }

    /// Seeds the capacity estimate from history (only if nothing better is known).
    pub fn seed_capacity(&self, bytes_per_sec: f64) {
        let mut d = self.dyn_lock();
        if !d.capacity_known && bytes_per_sec.is_finite() && bytes_per_sec > 0.0 {
            d.capacity = bytes_per_sec;
            d.capacity_known = true;
        }
    }

    /// Called every [`crate::state::TICK`]: updates throughput and capacity from the counters.
    pub fn tick(&self, now: Instant) {
        let rx = self.rx.load(Relaxed);
        let tx = self.tx.load(Relaxed);
        let open = self.open.load(Relaxed);
        let mut d = self.dyn_lock();
        let dt = now.saturating_duration_since(d.last_tick).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        let inst_rx = (rx.saturating_sub(d.last_rx)) as f64 / dt;
        let inst_tx = (tx.saturating_sub(d.last_tx)) as f64 / dt;
        d.last_tick = now;
        d.last_rx = rx;
        d.last_tx = tx;
        // Smooth over about one second.
        let a = (dt / 1.0).min(1.0);
        d.rate_rx += a * (inst_rx - d.rate_rx);
        d.rate_tx += a * (inst_tx - d.rate_tx);
        let seen = d.rate_rx.max(d.rate_tx);
        // Several connections moving data at once are taken as a saturated link: what they get
        // together is what the link gives. (One connection may be limited by its application.)
        let busy = open >= 2 && seen > 0.0;
        if seen > d.capacity {
            // More got through than we thought possible: the estimate was low.
            d.capacity = seen;
            d.capacity_known = true;
        } else if busy && !d.capacity_known {
            // Still a guess: follow what a busy link delivers quickly (time constant ~1 s).
            let b = (dt / 1.0).min(1.0);
            d.capacity += b * (seen - d.capacity);
            d.busy_secs += dt;
            if d.busy_secs >= 2.0 {
                d.capacity_known = true;
            }
        } else if busy && seen > 0.2 * d.capacity {
            // Known, busy, but below the estimate: drift down slowly (time constant ~20 s), so a
            // link that got slower is believed eventually while a lull does not erase history.
            let b = (dt / 20.0).min(1.0);
            d.capacity += b * (seen - d.capacity);
        }
    }

    /// Smoothed connect RTT, if measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.dyn_lock().rtt
    }

    /// Estimated capacity in bytes per second.
    pub fn capacity(&self) -> f64 {
        self.dyn_lock().capacity
    }

    /// Free capacity share: how loaded the source is, 0 = idle, 1 = saturated.
    pub fn utilization(&self) -> f64 {
        let d = self.dyn_lock();
        (d.rate_rx.max(d.rate_tx) / d.capacity.max(1.0)).min(2.0)
    }

    pub fn view(&self) -> SourceView {
        let usable = self.usable(Instant::now());
        let d = self.dyn_lock();
        SourceView {
            name: self.name.clone(),
            kind: format!("{:?}", self.kind),
            tier: self.tier,
            health: if self.retired.load(Relaxed) {
                Health::Down
            } else {
                d.health
            },
            open: self.open.load(Relaxed),
            conns_total: self.conns_total.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            rx_bytes: self.rx.load(Relaxed),
            tx_bytes: self.tx.load(Relaxed),
            rate_rx: d.rate_rx,
            rate_tx: d.rate_tx,
            capacity: d.capacity,
            capacity_known: d.capacity_known,
            rtt_ms: d.rtt.map(|r| r.as_secs_f64() * 1e3),
            month_bytes: self.month_bytes(),
            cap_bytes: self.cap,
            over_cap: self.over_cap(),
            remote: d.remote,
            usable,
        }
    }

    /// A primary source over an in-process emulated uplink, named after the link.
    pub fn emulated(link: &lab::emulink::EmuLink) -> Source {
        Source::new(
            link.name().to_string(),
            SourceKind::Emulated(link.clone()),
            Tier::Primary,
            None,
            None,
        )
    }

    /// Holds an "open connection" count for as long as it lives.
    pub fn open_guard(self: &std::sync::Arc<Self>) -> OpenGuard {
        self.conns_total.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
        OpenGuard(self.clone(), true)
    }

    /// Like [`Source::open_guard`], for a probe: counts nothing.
    pub fn probe_guard(self: &std::sync::Arc<Self>) -> OpenGuard {
        OpenGuard(self.clone(), false)
    }
}

/// Counts a connection as "being dialled" through a source while it lives.
#[derive(Debug)]
pub struct ConnectingGuard(std::sync::Arc<Source>);

impl ConnectingGuard {
    pub fn new(source: &std::sync::Arc<Source>) -> Self {
        source.connecting.fetch_add(1, Relaxed);
        ConnectingGuard(source.clone())
    }
}

impl Drop for ConnectingGuard {
    fn drop(&mut self) {
        self.0.connecting.fetch_sub(1, Relaxed);
    }
}

/// Decrements the source's open-connection count on drop.
#[derive(Debug)]
pub struct OpenGuard(std::sync::Arc<Source>, bool);

impl OpenGuard {
    pub fn source(&self) -> &std::sync::Arc<Source> {
        &self.0
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.1 {
            self.0.open.fetch_sub(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Source {
        Source::new(
            "eth0".into(),
            SourceKind::Iface { name: "eth0".into() },
            Tier::Primary,
            Some(1000),
            None,
        )
    }

    #[test]
    fn failures_degrade_then_backoff_expires() {
        let s = src();
        let t0 = Instant::now();
        s.record_failure(t0);
        assert!(s.usable(t0), "one failure is not enough");
        s.record_failure(t0);
        assert_eq!(s.health(), Health::Degraded);
        assert!(!s.usable(t0));
        assert!(s.usable(t0 + BACKOFF_MAX));
        s.record_success(Some(Duration::from_millis(30)));
        assert_eq!(s.health(), Health::Up);
        assert!(s.usable(t0));
    }

    #[test]
    fn capacity_follows_measured_throughput() {
        let s = src();
        let t0 = Instant::now();
        s.tick(t0);
        let _g = std::sync::Arc::new(src()); // unrelated, keeps the API honest
        s.open.store(1, Relaxed);
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_millis(250);
            s.rx.fetch_add(5_000_000 / 4, Relaxed); // 5 MB/s
            s.tick(t);
        }
        let v = s.view();
        assert!(v.capacity > 4e6, "{v:?}");
        assert!(v.capacity_known);
    }

    #[test]
    fn a_busy_link_slower_than_the_guess_is_learned() {
        let s = src();
        let t0 = Instant::now();
        s.tick(t0);
        s.open.store(4, Relaxed);
        let mut t = t0;
        for _ in 0..16 {
            t += Duration::from_millis(250);
            s.rx.fetch_add(500_000 / 4, Relaxed); // 0.5 MB/s, below the 1.25 MB/s default guess
            s.tick(t);
        }
        let v = s.view();
        assert!(v.capacity < 0.7e6, "{v:?}");
        assert!(v.capacity_known);
    }

    #[test]
    fn cap_counts_this_month_only() {
        let s = src();
        s.month_base.store(900, Relaxed);
        s.rx.store(50, Relaxed);
        assert!(!s.over_cap());
        s.tx.store(60, Relaxed);
        assert!(s.over_cap());
        assert_eq!(s.month_bytes(), 1010);
    }
}

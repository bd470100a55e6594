//! LAN discovery of booster nodes by mDNS/DNS-SD (RFC 6762/6763).
//!
//! Every node announces one instance of [`SERVICE`] named after the node, with the peer port in
//! its SRV record and the protocol version in its TXT record (`v=1`). Nothing secret is
//! announced: joining still needs the network secret. Each node also browses for the others and
//! keeps a small table of who was seen recently ([`Mdns::available`]).
//!
//! The mdns-sd daemon runs its own OS thread; [`Mdns`] adds one more (named `mdns-events`) that
//! consumes the browse events. That thread is also the only one that talks to the daemon after
//! `start`: mdns-sd wakes its daemon through a UDP socket on 127.0.0.1, which must live in the
//! daemon's network namespace, and the events thread inherits the namespace of the thread that
//! called `start` (tests run nodes inside namespaces).
//!
//! Freshness: mdns-sd keeps its cache alive by re-querying records before their TTL (2 minutes
//! for SRV and addresses) runs out, but only reports an instance again when something changes.
//! So every [`REBROWSE_EVERY`] we browse again, which replays the live cache entries; an entry
//! not replayed for [`EXPIRE_AFTER`] is dropped. A goodbye (the peer's `Mdns` dropped) removes it
//! at once.

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceEvent, ServiceInfo, UnregisterStatus};
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// DNS-SD service type.
pub const SERVICE: &str = "_booster._tcp.local.";

/// The peer protocol version announced in the TXT record (`v=`).
pub const PROTOCOL_VERSION: u8 = 1;

/// An entry not seen for this long is dropped.
pub const EXPIRE_AFTER: Duration = Duration::from_secs(120);

/// How often the browse is restarted to replay live cache entries (see the module docs).
pub const REBROWSE_EVERY: Duration = Duration::from_secs(40);

/// The table never holds more nodes than this; the least recently seen one is evicted.
pub const MAX_ENTRIES: usize = 256;

/// The longest node name: an instance name is a single DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// How long the events thread blocks before checking whether it should stop.
const POLL: Duration = Duration::from_millis(200);

/// How long to wait for the goodbye and for the daemon to stop.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// A node seen on the LAN.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Discovered {
    pub node: String,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub version: u8,
    pub last_seen_secs_ago: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    #[error("invalid node name for mDNS ({0:?}): {1}")]
    InvalidName(String, &'static str),
    #[error("mDNS daemon: {0}")]
    Daemon(#[from] mdns_sd::Error),
    #[error("mDNS: {0}")]
    Io(#[from] std::io::Error),
}

/// Announces this node and lists the others. Dropping it sends a goodbye and stops the daemon.
pub struct Mdns {
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    fullname: String,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns")
            .field("fullname", &self.fullname)
            .finish_non_exhaustive()
    }
}

impl Mdns {
    /// Announces this node (instance name = node name, TXT: v=1) on `port`, and browses for others.
    /// `interfaces`: restrict to these interface names (empty = all non-loopback). Never announce
    /// on loopback unless `allow_loopback` (tests).
    ///
    /// With `allow_loopback` and no `interfaces`, loopback is used as well as every other
    /// interface; with `interfaces`, loopback is used only when named there.
    pub fn start(node: &str, port: u16, interfaces: &[String], allow_loopback: bool) -> Result<Mdns, MdnsError> {
        validate_name(node)?;
        let daemon = ServiceDaemon::new()?;
        // From here on, a failure must stop the daemon thread again.
        match Self::setup(&daemon, node, port, interfaces, allow_loopback) {
            Ok((info, browse)) => {
                let fullname = info.get_fullname().to_owned();
                let table = Arc::new(Mutex::new(Table::default()));
                let stop = Arc::new(AtomicBool::new(false));
                let mut me = HashSet::new();
                me.insert(fullname.to_ascii_lowercase());
                let worker = Worker {
                    daemon: daemon.clone(),
                    table: table.clone(),
                    stop: stop.clone(),
                    me,
                    my_host: info.get_hostname().to_ascii_lowercase(),
                    fullname: fullname.clone(),
                };
                let thread = std::thread::Builder::new()
                    .name("mdns-events".into())
                    .spawn(move || worker.run(browse));
                match thread {
                    Ok(t) => {
                        tracing::debug!("mDNS: announcing {fullname} on port {port}");
                        Ok(Mdns {
                            table,
                            stop,
                            thread: Some(t),
                            fullname,
                        })
                    }
                    Err(e) => {
                        stop_daemon(&daemon, Some(&fullname));
                        Err(e.into())
                    }
                }
            }
            Err(e) => {
                stop_daemon(&daemon, None);
                Err(e)
            }
        }
    }

    fn setup(
        daemon: &ServiceDaemon,
        node: &str,
        port: u16,
        interfaces: &[String],
        allow_loopback: bool,
    ) -> Result<(ServiceInfo, mdns_sd::Receiver<ServiceEvent>), MdnsError> {
        // Interface selections apply in order, the last match wins.
        if !interfaces.is_empty() {
            daemon.disable_interface(IfKind::All)?;
            let named: Vec<IfKind> = interfaces.iter().map(|n| IfKind::Name(n.clone())).collect();
            daemon.enable_interface(named)?;
        }
        if !allow_loopback {
            // Also when "lo" was named explicitly.
            daemon.disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
        } else if interfaces.is_empty() {
            daemon.enable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])?;
        }
        let host = host_name(node);
        let v = PROTOCOL_VERSION.to_string();
        let props = [("v", v.as_str())];
        // No addresses given: the daemon fills in those of the selected interfaces, and keeps
        // them current as interfaces come and go.
        let info = ServiceInfo::new(SERVICE, node, &host, (), port, &props[..])?.enable_addr_auto();
        daemon.register(info.clone())?;
        let browse = daemon.browse(SERVICE)?;
        Ok((info, browse))
    }

    /// Nodes seen recently (excluding ourselves), newest first; entries expire after 2 minutes unseen or on goodbye.
    pub fn available(&self) -> Vec<Discovered> {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.prune(now);
        let mut out: Vec<(Instant, Discovered)> = table
            .entries
            .values()
            .map(|e| {
                let d = Discovered {
                    node: e.node.clone(),
                    addrs: e.addrs.clone(),
                    port: e.port,
                    version: e.version,
                    last_seen_secs_ago: now.saturating_duration_since(e.last_seen).as_secs(),
                };
                (e.last_seen, d)
            })
            .collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.node.cmp(&b.1.node)));
        out.into_iter().map(|(_, d)| d).collect()
    }

    /// Our own DNS-SD instance name, e.g. `home._booster._tcp.local.`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The thread unregisters (goodbye) and shuts the daemon down, in bounded time.
            if t.join().is_err() {
                tracing::warn!("mDNS: events thread panicked");
            }
        }
    }
}

fn validate_name(node: &str) -> Result<(), MdnsError> {
    let bad = |why| Err(MdnsError::InvalidName(node.to_owned(), why));
    if node.is_empty() {
        return bad("empty");
    }
    if node.len() > MAX_NAME_LEN {
        return bad("longer than 63 bytes");
    }
    if node.chars().any(|c| c.is_control()) {
        return bad("contains control characters");
    }
    if node.contains('.') {
        // mdns-sd does not escape dots in instance names; a dot would split the label.
        return bad("contains a dot");
    }
    Ok(())
}

/// A host name for our A/AAAA records: `booster-<node, sanitized>-<random>.local.`. The random
/// part keeps it from clashing with the machine's own name or another node's.
fn host_name(node: &str) -> String {
    let mut label = String::from("booster-");
    for c in node.chars() {
        if c.is_ascii_alphanumeric() {
            label.push(c.to_ascii_lowercase());
        } else if !label.ends_with('-') {
            label.push('-');
        }
        if label.len() >= 48 {
            break;
        }
    }
    if !label.ends_with('-') {
        label.push('-');
    }
    format!("{label}{:04x}.local.", rand::random::<u16>())
}

/// Stops the daemon: goodbye for `fullname` (if registered), then shutdown; bounded waits.
fn stop_daemon(daemon: &ServiceDaemon, fullname: Option<&str>) {
    if let Some(name) = fullname {
        match daemon.unregister(name) {
            Ok(rx) => match rx.recv_timeout(STOP_WAIT) {
                Ok(UnregisterStatus::OK) => tracing::debug!("mDNS: unregistered {name}"),
                Ok(s) => tracing::debug!("mDNS: unregister {name}: {s:?}"),
                Err(e) => tracing::debug!("mDNS: unregister {name}: {e}"),
            },
            Err(e) => tracing::warn!("mDNS: unregister {name}: {e}"),
        }
    }
    match daemon.shutdown() {
        Ok(rx) => {
            let _ = rx.recv_timeout(STOP_WAIT);
        }
        Err(e) => tracing::warn!("mDNS: shutdown: {e}"),
    }
}

struct Entry {
    node: String,
    addrs: Vec<IpAddr>,
    port: u16,
    version: u8,
    last_seen: Instant,
}

/// Seen nodes by lower-cased instance full name.
#[derive(Default)]
struct Table {
    entries: HashMap<String, Entry>,
}

impl Table {
    fn prune(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_seen) < EXPIRE_AFTER);
    }

    fn upsert(&mut self, key: String, entry: Entry) -> bool {
        let new = !self.entries.contains_key(&key);
        if new && self.entries.len() >= MAX_ENTRIES {
            self.prune(entry.last_seen);
            if self.entries.len() >= MAX_ENTRIES {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_seen)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(key, entry);
        new
    }
}

struct Worker {
    daemon: ServiceDaemon,
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
    /// Our instance full names (lower case), including any a name conflict gave us.
    me: HashSet<String>,
    my_host: String,
    fullname: String,
}

impl Worker {
    fn run(mut self, mut browse: mdns_sd::Receiver<ServiceEvent>) {
        let monitor = match self.daemon.monitor() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("mDNS: cannot monitor the daemon: {e}");
                None
            }
        };
        let mut last_browse = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            match browse.recv_timeout(POLL) {
                Ok(ev) => self.on_event(ev),
                Err(_) if browse.is_disconnected() => {
                    tracing::warn!("mDNS: daemon stopped unexpectedly; LAN discovery is off");
                    return;
                }
                Err(_) => {} // timeout
            }
            if let Some(m) = &monitor {
                while let Ok(ev) = m.try_recv() {
                    self.on_daemon_event(ev);
                }
            }
            if last_browse.elapsed() >= REBROWSE_EVERY {
                last_browse = Instant::now();
                match self.daemon.browse(SERVICE) {
                    // Dropping the old receiver ends the old browse's retransmissions.
                    Ok(rx) => browse = rx,
                    Err(e) => tracing::warn!("mDNS: browse again: {e}"),
                }
            }
        }
        drop(browse);
        stop_daemon(&self.daemon, Some(&self.fullname));
    }

    fn on_daemon_event(&mut self, ev: DaemonEvent) {
        match ev {
            DaemonEvent::Error(e) => tracing::warn!("mDNS: {e}"),
            DaemonEvent::NameChange(c) => {
                let original = c.original.to_ascii_lowercase();
                if self.me.contains(&original) {
                    tracing::warn!("mDNS: name conflict, we are now announced as {}", c.new_name);
                    self.me.insert(c.new_name.to_ascii_lowercase());
                    self.fullname = c.new_name;
                } else if original == self.my_host {
                    self.my_host = c.new_name.to_ascii_lowercase();
                }
            }
            _ => {}
        }
    }

    fn on_event(&mut self, ev: ServiceEvent) {
        match ev {
            ServiceEvent::ServiceResolved(info) => self.on_resolved(&info),
            ServiceEvent::ServiceRemoved(_, fullname) => {
                let key = fullname.to_ascii_lowercase();
                let removed = self.lock().entries.remove(&key);
                if let Some(e) = removed {
                    tracing::debug!("mDNS: node {} left", e.node);
                }
            }
            ServiceEvent::SearchStarted(_) | ServiceEvent::ServiceFound(..) | ServiceEvent::SearchStopped(_) => {}
        }
    }

    fn on_resolved(&mut self, info: &ServiceInfo) {
        let key = info.get_fullname().to_ascii_lowercase();
        if self.me.contains(&key) || info.get_hostname().eq_ignore_ascii_case(&self.my_host) {
            return;
        }
        let Some(node) = instance_name(info.get_fullname()) else {
            return;
        };
        let Some(version) = info.get_property_val_str("v").and_then(|v| v.trim().parse::<u8>().ok()) else {
            tracing::debug!("mDNS: ignoring {} without a valid version", info.get_fullname());
            return;
        };
        let mut addrs: Vec<IpAddr> = info.get_addresses().iter().copied().collect();
        addrs.sort();
        if addrs.is_empty() || info.get_port() == 0 {
            return;
        }
        let entry = Entry {
            node: node.clone(),
            addrs,
            port: info.get_port(),
            version,
            last_seen: Instant::now(),
        };
        let (port, addrs) = (entry.port, entry.addrs.clone());
        if self.lock().upsert(key, entry) {
            tracing::debug!("mDNS: found node {node} (v{version}) at {addrs:?} port {port}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `node._booster._tcp.local.` -> `node`.
fn instance_name(fullname: &str) -> Option<String> {
    let suffix_len = SERVICE.len() + 1;
    if fullname.len() <= suffix_len || !fullname.is_char_boundary(fullname.len() - suffix_len) {
        return None;
    }
    let (name, rest) = fullname.split_at(fullname.len() - suffix_len);
    (rest.strip_prefix('.')?.eq_ignore_ascii_case(SERVICE)).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names() {
        assert_eq!(instance_name("home._booster._tcp.local.").as_deref(), Some("home"));
        assert_eq!(
            instance_name("My Phone._BOOSTER._tcp.local.").as_deref(),
            Some("My Phone")
        );
        assert_eq!(instance_name("._booster._tcp.local."), None);
        assert_eq!(instance_name("home._other._tcp.local."), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("home").is_ok());
        assert!(validate_name("Ana's phone").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a.b").is_err());
        assert!(validate_name(&"x".repeat(64)).is_err());
    }

    #[test]
    fn host_names_are_dns_labels() {
        let h = host_name("Ana's phone");
        assert!(h.starts_with("booster-ana-s-phone-"), "{h}");
        assert!(h.ends_with(".local."));
        assert!(!h.contains("--"));
    }

    #[test]
    fn table_is_bounded() {
        let mut t = Table::default();
        let start = Instant::now();
        for i in 0..(MAX_ENTRIES + 10) {
            let e = Entry {
                node: format!("n{i}"),
                addrs: vec![],
                port: 1,
                version: 1,
                last_seen: start + Duration::from_millis(i as u64),
            };
            t.upsert(format!("n{i}"), e);
        }
        assert_eq!(t.entries.len(), MAX_ENTRIES);
        assert!(!t.entries.contains_key("n0"));
        assert!(t.entries.contains_key(&format!("n{}", MAX_ENTRIES + 9)));
    }
}

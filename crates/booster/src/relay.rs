//! `booster relay`: the far end of bonds. It accepts paths from nodes holding the network
//! secret, groups them by link, puts each bonded stream back in order, and connects it to its
//! target.
//!
//! What a stranger can make it do: nothing. A connection without the secret fails the first
//! Noise message, costs one DH and a few hundred bytes, and gets no answer; at most
//! [`MAX_HANDSHAKES`] handshakes run at once and the rest are dropped unread. A node with the
//! secret can reach public addresses only: loopback, private, link-local and other special
//! ranges are refused ([`target_allowed`]) unless listed with `--allow`, so the relay is never
//! a way into its own network.

use crate::{
    bond::{
        link::{Handler, Shared},
        path, BondStream,
    },
    logs,
    noise::{self, Channel, Identity},
    policy::Pattern,
};
use proto::bond::{Config, Frame, Mode, Role, WELCOME_NEW};
use proto::socks5::{Address, Reply};
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Handshakes in progress at once; more connections are closed at once.
pub const MAX_HANDSHAKES: usize = 256;
/// A link without any path is kept this long (streams resume if a path returns), then dropped.
pub const LINGER: Duration = crate::bond::RESUME_WINDOW;
/// Budget to connect a target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams idle this long in both directions are closed.
const IDLE: Duration = Duration::from_secs(600);
/// A UDP flow without traffic this long is closed.
const UDP_IDLE: Duration = Duration::from_secs(120);
/// The top bit of a datagram's flow id: the node sends that flow redundantly, and wants the
/// replies the same way.
pub const FLOW_REDUNDANT: u32 = 0x8000_0000;

pub struct RelayConfig {
    pub psk: [u8; 32],
    pub identity: Identity,
    /// Networks that may be reached even though they are private or special.
    pub allow: Vec<Pattern>,
}

type LinkKey = ([u8; 32], [u8; proto::bond::frame::LINK_ID_LEN]);

/// The relay's live state: its links by (node key, link id).
pub struct Relay {
    config: RelayConfig,
    links: Mutex<HashMap<LinkKey, Arc<Shared>>>,
    handshakes: Arc<Semaphore>,
    stop: CancellationToken,
    /// Refused handshakes since start (wrong secret, garbage, timeouts).
    pub refused: std::sync::atomic::AtomicU64,
}

impl Relay {
    pub fn new(config: RelayConfig, stop: CancellationToken) -> Arc<Relay> {
        Arc::new(Relay {
            config,
            links: Mutex::new(HashMap::new()),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            stop,
            refused: Default::default(),
        })
    }

    pub fn link_count(&self) -> usize {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Accepts paths until `stop`.
pub async fn serve(listener: TcpListener, relay: Arc<Relay>) {
    loop {
        let (tcp, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    logs::throttled!(warn, logs::ACCEPTS, error = %e, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = relay.stop.cancelled() => return,
        };
        let Ok(permit) = relay.handshakes.clone().try_acquire_owned() else {
            refused(&relay, from, "too many handshakes at once");
            continue;
        };
        let relay2 = relay.clone();
        tokio::spawn(async move {
            let accepted = accept_path(&relay2, tcp).await;
            drop(permit);
            match accepted {
                Ok(run) => run.await,
                Err(why) => refused(&relay2, from, &why),
            }
        });
    }
}

/// Counts a refused path; a scan repeats forever, so the log hears of it once a minute.
fn refused(relay: &Relay, from: SocketAddr, why: &str) {
    let refused = relay.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    logs::throttled!(info, logs::STRANGERS, %from, why, refused, "path refused");
}

/// Runs the handshake and `Hello`, joins the path to its link, and returns the path's pump.
async fn accept_path(relay: &Arc<Relay>, tcp: TcpStream) -> Result<impl std::future::Future<Output = ()>, String> {
    let _ = tcp.set_nodelay(true);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let _ = crate::sys::set_notsent_lowat(&tcp, path::NOTSENT_LOWAT);
    let (mut channel, remote) = noise::accept(
        Channel::Bond,
        tcp,
        &relay.config.psk,
        &relay.config.identity,
        path::HANDSHAKE_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())?;
    let hello = tokio::time::timeout(path::HANDSHAKE_TIMEOUT, channel.recv())
        .await
        .map_err(|_| "no Hello".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("closed before Hello")?;
    let Frame::Hello { link, path: id, source } = Frame::decode(hello).map_err(|e| e.to_string())? else {
        return Err("the first frame is not Hello".into());
    };
    let key = (remote.static_key, link);
    let (shared, new) = link_for(relay, key);
    let mut welcome = Vec::new();
    Frame::Welcome {
        flags: if new { WELCOME_NEW } else { 0 },
    }
    .encode(&mut welcome);
    channel.send(&welcome).await.map_err(|e| e.to_string())?;
    let (wake, kill) = shared.add_path(id, &source, None, None);
    tracing::debug!(path = id, %source, new_link = new, "path joined");
    Ok(path::run(shared, id, channel, wake, kill, Some(fd)))
}

/// The link for `key`, created (and its janitor started) if new.
fn link_for(relay: &Arc<Relay>, key: LinkKey) -> (Arc<Shared>, bool) {
    let mut links = relay.links.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(shared) = links.get(&key) {
        return (shared.clone(), false);
    }
    let handler = Arc::new(RelayHandler {
        allow: relay.config.allow.clone(),
        flows: Mutex::new(HashMap::new()),
    });
    let shared = Shared::new(Role::Relay, Config::default(), handler, relay.stop.child_token());
    links.insert(key, shared.clone());
    tracing::info!(links = links.len(), "new bond link");
    tokio::spawn(janitor(relay.clone(), key, shared.clone()));
    (shared, true)
}

/// Drops a link that has had no path for [`LINGER`]: its streams cannot resume any more.
async fn janitor(relay: Arc<Relay>, key: LinkKey, shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shared.stop.cancelled() => break,
        }
        let pathless = shared.view(|inner| inner.pathless_since);
        if pathless.is_some_and(|t| t.elapsed() > LINGER) {
            shared.abort_all("no path for 30 s");
            break;
        }
    }
    relay.links.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    shared.stop.cancel();
    tracing::info!("bond link closed");
}

/// Whether the relay may connect to `ip`: public unicast addresses, and whatever `allow`
/// lists. Loopback, private, link-local, CGNAT, multicast, broadcast, unspecified and
/// documentation ranges are refused, for IPv4, IPv6 and IPv4-mapped IPv6.
pub fn target_allowed(ip: IpAddr, allow: &[Pattern]) -> bool {
    if allow.iter().any(|p| p.matches_ip(ip)) {
        return true;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// Resolves `target` and keeps the addresses the relay may reach. An empty list with
/// addresses resolved means every one was refused.
async fn resolve(target: &Address, allow: &[Pattern]) -> Result<Vec<SocketAddr>, Reply> {
    let addrs: Vec<SocketAddr> = match target {
        Address::Ip(addr) => vec![*addr],
        Address::Domain(name, port) => {
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((name.as_str(), *port)))
                .await
                .map_err(|_| Reply::TtlExpired)?
                .map_err(|_| Reply::HostUnreachable)?
                .collect()
        }
    };
    if addrs.is_empty() {
        return Err(Reply::HostUnreachable);
    }
    let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| target_allowed(a.ip(), allow)).collect();
    if allowed.is_empty() {
        return Err(Reply::NotAllowed);
    }
    Ok(allowed)
}

struct UdpFlow {
    socket: Arc<UdpSocket>,
    stop: CancellationToken,
}

struct RelayHandler {
    allow: Vec<Pattern>,
    flows: Mutex<HashMap<u32, UdpFlow>>,
}

impl Handler for RelayHandler {
    fn opened(&self, link: &Arc<Shared>, stream: u32, mode: Mode, target: Address) {
        let (link, allow) = (link.clone(), self.allow.clone());
        tokio::spawn(async move {
            let tcp = match connect_target(&target, &allow).await {
                Ok(tcp) => tcp,
                Err((reply, why)) => {
                    tracing::debug!(stream, target = %target.host(), %why, "bonded stream refused");
                    link.refuse(stream, reply as u8, &why);
                    return;
                }
            };
            let bound = tcp.local_addr().map(Address::Ip).unwrap_or(Address::UNSPECIFIED);
            let Some(slot) = link.slot(stream) else { return };
            link.accept(stream, bound);
            tracing::debug!(stream, target = %target.host(), ?mode, "bonded stream connected");
            let mut bonded = BondStream::new(link.clone(), stream, slot);
            let mut tcp = tcp;
            if let Err(e) = crate::pipe::pipe(&mut bonded, &mut tcp, Vec::new(), IDLE).await {
                tracing::debug!(stream, error = %e, "bonded stream ended with an error");
            }
        });
    }

    fn datagram(&self, link: &Arc<Shared>, flow: u32, target: Address, payload: Vec<u8>) {
        let socket = {
            let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
            flows.retain(|_, f| !f.stop.is_cancelled());
            flows.get(&flow).map(|f| f.socket.clone())
        };
        let (link, allow) = (link.clone(), self.allow.clone());
        let new_flow = socket.is_none();
        let socket = match socket {
            Some(s) => s,
            None => match std::net::UdpSocket::bind("[::]:0")
                .or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))
                .and_then(|s| {
                    s.set_nonblocking(true)?;
                    UdpSocket::from_std(s)
                }) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a UDP socket for a flow");
                    return;
                }
            },
        };
        if new_flow {
            let stop = link.stop.child_token();
            self.flows.lock().unwrap_or_else(|e| e.into_inner()).insert(
                flow,
                UdpFlow {
                    socket: socket.clone(),
                    stop: stop.clone(),
                },
            );
            tokio::spawn(udp_replies(link.clone(), flow, socket.clone(), stop));
        }
        tokio::spawn(async move {
            let Ok(addrs) = resolve(&target, &allow).await else {
                tracing::debug!(flow, target = %target.host(), "datagram target refused or unknown");
                return;
            };
            let to = map_for(&socket, addrs[0]);
            let _ = socket.send_to(&payload, to).await;
        });
    }
}

/// An IPv4 destination on a dual-stack socket is reached as IPv4-mapped IPv6.
fn map_for(socket: &UdpSocket, to: SocketAddr) -> SocketAddr {
    match (socket.local_addr(), to) {
        (Ok(SocketAddr::V6(_)), SocketAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        _ => to,
    }
}

/// Sends what the flow's socket receives back to the node, until the flow is idle.
async fn udp_replies(link: Arc<Shared>, flow: u32, socket: Arc<UdpSocket>, stop: CancellationToken) {
    let mode = if flow & FLOW_REDUNDANT != 0 {
        Mode::Redundant
    } else {
        Mode::Bandwidth
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = tokio::time::sleep(UDP_IDLE) => break,
            _ = stop.cancelled() => break,
        };
        let Ok((n, from)) = received else { break };
        let from = match from {
            SocketAddr::V6(v6) => v6
                .ip()
                .to_ipv4_mapped()
                .map_or(from, |v4| SocketAddr::new(IpAddr::V4(v4), v6.port())),
            v4 => v4,
        };
        link.send_datagram(flow, Address::Ip(from), buf[..n].to_vec(), mode);
    }
    stop.cancel();
}

/// Resolves, filters and connects a target; the error is the SOCKS5 reply for the node.
async fn connect_target(target: &Address, allow: &[Pattern]) -> Result<TcpStream, (Reply, String)> {
    let addrs = resolve(target, allow).await.map_err(|reply| {
        let why = if reply == Reply::NotAllowed {
            "the relay does not connect to loopback, private or special addresses (see --allow)".to_string()
        } else {
            format!("cannot resolve {}", target.host())
        };
        (reply, why)
    })?;
    let mut last = (Reply::HostUnreachable, "no address".to_string());
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(e)) => {
                let reply = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => Reply::ConnectionRefused,
                    std::io::ErrorKind::NetworkUnreachable => Reply::NetworkUnreachable,
                    _ => Reply::HostUnreachable,
                };
                last = (reply, format!("{addr}: {e}"));
            }
            Err(_) => last = (Reply::TtlExpired, format!("{addr}: connect timed out")),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_refused_unless_allowed() {
        let no = |s: &str| !target_allowed(s.parse().unwrap(), &[]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(no(ip), "{ip} must be refused");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(!no(ip), "{ip} must be allowed");
        }
        let allow = [Pattern::parse("10.99.0.0/24").unwrap()];
        assert!(target_allowed("10.99.0.1".parse().unwrap(), &allow));
        assert!(!target_allowed("10.98.0.1".parse().unwrap(), &allow));
    }
}

//! The peer network, borrower side: this node connects to peers (`booster connect`, `peer =
//! [...]`), keeps one encrypted control channel to each, and turns the uplinks each peer lends
//! into sources named `peer/uplink` that the balancer uses like local ones. A connection
//! balanced to a peer source opens its own encrypted stream channel; the peer dials the target
//! on its uplink, so DNS resolves at the peer.
//!
//! Liveness: the lender sends a heartbeat every second and a load report whenever load changes
//! (at most every 250 ms). A peer silent for [`DEAD_AFTER`] is declared dead: its sources
//! leave the balancer at once, connects in flight to it fail over to other sources, and the
//! link is re-established in the background when the peer comes back.
//!
//! The lender side is in [`crate::lend`]; the wire format is in [`proto::peer`].

use crate::{
    config::Tier,
    dial::DialError,
    noise::{self, Identity, NoiseStream},
    source::{Health, Remote, Source, SourceKind},
    state::Node,
    target::{Host, Target},
};
use proto::{
    peer::{Frame, UplinkLoad},
    socks5::Address,
};
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

/// A peer silent this long is dead (heartbeats come every second).
pub const DEAD_AFTER: Duration = Duration::from_secs(3);
/// Heartbeat period on a control channel, both ways.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Connecting to a peer and finishing the Noise handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Buffer between a peer stream's pump tasks and the data path.
const STREAM_PIPE: usize = 256 * 1024;
/// Largest Data payload per frame (a Noise message holds 65535 - 16 bytes of plaintext).
pub const MAX_DATA: usize = 32 * 1024;

/// This node's peer-channel keys.
pub struct Keys {
    pub identity: Identity,
    pub psk: [u8; 32],
}

/// A peer this node borrows from, as the API and status show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerState {
    pub addr: String,
    /// The peer's node name, once it said hello.
    pub name: Option<String>,
    /// `connecting`, `up` or `down`.
    pub state: &'static str,
    /// Public key of the peer (hex), once known.
    pub key: Option<String>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub last_seen: Option<Instant>,
    pub uplinks: Vec<String>,
    #[serde(skip)]
    pub cancel: CancellationToken,
    /// Cancelled when the current control session ends: streams through the peer stop at once
    /// instead of hanging until their idle timeout.
    #[serde(skip)]
    pub session: CancellationToken,
}

/// Starts borrowing from the peer at `addr` (host:port). Idempotent.
pub fn connect(node: &Arc<Node>, addr: String) -> Result<(), String> {
    if node.peer_keys.is_none() {
        return Err("this node has no network secret: set `secret` or `secret_file` first".into());
    }
    let cancel = node.stop.child_token();
    {
        let mut peers = node.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.contains_key(&addr) {
            return Ok(());
        }
        peers.insert(
            addr.clone(),
            PeerState {
                addr: addr.clone(),
                name: None,
                state: "connecting",
                key: None,
                last_error: None,
                last_seen: None,
                uplinks: vec![],
                cancel: cancel.clone(),
                session: CancellationToken::new(),
            },
        );
    }
    let node2 = node.clone();
    node.tasks.spawn(async move { link_loop(node2, addr, cancel).await });
    Ok(())
}

/// Stops borrowing from a peer, by address or name. Its sources leave the balancer.
pub fn disconnect(node: &Node, which: &str) -> bool {
    let removed = {
        let mut peers = node.peers.lock().unwrap_or_else(|e| e.into_inner());
        let key = peers
            .iter()
            .find(|(a, p)| a.as_str() == which || p.name.as_deref() == Some(which))
            .map(|(a, _)| a.clone());
        key.and_then(|k| peers.remove(&k))
    };
    match removed {
        Some(p) => {
            p.cancel.cancel();
            if let Some(name) = &p.name {
                retire_peer_sources(node, name);
            }
            true
        }
        None => false,
    }
}

pub fn list(node: &Node) -> Vec<PeerState> {
    let mut v: Vec<PeerState> = node
        .peers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    v.sort_by(|a, b| a.addr.cmp(&b.addr));
    v
}

fn update(node: &Node, addr: &str, f: impl FnOnce(&mut PeerState)) {
    if let Some(p) = node.peers.lock().unwrap_or_else(|e| e.into_inner()).get_mut(addr) {
        f(p);
    }
}

fn retire_peer_sources(node: &Node, peer: &str) {
    for s in node.sources() {
        if matches!(&s.kind, SourceKind::Peer { peer: p, .. } if p == peer) {
            node.retire_source(&s.name);
        }
    }
}

/// Keeps the control channel to one peer up until cancelled, reconnecting with backoff.
async fn link_loop(node: Arc<Node>, addr: String, cancel: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = control_session(&node, &addr) => r,
        };
        let name = node
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .and_then(|p| p.name.clone());
        if let Some(name) = &name {
            retire_peer_sources(&node, name);
        }
        let reason = match result {
            Ok(()) => "closed by the peer".to_string(),
            Err(e) => e,
        };
        tracing::warn!(peer = %addr, name = ?name, %reason, "peer link down");
        update(&node, &addr, |p| {
            p.state = "down";
            p.last_error = Some(reason.clone());
            p.uplinks.clear();
            p.session.cancel();
        });
        if started.elapsed() > Duration::from_secs(10) {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        update(&node, &addr, |p| p.state = "connecting");
    }
}

async fn channel(node: &Node, addr: &str) -> Result<(NoiseStream<TcpStream>, noise::Remote), String> {
    let keys = node.peer_keys.as_ref().ok_or("no network secret")?;
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    noise::connect(noise::Channel::Peer, tcp, &keys.psk, &keys.identity, HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| format!("peer handshake failed (is the secret the same on both nodes?): {e}"))
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    f.encode(&mut out);
    out
}

/// One control session: hello, then load reports and heartbeats until the peer goes silent.
async fn control_session(node: &Arc<Node>, addr: &str) -> Result<(), String> {
    let (ch, remote) = channel(node, addr).await?;
    let (mut rx, mut tx) = ch.split();
    tx.send(&encode(&Frame::Hello {
        node: node.config.name.clone(),
        flags: 1,
    }))
    .await
    .map_err(|e| e.to_string())?;
    let hello = tokio::time::timeout(DEAD_AFTER, rx.recv())
        .await
        .map_err(|_| "no hello from the peer".to_string())?;
    let name = match hello.map_err(|e| e.to_string())?.map(Frame::decode) {
        Some(Ok(Frame::Hello { node: name, .. })) => name,
        Some(Ok(other)) => return Err(format!("expected hello, got {other:?}")),
        Some(Err(e)) => return Err(format!("bad frame from the peer: {e}")),
        None => return Err("the peer closed the channel".into()),
    };
    if name == node.config.name {
        return Err(format!(
            "the peer has our own name `{name}`: give each node its own --name"
        ));
    }
    tracing::info!(peer = %addr, %name, "peer link up");
    update(node, addr, |p| {
        p.session = CancellationToken::new();
        p.name = Some(name.clone());
        p.state = "up";
        p.key = Some(hex(&remote.static_key));
        p.last_error = None;
        p.last_seen = Some(Instant::now());
    });

    // Our heartbeats let the lender notice a dead borrower.
    let beat = async move {
        let mut seq = 0u32;
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            seq = seq.wrapping_add(1);
            if tx.send(&encode(&Frame::Heartbeat { seq })).await.is_err() {
                return;
            }
        }
    };
    let receive = async {
        loop {
            let msg = match tokio::time::timeout(DEAD_AFTER, rx.recv()).await {
                Err(_) => return Err(format!("silent for {} s: declared dead", DEAD_AFTER.as_secs())),
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(m))) => m,
            };
            update(node, addr, |p| p.last_seen = Some(Instant::now()));
            match Frame::decode(msg) {
                Ok(Frame::Load { uplinks }) => apply_load(node, &name, addr, &uplinks),
                Ok(Frame::Heartbeat { .. }) => {}
                Ok(Frame::Bye { reason }) => return Err(format!("the peer said goodbye: {reason}")),
                Ok(other) => return Err(format!("unexpected frame on the control channel: {other:?}")),
                Err(e) => return Err(format!("bad frame from the peer: {e}")),
            }
        }
    };
    tokio::select! {
        r = receive => r,
        _ = beat => Err("the channel broke".into()),
    }
}

/// Creates, updates and retires the sources of a peer from its load report.
fn apply_load(node: &Node, peer: &str, addr: &str, uplinks: &[UplinkLoad]) {
    let mut names = Vec::with_capacity(uplinks.len());
    for u in uplinks {
        let name = format!("{peer}/{}", u.name);
        let source = match node.source(&name) {
            Some(s) => {
                s.retired.store(false, std::sync::atomic::Ordering::Relaxed);
                s
            }
            None => {
                tracing::info!(source = %name, "peer uplink available");
                node.add_source(Source::new(
                    name.clone(),
                    SourceKind::Peer {
                        peer: peer.to_string(),
                        addr: addr.to_string(),
                        uplink: u.name.clone(),
                    },
                    Tier::Primary,
                    None,
                    None,
                ))
            }
        };
        let health = match u.health {
            0 => Health::Up,
            1 => Health::Unknown,
            2 => Health::Degraded,
            _ => Health::Down,
        };
        let rtt = (u.rtt_us > 0).then(|| Duration::from_micros(u.rtt_us as u64));
        source.set_remote(
            health,
            u.capacity as f64,
            rtt,
            Remote {
                open: u.open as u64,
                cap_left: u.cap_left,
                max_rate: u.max_rate as f64,
            },
        );
        names.push(name);
    }
    for s in node.sources() {
        if matches!(&s.kind, SourceKind::Peer { peer: p, .. } if p == peer) && !names.contains(&s.name) {
            node.retire_source(&s.name);
        }
    }
    update(node, addr, |p| p.uplinks = names);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The far end of a peer stream, as the data path sees it: a plain byte stream. Two pump tasks
/// (owned by the node's task tracker) move bytes between it and the encrypted channel.
pub type PeerStream = tokio::io::DuplexStream;

/// Maps a lender's refusal (a SOCKS5 reply code) back to a dial error.
fn open_error(code: u8, reason: &str) -> DialError {
    match code {
        2 => DialError::Policy,
        3 => DialError::NetUnreachable,
        4 => DialError::HostUnreachable,
        5 => DialError::Refused,
        6 => DialError::Timeout,
        _ => DialError::Io(std::io::Error::other(format!("peer: {reason}"))),
    }
}

/// Opens a stream to `target` through `uplink` of the peer at `addr`. Returns the stream and
/// the address the peer's socket is bound to.
pub async fn open(
    node: &Node,
    addr: &str,
    uplink: &str,
    target: &Target,
    allow: impl Fn(std::net::IpAddr) -> bool,
) -> Result<(PeerStream, SocketAddr), DialError> {
    let (mut ch, _) = channel(node, addr)
        .await
        .map_err(|e| DialError::Io(std::io::Error::other(e)))?;
    let target = match &target.host {
        Host::Ip(ip) => Address::Ip(SocketAddr::new(*ip, target.port)),
        Host::Domain(d) => Address::Domain(d.clone(), target.port),
    };
    let io = |e: noise::NoiseError| DialError::Io(std::io::Error::other(e.to_string()));
    ch.send(&encode(&Frame::Open {
        uplink: uplink.to_string(),
        target,
    }))
    .await
    .map_err(io)?;
    let reply = ch
        .recv()
        .await
        .map_err(io)?
        .ok_or_else(|| DialError::Io(std::io::ErrorKind::UnexpectedEof.into()))?;
    let bound = match Frame::decode(reply) {
        Ok(Frame::OpenOk { bound, remote }) => {
            // The lender resolved the name: address rules apply to what it connected to.
            if let Address::Ip(sa) = remote {
                if !allow(sa.ip()) {
                    let reset = Frame::Reset {
                        code: proto::socks5::Reply::NotAllowed as u8,
                        reason: "not allowed by policy".into(),
                    };
                    let _ = ch.send(&encode(&reset)).await;
                    return Err(DialError::Policy);
                }
            }
            match bound {
                Address::Ip(sa) => sa,
                Address::Domain(..) => SocketAddr::from(([0, 0, 0, 0], 0)),
            }
        }
        Ok(Frame::OpenErr { code, reason }) => return Err(open_error(code, &reason)),
        Ok(other) => return Err(DialError::Io(std::io::Error::other(format!("peer answered {other:?}")))),
        Err(e) => {
            return Err(DialError::Io(std::io::Error::other(format!(
                "bad frame from the peer: {e}"
            ))))
        }
    };
    let session = node
        .peers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(addr)
        .map(|p| p.session.clone())
        .unwrap_or_default();
    Ok((pump(node, ch, session), bound))
}

/// Joins an encrypted stream channel to a local byte stream: Data frames one way, plain bytes
/// the other; `Fin` and end of stream cross as half-closes.
pub fn pump<S>(node: &Node, ch: NoiseStream<S>, session: CancellationToken) -> tokio::io::DuplexStream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (near, far) = tokio::io::duplex(STREAM_PIPE);
    let (mut far_rd, mut far_wr) = tokio::io::split(far);
    let (mut ch_rd, mut ch_wr) = ch.split();
    let up_session = session.clone();
    node.tasks.spawn(async move {
        let session = up_session;
        let mut buf = vec![0u8; MAX_DATA];
        let mut out = Vec::with_capacity(MAX_DATA + 2);
        loop {
            let read = tokio::select! {
                _ = session.cancelled() => return,
                r = far_rd.read(&mut buf) => r,
            };
            match read {
                Ok(0) => {
                    let _ = ch_wr.send(&encode(&Frame::Fin)).await;
                    return;
                }
                Ok(n) => {
                    out.clear();
                    Frame::data_header(&mut out);
                    out.extend_from_slice(&buf[..n]);
                    if ch_wr.send(&out).await.is_err() {
                        return;
                    }
                }
                Err(_) => {
                    let _ = ch_wr
                        .send(&encode(&Frame::Reset {
                            code: 1,
                            reason: "local error".into(),
                        }))
                        .await;
                    return;
                }
            }
        }
    });
    node.tasks.spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = session.cancelled() => break,
                r = ch_rd.recv() => match r {
                    Ok(Some(m)) => m,
                    _ => break,
                },
            };
            match Frame::decode(msg) {
                Ok(Frame::Data(d)) => {
                    if far_wr.write_all(&d).await.is_err() {
                        return;
                    }
                }
                Ok(Frame::Fin) => break,
                Ok(Frame::Reset { code, reason }) => {
                    tracing::debug!(code, %reason, "peer stream reset");
                    break;
                }
                _ => break,
            }
        }
        let _ = far_wr.shutdown().await;
    });
    near
}

//! The peer network, lender side: the peer port accepts encrypted channels from nodes that
//! hold the network secret, and lends this node's *local* uplinks to them.
//!
//! A channel's first frame says what it is: `Hello` opens a control channel (this node then
//! reports the load of each uplink it lends, and heartbeats), `Open` a stream channel (this
//! node dials the target through the named uplink, DNS included, and relays). Only local
//! uplinks are ever lent, never a peer's: chains need explicit configuration and loops cannot
//! form. The lender stays in control: `[lend]` limits which uplinks are lent, at what total
//! rate, and how many bytes a month (persisted like local usage).

use crate::{
    dial::dial,
    logs,
    noise::{self, NoiseStream},
    peer::{DEAD_AFTER, HANDSHAKE_TIMEOUT, HEARTBEAT, MAX_DATA},
    source::{Health, Source, SourceKind},
    state::Node,
    target::Target,
};
use proto::{
    peer::{Frame, UplinkLoad},
    socks5::{Address, Reply},
};
use std::{
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

/// Peer handshakes under way at once; more are refused at accept. Each holds a socket outside
/// the node's connection slots (`booster start` leaves room for them in the open-file limit);
/// a channel takes a slot once its handshake succeeded.
pub const MAX_HANDSHAKES: usize = 256;
/// How often a control channel checks whether the load changed enough to report.
const LOAD_EVERY: Duration = Duration::from_millis(250);

/// Paces lent traffic to `[lend] max_rate` across every borrower and stream (virtual time).
pub struct Pacer {
    rate: Option<f64>,
    next: Mutex<Instant>,
}

/// Burst the pacer allows after idling.
const PACER_BURST: Duration = Duration::from_millis(50);

impl Pacer {
    pub fn new(rate: Option<f64>) -> Pacer {
        Pacer {
            rate: rate.filter(|r| *r > 0.0),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits until `n` more bytes fit under the rate.
    pub async fn pace(&self, n: usize) {
        let Some(rate) = self.rate else { return };
        let due = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now.checked_sub(PACER_BURST).unwrap_or(now));
            *next = start + Duration::from_secs_f64(n as f64 / rate);
            *next
        };
        let now = Instant::now();
        if due > now + PACER_BURST {
            tokio::time::sleep(due - now - PACER_BURST).await;
        }
    }
}

fn lendable(node: &Node, s: &Source) -> bool {
    node.config.lend.enabled
        && matches!(s.kind, SourceKind::Iface { .. } | SourceKind::Emulated(_))
        && !s.retired.load(Relaxed)
        && node.config.lend.uplinks.as_ref().is_none_or(|l| l.contains(&s.name))
}

/// Bytes this node will still lend through `uplink` this month.
pub fn cap_left(node: &Node, uplink: &str) -> u64 {
    let mut left = u64::MAX;
    if let Some(cap) = node.config.lend.cap {
        let used: u64 = node
            .lent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|s| s.month_bytes())
            .sum();
        left = left.min(cap.saturating_sub(used));
    }
    if let Some(cap) = node
        .config
        .uplinks
        .iter()
        .find(|u| u.name == uplink)
        .and_then(|u| u.lend_cap)
    {
        left = left.min(cap.0.saturating_sub(node.lent(uplink).month_bytes()));
    }
    left
}

/// The load report for every uplink this node lends.
pub fn loads(node: &Node) -> Vec<UplinkLoad> {
    let max_rate = node.config.lend.max_rate.unwrap_or(0.0);
    node.sources()
        .iter()
        .filter(|s| lendable(node, s))
        .take(32)
        .map(|s| {
            let v = s.view();
            UplinkLoad {
                name: s.name.clone(),
                health: match v.health {
                    Health::Up => 0,
                    Health::Unknown => 1,
                    Health::Degraded => 2,
                    Health::Down => 3,
                },
                capacity: if max_rate > 0.0 {
                    v.capacity.min(max_rate)
                } else {
                    v.capacity
                } as u64,
                rate_rx: v.rate_rx as u64,
                rate_tx: v.rate_tx as u64,
                open: v.open.min(u32::MAX as u64) as u32,
                rtt_us: v.rtt_ms.map(|r| (r * 1000.0) as u32).unwrap_or(0),
                cap_left: cap_left(node, &s.name),
                max_rate: max_rate as u64,
            }
        })
        .collect()
}

/// Serves the peer port until `stop`.
pub async fn serve(listener: TcpListener, node: Arc<Node>, stop: CancellationToken) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, from) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    logs::throttled!(warn, logs::ACCEPTS, error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            logs::throttled!(info, logs::STRANGERS, peer = %from, "peer handshake refused: too many at once");
            continue;
        };
        let node2 = node.clone();
        node.tasks.spawn(async move {
            let _ = tcp.set_nodelay(true);
            if let Err(e) = channel(tcp, from, &node2, handshake).await {
                tracing::debug!(peer = %from, error = %e, "peer channel ended");
            }
        });
    }
}

/// Runs a peer channel: the handshake (holding `handshake`), then, in a connection slot, the
/// control channel or a stream.
async fn channel(
    tcp: TcpStream,
    from: std::net::SocketAddr,
    node: &Arc<Node>,
    handshake: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), String> {
    let keys = node.peer_keys.as_ref().ok_or("no keys")?;
    let accepted = noise::accept(noise::Channel::Peer, tcp, &keys.psk, &keys.identity, HANDSHAKE_TIMEOUT).await;
    drop(handshake);
    let mut ch = match accepted {
        Ok((ch, _remote)) => ch,
        Err(e) => {
            logs::throttled!(info, logs::STRANGERS, peer = %from, error = %e, "peer handshake refused (wrong secret?)");
            return Ok(());
        }
    };
    let Some(_slot) = node.slot() else {
        return Ok(());
    };
    let first = tokio::time::timeout(DEAD_AFTER, ch.recv())
        .await
        .map_err(|_| "no first frame")?
        .map_err(|e| e.to_string())?;
    let Some(first) = first else { return Ok(()) };
    match Frame::decode(first) {
        Ok(Frame::Hello { node: borrower, .. }) => control(ch, node, borrower).await,
        Ok(Frame::Open { uplink, target }) => stream(ch, node, uplink, target).await,
        Ok(other) => Err(format!("unexpected first frame {other:?}")),
        Err(e) => Err(format!("bad frame: {e}")),
    }
}

fn encode(f: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    f.encode(&mut out);
    out
}

async fn control(ch: NoiseStream<TcpStream>, node: &Arc<Node>, borrower: String) -> Result<(), String> {
    let (mut rx, mut tx) = ch.split();
    if !node.config.lend.enabled {
        let _ = tx
            .send(&encode(&Frame::Bye {
                reason: "this node does not lend its uplinks".into(),
            }))
            .await;
        return Ok(());
    }
    tx.send(&encode(&Frame::Hello {
        node: node.config.name.clone(),
        flags: 0,
    }))
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(%borrower, "a peer borrows our uplinks");
    let report = async {
        let mut last: Option<Vec<UplinkLoad>> = None;
        let mut last_sent = Instant::now();
        let mut seq = 0u32;
        loop {
            let now = loads(node);
            if last.as_ref().is_none_or(|l| changed(l, &now)) {
                tx.send(&encode(&Frame::Load { uplinks: now.clone() }))
                    .await
                    .map_err(|e| e.to_string())?;
                last = Some(now);
                last_sent = Instant::now();
            } else if last_sent.elapsed() >= HEARTBEAT {
                seq = seq.wrapping_add(1);
                tx.send(&encode(&Frame::Heartbeat { seq }))
                    .await
                    .map_err(|e| e.to_string())?;
                last_sent = Instant::now();
            }
            tokio::time::sleep(LOAD_EVERY).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), String>(())
    };
    let listen = async {
        loop {
            match tokio::time::timeout(DEAD_AFTER, rx.recv()).await {
                Err(_) => return Err::<(), String>(format!("borrower {borrower} went silent")),
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e.to_string()),
            }
        }
    };
    let r = tokio::select! { r = report => r, r = listen => r };
    tracing::info!(%borrower, "peer stopped borrowing");
    r
}

/// Has the load changed enough to be worth a report? (Health, cap, or more than 10% in rate,
/// capacity or open connections.)
fn changed(a: &[UplinkLoad], b: &[UplinkLoad]) -> bool {
    let far = |x: u64, y: u64| x.abs_diff(y) as f64 > 0.1 * x.max(y) as f64 + 1.0;
    a.len() != b.len()
        || a.iter().zip(b).any(|(x, y)| {
            x.name != y.name
                || x.health != y.health
                || (x.cap_left == 0) != (y.cap_left == 0)
                || far(x.capacity, y.capacity)
                || far(x.rate_rx + x.rate_tx, y.rate_rx + y.rate_tx)
                || x.open != y.open
        })
}

fn target_of(a: &Address) -> Target {
    Target::from(a)
}

async fn stream(
    mut ch: NoiseStream<TcpStream>,
    node: &Arc<Node>,
    uplink: String,
    target: Address,
) -> Result<(), String> {
    let refuse = |code: Reply, reason: String| Frame::OpenErr {
        code: code as u8,
        reason,
    };
    let pick = if uplink.is_empty() {
        node.sources()
            .into_iter()
            .filter(|s| lendable(node, s) && s.usable(Instant::now()))
            .max_by(|a, b| a.capacity().total_cmp(&b.capacity()))
    } else {
        node.source(&uplink).filter(|s| lendable(node, s))
    };
    let Some(source) = pick else {
        let f = refuse(Reply::NotAllowed, format!("uplink `{uplink}` is not lent"));
        return ch.send(&encode(&f)).await.map_err(|e| e.to_string());
    };
    if cap_left(node, &source.name) == 0 {
        let f = refuse(
            Reply::NotAllowed,
            format!("the lending cap of `{}` is used up", source.name),
        );
        return ch.send(&encode(&f)).await.map_err(|e| e.to_string());
    }
    let t = target_of(&target);
    let policies = node.policies();
    let name = t.domain().map(str::to_owned);
    let allow = |ip| policies.permits(&source.name, name.as_deref(), ip);
    let conn = match dial(node, &source, &t, &node.dial_opts, allow).await {
        Ok(c) => c,
        Err(e) => {
            if e.source_fault() {
                source.record_failure(Instant::now());
            }
            let f = refuse(e.socks_reply(), e.to_string());
            return ch.send(&encode(&f)).await.map_err(|e| e.to_string());
        }
    };
    source.record_success(Some(conn.connect_time));
    let ok = Frame::OpenOk {
        bound: Address::Ip(conn.local_addr),
        remote: Address::Ip(conn.peer_addr),
    };
    ch.send(&encode(&ok)).await.map_err(|e| e.to_string())?;

    let lent = node.lent(&source.name);
    let idle = node.config.idle_timeout;
    let (mut up_rd, mut up_wr) = tokio::io::split(conn);
    let (mut ch_rd, mut ch_wr) = ch.split();
    let pacer = &node.lend_pacer;
    let to_target = async {
        loop {
            let msg = tokio::time::timeout(idle, ch_rd.recv())
                .await
                .map_err(|_| "idle".to_string())?
                .map_err(|e| e.to_string())?;
            let Some(msg) = msg else {
                return Err("borrower closed the stream without a Fin".to_string());
            };
            match Frame::decode(msg) {
                Ok(Frame::Data(d)) => {
                    pacer.pace(d.len()).await;
                    up_wr.write_all(&d).await.map_err(|e| e.to_string())?;
                    lent.tx.fetch_add(d.len() as u64, Relaxed);
                }
                Ok(Frame::Fin) => {
                    let _ = up_wr.shutdown().await;
                    return Ok(());
                }
                Ok(Frame::Reset { reason, .. }) => return Err(format!("reset by the borrower: {reason}")),
                Ok(other) => return Err(format!("unexpected frame {other:?}")),
                Err(e) => return Err(format!("bad frame: {e}")),
            }
        }
    };
    let from_target = async {
        let mut buf = vec![0u8; MAX_DATA];
        let mut out = Vec::with_capacity(MAX_DATA + 2);
        loop {
            let n = match tokio::time::timeout(idle, up_rd.read(&mut buf)).await {
                Err(_) => return Err("idle".to_string()),
                Ok(Err(e)) => {
                    let _ = ch_wr
                        .send(&encode(&Frame::Reset {
                            code: Reply::GeneralFailure as u8,
                            reason: e.to_string(),
                        }))
                        .await;
                    return Err(e.to_string());
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                ch_wr.send(&encode(&Frame::Fin)).await.map_err(|e| e.to_string())?;
                return Ok(());
            }
            pacer.pace(n).await;
            out.clear();
            Frame::data_header(&mut out);
            out.extend_from_slice(&buf[..n]);
            ch_wr.send(&out).await.map_err(|e| e.to_string())?;
            lent.rx.fetch_add(n as u64, Relaxed);
        }
    };
    tokio::try_join!(to_target, from_target).map(|_| ())
}

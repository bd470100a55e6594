//! Paths: one Noise-encrypted TCP connection per (source, relay). [`run`] moves frames
//! between a path's socket and the link, on either end. [`supervise`] is the node's side: it
//! keeps one path up through one source, redialling with backoff when it drops.

use super::link::Shared;
use super::Relay;
use crate::{
    dial::{self, DialOpts},
    noise::{self, Channel, NoiseStream},
    source::{Health, Source},
    state::Node,
};
use proto::bond::{Frame, WELCOME_NEW};
use std::{
    os::fd::{AsRawFd, RawFd},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// `TCP_NOTSENT_LOWAT` of a path: the kernel holds at most about this much unsent, so the
/// scheduler decides where each frame goes with fresh numbers.
pub const NOTSENT_LOWAT: u32 = 32 * 1024;
/// Budget for the Noise handshake plus `Hello`/`Welcome`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// Moves frames between `channel` and the link until the path fails, is killed, or the far
/// end closes it; then removes the path from the link. `tcp`, the path's socket when it is a
/// local TCP one, is read for the kernel's retransmission share (the path's loss).
pub async fn run<S>(
    shared: Arc<Shared>,
    id: u32,
    channel: NoiseStream<S>,
    wake: Arc<Notify>,
    kill: CancellationToken,
    tcp: Option<RawFd>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = channel.split();
    let receiving = async {
        loop {
            let frame = match reader.recv().await {
                Ok(Some(msg)) => Frame::decode(msg).map_err(|e| e.to_string())?,
                Ok(None) => return Err("closed by the far end".to_string()),
                Err(e) => return Err(e.to_string()),
            };
            shared
                .with(true, |inner| inner.link.on_frame(id, frame, Instant::now()))
                .map_err(|e| format!("protocol error: {e}"))?;
        }
    };
    let sending = async {
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            let ready = shared.with(false, |inner| inner.link.poll_transmit(id, Instant::now(), &mut buf));
            if ready {
                writer.send(&buf).await.map_err(|e| e.to_string())?;
                // Other paths' expected arrival times just changed.
                shared.with(true, |_| ());
            } else {
                wake.notified().await;
            }
        }
    };
    let loss = async {
        let Some(fd) = tcp else {
            return std::future::pending().await;
        };
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let mut last = (0u32, 0u32);
        let mut loss = 0.0;
        loop {
            every.tick().await;
            let Ok(info) = crate::sys::tcp_info(&fd) else { continue };
            let (retrans, segs) = (
                info.total_retrans.wrapping_sub(last.0),
                info.segs_out.wrapping_sub(last.1),
            );
            last = (info.total_retrans, info.segs_out);
            if segs > 0 {
                loss = (loss * 3.0 + f64::from(retrans) / f64::from(segs)) / 4.0;
                shared.with(false, |inner| inner.link.set_path_loss(id, loss));
            }
        }
    };
    let why: Result<(), String> = tokio::select! {
        r = receiving => r,
        r = sending => r,
        () = loss => Ok(()),
        _ = kill.cancelled() => Ok(()),
    };
    if let Err(why) = why {
        tracing::debug!(path = id, %why, "bond path closed");
    }
    shared.remove_path(id);
}

/// Node: keeps a path to `relay` up through `source` until the source is retired or the
/// node stops.
pub async fn supervise(node: Arc<Node>, relay: Arc<Relay>, source: Arc<Source>, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if stop.is_cancelled() || source.retired.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if !source.usable(Instant::now()) || source.over_cap() {
            if sleep_or_stop(Duration::from_millis(500), &stop).await {
                return;
            }
            continue;
        }
        match connect(&node, &relay, &source).await {
            Ok((id, channel, rtt)) => {
                backoff = BACKOFF_MIN;
                let shared = &relay.shared;
                let (wake, kill) = shared.add_path(id, &source.name, Some(source.capacity()), Some(rtt));
                tracing::debug!(relay = %relay.addr, source = %source.name, path = id, ?rtt, "bond path up");
                let watch = watch_source(&source, &kill, &stop);
                let fd = channel.get_ref().tcp().map(AsRawFd::as_raw_fd);
                tokio::select! {
                    () = run(shared.clone(), id, channel, wake, kill.clone(), fd) => {}
                    why = watch => {
                        if let Some(why) = why {
                            tracing::info!(relay = %relay.addr, source = %source.name, path = id, "bond path closed: {why}");
                        }
                        kill.cancel();
                    }
                }
                shared.remove_path(id);
            }
            Err(e) => {
                tracing::debug!(relay = %relay.addr, source = %source.name, error = %e, "bond path failed");
                if sleep_or_stop(backoff, &stop).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Resolves when the source may no longer carry the path, with the reason, or with `None`
/// when the path was killed or the node stops. A source whose interface went down closes
/// its path at once: its frames go out on the others now rather than after the stall
/// timeout, and the uplink gets a fresh path when it returns (the old socket may never
/// recover, since a phone that reconnects usually comes back with a new address).
async fn watch_source(source: &Source, kill: &CancellationToken, stop: &CancellationToken) -> Option<&'static str> {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = kill.cancelled() => return None,
            _ = stop.cancelled() => return None,
        }
        if source.retired.load(std::sync::atomic::Ordering::Relaxed) {
            return Some("its uplink was removed");
        }
        if source.health() == Health::Down {
            return Some("its uplink went down");
        }
        if source.over_cap() {
            return Some("its uplink reached its data cap");
        }
    }
}

async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.cancelled() => true,
    }
}

/// Dials the relay through `source`, runs the Noise handshake and `Hello`/`Welcome`.
/// Returns the path id, the channel and the `Hello` round trip.
async fn connect(
    node: &Node,
    relay: &Relay,
    source: &Arc<Source>,
) -> Result<(u32, NoiseStream<dial::Metered>, Duration), String> {
    let keys = node.peer_keys.as_ref().ok_or("no network secret")?;
    let opts = DialOpts {
        notsent_lowat: Some(NOTSENT_LOWAT),
        ..node.dial_opts.clone()
    };
    let tcp = dial::dial(node, source, &relay.target, &opts, |_| true)
        .await
        .map_err(|e| e.to_string())?;
    let (mut channel, _) = noise::connect(Channel::Bond, tcp, &keys.psk, &keys.identity, HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let id = relay.shared.path_id();
    let mut hello = Vec::new();
    Frame::Hello {
        link: relay.link_id,
        path: id,
        source: source.name.clone(),
    }
    .encode(&mut hello);
    let sent = Instant::now();
    let welcome = async {
        channel.send(&hello).await.map_err(|e| e.to_string())?;
        match channel.recv().await {
            Ok(Some(msg)) => Frame::decode(msg).map_err(|e| e.to_string()),
            Ok(None) => Err("the relay closed the path".to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    let flags = match tokio::time::timeout(HANDSHAKE_TIMEOUT, welcome).await {
        Ok(Ok(Frame::Welcome { flags })) => flags,
        Ok(Ok(other)) => return Err(format!("expected Welcome, got {other:?}")),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("the relay did not answer Hello".into()),
    };
    let rtt = sent.elapsed();
    if flags & WELCOME_NEW != 0 && relay.shared.view(|inner| inner.link.stream_count()) > 0 {
        tracing::warn!(relay = %relay.addr, "the relay lost this node's streams (it restarted?); resetting them");
        relay.shared.abort_all("the relay restarted");
    }
    Ok((id, channel, rtt))
}

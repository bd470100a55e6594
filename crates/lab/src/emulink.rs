//! The in-process link emulation tier: an emulated uplink over loopback, no root needed.
//!
//! An [`EmuLink`] is a control handle (rate, RTT, jitter, stall, cut) shared by every stream on
//! the link. [`EmuLink::connect`] dials through the link; [`EmuLink::wrap`] shapes any existing
//! stream (the "far" side). The caller gets an [`EmuStream`] (the "near", client side).
//!
//! Data path, per stream and direction (see `pump`):
//!
//! ```text
//! source --read segment--> [in-flight budget] --link pacer--> delay line (RTT/2 + jitter) --> sink
//! ```
//!
//! - The **pacer** is one virtual-time token bucket per direction per link (`next_free += len/rate`),
//!   so all streams of a link share its capacity. Each stream holds at most one reservation at a
//!   time, which interleaves competing streams segment by segment (fair).
//! - The **in-flight budget** (about one bandwidth-delay product, at least 64 KiB) bounds what a
//!   stream holds in the delay line, so backpressure reaches the sender.
//! - **Stall** freezes both stages; **cut** ends every stream of the link at once: its tasks stop,
//!   both sides are dropped, and the near side reads and writes `ConnectionReset`.
//!
//! Every pump task is owned by the link's `JoinSet`; a stream whose client side is dropped stops
//! its down direction at once and its up direction after delivering what was in flight.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::profile::LinkSpec;

/// Largest segment moved through the pacer at once. Small enough that streams interleave finely
/// (16 KiB is 33 ms at 4 Mbit/s), large enough to keep per-segment overhead low at high rates.
const SEGMENT: usize = 16 * 1024;
/// An idle link may send this much at once without waiting (a small burst, like a NIC queue)...
const BURST: u64 = SEGMENT as u64;
/// ...or this much time's worth, if more: at high rates a segment is shorter than the timer's
/// 1 ms resolution, and a late wake-up must not lose link time.
const BURST_MIN: Duration = Duration::from_millis(4);
/// Packet size used to turn the per-packet loss rate into a per-segment one.
const MSS: usize = 1448;
/// The in-flight budget per stream and direction is one BDP, clamped to this range.
const MIN_INFLIGHT: usize = 64 * 1024;
const MAX_INFLIGHT: usize = 16 * 1024 * 1024;
/// Buffer of the in-memory pipe between the near side and the pumps.
const PIPE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    stalled: bool,
    cut: bool,
    /// Bumped by every cut and by restoring from a cut: a stream is alive only while the epoch
    /// it was born in is current and the link is not cut.
    epoch: u64,
}

impl State {
    fn kills(&self, epoch: u64) -> bool {
        self.cut || self.epoch != epoch
    }
}

/// Virtual-time token bucket for one direction of a link.
struct Pacer {
    next_free: Mutex<Option<Instant>>,
}

impl Pacer {
    /// Reserves the link for `len` bytes starting no earlier than now; returns when the last byte
    /// has left. A rate of 0 means unlimited.
    fn reserve(&self, len: usize, rate_bps: u64, now: Instant) -> Instant {
        if rate_bps == 0 {
            return now;
        }
        let mut next = self.next_free.lock().unwrap();
        let burst = tx_time(BURST, rate_bps).max(BURST_MIN);
        let earliest = now.checked_sub(burst).unwrap_or(now);
        let start = next.map_or(earliest, |n| n.max(earliest));
        let done = start + tx_time(len as u64, rate_bps);
        *next = Some(done);
        done
    }
}

fn tx_time(bytes: u64, rate_bps: u64) -> Duration {
    Duration::from_nanos((u128::from(bytes) * 8_000_000_000 / u128::from(rate_bps.max(1))) as u64)
}

struct Shared {
    name: String,
    rate_bps: AtomicU64,
    rtt_ns: AtomicU64,
    jitter_ns: AtomicU64,
    /// Packet loss probability (f64 bits), from the spec; see `one_way`.
    loss_bits: AtomicU64,
    state: watch::Sender<State>,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    pacers: [Pacer; 2],
}

#[derive(Clone, Copy)]
enum Dir {
    /// Far side to the client.
    Down = 0,
    /// Client to the far side.
    Up = 1,
}

impl Shared {
    /// The one-way delay for a segment of `len` bytes sent now: half the RTT, plus jitter, plus
    /// one more RTT if any of its packets is "lost" (what a TCP retransmission would cost; the
    /// bytes themselves are never dropped, this is a byte-stream emulation).
    fn one_way(&self, len: usize) -> Duration {
        let mut rng = rand::rng();
        let rtt = self.rtt_ns.load(Ordering::Relaxed);
        let jitter = self.jitter_ns.load(Ordering::Relaxed);
        let mut ns = rtt / 2;
        if jitter > 0 {
            ns += rng.random_range(0..=jitter);
        }
        let loss = f64::from_bits(self.loss_bits.load(Ordering::Relaxed));
        if loss > 0.0 {
            let packets = len.div_ceil(MSS).max(1) as i32;
            let p_any = 1.0 - (1.0 - loss.min(1.0)).powi(packets);
            if rng.random_bool(p_any) {
                ns += rtt;
            }
        }
        Duration::from_nanos(ns)
    }

    fn counter(&self, dir: Dir) -> &AtomicU64 {
        match dir {
            Dir::Down => &self.bytes_down,
            Dir::Up => &self.bytes_up,
        }
    }

    fn modify(&self, f: impl FnOnce(&mut State)) {
        self.state.send_modify(f);
    }
}

/// An emulated uplink. Cheap to clone; all clones control the same link.
///
/// Pump tasks belong to the link: they stop when the last clone of the handle and the last of its
/// streams are dropped.
#[derive(Clone)]
pub struct EmuLink {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl std::fmt::Debug for EmuLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuLink")
            .field("name", &self.shared.name)
            .field("rate_bps", &self.shared.rate_bps.load(Ordering::Relaxed))
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl EmuLink {
    pub fn new(spec: &LinkSpec) -> EmuLink {
        let shared = Shared {
            name: spec.name.to_string(),
            rate_bps: AtomicU64::new(spec.rate_bps),
            rtt_ns: AtomicU64::new(spec.rtt.as_nanos() as u64),
            jitter_ns: AtomicU64::new(spec.jitter.as_nanos() as u64),
            loss_bits: AtomicU64::new(spec.loss.clamp(0.0, 1.0).to_bits()),
            state: watch::Sender::new(State {
                stalled: false,
                cut: false,
                epoch: 0,
            }),
            bytes_down: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            pacers: [
                Pacer {
                    next_free: Mutex::new(None),
                },
                Pacer {
                    next_free: Mutex::new(None),
                },
            ],
        };
        EmuLink {
            shared: Arc::new(shared),
            tasks: Arc::new(Mutex::new(JoinSet::new())),
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Rate in bits per second, each direction; 0 means unlimited.
    pub fn set_rate(&self, bps: u64) {
        self.shared.rate_bps.store(bps, Ordering::Relaxed);
    }

    pub fn set_rtt(&self, rtt: Duration) {
        self.shared.rtt_ns.store(rtt.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn set_jitter(&self, jitter: Duration) {
        self.shared.jitter_ns.store(jitter.as_nanos() as u64, Ordering::Relaxed);
    }

    /// While on, no bytes move in either direction; connections stay open.
    pub fn stall(&self, on: bool) {
        self.shared.modify(|s| s.stalled = on);
    }

    /// Every open stream fails (ConnectionReset) and new connects fail, until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.shared.modify(|s| {
            s.cut = true;
            s.epoch += 1;
        });
    }

    /// Undoes stall and cut. Streams that were cut stay dead; new ones work.
    pub fn restore(&self) {
        self.shared.modify(|s| {
            if s.cut {
                s.cut = false;
                s.epoch += 1;
            }
            s.stalled = false;
        });
    }

    /// False while the link is cut (a stalled link is up, just not moving).
    pub fn is_up(&self) -> bool {
        !self.shared.state.borrow().cut
    }

    /// Payload bytes delivered towards the client side so far.
    pub fn bytes_down(&self) -> u64 {
        self.shared.bytes_down.load(Ordering::Relaxed)
    }

    /// Payload bytes delivered towards the far side so far.
    pub fn bytes_up(&self) -> u64 {
        self.shared.bytes_up.load(Ordering::Relaxed)
    }

    /// Pump tasks still running on this link (one per open stream), for leak checks.
    pub fn active_streams(&self) -> usize {
        let mut tasks = self.tasks.lock().unwrap();
        while tasks.try_join_next().is_some() {}
        tasks.len()
    }

    /// Connects to `addr` over this link. Takes one RTT (the SYN / SYN-ACK) before the TCP
    /// connect; fails with `NetworkUnreachable` if the link is cut, or as the connect fails.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<EmuStream> {
        let unreachable = || {
            io::Error::new(
                io::ErrorKind::NetworkUnreachable,
                format!("link {} is cut", self.name()),
            )
        };
        let mut rx = self.shared.state.subscribe();
        if rx.borrow().cut {
            return Err(unreachable());
        }
        let handshake = async {
            let rtt = Duration::from_nanos(self.shared.rtt_ns.load(Ordering::Relaxed));
            tokio::time::sleep(rtt).await;
            // A stalled link holds the SYN-ACK until it moves again.
            let _ = self.shared.state.subscribe().wait_for(|s| !s.stalled || s.cut).await;
        };
        tokio::select! {
            _ = rx.wait_for(|s| s.cut) => return Err(unreachable()),
            _ = handshake => {}
        }
        if self.shared.state.borrow().cut {
            return Err(unreachable());
        }
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        Ok(self.wrap(tcp))
    }

    /// Wraps an existing stream (the far side) so traffic through it is shaped by this link.
    /// Must be called within a tokio runtime.
    pub fn wrap<S>(&self, inner: S) -> EmuStream
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (near, far) = tokio::io::duplex(PIPE);
        let epoch = self.shared.state.borrow().epoch;
        let ctl = Arc::new(StreamCtl {
            error: Mutex::new(None),
            kill: CancellationToken::new(),
        });
        let client_gone = ctl.kill.child_token();
        let run = run_stream(self.shared.clone(), epoch, ctl.clone(), client_gone.clone(), inner, far);
        let mut tasks = self.tasks.lock().unwrap();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(run);
        drop(tasks);
        EmuStream {
            io: near,
            shared: self.shared.clone(),
            epoch,
            ctl,
            _client_gone: client_gone.drop_guard(),
            _tasks: self.tasks.clone(),
        }
    }
}

/// Per-stream control shared by the near side and its pump task.
struct StreamCtl {
    /// Set when the stream died of an error (cut, or a far-side error); the near side reports
    /// it instead of a clean end of file.
    error: Mutex<Option<io::ErrorKind>>,
    /// Ends both directions now.
    kill: CancellationToken,
}

impl StreamCtl {
    fn fail(&self, kind: io::ErrorKind) {
        self.error.lock().unwrap().get_or_insert(kind);
        self.kill.cancel();
    }
}

/// One stream's pumps, as one task: the up and down directions run concurrently, and the whole
/// stream ends on a cut or a kill. Dropping the halves here closes the far side.
async fn run_stream<S>(
    shared: Arc<Shared>,
    epoch: u64,
    ctl: Arc<StreamCtl>,
    client_gone: CancellationToken,
    inner: S,
    far: DuplexStream,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (inner_r, inner_w) = tokio::io::split(inner);
    let (far_r, far_w) = tokio::io::split(far);
    let inflight = {
        let rate = shared.rate_bps.load(Ordering::Relaxed) as f64 / 8.0;
        let rtt = Duration::from_nanos(shared.rtt_ns.load(Ordering::Relaxed)).as_secs_f64();
        ((rate * rtt) as usize).clamp(MIN_INFLIGHT, MAX_INFLIGHT)
    };
    let up = pump(&shared, Dir::Up, &ctl, inflight, far_r, inner_w);
    let down = async {
        tokio::select! {
            _ = client_gone.cancelled() => {}
            _ = pump(&shared, Dir::Down, &ctl, inflight, inner_r, far_w) => {}
        }
    };
    let mut rx = shared.state.subscribe();
    tokio::select! {
        _ = rx.wait_for(|s| s.kills(epoch)) => ctl.fail(io::ErrorKind::ConnectionReset),
        _ = ctl.kill.cancelled() => {}
        _ = async { tokio::join!(up, down) } => {}
    }
}

enum Item {
    Data(Bytes, OwnedSemaphorePermit),
    Eof,
    Error(io::ErrorKind),
}

/// Waits until the link is not stalled (cuts are handled by the caller's select).
async fn unstalled(rx: &mut watch::Receiver<State>) {
    let _ = rx.wait_for(|s| !s.stalled).await;
}

/// Moves one direction: a reader stage (read, budget, pace, stamp) and a writer stage (wait for
/// the stamp, deliver) joined by a queue bounded by the in-flight budget.
async fn pump<R, W>(shared: &Shared, dir: Dir, ctl: &StreamCtl, inflight: usize, mut src: R, mut dst: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let budget = Arc::new(Semaphore::new(inflight));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Item)>();
    let reader = async {
        let mut state = shared.state.subscribe();
        let mut last = Instant::now();
        let mut buf = BytesMut::with_capacity(SEGMENT);
        loop {
            buf.reserve(SEGMENT);
            let item = match (&mut src).take(SEGMENT as u64).read_buf(&mut buf).await {
                Ok(0) => Item::Eof,
                Ok(n) => {
                    let Ok(permit) = budget.clone().acquire_many_owned(n as u32).await else {
                        return;
                    };
                    unstalled(&mut state).await;
                    let rate = shared.rate_bps.load(Ordering::Relaxed);
                    let done = shared.pacers[dir as usize].reserve(n, rate, Instant::now());
                    tokio::time::sleep_until(done).await;
                    Item::Data(buf.split().freeze(), permit)
                }
                Err(e) => Item::Error(e.kind()),
            };
            // Order is kept: jitter never lets a segment overtake the one before it.
            let len = if let Item::Data(b, _) = &item { b.len() } else { 0 };
            last = last.max(Instant::now() + shared.one_way(len));
            let end = !matches!(item, Item::Data(..));
            if tx.send((last, item)).is_err() || end {
                return;
            }
        }
    };
    let writer = async {
        let mut state = shared.state.subscribe();
        while let Some((at, item)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            unstalled(&mut state).await;
            match item {
                Item::Data(bytes, permit) => {
                    if let Err(e) = dst.write_all(&bytes).await {
                        if matches!(dir, Dir::Up) {
                            ctl.fail(e.kind());
                        }
                        return;
                    }
                    drop(permit);
                    shared.counter(dir).fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Item::Eof => {
                    let _ = dst.shutdown().await;
                    return;
                }
                Item::Error(kind) => {
                    ctl.fail(kind);
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

/// The client side of a stream through an [`EmuLink`].
///
/// `shutdown()` reaches the far side as a half-close after the one-way delay. After a cut, reads
/// and writes fail with `ConnectionReset`; a far-side error is reported the same way it arrived.
pub struct EmuStream {
    io: DuplexStream,
    shared: Arc<Shared>,
    epoch: u64,
    ctl: Arc<StreamCtl>,
    /// Dropping the stream stops its down direction (nobody is left to read it).
    _client_gone: DropGuard,
    /// Keeps the link's tasks alive while a stream is in use, even if the handle is dropped.
    _tasks: Arc<Mutex<JoinSet<()>>>,
}

impl std::fmt::Debug for EmuStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuStream")
            .field("link", &self.shared.name)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl EmuStream {
    /// The link was cut under this stream: fail at once, even with data still buffered.
    fn cut_error(&self) -> Option<io::Error> {
        let cut = self.shared.state.borrow().kills(self.epoch);
        cut.then(|| io::Error::new(io::ErrorKind::ConnectionReset, format!("link {} cut", self.shared.name)))
    }

    /// The error this stream died of, if any (cut, or an error from the far side).
    fn dead(&self) -> Option<io::Error> {
        if let Some(e) = self.cut_error() {
            return Some(e);
        }
        let kind = (*self.ctl.error.lock().unwrap())?;
        Some(io::Error::new(kind, format!("through link {}", self.shared.name)))
    }
}

impl AsyncRead for EmuStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.cut_error() {
            return Poll::Ready(Err(e));
        }
        // A far-side error comes after the data that preceded it, as with a TCP reset.
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            // End of file: clean, or because the pumps stopped on an error.
            Poll::Ready(Ok(())) if buf.filled().len() == before => match this.dead() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Ready(Ok(())),
            },
            other => other,
        }
    }
}

impl AsyncWrite for EmuStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.dead() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.dead() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_shares_capacity_and_allows_a_small_burst() {
        let p = Pacer {
            next_free: Mutex::new(None),
        };
        let t0 = Instant::now();
        let rate = 8_000_000; // 1 MB/s
                              // Idle link: the first segment goes at once (burst).
        assert!(p.reserve(SEGMENT, rate, t0) <= t0 + Duration::from_micros(1));
        // Back to back reservations queue behind each other, whoever makes them.
        let a = p.reserve(100_000, rate, t0);
        let b = p.reserve(100_000, rate, t0);
        assert_eq!(b - a, Duration::from_millis(100));
        assert_eq!(p.reserve(10, 0, t0), t0, "rate 0 is unlimited");
    }

    #[test]
    fn loss_costs_one_more_rtt_and_jitter_stays_in_bounds() {
        let mut spec = LinkSpec {
            name: "t",
            rate_bps: 1_000_000,
            rtt: Duration::from_millis(100),
            jitter: Duration::ZERO,
            loss: 1.0,
        };
        let link = EmuLink::new(&spec);
        assert_eq!(link.shared.one_way(1000), Duration::from_millis(150));
        spec.loss = 0.0;
        let link = EmuLink::new(&spec);
        link.set_jitter(Duration::from_millis(10));
        for _ in 0..100 {
            let d = link.shared.one_way(SEGMENT);
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(60),
                "{d:?}"
            );
        }
    }

    #[test]
    fn tx_time_is_exact() {
        assert_eq!(tx_time(1_000_000, 8_000_000), Duration::from_secs(1));
        assert_eq!(tx_time(1500, 12_000), Duration::from_secs(1));
    }
}

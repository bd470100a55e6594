//! [`Link`]: one end of a bond, node or relay. It owns the streams and the paths' books and
//! decides, each time a path can take a frame, which frame that is.
//!
//! The engine drives it: it hands over every frame a path receives ([`Link::on_frame`]), asks
//! for the next frame whenever a path's socket has room ([`Link::poll_transmit`]), moves
//! stream bytes in and out ([`Link::write`], [`Link::read`]), calls [`Link::on_tick`] every
//! few tens of milliseconds, and acts on [`Link::poll_event`].
//!
//! # Scheduling
//! Each frame goes out in this order of priority: the path's own ack and pong, a ping if the
//! path has been quiet for a second, stream control and re-sends of a dead path's frames,
//! datagrams, redundant streams, then bandwidth streams. A bandwidth segment goes on the
//! asking path only if that path is expected to deliver it no later than any other
//! ([`Path::eta`]: bytes not yet acked at the measured rate, or half the minimum RTT when
//! idle). Otherwise the path stays idle and the better path takes the segment when it asks.
//! So a slow path only gets bytes it will deliver in time, and it never holds up the stream.

use super::frame::{Frame, Mode};
use super::path::{Path, PathInfo, Sent};
use super::stream::{RecvError, RecvHalf, SendHalf};
use crate::socks5::Address;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Which end of the bond this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens streams and dials paths.
    Node,
    /// Accepts paths and streams and connects to the targets.
    Relay,
}

/// Tunables. The defaults suit home uplinks of 1–100 Mbit/s and RTTs up to about 600 ms.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bytes of one stream the far end may send beyond what the application has read: the
    /// reorder buffer's bound. It must cover the rate of all paths times the RTT spread.
    pub recv_window: u64,
    /// Bytes of one stream held for sending (not yet acked).
    pub send_buffer: usize,
    /// Payload bytes per data frame.
    pub segment: usize,
    /// Redundant frames go on this many paths with the lowest RTT; 0 = all.
    pub redundant_paths: usize,
    /// A path stalled for max(3 × RTT, this) while others move is suspect: copies of what it
    /// carries go on the others, and it gets nothing new until its acks move again.
    pub dead_after: Duration,
    /// A stalled path is dead after this, whether others move or not.
    pub dead_alone_after: Duration,
    /// An idle path is pinged this often (RTT, liveness).
    pub ping_every: Duration,
    /// Datagrams waiting for a path are dropped beyond this many.
    pub max_datagrams: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            recv_window: 8 << 20,
            send_buffer: 4 << 20,
            segment: 16 << 10,
            redundant_paths: 0,
            dead_after: Duration::from_millis(300),
            dead_alone_after: Duration::from_secs(5),
            ping_every: Duration::from_secs(1),
            max_datagrams: 256,
        }
    }
}

/// Something the engine must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Relay: the node asks for a stream to `target`; answer with [`Link::accept`] or
    /// [`Link::refuse`].
    Opened { stream: u32, mode: Mode, target: Address },
    /// Node: the relay connected the stream.
    OpenOk { stream: u32, bound: Address },
    /// Node: the relay could not connect; `code` is a SOCKS5 reply code.
    OpenErr { stream: u32, code: u8, reason: String },
    /// Bytes or the end of the stream can be read.
    Readable(u32),
    /// The stream's send buffer has room again.
    Writable(u32),
    /// The far end aborted the stream; its state is gone.
    Reset { stream: u32, code: u8, reason: String },
    /// Both directions ended and every byte was acked; the stream's state is gone.
    Closed(u32),
    Datagram {
        flow: u32,
        target: Address,
        payload: Vec<u8>,
    },
    /// The path stalled while others moved: copies of its frames went on the others, and it
    /// gets nothing new until its acks move again (it stays up: a stall is often a queue or a
    /// retransmit timeout, and the path comes back by itself).
    PathStalled { path: u32, stalled: Duration },
    /// The path stopped delivering; its frames went back into the queue. Close its socket.
    PathDead { path: u32, stalled: Duration },
}

/// The far end broke the protocol on a path; close that path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("frame on an unknown path {0}")]
    UnknownPath(u32),
    #[error("ack count out of range")]
    BadAck,
    #[error("stream {0}: {1}")]
    Stream(u32, RecvError),
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
    /// No longer returned: the relay now stops waiting for a stream id that is too far behind
    /// (see `MAX_OPEN_GAPS`) instead of refusing the path. Kept so matches still compile.
    #[error("too many streams opened out of order")]
    TooManyGaps,
}

#[derive(Debug)]
struct Stream {
    mode: Mode,
    /// Node: `OpenOk` arrived. Relay: [`Link::accept`] was called. A copy of `OpenOk` re-sent
    /// after its path died (the first copy arrived, its ack did not) must not report twice.
    /// Data goes out only once this is set, so it never reaches the relay before its `Open`
    /// (the relay would ack it and drop it).
    accepted: bool,
    send: SendHalf,
    recv: RecvHalf,
}

/// A frame waiting for any path: stream control, or a dead path's data to send again.
#[derive(Debug)]
enum Pending {
    Control(Frame),
    Data { stream: u32, offset: u64 },
}

#[derive(Debug)]
struct Datagram {
    frame: Frame,
    mode: Mode,
    sent_on: Vec<u32>,
}

/// One end of a bond.
#[derive(Debug)]
pub struct Link {
    role: Role,
    config: Config,
    paths: BTreeMap<u32, Path>,
    streams: BTreeMap<u32, Stream>,
    next_stream: u32,
    /// Relay: stream ids at or below `opened_floor`, or in `opened`, were opened once (or
    /// reset before their `Open` arrived) and are never opened again: a late copy of an `Open`
    /// must not dial twice, nor an `Open` overtaken by its stream's `Reset` dial at all.
    opened_floor: u32,
    opened: BTreeSet<u32>,
    pending: VecDeque<Pending>,
    datagrams: VecDeque<Datagram>,
    next_datagram: u32,
    seen_datagrams: SeenDatagrams,
    /// Round-robin position among bandwidth streams.
    cursor: u32,
    events: VecDeque<Event>,
    next_nonce: u64,
    /// Bytes sent beyond the first copy by redundant streams and datagrams.
    pub redundant_bytes: u64,
}

/// Recent `(flow, id)` pairs, to drop redundant copies: a set and its insertion order.
type SeenDatagrams = (HashSet<(u32, u32)>, VecDeque<(u32, u32)>);

/// Relay: stream ids above `opened_floor` remembered individually. Ids come in order, so a
/// gap this far behind is a stream whose `Open` will never come (the node reset it before
/// sending it, or the relay restarted mid-way): the relay stops waiting for it.
const MAX_OPEN_GAPS: usize = 4096;
const MAX_SEEN_DATAGRAMS: usize = 4096;

impl Link {
    pub fn new(role: Role, config: Config) -> Link {
        Link {
            role,
            config,
            paths: BTreeMap::new(),
            streams: BTreeMap::new(),
            next_stream: 1,
            opened_floor: 0,
            opened: BTreeSet::new(),
            pending: VecDeque::new(),
            datagrams: VecDeque::new(),
            next_datagram: 0,
            seen_datagrams: (HashSet::new(), VecDeque::new()),
            cursor: 0,
            events: VecDeque::new(),
            next_nonce: 1,
            redundant_bytes: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- paths -------------------------------------------------------------------------

    /// A path is up. `rate_hint` (bytes/s) and `rtt_hint` seed its estimates, from what the
    /// engine knows of the source and the handshake.
    pub fn add_path(&mut self, id: u32, now: Instant, rate_hint: Option<f64>, rtt_hint: Option<Duration>) {
        if let Some(old) = self.paths.remove(&id) {
            self.requeue(old);
        }
        self.paths.insert(id, Path::new(id, now, rate_hint, rtt_hint));
    }

    /// A path is gone (socket error, closed, or dead). What it carried unacked goes back into
    /// the queue for the others.
    pub fn remove_path(&mut self, id: u32) {
        if let Some(path) = self.paths.remove(&id) {
            self.requeue(path);
        }
    }

    fn requeue(&mut self, mut path: Path) {
        let id = path.id;
        let mut again = Vec::new();
        for sent in path.drain_unacked() {
            match sent {
                Sent::Data { stream, offset } => {
                    let Some(s) = self.streams.get_mut(&stream) else {
                        continue;
                    };
                    let Some(segment) = s.send.segments.get_mut(&offset) else {
                        continue;
                    };
                    segment.on_paths.retain(|&p| p != id);
                    let paths = &self.paths;
                    if segment.on_paths.iter().all(|p| paths.get(p).is_none_or(|p| p.suspect)) {
                        again.push(Pending::Data { stream, offset });
                    }
                }
                Sent::Control(frame) => again.push(Pending::Control(frame)),
                Sent::Unreliable => {}
            }
        }
        // Re-sends go first, oldest first.
        for pending in again.into_iter().rev() {
            self.pending.push_front(pending);
        }
        self.drop_finished_datagrams();
    }

    /// A redundant datagram is done once every live path has had it: one that was waiting
    /// only for a path that died or went suspect is done now, not sent on some later path,
    /// long after, maybe twice.
    fn drop_finished_datagrams(&mut self) {
        let paths = &self.paths;
        self.datagrams
            .retain(|d| d.sent_on.is_empty() || paths.values().any(|p| !p.suspect && !d.sent_on.contains(&p.id)));
    }

    pub fn has_paths(&self) -> bool {
        !self.paths.is_empty()
    }

    pub fn path_ids(&self) -> Vec<u32> {
        self.paths.keys().copied().collect()
    }

    pub fn path_info(&self, id: u32) -> Option<PathInfo> {
        self.paths.get(&id).map(Path::info)
    }

    /// The engine's reading of the kernel's retransmission share on a path.
    pub fn set_path_loss(&mut self, id: u32, loss: f64) {
        if let Some(path) = self.paths.get_mut(&id) {
            path.loss = loss;
        }
    }

    /// Relay: whether any stream or queued frame would be lost if this link were dropped.
    pub fn is_idle(&self) -> bool {
        self.streams.is_empty() && self.pending.is_empty()
    }

    /// Node: the relay lost this link's state (it restarted). Every stream is reset.
    pub fn abort_all(&mut self, reason: &str) {
        for (stream, _) in std::mem::take(&mut self.streams) {
            self.events.push_back(Event::Reset {
                stream,
                code: 1,
                reason: reason.to_owned(),
            });
        }
        self.pending.clear();
        // The new relay numbers its datagrams from 0 again: the old ids are not duplicates.
        self.seen_datagrams = (HashSet::new(), VecDeque::new());
        // A redundant datagram the old relay already got (it waits only for paths to the old
        // relay, dead but not yet found dead) must not reach the target again through the new.
        self.datagrams.retain(|d| d.sent_on.is_empty());
    }

    // ---- streams -----------------------------------------------------------------------

    /// Node: opens a stream to `target`. Data written before `OpenOk` arrives waits in the
    /// send buffer until then.
    pub fn open(&mut self, target: Address, mode: Mode) -> u32 {
        let stream = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(1).max(1);
        self.insert_stream(stream, mode);
        self.pending
            .push_back(Pending::Control(Frame::Open { stream, mode, target }));
        stream
    }

    fn insert_stream(&mut self, stream: u32, mode: Mode) {
        let window = self.config.recv_window;
        self.streams.insert(
            stream,
            Stream {
                mode,
                accepted: false,
                send: SendHalf::new(self.config.send_buffer, window),
                recv: RecvHalf::new(window),
            },
        );
    }

    /// Relay: the target is connected.
    pub fn accept(&mut self, stream: u32, bound: Address) {
        if let Some(s) = self.streams.get_mut(&stream).filter(|s| !s.accepted) {
            s.accepted = true;
            self.pending
                .push_back(Pending::Control(Frame::OpenOk { stream, bound }));
        }
    }

    /// Relay: the target could not be reached.
    pub fn refuse(&mut self, stream: u32, code: u8, reason: &str) {
        if self.streams.remove(&stream).is_some() {
            self.pending.push_back(Pending::Control(Frame::OpenErr {
                stream,
                code,
                reason: reason.to_owned(),
            }));
        }
    }

    /// Bytes `write` would take now; 0 for an unknown stream.
    pub fn send_room(&self, stream: u32) -> usize {
        self.streams.get(&stream).map_or(0, |s| s.send.room())
    }

    /// Queues stream bytes; returns how many were taken. When that is fewer than offered,
    /// [`Event::Writable`] follows once there is room.
    pub fn write(&mut self, stream: u32, bytes: &[u8]) -> usize {
        self.streams.get_mut(&stream).map_or(0, |s| s.send.write(bytes))
    }

    /// The application will write no more on this stream.
    pub fn finish(&mut self, stream: u32) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.send.finish();
        }
        self.maybe_close(stream);
    }

    /// Moves up to `max` readable bytes into `out`. Returns how many, and whether the far
    /// end's direction has ended (every byte read). An unknown stream reads as ended.
    pub fn read(&mut self, stream: u32, out: &mut Vec<u8>, max: usize) -> (usize, bool) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return (0, true);
        };
        let read = s.recv.read(out, max);
        if let Some(max) = s.recv.window_update() {
            self.pending.push_back(Pending::Control(Frame::Window { stream, max }));
        }
        self.maybe_close(stream);
        read
    }

    /// Whether `read` would return bytes or the end now.
    pub fn is_readable(&self, stream: u32) -> bool {
        self.streams.get(&stream).is_none_or(|s| s.recv.has_readable())
    }

    /// Aborts the stream both ways and forgets it.
    pub fn reset(&mut self, stream: u32, code: u8, reason: &str) {
        if self.streams.remove(&stream).is_some() {
            self.pending.push_back(Pending::Control(Frame::Reset {
                stream,
                code,
                reason: reason.to_owned(),
            }));
        }
    }

    pub fn has_stream(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Bytes a stream holds: unacked to send plus unread received.
    pub fn stream_buffered(&self, stream: u32) -> usize {
        self.streams.get(&stream).map_or(0, |s| {
            s.send.segments.values().map(|seg| seg.bytes.len()).sum::<usize>() + s.recv.buffered()
        })
    }

    fn maybe_close(&mut self, stream: u32) {
        let done = self
            .streams
            .get(&stream)
            .is_some_and(|s| s.send.done() && s.recv.eof_read);
        if done {
            self.streams.remove(&stream);
            self.events.push_back(Event::Closed(stream));
        }
    }

    // ---- datagrams ---------------------------------------------------------------------

    /// Queues a datagram: on the path expected to deliver it first, or, `Redundant`, on every
    /// path. Datagrams are never re-sent; when too many wait, the oldest is dropped.
    pub fn send_datagram(&mut self, flow: u32, target: Address, payload: Vec<u8>, mode: Mode) {
        let id = self.next_datagram;
        self.next_datagram = self.next_datagram.wrapping_add(1);
        if self.datagrams.len() >= self.config.max_datagrams {
            self.datagrams.pop_front();
        }
        self.datagrams.push_back(Datagram {
            frame: Frame::Datagram {
                flow,
                id,
                target,
                payload,
            },
            mode,
            sent_on: Vec::new(),
        });
    }

    fn seen_datagram(&mut self, key: (u32, u32)) -> bool {
        let (set, order) = &mut self.seen_datagrams;
        if !set.insert(key) {
            return true;
        }
        order.push_back(key);
        if order.len() > MAX_SEEN_DATAGRAMS {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        false
    }

    // ---- events and time ---------------------------------------------------------------

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Pings quiet paths, marks stalled ones suspect and buries dead ones. Call every few
    /// tens of milliseconds.
    pub fn on_tick(&mut self, now: Instant) {
        let newest_progress = self
            .paths
            .values()
            .filter(|p| !p.suspect && p.stalled(now) < p.dead_after(self.config.dead_after))
            .map(|p| p.last_progress)
            .max();
        let mut suspect = Vec::new();
        let mut dead = Vec::new();
        for path in self.paths.values_mut() {
            if now.saturating_duration_since(path.last_sent) >= self.config.ping_every {
                path.ping_due = true;
            }
            let stalled = path.stalled(now);
            if stalled.is_zero() {
                continue;
            }
            let others_moved = newest_progress.is_some_and(|t| t > path.last_progress);
            if stalled >= self.config.dead_alone_after {
                dead.push((path.id, stalled));
            } else if !path.suspect && stalled >= path.dead_after(self.config.dead_after) && others_moved {
                path.suspect = true;
                suspect.push((path.id, stalled));
            }
        }
        for (id, stalled) in suspect {
            self.copy_to_others(id);
            self.events.push_back(Event::PathStalled { path: id, stalled });
        }
        for (id, stalled) in dead {
            self.remove_path(id);
            self.events.push_back(Event::PathDead { path: id, stalled });
        }
    }

    /// Queues copies of what suspect path `id` carries unacked for the other paths, oldest
    /// first, ahead of new data. Whichever copy arrives first counts; the far end drops the
    /// other.
    fn copy_to_others(&mut self, id: u32) {
        let Some(path) = self.paths.get(&id) else { return };
        let copies: Vec<Pending> = path
            .unacked()
            .filter_map(|sent| match sent {
                Sent::Data { stream, offset } => Some(Pending::Data {
                    stream: *stream,
                    offset: *offset,
                }),
                Sent::Control(frame) => Some(Pending::Control(frame.clone())),
                Sent::Unreliable => None,
            })
            .collect();
        for pending in copies.into_iter().rev() {
            self.pending.push_front(pending);
        }
        self.drop_finished_datagrams();
    }

    // ---- receiving ---------------------------------------------------------------------

    /// Takes one frame that arrived on `path`.
    pub fn on_frame(&mut self, path: u32, frame: Frame, now: Instant) -> Result<(), LinkError> {
        let Some(p) = self.paths.get_mut(&path) else {
            return Err(LinkError::UnknownPath(path));
        };
        match frame {
            Frame::PathAck { count } => {
                let done = p.on_ack(count, now).map_err(|()| LinkError::BadAck)?;
                for sent in done {
                    if let Sent::Data { stream, offset } = sent {
                        self.on_data_acked(stream, offset);
                    }
                }
                return Ok(());
            }
            // The engine exchanges these before the path joins the link.
            Frame::Hello { .. } => return Err(LinkError::Unexpected("Hello")),
            Frame::Welcome { .. } => return Err(LinkError::Unexpected("Welcome")),
            _ => {}
        }
        p.received += 1;
        p.ack_due = true;
        p.on_received(now);
        match frame {
            Frame::Ping { nonce } => p.pongs.push_back(nonce),
            Frame::Pong { .. } => {}
            Frame::Open { stream, mode, target } => self.on_open(stream, mode, target)?,
            Frame::OpenOk { stream, bound } => {
                self.node_only("OpenOk")?;
                if let Some(s) = self.streams.get_mut(&stream).filter(|s| !s.accepted) {
                    s.accepted = true;
                    self.events.push_back(Event::OpenOk { stream, bound });
                }
            }
            Frame::OpenErr { stream, code, reason } => {
                self.node_only("OpenErr")?;
                if self.streams.remove(&stream).is_some() {
                    self.events.push_back(Event::OpenErr { stream, code, reason });
                }
            }
            Frame::Data {
                stream,
                offset,
                fin,
                payload,
            } => {
                if let Some(p) = self.paths.get_mut(&path) {
                    p.rx_bytes += payload.len() as u64;
                }
                if let Some(s) = self.streams.get_mut(&stream) {
                    let readable = s
                        .recv
                        .on_data(offset, &payload, fin)
                        .map_err(|e| LinkError::Stream(stream, e))?;
                    if readable {
                        self.events.push_back(Event::Readable(stream));
                    }
                }
            }
            Frame::Window { stream, max } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.send.peer_max = s.send.peer_max.max(max);
                }
            }
            Frame::Reset { stream, code, reason } => {
                if self.streams.remove(&stream).is_some() {
                    self.events.push_back(Event::Reset { stream, code, reason });
                } else if self.role == Role::Relay {
                    // It overtook its stream's `Open` on a faster path: that `Open` is late.
                    self.mark_opened(stream);
                }
            }
            Frame::Datagram {
                flow,
                id,
                target,
                payload,
            } => {
                if !self.seen_datagram((flow, id)) {
                    self.events.push_back(Event::Datagram { flow, target, payload });
                }
            }
            Frame::PathAck { .. } | Frame::Hello { .. } | Frame::Welcome { .. } => {}
        }
        Ok(())
    }

    fn node_only(&self, what: &'static str) -> Result<(), LinkError> {
        match self.role {
            Role::Node => Ok(()),
            Role::Relay => Err(LinkError::Unexpected(what)),
        }
    }

    fn on_open(&mut self, stream: u32, mode: Mode, target: Address) -> Result<(), LinkError> {
        if self.role == Role::Node {
            return Err(LinkError::Unexpected("Open"));
        }
        if !self.mark_opened(stream) {
            return Ok(()); // a late copy, or the stream was reset already
        }
        self.insert_stream(stream, mode);
        self.events.push_back(Event::Opened { stream, mode, target });
        Ok(())
    }

    /// Relay: records that `stream` was opened or ended; `false` if it already was.
    fn mark_opened(&mut self, stream: u32) -> bool {
        if stream <= self.opened_floor || !self.opened.insert(stream) {
            return false;
        }
        while self.opened.len() > MAX_OPEN_GAPS {
            self.opened_floor = self.opened.pop_first().unwrap_or(self.opened_floor);
        }
        while self
            .opened_floor
            .checked_add(1)
            .is_some_and(|next| self.opened.remove(&next))
        {
            self.opened_floor += 1;
        }
        true
    }

    fn on_data_acked(&mut self, stream: u32, offset: u64) {
        let Some(s) = self.streams.get_mut(&stream) else { return };
        if s.send.ack(offset) && s.send.blocked && s.send.room() > 0 {
            s.send.blocked = false;
            self.events.push_back(Event::Writable(stream));
        }
        self.maybe_close(stream);
    }

    // ---- sending -----------------------------------------------------------------------

    /// The next frame for `path`, appended to `out` (encoded, ready to encrypt). `false`
    /// when the path should send nothing now; ask again after the next event.
    pub fn poll_transmit(&mut self, path: u32, now: Instant, out: &mut Vec<u8>) -> bool {
        let Some(p) = self.paths.get_mut(&path) else {
            return false;
        };
        if p.ack_due {
            p.ack_due = false;
            Frame::PathAck { count: p.received }.encode(out);
            return true;
        }
        if let Some(nonce) = p.pongs.pop_front() {
            return self.emit(path, Frame::Pong { nonce }, Sent::Unreliable, now, out);
        }
        if p.ping_due {
            p.ping_due = false;
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            return self.emit(path, Frame::Ping { nonce }, Sent::Unreliable, now, out);
        }
        if p.suspect {
            // Acks, pongs and pings only, until its own acks move again.
            return false;
        }
        let sent = self.transmit_pending(path, now, out)
            || self.transmit_datagram(path, now, out)
            || self.transmit_redundant(path, now, out)
            || self.transmit_bandwidth(path, now, out);
        if !sent {
            if let Some(p) = self.paths.get_mut(&path) {
                p.on_declined();
            }
        }
        sent
    }

    /// Encodes `frame` for `path` and books it.
    fn emit(&mut self, path: u32, frame: Frame, sent: Sent, now: Instant, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        frame.encode(out);
        if let Some(p) = self.paths.get_mut(&path) {
            p.on_sent(sent, out.len() - start, now);
        }
        true
    }

    /// Control frames go on whichever path asks first; a dead path's data only on the path
    /// expected to deliver it first, like new data.
    fn transmit_pending(&mut self, path: u32, now: Instant, out: &mut Vec<u8>) -> bool {
        while let Some(pending) = self.pending.pop_front() {
            match pending {
                Pending::Control(frame) => {
                    if self.is_stale(&frame) {
                        continue;
                    }
                    return self.emit(path, frame.clone(), Sent::Control(frame), now, out);
                }
                Pending::Data { stream, offset } => {
                    let len = self
                        .streams
                        .get(&stream)
                        .and_then(|s| s.send.segments.get(&offset))
                        .map(|seg| seg.bytes.len());
                    let Some(len) = len else { continue };
                    if !self.is_best(path, len) {
                        self.pending.push_front(Pending::Data { stream, offset });
                        return false;
                    }
                    if self.send_segment(path, stream, offset, now, out) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// A control frame about a stream that no longer exists is not worth sending again,
    /// except the `Reset` that ended it and the relay's `OpenErr`.
    fn is_stale(&self, frame: &Frame) -> bool {
        match frame {
            Frame::Open { stream, .. } | Frame::OpenOk { stream, .. } | Frame::Window { stream, .. } => {
                !self.streams.contains_key(stream)
            }
            _ => false,
        }
    }

    /// Sends the segment at `offset` on `path`, unless it was acked meanwhile or that path
    /// already has it.
    fn send_segment(&mut self, path: u32, stream: u32, offset: u64, now: Instant, out: &mut Vec<u8>) -> bool {
        let Some(s) = self.streams.get_mut(&stream) else {
            return false;
        };
        let Some(segment) = s.send.segments.get_mut(&offset) else {
            return false;
        };
        if segment.on_paths.contains(&path) {
            return false;
        }
        if !segment.on_paths.is_empty() {
            self.redundant_bytes += segment.bytes.len() as u64;
        }
        segment.on_paths.push(path);
        let start = out.len();
        Frame::data_header(out, stream, offset, segment.fin);
        out.extend_from_slice(&segment.bytes);
        let bytes = out.len() - start;
        if let Some(p) = self.paths.get_mut(&path) {
            p.on_sent(Sent::Data { stream, offset }, bytes, now);
        }
        true
    }

    fn transmit_datagram(&mut self, path: u32, now: Instant, out: &mut Vec<u8>) -> bool {
        let best = self.best_path(64);
        let mut chosen = None;
        for (i, d) in self.datagrams.iter_mut().enumerate() {
            let mine = match d.mode {
                Mode::Bandwidth => best == Some(path),
                Mode::Redundant => !d.sent_on.contains(&path),
            };
            if mine {
                d.sent_on.push(path);
                chosen = Some((i, d.frame.clone(), d.sent_on.len() > 1));
                break;
            }
        }
        let Some((i, frame, copy)) = chosen else {
            return false;
        };
        let d = &self.datagrams[i];
        let done = d.mode == Mode::Bandwidth
            || self
                .paths
                .values()
                .filter(|p| !p.suspect)
                .all(|p| d.sent_on.contains(&p.id));
        if done {
            self.datagrams.remove(i);
        }
        let start = out.len();
        let sent = self.emit(path, frame, Sent::Unreliable, now, out);
        if copy {
            self.redundant_bytes += (out.len() - start) as u64;
        }
        sent
    }

    /// The path expected to deliver `bytes` first.
    fn best_path(&self, bytes: usize) -> Option<u32> {
        self.live_paths().min_by_key(|p| p.eta(bytes)).map(|p| p.id)
    }

    /// The paths that get new frames: all but the suspect ones.
    fn live_paths(&self) -> impl Iterator<Item = &Path> + '_ {
        self.paths.values().filter(|p| !p.suspect)
    }

    /// Whether `path` is expected to deliver `bytes` no later than any other path. Near-ties
    /// (within a millisecond) go to whoever asks.
    fn is_best(&self, path: u32, bytes: usize) -> bool {
        let mine = self.paths.get(&path).map(|p| p.eta(bytes));
        let best = self.live_paths().map(|p| p.eta(bytes)).min();
        matches!((mine, best), (Some(m), Some(b)) if m <= b + Duration::from_millis(1))
    }

    /// Whether `path` is among the paths redundant frames use.
    fn carries_redundant(&self, path: u32) -> bool {
        let n = self.config.redundant_paths;
        if n == 0 || self.paths.len() <= n {
            return true;
        }
        let mut by_rtt: Vec<&Path> = self.live_paths().collect();
        by_rtt.sort_by_key(|p| p.srtt().unwrap_or(Duration::MAX));
        by_rtt.iter().take(n).any(|p| p.id == path)
    }

    fn transmit_redundant(&mut self, path: u32, now: Instant, out: &mut Vec<u8>) -> bool {
        if !self.carries_redundant(path) {
            return false;
        }
        let segment = self.config.segment;
        let ids: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.mode == Mode::Redundant && s.accepted)
            .map(|(&id, _)| id)
            .collect();
        for stream in ids {
            let Some(s) = self.streams.get_mut(&stream) else {
                continue;
            };
            let missing = s
                .send
                .segments
                .iter()
                .find(|(_, seg)| !seg.on_paths.contains(&path))
                .map(|(&offset, _)| offset);
            let offset = match missing {
                Some(offset) => offset,
                None => match s.send.cut(segment) {
                    Some(offset) => offset,
                    None => continue,
                },
            };
            if self.send_segment(path, stream, offset, now, out) {
                return true;
            }
        }
        false
    }

    fn transmit_bandwidth(&mut self, path: u32, now: Instant, out: &mut Vec<u8>) -> bool {
        let segment = self.config.segment;
        let Some(stream) = self.next_bandwidth_stream() else {
            return false;
        };
        if !self.is_best(path, segment) {
            return false;
        }
        self.cursor = stream.wrapping_add(1);
        let Some(offset) = self.streams.get_mut(&stream).and_then(|s| s.send.cut(segment)) else {
            return false;
        };
        self.send_segment(path, stream, offset, now, out)
    }

    /// The next bandwidth stream, round robin from the cursor, that has a segment to cut.
    fn next_bandwidth_stream(&self) -> Option<u32> {
        let ready = |(_, s): &(&u32, &Stream)| s.mode == Mode::Bandwidth && s.accepted && s.send.has_new();
        self.streams
            .range(self.cursor..)
            .find(ready)
            .or_else(|| self.streams.range(..self.cursor).find(ready))
            .map(|(&id, _)| id)
    }
}

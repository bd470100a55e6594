//! The simulator behind `bond_sim.rs`: the world (two links, the paths between them, the
//! applications at both ends) and its event loop. See that file's header for the model.

use proto::bond::frame::MAX_FRAME;
use proto::bond::{Config, Event, Frame, Link, Mode, Role};
use proto::socks5::Address;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const NODE: usize = 0;
pub const RELAY: usize = 1;
pub const SIDES: [usize; 2] = [NODE, RELAY];
/// How often the engine calls `on_tick`.
const TICK: Duration = Duration::from_millis(25);
/// Unsent bytes a socket may hold before the engine stops asking the link for frames.
const LOWAT: usize = 32 << 10;
/// Bytes per second in one Mbit/s.
pub const MBIT: f64 = 125_000.0;
/// Most bytes the application moves per `write` or `read` call.
const CHUNK: usize = 64 << 10;

// ---------------------------------------------------------------- stream bytes

/// Stream bytes come from a fixed pseudo-random table, read from a phase that depends on the
/// stream and direction. The table's length is prime, so bytes delivered at a wrong offset
/// (a segment shifted, duplicated or swapped) never match.
const PATTERN_LEN: usize = 65_521;

fn table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..PATTERN_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect()
    })
}

fn phase(stream: u32, from: usize, offset: u64) -> usize {
    ((offset + u64::from(stream) * 7919 + from as u64 * 10_007) % PATTERN_LEN as u64) as usize
}

/// Appends `len` bytes of the stream starting at `offset`.
fn fill(stream: u32, from: usize, mut offset: u64, mut len: usize, out: &mut Vec<u8>) {
    while len > 0 {
        let at = phase(stream, from, offset);
        let n = len.min(PATTERN_LEN - at);
        out.extend_from_slice(&table()[at..at + n]);
        (offset, len) = (offset + n as u64, len - n);
    }
}

/// Whether `bytes` are the stream's bytes at `offset`.
fn matches(stream: u32, from: usize, mut offset: u64, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let at = phase(stream, from, offset);
        let n = bytes.len().min(PATTERN_LEN - at);
        if bytes[..n] != table()[at..at + n] {
            return false;
        }
        (offset, bytes) = (offset + n as u64, &bytes[n..]);
    }
    true
}

pub fn target() -> Address {
    Address::Ip(SocketAddr::from((Ipv4Addr::new(10, 99, 0, 1), 443)))
}

// ---------------------------------------------------------------- the simulator

#[derive(Debug, Clone, Copy)]
pub struct PathSpec {
    /// Bottleneck rate of each direction, bytes per second.
    pub rate: f64,
    /// One-way delay.
    pub delay: Duration,
}

impl PathSpec {
    pub fn mbit(mbit: f64, rtt_ms: u64) -> PathSpec {
        PathSpec {
            rate: mbit * MBIT,
            delay: Duration::from_millis(rtt_ms) / 2,
        }
    }
}

#[derive(Debug)]
pub struct SimPath {
    pub spec: PathSpec,
    /// The network carries it. Once false, it never carries anything again.
    pub up: bool,
    /// Which ends' links have the path (added, and not yet removed or found dead).
    pub joined: [bool; 2],
    /// Per sending side: when the bottleneck is next free, and bytes not on the wire yet.
    pub free_at: [Duration; 2],
    pub unsent: [usize; 2],
}

#[derive(Debug)]
enum Happening {
    Tick,
    /// A message left `from`'s socket for the network: room for more.
    Departed {
        path: u32,
        from: usize,
        len: usize,
    },
    Arrived {
        path: u32,
        to: usize,
        msg: Vec<u8>,
    },
    /// The engine at `side` sees the connection close: the far end dropped it.
    ConnectionClosed {
        path: u32,
        side: usize,
    },
    /// The relay's connection attempt to the stream's target is over.
    Dialed {
        stream: u32,
    },
}

/// One direction of a stream, as the applications at both ends see it.
#[derive(Debug, Default)]
pub struct Flow {
    /// Bytes the writer wants to write in all, and how many the link took.
    pub want: u64,
    pub written: u64,
    /// The writer finishes once everything it wants is written; `finished` once it did.
    pub finish: bool,
    pub finished: bool,
    /// Bytes the reader read, and whether it saw the end.
    pub read: u64,
    pub eof: bool,
    /// (when, bytes read so far) after each read, if the simulation traces.
    pub trace: Vec<(Duration, u64)>,
}

#[derive(Debug)]
pub struct Stream {
    pub mode: Mode,
    /// By writing side.
    pub flows: [Flow; 2],
    /// Whether each side reads as soon as bytes are readable; a slow reader reads only when
    /// told to ([`Op::Read`]).
    pub eager: [bool; 2],
    /// The node writes without waiting for `OpenOk` (the link holds the bytes until then).
    pub early: bool,
    /// How long the relay takes to connect to the target, and whether it then refuses.
    pub dial: Duration,
    pub refuse: bool,
    /// The relay's link said `Opened`; the relay accepted; the node's link said `OpenOk`.
    pub opened: bool,
    pub accepted: bool,
    pub open_ok: bool,
    /// The stream ended early at that side: reset there, reset by the far end, or refused.
    pub gone: [bool; 2],
    /// A reset or a refusal happened: the bytes need only be a correct prefix.
    pub aborted: bool,
    pub closed: [bool; 2],
}

impl Stream {
    fn new(mode: Mode, eager: [bool; 2], early: bool, dial: Duration, refuse: bool) -> Stream {
        Stream {
            mode,
            flows: Default::default(),
            eager,
            early,
            dial,
            refuse,
            opened: false,
            accepted: false,
            open_ok: false,
            gone: [false; 2],
            aborted: false,
            closed: [false; 2],
        }
    }

    fn live(&self, side: usize) -> bool {
        !self.gone[side] && !self.closed[side]
    }

    /// The relay's link knows the stream once it said `Opened`.
    fn known(&self, side: usize) -> bool {
        self.live(side) && (side == NODE || self.opened)
    }

    /// The application at `side` may write: the node once the relay said `OpenOk` (or at once,
    /// if it is early), the relay once it accepted.
    fn can_write(&self, side: usize) -> bool {
        self.live(side)
            && !self.flows[side].finished
            && if side == NODE {
                self.open_ok || self.early
            } else {
                self.accepted
            }
    }
}

/// The whole world: both links, the paths between them, the applications at both ends, and
/// what happens next, in order.
pub struct Sim {
    /// Virtual time is `base + now`.
    base: Instant,
    pub now: Duration,
    /// Happenings by (when, order of scheduling): ties run in the order they were scheduled.
    queue: BTreeMap<(Duration, u64), Happening>,
    seq: u64,
    config: Config,
    /// By side: `links[NODE]`, `links[RELAY]`.
    pub links: [Link; 2],
    /// Every path ever added, by id; ids are never reused.
    pub paths: BTreeMap<u32, SimPath>,
    next_path: u32,
    /// Give `add_path` the true rate and RTT as hints.
    hints: bool,
    pub streams: BTreeMap<u32, Stream>,
    /// Datagrams sent and received, by sending side: sequence numbers.
    datagrams_sent: [u64; 2],
    pub datagrams_seen: [BTreeSet<u64>; 2],
    /// Record each read in [`Flow::trace`].
    pub trace: bool,
    buf: Vec<u8>,
}

impl Sim {
    pub fn new(config: Config, specs: &[PathSpec], hints: bool) -> Sim {
        let mut sim = Sim {
            base: Instant::now(),
            now: Duration::ZERO,
            seq: 0,
            queue: BTreeMap::new(),
            links: [
                Link::new(Role::Node, config.clone()),
                Link::new(Role::Relay, config.clone()),
            ],
            config,
            paths: BTreeMap::new(),
            next_path: 1,
            hints,
            streams: BTreeMap::new(),
            datagrams_sent: [0; 2],
            datagrams_seen: Default::default(),
            trace: false,
            buf: Vec::new(),
        };
        for &spec in specs {
            sim.add_path(spec);
        }
        sim.at(TICK, Happening::Tick);
        sim
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn at(&mut self, delay: Duration, what: Happening) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), what);
    }

    // ---- the event loop ------------------------------------------------------------------

    pub fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        self.run_while_not(until, |_| false);
        self.now = until;
    }

    /// Runs until `done` holds, checking after every happening; `false` at the deadline.
    fn run_while_not(&mut self, deadline: Duration, done: impl Fn(&Sim) -> bool) -> bool {
        while !done(self) {
            let Some(entry) = self.queue.first_entry() else {
                return false;
            };
            if entry.key().0 > deadline {
                return false;
            }
            let ((when, _), what) = entry.remove_entry();
            self.now = when;
            self.handle(what);
        }
        true
    }

    fn handle(&mut self, what: Happening) {
        match what {
            Happening::Tick => {
                for side in SIDES {
                    let now = self.instant();
                    self.links[side].on_tick(now);
                    self.pump(side);
                }
                self.at(TICK, Happening::Tick);
            }
            Happening::Departed { path, from, len } => {
                let Some(p) = self.paths.get_mut(&path) else { return };
                if p.up {
                    p.unsent[from] -= len;
                    self.pump(from);
                }
            }
            Happening::Arrived { path, to, msg } => {
                let p = &self.paths[&path];
                if !p.up || !p.joined[to] {
                    return;
                }
                let frame = Frame::decode(&msg).unwrap_or_else(|e| panic!("undecodable frame {msg:02x?}: {e}"));
                let now = self.instant();
                if let Err(e) = self.links[to].on_frame(path, frame, now) {
                    panic!("side {to} refused a frame on path {path}: {e}");
                }
                self.pump(to);
            }
            Happening::Dialed { stream } => {
                let s = self.streams.get_mut(&stream).expect("stream");
                if !s.live(RELAY) {
                    return; // reset while dialing
                }
                if s.refuse {
                    s.gone[RELAY] = true;
                    s.aborted = true;
                    self.links[RELAY].refuse(stream, 5, "refused");
                } else {
                    s.accepted = true;
                    self.links[RELAY].accept(stream, target());
                    self.write_more(RELAY, stream);
                }
                self.pump(RELAY);
            }
            Happening::ConnectionClosed { path, side } => {
                if std::mem::take(&mut self.paths.get_mut(&path).expect("path").joined[side]) {
                    self.links[side].remove_path(path);
                    self.pump(side);
                }
            }
        }
    }

    // ---- the engine ----------------------------------------------------------------------

    /// A new connection joins both ends (the relay on `Hello`, the node on `Welcome`).
    pub fn add_path(&mut self, spec: PathSpec) -> u32 {
        let id = self.next_path;
        self.next_path += 1;
        let (rate, rtt) = if self.hints {
            (Some(spec.rate), Some(spec.delay * 2))
        } else {
            (None, None)
        };
        for side in SIDES {
            let now = self.instant();
            self.links[side].add_path(id, now, rate, rtt);
        }
        self.paths.insert(
            id,
            SimPath {
                spec,
                up: true,
                joined: [true; 2],
                free_at: [self.now; 2],
                unsent: [0; 2],
            },
        );
        for side in SIDES {
            self.pump(side);
        }
        id
    }

    /// The network loses a path. The engines at the `told` ends see the socket fail and
    /// remove it; the others find out by stall detection.
    pub fn kill_path(&mut self, id: u32, told: [bool; 2]) {
        let Some(p) = self.paths.get_mut(&id) else { return };
        p.up = false;
        for side in SIDES {
            if told[side] && std::mem::take(&mut self.paths.get_mut(&id).expect("path").joined[side]) {
                self.links[side].remove_path(id);
                self.pump(side);
            }
        }
    }

    /// The network holds path `id` still for `span` in both directions, as TCP does in a
    /// retransmit timeout or behind another flow's burst: what is on the wire arrives, and
    /// nothing more leaves until `span` is over. Nothing is lost.
    pub fn freeze_path(&mut self, id: u32, span: Duration) {
        let now = self.now;
        let Some(p) = self.paths.get_mut(&id) else { return };
        for side in SIDES {
            p.free_at[side] = p.free_at[side].max(now) + span;
        }
    }

    pub fn up_paths(&self) -> Vec<u32> {
        self.paths.iter().filter(|(_, p)| p.up).map(|(&id, _)| id).collect()
    }

    /// Asks `side`'s link for frames on every path whose socket has room, and acts on its
    /// events, until it has nothing more to say.
    pub fn pump(&mut self, side: usize) {
        loop {
            let mut busy = false;
            let mut ids: Vec<u32> = self
                .paths
                .iter()
                .filter(|(_, p)| p.joined[side])
                .map(|(&id, _)| id)
                .collect();
            // Sockets become writable in no particular order.
            let turn = self.seq as usize % ids.len().max(1);
            ids.rotate_left(turn);
            for id in ids {
                while self.paths[&id].joined[side] && self.paths[&id].unsent[side] < LOWAT {
                    let mut msg = std::mem::take(&mut self.buf);
                    msg.clear();
                    let now = self.instant();
                    if !self.links[side].poll_transmit(id, now, &mut msg) {
                        self.buf = msg;
                        break;
                    }
                    self.transmit(side, id, msg);
                    busy = true;
                }
            }
            while let Some(event) = self.links[side].poll_event() {
                self.on_event(side, event);
                busy = true;
            }
            if !busy {
                break;
            }
        }
        self.check_buffers();
    }

    /// Puts one message in `from`'s socket of `path`.
    fn transmit(&mut self, from: usize, path: u32, msg: Vec<u8>) {
        self.check_wire(from, &msg);
        let now = self.now;
        let p = self.paths.get_mut(&path).expect("path");
        p.unsent[from] += msg.len();
        if !p.up {
            return; // queued in a socket that never drains
        }
        let departs = p.free_at[from].max(now) + Duration::from_secs_f64(msg.len() as f64 / p.spec.rate);
        p.free_at[from] = departs;
        let arrives = departs + p.spec.delay;
        let len = msg.len();
        self.at(departs - now, Happening::Departed { path, from, len });
        self.at(
            arrives - now,
            Happening::Arrived {
                path,
                to: 1 - from,
                msg,
            },
        );
    }

    fn on_event(&mut self, side: usize, event: Event) {
        match event {
            Event::Opened { stream, mode, .. } => {
                assert_eq!(side, RELAY, "Opened at the node");
                let s = self.streams.get_mut(&stream).expect("Opened for a stream never opened");
                assert!(!s.opened, "stream {stream} opened twice");
                assert_eq!(s.mode, mode);
                s.opened = true;
                let dial = s.dial;
                self.at(dial, Happening::Dialed { stream });
            }
            Event::OpenOk { stream, .. } => {
                assert_eq!(side, NODE, "OpenOk at the relay");
                let s = self.streams.get_mut(&stream).expect("OpenOk for an unknown stream");
                assert!(!s.open_ok, "OpenOk twice for stream {stream}");
                assert!(s.live(NODE), "OpenOk for a stream gone at the node");
                s.open_ok = true;
                self.write_more(NODE, stream);
            }
            Event::OpenErr { stream, code, .. } => {
                assert_eq!((side, code), (NODE, 5));
                let s = self.streams.get_mut(&stream).expect("OpenErr for an unknown stream");
                assert!(s.refuse && !s.open_ok);
                s.gone[NODE] = true;
            }
            Event::Readable(stream) => {
                if self.streams[&stream].eager[side] {
                    self.read(side, stream, usize::MAX);
                }
            }
            Event::Writable(stream) => self.write_more(side, stream),
            Event::Reset { stream, .. } => {
                let s = self.streams.get_mut(&stream).expect("Reset for an unknown stream");
                assert!(s.live(side), "Reset for a stream already gone at side {side}");
                assert!(s.gone[1 - side], "Reset that the far end never sent");
                s.gone[side] = true;
            }
            Event::Closed(stream) => {
                let s = self.streams.get_mut(&stream).expect("Closed for an unknown stream");
                assert!(s.live(side), "Closed twice, or after a reset, at side {side}");
                assert!(s.flows[side].finished, "Closed before side {side} finished");
                assert!(s.flows[1 - side].eof, "Closed before side {side} read the end");
                s.closed[side] = true;
            }
            Event::Datagram {
                flow,
                target: to,
                payload,
            } => {
                assert_eq!(to, target());
                let from = usize::try_from(flow).expect("flow is the sending side");
                assert_eq!(from, 1 - side);
                let seq = u64::from_be_bytes(payload[..8].try_into().expect("sequence number"));
                assert!(matches(0, from, seq, &payload[8..]), "datagram {seq} corrupted");
                assert!(self.datagrams_seen[from].insert(seq), "datagram {seq} delivered twice");
                assert!(seq < self.datagrams_sent[from]);
            }
            // The path stays up; the link copied its frames to the others.
            Event::PathStalled { .. } => {}
            Event::PathDead { path, .. } => {
                // The link already dropped it; the engine closes the connection, and if the
                // network still carries it the far end sees the close.
                let p = self.paths.get_mut(&path).expect("PathDead for an unknown path");
                assert!(std::mem::take(&mut p.joined[side]), "PathDead for a path not joined");
                if std::mem::take(&mut p.up) {
                    let delay = p.spec.delay;
                    self.at(delay, Happening::ConnectionClosed { path, side: 1 - side });
                }
            }
        }
    }

    // ---- the application -----------------------------------------------------------------

    pub fn open(&mut self, mode: Mode, eager: [bool; 2], early: bool, dial: Duration, refuse: bool) -> u32 {
        let id = self.links[NODE].open(target(), mode);
        self.streams.insert(id, Stream::new(mode, eager, early, dial, refuse));
        self.pump(NODE);
        id
    }

    /// Writes what `side` wants written and the link takes; finishes when it is all taken.
    pub fn write_more(&mut self, side: usize, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        if !s.can_write(side) {
            return;
        }
        let flow = &mut s.flows[side];
        while flow.written < flow.want {
            let len = CHUNK.min((flow.want - flow.written) as usize);
            self.buf.clear();
            fill(id, side, flow.written, len, &mut self.buf);
            let n = self.links[side].write(id, &self.buf);
            flow.written += n as u64;
            if n < len {
                break;
            }
        }
        if flow.finish && flow.written == flow.want {
            flow.finished = true;
            self.links[side].finish(id);
        }
    }

    /// Reads up to `max` bytes at `side`, checking each against what the far end wrote.
    pub fn read(&mut self, side: usize, id: u32, max: usize) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        if !s.known(side) || s.flows[1 - side].eof {
            return;
        }
        let aborted = s.aborted;
        let flow = &mut s.flows[1 - side];
        let mut left = max;
        while left > 0 {
            self.buf.clear();
            let (n, eof) = self.links[side].read(id, &mut self.buf, left.min(CHUNK));
            assert!(
                matches(id, 1 - side, flow.read, &self.buf),
                "stream {id}: wrong bytes at {} read by side {side}",
                flow.read
            );
            flow.read += n as u64;
            left -= n;
            if self.trace {
                flow.trace.push((self.now, flow.read));
            }
            if eof {
                // An unknown stream reads as ended: after a reset that is no real end.
                assert!(aborted || (flow.finished && flow.read == flow.written), "early end");
                flow.eof = true;
            }
            if eof || n == 0 {
                break;
            }
        }
    }

    /// The relay loses all state and every connection; the node learns it from the new
    /// path's `Welcome` (flag "new link") and resets every stream.
    pub fn restart_relay(&mut self, then: PathSpec) {
        for id in self.up_paths() {
            self.kill_path(id, [true; 2]);
        }
        for s in self.streams.values_mut() {
            s.gone[RELAY] = true;
            s.aborted = true;
        }
        self.links[RELAY] = Link::new(Role::Relay, self.config.clone());
        for path in self.paths.values_mut() {
            path.joined[RELAY] = false;
        }
        self.links[NODE].abort_all("relay restarted");
        self.pump(NODE);
        self.add_path(then);
    }

    pub fn reset(&mut self, side: usize, id: u32) {
        let s = self.streams.get_mut(&id).expect("stream");
        if s.known(side) {
            s.gone[side] = true;
            s.aborted = true;
            self.links[side].reset(id, 1, "reset by the application");
        }
    }

    pub fn send_datagram(&mut self, side: usize, len: usize, mode: Mode) {
        let seq = self.datagrams_sent[side];
        self.datagrams_sent[side] += 1;
        let mut payload = seq.to_be_bytes().to_vec();
        fill(0, side, seq, len, &mut payload);
        self.links[side].send_datagram(side as u32, target(), payload, mode);
    }

    // ---- invariants ----------------------------------------------------------------------

    /// Every frame decodes and fits; a `Data` frame carries the stream's bytes at its offset,
    /// stays inside the window the reader can have advertised, and has FIN only at the end.
    fn check_wire(&self, from: usize, msg: &[u8]) {
        assert!(msg.len() <= MAX_FRAME, "frame of {} bytes", msg.len());
        let frame = Frame::decode(msg).unwrap_or_else(|e| panic!("side {from} sent a bad frame: {e}"));
        let Frame::Data {
            stream,
            offset,
            fin,
            payload,
        } = frame
        else {
            return;
        };
        let s = &self.streams[&stream];
        let flow = &s.flows[from];
        let end = offset + payload.len() as u64;
        assert!(payload.len() <= self.config.segment, "segment of {}", payload.len());
        assert!(
            matches(stream, from, offset, &payload),
            "stream {stream}: wrong bytes sent at {offset}"
        );
        assert!(
            end <= flow.read + self.config.recv_window,
            "stream {stream}: {end} is beyond the window (read {})",
            flow.read
        );
        assert!(end <= flow.written, "bytes never written");
        if fin {
            assert!(
                flow.finished && end == flow.written,
                "FIN at {end}, written {}",
                flow.written
            );
        }
    }

    /// No stream holds more than its send buffer plus its receive window.
    fn check_buffers(&self) {
        let bound = self.config.send_buffer + self.config.recv_window as usize;
        for side in SIDES {
            for &id in self.streams.keys() {
                let held = self.links[side].stream_buffered(id);
                assert!(held <= bound, "side {side} stream {id} holds {held} > {bound}");
            }
        }
    }

    /// Heals the network, has every writer finish and every reader read, and runs until
    /// every stream is closed on both ends (or ended early and forgotten by both links).
    pub fn settle(&mut self, spec: PathSpec, within: Duration) {
        if self.up_paths().is_empty() {
            self.add_path(spec);
        }
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for &id in &ids {
            for side in SIDES {
                let s = self.streams.get_mut(&id).expect("stream");
                s.eager[side] = true;
                s.flows[side].finish = true;
                self.write_more(side, id);
                self.read(side, id, usize::MAX);
            }
        }
        for side in SIDES {
            self.pump(side);
        }
        let deadline = self.now + within;
        let done = |sim: &Sim| {
            sim.links.iter().all(|l| l.stream_count() == 0)
                && sim.streams.values().all(|s| s.aborted || s.closed == [true; 2])
        };
        // A path that was frozen past `dead_alone_after` dies while settling: a new one comes,
        // as the engine would redial.
        let settled = loop {
            let stopped = self.run_while_not(deadline, |sim| done(sim) || sim.up_paths().is_empty());
            if done(self) {
                break true;
            }
            if !stopped {
                break false;
            }
            self.add_path(spec);
        };
        let left: Vec<_> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.aborted && s.closed != [true; 2])
            .map(|(id, s)| (id, &s.flows, s.closed, s.open_ok))
            .collect();
        assert!(
            settled,
            "not settled after {within:?}: node holds {}, relay holds {}; open: {left:#?}",
            self.links[NODE].stream_count(),
            self.links[RELAY].stream_count(),
        );
        for (id, s) in &self.streams {
            if s.aborted {
                continue;
            }
            for flow in &s.flows {
                assert!(flow.finished && flow.eof, "stream {id}: {flow:?}");
                assert_eq!((flow.written, flow.read), (flow.want, flow.want), "stream {id}");
            }
        }
    }
}

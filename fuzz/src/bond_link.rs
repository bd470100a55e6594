//! The `bond_link` check: a node's and a relay's `Link` joined by up to four in-memory paths,
//! driven by an operation sequence decoded from the input with `arbitrary`. A path is a pair
//! of in-order queues (TCP); the input decides when each end is asked for frames, when they
//! arrive, when paths die or come, when time passes, and what the applications write, read,
//! finish and reset.
//!
//! Checked all along: every frame decodes, fits and is accepted by the far end; a `Data`
//! frame carries the written bytes at its offset and stays inside the reader's window; bytes
//! read are the bytes written, in order, exactly once; no stream holds more than its send
//! buffer plus its window; `OpenOk` and `Closed` come once; datagrams arrive at most once.
//! Then a well-behaved network and applications (everything delivered, every reader reads,
//! every writer finishes) must end every stream with `Closed` on both ends and leave neither
//! link holding one.
//!
//! Input: five config bytes (segment, window and buffer sizes, datagram queue, redundant
//! paths), then operations: a tag byte (its value mod 11 picks the operation, see
//! [`Op::arbitrary`]) and the operation's bytes. Missing bytes read as zero.

use arbitrary::{Arbitrary, Unstructured};
use proto::bond::frame::MAX_FRAME;
use proto::bond::{Config, Event, Frame, Link, Mode, Role};
use proto::socks5::Address;
use std::collections::{HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const NODE: usize = 0;
const RELAY: usize = 1;
const SIDES: [usize; 2] = [NODE, RELAY];
const MAX_OPS: usize = 256;
const MAX_PATHS: usize = 4;
/// Rounds of the well-behaved finish (25 ms each): well past the 5 s a dead path may take.
const SETTLE_ROUNDS: usize = 2000;

#[derive(Debug)]
enum Op {
    Open {
        redundant: bool,
        early: bool,
        refuse: bool,
    },
    Write {
        side: usize,
        stream: usize,
        len: usize,
    },
    Finish {
        side: usize,
        stream: usize,
    },
    Read {
        side: usize,
        stream: usize,
        max: usize,
    },
    Reset {
        side: usize,
        stream: usize,
    },
    Datagram {
        side: usize,
        redundant: bool,
    },
    /// `side` is asked for up to `n` frames on the `path`-th path.
    Poll {
        side: usize,
        path: usize,
        n: usize,
    },
    /// Up to `n` frames travelling to `to` on the `path`-th path arrive.
    Deliver {
        to: usize,
        path: usize,
        n: usize,
    },
    /// The `path`-th path dies, losing what it carries; the ends whose bit is set in `told`
    /// see the connection fail, the others must notice by themselves.
    Kill {
        path: usize,
        told: u8,
    },
    AddPath,
    /// Time passes (`ms` milliseconds) and both ends tick.
    Tick {
        ms: u64,
    },
}

impl<'a> Arbitrary<'a> for Op {
    /// Tag mod 11, then: Open `flags` (bit 0 redundant, bit 1 writes before OpenOk, bits 2-3
    /// both set: refused); Write `side|stream<<1` `len u16`; Finish, Reset `side|stream<<1`;
    /// Read `side|stream<<1` `max u16`; Datagram `side|redundant<<1`; Poll, Deliver
    /// `side|path<<1` `n`; Kill `path` `told`; AddPath; Tick `ms / 5`.
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Op> {
        let byte = |u: &mut Unstructured<'a>| u8::arbitrary(u);
        let tag = byte(u)?;
        let side_and = |b: u8| (usize::from(b & 1), usize::from(b >> 1));
        Ok(match tag % 11 {
            0 => {
                let flags = byte(u)?;
                Op::Open {
                    redundant: flags & 1 != 0,
                    early: flags & 2 != 0,
                    refuse: flags & 12 == 12,
                }
            }
            1 => {
                let (side, stream) = side_and(byte(u)?);
                let len = usize::from(u16::arbitrary(u)? % 4097);
                Op::Write { side, stream, len }
            }
            2 => {
                let (side, stream) = side_and(byte(u)?);
                Op::Finish { side, stream }
            }
            3 => {
                let (side, stream) = side_and(byte(u)?);
                let max = usize::from(u16::arbitrary(u)?);
                Op::Read { side, stream, max }
            }
            4 => {
                let (side, stream) = side_and(byte(u)?);
                Op::Reset { side, stream }
            }
            5 => {
                let (side, redundant) = side_and(byte(u)?);
                Op::Datagram {
                    side,
                    redundant: redundant & 1 != 0,
                }
            }
            6 => {
                let (side, path) = side_and(byte(u)?);
                Op::Poll {
                    side,
                    path,
                    n: usize::from(byte(u)?),
                }
            }
            7 => {
                let (to, path) = side_and(byte(u)?);
                Op::Deliver {
                    to,
                    path,
                    n: usize::from(byte(u)?),
                }
            }
            8 => Op::Kill {
                path: usize::from(byte(u)?),
                told: byte(u)?,
            },
            9 => Op::AddPath,
            _ => Op::Tick {
                ms: u64::from(byte(u)?) * 5,
            },
        })
    }
}

/// One path: a queue of frames per sending side, in order.
struct Pipe {
    /// The network carries it; once false, never again.
    up: bool,
    /// Which ends' links have it.
    joined: [bool; 2],
    queue: [VecDeque<Vec<u8>>; 2],
}

/// One stream; per-direction arrays are indexed by the writing side.
#[derive(Debug, Default)]
struct Stream {
    id: u32,
    written: [u64; 2],
    /// Read by the other side, and whether it saw the end.
    read: [u64; 2],
    eof: [bool; 2],
    /// The writer wants to finish; `finished` once it told its link.
    finish: [bool; 2],
    finished: [bool; 2],
    /// The node writes before `OpenOk` (its link holds the bytes until then).
    early: bool,
    refuse: bool,
    opened: bool,
    open_ok: bool,
    /// Ended early at that side (reset, or refused), or closed.
    gone: [bool; 2],
    aborted: bool,
    closed: [bool; 2],
}

impl Stream {
    fn live(&self, side: usize) -> bool {
        !self.gone[side] && !self.closed[side] && (side == NODE || self.opened)
    }

    fn can_write(&self, side: usize) -> bool {
        self.live(side) && !self.finished[side] && (side == RELAY || self.open_ok || self.early)
    }
}

struct Model {
    links: [Link; 2],
    config: Config,
    base: Instant,
    t: Duration,
    paths: Vec<Pipe>,
    streams: Vec<Stream>,
    datagrams_sent: [u64; 2],
    datagrams_seen: [HashSet<u64>; 2],
    /// The well-behaved finish: readers read whatever is readable.
    eager: bool,
}

/// The stream's byte at `offset`: distinct per stream and direction, and shifted copies of a
/// segment do not match.
fn byte_at(stream: u32, from: usize, offset: u64) -> u8 {
    let x = (offset ^ u64::from(stream) << 40 ^ (from as u64) << 60).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

fn target() -> Address {
    Address::Ip(SocketAddr::from((Ipv4Addr::new(10, 99, 0, 1), 443)))
}

pub fn bond_link(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut byte = || u8::arbitrary(&mut u).unwrap_or(0);
    let config = Config {
        segment: 1 + usize::from(byte()) * 4,
        recv_window: 1 + u64::from(byte()) * 64,
        send_buffer: 1 + usize::from(byte()) * 64,
        max_datagrams: 1 + usize::from(byte() % 8),
        redundant_paths: usize::from(byte() % 3),
        ..Config::default()
    };
    let mut model = Model::new(config);
    model.add_path();
    let mut ops = 0;
    while !u.is_empty() && ops < MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        model.apply(op);
        ops += 1;
    }
    model.settle();
}

impl Model {
    fn new(config: Config) -> Model {
        Model {
            links: [
                Link::new(Role::Node, config.clone()),
                Link::new(Role::Relay, config.clone()),
            ],
            config,
            base: Instant::now(),
            t: Duration::ZERO,
            paths: Vec::new(),
            streams: Vec::new(),
            datagrams_sent: [0; 2],
            datagrams_seen: Default::default(),
            eager: false,
        }
    }

    fn now(&self) -> Instant {
        self.base + self.t
    }

    fn stream_index(&self, i: usize) -> Option<usize> {
        (!self.streams.is_empty()).then(|| i % self.streams.len())
    }

    fn path_id(&self, i: usize) -> Option<u32> {
        (!self.paths.is_empty()).then(|| (i % self.paths.len()) as u32 + 1)
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Open {
                redundant,
                early,
                refuse,
            } => {
                let mode = if redundant { Mode::Redundant } else { Mode::Bandwidth };
                let id = self.links[NODE].open(target(), mode);
                self.streams.push(Stream {
                    id,
                    early,
                    refuse,
                    ..Stream::default()
                });
            }
            Op::Write { side, stream, len } => {
                if let Some(i) = self.stream_index(stream) {
                    self.write(side, i, len);
                }
            }
            Op::Finish { side, stream } => {
                if let Some(i) = self.stream_index(stream) {
                    self.streams[i].finish[side] = true;
                    self.write(side, i, 0);
                }
            }
            Op::Read { side, stream, max } => {
                if let Some(i) = self.stream_index(stream) {
                    self.read(side, i, max);
                }
            }
            Op::Reset { side, stream } => {
                let Some(i) = self.stream_index(stream) else { return };
                let s = &mut self.streams[i];
                if s.live(side) {
                    s.gone[side] = true;
                    s.aborted = true;
                    self.links[side].reset(s.id, 1, "reset");
                }
            }
            Op::Datagram { side, redundant } => {
                let seq = self.datagrams_sent[side];
                self.datagrams_sent[side] += 1;
                let mode = if redundant { Mode::Redundant } else { Mode::Bandwidth };
                self.links[side].send_datagram(side as u32, target(), seq.to_be_bytes().to_vec(), mode);
            }
            Op::Poll { side, path, n } => {
                if let Some(id) = self.path_id(path) {
                    self.poll(side, id, n);
                }
            }
            Op::Deliver { to, path, n } => {
                if let Some(id) = self.path_id(path) {
                    self.deliver(to, id, n);
                }
            }
            Op::Kill { path, told } => {
                if let Some(id) = self.path_id(path) {
                    self.kill(id, [told & 1 != 0, told & 2 != 0]);
                }
            }
            Op::AddPath => {
                if self.paths.iter().filter(|p| p.up).count() < MAX_PATHS {
                    self.add_path();
                }
            }
            Op::Tick { ms } => {
                self.t += Duration::from_millis(ms);
                for side in SIDES {
                    let now = self.now();
                    self.links[side].on_tick(now);
                }
            }
        }
        self.events();
        self.check_buffers();
    }

    fn add_path(&mut self) {
        let id = self.paths.len() as u32 + 1;
        for side in SIDES {
            let now = self.now();
            self.links[side].add_path(id, now, None, None);
        }
        self.paths.push(Pipe {
            up: true,
            joined: [true; 2],
            queue: Default::default(),
        });
    }

    fn pipe(&mut self, id: u32) -> &mut Pipe {
        &mut self.paths[id as usize - 1]
    }

    /// The network loses the path; the `told` ends' engines see it and remove it.
    fn kill(&mut self, id: u32, told: [bool; 2]) {
        let pipe = self.pipe(id);
        pipe.up = false;
        pipe.queue = Default::default();
        for side in SIDES {
            if told[side] && std::mem::take(&mut self.pipe(id).joined[side]) {
                self.links[side].remove_path(id);
            }
        }
    }

    /// Asks `side` for up to `n` frames on path `id` (a dead path swallows them); returns
    /// how many it gave.
    fn poll(&mut self, side: usize, id: u32, n: usize) -> usize {
        for sent in 0..n {
            if !self.pipe(id).joined[side] {
                return sent;
            }
            let mut msg = Vec::new();
            let now = self.now();
            if !self.links[side].poll_transmit(id, now, &mut msg) {
                return sent;
            }
            self.check_wire(side, &msg);
            let pipe = self.pipe(id);
            if pipe.up {
                pipe.queue[side].push_back(msg);
            }
        }
        n
    }

    /// Up to `n` frames on path `id` arrive at `to`; returns how many did.
    fn deliver(&mut self, to: usize, id: u32, n: usize) -> usize {
        for arrived in 0..n {
            let Some(msg) = self.pipe(id).queue[1 - to].pop_front() else {
                return arrived;
            };
            let frame = Frame::decode(&msg).expect("a frame the far end sent decodes");
            let now = self.now();
            if let Err(e) = self.links[to].on_frame(id, frame, now) {
                panic!("side {to} refused a frame from a well-behaved far end: {e}");
            }
            self.events();
        }
        n
    }

    fn write(&mut self, side: usize, i: usize, len: usize) {
        let s = &mut self.streams[i];
        if !s.can_write(side) {
            return;
        }
        let bytes: Vec<u8> = (0..len as u64)
            .map(|k| byte_at(s.id, side, s.written[side] + k))
            .collect();
        s.written[side] += self.links[side].write(s.id, &bytes) as u64;
        if s.finish[side] {
            s.finished[side] = true;
            self.links[side].finish(s.id);
        }
    }

    fn read(&mut self, side: usize, i: usize, max: usize) {
        let s = &mut self.streams[i];
        let from = 1 - side;
        if !s.live(side) || s.eof[from] {
            return;
        }
        let mut out = Vec::new();
        let (n, eof) = self.links[side].read(s.id, &mut out, max);
        assert_eq!(n, out.len());
        for (k, &b) in out.iter().enumerate() {
            assert_eq!(
                b,
                byte_at(s.id, from, s.read[from] + k as u64),
                "stream {} byte {}",
                s.id,
                s.read[from]
            );
        }
        s.read[from] += n as u64;
        if eof {
            assert!(
                s.finished[from] && s.read[from] == s.written[from],
                "end before the last byte"
            );
            s.eof[from] = true;
        }
    }

    fn index_of(&self, id: u32) -> usize {
        self.streams
            .iter()
            .position(|s| s.id == id)
            .expect("a stream the model opened")
    }

    fn events(&mut self) {
        let mut busy = true;
        while busy {
            busy = false;
            for side in SIDES {
                while let Some(event) = self.links[side].poll_event() {
                    busy = true;
                    self.on_event(side, event);
                }
            }
        }
    }

    fn on_event(&mut self, side: usize, event: Event) {
        match event {
            Event::Opened { stream, .. } => {
                assert_eq!(side, RELAY);
                let i = self.index_of(stream);
                let s = &mut self.streams[i];
                assert!(!s.opened, "opened twice");
                s.opened = true;
                if s.refuse {
                    s.gone[RELAY] = true;
                    s.aborted = true;
                    self.links[RELAY].refuse(stream, 5, "refused");
                } else {
                    self.links[RELAY].accept(stream, target());
                    self.write(RELAY, i, 0);
                }
            }
            Event::OpenOk { stream, .. } => {
                assert_eq!(side, NODE);
                let i = self.index_of(stream);
                assert!(!self.streams[i].open_ok, "OpenOk twice");
                self.streams[i].open_ok = true;
                self.write(NODE, i, 0);
            }
            Event::OpenErr { stream, .. } => {
                let i = self.index_of(stream);
                assert!(side == NODE && self.streams[i].refuse);
                self.streams[i].gone[NODE] = true;
            }
            Event::Readable(stream) => {
                if self.eager {
                    let i = self.index_of(stream);
                    self.read(side, i, usize::MAX);
                }
            }
            Event::Writable(_) => {}
            Event::Reset { stream, .. } => {
                let i = self.index_of(stream);
                let s = &mut self.streams[i];
                assert!(s.live(side) && s.gone[1 - side], "a reset nobody sent");
                s.gone[side] = true;
            }
            Event::Closed(stream) => {
                let i = self.index_of(stream);
                let s = &mut self.streams[i];
                assert!(s.live(side), "closed twice or after a reset");
                assert!(s.finished[side] && s.eof[1 - side], "closed before both ends were done");
                s.closed[side] = true;
            }
            Event::Datagram { flow, payload, .. } => {
                let from = flow as usize;
                assert_eq!(from, 1 - side);
                let seq = u64::from_be_bytes(payload.try_into().expect("an 8-byte datagram"));
                assert!(seq < self.datagrams_sent[from]);
                assert!(self.datagrams_seen[from].insert(seq), "datagram {seq} twice");
            }
            // The path stays up; the link copied its frames to the others.
            Event::PathStalled { .. } => {}
            Event::PathDead { path, .. } => {
                // The link removed the path (both ends may find it dead in one tick); the
                // engine closes the connection and the far end's engine sees it close.
                self.pipe(path).joined[side] = false;
                self.kill(path, [false, false]);
                if std::mem::take(&mut self.pipe(path).joined[1 - side]) {
                    self.links[1 - side].remove_path(path);
                }
            }
        }
    }

    fn check_wire(&self, from: usize, msg: &[u8]) {
        assert!(msg.len() <= MAX_FRAME);
        let frame = Frame::decode(msg).expect("sent frames decode");
        if let Frame::Data {
            stream,
            offset,
            fin,
            payload,
        } = frame
        {
            let s = &self.streams[self.index_of(stream)];
            let end = offset + payload.len() as u64;
            assert!(payload.len() <= self.config.segment);
            assert!(end <= s.written[from], "bytes never written");
            assert!(end <= s.read[from] + self.config.recv_window, "beyond the window");
            assert!(
                !fin || (s.finished[from] && end == s.written[from]),
                "FIN not at the end"
            );
            for (k, &b) in payload.iter().enumerate() {
                assert_eq!(b, byte_at(stream, from, offset + k as u64), "wrong byte sent");
            }
        }
    }

    fn check_buffers(&self) {
        let bound = self.config.send_buffer + self.config.recv_window as usize;
        for link in &self.links {
            for s in &self.streams {
                assert!(link.stream_buffered(s.id) <= bound);
            }
        }
    }

    fn settled(&self) -> bool {
        self.links.iter().all(|l| l.stream_count() == 0)
            && self.streams.iter().all(|s| s.aborted || s.closed == [true; 2])
    }

    /// Frames are exchanged until the network is quiet, every reader reads, every writer
    /// finishes, then time moves 25 ms, and again: every stream must close on both ends.
    fn settle(&mut self) {
        self.eager = true;
        if !self.paths.iter().any(|p| p.up) {
            self.add_path();
        }
        for i in 0..self.streams.len() {
            for side in SIDES {
                self.streams[i].finish[side] = true;
                self.write(side, i, 0);
                self.read(side, i, usize::MAX);
            }
        }
        for _ in 0..SETTLE_ROUNDS {
            let mut moved = 1;
            while moved > 0 {
                moved = 0;
                for id in 1..=self.paths.len() as u32 {
                    for side in SIDES {
                        moved += self.poll(side, id, usize::MAX);
                        self.events();
                    }
                    for to in SIDES {
                        moved += self.deliver(to, id, usize::MAX);
                    }
                }
            }
            self.check_buffers();
            if self.settled() {
                for s in self.streams.iter().filter(|s| !s.aborted) {
                    assert_eq!((s.read, s.eof, s.finished), (s.written, [true; 2], [true; 2]));
                }
                return;
            }
            self.apply(Op::Tick { ms: 25 });
        }
        panic!(
            "a well-behaved network and applications did not close every stream: node holds {}, relay {}: {:#?}",
            self.links[NODE].stream_count(),
            self.links[RELAY].stream_count(),
            self.streams
        );
    }
}

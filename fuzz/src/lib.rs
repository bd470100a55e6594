//! The checks behind each fuzz target, one function per target, shared by the libFuzzer
//! binaries in `fuzz_targets/` and the stable corpus replay in `tests/replay.rs`.
//!
//! Each check: decoding any input must not panic; what decodes must consume no more than
//! the input, re-encode, and decode again to the same value; a strict prefix of a canonical
//! encoding must be "need more bytes". Body tracking must not depend on how input is split.
//! Peer frames are whole Noise messages, so there a strict prefix must be an error instead.
//! Bond frames likewise; and `bond_link` (in its own module) drives two bond `Link`s with an
//! operation sequence and checks the stream end to end.
//!
//! The targets on the `booster` crate live in their own modules: `noise` (the Noise
//! handshake and transport over an in-memory duplex stream) and `files` (the TOML config
//! and the speedtest job file).

mod bond_link;
mod files;
mod noise;

pub use bond_link::bond_link;
pub use files::{config, speedtest_jobs};
pub use noise::{noise_handshake, noise_transport};

use proto::http::{BodyFraming, BodyTracker, RequestHead, ResponseHead, MAX_HEAD, MAX_HEADERS};
use proto::peer::{Frame, DATA_HEADER_LEN};
use proto::socks5::{self, Address, Greeting, Request, UdpHeader, UserPass};

type Decode<T, E> = fn(&[u8]) -> Result<Option<(T, usize)>, E>;

/// Decodes `data`; when that succeeds, the consumed bytes must be the canonical encoding,
/// every strict prefix of them must need more bytes, and they must decode to the same value.
fn canonical<T, E>(data: &[u8], decode: Decode<T, E>, encode: fn(&T, &mut Vec<u8>))
where
    T: PartialEq + std::fmt::Debug,
    E: PartialEq + std::fmt::Debug,
{
    let Ok(Some((value, used))) = decode(data) else {
        return;
    };
    let consumed = data.get(..used).expect("consumed more than the input");
    let mut wire = Vec::new();
    encode(&value, &mut wire);
    assert_eq!(wire, consumed, "re-encoding differs from the decoded bytes");
    for cut in 0..wire.len() {
        assert_eq!(decode(&wire[..cut]), Ok(None), "prefix of {cut} bytes is not pending");
    }
    assert_eq!(decode(&wire), Ok(Some((value, used))));
}

pub fn socks5_greeting(data: &[u8]) {
    canonical(data, Greeting::decode, Greeting::encode);
    canonical(data, UserPass::decode, UserPass::encode);
    let _ = socks5::decode_method_selection(data);
    let _ = socks5::decode_auth_status(data);
}

pub fn socks5_request(data: &[u8]) {
    canonical(data, Request::decode, Request::encode);
    canonical(data, Address::decode, Address::encode);
    if let Ok(Some((reply, bound, used))) = socks5::decode_reply(data) {
        let mut wire = Vec::new();
        socks5::encode_reply(reply, &bound, &mut wire);
        assert_eq!(Some(wire.as_slice()), data.get(..used));
    }
    if let Err(error) = Request::decode(data) {
        let _ = error.reply();
    }
}

pub fn socks5_udp(data: &[u8]) {
    if let Ok((header, offset)) = UdpHeader::decode(data) {
        let mut wire = Vec::new();
        header.encode(&mut wire);
        assert_eq!(Some(wire.as_slice()), data.get(..offset));
        assert_eq!(UdpHeader::decode(&wire), Ok((header, offset)));
    }
}

pub fn http_request_head(data: &[u8]) {
    // A small limit exercises the TooLarge path on short inputs.
    if let Ok(Some((_, used))) = RequestHead::decode(data, 64) {
        assert!(used <= 64);
    }
    let head = match RequestHead::decode(data, MAX_HEAD) {
        Ok(Some((head, used))) => {
            assert!(used <= data.len().min(MAX_HEAD));
            head
        }
        Ok(None) => {
            assert!(data.len() < MAX_HEAD);
            return;
        }
        Err(error) => {
            let _ = error.status();
            return;
        }
    };
    assert_eq!(reparse_request(&head), head);
    let framing = head.body_framing();
    let _ = head.keep_alive();
    if let Ok(target) = head.proxy_target() {
        let upstream = head.to_origin_form(&target);
        // Stripping hop-by-hop headers must never change how the body is framed.
        assert_eq!(upstream.body_framing(), framing);
        assert_eq!(upstream.header("host"), Some(target.host_header().as_bytes()));
        if upstream.headers.len() <= MAX_HEADERS {
            assert_eq!(reparse_request(&upstream), upstream);
        }
    }
}

fn reparse_request(head: &RequestHead) -> RequestHead {
    let mut wire = Vec::new();
    head.encode(&mut wire);
    let (again, used) = RequestHead::decode(&wire, usize::MAX)
        .expect("re-encoded request decodes")
        .expect("re-encoded request is complete");
    assert_eq!(used, wire.len());
    again
}

pub fn http_response_head(data: &[u8]) {
    let head = match ResponseHead::decode(data, MAX_HEAD) {
        Ok(Some((head, used))) => {
            assert!(used <= data.len().min(MAX_HEAD));
            head
        }
        Ok(None) => {
            assert!(data.len() < MAX_HEAD);
            return;
        }
        Err(error) => {
            let _ = error.status();
            return;
        }
    };
    let mut wire = Vec::new();
    head.encode(&mut wire);
    let (again, used) = ResponseHead::decode(&wire, usize::MAX)
        .expect("re-encoded response decodes")
        .expect("re-encoded response is complete");
    assert_eq!((&again, used), (&head, wire.len()));
    for method in ["GET", "HEAD", "CONNECT"] {
        assert_eq!(again.body_framing(method), head.body_framing(method));
    }
    let _ = head.keep_alive();
}

/// Outcome of tracking a body: bytes that belong to it and whether it ended, or an error.
type Tracked = Result<(usize, bool), ()>;

fn track(body: &[u8], piece: usize) -> Tracked {
    let mut tracker = BodyTracker::new(BodyFraming::Chunked);
    let mut used = 0;
    for chunk in body.chunks(piece.max(1)) {
        let n = tracker.feed(chunk).map_err(|_| ())?;
        assert!(n <= chunk.len());
        used += n;
        if n < chunk.len() {
            assert!(tracker.is_done(), "stopped short of the input without being done");
            break;
        }
    }
    Ok((used, tracker.is_done()))
}

/// The first byte picks a split size; the rest is the body. Whole, split and
/// one-byte-at-a-time feeding must agree.
pub fn http_body_chunked(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let whole = track(body, body.len());
    assert_eq!(track(body, usize::from(split)), whole, "split size {split}");
    assert_eq!(track(body, 1), whole, "one byte at a time");
    if let Ok((used, done)) = whole {
        assert!(done || used == body.len());
    }
}

/// A peer frame is one whole Noise plaintext: what decodes must re-encode to exactly the
/// input and decode again to the same frame; every strict prefix must be an error (except
/// that a `Data` frame cut after at least one payload byte is a shorter `Data` frame); the
/// zero-copy `decode_data` must agree with `decode`.
pub fn peer_frame(data: &[u8]) {
    let decoded = Frame::decode(data);
    let fast = Frame::decode_data(data);
    assert_eq!(decoded.is_ok(), fast.is_ok(), "decode and decode_data disagree");
    let Ok(frame) = decoded else {
        return;
    };
    let mut wire = Vec::new();
    frame.encode(&mut wire);
    assert_eq!(wire, data, "re-encoding differs from the decoded bytes");
    assert_eq!(Frame::decode(&wire), Ok(frame.clone()));
    let shortest_valid = match (&frame, fast) {
        (Frame::Data(bytes), Ok(Some(borrowed))) => {
            assert_eq!(bytes.as_slice(), borrowed);
            DATA_HEADER_LEN + 1
        }
        (Frame::Data(_), other) => panic!("decode_data missed a data frame: {other:?}"),
        (_, other) => {
            assert_eq!(other, Ok(None));
            wire.len()
        }
    };
    for cut in 0..shortest_valid {
        assert!(Frame::decode(&wire[..cut]).is_err(), "prefix of {cut} bytes decoded");
    }
}

/// A bond frame is one whole Noise plaintext: what decodes must re-encode to the input bytes
/// (except a `Data` frame's reserved flag bits, which are dropped) and decode again to the
/// same frame; `Frame::data_header` must agree with `encode`; every strict prefix must be an
/// error, except that a frame ending in free-length bytes (`Data`, `Datagram`) cut inside
/// them is a shorter valid frame.
pub fn bond_frame(data: &[u8]) {
    use proto::bond::frame::{Frame, DATA_FIN, DATA_HEADER_LEN};
    let Ok(frame) = Frame::decode(data) else {
        return;
    };
    let _ = frame.is_path_level();
    let mut wire = Vec::new();
    frame.encode(&mut wire);
    let mut expected = data.to_vec();
    let shortest_valid = match &frame {
        Frame::Data {
            stream,
            offset,
            fin,
            payload,
        } => {
            expected[DATA_HEADER_LEN - 1] &= DATA_FIN;
            let mut fast = Vec::new();
            Frame::data_header(&mut fast, *stream, *offset, *fin);
            fast.extend_from_slice(payload);
            assert_eq!(fast, wire, "data_header disagrees with encode");
            DATA_HEADER_LEN + usize::from(!fin)
        }
        Frame::Datagram { payload, .. } => wire.len() - payload.len(),
        _ => wire.len(),
    };
    assert_eq!(wire, expected, "re-encoding differs from the decoded bytes");
    assert_eq!(Frame::decode(&wire), Ok(frame));
    for cut in 0..shortest_valid {
        assert!(Frame::decode(&wire[..cut]).is_err(), "prefix of {cut} bytes decoded");
    }
}

/// The range planner driven by an operation sequence. Bytes 0..2 pick the file size
/// (1..=65536), byte 2 the window (0 = none, else × 512 bytes); then each op is one byte
/// (low nibble: the op, high bits: the source) plus its parameter bytes. Checks after every
/// op: the planner's own invariants, `delivered()` monotonic, assignments inside the file and
/// the window, at most two holders per piece, cancels only of live assignments, done bytes
/// only where the engine really received bytes (or marked them done). Then a well-behaved
/// engine (every source completes what it gets) must finish the file.
pub fn range_planner(data: &[u8]) {
    use proto::range::{Next, Planner, PlannerConfig};
    let mut input = data.iter().copied();
    let mut byte = move || input.next();
    let size = u64::from(u16::from_le_bytes([byte().unwrap_or(0), byte().unwrap_or(0)])) + 1;
    let window = match byte().unwrap_or(0) {
        0 => None,
        w => Some(u64::from(w) * 512),
    };
    let cfg = PlannerConfig {
        min_piece: 512,
        initial_piece: 2048,
        max_piece: 16384,
        window,
        ..Default::default()
    };
    let mut model = RangeModel::new(size, window, Planner::new(size, cfg));
    while let Some(op) = byte() {
        let id = usize::from(op >> 4) % 4;
        let param = byte().unwrap_or(0);
        model.apply(op & 0x0f, id, param);
    }
    model.apply(OP_ADD, 0, 0);
    for _ in 0..100_000 {
        if model.planner.is_done() {
            assert_eq!(model.planner.done_ranges(), [(0, size)]);
            assert_eq!(model.received, [(0, size)]);
            assert_eq!(model.planner.next(0, model.now()), Next::Done);
            return;
        }
        model.apply(OP_ADVANCE, 0, 1);
        for id in model.added.clone() {
            let op = if model.held[id].is_some() { OP_COMPLETE } else { OP_NEXT };
            model.apply(op, id, 0);
        }
    }
    panic!("a well-behaved engine did not finish: {:?}", model.planner);
}

const OP_ADD: u8 = 0;
const OP_NEXT: u8 = 2;
const OP_COMPLETE: u8 = 4;
const OP_ADVANCE: u8 = 7;

/// What the engine knows: each source's assignment and received count, and which bytes were
/// really received (sorted, merged ranges).
struct RangeModel {
    planner: proto::range::Planner,
    size: u64,
    window: Option<u64>,
    base: std::time::Instant,
    t: std::time::Duration,
    added: Vec<usize>,
    held: [Option<(proto::range::Assignment, u64)>; 4],
    received: Vec<(u64, u64)>,
    delivered: u64,
}

impl RangeModel {
    fn new(size: u64, window: Option<u64>, planner: proto::range::Planner) -> Self {
        RangeModel {
            planner,
            size,
            window,
            base: std::time::Instant::now(),
            t: std::time::Duration::ZERO,
            added: Vec::new(),
            held: [None; 4],
            received: Vec::new(),
            delivered: 0,
        }
    }

    fn now(&self) -> std::time::Instant {
        self.base + self.t
    }

    fn receive(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        self.received.push((start, end));
        self.received.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.received.len());
        for &(s, e) in &self.received {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.received = merged;
    }

    fn cancelled(&mut self, cancels: Vec<proto::range::Cancel>) {
        for c in cancels {
            let held = self.held[c.source].take().map(|(a, _)| a.piece);
            assert_eq!(held, Some(c.piece), "cancel {c:?} of nothing held");
        }
    }

    fn apply(&mut self, op: u8, id: usize, param: u8) {
        use proto::range::Next;
        let now = self.now();
        match op {
            OP_ADD => {
                let prior = (param > 0).then(|| f64::from(param) * 10_000.0);
                self.planner.add_source(id, prior);
                if !self.added.contains(&id) {
                    self.added.push(id);
                }
            }
            1 => {
                let cancels = self.planner.remove_source(id);
                let held = self.held[id].take().map(|(a, _)| (id, a.piece));
                assert_eq!(
                    cancels.iter().map(|c| (c.source, c.piece)).collect::<Vec<_>>(),
                    Vec::from_iter(held)
                );
                self.added.retain(|&a| a != id);
            }
            OP_NEXT => {
                let limit = self
                    .window
                    .map_or(self.size, |w| self.planner.delivered().saturating_add(w));
                self.held[id] = None;
                match self.planner.next(id, now) {
                    Next::Fetch(a) => {
                        assert!(self.added.contains(&id), "work for unknown source {id}");
                        assert!(
                            a.start < a.end && a.end <= self.size && a.end <= limit,
                            "{a:?}, limit {limit}"
                        );
                        let holders = self.held.iter().flatten().filter(|(h, _)| h.piece == a.piece).count();
                        assert!(holders < 2, "third holder for {a:?}");
                        assert_eq!(a.duplicate, holders == 1);
                        self.held[id] = Some((a, 0));
                    }
                    Next::Done => assert!(self.planner.is_done()),
                    Next::Wait => assert!(!self.planner.is_done()),
                }
            }
            3 => {
                let Some((a, received)) = self.held[id] else { return };
                let new = received + (a.len() - received) * u64::from(param) / 256;
                self.receive(a.start, a.start + new);
                self.held[id] = Some((a, new));
                let cancels = self.planner.progress(id, a.piece, new, now);
                if new == a.len() {
                    self.held[id] = None;
                }
                self.cancelled(cancels);
            }
            OP_COMPLETE => {
                let Some((a, _)) = self.held[id].take() else { return };
                self.receive(a.start, a.end);
                let cancels = self.planner.complete(id, a.piece, now);
                self.cancelled(cancels);
            }
            5 => {
                if let Some((a, _)) = self.held[id].take() {
                    self.planner.fail(id, a.piece, now);
                }
            }
            6 => {
                // A report that raced with a cancel: for a piece this source does not hold.
                let piece = u64::from(param >> 2);
                if self.held[id].is_some_and(|(a, _)| a.piece == piece) {
                    return;
                }
                match param & 3 {
                    0 => assert!(self.planner.progress(id, piece, u64::MAX, now).is_empty()),
                    1 => assert!(self.planner.complete(id, piece, now).is_empty()),
                    _ => self.planner.fail(id, piece, now),
                }
            }
            OP_ADVANCE => self.t += std::time::Duration::from_millis(u64::from(param) * 10),
            8 => {
                let cancels = self.planner.check_stalls(now);
                self.cancelled(cancels);
            }
            9 => {
                let (a, b) = (u64::from(param & 0x0f), u64::from(param >> 4));
                let (start, end) = (self.size * a.min(b) / 15, self.size * a.max(b) / 15);
                self.receive(start, end);
                self.planner.mark_done(start, end);
            }
            _ => {}
        }
        self.check();
    }

    fn check(&mut self) {
        if let Err(e) = self.planner.check_invariants() {
            panic!("{e}");
        }
        let delivered = self.planner.delivered();
        assert!(delivered >= self.delivered, "delivered went backwards");
        self.delivered = delivered;
        for (start, end) in self.planner.done_ranges() {
            let within = self.received.iter().any(|&(s, e)| s <= start && end <= e);
            assert!(within, "{start}..{end} is done but was never received");
        }
        if self.planner.is_done() {
            assert_eq!(self.received, [(0, self.size)]);
        }
    }
}

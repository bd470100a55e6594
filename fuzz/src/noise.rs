//! The Noise targets: `booster::noise`'s handshake (`accept`, `connect`) and transport
//! (`NoiseStream`) fed hostile bytes over an in-memory `tokio::io::duplex` stream, on a
//! current-thread runtime whose clock is paused (a stalled handshake times out at once).
//!
//! The other end of the duplex is a harness peer: an honest `snow` state with the same
//! pattern, prologue and PSK (so the fuzzer gets past the first message, which it could never
//! forge), whose messages the input tampers with, or plain input bytes.
//!
//! Checked:
//! - Nothing panics, nothing hangs, no error is of a kind that cannot happen there.
//! - A responder whose first message did not authenticate has written nothing.
//! - An untampered handshake succeeds and names the harness's static key; a tampered one
//!   fails (wrong PSK or prologue: `WrongSecret` at a responder; a foreign version byte:
//!   `Version`).
//! - After the handshake, `recv` (or `AsyncRead`) yields exactly the valid messages sent
//!   before the first bad one (flipped bit, replay, skipped nonce, raw bytes, cut message),
//!   then a clean EOF if there was none, else an error, and after an error only `Closed`.
//! - What booster sends back (`send`, or `AsyncWrite`) decrypts, in order, at the harness.
//!
//! Allocation is bounded by libFuzzer's `-malloc_limit_mb` (see `run.sh`).

use booster::noise::{self, Channel, HandshakeError, Identity, NoiseError, NoiseStream, Remote, MAX_PLAINTEXT};
use snow::{HandshakeState, StatelessTransportState};
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{duplex, split, AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf};

const PSK: [u8; 32] = [7; 32];
const BOOSTER_KEY: [u8; 32] = [1; 32];
const PEER_KEY: [u8; 32] = [2; 32];
/// The harness's ephemeral key is fixed so that its messages, and so the path an input
/// takes, do not change between runs (booster's own ephemeral is random; that only changes
/// ciphertext bytes, never a branch).
const PEER_EPHEMERAL: [u8; 32] = [3; 32];
/// The handshake timeout; on the paused clock it passes instantly when both sides wait.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Duplex buffer sizes: tiny ones split every read and write.
const CAPACITY: [usize; 8] = [1, 2, 7, 16, 64, 256, 4096, 1 << 17];
/// `AsyncRead` buffer sizes.
const READ_SIZE: [usize; 11] = [
    1,
    2,
    3,
    15,
    16,
    17,
    100,
    4096,
    MAX_PLAINTEXT,
    MAX_PLAINTEXT + 1,
    200_000,
];
/// Plaintext the harness sends per input, at most (1 KiB per byte of duplex capacity below
/// that): keeps one execution fast.
const MAX_SENT: usize = 1 << 20;
const MAX_OPS: usize = 64;

/// The two prologues of `noise.rs` (private there), one per channel.
fn prologue(channel: Channel) -> &'static [u8] {
    match channel {
        Channel::Peer => b"booster peer channel",
        Channel::Bond => b"booster-bond/1",
    }
}

fn other(channel: Channel) -> Channel {
    match channel {
        Channel::Peer => Channel::Bond,
        Channel::Bond => Channel::Peer,
    }
}

fn identities() -> &'static (Identity, [u8; 32]) {
    static IDS: OnceLock<(Identity, [u8; 32])> = OnceLock::new();
    IDS.get_or_init(|| {
        (
            Identity::from_private(BOOSTER_KEY),
            Identity::from_private(PEER_KEY).public(),
        )
    })
}

/// Runs `future` to completion on a current-thread runtime with a paused clock; panics if
/// it would wait forever (a deadlock: the paused clock then jumps to the guard timer).
fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
    }
    RT.with(|rt| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(3600), future)
                .await
                .expect("stuck: both ends wait and no timer can end it")
        })
    })
}

/// Input bytes; missing bytes read as zero.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

async fn booster_handshake(
    connects: bool,
    channel: Channel,
    io: DuplexStream,
) -> Result<(NoiseStream<DuplexStream>, Remote), NoiseError> {
    let me = &identities().0;
    if connects {
        noise::connect(channel, io, &PSK, me, TIMEOUT).await
    } else {
        noise::accept(channel, io, &PSK, me, TIMEOUT).await
    }
}

fn peer_state(channel: Channel, psk: &[u8; 32], initiator: bool) -> HandshakeState {
    let builder = snow::Builder::new(noise::PATTERN.parse().expect("pattern"))
        .prologue(prologue(channel))
        .and_then(|b| b.psk(0, psk))
        .and_then(|b| b.local_private_key(&PEER_KEY))
        .expect("harness noise setup")
        .fixed_ephemeral_key_for_testing_only(&PEER_EPHEMERAL);
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .expect("harness handshake state")
}

/// Reads one `[u16 length][message]` frame; `None` at EOF or error.
async fn read_frame(io: &mut ReadHalf<DuplexStream>, read: &mut usize) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 2];
    io.read_exact(&mut prefix).await.ok()?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    io.read_exact(&mut message).await.ok()?;
    *read += 2 + message.len();
    Some(message)
}

/// Reads everything left until EOF; returns the byte count.
async fn drain(io: &mut ReadHalf<DuplexStream>) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut frame = (message.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(message);
    frame
}

/// `noise_handshake`: byte 0 picks booster's side (bit 0: connect, else accept), the
/// channel (bit 1), raw input (bit 2) or an honest harness with tampering, and the duplex
/// size (bits 3..6). Raw: the rest is what booster reads. Tampered: the rest is up to eight
/// 4-byte tamper ops (see [`Tamper`]).
pub fn noise_handshake(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let connects = flags & 1 != 0;
    let channel = if flags & 2 != 0 { Channel::Bond } else { Channel::Peer };
    let capacity = CAPACITY[usize::from(flags >> 3) % CAPACITY.len()];
    if flags & 4 != 0 {
        raw_handshake(connects, channel, capacity, input.0);
    } else {
        let mut ops = Vec::new();
        while !input.0.is_empty() && ops.len() < 8 {
            ops.push([input.byte(), input.byte(), input.byte(), input.byte()]);
        }
        tampered_handshake(connects, channel, capacity, &ops);
    }
}

fn raw_handshake(connects: bool, channel: Channel, capacity: usize, bytes: &[u8]) {
    let (ours, theirs) = duplex(capacity);
    let (mut rd, mut wr) = split(theirs);
    let (result, written, ()) = block_on(async {
        tokio::join!(
            async {
                booster_handshake(connects, channel, ours)
                    .await
                    .map(|(_, remote)| remote)
            },
            drain(&mut rd),
            async {
                let _ = wr.write_all(bytes).await;
                let _ = wr.shutdown().await;
            },
        )
    });
    let error = match result {
        Ok(remote) => panic!("raw bytes passed the handshake: {remote:?}"),
        Err(error) => error,
    };
    if connects {
        assert!(
            matches!(
                error,
                NoiseError::TooLarge | NoiseError::Handshake(HandshakeError::BadMessage | HandshakeError::PeerClosed)
            ),
            "initiator: {error:?}"
        );
    } else {
        // Raw bytes can still hold a genuine message 1: a replay of the harness's (fixed
        // ephemeral key), which libFuzzer does find. A responder cannot tell a replayed
        // message 1 from a fresh one; it answers, and message 3 then fails.
        let replayed = bytes.starts_with(&honest_first_message(channel));
        assert!(
            matches!(
                error,
                NoiseError::TooLarge
                    | NoiseError::Handshake(
                        HandshakeError::WrongSecret | HandshakeError::PeerClosed | HandshakeError::Malformed
                    )
            ) || (replayed && matches!(error, NoiseError::Handshake(HandshakeError::BadMessage))),
            "responder: {error:?}"
        );
        assert!(
            written == 0 || replayed,
            "the responder answered an unauthenticated first message"
        );
    }
}

/// The harness initiator's message 1, framed: always the same bytes for a channel.
fn honest_first_message(channel: Channel) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = peer_state(channel, &PSK, true)
        .write_message(&[], &mut buf)
        .expect("message 1");
    framed(&buf[..n])
}

/// One tamper op: `[tag, message, a, b]`. `message` (mod the count) picks which of the
/// harness's handshake messages it applies to (initiator: 1 and 3; responder: 2). Tags mod 8:
/// 0 xor byte `a` of the frame (length prefix included) with `b | 1`; 1 cut the frame to `a`
/// bytes; 2 set the length prefix to `[a, b]`; 3 replace the payload by `b % 3` bytes `a`;
/// 4 append `b` bytes `a` after the frame; 5 a wrong PSK; 6 the other channel's prologue;
/// 7 close instead of sending the message.
type Tamper = [u8; 4];

/// How the harness's handshake went, for the checks.
#[derive(Default, Debug)]
struct Tampered {
    /// Some message differed from the honest one, or was not sent.
    handshake: bool,
    /// Message 1 (harness initiator) was tampered or not sent, or the PSK or prologue was
    /// wrong: the responder must not answer.
    first: bool,
    /// Garbage followed the last handshake message.
    garbage: bool,
    /// The only tamper was a foreign one-byte version payload.
    version: Option<u8>,
    wrong_key: bool,
    other_tamper: bool,
}

fn tampered_handshake(connects: bool, channel: Channel, capacity: usize, ops: &[Tamper]) {
    let initiator = !connects;
    let sends = if initiator { 2 } else { 1 };
    let mut psk = PSK;
    let mut peer_channel = channel;
    let mut t = Tampered::default();
    for op in ops {
        match op[0] % 8 {
            5 => psk[0] ^= op[2] | 1,
            6 => peer_channel = other(channel),
            _ => {}
        }
    }
    t.wrong_key = psk != PSK || peer_channel != channel;
    let (ours, theirs) = duplex(capacity);
    let (mut rd, mut wr) = split(theirs);
    let peer = async {
        let mut hs = peer_state(peer_channel, &psk, initiator);
        let mut read = 0usize;
        let mut buf = vec![0u8; 1024];
        let mut payload = vec![0u8; 1024];
        let mut closed = false;
        let mut late_tail = Vec::new();
        for k in 0..sends {
            if k > 0 || !initiator {
                // The other side's message first.
                let Some(message) = read_frame(&mut rd, &mut read).await else {
                    break;
                };
                if hs.read_message(&message, &mut payload).is_err() {
                    break;
                }
            }
            let ours_ops = ops.iter().filter(|op| usize::from(op[1]) % sends == k);
            let default: &[u8] = if initiator && k == 0 {
                &[]
            } else {
                &[noise::PROTOCOL_VERSION]
            };
            let mut body = default.to_vec();
            let (mut close, mut tail) = (false, Vec::new());
            for op in ours_ops.clone() {
                if op[0] % 8 == 3 {
                    body = vec![op[2]; usize::from(op[3] % 3)];
                }
            }
            let n = hs.write_message(&body, &mut buf).expect("harness write");
            let honest = framed(&buf[..n]);
            let mut frame = honest.clone();
            for op in ours_ops {
                let (a, b) = (usize::from(op[2]), op[3]);
                match op[0] % 8 {
                    0 if a < frame.len() => frame[a] ^= b | 1,
                    1 if a < frame.len() => {
                        frame.truncate(a);
                        close = true;
                    }
                    2 if frame.len() >= 2 => frame[..2].copy_from_slice(&[op[2], b]),
                    4 => tail.extend(std::iter::repeat_n(op[2], usize::from(b))),
                    7 => close = true,
                    _ => {}
                }
            }
            let changed = frame != honest || body != default;
            let last = k + 1 == sends;
            if changed || close || (!tail.is_empty() && !last) {
                t.handshake = true;
                if initiator && k == 0 && (changed || close) {
                    t.first = true;
                }
                match (&body[..], frame == honest && !close && tail.is_empty()) {
                    (&[v], true) if body != default && !(initiator && k == 0) => t.version = Some(v),
                    _ => t.other_tamper = true,
                }
            }
            t.garbage |= last && !tail.is_empty();
            if ops.iter().any(|op| op[0] % 8 == 7 && usize::from(op[1]) % sends == k) {
                closed = true;
                break;
            }
            // Garbage after the last message is written once the handshake is over: before, it
            // could fill a tiny duplex while booster waits to write its own next message.
            if last {
                late_tail = tail;
            } else {
                frame.extend_from_slice(&tail);
            }
            if wr.write_all(&frame).await.is_err() || close {
                closed = true;
                break;
            }
        }
        // A responder reads message 3 last.
        if !closed && !initiator {
            match read_frame(&mut rd, &mut read).await {
                Some(message) => closed = hs.read_message(&message, &mut payload).is_err(),
                None => closed = true,
            }
        }
        // After an honest handshake: one transport message each way (the harness closes its
        // side first, so booster never waits for bytes that will not come).
        let mut pong = None;
        if !closed && hs.is_handshake_finished() {
            let transport = hs.into_stateless_transport_mode().expect("transport");
            let n = transport.write_message(0, b"ping", &mut buf).expect("encrypt");
            let mut wire = late_tail;
            wire.extend_from_slice(&framed(&buf[..n]));
            let sent = wr.write_all(&wire).await.is_ok();
            let _ = wr.shutdown().await;
            if sent {
                if let Some(message) = read_frame(&mut rd, &mut read).await {
                    let n = transport
                        .read_message(0, &message, &mut payload)
                        .expect("booster's pong decrypts");
                    pong = Some(payload[..n].to_vec());
                }
            }
        }
        let _ = wr.shutdown().await;
        read += drain(&mut rd).await;
        (read, pong)
    };
    let node = async {
        let (mut stream, remote) = booster_handshake(connects, channel, ours).await?;
        let first = stream.recv().await.map(|m| m.map(<[u8]>::to_vec));
        if let Ok(Some(message)) = &first {
            stream.send(message.as_slice()).await.ok();
        }
        Ok::<_, NoiseError>((remote, first))
    };
    let (result, (written, pong)) = block_on(async { tokio::join!(node, peer) });
    if t.wrong_key {
        t.handshake = true;
        t.first |= initiator;
        t.other_tamper = true;
    }
    if t.first {
        assert_eq!(
            written, 0,
            "the responder answered a bad first message ({t:?}): {result:?}"
        );
    }
    if !t.handshake {
        let (remote, first) = result.unwrap_or_else(|e| panic!("honest handshake failed ({t:?}): {e:?}"));
        assert_eq!(remote.static_key, identities().1);
        if t.garbage {
            assert!(
                matches!(first, Err(NoiseError::Decrypt | NoiseError::Io(_))),
                "{first:?}"
            );
        } else {
            assert_eq!(first.expect("ping").as_deref(), Some(&b"ping"[..]));
            assert_eq!(pong.as_deref(), Some(&b"ping"[..]));
        }
        return;
    }
    let error = match result {
        Ok((remote, _)) => panic!("tampered handshake succeeded ({t:?}): {remote:?}"),
        Err(error) => error,
    };
    match (t.version, t.other_tamper, t.wrong_key) {
        (Some(v), false, _) => assert!(matches!(error, NoiseError::Version(got) if got == v), "{error:?}"),
        (_, _, true) if !connects && ops.iter().all(|op| matches!(op[0] % 8, 5 | 6)) => {
            assert!(
                matches!(error, NoiseError::Handshake(HandshakeError::WrongSecret)),
                "{error:?}"
            )
        }
        _ => assert!(
            !matches!(
                error,
                NoiseError::Closed | NoiseError::Decrypt | NoiseError::Handshake(HandshakeError::Local)
            ),
            "{error:?}"
        ),
    }
}

/// `noise_transport`: byte 0 picks booster's side (bit 0), the channel (bit 1), `recv` and
/// `send` (bit 2 clear) or `AsyncRead` and `AsyncWrite`, and the duplex size (bits 3..6);
/// byte 1 the `AsyncRead` buffer size. After an honest handshake, the rest is up to 64
/// operations of the harness (see [`transport_op`]), written while booster reads and echoes.
pub fn noise_transport(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let connects = flags & 1 != 0;
    let channel = if flags & 2 != 0 { Channel::Bond } else { Channel::Peer };
    let bytes_mode = flags & 4 != 0;
    let capacity = CAPACITY[usize::from(flags >> 3) % CAPACITY.len()];
    let read_size = READ_SIZE[usize::from(input.byte()) % READ_SIZE.len()];

    let (ours, theirs) = duplex(capacity);
    let (mut rd, mut wr) = split(theirs);
    let peer_handshake = async {
        let initiator = !connects;
        let mut hs = peer_state(channel, &PSK, initiator);
        let (mut buf, mut payload, mut read) = (vec![0u8; 1024], vec![0u8; 1024], 0);
        for k in 0..3 {
            if (k % 2 == 0) == initiator {
                let n = hs
                    .write_message(&[noise::PROTOCOL_VERSION][..usize::from(k > 0)], &mut buf)
                    .unwrap();
                wr.write_all(&framed(&buf[..n])).await.expect("handshake write");
            } else {
                let message = read_frame(&mut rd, &mut read).await.expect("handshake message");
                hs.read_message(&message, &mut payload)
                    .expect("booster's handshake message");
            }
        }
        hs.into_stateless_transport_mode().expect("transport")
    };
    let (node, transport) =
        block_on(async { tokio::join!(booster_handshake(connects, channel, ours), peer_handshake) });
    let (mut stream, remote) = node.expect("honest handshake");
    assert_eq!(remote.static_key, identities().1);

    // What the harness sends, decided up front.
    let mut script = Script {
        transport: &transport,
        nonce: 0,
        // A tiny duplex moves a few bytes per wake-up: scale the plaintext with it, or one
        // input of 64 KiB messages through a 1-byte pipe takes seconds.
        budget: MAX_SENT.min(capacity * 1024),
        sent: Vec::new(),
        wire: Vec::new(),
        expected: Vec::new(),
        corrupt: false,
    };
    for _ in 0..MAX_OPS {
        if input.0.is_empty() || script.op(&mut input) {
            break;
        }
    }
    let Script {
        wire,
        expected,
        corrupt,
        ..
    } = script;

    let node = async {
        let mut got: Vec<Vec<u8>> = Vec::new();
        let outcome = if bytes_mode {
            let mut buf = vec![0u8; read_size];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        got.push(buf[..n].to_vec());
                        stream.write_all(&buf[..n]).await.expect("echo");
                    }
                    Err(error) => break Err(error.to_string()),
                }
            }
        } else {
            loop {
                match stream.recv().await {
                    Ok(None) => break Ok(()),
                    Ok(Some(message)) => {
                        let message = message.to_vec();
                        stream.send(&message).await.expect("echo");
                        got.push(message);
                    }
                    Err(error) => {
                        assert!(matches!(error, NoiseError::Decrypt | NoiseError::Io(_)), "{error:?}");
                        let again = stream.recv().await;
                        assert!(matches!(again, Err(NoiseError::Closed)), "after {error:?}: {again:?}");
                        break Err(error.to_string());
                    }
                }
            }
        };
        stream.flush().await.expect("flush");
        drop(stream);
        (got, outcome)
    };
    let peer_write = async {
        let _ = wr.write_all(&wire).await;
        let _ = wr.shutdown().await;
    };
    let peer_read = async {
        let (mut echoes, mut read, mut plain) = (Vec::new(), 0, vec![0u8; MAX_PLAINTEXT]);
        let mut nonce = 0;
        while let Some(message) = read_frame(&mut rd, &mut read).await {
            let n = transport
                .read_message(nonce, &message, &mut plain)
                .expect("booster's message decrypts");
            nonce += 1;
            echoes.push(plain[..n].to_vec());
        }
        echoes
    };
    let ((got, outcome), (), echoes) = block_on(async { tokio::join!(node, peer_write, peer_read) });
    assert_eq!(outcome.is_ok(), !corrupt, "outcome {outcome:?}");
    if bytes_mode {
        assert_eq!(got.concat(), expected.concat(), "bytes read");
        assert_eq!(echoes.concat(), expected.concat(), "bytes echoed");
    } else {
        assert_eq!(got, expected, "messages received");
        assert_eq!(echoes, expected, "messages echoed");
    }
}

/// The harness's side of `noise_transport`: the bytes it writes and what booster must get.
struct Script<'a> {
    transport: &'a StatelessTransportState,
    nonce: u64,
    /// Plaintext bytes still allowed.
    budget: usize,
    /// Valid frames sent so far, for replays.
    sent: Vec<Vec<u8>>,
    wire: Vec<u8>,
    /// The valid messages before the first bad byte.
    expected: Vec<Vec<u8>>,
    /// Something bad was written.
    corrupt: bool,
}

impl Script<'_> {
    fn encrypt(&self, plain: &[u8], nonce: u64) -> Vec<u8> {
        let mut out = vec![0u8; plain.len() + noise::TAG_LEN];
        let n = self.transport.write_message(nonce, plain, &mut out).expect("encrypt");
        framed(&out[..n])
    }

    fn bad(&mut self, bytes: &[u8]) {
        self.wire.extend_from_slice(bytes);
        self.corrupt |= !bytes.is_empty();
    }

    /// One harness operation: a tag byte (mod 8) and its bytes. 0: a valid message of `n`
    /// input bytes; 1: a valid message of a `u16` length (mod [`MAX_PLAINTEXT`] + 1) filled
    /// with one byte; 2: a valid message with one byte flipped; 3: `n` raw bytes; 4: a replay
    /// of an earlier message; 5: skip nonces, then a valid message; 6: a valid message cut
    /// after `n` bytes, then the end; 7: a length prefix of 65535, `n` bytes, then the end.
    /// Returns whether the stream ends here.
    fn op(&mut self, input: &mut Input) -> bool {
        let tag = input.byte() % 8;
        match tag {
            0 | 1 => {
                let plain = if tag == 0 {
                    let n = usize::from(input.byte());
                    input.take(n).to_vec()
                } else {
                    let len = usize::from(u16::from_le_bytes([input.byte(), input.byte()])) % (MAX_PLAINTEXT + 1);
                    vec![input.byte(); len]
                };
                if plain.len() > self.budget {
                    return false;
                }
                self.budget -= plain.len();
                let frame = self.encrypt(&plain, self.nonce);
                self.nonce += 1;
                if !self.corrupt {
                    self.expected.push(plain);
                }
                self.wire.extend_from_slice(&frame);
                self.sent.push(frame);
            }
            2 => {
                let n = usize::from(input.byte() % 32);
                let plain = input.take(n).to_vec();
                let (at, x) = (usize::from(input.byte()), input.byte() | 1);
                let mut frame = self.encrypt(&plain, self.nonce);
                let at = at % frame.len();
                frame[at] ^= x;
                self.bad(&frame);
            }
            3 => {
                let n = usize::from(input.byte());
                self.bad(input.take(n));
            }
            4 => {
                let i = usize::from(input.byte());
                if !self.sent.is_empty() {
                    let frame = self.sent[i % self.sent.len()].clone();
                    self.bad(&frame);
                }
            }
            5 => {
                self.nonce += 1 + u64::from(input.byte() % 3);
                let n = usize::from(input.byte() % 32);
                let plain = input.take(n).to_vec();
                let frame = self.encrypt(&plain, self.nonce);
                self.nonce += 1;
                self.bad(&frame);
            }
            6 => {
                let n = usize::from(input.byte() % 32);
                let plain = input.take(n).to_vec();
                let frame = self.encrypt(&plain, self.nonce);
                let cut = usize::from(input.byte()) % frame.len();
                self.bad(&frame[..cut]);
                return true;
            }
            _ => {
                let n = usize::from(input.byte());
                let mut bytes = vec![0xff, 0xff];
                bytes.extend_from_slice(input.take(n));
                self.bad(&bytes);
                return true;
            }
        }
        false
    }
}

//! The encrypted peer channel: Noise `XXpsk0_25519_ChaChaPoly_BLAKE2s` over any async byte
//! stream (TCP in practice). Everything two nodes say to each other goes through here; the
//! frames inside are `proto::peer`.
//!
//! Reading order: [`derive_psk`] and [`Identity`] (the two keys a node has), then [`connect`]
//! and [`accept`] (the handshake), then [`NoiseStream`] (messages after it). The byte layout
//! is in `docs/protocol.md`.
//!
//! Security properties, and why:
//! - **Network secret first.** The PSK (Argon2id of the network secret) is mixed in before
//!   the first message (`psk0`), so message 1 is already authenticated. A node with another
//!   secret fails at the responder's first read, and the responder closes without sending a
//!   single byte: a scanner learns nothing, not even that this is booster.
//! - **Static identities.** Each node has a long-term X25519 key ([`Identity`]); XX sends
//!   both encrypted and the caller gets the peer's in [`Remote`], to pin or display.
//! - **No cryptography here.** snow does the handshake and the AEAD; argon2 derives the PSK.
//!   This file only frames messages and bounds buffers.
//!
//! Wire: every Noise message is `[u16 big-endian length][message]`. The handshake is
//! msg1 (initiator: empty payload), msg2 (responder: payload = version byte), msg3
//! (initiator: payload = version byte); after it each transport message carries one
//! application message of at most [`MAX_PLAINTEXT`] bytes. A message that fails to decrypt
//! (corrupted, forged, replayed or reordered) is fatal for the channel.
//!
//! Nonces: the transport uses snow's `StatelessTransportState` so that the two directions
//! can be driven from two tasks without a lock ([`NoiseStream::split`]). Each direction
//! keeps its own counter, starting at 0 and advancing by one per message it successfully
//! encrypts or decrypts; snow refuses the reserved last nonce.

use std::fmt;
use std::fs;
use std::future::poll_fn;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use snow::params::{DHChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::{HandshakeState, StatelessTransportState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};

/// The Noise protocol name. Both sides must use exactly this.
pub const PATTERN: &str = "Noise_XXpsk0_25519_ChaChaPoly_BLAKE2s";
/// What a Noise connection is for. Its prologue is bound into the handshake hash, so a
/// transcript of another protocol (or of the other channel) that happens to use the same
/// pattern and PSK can never be accepted: a peer handshake replayed at a relay fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Node to node (`peer.rs`, `lend.rs`).
    Peer,
    /// Node to relay, one per bond path (`bond/`, `relay.rs`).
    Bond,
}

impl Channel {
    fn prologue(self) -> &'static [u8] {
        match self {
            Channel::Peer => b"booster peer channel",
            Channel::Bond => b"booster-bond/1",
        }
    }
}
/// The peer protocol version carried in handshake messages 2 and 3.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest Noise message (the Noise spec's limit; also what a u16 length can say).
pub const MAX_MESSAGE: usize = 65535;
/// The AEAD tag every transport message carries.
pub const TAG_LEN: usize = 16;
/// Largest plaintext one transport message carries.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - TAG_LEN;
/// Bytes of the length prefix in front of every message.
const LEN_PREFIX: usize = 2;
/// Largest handshake message accepted. The XX messages are 48, 97 and 65 bytes; anything
/// much bigger is not booster, and is refused before its body is read.
const MAX_HANDSHAKE_MESSAGE: usize = 256;

/// The read buffer starts this small: a control channel or a quiet stream never needs more.
const READ_BUF_SMALL: usize = 16 * 1024;
/// The read buffer grows to this when a message does not fit the small one: room for two
/// full messages, so reading ahead rarely has to move bytes. Fixed, whatever the sender
/// claims in its length prefix.
const READ_BUF_LARGE: usize = 2 * (LEN_PREFIX + MAX_MESSAGE);

/// Salt for the PSK derivation. Versioned so a future change of KDF parameters changes it.
pub const PSK_SALT: &[u8] = b"booster-network-v1";
/// Argon2id memory cost in KiB (the OWASP minimum for Argon2id): the network secret may be
/// a human password, so guessing it offline from a captured handshake must be expensive.
const PSK_M_COST: u32 = 19_456;
/// Argon2id passes.
const PSK_T_COST: u32 = 2;
/// Argon2id lanes.
const PSK_P_COST: u32 = 1;
/// Distinct secrets whose PSK is kept; a process normally has exactly one.
const PSK_CACHE: usize = 4;

/// Why the channel failed. After any error other than [`NoiseError::TooLarge`] from `send`,
/// the direction it happened in is dead; further calls return [`NoiseError::Closed`].
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    #[error("peer channel i/o: {0}")]
    Io(#[from] io::Error),
    #[error("peer handshake failed: {0}")]
    Handshake(HandshakeError),
    #[error("peer message failed to decrypt (corrupted, forged or replayed); channel closed")]
    Decrypt,
    #[error("message larger than a Noise message can carry")]
    TooLarge,
    #[error("peer handshake timed out")]
    Timeout,
    #[error("peer speaks protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u8),
    #[error("peer channel already failed or shut down")]
    Closed,
}

/// How a handshake failed (inside [`NoiseError::Handshake`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Responder: message 1 did not authenticate. The peer uses another network secret, or
    /// is not a booster node at all. Nothing was sent back.
    #[error("first message did not authenticate: the peer uses another network secret or is not a booster node")]
    WrongSecret,
    /// The peer closed the connection mid-handshake. For an initiator this is how a wrong
    /// network secret looks: the responder closes without a word.
    #[error("the peer closed the connection during the handshake (wrong network secret?)")]
    PeerClosed,
    /// Message 2 or 3 did not authenticate (tampered, or not from whoever sent message 1).
    #[error("handshake message failed to authenticate")]
    BadMessage,
    /// A handshake message of the wrong shape (bad length or payload).
    #[error("malformed handshake message")]
    Malformed,
    /// snow refused to set up a handshake with our own parameters or keys.
    #[error("local Noise setup failed")]
    Local,
}

impl From<HandshakeError> for NoiseError {
    fn from(error: HandshakeError) -> Self {
        NoiseError::Handshake(error)
    }
}

/// Derives the 32-byte PSK from the network secret: Argon2id(secret, salt
/// [`PSK_SALT`], m = 19456 KiB, t = 2, p = 1). Deterministic: every node of a network
/// derives the same key.
///
/// The result is cached per secret for the life of the process, so only the first call for
/// a secret pays for Argon2 (tens of milliseconds optimized, seconds in a debug build, and
/// 19 MiB of memory). That first call blocks: from async code, make it at startup or in
/// `spawn_blocking`.
pub fn derive_psk(secret: &str) -> [u8; 32] {
    static CACHE: Mutex<Vec<(String, [u8; 32])>> = Mutex::new(Vec::new());
    // Held while deriving, so two tasks asking for the same secret derive it once.
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, psk)) = cache.iter().find(|(known, _)| known == secret) {
        return *psk;
    }
    let params = argon2::Params::new(PSK_M_COST, PSK_T_COST, PSK_P_COST, Some(32))
        .expect("constant Argon2 parameters are valid");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut psk = [0u8; 32];
    argon
        .hash_password_into(secret.as_bytes(), PSK_SALT, &mut psk)
        .expect("Argon2 accepts any secret shorter than 4 GiB with a constant salt and output length");
    if cache.len() >= PSK_CACHE {
        cache.remove(0);
    }
    cache.push((secret.to_owned(), psk));
    psk
}

/// A node's long-term static key pair (X25519). Its public half is the node's identity as
/// the other nodes see it.
#[derive(Clone)]
pub struct Identity {
    private: [u8; 32],
    public: [u8; 32],
}

impl Identity {
    /// A fresh random key pair.
    pub fn generate() -> Identity {
        let keypair = snow::Builder::new(params())
            .generate_keypair()
            .expect("snow's default resolver provides X25519 and an OS RNG");
        let mut private = [0u8; 32];
        private.copy_from_slice(&keypair.private);
        Identity::from_private(private)
    }

    /// The key pair of a known private key.
    pub fn from_private(private: [u8; 32]) -> Identity {
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .expect("snow's default resolver provides X25519");
        dh.set(&private);
        let mut public = [0u8; 32];
        public.copy_from_slice(dh.pubkey());
        Identity { private, public }
    }

    /// Loads the private key from `path` (exactly 32 raw bytes), or creates the file with a
    /// fresh key, mode 0600, when it does not exist. The file is written to a temporary name
    /// and linked into place, so a crash never leaves a half-written key and two processes
    /// starting at once end up with the same one.
    pub fn load_or_create(path: &Path) -> io::Result<Identity> {
        match Identity::load(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let identity = Identity::generate();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = Path::new(&tmp);
        let _ = fs::remove_file(tmp);
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp)?;
            file.write_all(&identity.private)?;
            file.sync_all()?;
            // Fails with AlreadyExists rather than replacing a key another process just made.
            match fs::hard_link(tmp, path) {
                // A filesystem without hard links: rename is still atomic, only not exclusive.
                Err(error) if error.kind() != io::ErrorKind::AlreadyExists => fs::rename(tmp, path),
                other => other,
            }
        })();
        let _ = fs::remove_file(tmp);
        match result {
            Ok(()) => Ok(identity),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Identity::load(path),
            Err(error) => Err(error),
        }
    }

    fn load(path: &Path) -> io::Result<Identity> {
        let bytes = fs::read(path)?;
        let private: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: a node key file holds exactly 32 bytes, found {}",
                    path.display(),
                    bytes.len()
                ),
            )
        })?;
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "node key file is readable by others; chmod 600 it");
        }
        Ok(Identity::from_private(private))
    }

    /// The public key: this node's identity.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &Hex(&self.public))
            .field("private", &"***")
            .finish()
    }
}

/// Lowercase hex, for keys in logs.
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// What the handshake learned about the other node.
#[derive(Clone, PartialEq, Eq)]
pub struct Remote {
    /// The peer's static public key ([`Identity::public`] on its side).
    pub static_key: [u8; 32],
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("static_key", &Hex(&self.static_key))
            .finish()
    }
}

fn params() -> NoiseParams {
    PATTERN.parse().expect("PATTERN is a valid Noise protocol name")
}

fn handshake_state(
    channel: Channel,
    psk: &[u8; 32],
    me: &Identity,
    initiator: bool,
) -> Result<HandshakeState, NoiseError> {
    let local = |_| HandshakeError::Local;
    let builder = snow::Builder::new(params())
        .prologue(channel.prologue())
        .map_err(local)?
        .psk(0, psk)
        .map_err(local)?
        .local_private_key(&me.private)
        .map_err(local)?;
    let state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    };
    Ok(state.map_err(local)?)
}

/// Runs the initiator side of the handshake on `io` within `timeout`.
///
/// With a wrong network secret the responder closes without answering, which shows up here
/// as [`HandshakeError::PeerClosed`] (or [`NoiseError::Timeout`] if something in between
/// keeps the connection open).
pub async fn connect<S>(
    channel: Channel,
    mut io: S,
    psk: &[u8; 32],
    me: &Identity,
    timeout: Duration,
) -> Result<(NoiseStream<S>, Remote), NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hs = handshake_state(channel, psk, me, true)?;
    tokio::time::timeout(timeout, initiate(&mut io, &mut hs))
        .await
        .map_err(|_| NoiseError::Timeout)??;
    NoiseStream::new(io, hs)
}

/// Runs the responder side of the handshake on `io` within `timeout`.
///
/// If message 1 does not authenticate (another network secret), this returns
/// [`HandshakeError::WrongSecret`] having sent nothing, and drops `io`, which closes it.
pub async fn accept<S>(
    channel: Channel,
    mut io: S,
    psk: &[u8; 32],
    me: &Identity,
    timeout: Duration,
) -> Result<(NoiseStream<S>, Remote), NoiseError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hs = handshake_state(channel, psk, me, false)?;
    tokio::time::timeout(timeout, respond(&mut io, &mut hs))
        .await
        .map_err(|_| NoiseError::Timeout)??;
    NoiseStream::new(io, hs)
}

async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, hs: &mut HandshakeState) -> Result<(), NoiseError> {
    let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
    let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
    // -> psk, e (empty payload, but already encrypted and authenticated under the PSK)
    write_handshake(io, hs, &[], &mut buf).await?;
    // <- e, ee, s, es + version
    let len = read_handshake(io, &mut buf).await?;
    let n = hs
        .read_message(&buf[..len], &mut payload)
        .map_err(|_| HandshakeError::BadMessage)?;
    check_version(&payload[..n])?;
    // -> s, se + version
    write_handshake(io, hs, &[PROTOCOL_VERSION], &mut buf).await
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, hs: &mut HandshakeState) -> Result<(), NoiseError> {
    let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
    let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
    let len = read_handshake(io, &mut buf).await?;
    // Until this succeeds, nothing may be written: the peer has not shown it knows the PSK.
    let n = hs
        .read_message(&buf[..len], &mut payload)
        .map_err(|error| match error {
            snow::Error::Decrypt => HandshakeError::WrongSecret,
            _ => HandshakeError::Malformed,
        })?;
    if n != 0 {
        return Err(HandshakeError::Malformed.into());
    }
    write_handshake(io, hs, &[PROTOCOL_VERSION], &mut buf).await?;
    let len = read_handshake(io, &mut buf).await?;
    let n = hs
        .read_message(&buf[..len], &mut payload)
        .map_err(|_| HandshakeError::BadMessage)?;
    check_version(&payload[..n])
}

fn check_version(payload: &[u8]) -> Result<(), NoiseError> {
    match payload {
        [PROTOCOL_VERSION] => Ok(()),
        [other] => Err(NoiseError::Version(*other)),
        _ => Err(HandshakeError::Malformed.into()),
    }
}

/// Writes the next handshake message with `payload`, length-prefixed, and flushes it.
async fn write_handshake<S: AsyncWrite + Unpin>(
    io: &mut S,
    hs: &mut HandshakeState,
    payload: &[u8],
    buf: &mut [u8; MAX_HANDSHAKE_MESSAGE],
) -> Result<(), NoiseError> {
    let n = hs
        .write_message(payload, &mut buf[LEN_PREFIX..])
        .map_err(|_| HandshakeError::Local)?;
    buf[..LEN_PREFIX].copy_from_slice(&(n as u16).to_be_bytes());
    io.write_all(&buf[..LEN_PREFIX + n]).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one length-prefixed handshake message into `buf`; returns its length. A length
/// over [`MAX_HANDSHAKE_MESSAGE`] is refused before reading the body.
async fn read_handshake<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut [u8; MAX_HANDSHAKE_MESSAGE],
) -> Result<usize, NoiseError> {
    let eof = |error: io::Error| match error.kind() {
        io::ErrorKind::UnexpectedEof => NoiseError::Handshake(HandshakeError::PeerClosed),
        _ => NoiseError::Io(error),
    };
    let mut prefix = [0u8; LEN_PREFIX];
    io.read_exact(&mut prefix).await.map_err(eof)?;
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > MAX_HANDSHAKE_MESSAGE {
        return Err(NoiseError::TooLarge);
    }
    io.read_exact(&mut buf[..len]).await.map_err(eof)?;
    Ok(len)
}

/// The receiving direction: read-ahead buffer, decryption, and the last plaintext.
struct Inbound {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    /// Ciphertext read from the stream; `buf[start..end]` is not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last decrypted message; `plain[pos..len]` not yet handed to an `AsyncRead` caller.
    plain: Vec<u8>,
    pos: usize,
    len: usize,
    failed: bool,
}

impl Inbound {
    /// Reads until one whole message is buffered, then decrypts it into `plain`. `Ok(None)`
    /// at a clean EOF (between messages). Cancel-safe: partial reads stay in `buf`.
    fn poll_message<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<usize>, NoiseError>> {
        if self.failed {
            return Poll::Ready(Err(NoiseError::Closed));
        }
        let result = ready!(self.poll_message_inner(io, cx));
        if result.is_err() {
            self.failed = true;
        }
        Poll::Ready(result)
    }

    fn poll_message_inner<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<usize>, NoiseError>> {
        loop {
            let available = self.end - self.start;
            let needed = match self.buf.get(self.start..self.end) {
                Some(&[hi, lo, ..]) => LEN_PREFIX + usize::from(u16::from_be_bytes([hi, lo])),
                _ => LEN_PREFIX,
            };
            // (Fewer than two bytes buffered always means `needed` > `available`.)
            if available >= needed {
                let message = self.start + LEN_PREFIX..self.start + needed;
                self.start += needed;
                let result = self.decrypt(message);
                if self.start == self.end {
                    (self.start, self.end) = (0, 0);
                }
                return Poll::Ready(result.map(Some));
            }
            self.make_room(needed);
            let mut read = ReadBuf::new(&mut self.buf[self.end..]);
            ready!(Pin::new(&mut *io).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                if available == 0 {
                    return Poll::Ready(Ok(None));
                }
                return Poll::Ready(Err(NoiseError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection in the middle of a message",
                ))));
            }
            self.end += n;
        }
    }

    /// Ensures `buf[start..]` can hold `needed` bytes, moving unconsumed bytes to the front
    /// or growing the buffer (never past [`READ_BUF_LARGE`]; `needed` ≤ 65537).
    fn make_room(&mut self, needed: usize) {
        if self.start + needed <= self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if needed > self.buf.len() {
            let size = if needed <= READ_BUF_SMALL {
                READ_BUF_SMALL
            } else {
                READ_BUF_LARGE
            };
            self.buf.resize(size, 0);
        }
    }

    /// Decrypts the message at `buf[message]` into `plain`. The plaintext counts as already
    /// read; `poll_read` rewinds `pos` when it is the one asking.
    fn decrypt(&mut self, message: Range<usize>) -> Result<usize, NoiseError> {
        let message = &self.buf[message];
        let Some(plain_len) = message.len().checked_sub(TAG_LEN) else {
            return Err(NoiseError::Decrypt);
        };
        if self.plain.len() < plain_len {
            // At most MAX_PLAINTEXT: the length came from a u16.
            self.plain.resize(plain_len, 0);
        }
        let n = self
            .state
            .read_message(self.nonce, message, &mut self.plain)
            .map_err(|_| NoiseError::Decrypt)?;
        self.nonce += 1;
        (self.pos, self.len) = (n, n);
        Ok(n)
    }

    /// `AsyncRead` on top of messages: hands out plaintext, reading a new message when the
    /// last one is used up. Empty messages are skipped (zero bytes would mean EOF).
    fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pos == self.len {
            match ready!(self.poll_message(io, cx)) {
                Ok(Some(_)) => self.pos = 0,
                Ok(None) => return Poll::Ready(Ok(())),
                Err(error) => return Poll::Ready(Err(into_io(error))),
            }
        }
        let n = out.remaining().min(self.len - self.pos);
        out.put_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }

    /// The message-level receive shared by [`NoiseStream::recv`] and [`NoiseReader::recv`].
    async fn recv<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Option<&[u8]>, NoiseError> {
        if self.pos < self.len {
            // Left over from `AsyncRead`: hand out the rest of that message first.
            let pos = std::mem::replace(&mut self.pos, self.len);
            return Ok(Some(&self.plain[pos..self.len]));
        }
        match poll_fn(|cx| self.poll_message(io, cx)).await? {
            Some(n) => Ok(Some(&self.plain[..n])),
            None => Ok(None),
        }
    }
}

/// The sending direction: encryption into one reusable buffer, then writing it out.
struct Outbound {
    state: Arc<StatelessTransportState>,
    nonce: u64,
    /// `buf[pos..len]` is ciphertext not yet written to the stream.
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    failed: bool,
}

impl Outbound {
    /// Encrypts `plaintext` as one message after whatever is pending.
    fn encrypt(&mut self, plaintext: &[u8]) -> Result<(), NoiseError> {
        if self.failed {
            return Err(NoiseError::Closed);
        }
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(NoiseError::TooLarge);
        }
        let message_len = plaintext.len() + TAG_LEN;
        if self.pos == self.len {
            (self.pos, self.len) = (0, 0);
        }
        let end = self.len + LEN_PREFIX + message_len;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        let at = self.len;
        self.buf[at..at + LEN_PREFIX].copy_from_slice(&(message_len as u16).to_be_bytes());
        let written = self
            .state
            .write_message(self.nonce, plaintext, &mut self.buf[at + LEN_PREFIX..end]);
        match written {
            Ok(n) if n == message_len => {
                self.nonce += 1;
                self.len = end;
                Ok(())
            }
            _ => {
                // Nonce exhaustion (2^64 messages) or a snow bug: never reuse this channel.
                self.failed = true;
                Err(NoiseError::Closed)
            }
        }
    }

    /// Writes out everything pending.
    fn poll_drain<W: AsyncWrite + Unpin>(&mut self, io: &mut W, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.len {
            match ready!(Pin::new(&mut *io).poll_write(cx, &self.buf[self.pos..self.len])) {
                Ok(0) => {
                    self.failed = true;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => self.pos += n,
                Err(error) => {
                    self.failed = true;
                    return Poll::Ready(Err(error));
                }
            }
        }
        (self.pos, self.len) = (0, 0);
        Poll::Ready(Ok(()))
    }

    fn poll_flush<W: AsyncWrite + Unpin>(&mut self, io: &mut W, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(io, cx))?;
        Pin::new(io).poll_flush(cx)
    }

    /// The message-level send shared by [`NoiseStream::send`] and [`NoiseWriter::send`].
    async fn send<W: AsyncWrite + Unpin>(&mut self, io: &mut W, plaintext: &[u8]) -> Result<(), NoiseError> {
        // Something left by a cancelled send or by `AsyncWrite` goes first, so messages stay
        // whole and in nonce order on the wire.
        poll_fn(|cx| self.poll_drain(io, cx)).await?;
        self.encrypt(plaintext)?;
        poll_fn(|cx| self.poll_flush(io, cx)).await?;
        Ok(())
    }

    /// `AsyncWrite` on top of messages: each call sends up to [`MAX_PLAINTEXT`] bytes as one
    /// message. The bytes are ours once `Ready(Ok(n))` is returned; they reach the stream by
    /// the next write or flush at the latest.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.poll_drain(io, cx))?;
        let n = data.len().min(MAX_PLAINTEXT);
        self.encrypt(&data[..n]).map_err(into_io)?;
        // Start writing now; if the stream is full the waker is registered and the bytes go
        // out on the next call.
        if let Poll::Ready(Err(error)) = self.poll_drain(io, cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_shutdown<W: AsyncWrite + Unpin>(&mut self, io: &mut W, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(io, cx))?;
        Pin::new(io).poll_shutdown(cx)
    }
}

fn into_io(error: NoiseError) -> io::Error {
    match error {
        NoiseError::Io(error) => error,
        NoiseError::Decrypt | NoiseError::Version(_) | NoiseError::Handshake(_) => {
            io::Error::new(io::ErrorKind::InvalidData, error)
        }
        NoiseError::TooLarge => io::Error::new(io::ErrorKind::InvalidInput, error),
        NoiseError::Timeout => io::Error::new(io::ErrorKind::TimedOut, error),
        NoiseError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, error),
    }
}

/// An established channel: whole messages with [`send`](Self::send) and
/// [`recv`](Self::recv), or bytes with `AsyncRead`/`AsyncWrite`. Use one style per
/// direction. Dropping it drops (and so closes) the underlying stream.
pub struct NoiseStream<S> {
    io: S,
    inbound: Inbound,
    outbound: Outbound,
    remote: Remote,
}

impl<S> NoiseStream<S> {
    fn new(io: S, hs: HandshakeState) -> Result<(NoiseStream<S>, Remote), NoiseError> {
        let static_key: [u8; 32] = hs
            .get_remote_static()
            .and_then(|key| key.try_into().ok())
            .ok_or(HandshakeError::Malformed)?;
        let state = Arc::new(hs.into_stateless_transport_mode().map_err(|_| HandshakeError::Local)?);
        let remote = Remote { static_key };
        let stream = NoiseStream {
            io,
            inbound: Inbound {
                state: state.clone(),
                nonce: 0,
                buf: Vec::new(),
                start: 0,
                end: 0,
                plain: Vec::new(),
                pos: 0,
                len: 0,
                failed: false,
            },
            outbound: Outbound {
                state,
                nonce: 0,
                buf: Vec::new(),
                pos: 0,
                len: 0,
                failed: false,
            },
            remote: remote.clone(),
        };
        Ok((stream, remote))
    }

    /// The underlying stream (for its addresses; reading or writing it would corrupt the
    /// channel).
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Who is on the other end.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> NoiseStream<S> {
    /// Sends `plaintext` (at most [`MAX_PLAINTEXT`] bytes, may be empty) as one Noise
    /// message, and flushes it.
    ///
    /// Cancelling it never corrupts the channel: a message already encrypted when the future
    /// is dropped goes out, whole, before the next one.
    pub async fn send(&mut self, plaintext: &[u8]) -> Result<(), NoiseError> {
        self.outbound.send(&mut self.io, plaintext).await
    }

    /// Receives one whole message, borrowed until the next call (no allocation per message).
    /// `Ok(None)` when the peer closed the stream cleanly between messages. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<&[u8]>, NoiseError> {
        self.inbound.recv(&mut self.io).await
    }

    /// Splits into a receiving and a sending half that can be used from two tasks. Buffered
    /// bytes and nonces move with their halves.
    pub fn split(self) -> (NoiseReader<ReadHalf<S>>, NoiseWriter<WriteHalf<S>>) {
        let (read, write) = tokio::io::split(self.io);
        (
            NoiseReader {
                io: read,
                inbound: self.inbound,
            },
            NoiseWriter {
                io: write,
                outbound: self.outbound,
            },
        )
    }
}

impl<S> fmt::Debug for NoiseStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseStream")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoiseStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.inbound.poll_read(&mut this.io, cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoiseStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.outbound.poll_write(&mut this.io, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.outbound.poll_flush(&mut this.io, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.outbound.poll_shutdown(&mut this.io, cx)
    }
}

/// The receiving half of a [`NoiseStream`].
pub struct NoiseReader<R> {
    io: R,
    inbound: Inbound,
}

impl<R: AsyncRead + Unpin> NoiseReader<R> {
    /// As [`NoiseStream::recv`].
    pub async fn recv(&mut self) -> Result<Option<&[u8]>, NoiseError> {
        self.inbound.recv(&mut self.io).await
    }
}

impl<R> fmt::Debug for NoiseReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseReader").finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for NoiseReader<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.inbound.poll_read(&mut this.io, cx, buf)
    }
}

/// The sending half of a [`NoiseStream`].
pub struct NoiseWriter<W> {
    io: W,
    outbound: Outbound,
}

impl<W: AsyncWrite + Unpin> NoiseWriter<W> {
    /// As [`NoiseStream::send`].
    pub async fn send(&mut self, plaintext: &[u8]) -> Result<(), NoiseError> {
        self.outbound.send(&mut self.io, plaintext).await
    }
}

impl<W> fmt::Debug for NoiseWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseWriter").finish_non_exhaustive()
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for NoiseWriter<W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.outbound.poll_write(&mut this.io, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.outbound.poll_flush(&mut this.io, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.outbound.poll_shutdown(&mut this.io, cx)
    }
}

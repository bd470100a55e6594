//! Our own HTTP origin for hermetic tests, the benchmark and the demo.
//!
//! Bodies are generated, never stored: the byte at offset `i` of body `seed` is a pure function
//! of `(seed, i)` ([`body_bytes`]), so any range is computed directly and a client can check the
//! SHA-256 of what it pulled against [`sha256_hex`] without a file on disk.
//!
//! Routes:
//! - `GET|HEAD /file/<size>[?seed=N]`: size in bytes or with a unit (`10MB`, `50MiB`), seed
//!   defaults to the size. `Range` (one range), `If-Range`, `ETag` and `Last-Modified` are
//!   supported; `HEAD` also carries `X-Sha256`.
//! - `GET /health`: `200 ok`.
//!
//! [`Faults`] switch on broken behaviours at runtime: ignore `Range`, change the entity after N
//! requests, reset the connection mid-body, pace the body, or omit `Content-Length`.
//!
//! Start with [`Origin::serve`]; the request handling is in `respond`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::task::AbortOnDropHandle;

/// Body bytes per frame when not paced: big enough that per-frame overhead vanishes at GB/s,
/// small enough that a connection never holds more than this in flight beyond hyper's buffer.
const CHUNK: usize = 128 * 1024;
/// Paced bodies are sent in frames of about this much time, so the rate is smooth.
const PACE_SLICE: Duration = Duration::from_millis(10);
/// Before an injected reset, wait this long so the bytes already yielded reach the socket.
const RESET_GRACE: Duration = Duration::from_millis(20);
/// `sha256_hex` keeps at most this many results (each entry is ~100 bytes).
const SHA_CACHE_MAX: usize = 1024;
const LAST_MODIFIED: [&str; 2] = ["Mon, 01 Jan 2024 00:00:00 GMT", "Tue, 02 Jan 2024 00:00:00 GMT"];

/// Mixes a 64-bit value (the splitmix64 / murmur3 finaliser): cheap and well distributed.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Word `w` (bytes `8w..8w+8`, little-endian) of the body keyed by `key`. Counter-based, so any
/// offset is computed directly with no block state.
#[inline(always)]
fn word(key: u64, w: u64) -> u64 {
    mix64(key.wrapping_add(w.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

fn body_key(seed: u64) -> u64 {
    mix64(seed ^ 0x6f72_6967_696e_2121)
}

/// Appends `len` body bytes of body `seed`, starting at `offset`, to `out`.
/// The byte at offset `i` depends only on `(seed, i)`.
pub fn body_bytes(seed: u64, offset: u64, len: usize, out: &mut Vec<u8>) {
    let key = body_key(seed);
    out.reserve(len);
    let mut pos = offset;
    let end = offset + len as u64;
    // Unaligned head.
    while pos < end && pos & 7 != 0 {
        out.push(word(key, pos / 8).to_le_bytes()[(pos % 8) as usize]);
        pos += 1;
    }
    // Whole words.
    let words = (end - pos) / 8;
    let first = pos / 8;
    for w in first..first + words {
        out.extend_from_slice(&word(key, w).to_le_bytes());
    }
    pos += words * 8;
    // Tail.
    if pos < end {
        let b = word(key, pos / 8).to_le_bytes();
        out.extend_from_slice(&b[..(end - pos) as usize]);
    }
}

/// SHA-256 (lowercase hex) of the whole body `(seed, size)`. Results are cached, because the
/// same large sizes are hashed by every test and benchmark run.
pub fn sha256_hex(seed: u64, size: u64) -> String {
    static CACHE: OnceLock<Mutex<HashMap<(u64, u64), String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().unwrap().get(&(seed, size)) {
        return h.clone();
    }
    let mut hasher = Sha256::new();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut off = 0;
    while off < size {
        let n = (size - off).min(1 << 20) as usize;
        buf.clear();
        body_bytes(seed, off, n, &mut buf);
        hasher.update(&buf);
        off += n as u64;
    }
    let h = hex::encode(hasher.finalize());
    let mut c = cache.lock().unwrap();
    if c.len() >= SHA_CACHE_MAX {
        c.clear();
    }
    c.insert((seed, size), h.clone());
    h
}

/// Broken behaviours, switchable at runtime with [`Origin::set_faults`].
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Always 200 with the full body, and no `Accept-Ranges`.
    pub ignore_range: bool,
    /// After N `/file` requests (counted since the faults were set), the entity changes:
    /// new ETag, new Last-Modified, and the body is that of seed + 1.
    pub change_etag_after: Option<u32>,
    /// Reset the TCP connection (SO_LINGER 0) after this many body bytes of a response.
    pub reset_after_bytes: Option<u64>,
    /// Pace each response body at this many bits per second.
    pub rate_limit_bps: Option<u64>,
    /// Close-delimited bodies: an HTTP/1.0 response with no `Content-Length`, then close.
    pub no_content_length: bool,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Faults>,
    requests: AtomicU64,
    bytes_sent: AtomicU64,
    /// `/file` requests since the faults were last set (drives `change_etag_after`).
    file_requests: AtomicU64,
}

/// A running origin. Dropping it stops the server and every connection.
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _task: AbortOnDropHandle<()>,
}

impl Origin {
    /// Serves on an already-bound listener (bind it inside a namespace, or on `127.0.0.1:0`).
    /// Must be called within a tokio runtime.
    pub fn serve(listener: std::net::TcpListener, faults: Faults) -> io::Result<Origin> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(faults),
            ..Default::default()
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Origin {
            addr,
            shared,
            _task: AbortOnDropHandle::new(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults; the `change_etag_after` count starts again from zero.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
        self.shared.file_requests.store(0, Ordering::SeqCst);
    }

    /// Requests answered so far (any route).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Body bytes handed to connections so far.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::SeqCst)
    }
}

/// Accepts connections; owns them in a `JoinSet`, so aborting this task ends them all.
async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_conn(stream, shared.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("origin accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next() => {}
        }
    }
}

async fn serve_conn(stream: TcpStream, shared: Arc<Shared>) {
    let reset = Arc::new(AtomicBool::new(false));
    let io = ResetOnDrop {
        stream,
        reset: reset.clone(),
    };
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let reset = reset.clone();
        async move { Ok::<_, Infallible>(respond(req, &shared, reset).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!("origin connection: {e}");
    }
}

/// The connection's socket. When `reset` is set (an injected fault), dropping it sends a RST
/// instead of a FIN.
struct ResetOnDrop {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResetOnDrop {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetOnDrop {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Parses `1234`, `10MB`, `50MiB`, `2k`, `1.5GB` into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    (f.is_finite() && f >= 0.0).then(|| (f * mult as f64).round() as u64)
}

/// What a `Range` header asks for, against an entity of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeReq {
    /// No usable single range: send the full body.
    Full,
    /// Inclusive byte range `start..=end`.
    Part(u64, u64),
    Unsatisfiable,
}

/// Parses a `Range` header value. Multiple ranges and malformed values fall back to `Full`
/// (both allowed by RFC 9110).
pub fn parse_range(value: &str, size: u64) -> RangeReq {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last n bytes.
        let Ok(n) = b.parse::<u64>() else {
            return RangeReq::Full;
        };
        if n == 0 || size == 0 {
            return RangeReq::Unsatisfiable;
        }
        return RangeReq::Part(size.saturating_sub(n), size - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeReq::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeReq::Full,
        }
    };
    if start >= size {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(start, end.min(size - 1))
}

fn query_seed(query: Option<&str>) -> Result<Option<u64>, ()> {
    for kv in query.unwrap_or("").split('&') {
        if let Some(v) = kv.strip_prefix("seed=") {
            return v.parse().map(Some).map_err(|_| ());
        }
    }
    Ok(None)
}

fn simple(status: StatusCode, text: &'static str) -> Response<OriginBody> {
    let mut r = Response::new(OriginBody::fixed(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

async fn respond(req: Request<Incoming>, shared: &Arc<Shared>, reset: Arc<AtomicBool>) -> Response<OriginBody> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path();
    if path == "/health" {
        return simple(StatusCode::OK, "ok");
    }
    let Some(size_str) = path.strip_prefix("/file/") else {
        return simple(StatusCode::NOT_FOUND, "not found\n");
    };
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = simple(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let (Some(size), Ok(seed)) = (parse_size(size_str), query_seed(req.uri().query())) else {
        return simple(StatusCode::BAD_REQUEST, "bad size or seed\n");
    };
    let faults = shared.faults.lock().unwrap().clone();
    let nth = shared.file_requests.fetch_add(1, Ordering::SeqCst);
    let changed = faults.change_etag_after.is_some_and(|n| nth >= u64::from(n));
    let seed = seed.unwrap_or(size).wrapping_add(u64::from(changed));
    let etag = format!("\"{seed}-{size}\"");
    let last_modified = LAST_MODIFIED[usize::from(changed)];

    let header_str = |name| req.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let mut range = match header_str(header::RANGE) {
        Some(v) if !faults.ignore_range => parse_range(v, size),
        _ => RangeReq::Full,
    };
    if let Some(cond) = header_str(header::IF_RANGE) {
        let cond = cond.trim();
        if cond != etag && cond != last_modified {
            range = RangeReq::Full;
        }
    }

    let mut resp = Response::new(OriginBody::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("digits are a valid header"),
    );
    h.insert(header::LAST_MODIFIED, HeaderValue::from_static(last_modified));
    if !faults.ignore_range {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    let (start, end) = match range {
        RangeReq::Full => (0, size),
        RangeReq::Part(a, b) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let cr = format!("bytes {a}-{b}/{size}");
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii"));
            (a, b + 1)
        }
        RangeReq::Unsatisfiable => {
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let cr = format!("bytes */{size}");
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).expect("ascii"));
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            return resp;
        }
    };
    if faults.no_content_length {
        // hyper only writes a close-delimited body for HTTP/1.0; then the connection closes.
        *resp.version_mut() = Version::HTTP_10;
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    } else {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
    if head {
        let sha = tokio::task::spawn_blocking(move || sha256_hex(seed, size))
            .await
            .unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&sha) {
            resp.headers_mut().insert("x-sha256", v);
        }
        return resp;
    }
    let chunk;
    let pace = match faults.rate_limit_bps {
        Some(bps) if bps > 0 => {
            chunk = ((bps as f64 / 8.0 * PACE_SLICE.as_secs_f64()) as usize).clamp(512, CHUNK);
            Some(Pace {
                bps,
                start: None,
                sleep: None,
            })
        }
        _ => {
            chunk = CHUNK;
            None
        }
    };
    *resp.body_mut() = OriginBody {
        kind: Kind::Gen(Box::new(Gen {
            seed,
            pos: start,
            end,
            sent: 0,
            exact: !faults.no_content_length,
            chunk,
            pace,
            reset_at: faults.reset_after_bytes,
            reset_sleep: None,
            reset,
            shared: shared.clone(),
        })),
    };
    resp
}

/// A response body: a fixed buffer, or generated bytes streamed in chunks.
pub struct OriginBody {
    kind: Kind,
}

enum Kind {
    Fixed(Option<Bytes>),
    Gen(Box<Gen>),
}

struct Pace {
    bps: u64,
    start: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

struct Gen {
    seed: u64,
    /// Next offset in the entity, and the end (exclusive).
    pos: u64,
    end: u64,
    /// Bytes of this response sent so far.
    sent: u64,
    /// Whether to advertise the exact length (otherwise the body is close-delimited).
    exact: bool,
    chunk: usize,
    pace: Option<Pace>,
    reset_at: Option<u64>,
    reset_sleep: Option<Pin<Box<Sleep>>>,
    reset: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl OriginBody {
    fn fixed(b: Bytes) -> Self {
        OriginBody {
            kind: Kind::Fixed(Some(b)),
        }
    }
    fn empty() -> Self {
        OriginBody {
            kind: Kind::Fixed(None),
        }
    }
}

impl Gen {
    fn reset_pending(&self) -> bool {
        self.reset_at.is_some_and(|n| self.sent >= n && self.pos < self.end)
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if self.reset_pending() {
            let sleep = self
                .reset_sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(RESET_GRACE)));
            ready!(sleep.as_mut().poll(cx));
            self.reset.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected reset",
            ))));
        }
        if self.pos >= self.end {
            return Poll::Ready(None);
        }
        if let Some(p) = &mut self.pace {
            let start = *p.start.get_or_insert_with(Instant::now);
            let due = start + Duration::from_secs_f64(self.sent as f64 * 8.0 / p.bps as f64);
            if due > Instant::now() {
                let sleep = p.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                sleep.as_mut().reset(due);
                ready!(sleep.as_mut().poll(cx));
            }
        }
        let mut n = (self.end - self.pos).min(self.chunk as u64);
        if let Some(limit) = self.reset_at {
            n = n.min(limit - self.sent);
        }
        let mut buf = Vec::with_capacity(n as usize);
        body_bytes(self.seed, self.pos, n as usize, &mut buf);
        self.pos += n;
        self.sent += n;
        self.shared.bytes_sent.fetch_add(n, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        match &mut self.get_mut().kind {
            Kind::Fixed(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Gen(g) => g.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Fixed(b) => b.is_none(),
            Kind::Gen(g) => g.pos >= g.end && !g.reset_pending(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Fixed(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Gen(g) if g.exact => SizeHint::with_exact(g.end - g.pos),
            Kind::Gen(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_of_the_body_matches_the_whole() {
        let mut whole = Vec::new();
        body_bytes(7, 0, 1000, &mut whole);
        for (off, len) in [(0, 0), (0, 1), (3, 5), (7, 9), (8, 8), (13, 100), (999, 1), (500, 500)] {
            let mut part = Vec::new();
            body_bytes(7, off as u64, len, &mut part);
            assert_eq!(part, whole[off..off + len], "off {off} len {len}");
        }
        let mut other = Vec::new();
        body_bytes(8, 0, 1000, &mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn sha_matches_a_direct_hash_and_is_cached() {
        let mut all = Vec::new();
        body_bytes(1, 0, 3_000_001, &mut all);
        let direct = hex::encode(Sha256::digest(&all));
        assert_eq!(sha256_hex(1, 3_000_001), direct);
        assert_eq!(sha256_hex(1, 3_000_001), direct);
        assert_eq!(sha256_hex(5, 0), hex::encode(Sha256::digest(b"")));
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1234"), Some(1234));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("50MiB"), Some(50 << 20));
        assert_eq!(parse_size("2kib"), Some(2048));
        assert_eq!(parse_size("1.5GB"), Some(1_500_000_000));
        assert_eq!(parse_size("12XB"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn ranges_parse_like_rfc_9110() {
        use RangeReq::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=90-500", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range("bytes=5-1", 100), Full);
        assert_eq!(parse_range("items=0-1", 100), Full);
        assert_eq!(parse_range("bytes=x-1", 100), Full);
    }

    #[test]
    fn generation_speed_is_printed() {
        let mut buf = Vec::with_capacity(CHUNK);
        let t = std::time::Instant::now();
        let total = 256u64 << 20;
        let mut off = 0;
        while off < total {
            buf.clear();
            body_bytes(3, off, CHUNK, &mut buf);
            off += CHUNK as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        println!("body generation: {:.0} MB/s", total as f64 / secs / 1e6);
    }
}

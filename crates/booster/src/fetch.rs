//! Range fetch: one HTTP(S) download split into byte ranges over several sources
//! (`booster get`, later the proxy's transparent splitting of large plain-HTTP GETs).
//!
//! Reading order:
//! 1. [`download`] (this file): parse the URL, then per attempt: the **probe** (a ranged `GET`
//!    of the first piece on the first source that answers, following redirects), which decides
//!    between a ranged download and one plain stream; a restart from scratch when the entity
//!    changes (at most [`Options::max_restarts`]); the final size and SHA-256 checks and the
//!    atomic rename of `FILE.part`.
//! 2. `engine`: the ranged download. One coordinator task owns the [`Planner`] (sans-IO, in
//!    `proto::range`); one worker per source asks it for pieces, fetches them on a kept-alive
//!    connection with `If-Range`, writes them, and reports progress, completion and failure.
//!    Cancels (stalls, lost duplicate races) go back to the workers.
//! 3. `connect`: the [`Connector`] trait (how a source reaches the origin) with
//!    [`NodeConnector`] (in-process, through [`crate::dial::dial`]) and [`ProxyConnector`]
//!    (through a node's proxy with the source pinned), and TLS.
//! 4. `http`: URLs, the HTTP/1.1 connection, heads (via [`proto::http`]) and body reading.
//! 5. `sink`: the `.part` file written at offsets, the ordered stream writer (stdout) with its
//!    bounded reorder buffer, and the resume state file.

mod connect;
mod engine;
mod http;
mod sink;

pub use connect::{tls_config, BoxFuture, Connector, NodeConnector, ProxyConnector, Stream};
pub use http::content_range;
pub use http::Url;
pub use proto::range::PlannerConfig;
pub use sink::{part_paths, validator, ResumeState};

use http::{header_str, unsatisfied_size, Conn, Scheme};
use proto::http::ResponseHead;
use proto::range::Planner;
use sink::Sink;
use std::{
    fs::OpenOptions,
    io,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;

/// Redirects followed by the probe.
pub const MAX_REDIRECTS: usize = 10;
/// How long a response head may take.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a redirect's body read to keep its connection (more: the connection is dropped).
const SMALL_BODY: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Bad URL, unknown scheme, bad hash, unreadable `--cacert`: exit code 2.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out waiting for the {0}")]
    Timeout(&'static str),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server answered {status} {reason}")]
    Http { status: u16, reason: String },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    /// The entity changed on the server (a 200 to a ranged request with `If-Range`).
    #[error("the file changed on the server")]
    Changed,
    #[error("the file kept changing on the server: gave up after {0} restarts")]
    TooManyRestarts(u32),
    #[error("every source failed:{}", .0.iter().map(|(s, e)| format!("\n  {s}: {e}")).collect::<String>())]
    AllSourcesFailed(Vec<(String, String)>),
    #[error("no usable source")]
    NoSources,
    #[error("SHA-256 mismatch: expected {expected}, got {got}")]
    ShaMismatch { expected: String, got: String },
    #[error("size mismatch: expected {expected} bytes, got {got}")]
    SizeMismatch { expected: u64, got: u64 },
    #[error("interrupted")]
    Interrupted,
}

impl FetchError {
    /// The process exit code for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            FetchError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// A failure that says nothing about the source it happened on (another source would get
    /// the same answer).
    fn fatal_for_all(&self) -> bool {
        matches!(
            self,
            FetchError::Usage(_) | FetchError::TooManyRedirects | FetchError::Http { status: 400..=499, .. }
        )
    }
}

/// Where the bytes go.
pub enum Output {
    /// Written to `FILE.part` at offsets, renamed to `FILE` once complete and verified.
    File(PathBuf),
    /// Written in order (stdout, a socket), with bounded memory.
    Stream(Box<dyn AsyncWrite + Unpin + Send>),
}

/// One download.
pub struct Request {
    pub url: String,
    pub output: Output,
    /// Expected SHA-256, lowercase hex.
    pub sha256: Option<String>,
    /// Resume from `FILE.part` + `FILE.part.state` when the server still has the same entity.
    pub resume: bool,
    /// Extra request headers sent with every request.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn new(url: impl Into<String>, output: Output) -> Request {
        Request {
            url: url.into(),
            output,
            sha256: None,
            resume: true,
            headers: Vec::new(),
        }
    }
}

/// Tunables of a download.
#[derive(Clone)]
pub struct Options {
    pub planner: PlannerConfig,
    /// TLS client configuration for `https` (default: webpki roots).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The download fails when every source has been failing for this long.
    pub give_up_after: Duration,
    /// Restarts from scratch when the entity changes, before failing.
    pub max_restarts: u32,
    /// Cancel to stop (Ctrl-C): the resume state is saved first.
    pub stop: CancellationToken,
    /// Live counters for a progress display.
    pub stats: Arc<Stats>,
    /// Messages for the user ("server does not support ranges ..."); default: logged.
    pub notify: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            planner: PlannerConfig::default(),
            tls: None,
            give_up_after: Duration::from_secs(30),
            max_restarts: 3,
            stop: CancellationToken::new(),
            stats: Arc::new(Stats::default()),
            notify: Arc::new(|m| tracing::info!("{m}")),
        }
    }
}

/// Window of the planner for ordered output: how far ahead of the written prefix pieces are
/// handed out (bounds the reorder buffer).
pub const STREAM_WINDOW: u64 = 32 << 20;

/// Live counters of a download, for progress displays.
#[derive(Default)]
pub struct Stats {
    sources: OnceLock<Vec<(String, AtomicU64)>>,
    /// Entity size, once known.
    pub size: AtomicU64,
    pub size_known: AtomicBool,
    /// Bytes already on disk when the download started (resume).
    pub resumed: AtomicU64,
    /// Useful bytes written (not counting duplicates).
    pub written: AtomicU64,
    pub restarts: AtomicU64,
    /// Ranged download over several sources (false: one plain stream).
    pub ranged: AtomicBool,
    pub last_errors: Mutex<Vec<Option<String>>>,
}

impl Stats {
    fn init(&self, names: &[String]) {
        let _ = self
            .sources
            .set(names.iter().map(|n| (n.clone(), AtomicU64::new(0))).collect());
        let mut e = self.last_errors.lock().unwrap_or_else(|e| e.into_inner());
        e.resize(names.len(), None);
    }

    /// `(name, body bytes received)` per source, duplicates and failed pieces included.
    pub fn per_source(&self) -> Vec<(String, u64)> {
        self.sources
            .get()
            .map(|v| v.iter().map(|(n, b)| (n.clone(), b.load(Relaxed))).collect())
            .unwrap_or_default()
    }

    pub fn size(&self) -> Option<u64> {
        self.size_known.load(Relaxed).then(|| self.size.load(Relaxed))
    }

    fn add(&self, source: usize, n: u64) {
        if let Some((_, b)) = self.sources.get().and_then(|v| v.get(source)) {
            b.fetch_add(n, Relaxed);
        }
    }

    fn set_error(&self, source: usize, e: Option<String>) {
        let mut v = self.last_errors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = v.get_mut(source) {
            *slot = e;
        }
    }
}

/// What a finished download did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub size: u64,
    /// SHA-256 (hex) of what was written.
    pub sha256: String,
    /// Whether it matched the expected hash (None: none given).
    pub sha256_ok: Option<bool>,
    pub elapsed: Duration,
    /// `(source, body bytes received)`, duplicates included.
    pub per_source: Vec<(String, u64)>,
    /// Bytes that were already on disk (resume).
    pub resumed: u64,
    pub ranged: bool,
    pub restarts: u32,
    pub final_url: String,
    /// The finished file (None for a stream).
    pub path: Option<PathBuf>,
}

/// Everything an attempt and its workers share.
struct Ctx {
    connector: Arc<dyn Connector>,
    tls: Option<Arc<rustls::ClientConfig>>,
    headers: Vec<(String, String)>,
    opts: Options,
    names: Vec<String>,
}

impl Ctx {
    fn note(&self, m: &str) {
        (self.opts.notify)(m)
    }

    /// A new connection to `url`'s origin through `source`.
    async fn open(&self, source: usize, url: &Url) -> Result<Conn, FetchError> {
        let io = self.connector.connect(source, &url.host, url.port).await?;
        let io = match url.scheme {
            Scheme::Http => io,
            Scheme::Https => {
                let tls = self
                    .tls
                    .as_ref()
                    .ok_or_else(|| FetchError::Tls("no TLS configuration".into()))?;
                connect::tls_wrap(tls, &url.host, io).await?
            }
        };
        Ok(Conn::new(io, url.clone()))
    }
}

/// Checks a `--sha256` value: 64 hex digits. Returns it lowercased.
pub fn parse_sha256(s: &str) -> Result<String, FetchError> {
    let s = s.trim().to_ascii_lowercase();
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(FetchError::Usage(format!("--sha256 expects 64 hex digits, got `{s}`")))
    }
}

/// Downloads `req.url` over every source of `connector`.
pub async fn download(req: Request, connector: Arc<dyn Connector>, opts: Options) -> Result<Outcome, FetchError> {
    let url = Url::parse(&req.url)?;
    let expected = req.sha256.as_deref().map(parse_sha256).transpose()?;
    let names = connector.sources();
    if names.is_empty() {
        return Err(FetchError::NoSources);
    }
    opts.stats.init(&names);
    let tls = match (&opts.tls, url.scheme) {
        (Some(t), _) => Some(t.clone()),
        (None, Scheme::Https) => Some(tls_config(None)?),
        (None, Scheme::Http) => None,
    };
    let ctx = Ctx {
        connector,
        tls,
        headers: req.headers.clone(),
        opts,
        names,
    };
    let started = Instant::now();
    let mut resume = req.resume;
    let mut restarts = 0u32;
    let mut output = req.output;
    loop {
        if ctx.opts.stop.is_cancelled() {
            return Err(FetchError::Interrupted);
        }
        let (r, back) = attempt(&ctx, &url, output, resume).await;
        match r {
            Err(FetchError::Changed) => {
                restarts += 1;
                ctx.opts.stats.restarts.fetch_add(1, Relaxed);
                if restarts > ctx.opts.max_restarts {
                    return Err(FetchError::TooManyRestarts(ctx.opts.max_restarts));
                }
                let Some(o) = back else {
                    return Err(FetchError::Protocol(
                        "the file changed on the server after part of it was streamed out".into(),
                    ));
                };
                ctx.note(&format!(
                    "the file changed on the server during the download: starting over ({restarts}/{})",
                    ctx.opts.max_restarts
                ));
                output = o;
                resume = false;
            }
            Err(e) => return Err(e),
            Ok(mut done) => {
                done.elapsed = started.elapsed();
                done.restarts = restarts;
                done.per_source = ctx.opts.stats.per_source();
                match &expected {
                    Some(want) if *want != done.sha256 => {
                        // Keep FILE.part for inspection, but never resume into it.
                        if let Some(path) = &done.path {
                            let _ = std::fs::remove_file(part_paths(path).1);
                        }
                        return Err(FetchError::ShaMismatch {
                            expected: want.clone(),
                            got: done.sha256,
                        });
                    }
                    Some(_) => done.sha256_ok = Some(true),
                    None => {}
                }
                if let Some(path) = &done.path {
                    let (part, state) = part_paths(path);
                    std::fs::rename(&part, path)?;
                    let _ = std::fs::remove_file(state);
                }
                return Ok(done);
            }
        }
    }
}

/// The rest of an entity whose first bytes went out another way: the proxy's transparent split,
/// whose own ranged request was the probe.
pub struct Rest {
    /// `http://` URL of the entity (no redirects are followed).
    pub url: String,
    /// Extra request headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// First byte to fetch; bytes before it are already delivered.
    pub start: u64,
    /// The entity's size, from the probe's `Content-Range`.
    pub size: u64,
    /// `If-Range` value (the probe's strong ETag or Last-Modified): a changed entity fails the
    /// fetch instead of mixing two versions.
    pub validator: String,
}

/// Fetches `[rest.start, rest.size)` by ranges over every source of `connector`, sending each
/// chunk as `(offset, bytes)` to `tx` (read it with [`write_ordered`]). Planner window:
/// `opts.planner.window`, else [`STREAM_WINDOW`]. Returns when every byte was sent.
pub async fn fetch_rest(
    rest: Rest,
    connector: Arc<dyn Connector>,
    opts: Options,
    tx: tokio::sync::mpsc::Sender<(u64, Vec<u8>)>,
) -> Result<(), FetchError> {
    let url = Url::parse(&rest.url)?;
    if url.scheme != Scheme::Http {
        return Err(FetchError::Usage(
            "only http:// entities can be fetched as a rest".into(),
        ));
    }
    let names = connector.sources();
    if names.is_empty() {
        return Err(FetchError::NoSources);
    }
    opts.stats.init(&names);
    opts.stats.size.store(rest.size, Relaxed);
    opts.stats.size_known.store(true, Relaxed);
    opts.stats.ranged.store(true, Relaxed);
    opts.stats.resumed.store(rest.start, Relaxed);
    let ctx = Ctx {
        connector,
        tls: None,
        headers: rest.headers,
        opts,
        names,
    };
    let mut cfg = ctx.opts.planner.clone();
    cfg.window = cfg.window.or(Some(STREAM_WINDOW));
    let mut planner = Planner::new(rest.size, cfg);
    planner.mark_done(0, rest.start);
    let job = engine::Job {
        url,
        validator: Some(rest.validator),
        size: rest.size,
        sink: Sink::Ordered(tx),
        planner,
        first: (0, engine::First::Fresh, (rest.start, rest.start)),
        state: None,
        delivered: None,
    };
    engine::run(&ctx, job).await
}

/// Writes what [`fetch_rest`] sends to `out` in order, from offset `start`, with a bounded
/// reorder buffer. Returns the offset reached (`size` when complete).
pub async fn write_ordered<W: AsyncWrite + Unpin>(
    rx: tokio::sync::mpsc::Receiver<(u64, Vec<u8>)>,
    out: W,
    start: u64,
) -> io::Result<u64> {
    Ok(sink::ordered_writer_from(rx, out, start).await?.written)
}

/// The answer to the probe, on the connection that got it.
struct Probe {
    source: usize,
    conn: Conn,
    head: ResponseHead,
    url: Url,
}

/// Sends the probe on each source in turn until one answers; follows redirects.
async fn probe(ctx: &Ctx, url: &Url, range: Option<(u64, u64)>, if_range: Option<&str>) -> Result<Probe, FetchError> {
    let mut errors = Vec::new();
    for source in 0..ctx.names.len() {
        match probe_on(ctx, source, url, range, if_range).await {
            Ok(p) => {
                ctx.opts.stats.set_error(source, None);
                return Ok(p);
            }
            Err(e) if e.fatal_for_all() => return Err(e),
            Err(e) => {
                tracing::debug!(source = %ctx.names[source], error = %e, "probe failed");
                ctx.opts.stats.set_error(source, Some(e.to_string()));
                errors.push((ctx.names[source].clone(), e.to_string()));
            }
        }
    }
    Err(FetchError::AllSourcesFailed(errors))
}

async fn probe_on(
    ctx: &Ctx,
    source: usize,
    url: &Url,
    range: Option<(u64, u64)>,
    if_range: Option<&str>,
) -> Result<Probe, FetchError> {
    let mut url = url.clone();
    let mut conn: Option<Conn> = None;
    for _ in 0..=MAX_REDIRECTS {
        let mut c = match conn.take().filter(|c| c.reusable && c.origin.same_origin(&url)) {
            Some(c) => c,
            None => ctx.open(source, &url).await?,
        };
        c.send(&http::get_request(&url, range, if_range, &ctx.headers)).await?;
        let head = c.read_head(HEAD_TIMEOUT).await?;
        if matches!(head.status, 301 | 302 | 303 | 307 | 308) {
            let location = header_str(&head, "location")
                .ok_or_else(|| FetchError::Protocol(format!("redirect {} without Location", head.status)))?;
            let next = url.join(&location)?;
            tracing::debug!(from = %url, to = %next, "redirect");
            let mut body = c.body_of(&head)?;
            c.discard_body(&mut body, SMALL_BODY).await;
            conn = Some(c);
            url = next;
            continue;
        }
        return Ok(Probe {
            source,
            conn: c,
            head,
            url,
        });
    }
    Err(FetchError::TooManyRedirects)
}

/// The sink of an attempt and how to finish it.
enum Out {
    File {
        path: PathBuf,
        part: PathBuf,
        state: PathBuf,
        file: Arc<sink::FileSink>,
        existed: bool,
    },
    Stream {
        tx: tokio::sync::mpsc::Sender<(u64, Vec<u8>)>,
        writer: tokio::task::JoinHandle<StreamBack>,
    },
}

type StreamBack = (Box<dyn AsyncWrite + Unpin + Send>, io::Result<sink::OrderedDone>);

impl Out {
    fn sink(&self) -> Sink {
        match self {
            Out::File { file, .. } => Sink::File(file.clone()),
            Out::Stream { tx, .. } => Sink::Ordered(tx.clone()),
        }
    }
}

/// One attempt: probe, then a ranged or a plain download. Gives the output back when the
/// attempt can be restarted (a file always; a stream only if nothing was written).
async fn attempt(ctx: &Ctx, url: &Url, output: Output, resume: bool) -> (Result<Outcome, FetchError>, Option<Output>) {
    // The stream writer or the file.
    let out = match output {
        Output::File(path) => {
            let (part, state) = part_paths(&path);
            let existed = part.exists();
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&part)
            {
                Ok(f) => Arc::new(sink::FileSink::new(f)),
                Err(e) => {
                    return (
                        Err(FetchError::Io(io::Error::new(
                            e.kind(),
                            format!("{}: {e}", part.display()),
                        ))),
                        Some(Output::File(path)),
                    )
                }
            };
            Out::File {
                path,
                part,
                state,
                file,
                existed,
            }
        }
        Output::Stream(w) => {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let writer = tokio::spawn(async move {
                let mut w = w;
                let r = sink::ordered_writer(rx, &mut w).await;
                (w, r)
            });
            Out::Stream { tx, writer }
        }
    };
    let r = attempt_inner(ctx, url, &out, resume).await;
    // Give the output back, or finish it.
    match out {
        Out::File { path, file, part, .. } => {
            file.close();
            drop(file);
            let r = match r {
                Ok(mut o) => {
                    o.path = Some(path.clone());
                    finish_file(&part, o).await
                }
                Err(e) => Err(e),
            };
            (r, Some(Output::File(path)))
        }
        Out::Stream { tx, writer } => {
            drop(tx);
            let (w, wr) = match writer.await {
                Ok(x) => x,
                Err(e) => return (Err(FetchError::Io(io::Error::other(e))), None),
            };
            let written = wr.as_ref().map(|d| d.written).unwrap_or(1);
            let back = (written == 0).then(|| Output::Stream(w));
            let r = match (r, wr) {
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(FetchError::Io(e)),
                (Ok(mut o), Ok(d)) => {
                    if o.size != d.written {
                        Err(FetchError::SizeMismatch {
                            expected: o.size,
                            got: d.written,
                        })
                    } else {
                        o.size = d.written;
                        o.sha256 = d.sha256;
                        Ok(o)
                    }
                }
            };
            (r, back)
        }
    }
}

/// Checks the `.part` file's size and hashes it.
async fn finish_file(part: &std::path::Path, mut o: Outcome) -> Result<Outcome, FetchError> {
    let len = std::fs::metadata(part)?.len();
    if len != o.size {
        return Err(FetchError::SizeMismatch {
            expected: o.size,
            got: len,
        });
    }
    o.size = len;
    if o.sha256.is_empty() {
        o.sha256 = sink::hash_file(part).await?;
    }
    Ok(o)
}

async fn attempt_inner(ctx: &Ctx, url: &Url, out: &Out, resume: bool) -> Result<Outcome, FetchError> {
    let stats = &ctx.opts.stats;
    let first_piece = ctx.opts.planner.initial_piece.max(1);
    // A previous run's state, if it is for this URL and its .part file is still there.
    let mut saved = match out {
        Out::File {
            state,
            part,
            existed: true,
            ..
        } if resume => ResumeState::load(state)
            .filter(|s| s.url == url.to_string() && std::fs::metadata(part).is_ok_and(|m| m.len() == s.size)),
        _ => None,
    };
    loop {
        let validator = saved.as_ref().and_then(|s| s.validator());
        // Resuming: a one-byte probe with If-Range; the connection is kept for a worker.
        let range = if validator.is_some() { (0, 1) } else { (0, first_piece) };
        let mut p = probe(ctx, url, Some(range), validator.as_deref()).await?;
        match p.head.status {
            206 => {
                let Some((first, last, size)) = content_range(&p.head) else {
                    return Err(FetchError::Protocol("206 without a valid Content-Range".into()));
                };
                if first != 0 || last + 1 != range.1.min(size) {
                    return Err(FetchError::Protocol(format!(
                        "asked for bytes 0-{}, got {first}-{last}/{size}",
                        range.1 - 1
                    )));
                }
                let etag = header_str(&p.head, "etag");
                let last_modified = header_str(&p.head, "last-modified");
                let mut done = Vec::new();
                if let Some(s) = saved.take() {
                    let same = s.size == size && s.etag == etag && s.last_modified == last_modified;
                    if same {
                        done = s.done;
                    } else {
                        ctx.note("the file changed on the server since the last run: starting over");
                    }
                }
                stats.size.store(size, Relaxed);
                stats.size_known.store(true, Relaxed);
                stats.ranged.store(true, Relaxed);
                let resumed: u64 = done.iter().map(|(a, b)| b - a).sum();
                if resumed > 0 {
                    ctx.note(&format!("resuming: {resumed} of {size} bytes already downloaded"));
                }
                stats.resumed.store(resumed, Relaxed);
                if let Out::File { file, .. } = out {
                    let file = file.clone();
                    let keep = resumed > 0;
                    tokio::task::spawn_blocking(move || {
                        if !keep {
                            file.file.set_len(0)?;
                        }
                        file.file.set_len(size)
                    })
                    .await
                    .map_err(io::Error::other)??;
                }
                let mut cfg = ctx.opts.planner.clone();
                if matches!(out, Out::Stream { .. }) && cfg.window.is_none() {
                    cfg.window = Some(STREAM_WINDOW);
                }
                let mut planner = Planner::new(size, cfg);
                for (a, b) in &done {
                    planner.mark_done(*a, *b);
                }
                let mut body = p.conn.body_of(&p.head)?;
                let first = if validator.is_some() {
                    // The one-byte answer: read it, keep the connection.
                    p.conn.discard_body(&mut body, 1).await;
                    engine::First::Idle(p.conn)
                } else {
                    engine::First::Body(p.conn, body)
                };
                let state = match out {
                    Out::File { state, .. } => Some((
                        state.clone(),
                        ResumeState {
                            url: url.to_string(),
                            final_url: p.url.to_string(),
                            size,
                            etag,
                            last_modified,
                            done: Vec::new(),
                        },
                    )),
                    Out::Stream { .. } => None,
                };
                let validator = state.as_ref().and_then(|(_, s)| s.validator()).or_else(|| {
                    sink::validator(
                        header_str(&p.head, "etag").as_deref(),
                        header_str(&p.head, "last-modified").as_deref(),
                    )
                });
                // File: hash what is done while the rest downloads.
                let (delivered, hasher) = match out {
                    Out::File { file, .. } => {
                        let (tx, rx) = tokio::sync::watch::channel(0);
                        let h = tokio::spawn(sink::follow_hash(file.clone(), rx, size));
                        (Some(tx), Some(tokio_util::task::AbortOnDropHandle::new(h)))
                    }
                    Out::Stream { .. } => (None, None),
                };
                let job = engine::Job {
                    url: p.url.clone(),
                    validator,
                    size,
                    sink: out.sink(),
                    planner,
                    first: (p.source, first, range),
                    state,
                    delivered,
                };
                engine::run(ctx, job).await?;
                let mut o = outcome(size, resumed, true, &p.url);
                if let Some(h) = hasher {
                    o.sha256 = h.await.map_err(io::Error::other)??;
                }
                return Ok(o);
            }
            200 if validator.is_some() => {
                // Sent If-Range and got the whole entity: it changed (or ranges are no longer
                // served). Start over with a fresh probe.
                ctx.note("the file changed on the server since the last run: starting over");
                saved = None;
                continue;
            }
            200 => {
                ctx.note("server does not support ranges: downloading over one source");
                return plain(ctx, url, out, p).await;
            }
            416 if unsatisfied_size(&p.head) == Some(0) => {
                stats.size.store(0, Relaxed);
                stats.size_known.store(true, Relaxed);
                if let Out::File { file, .. } = out {
                    file.file.set_len(0)?;
                }
                return Ok(outcome(0, 0, false, &p.url));
            }
            status => {
                return Err(FetchError::Http {
                    status,
                    reason: p.head.reason.clone(),
                });
            }
        }
    }
}

fn outcome(size: u64, resumed: u64, ranged: bool, url: &Url) -> Outcome {
    Outcome {
        size,
        sha256: String::new(),
        sha256_ok: None,
        elapsed: Duration::ZERO,
        per_source: Vec::new(),
        resumed,
        ranged,
        restarts: 0,
        final_url: url.to_string(),
        path: None,
    }
}

/// The server ignores ranges: stream the one 200 response to the output over its source; if
/// it fails before its first byte, ask the next source.
async fn plain(ctx: &Ctx, url: &Url, out: &Out, first: Probe) -> Result<Outcome, FetchError> {
    let stats = &ctx.opts.stats;
    let sink = out.sink();
    if let Out::File { file, .. } = out {
        file.file.set_len(0)?;
    }
    let mut next_source = first.source + 1;
    let mut p = first;
    let mut errors = Vec::new();
    loop {
        let size = match p.conn.body_of(&p.head)? {
            http::Body::Length(n) => Some(n),
            http::Body::Done => Some(0),
            _ => None,
        };
        if let Some(n) = size {
            stats.size.store(n, Relaxed);
            stats.size_known.store(true, Relaxed);
        }
        match engine::stream_body(ctx, &mut p.conn, &p.head, p.source, &sink).await {
            Ok(n) => {
                if size.is_some_and(|s| s != n) {
                    return Err(FetchError::SizeMismatch {
                        expected: size.unwrap_or(0),
                        got: n,
                    });
                }
                return Ok(outcome(n, 0, false, &p.url));
            }
            Err((0, e)) => {
                errors.push((ctx.names[p.source].clone(), e.to_string()));
                stats.set_error(p.source, Some(e.to_string()));
            }
            Err((_, e)) => return Err(e),
        }
        // Nothing was written: try the next source.
        loop {
            if next_source >= ctx.names.len() {
                return Err(FetchError::AllSourcesFailed(errors));
            }
            let s = next_source;
            next_source += 1;
            match probe_on(ctx, s, url, None, None).await {
                Ok(np) if np.head.status == 200 => {
                    p = np;
                    break;
                }
                Ok(np) => errors.push((ctx.names[s].clone(), format!("HTTP {}", np.head.status))),
                Err(e) => errors.push((ctx.names[s].clone(), e.to_string())),
            }
        }
    }
}

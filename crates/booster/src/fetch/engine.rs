//! The ranged download: one coordinator owns the [`Planner`]; one worker per source fetches
//! the pieces it is given on a kept-alive connection and reports back.
//!
//! ```text
//! worker ──Next / Progress / Complete / Fail / Changed──▶ coordinator (owns the planner)
//! worker ◀──────────── assignment ──── reply             │ every 250 ms: check_stalls,
//! worker ◀──────────── cancel (piece, generation) ───────┘ give-up check; every 1 s: state
//! ```
//!
//! A worker reports bytes only after they are written, so the planner's done ranges are on disk
//! and are the resume state. Each assignment gets a generation number per source; a cancel names
//! the generation it is meant for, so a late cancel never aborts a later piece.

use super::{
    http::{self, content_range, Body, Conn},
    sink::{ResumeState, Sink},
    Ctx, FetchError, Url, HEAD_TIMEOUT,
};
use proto::range::{Assignment, Cancel, Next, PieceId, Planner};
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::{mpsc, oneshot, watch};

/// Bytes a worker collects before writing them and reporting progress...
const FLUSH_BYTES: usize = 128 * 1024;
/// ...or after this long, whichever comes first.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often the planner looks for stalled sources.
const STALL_CHECK: Duration = Duration::from_millis(250);
/// How often the resume state is saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Backoff of a failing worker: 1 s, 2 s, 4 s, 8 s, then 10 s.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A read that takes longer than this fails the piece (the planner's stall check is usually
/// much quicker).
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the probe left for its source's worker.
pub(super) enum First {
    /// The probe's response body, carrying bytes `[0, range.1)`.
    Body(Conn, Body),
    /// A kept-alive connection with nothing pending.
    Idle(Conn),
    /// Nothing: every worker opens its own connection (the proxy's split, whose probe was the
    /// client's own request).
    Fresh,
}

pub(super) struct Job {
    /// The final URL (after redirects).
    pub url: Url,
    /// `If-Range` value for every request.
    pub validator: Option<String>,
    pub size: u64,
    pub sink: Sink,
    pub planner: Planner,
    /// The probe's source, what it left, and the range it asked for.
    pub first: (usize, First, (u64, u64)),
    /// Where to save the resume state, and its fixed fields.
    pub state: Option<(PathBuf, ResumeState)>,
    /// Told the contiguous done prefix as it grows (the file hasher follows it).
    pub delivered: Option<watch::Sender<u64>>,
}

enum Ev {
    Next {
        src: usize,
        reply: oneshot::Sender<(Next, u64)>,
    },
    Progress {
        src: usize,
        piece: PieceId,
        received: u64,
    },
    Complete {
        src: usize,
        piece: PieceId,
    },
    Fail {
        src: usize,
        piece: Option<PieceId>,
        error: String,
    },
    /// A 200 to a ranged request with `If-Range`: the entity changed.
    Changed,
    /// Cannot write the output: the download cannot go on.
    Fatal(FetchError),
}

/// A cancel for a worker: the generation of the assignment it aborts, and whether it stalled.
type CancelMsg = (u64, bool);

/// What workers share.
struct Shared {
    url: Url,
    validator: Option<String>,
    size: u64,
    sink: Sink,
    ev: mpsc::UnboundedSender<Ev>,
}

struct SourceState {
    cancel: mpsc::UnboundedSender<CancelMsg>,
    generation: u64,
    failing_since: Option<Instant>,
    last_error: Option<String>,
}

pub(super) async fn run(ctx: &Ctx, job: Job) -> Result<(), FetchError> {
    let Job {
        url,
        validator,
        size,
        sink,
        mut planner,
        first,
        state,
        delivered,
    } = job;
    let n = ctx.names.len();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        url,
        validator,
        size,
        sink,
        ev: ev_tx,
    });
    let now = Instant::now();
    let (first_src, first, first_range) = first;
    // The probe's source first, with no prior: its first piece is then `initial_piece` from 0,
    // which is what the probe asked for, so the probe's body is that piece's first bytes.
    planner.add_source(first_src, None);
    let mut sources = Vec::with_capacity(n);
    let mut cancel_rxs = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::unbounded_channel();
        sources.push(SourceState {
            cancel: tx,
            generation: 0,
            failing_since: None,
            last_error: None,
        });
        cancel_rxs.push(Some(rx));
    }
    let mut initial: Vec<Start> = (0..n).map(|_| Start::default()).collect();
    match first {
        First::Body(conn, body) => match planner.next(first_src, now) {
            Next::Fetch(a) if a.start == 0 && first_range.1 <= a.end => {
                sources[first_src].generation += 1;
                initial[first_src] = Start {
                    assignment: Some((a, sources[first_src].generation)),
                    conn: Some(conn),
                    body: Some(body),
                };
            }
            Next::Fetch(a) => {
                // Not what the probe asked for: fetch it anew.
                sources[first_src].generation += 1;
                initial[first_src].assignment = Some((a, sources[first_src].generation));
            }
            Next::Wait | Next::Done => {}
        },
        First::Idle(conn) => initial[first_src].conn = Some(conn),
        First::Fresh => {}
    }
    for i in 0..n {
        planner.add_source(i, ctx.connector.prior_rate(i));
    }

    let mut workers = tokio::task::JoinSet::new();
    for (src, init) in initial.into_iter().enumerate() {
        let Start { assignment, conn, body } = init;
        let w = Worker {
            src,
            shared: shared.clone(),
            cancel: cancel_rxs[src].take().expect("one receiver per source"),
            conn,
        };
        let connector = ctx.connector.clone();
        let tls = ctx.tls.clone();
        let headers = ctx.headers.clone();
        let stats = ctx.opts.stats.clone();
        workers.spawn(w.run(
            WorkerEnv {
                connector,
                tls,
                headers,
                stats,
            },
            assignment,
            body,
        ));
    }

    let mut waiting: Vec<(usize, oneshot::Sender<(Next, u64)>)> = Vec::new();
    let mut stall_tick = tokio::time::interval(STALL_CHECK);
    let mut save_tick = tokio::time::interval(SAVE_EVERY);
    let stop = ctx.opts.stop.clone();
    let save = |planner: &Planner| {
        if let Some((path, s)) = &state {
            let mut s = s.clone();
            s.done = planner.done_ranges();
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = s.save(&path) {
                    tracing::warn!(error = %e, "cannot save the resume state");
                }
            });
        }
    };
    let save_now = |planner: &Planner| {
        if let Some((path, s)) = &state {
            let mut s = s.clone();
            s.done = planner.done_ranges();
            if let Err(e) = s.save(path) {
                tracing::warn!(error = %e, "cannot save the resume state");
            }
        }
    };
    let result = loop {
        if planner.is_done() {
            break Ok(());
        }
        let now = Instant::now();
        let mut cancels: Vec<(Cancel, bool)> = Vec::new();
        tokio::select! {
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { break Err(FetchError::Protocol("every worker ended".into())) };
                match ev {
                    Ev::Next { src, reply } => waiting.push((src, reply)),
                    Ev::Progress { src, piece, received } => {
                        healthy(&mut sources[src], ctx, src);
                        cancels.extend(planner.progress(src, piece, received, now).into_iter().map(|c| (c, false)));
                    }
                    Ev::Complete { src, piece } => {
                        healthy(&mut sources[src], ctx, src);
                        cancels.extend(planner.complete(src, piece, now).into_iter().map(|c| (c, false)));
                    }
                    Ev::Fail { src, piece, error } => {
                        tracing::debug!(source = %ctx.names[src], %error, "piece failed");
                        if let Some(piece) = piece {
                            planner.fail(src, piece, now);
                        }
                        let s = &mut sources[src];
                        s.failing_since.get_or_insert(now);
                        s.last_error = Some(error.clone());
                        ctx.opts.stats.set_error(src, Some(error));
                    }
                    Ev::Changed => break Err(FetchError::Changed),
                    Ev::Fatal(e) => break Err(e),
                }
            }
            _ = stall_tick.tick() => {
                for c in planner.check_stalls(now) {
                    tracing::debug!(source = %ctx.names[c.source], piece = c.piece, "stalled");
                    let s = &mut sources[c.source];
                    s.failing_since.get_or_insert(now);
                    s.last_error = Some("stalled".into());
                    ctx.opts.stats.set_error(c.source, Some("stalled".into()));
                    cancels.push((c, true));
                }
                let all_failing = sources.iter().all(|s| s.failing_since.is_some_and(|t| now.duration_since(t) >= ctx.opts.give_up_after));
                if all_failing {
                    save_now(&planner);
                    break Err(FetchError::AllSourcesFailed(
                        sources.iter().enumerate().map(|(i, s)| (ctx.names[i].clone(), s.last_error.clone().unwrap_or_default())).collect(),
                    ));
                }
            }
            _ = save_tick.tick() => save(&planner),
            _ = stop.cancelled() => {
                save_now(&planner);
                break Err(FetchError::Interrupted);
            }
        }
        if let Some(tx) = &delivered {
            let now_delivered = planner.delivered();
            tx.send_if_modified(|d| std::mem::replace(d, now_delivered) != now_delivered);
        }
        for (c, stalled) in cancels {
            let s = &sources[c.source];
            let _ = s.cancel.send((s.generation, stalled));
        }
        // Hand out work to the sources that asked.
        if !waiting.is_empty() {
            let now = Instant::now();
            let mut still = Vec::new();
            for (src, reply) in waiting.drain(..) {
                match planner.next(src, now) {
                    Next::Wait => still.push((src, reply)),
                    next => {
                        let gen = match &next {
                            Next::Fetch(_) => {
                                sources[src].generation += 1;
                                sources[src].generation
                            }
                            _ => 0,
                        };
                        if let Err((Next::Fetch(a), _)) = reply.send((next, gen)) {
                            planner.fail(src, a.piece, now);
                        }
                    }
                }
            }
            waiting = still;
        }
    };
    if result.is_ok() {
        save_now(&planner);
    }
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    result
}

fn healthy(s: &mut SourceState, ctx: &Ctx, src: usize) {
    if s.failing_since.take().is_some() {
        ctx.opts.stats.set_error(src, None);
    }
}

/// What a worker needs besides the shared job.
struct WorkerEnv {
    connector: Arc<dyn super::Connector>,
    tls: Option<Arc<rustls::ClientConfig>>,
    headers: Vec<(String, String)>,
    stats: Arc<super::Stats>,
}

/// How a worker starts: maybe with an assignment, a connection, and the probe's body.
#[derive(Default)]
struct Start {
    assignment: Option<(Assignment, u64)>,
    conn: Option<Conn>,
    body: Option<Body>,
}

struct Worker {
    src: usize,
    shared: Arc<Shared>,
    cancel: mpsc::UnboundedReceiver<CancelMsg>,
    conn: Option<Conn>,
}

/// Why a piece did not complete.
enum PieceError {
    Cancelled { stalled: bool },
    Changed,
    Failed(String),
    Fatal(FetchError),
}

impl From<FetchError> for PieceError {
    fn from(e: FetchError) -> Self {
        PieceError::Failed(e.to_string())
    }
}

impl From<std::io::Error> for PieceError {
    fn from(e: std::io::Error) -> Self {
        PieceError::Failed(e.to_string())
    }
}

impl Worker {
    async fn run(mut self, env: WorkerEnv, mut assignment: Option<(Assignment, u64)>, mut body: Option<Body>) {
        let mut failures = 0u32;
        loop {
            let (a, gen) = match assignment.take() {
                Some(x) => x,
                None => {
                    let (reply, rx) = oneshot::channel();
                    if self.shared.ev.send(Ev::Next { src: self.src, reply }).is_err() {
                        return;
                    }
                    match rx.await {
                        Ok((Next::Fetch(a), gen)) => (a, gen),
                        Ok((Next::Done, _)) | Ok((Next::Wait, _)) | Err(_) => return,
                    }
                }
            };
            match self.piece(&env, a, gen, body.take()).await {
                Ok(()) => {
                    failures = 0;
                    let _ = self.shared.ev.send(Ev::Complete {
                        src: self.src,
                        piece: a.piece,
                    });
                }
                Err(PieceError::Cancelled { stalled }) => {
                    self.conn = None;
                    if stalled {
                        failures += 1;
                        backoff(failures).await;
                    }
                }
                Err(PieceError::Changed) => {
                    let _ = self.shared.ev.send(Ev::Changed);
                    return;
                }
                Err(PieceError::Fatal(e)) => {
                    let _ = self.shared.ev.send(Ev::Fatal(e));
                    return;
                }
                Err(PieceError::Failed(error)) => {
                    self.conn = None;
                    let _ = self.shared.ev.send(Ev::Fail {
                        src: self.src,
                        piece: Some(a.piece),
                        error,
                    });
                    failures += 1;
                    backoff(failures).await;
                }
            }
        }
    }

    /// Fetches one assignment, possibly over several requests (a body that ends early is
    /// continued from where it stopped), until it is done or cancelled.
    async fn piece(&mut self, env: &WorkerEnv, a: Assignment, gen: u64, body: Option<Body>) -> Result<(), PieceError> {
        let mut cancel = std::mem::replace(&mut self.cancel, mpsc::unbounded_channel().1);
        let r = {
            let work = self.fetch(env, a, body);
            tokio::pin!(work);
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    c = cancel.recv() => match c {
                        Some((g, stalled)) if g == gen => break Err(PieceError::Cancelled { stalled }),
                        Some(_) => continue, // meant for an earlier piece
                        None => break Err(PieceError::Cancelled { stalled: false }),
                    },
                }
            }
        };
        self.cancel = cancel;
        r
    }

    async fn fetch(&mut self, env: &WorkerEnv, a: Assignment, mut body: Option<Body>) -> Result<(), PieceError> {
        let sh = self.shared.clone();
        let mut off = a.start;
        let mut buf = vec![0u8; FLUSH_BYTES];
        let mut filled = 0usize;
        let mut last_flush = tokio::time::Instant::now();
        let mut attempts = 0;
        loop {
            let at = off + filled as u64;
            if at == a.end {
                break;
            }
            if body.as_ref().is_none_or(|b| b.is_done()) {
                // (Re)quest the rest of the piece.
                attempts += 1;
                if attempts > 3 {
                    return Err(PieceError::Failed("the server keeps ending the body early".into()));
                }
                body = Some(self.request(env, at, a.end).await?);
            }
            let conn = self.conn.as_mut().expect("a body comes with its connection");
            let b = body.as_mut().expect("set above");
            let want = (FLUSH_BYTES - filled).min((a.end - at) as usize);
            let n = tokio::time::timeout(READ_TIMEOUT, conn.read_body(b, &mut buf[filled..filled + want]))
                .await
                .map_err(|_| PieceError::Failed("read timed out".into()))??;
            if n == 0 {
                // The body ended before the piece: the response was shorter than asked
                // (it never is with a checked Content-Range, but a close-delimited one may be).
                conn.reusable = false;
                self.conn = None;
                body = None;
                continue;
            }
            filled += n;
            env.stats.add(self.src, n as u64);
            let end_reached = off + filled as u64 == a.end;
            if filled == FLUSH_BYTES || end_reached || last_flush.elapsed() >= FLUSH_EVERY {
                let data = std::mem::take(&mut buf);
                let mut data = data;
                data.truncate(filled);
                let back = sh.sink.write(off, data).await.map_err(|e| {
                    PieceError::Fatal(FetchError::Io(std::io::Error::new(
                        e.kind(),
                        format!("cannot write the output: {e}"),
                    )))
                })?;
                buf = back;
                buf.resize(FLUSH_BYTES, 0);
                env.stats
                    .written
                    .fetch_add(filled as u64, std::sync::atomic::Ordering::Relaxed);
                off += filled as u64;
                filled = 0;
                last_flush = tokio::time::Instant::now();
                let _ = sh.ev.send(Ev::Progress {
                    src: self.src,
                    piece: a.piece,
                    received: off - a.start,
                });
            }
            if end_reached {
                break;
            }
        }
        if let (Some(b), Some(c)) = (&body, self.conn.as_mut()) {
            if !b.is_done() {
                c.reusable = false;
            }
        }
        if self.conn.as_ref().is_some_and(|c| !c.reusable) {
            self.conn = None;
        }
        Ok(())
    }

    /// Sends a ranged request for `[start, end)` on the kept connection (or a new one) and
    /// checks the answer.
    async fn request(&mut self, env: &WorkerEnv, start: u64, end: u64) -> Result<Body, PieceError> {
        let sh = self.shared.clone();
        let req = http::get_request(&sh.url, Some((start, end)), sh.validator.as_deref(), &env.headers);
        let mut reused = false;
        let head = loop {
            let mut conn = match self.conn.take().filter(|c| c.reusable && c.origin.same_origin(&sh.url)) {
                Some(c) => {
                    reused = true;
                    c
                }
                None => open(env, self.src, &sh.url).await?,
            };
            let r = async {
                conn.send(&req).await?;
                conn.read_head(HEAD_TIMEOUT).await
            }
            .await;
            match r {
                Ok(h) => {
                    self.conn = Some(conn);
                    break h;
                }
                // A kept-alive connection the server had closed: once more on a new one.
                Err(_) if reused => {
                    reused = false;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let conn = self.conn.as_mut().expect("set above");
        match head.status {
            206 => {
                let want = (start, end - 1, sh.size);
                match content_range(&head) {
                    Some(got) if got == want => Ok(conn.body_of(&head)?),
                    got => {
                        conn.reusable = false;
                        Err(PieceError::Failed(format!(
                            "asked for bytes {start}-{}/{}, got {}",
                            end - 1,
                            sh.size,
                            got.map_or("no valid Content-Range".into(), |(a, b, s)| format!("{a}-{b}/{s}"))
                        )))
                    }
                }
            }
            // A whole entity to a ranged request: with If-Range that means it changed; without
            // a validator it is the only sign we get.
            200 => Err(PieceError::Changed),
            s => {
                conn.reusable = false;
                Err(PieceError::Failed(format!("HTTP {s} {}", head.reason)))
            }
        }
    }
}

/// A new connection to `url`'s origin through source `src`.
async fn open(env: &WorkerEnv, src: usize, url: &Url) -> Result<Conn, FetchError> {
    let io = env.connector.connect(src, &url.host, url.port).await?;
    let io = match url.scheme {
        http::Scheme::Http => io,
        http::Scheme::Https => {
            let tls = env
                .tls
                .as_ref()
                .ok_or_else(|| FetchError::Tls("no TLS configuration".into()))?;
            super::connect::tls_wrap(tls, &url.host, io).await?
        }
    };
    Ok(Conn::new(io, url.clone()))
}

async fn backoff(failures: u32) {
    let d = Duration::from_secs(1 << failures.saturating_sub(1).min(4)).min(BACKOFF_MAX);
    tokio::time::sleep(d).await;
}

/// Streams one whole response body to `sink` from offset 0 (the server ignores ranges).
/// Returns the bytes written, or the bytes written before the error.
pub(super) async fn stream_body(
    ctx: &Ctx,
    conn: &mut Conn,
    head: &proto::http::ResponseHead,
    src: usize,
    sink: &Sink,
) -> Result<u64, (u64, FetchError)> {
    let mut body = conn.body_of(head).map_err(|e| (0, e))?;
    let mut off = 0u64;
    let mut buf = vec![0u8; FLUSH_BYTES];
    let mut filled = 0;
    let mut last_flush = tokio::time::Instant::now();
    loop {
        let read = tokio::select! {
            r = tokio::time::timeout(READ_TIMEOUT, conn.read_body(&mut body, &mut buf[filled..])) => r,
            _ = ctx.opts.stop.cancelled() => return Err((off, FetchError::Interrupted)),
        };
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err((off, FetchError::Io(e))),
            Err(_) => return Err((off, FetchError::Timeout("body"))),
        };
        filled += n;
        ctx.opts.stats.add(src, n as u64);
        if filled > 0 && (n == 0 || filled == FLUSH_BYTES || last_flush.elapsed() >= FLUSH_EVERY) {
            let mut data = std::mem::take(&mut buf);
            data.truncate(filled);
            buf = sink.write(off, data).await.map_err(|e| (off, FetchError::Io(e)))?;
            buf.resize(FLUSH_BYTES, 0);
            ctx.opts
                .stats
                .written
                .fetch_add(filled as u64, std::sync::atomic::Ordering::Relaxed);
            off += filled as u64;
            filled = 0;
            last_flush = tokio::time::Instant::now();
        }
        if n == 0 {
            return Ok(off);
        }
    }
}

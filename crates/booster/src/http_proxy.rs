//! An HTTP proxy session: `CONNECT host:port` tunnels, and absolute-form requests
//! (`GET http://host/path`) forwarded in origin form with keep-alive on both sides.
//!
//! Bodies are forwarded byte for byte; [`proto::http::BodyTracker`] only finds where each one
//! ends, so chunked bodies are never re-encoded. Errors get one precise status and the
//! connection is closed.

use crate::{
    balancer,
    dial::{DialError, Metered},
    logs,
    proxy::{at_line_ends, read_message, secret_eq, Ctx, ReadError},
    socks::SessionError,
    split,
    target::Target,
};
use base64::Engine;
use proto::http::{self, BodyFraming, BodyTracker, Header, ProxyTarget, RequestHead, ResponseHead};
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

/// Read size for bodies.
const BODY_CHUNK: usize = 64 * 1024;

/// Request header naming the one source a request must use (sent by `booster get --node`); it
/// is never forwarded.
pub const PIN_HEADER: &str = "x-booster-source";

fn pinned_source(head: &RequestHead) -> Option<String> {
    head.header(PIN_HEADER)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|s| s.trim().to_string())
}

/// Response headers that describe the hop, not the message.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

struct Upstream {
    target: Target,
    conn: Metered,
}

/// Serves one HTTP proxy client; `early` holds what was read of it already.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, ctx: &Ctx, early: Vec<u8>) -> Result<(), SessionError> {
    let node = &ctx.node;
    let mut buf = early;
    let mut upstream: Option<Upstream> = None;
    let mut first = true;
    loop {
        let wait = if first {
            node.config.handshake_timeout
        } else {
            node.config.idle_timeout
        };
        let deadline = tokio::time::Instant::now() + wait;
        let head = match read_message(
            &mut client,
            &mut buf,
            http::MAX_HEAD,
            deadline,
            at_line_ends(|b| RequestHead::decode(b, http::MAX_HEAD)),
        )
        .await
        {
            Ok(h) => h,
            Err(ReadError::Closed) | Err(ReadError::Timeout) if !first && buf.is_empty() => return Ok(()),
            Err(ReadError::Timeout) => {
                return respond(&mut client, 408, &[], "timed out waiting for the request").await
            }
            Err(ReadError::TooLarge) => return respond(&mut client, 431, &[], "request head too large").await,
            Err(ReadError::Malformed(e)) => {
                logs::throttled!(info, logs::CLIENTS, client = %peer, error = %e, "bad HTTP request");
                return respond(&mut client, e.status(), &[], &e.to_string()).await;
            }
            Err(ReadError::Closed) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(e.into()),
        };
        first = false;

        if let Some(creds) = &node.config.auth {
            if !authorized(&head, &creds.username, creds.password.expose()) {
                logs::throttled!(info, logs::CLIENTS, client = %peer, "HTTP proxy authentication failed");
                return respond(
                    &mut client,
                    407,
                    &[("Proxy-Authenticate", "Basic realm=\"booster\"")],
                    "proxy authentication required",
                )
                .await;
            }
        }
        let target = match head.proxy_target() {
            Ok(t) => t,
            Err(e) => return respond(&mut client, e.status(), &[], &e.to_string()).await,
        };
        match &target {
            ProxyTarget::Connect { host, port } => {
                let t = Target::new(host, *port);
                let pin = pinned_source(&head);
                let mut up = match balancer::connect_pinned(node, &t, ctx.scorer.as_ref(), pin.as_deref()).await {
                    Ok(u) => u,
                    Err(e) => return dial_failed(&mut client, peer, &t, e).await,
                };
                client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
                let early = std::mem::take(&mut buf);
                let source = up.source().name.clone();
                match crate::pipe::relay(&mut client, &mut up, early, node.config.idle_timeout).await {
                    Ok(m) => {
                        tracing::trace!(client = %peer, target = %t, %source, up = m.up, down = m.down, "CONNECT tunnel closed")
                    }
                    Err(e) => {
                        tracing::trace!(client = %peer, target = %t, %source, error = %e, "CONNECT tunnel ended with an error")
                    }
                }
                return Ok(());
            }
            ProxyTarget::Absolute { host, port, .. } => {
                let framing = match head.body_framing() {
                    Ok(f) => f,
                    Err(e) => return respond(&mut client, e.status(), &[], &e.to_string()).await,
                };
                let t = Target::new(host, *port);
                let pin = pinned_source(&head);
                if pin.is_some() {
                    upstream = None; // a pinned request gets its own connection through that source
                }
                let mut origin = head.to_origin_form(&target);
                origin.headers.retain(|h| !h.name.eq_ignore_ascii_case(PIN_HEADER));
                // Transparent splitting: an eligible request asks for its first piece only; the
                // answer decides (see `split`).
                let chance = split::plan(ctx, &head, &target, &origin, framing, pin.is_some(), None);
                let req = Forward {
                    head: &head,
                    framing,
                    origin,
                    target: &t,
                    pin: pin.as_deref(),
                };
                // Boxed: forwarding (and splitting) has a large state that a connection waiting
                // for its request, or tunnelling, should not carry.
                if !Box::pin(forward(ctx, &mut client, peer, &mut buf, &mut upstream, req, chance)).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// A SOCKS5 tunnel to port 80 whose client speaks HTTP/1.x. `first` is its first request, a
/// `GET` in origin form, already read (`first_raw`: its bytes as received; `buf`: whatever
/// followed them); `up` is the tunnel's connection to `target`.
///
/// Each request [`split`] may split, or may have its end stolen (see `steal`), is forwarded
/// here as the HTTP proxy forwards it (the client's head unchanged but for a split's probe
/// `Range`, its `Host` naming the range requests' URL while every connection still goes to
/// `target`; the response's hop-by-hop headers replaced by ours). The first request that is
/// neither goes out byte for byte, and everything after it is relayed untouched, as any other
/// tunnel.
#[allow(clippy::too_many_arguments)]
pub async fn serve_tunnel(
    mut client: TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    target: Target,
    up: Metered,
    first: RequestHead,
    first_raw: Vec<u8>,
    mut buf: Vec<u8>,
) -> Result<(), SessionError> {
    let idle = ctx.node.config.idle_timeout;
    let mut upstream = Some(Upstream {
        target: target.clone(),
        conn: up,
    });
    let mut next = Some((first, first_raw));
    loop {
        let (head, raw) = match next.take() {
            Some(r) => r,
            None => {
                let deadline = tokio::time::Instant::now() + idle;
                match read_message(
                    &mut client,
                    &mut buf,
                    http::MAX_HEAD,
                    deadline,
                    at_line_ends(|b| {
                        RequestHead::decode(b, http::MAX_HEAD).map(|r| r.map(|(h, n)| ((h, b[..n].to_vec()), n)))
                    }),
                )
                .await
                {
                    Ok(r) => r,
                    Err(ReadError::Closed) | Err(ReadError::Timeout) if buf.is_empty() => return Ok(()),
                    Err(ReadError::Io(e)) => return Err(e.into()),
                    // Not a request head we understand: the server decides what it is.
                    Err(_) => (
                        RequestHead {
                            method: String::new(),
                            target: String::new(),
                            version_minor: 0,
                            headers: Vec::new(),
                        },
                        Vec::new(),
                    ),
                }
            }
        };
        let chance = tunnel_url(&head)
            .and_then(|url| split::plan(ctx, &head, &url, &head, BodyFraming::None, false, Some(&target)));
        let Some(chance) = chance else {
            // Everything from here on goes through untouched, at a request boundary on both
            // sides: the unsplit request itself first.
            let mut early = raw;
            early.append(&mut buf);
            let mut conn = match upstream.take() {
                Some(u) => u.conn,
                None => match balancer::connect(&ctx.node, &target, ctx.scorer.as_ref()).await {
                    Ok(c) => c,
                    Err(e) => {
                        logs::throttled!(info, logs::DIALS, client = %peer, %target, error = %e, "SOCKS5 reconnect failed");
                        return Ok(());
                    }
                },
            };
            match crate::pipe::relay(&mut client, &mut conn, early, idle).await {
                Ok(m) => {
                    tracing::trace!(client = %peer, %target, up = m.up, down = m.down, "SOCKS5 HTTP tunnel closed")
                }
                Err(e) => {
                    tracing::trace!(client = %peer, %target, error = %e, "SOCKS5 HTTP tunnel ended with an error")
                }
            }
            return Ok(());
        };
        let req = Forward {
            head: &head,
            framing: BodyFraming::None,
            origin: head.clone(),
            target: &target,
            pin: None,
        };
        if !forward(ctx, &mut client, peer, &mut buf, &mut upstream, req, Some(chance)).await? {
            return Ok(());
        }
    }
}

/// The URL of an origin-form request inside a tunnel, from its one `Host` header, when both
/// are plain enough to be sure of; `None` sends the request through untouched.
fn tunnel_url(head: &RequestHead) -> Option<ProxyTarget> {
    if !head.target.starts_with('/') || head.version_minor > 1 || head.body_framing() != Ok(BodyFraming::None) {
        return None;
    }
    let mut hosts = head.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host"));
    let host = std::str::from_utf8(&hosts.next()?.value).ok()?.trim();
    if hosts.next().is_some() || host.is_empty() || host.contains(['/', '?', '#', '@', '\\']) {
        return None;
    }
    let probe = RequestHead {
        method: head.method.clone(),
        target: format!("http://{host}{}", head.target),
        version_minor: head.version_minor,
        headers: Vec::new(),
    };
    match probe.proxy_target().ok()? {
        t @ ProxyTarget::Absolute { .. } if matches!(&t, ProxyTarget::Absolute { origin_form, .. } if *origin_form == head.target) => {
            Some(t)
        }
        _ => None,
    }
}

/// One request to forward and what it needs.
struct Forward<'a> {
    /// The request as the client sent it.
    head: &'a RequestHead,
    framing: BodyFraming,
    /// The request as it goes upstream.
    origin: RequestHead,
    /// Where it goes.
    target: &'a Target,
    pin: Option<&'a str>,
}

/// Forwards one request, and its response back, over `upstream` (reused when it goes to the
/// same target, else connected). With a split `chance`, the request asks for its first piece
/// only and the answer decides (see `split`); with a steal, the answer's end may come over an
/// idle uplink (see `steal`). `Ok(true)`: the client connection stays open for its next
/// request; `Ok(false)`: it was answered and closed (or cut off).
async fn forward(
    ctx: &Ctx,
    client: &mut TcpStream,
    peer: SocketAddr,
    buf: &mut Vec<u8>,
    upstream: &mut Option<Upstream>,
    req: Forward<'_>,
    chance: Option<split::Chance>,
) -> Result<bool, SessionError> {
    let (mut split_plan, steal) = match chance {
        Some(split::Chance::Split(plan)) => (Some(plan), None),
        Some(split::Chance::Steal(steal)) => (None, Some(steal)),
        None => (None, None),
    };
    let Forward {
        head,
        framing,
        mut origin,
        target: t,
        pin,
    } = req;
    let node = &ctx.node;
    if upstream.as_ref().is_some_and(|u| u.target != *t) {
        *upstream = None;
    }
    let plain_origin = split_plan.as_ref().map(|_| origin.clone());
    if split_plan.is_some() {
        origin.headers.push(split::probe_range());
    }
    let mut reused = upstream.is_some();
    let mut split_go = None;
    let (resp, mut rbuf, request_done) = loop {
        // A reused upstream may have been closed by the server meanwhile; a request
        // without a body is then safely sent again on a fresh connection, once.
        let (resp, rbuf, request_done) = loop {
            if upstream.is_none() {
                match balancer::connect_pinned(node, t, ctx.scorer.as_ref(), pin).await {
                    Ok(conn) => {
                        *upstream = Some(Upstream {
                            target: t.clone(),
                            conn,
                        })
                    }
                    Err(e) => return dial_failed(&mut *client, peer, t, e).await.map(|()| false),
                }
            }
            let up = &mut upstream.as_mut().expect("connected above").conn;
            match exchange(&mut *client, buf, up, &origin, framing, ctx.node.config.idle_timeout).await {
                Ok(r) => break r,
                Err(Exchange::UpstreamClosed) if reused && framing == BodyFraming::None => {
                    *upstream = None;
                    reused = false;
                }
                Err(Exchange::UpstreamClosed) => {
                    return respond(
                        &mut *client,
                        502,
                        &[],
                        "the server closed the connection without a response",
                    )
                    .await
                    .map(|()| false);
                }
                Err(Exchange::Upstream(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return respond(&mut *client, 504, &[], "the server did not answer in time")
                        .await
                        .map(|()| false);
                }
                Err(Exchange::Upstream(e)) => {
                    return respond(&mut *client, 502, &[], &format!("reading the response failed: {e}"))
                        .await
                        .map(|()| false)
                }
                Err(Exchange::BadResponse(e)) => {
                    return respond(&mut *client, 502, &[], &format!("bad response from the server: {e}"))
                        .await
                        .map(|()| false)
                }
                Err(Exchange::BadRequest(e)) => {
                    return respond(&mut *client, e.status(), &[], &format!("bad request body: {e}"))
                        .await
                        .map(|()| false)
                }
                Err(Exchange::Client(e)) => return Err(e.into()),
            }
        };
        let Some(plan) = split_plan.take() else {
            break (resp, rbuf, request_done);
        };
        let rframing = resp.body_framing(&head.method).unwrap_or(BodyFraming::UntilClose);
        match split::decide(ctx, &resp, rframing) {
            split::Decision::Split { first, size, validator } => {
                split_go = Some((plan, (first, size, validator)));
                break (resp, rbuf, request_done);
            }
            split::Decision::Whole => break (split::as_full(&resp), rbuf, request_done),
            split::Decision::Forward => break (resp, rbuf, request_done),
            split::Decision::Retry => {
                // Not split after all: drop that answer with its connection, and ask
                // again exactly as the client did.
                *upstream = None;
                reused = false;
                origin = plain_origin.clone().expect("kept with the plan");
            }
        }
    };
    let up = &mut upstream.as_mut().expect("connected above").conn;
    let rframing = match resp.body_framing(&head.method) {
        Ok(f) => f,
        Err(e) => {
            return respond(&mut *client, 502, &[], &format!("bad response from the server: {e}"))
                .await
                .map(|()| false)
        }
    };
    if let Some((plan, go)) = split_go {
        let client_keep = head.keep_alive() && request_done;
        if let Err(e) = split::run(ctx, plan, &mut *client, up, &mut rbuf, &resp, rframing, client_keep, go).await {
            tracing::info!(client = %peer, target = %t, error = %e, "split response failed");
            return Ok(false);
        }
        if !(resp.keep_alive() && rbuf.is_empty()) {
            *upstream = None;
        }
        if !client_keep {
            let _ = client.shutdown().await;
            return Ok(false);
        }
        return Ok(true);
    }
    // A server that answered before reading the whole request body leaves the client
    // connection mid-request: it must close after this response.
    let client_keep = head.keep_alive() && rframing != BodyFraming::UntilClose && request_done;
    write_head(&mut *client, &resp, Some(client_keep)).await?;
    let idle = ctx.node.config.idle_timeout;
    // A whole answer that ranges could fetch may have its end stolen by an idle uplink.
    let stealable = steal.as_ref().and_then(|steal| match rframing {
        BodyFraming::Length(size) if resp.status == 200 => {
            split::splittable(&ctx.node.config.split, &resp, size).map(|v| (steal, size, v))
        }
        _ => None,
    });
    let body = match stealable {
        Some((steal, size, validator)) => {
            crate::steal::forward_body(ctx, steal, up, &mut rbuf, &mut *client, size, &validator, idle).await
        }
        None => forward_body(up, &mut rbuf, &mut *client, rframing, idle)
            .await
            .map(|()| crate::steal::Ended::Whole),
    };
    let ended = match body {
        Ok(ended) => ended,
        Err(e) => {
            // Headers are gone already: all that is left is to cut the client off, so it
            // sees a truncated body rather than a wrong one.
            tracing::info!(client = %peer, target = %t, error = %e, "response body failed");
            return Ok(false);
        }
    };
    let upstream_keep = resp.keep_alive()
        && rframing != BodyFraming::UntilClose
        && rbuf.is_empty()
        && ended == crate::steal::Ended::Whole;
    tracing::trace!(client = %peer, target = %t, method = %head.method, status = resp.status, source = %up.source().name, "HTTP request done");
    if !upstream_keep {
        *upstream = None;
    }
    if !client_keep {
        let _ = client.shutdown().await;
        return Ok(false);
    }
    Ok(true)
}

enum Exchange {
    UpstreamClosed,
    Upstream(std::io::Error),
    BadResponse(http::HttpError),
    BadRequest(http::HttpError),
    Client(std::io::Error),
}

/// Sends the request (head and body) and reads the final response head, passing 1xx interim
/// responses on to the client. Returns the head, bytes already read after it, and whether the
/// whole request body was forwarded (a server may answer early, e.g. 413, and stop reading).
///
/// `Expect: 100-continue` is answered by booster itself and not forwarded, so the client sends
/// its body at once instead of waiting for a `100` the server might never send.
async fn exchange(
    client: &mut TcpStream,
    cbuf: &mut Vec<u8>,
    up: &mut Metered,
    origin: &RequestHead,
    framing: BodyFraming,
    idle: Duration,
) -> Result<(ResponseHead, Vec<u8>, bool), Exchange> {
    let mut origin = origin.clone();
    let expects = origin
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    if expects {
        origin.headers.retain(|h| !h.name.eq_ignore_ascii_case("expect"));
    }
    let mut out = Vec::with_capacity(512);
    origin.encode(&mut out);
    up.write_all(&out).await.map_err(|_| Exchange::UpstreamClosed)?;
    let mut request_done = true;
    if framing != BodyFraming::None {
        if expects && cbuf.is_empty() {
            client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(Exchange::Client)?;
        }
        match forward_body(client, cbuf, up, framing, idle).await {
            Ok(()) => {}
            Err(BodyError::Read(e)) => return Err(Exchange::Client(e)),
            Err(BodyError::Bad(e)) => return Err(Exchange::BadRequest(e)),
            // The server stopped reading: it may have answered already; read on.
            Err(BodyError::Write(_)) => request_done = false,
        }
    }
    let mut rbuf = Vec::with_capacity(4096);
    loop {
        let deadline = tokio::time::Instant::now() + idle;
        let resp = match read_message(
            up,
            &mut rbuf,
            http::MAX_HEAD,
            deadline,
            at_line_ends(|b| ResponseHead::decode(b, http::MAX_HEAD)),
        )
        .await
        {
            Ok(r) => r,
            Err(ReadError::Closed) => return Err(Exchange::UpstreamClosed),
            Err(ReadError::Malformed(e)) => return Err(Exchange::BadResponse(e)),
            Err(ReadError::TooLarge) => return Err(Exchange::BadResponse(http::HttpError::TooLarge)),
            Err(ReadError::Timeout) => return Err(Exchange::Upstream(std::io::ErrorKind::TimedOut.into())),
            Err(ReadError::Io(e)) => return Err(Exchange::Upstream(e)),
        };
        if (100..200).contains(&resp.status) {
            // Interim responses: our own 100 already went out when the client expected one.
            if !(expects && resp.status == 100) {
                write_head(client, &resp, None).await.map_err(Exchange::Client)?;
            }
            continue;
        }
        return Ok((resp, rbuf, request_done));
    }
}

/// Why forwarding a body stopped.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Reading the source failed or ended early.
    Read(std::io::Error),
    /// Writing to the destination failed.
    Write(std::io::Error),
    /// The body's framing is malformed.
    Bad(http::HttpError),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Read(e) => write!(f, "reading: {e}"),
            BodyError::Write(e) => write!(f, "writing: {e}"),
            BodyError::Bad(e) => write!(f, "malformed body: {e}"),
        }
    }
}

/// Copies one body from `src` to `dst`: first what `pending` already holds, then reads, until
/// the tracker says the body ended. Bytes past the end stay in `pending`.
pub(crate) async fn forward_body<R, W>(
    src: &mut R,
    pending: &mut Vec<u8>,
    dst: &mut W,
    framing: BodyFraming,
    idle: Duration,
) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let tracker = &mut BodyTracker::new(framing);
    let mut chunk = Vec::new();
    loop {
        if !pending.is_empty() {
            let n = tracker.feed(pending).map_err(BodyError::Bad)?;
            dst.write_all(&pending[..n]).await.map_err(BodyError::Write)?;
            pending.drain(..n);
        }
        if tracker.is_done() {
            return dst.flush().await.map_err(BodyError::Write);
        }
        if chunk.is_empty() {
            chunk = vec![0; BODY_CHUNK];
        }
        let n = tokio::time::timeout(idle, src.read(&mut chunk))
            .await
            .map_err(|_| BodyError::Read(std::io::ErrorKind::TimedOut.into()))?
            .map_err(BodyError::Read)?;
        if n == 0 {
            if framing == BodyFraming::UntilClose {
                return dst.flush().await.map_err(BodyError::Write);
            }
            return Err(BodyError::Read(std::io::ErrorKind::UnexpectedEof.into()));
        }
        // Fast path: feed straight from the read buffer.
        let used = tracker.feed(&chunk[..n]).map_err(BodyError::Bad)?;
        dst.write_all(&chunk[..used]).await.map_err(BodyError::Write)?;
        pending.extend_from_slice(&chunk[used..n]);
    }
}

/// Writes a response head with hop-by-hop headers replaced by our own `Connection` header.
pub(crate) async fn write_head<W: AsyncWrite + Unpin>(
    dst: &mut W,
    resp: &ResponseHead,
    keep_alive: Option<bool>,
) -> std::io::Result<()> {
    let mut head = resp.clone();
    // Hop-by-hop: the fixed list, plus every header the response's Connection header names.
    let named: Vec<String> = resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| {
            String::from_utf8_lossy(&h.value)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    head.headers.retain(|h| {
        let name = h.name.to_ascii_lowercase();
        !HOP_BY_HOP.contains(&name.as_str()) && !named.contains(&name)
    });
    if let Some(keep) = keep_alive {
        head.headers.push(Header {
            name: "Connection".into(),
            value: if keep {
                b"keep-alive".to_vec()
            } else {
                b"close".to_vec()
            },
        });
    }
    let mut out = Vec::with_capacity(512);
    head.encode(&mut out);
    dst.write_all(&out).await
}

fn authorized(head: &RequestHead, user: &str, pass: &str) -> bool {
    let Some(value) = head.header("proxy-authorization") else {
        return false;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    secret_eq(&decoded[..colon], user.as_bytes()) & secret_eq(&decoded[colon + 1..], pass.as_bytes())
}

async fn dial_failed(
    client: &mut TcpStream,
    peer: SocketAddr,
    target: &Target,
    e: DialError,
) -> Result<(), SessionError> {
    logs::throttled!(info, logs::DIALS, client = %peer, %target, error = %e, "HTTP proxy connect failed");
    respond(
        client,
        e.http_status(),
        &[],
        &format!("booster could not reach {target}: {e}"),
    )
    .await
}

/// Sends a small plain-text response and closes the connection.
async fn respond(
    client: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    text: &str,
) -> Result<(), SessionError> {
    let body = format!("{text}\n");
    let mut out = format!("HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n", http::reason_phrase(status), body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    client.write_all(out.as_bytes()).await?;
    let _ = client.shutdown().await;
    Ok(())
}

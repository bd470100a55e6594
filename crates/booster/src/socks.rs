//! A SOCKS5 session (RFC 1928): method negotiation, username/password auth (RFC 1929) when
//! configured, then CONNECT or UDP ASSOCIATE. BIND is answered "command not supported".
//!
//! Every failure after the request is read gets exactly one reply with the precise code.

use crate::{
    balancer,
    dial::Metered,
    http_proxy, logs,
    proxy::{read_message, secret_eq, Ctx, ReadError},
    target::Target,
    udp,
};
use proto::socks5::{self, Address, Command, Greeting, Reply, Request, UserPass};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Greeting plus request fit in far less; anything longer is not SOCKS5.
const MAX_HANDSHAKE: usize = 1024;
/// A CONNECT to this port whose first request is a plain HTTP `GET` may be split (see
/// [`http_proxy::serve_tunnel`]).
const HTTP_PORT: u16 = 80;
/// How long a CONNECT to [`HTTP_PORT`] waits for the client's first byte before it is relayed
/// as it is (a protocol where the server speaks first).
const FIRST_BYTE_WAIT: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("authentication failed for user {0:?}")]
    AuthFailed(String),
    #[error("client offered no acceptable auth method")]
    NoMethod,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn handshake_err<E: std::fmt::Display>(e: ReadError<E>) -> SessionError {
    SessionError::Handshake(e.to_string())
}

/// Serves one SOCKS5 client; `early` holds what was read of it already.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, ctx: &Ctx, early: Vec<u8>) -> Result<(), SessionError> {
    let node = &ctx.node;
    let deadline = tokio::time::Instant::now() + node.config.handshake_timeout;
    let mut buf = early;
    let mut out = Vec::with_capacity(32);

    let greeting = read_message(&mut stream, &mut buf, MAX_HANDSHAKE, deadline, Greeting::decode)
        .await
        .map_err(handshake_err)?;
    let wanted = if node.config.auth.is_some() {
        socks5::METHOD_USER_PASS
    } else {
        socks5::METHOD_NO_AUTH
    };
    let method = if greeting.methods.contains(&wanted) {
        wanted
    } else {
        socks5::METHOD_NO_ACCEPTABLE
    };
    socks5::encode_method_selection(method, &mut out);
    stream.write_all(&out).await?;
    if method == socks5::METHOD_NO_ACCEPTABLE {
        return Err(SessionError::NoMethod);
    }
    if let Some(creds) = &node.config.auth {
        let up = read_message(&mut stream, &mut buf, MAX_HANDSHAKE, deadline, UserPass::decode)
            .await
            .map_err(handshake_err)?;
        let ok = secret_eq(&up.username, creds.username.as_bytes())
            & secret_eq(&up.password, creds.password.expose().as_bytes());
        out.clear();
        socks5::encode_auth_status(ok, &mut out);
        stream.write_all(&out).await?;
        if !ok {
            return Err(SessionError::AuthFailed(
                String::from_utf8_lossy(&up.username).into_owned(),
            ));
        }
    }

    let unspecified = Address::Ip(SocketAddr::from(([0, 0, 0, 0], 0)));
    let request = match read_message(&mut stream, &mut buf, MAX_HANDSHAKE, deadline, Request::decode).await {
        Ok(r) => r,
        Err(ReadError::Malformed(e)) => {
            reply(&mut stream, e.reply(), &unspecified).await?;
            return Err(SessionError::Handshake(e.to_string()));
        }
        Err(e) => return Err(handshake_err(e)),
    };

    match request.command {
        Command::Bind => {
            reply(&mut stream, Reply::CommandNotSupported, &unspecified).await?;
            logs::throttled!(info, logs::CLIENTS, client = %peer, "SOCKS5 BIND is not supported");
            Ok(())
        }
        Command::UdpAssociate => udp::associate(stream, peer, request.addr, ctx).await,
        Command::Connect => {
            let target = Target::from(&request.addr);
            let connected = tokio::select! {
                _ = ctx.kill.cancelled() => return Ok(()),
                r = balancer::connect(node, &target, ctx.scorer.as_ref()) => r,
            };
            let upstream = match connected {
                Ok(u) => u,
                Err(e) => {
                    reply(&mut stream, e.socks_reply(), &unspecified).await?;
                    logs::throttled!(info, logs::DIALS, client = %peer, %target, error = %e, "CONNECT failed");
                    return Ok(());
                }
            };
            reply(&mut stream, Reply::Succeeded, &Address::Ip(upstream.local_addr)).await?;
            // Bytes the client sent right after its request (optimistic data) go first.
            carry(stream, peer, ctx, target, upstream, std::mem::take(&mut buf)).await
        }
    }
}

/// Moves a connected stream's bytes both ways until it ends. `early` is what the client sent
/// already. A tunnel to port 80 whose first request is a plain `GET` goes to the HTTP proxy's
/// code instead, so large downloads can be split. Used by SOCKS5 CONNECT and the gateway.
pub async fn carry(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    target: Target,
    mut upstream: Metered,
    mut early: Vec<u8>,
) -> Result<(), SessionError> {
    let node = &ctx.node;
    let source = upstream.source().name.clone();
    let started = std::time::Instant::now();
    if target.port == HTTP_PORT && node.config.split.enabled {
        let sniffed = tokio::select! {
            _ = ctx.kill.cancelled() => return Ok(()),
            r = sniff_get(&mut stream, &mut upstream, &mut early, node.config.handshake_timeout) => r?,
        };
        if let Some((head, used)) = sniffed {
            let rest = early.split_off(used);
            // Boxed: its state is large, and only tunnels that turned out to be HTTP need it,
            // so every other connection's task stays small.
            let serve = Box::pin(http_proxy::serve_tunnel(
                stream, peer, ctx, target, upstream, head, early, rest,
            ));
            return tokio::select! {
                _ = ctx.kill.cancelled() => Ok(()),
                r = serve => r,
            };
        }
    }
    let moved = tokio::select! {
        _ = ctx.kill.cancelled() => return Ok(()),
        r = crate::pipe::relay(&mut stream, &mut upstream, early, node.config.idle_timeout) => r,
    };
    match moved {
        Ok(m) => {
            tracing::trace!(client = %peer, %target, %source, up = m.up, down = m.down, secs = started.elapsed().as_secs_f64(), "SOCKS5 connection closed")
        }
        Err(e) => {
            tracing::trace!(client = %peer, %target, %source, error = %e, "SOCKS5 connection ended with an error")
        }
    }
    Ok(())
}

pub async fn reply(stream: &mut TcpStream, code: Reply, bound: &Address) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(32);
    socks5::encode_reply(code, bound, &mut out);
    stream.write_all(&out).await
}

/// Reads the first request of a tunnel to port 80 when it is a plain HTTP `GET` in origin form:
/// `Some((head, its length))`, with `buf` holding it and whatever followed. `None` as soon as it
/// cannot be one (other bytes, nothing within [`FIRST_BYTE_WAIT`], the server speaking first, no
/// complete head within `wait`): `buf` then holds the client's bytes read so far, still to be
/// sent, and whatever the server sent already went to the client.
async fn sniff_get(
    client: &mut TcpStream,
    up: &mut Metered,
    buf: &mut Vec<u8>,
    wait: Duration,
) -> std::io::Result<Option<(proto::http::RequestHead, usize)>> {
    use proto::http::{RequestHead, MAX_HEAD};
    const GET: &[u8] = b"GET /";
    let start = tokio::time::Instant::now();
    // On the heap, and only while sniffing: two buffers held across awaits would otherwise
    // make every connection's task 8 KB larger for its whole life.
    let mut from_server = vec![0u8; 4096];
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = GET.len().min(buf.len());
        if buf[..n] != GET[..n] {
            return Ok(None);
        }
        if buf.len() >= GET.len() {
            match RequestHead::decode(buf, MAX_HEAD) {
                Ok(Some((head, used))) => return Ok(Some((head, used))),
                Ok(None) if buf.len() < MAX_HEAD => {}
                _ => return Ok(None),
            }
        }
        let deadline = start + if buf.is_empty() { FIRST_BYTE_WAIT } else { wait };
        tokio::select! {
            r = client.read(&mut chunk) => {
                let n = r?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            r = up.read(&mut from_server) => {
                let n = r?;
                client.write_all(&from_server[..n]).await?;
                return Ok(None);
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
        }
    }
}

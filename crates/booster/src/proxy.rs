//! The proxy listener: one port for SOCKS5 and HTTP, told apart by the first byte. Bounded by
//! `max_connections`; every connection task is owned by a [`TaskTracker`] and stops on the
//! node's cancellation token.

use crate::{balancer::Scorer, http_proxy, logs, socks, state::Node};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// What every session needs: the node, the scoring policy and the token that ends it.
#[derive(Clone)]
pub struct Ctx {
    pub node: Arc<Node>,
    pub scorer: Arc<dyn Scorer>,
    /// Cancelled when open connections must stop (after the drain timeout).
    pub kill: CancellationToken,
}

/// Accepts until `stop` is cancelled. Connection tasks go to `tracker`.
pub async fn serve(listener: TcpListener, ctx: Ctx, stop: CancellationToken, tracker: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                // At the limit: refuse this one cleanly (close) and keep serving the rest.
                let Some(admitted) = ctx.node.admit_client() else {
                    continue;
                };
                let ctx = ctx.clone();
                tracker.spawn(async move {
                    let conn = ctx.node.conns.register(peer);
                    conn.scope(handle(stream, peer, &ctx)).await;
                    drop((conn, admitted));
                });
            }
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning or dying.
                logs::throttled!(warn, logs::ACCEPTS, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, ctx: &Ctx) {
    use tokio::io::AsyncReadExt;
    let _ = stream.set_nodelay(true);
    // The first bytes (a SOCKS5 greeting is usually all there) tell the protocol, and go on
    // to its session as what was read of it already: one read, no peek before it.
    let mut early = Vec::with_capacity(FIRST_READ);
    let read = tokio::select! {
        _ = ctx.kill.cancelled() => return,
        r = tokio::time::timeout(ctx.node.config.handshake_timeout, stream.read_buf(&mut early)) => r,
    };
    match read {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_)) | Ok(Err(_)) => return,
        Err(_) => {
            tracing::debug!(client = %peer, "handshake timed out before the first byte");
            return;
        }
    }
    // Every session ends when the node kills open connections (after the drain timeout), also
    // an idle HTTP CONNECT tunnel or a keep-alive connection waiting for its next request.
    let session = async {
        match early[0] {
            proto::socks5::VERSION => socks::serve(stream, peer, ctx, early).await,
            b'A'..=b'Z' => http_proxy::serve(stream, peer, ctx, early).await,
            0x04 => {
                // SOCKS4: answer "request rejected" in its own format so the client says why.
                use tokio::io::AsyncWriteExt;
                let mut s = stream;
                let _ = s.write_all(&[0x00, 0x5b, 0, 0, 0, 0, 0, 0]).await;
                logs::throttled!(info, logs::CLIENTS, client = %peer, "SOCKS4 is not supported; use SOCKS5");
                Ok(())
            }
            other => {
                logs::throttled!(info, logs::CLIENTS, client = %peer, first_byte = other, "neither SOCKS5 nor HTTP; closing");
                Ok(())
            }
        }
    };
    let result = tokio::select! {
        _ = ctx.kill.cancelled() => Ok(()),
        r = session => r,
    };
    if let Err(e) = result {
        logs::throttled!(info, logs::CLIENTS, client = %peer, error = %e, "session failed");
    }
}

/// Bytes the first read of a client connection asks for: a whole SOCKS5 greeting, and the
/// start of an HTTP request line, without holding more for a client that sends one byte.
const FIRST_READ: usize = 64;
/// Most bytes one read of a handshake asks for; a head needing more takes several reads.
const READ_CHUNK: usize = 4096;

/// Reads from `stream` into `buf` until `decode` yields a message, within `deadline`.
/// `max` bounds `buf` so a client cannot make a handshake use unbounded memory.
pub async fn read_message<T, E>(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    max: usize,
    deadline: tokio::time::Instant,
    decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
) -> Result<T, ReadError<E>> {
    use tokio::io::AsyncReadExt;
    loop {
        match decode(buf) {
            Ok(Some((msg, used))) => {
                buf.drain(..used);
                return Ok(msg);
            }
            Ok(None) => {}
            Err(e) => return Err(ReadError::Malformed(e)),
        }
        if buf.len() >= max {
            return Err(ReadError::TooLarge);
        }
        // Read into spare capacity, a chunk at a time: a slow client's handshake holds what it
        // sent, not `max` zeroed bytes.
        if buf.capacity() == buf.len() {
            buf.reserve((max - buf.len()).min(READ_CHUNK));
        }
        let room = (max - buf.len()).min(buf.capacity() - buf.len());
        let mut limited = bytes::BufMut::limit(&mut *buf, room);
        let n = match tokio::time::timeout_at(deadline, stream.read_buf(&mut limited)).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Err(e)) => return Err(ReadError::Io(e)),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// Wraps the decoder of a line-based head (HTTP) so it runs again only once a line has ended
/// since its last run: a head dribbled one byte per segment is then parsed once per line (a
/// head has at most [`proto::http::MAX_HEADERS`] + 2 lines before it is refused), not once per
/// byte, which for a 16 KiB head was 16,000 parses of up to 16 KiB each. A malformed line is
/// still found, at its end.
pub fn at_line_ends<T, E>(decode: impl Fn(&[u8]) -> Result<Option<T>, E>) -> impl Fn(&[u8]) -> Result<Option<T>, E> {
    let parsed_up_to = std::cell::Cell::new(None::<usize>);
    move |buf: &[u8]| {
        if let Some(from) = parsed_up_to.replace(Some(buf.len())) {
            if !buf[from.min(buf.len())..].contains(&b'\n') {
                return Ok(None);
            }
        }
        decode(buf)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    #[error("malformed: {0}")]
    Malformed(E),
    #[error("message too large")]
    TooLarge,
    #[error("timed out")]
    Timeout,
    #[error("closed by the client")]
    Closed,
    #[error("{0}")]
    Io(std::io::Error),
}

/// Compares secrets in time independent of where they differ.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    /// Hands out its bytes one per read, as a client writing one byte per segment does.
    struct Dribble(Vec<u8>, usize);

    impl tokio::io::AsyncRead for Dribble {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if let Some(&b) = self.0.get(self.1) {
                buf.put_slice(&[b]);
                self.1 += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_dribbled_head_is_parsed_once_per_line_not_once_per_byte() {
        let mut head = b"GET http://example.com/ HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            head.extend_from_slice(format!("X-Header-{i}: {}\r\n", "v".repeat(200)).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let lines = head.iter().filter(|b| **b == b'\n').count();
        let calls = std::cell::Cell::new(0usize);
        let mut buf = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let got = read_message(
            &mut Dribble(head.clone(), 0),
            &mut buf,
            proto::http::MAX_HEAD,
            deadline,
            at_line_ends(|b| {
                calls.set(calls.get() + 1);
                proto::http::RequestHead::decode(b, proto::http::MAX_HEAD)
            }),
        )
        .await
        .unwrap();
        assert_eq!(got.headers.len(), 40);
        assert!(
            calls.get() <= lines + 1,
            "{} parses for {} bytes in {lines} lines",
            calls.get(),
            head.len()
        );
        // A malformed line is still refused (at its end), and a head sent whole is parsed once.
        let mut buf = Vec::new();
        let bad = read_message(
            &mut Dribble(b"GET http://x/ HTTP/1.1\r\nno colon here\r\nX: y\r\n".to_vec(), 0),
            &mut buf,
            proto::http::MAX_HEAD,
            deadline,
            at_line_ends(|b| proto::http::RequestHead::decode(b, proto::http::MAX_HEAD)),
        )
        .await;
        assert!(matches!(bad, Err(ReadError::Malformed(_))), "{bad:?}");
        calls.set(0);
        let mut buf = head.clone();
        let whole = read_message(
            &mut Dribble(Vec::new(), 0),
            &mut buf,
            proto::http::MAX_HEAD,
            deadline,
            at_line_ends(|b| {
                calls.set(calls.get() + 1);
                proto::http::RequestHead::decode(b, proto::http::MAX_HEAD)
            }),
        )
        .await;
        assert!(whole.is_ok());
        assert_eq!(calls.get(), 1);
    }
}

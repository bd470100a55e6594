//! The data path: copies bytes both ways between a client and an upstream connection until both
//! directions are done, propagating half-close, with an idle timeout.
//!
//! Buffers start small and grow only when a read fills them, so ten thousand idle connections
//! cost little memory while a bulk transfer still moves 64 KiB per system call.

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// First buffer size per direction. Idle connections never grow past it.
pub const INITIAL_BUF: usize = 4 * 1024;
/// Largest buffer per direction: big enough for loopback-speed bulk transfers.
pub const MAX_BUF: usize = 64 * 1024;

#[derive(Default)]
struct Half {
    buf: Vec<u8>,
    pos: usize,
    cap: usize,
    read_done: bool,
    done: bool,
    need_flush: bool,
    grow: bool,
    amt: u64,
}

impl Half {
    fn with_pending(pending: Vec<u8>) -> Half {
        let cap = pending.len();
        Half { buf: pending, cap, ..Default::default() }
    }

    fn poll_copy<R, W>(&mut self, cx: &mut Context<'_>, mut r: Pin<&mut R>, mut w: Pin<&mut W>) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            // Write out what is buffered.
            while self.pos < self.cap {
                let n = ready!(w.as_mut().poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.amt += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                ready!(w.as_mut().poll_flush(cx))?;
                ready!(w.as_mut().poll_shutdown(cx))?;
                self.done = true;
                self.buf = Vec::new();
                return Poll::Ready(Ok(()));
            }
            // Buffer is empty: grow it if the last read filled it, then read more.
            self.pos = 0;
            self.cap = 0;
            if self.buf.len() < INITIAL_BUF || self.grow {
                let size = (self.buf.len() * 2).clamp(INITIAL_BUF, MAX_BUF);
                self.buf = vec![0; size];
                self.grow = false;
            }
            let mut rb = ReadBuf::new(&mut self.buf);
            match r.as_mut().poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.read_done = true;
                    } else {
                        self.cap = n;
                        self.grow = n == self.buf.len() && n < MAX_BUF;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if self.need_flush {
                        ready!(w.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Bytes moved by [`pipe`]: client → upstream, and upstream → client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub up: u64,
    pub down: u64,
}

/// Copies both ways until both directions finished. `to_upstream` is data the client already
/// sent (read during the handshake) that must go first. Fails after `idle` without any byte in
/// either direction.
pub async fn pipe<A, B>(client: &mut A, upstream: &mut B, to_upstream: Vec<u8>, idle: Duration) -> io::Result<Moved>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Half::with_pending(to_upstream);
    let mut down = Half::default();
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    let mut seen = 0u64;
    poll_fn(|cx| {
        let a = up.poll_copy(cx, Pin::new(&mut *client), Pin::new(&mut *upstream));
        if let Poll::Ready(Err(e)) = a {
            return Poll::Ready(Err(e));
        }
        let b = down.poll_copy(cx, Pin::new(&mut *upstream), Pin::new(&mut *client));
        if let Poll::Ready(Err(e)) = b {
            return Poll::Ready(Err(e));
        }
        if up.done && down.done {
            return Poll::Ready(Ok(Moved { up: up.amt, down: down.amt }));
        }
        let total = up.amt + down.amt;
        if total != seen {
            seen = total;
            sleep.as_mut().reset(tokio::time::Instant::now() + idle);
        }
        if std::future::Future::poll(sleep.as_mut(), cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move { pipe(&mut proxy_a, &mut proxy_b, b"early".to_vec(), Duration::from_secs(5)).await });
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&p2).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..5], b"early");
        assert_eq!(&got[5..], &payload[..]);
        server.write_all(b"reply after half-close").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply after half-close");
        let moved = task.await.unwrap().unwrap();
        assert_eq!(moved, Moved { up: 300_005, down: 22 });
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_time_out() {
        let (_client, mut a) = tokio::io::duplex(64);
        let (mut b, _server) = tokio::io::duplex(64);
        let err = pipe(&mut a, &mut b, Vec::new(), Duration::from_secs(30)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}

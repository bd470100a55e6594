//! The data path: copies bytes both ways between a client and an upstream connection until both
//! directions are done, propagating half-close, with an idle timeout.
//!
//! Between two TCP sockets ([`relay`]), bytes never enter userspace: `splice(2)` moves them
//! socket → pipe → socket inside the kernel, through a pipe held only while bytes move. Other
//! streams (emulated links) use [`pipe`], whose buffers start small and grow only when a read
//! fills them. Either way ten thousand idle connections cost little memory.

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
        Half {
            buf: pending,
            cap,
            ..Default::default()
        }
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
            return Poll::Ready(Ok(Moved {
                up: up.amt,
                down: down.amt,
            }));
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

/// Relays between a client socket and an upstream connection, splicing when the upstream is
/// a plain TCP socket, and counting bytes against the upstream's source.
pub async fn relay(
    client: &mut tokio::net::TcpStream,
    upstream: &mut crate::dial::Metered,
    early: Vec<u8>,
    idle: Duration,
) -> io::Result<Moved> {
    use tokio::io::AsyncWriteExt;
    if upstream.tcp().is_none() {
        return pipe(client, upstream, early, idle).await;
    }
    if !early.is_empty() {
        upstream.write_all(&early).await?;
    }
    let upstream = &*upstream;
    let up_sock = upstream.tcp().expect("checked above");
    let moved_up = std::sync::atomic::AtomicU64::new(early.len() as u64);
    let moved_down = std::sync::atomic::AtomicU64::new(0);
    let both = async {
        tokio::try_join!(
            splice_half(client, up_sock, |n| upstream.count_tx(n), &moved_up),
            splice_half(up_sock, client, |n| upstream.count_rx(n), &moved_down)
        )
    };
    let watchdog = async {
        let mut last = 0;
        loop {
            tokio::time::sleep(idle).await;
            let now = moved_up.load(std::sync::atomic::Ordering::Relaxed)
                + moved_down.load(std::sync::atomic::Ordering::Relaxed);
            if now == last {
                return io::Error::new(io::ErrorKind::TimedOut, "idle timeout");
            }
            last = now;
        }
    };
    tokio::select! {
        r = both => r.map(|_| ()),
        e = watchdog => Err(e),
    }?;
    Ok(Moved {
        up: moved_up.load(std::sync::atomic::Ordering::Relaxed),
        down: moved_down.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// Most bytes moved per splice call.
const SPLICE_CHUNK: usize = 256 * 1024;

/// One direction: `src` → pipe → `dst` until `src` ends, then half-closes `dst`. `count` is told
/// every byte written (the source's and the client connection's accounting).
///
/// The pipe is held only while bytes are moving: made when `src` has data, dropped (empty) as
/// soon as `src` has none left. An idle or slow connection so holds its two sockets and no
/// pipe, and the node's open-file budget is two descriptors per connection. When no pipe can be
/// made (out of descriptors), the burst goes through userspace instead of failing.
async fn splice_half(
    src: &tokio::net::TcpStream,
    dst: &tokio::net::TcpStream,
    count: impl Fn(u64),
    moved: &std::sync::atomic::AtomicU64,
) -> io::Result<()> {
    use std::{os::fd::AsRawFd, sync::atomic::Ordering::Relaxed};
    use tokio::io::Interest;
    let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut pipe: Option<crate::sys::Pipe> = None;
    loop {
        // The pipe is empty here, so "would block" can only mean the source socket.
        src.readable().await?;
        let p = match &pipe {
            Some(p) => p,
            None => match crate::sys::pipe() {
                Ok(p) => pipe.insert(p),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if copy_burst(src, dst, &count, moved).await? == 0 {
                        return half_close(dst);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let (pr, pw) = (p.read.as_raw_fd(), p.write.as_raw_fd());
        let n = match src.try_io(Interest::READABLE, || crate::sys::splice(sfd, pw, SPLICE_CHUNK)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing more for now: give the (empty) pipe back before waiting.
                pipe = None;
                continue;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return half_close(dst);
        }
        let mut left = n;
        // The pipe holds data here, so "would block" can only mean the destination socket.
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || crate::sys::splice(pr, dfd, left)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => {
                    left -= w;
                    count(w as u64);
                    moved.fetch_add(w as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sends FIN on `dst` once its source ended (already closed is fine).
fn half_close(dst: &tokio::net::TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

/// Bytes per userspace burst when no pipe can be made.
const FALLBACK_CHUNK: usize = 16 * 1024;

/// Moves one read's worth from `src` to `dst` through a buffer; returns how much (0 at EOF).
async fn copy_burst(
    src: &tokio::net::TcpStream,
    dst: &tokio::net::TcpStream,
    count: &impl Fn(u64),
    moved: &std::sync::atomic::AtomicU64,
) -> io::Result<usize> {
    let mut buf = vec![0u8; FALLBACK_CHUNK];
    let n = loop {
        src.readable().await?;
        match src.try_read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    let mut at = 0;
    while at < n {
        dst.writable().await?;
        match dst.try_write(&buf[at..n]) {
            Ok(w) => {
                at += w;
                count(w as u64);
                moved.fetch_add(w as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_with_half_close() {
        let (mut client, mut proxy_a) = tokio::io::duplex(1024);
        let (mut proxy_b, mut server) = tokio::io::duplex(1024);
        let task =
            tokio::spawn(
                async move { pipe(&mut proxy_a, &mut proxy_b, b"early".to_vec(), Duration::from_secs(5)).await },
            );
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
        let err = pipe(&mut a, &mut b, Vec::new(), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}

//! The API's listener: at most [`MAX_CONNECTIONS`] open at once, each closed after [`IDLE`]
//! without a byte either way.
//!
//! Why: `axum::serve` accepts without a bound and sets no header timeout (hyper has none
//! without a timer), so clients that connect and say nothing would each hold a descriptor
//! forever. They share the node's open-file budget with the proxy, and an API off loopback
//! (with its token) is reachable from the LAN before any token is checked.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// API connections open at once: the dashboard's event streams (at most
/// [`super::events::MAX_STREAMS`]) and a few requests beside them. Over it, a new connection is
/// closed at once.
pub const MAX_CONNECTIONS: usize = super::events::MAX_STREAMS + 32;
/// Refusals at [`MAX_CONNECTIONS`], one log line a minute.
static API_FULL: crate::logs::Throttle = crate::logs::Throttle::new(1);
/// A connection with no byte in either direction for this long is closed. Event streams send
/// every second, and a browser reconnects a closed keep-alive connection by itself.
pub const IDLE: Duration = Duration::from_secs(60);

/// A [`TcpListener`] with the bound and the idle timeout, for `axum::serve`.
pub struct Limited {
    inner: TcpListener,
    open: Arc<Semaphore>,
    refused: AtomicU64,
}

impl Limited {
    pub fn new(inner: TcpListener) -> Limited {
        Limited {
            inner,
            open: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            refused: AtomicU64::new(0),
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            match self.open.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = io.set_nodelay(true);
                    return (Conn::new(io, permit), addr);
                }
                Err(_) => {
                    let refused = self.refused.fetch_add(1, Relaxed) + 1;
                    crate::logs::throttled!(
                        warn,
                        API_FULL,
                        max = MAX_CONNECTIONS,
                        refused,
                        "API connection limit reached; closing new ones"
                    );
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One API connection: its slot, and the idle timer that every byte moved resets.
pub struct Conn {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Pin<Box<Sleep>>,
}

impl Conn {
    fn new(io: TcpStream, slot: OwnedSemaphorePermit) -> Conn {
        Conn {
            io,
            _slot: slot,
            idle: Box::pin(tokio::time::sleep(IDLE)),
        }
    }

    fn moved(&mut self) {
        self.idle.as_mut().reset(Instant::now() + IDLE);
    }

    /// The outcome of a write: bytes written count as activity, `Pending` as in [`Conn::pending`].
    fn wrote(&mut self, r: Poll<io::Result<usize>>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.pending(cx),
        }
    }

    /// `Pending` from the socket becomes an error once the connection has been idle too long.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "API connection idle"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.pending(cx),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, data);
        this.wrote(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

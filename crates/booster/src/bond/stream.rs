//! [`BondStream`]: a bonded stream as an ordinary `AsyncRead + AsyncWrite` byte stream, so
//! the proxy carries it like any other upstream connection.

use super::link::{Shared, StreamSlot};
use std::{
    io,
    pin::Pin,
    sync::{atomic::Ordering::Relaxed, Arc},
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One stream of a bond. Dropping it before both directions ended resets the stream.
pub struct BondStream {
    shared: Arc<Shared>,
    id: u32,
    slot: Arc<StreamSlot>,
    /// Our direction is finished (shutdown called).
    finished: bool,
    /// The far end's direction ended and every byte was read.
    eof: bool,
    scratch: Vec<u8>,
}

impl BondStream {
    pub fn new(shared: Arc<Shared>, id: u32, slot: Arc<StreamSlot>) -> BondStream {
        BondStream {
            shared,
            id,
            slot,
            finished: false,
            eof: false,
            scratch: Vec::new(),
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    fn reset_error(&self) -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, "bonded stream reset")
    }
}

impl AsyncRead for BondStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.eof {
            return Poll::Ready(Ok(()));
        }
        // Register first, then look: a wake-up between the two is never lost.
        this.slot.read.register(cx.waker());
        if this.slot.reset.load(Relaxed) {
            return Poll::Ready(Err(this.reset_error()));
        }
        this.scratch.clear();
        let (id, max) = (this.id, buf.remaining());
        let scratch = &mut this.scratch;
        let (n, eof) = this.shared.with(false, |inner| inner.link.read(id, scratch, max));
        if n > 0 {
            buf.put_slice(&this.scratch[..n]);
            // Reading may have opened the window: let the paths send it.
            this.shared.with(true, |_| ());
            return Poll::Ready(Ok(()));
        }
        if eof {
            if this.slot.reset.load(Relaxed) {
                return Poll::Ready(Err(this.reset_error()));
            }
            this.eof = true;
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl AsyncWrite for BondStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.finished {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "bonded stream shut down",
            )));
        }
        self.slot.write.register(cx.waker());
        if self.slot.reset.load(Relaxed) {
            return Poll::Ready(Err(self.reset_error()));
        }
        let id = self.id;
        let (n, known) = self
            .shared
            .with(true, |inner| (inner.link.write(id, data), inner.link.has_stream(id)));
        if !known {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "bonded stream closed")));
        }
        if n == 0 && !data.is_empty() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.finished {
            self.finished = true;
            let id = self.id;
            self.shared.with(true, |inner| inner.link.finish(id));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for BondStream {
    fn drop(&mut self) {
        // A stream dropped half-way (client gone, error) is aborted at the far end too; one
        // that ended cleanly is already forgotten by the link, and this does nothing.
        if !(self.slot.reset.load(Relaxed) || self.finished && self.eof) {
            self.shared.reset(self.id, "closed before the end");
        }
    }
}

//! The two halves of a bonded stream.
//!
//! [`SendHalf`]: bytes the application wrote, cut into segments as paths ask for work. A
//! segment keeps its bytes until the far end acks it on some path; if its path dies first,
//! it is sent again, with the same offset and length, on another.
//!
//! [`RecvHalf`]: the reorder buffer. Segments arrive in any order and more than once; bytes
//! come out in order, exactly once. It never holds more than the window it advertised, so
//! its memory is bounded and a slow reader slows the sender down.

use std::collections::{BTreeMap, VecDeque};

/// One segment of a stream: a fixed byte range, maybe ending with FIN.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fin: bool,
    /// Paths holding a copy the far end has not acked yet.
    pub(crate) on_paths: Vec<u32>,
}

#[derive(Debug)]
pub(crate) struct SendHalf {
    /// Segments not acked yet, by offset.
    pub(crate) segments: BTreeMap<u64, Segment>,
    /// Bytes written but not cut into segments yet; they start at `next`.
    unsent: VecDeque<u8>,
    pub(crate) next: u64,
    /// The far end accepts bytes below this offset.
    pub(crate) peer_max: u64,
    /// The application has finished writing.
    fin_requested: bool,
    fin_segmented: bool,
    /// Bytes held (segments and unsent) may not exceed this.
    capacity: usize,
    held: usize,
    /// The application found the buffer full; tell it when there is room.
    pub(crate) blocked: bool,
}

impl SendHalf {
    pub(crate) fn new(capacity: usize, peer_window: u64) -> SendHalf {
        SendHalf {
            segments: BTreeMap::new(),
            unsent: VecDeque::new(),
            next: 0,
            peer_max: peer_window,
            fin_requested: false,
            fin_segmented: false,
            capacity,
            held: 0,
            blocked: false,
        }
    }

    /// How many more bytes `write` takes now.
    pub(crate) fn room(&self) -> usize {
        if self.fin_requested {
            0
        } else {
            self.capacity.saturating_sub(self.held)
        }
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        self.unsent.extend(&bytes[..n]);
        self.held += n;
        if n < bytes.len() {
            self.blocked = true;
        }
        n
    }

    pub(crate) fn finish(&mut self) {
        self.fin_requested = true;
    }

    /// Whether a new segment could be cut now. A FIN goes out with the last bytes, so while
    /// bytes wait behind a closed window, the FIN waits too.
    pub(crate) fn has_new(&self) -> bool {
        if self.unsent.is_empty() {
            self.fin_requested && !self.fin_segmented
        } else {
            self.next < self.peer_max
        }
    }

    /// Cuts the next segment, of at most `max` bytes and within the peer's window, and
    /// returns its offset.
    pub(crate) fn cut(&mut self, max: usize) -> Option<u64> {
        let window = usize::try_from(self.peer_max.saturating_sub(self.next)).unwrap_or(usize::MAX);
        let len = self.unsent.len().min(max).min(window);
        let fin = self.fin_requested && len == self.unsent.len();
        if len == 0 && (!fin || self.fin_segmented) {
            return None;
        }
        let offset = self.next;
        let bytes: Vec<u8> = self.unsent.drain(..len).collect();
        self.next += len as u64;
        self.fin_segmented |= fin;
        self.segments.insert(
            offset,
            Segment {
                bytes,
                fin,
                on_paths: Vec::new(),
            },
        );
        Some(offset)
    }

    /// The far end has the segment at `offset`. Returns whether it was news.
    pub(crate) fn ack(&mut self, offset: u64) -> bool {
        match self.segments.remove(&offset) {
            Some(segment) => {
                self.held -= segment.bytes.len();
                true
            }
            None => false,
        }
    }

    /// Everything written, FIN included, is acked.
    pub(crate) fn done(&self) -> bool {
        self.fin_segmented && self.segments.is_empty()
    }
}

/// Why the far end's data cannot be accepted: it broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("data beyond the advertised window")]
    Window,
    #[error("data after the end of the stream, or two different ends")]
    Fin,
}

#[derive(Debug)]
pub(crate) struct RecvHalf {
    /// Next offset to move into `ready`.
    next: u64,
    /// Segments that arrived ahead of `next`.
    ahead: BTreeMap<u64, Vec<u8>>,
    /// In-order bytes the application has not read yet.
    ready: VecDeque<u8>,
    /// Bytes the application has read.
    consumed: u64,
    fin_at: Option<u64>,
    /// The far end may send bytes below this offset.
    pub(crate) advertised: u64,
    window: u64,
    /// End of stream handed to the application.
    pub(crate) eof_read: bool,
}

impl RecvHalf {
    pub(crate) fn new(window: u64) -> RecvHalf {
        RecvHalf {
            next: 0,
            ahead: BTreeMap::new(),
            ready: VecDeque::new(),
            consumed: 0,
            fin_at: None,
            advertised: window,
            window,
            eof_read: false,
        }
    }

    /// Takes a segment. Returns whether bytes (or the end) became readable.
    pub(crate) fn on_data(&mut self, offset: u64, bytes: &[u8], fin: bool) -> Result<bool, RecvError> {
        let end = offset + bytes.len() as u64;
        if end > self.advertised {
            return Err(RecvError::Window);
        }
        if fin && self.fin_at.is_some_and(|at| at != end) || self.fin_at.is_some_and(|at| end > at) {
            return Err(RecvError::Fin);
        }
        let before = (self.ready.len(), self.readable_end());
        if fin {
            self.fin_at = Some(end);
        }
        if end > self.next && !bytes.is_empty() {
            self.ahead.entry(offset).or_insert_with(|| bytes.to_vec());
        }
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let (start, bytes) = entry.remove_entry();
            let skip = usize::try_from(self.next - start).unwrap_or(usize::MAX);
            if let Some(fresh) = bytes.get(skip..) {
                self.ready.extend(fresh);
                self.next += fresh.len() as u64;
            }
        }
        Ok((self.ready.len(), self.readable_end()) != before)
    }

    fn readable_end(&self) -> bool {
        self.fin_at == Some(self.next)
    }

    /// Moves up to `max` in-order bytes into `out`; returns how many, and whether the
    /// stream's end has been reached (all bytes read and FIN seen).
    pub(crate) fn read(&mut self, out: &mut Vec<u8>, max: usize) -> (usize, bool) {
        let n = self.ready.len().min(max);
        out.extend(self.ready.drain(..n));
        self.consumed += n as u64;
        let eof = self.ready.is_empty() && self.readable_end();
        self.eof_read |= eof;
        (n, eof)
    }

    pub(crate) fn has_readable(&self) -> bool {
        !self.ready.is_empty() || (self.readable_end() && !self.eof_read)
    }

    /// A bigger window to advertise, when the application has read a quarter of it since the
    /// last advertisement.
    pub(crate) fn window_update(&mut self) -> Option<u64> {
        let max = self.consumed + self.window;
        if self.fin_at.is_none() && max >= self.advertised + self.window / 4 {
            self.advertised = max;
            Some(max)
        } else {
            None
        }
    }

    /// Bytes held: in order but unread, and ahead of a gap.
    pub(crate) fn buffered(&self) -> usize {
        self.ready.len() + self.ahead.values().map(Vec::len).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_come_out_in_order_once() {
        let mut recv = RecvHalf::new(100);
        assert_eq!(recv.on_data(3, b"def", false), Ok(false));
        assert_eq!(recv.on_data(3, b"def", false), Ok(false), "duplicate");
        assert_eq!(recv.on_data(0, b"abc", false), Ok(true));
        assert_eq!(recv.on_data(0, b"abc", false), Ok(false), "old duplicate");
        assert_eq!(recv.on_data(6, b"", true), Ok(true));
        let mut out = Vec::new();
        assert_eq!(recv.read(&mut out, 4), (4, false));
        assert_eq!(recv.read(&mut out, 100), (2, true));
        assert_eq!(out, b"abcdef");
        assert!(!recv.has_readable());
    }

    #[test]
    fn window_and_fin_are_enforced() {
        let mut recv = RecvHalf::new(8);
        assert_eq!(recv.on_data(4, b"12345", false), Err(RecvError::Window));
        assert_eq!(recv.on_data(0, b"ab", true), Ok(true));
        assert_eq!(recv.on_data(2, b"c", false), Err(RecvError::Fin));
        assert_eq!(recv.on_data(0, b"a", true), Err(RecvError::Fin));
    }

    #[test]
    fn reading_opens_the_window() {
        let mut recv = RecvHalf::new(8);
        recv.on_data(0, b"abcd", false).unwrap();
        assert_eq!(recv.window_update(), None);
        let mut out = Vec::new();
        recv.read(&mut out, 2);
        assert_eq!(recv.window_update(), Some(10));
        assert_eq!(recv.window_update(), None);
    }

    #[test]
    fn send_half_cuts_within_window_and_ends_with_fin() {
        let mut send = SendHalf::new(10, 4);
        assert_eq!(send.write(b"abcdefghijkl"), 10);
        assert!(send.blocked);
        assert_eq!(send.cut(3), Some(0));
        assert_eq!(send.cut(3), Some(3), "only one byte fits the window");
        assert_eq!(send.segments[&3].bytes, b"d");
        assert_eq!(send.cut(3), None);
        send.peer_max = 100;
        send.finish();
        assert_eq!(send.room(), 0);
        assert_eq!(send.cut(100), Some(4));
        assert!(send.segments[&4].fin);
        assert!(!send.has_new());
        for offset in [0, 3, 4] {
            assert!(send.ack(offset));
        }
        assert!(!send.ack(4));
        assert!(send.done());
    }

    #[test]
    fn a_fin_behind_a_closed_window_is_not_new() {
        let mut send = SendHalf::new(10, 2);
        send.write(b"abcd");
        send.finish();
        assert_eq!(send.cut(10), Some(0));
        assert!(!send.has_new(), "two bytes and the FIN wait for the window");
        assert_eq!(send.cut(10), None);
        send.peer_max = 4;
        assert!(send.has_new());
        assert_eq!(send.cut(10), Some(2));
        assert!(send.segments[&2].fin);
    }

    #[test]
    fn an_empty_fin_segment_is_cut_once() {
        let mut send = SendHalf::new(10, 10);
        send.finish();
        assert_eq!(send.cut(5), Some(0));
        assert_eq!(send.cut(5), None);
    }
}

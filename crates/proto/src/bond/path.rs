//! One path's bookkeeping: which frames it carries that the far end has not acked yet, and
//! what the path looks like from them: round-trip time, delivery rate, and whether it has
//! stalled.
//!
//! The far end acks every frame it receives on a path (`PathAck`, a running count: TCP keeps
//! a path's frames in order, so a count is enough). The ack of a frame gives an RTT sample
//! that includes queueing, and the bytes acked per interval give the delivery rate. A path
//! with unacked frames whose acks stop moving is stalled; one stalled for
//! max(3 × RTT, `dead_after`) while other paths move is dead.

use super::frame::Frame;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Delivery rate assumed for a path nothing is known about: 1 MB/s.
pub const DEFAULT_RATE: f64 = 1_000_000.0;
/// Shortest interval a rate sample spans; shorter ones are noise from ack bunching.
const MIN_SAMPLE: Duration = Duration::from_millis(40);
/// How long the minimum RTT is remembered before it is re-learned.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);

/// What a sent frame was, so it can be re-sent elsewhere if its path dies before the ack.
#[derive(Debug, Clone)]
pub(crate) enum Sent {
    /// Bytes `offset..offset + len` (and FIN, if the segment had it) of a stream.
    Data { stream: u32, offset: u64 },
    /// A stream-level control frame (`Open`, `OpenOk`, `OpenErr`, `Window`, `Reset`).
    Control(Frame),
    /// A ping, pong or datagram: never re-sent.
    Unreliable,
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    bytes: u32,
    what: Sent,
}

/// A path as the link sees it.
#[derive(Debug)]
pub(crate) struct Path {
    pub(crate) id: u32,
    /// Frames sent and not yet acked, oldest first; the first is frame number `acked`.
    in_flight: VecDeque<InFlight>,
    /// Frames the far end has acked.
    acked: u64,
    pub(crate) unacked_bytes: u64,
    /// Frames received from the far end, and whether it needs telling.
    pub(crate) received: u64,
    pub(crate) ack_due: bool,
    pub(crate) pongs: VecDeque<u64>,
    pub(crate) ping_due: bool,
    pub(crate) last_sent: Instant,
    /// When acks last moved, or when the path went from idle to busy.
    pub(crate) last_progress: Instant,
    srtt: Option<Duration>,
    min_rtt: Option<(Duration, Instant)>,
    /// Bytes per second, from acks.
    rate: f64,
    sample_start: (Instant, u64),
    acked_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_bytes: u64,
    /// Share of segments the kernel re-sent, as the engine reads it from `TCP_INFO`.
    pub(crate) loss: f64,
}

/// Where a path stands, for the API and the monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct PathInfo {
    pub id: u32,
    pub rtt: Option<Duration>,
    pub min_rtt: Option<Duration>,
    /// Estimated delivery rate, bytes per second.
    pub rate: f64,
    pub unacked_bytes: u64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub loss: f64,
}

impl Path {
    pub(crate) fn new(id: u32, now: Instant, rate_hint: Option<f64>, rtt_hint: Option<Duration>) -> Path {
        Path {
            id,
            in_flight: VecDeque::new(),
            acked: 0,
            unacked_bytes: 0,
            received: 0,
            ack_due: false,
            pongs: VecDeque::new(),
            ping_due: false,
            last_sent: now,
            last_progress: now,
            srtt: rtt_hint,
            min_rtt: rtt_hint.map(|rtt| (rtt, now)),
            rate: rate_hint.filter(|r| r.is_finite() && *r > 0.0).unwrap_or(DEFAULT_RATE),
            sample_start: (now, 0),
            acked_bytes: 0,
            tx_bytes: 0,
            rx_bytes: 0,
            loss: 0.0,
        }
    }

    /// Records a frame of `bytes` wire bytes just handed to the path.
    pub(crate) fn on_sent(&mut self, what: Sent, bytes: usize, now: Instant) {
        if self.in_flight.is_empty() {
            self.last_progress = now;
            self.sample_start = (now, self.acked_bytes);
        }
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.in_flight.push_back(InFlight { at: now, bytes, what });
        self.unacked_bytes += u64::from(bytes);
        self.tx_bytes += u64::from(bytes);
        self.last_sent = now;
    }

    /// The far end has received `count` frames in all. Returns what they carried; a count
    /// that goes backwards or past what was sent is `Err`.
    pub(crate) fn on_ack(&mut self, count: u64, now: Instant) -> Result<Vec<Sent>, ()> {
        let sent = self.acked + self.in_flight.len() as u64;
        if count < self.acked || count > sent {
            return Err(());
        }
        let mut done = Vec::with_capacity((count - self.acked) as usize);
        let mut newest = None;
        while self.acked < count {
            let Some(frame) = self.in_flight.pop_front() else { break };
            self.acked += 1;
            self.unacked_bytes -= u64::from(frame.bytes);
            self.acked_bytes += u64::from(frame.bytes);
            newest = Some(frame.at);
            done.push(frame.what);
        }
        if let Some(at) = newest {
            self.last_progress = now;
            self.on_rtt(now.saturating_duration_since(at), now);
            self.on_rate_sample(now);
        }
        Ok(done)
    }

    fn on_rtt(&mut self, sample: Duration, now: Instant) {
        self.srtt = Some(match self.srtt {
            None => sample,
            Some(srtt) => (srtt * 7 + sample) / 8,
        });
        let expired = self
            .min_rtt
            .is_none_or(|(min, at)| sample <= min || now.saturating_duration_since(at) > MIN_RTT_WINDOW);
        if expired {
            self.min_rtt = Some((sample, now));
        }
    }

    /// Delivery rate: bytes acked over at least [`MIN_SAMPLE`] (and one minimum RTT). A
    /// faster sample is believed at once; a slower one only when the path had a full pipe,
    /// so an idle path keeps what it could do rather than what it was asked to do.
    fn on_rate_sample(&mut self, now: Instant) {
        let (start, start_bytes) = self.sample_start;
        let span = now.saturating_duration_since(start);
        if span < MIN_SAMPLE.max(self.min_rtt()) {
            return;
        }
        let sample = (self.acked_bytes - start_bytes) as f64 / span.as_secs_f64();
        let full_pipe = self.unacked_bytes as f64 >= self.rate * self.min_rtt().as_secs_f64() * 0.5;
        if sample > self.rate {
            self.rate = sample;
        } else if full_pipe {
            self.rate = (self.rate * 3.0 + sample) / 4.0;
        }
        self.rate = self.rate.max(1_000.0);
        self.sample_start = (now, self.acked_bytes);
    }

    /// Frames that never got acked, oldest first, leaving the path empty (it is going away).
    pub(crate) fn drain_unacked(&mut self) -> impl Iterator<Item = Sent> + '_ {
        self.unacked_bytes = 0;
        self.in_flight.drain(..).map(|f| f.what)
    }

    pub(crate) fn min_rtt(&self) -> Duration {
        self.min_rtt.map_or(Duration::ZERO, |(rtt, _)| rtt)
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// When a frame of `bytes` handed over now is expected at the far end, as a delay from
    /// now: behind everything not yet acked at the measured rate, and never sooner than
    /// half the minimum RTT.
    pub(crate) fn eta(&self, bytes: usize) -> Duration {
        let rate = self.rate.max(1.0);
        let queued = (self.unacked_bytes + bytes as u64) as f64 / rate;
        let idle = bytes as f64 / rate + self.min_rtt().as_secs_f64() / 2.0;
        Duration::from_secs_f64(queued.max(idle).min(3600.0))
    }

    /// How long acks have not moved while frames wait for them; zero when nothing waits.
    pub(crate) fn stalled(&self, now: Instant) -> Duration {
        if self.in_flight.is_empty() {
            Duration::ZERO
        } else {
            now.saturating_duration_since(self.last_progress)
        }
    }

    /// How long a stall may last before the path counts as dead.
    pub(crate) fn dead_after(&self, floor: Duration) -> Duration {
        (self.srtt.unwrap_or(Duration::ZERO) * 3).max(floor)
    }

    pub(crate) fn info(&self) -> PathInfo {
        PathInfo {
            id: self.id,
            rtt: self.srtt,
            min_rtt: self.min_rtt.map(|(rtt, _)| rtt),
            rate: self.rate,
            unacked_bytes: self.unacked_bytes,
            tx_bytes: self.tx_bytes,
            rx_bytes: self.rx_bytes,
            loss: self.loss,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_release_frames_in_order_and_measure_rtt() {
        let t0 = Instant::now();
        let mut path = Path::new(1, t0, None, None);
        path.on_sent(Sent::Unreliable, 100, t0);
        path.on_sent(Sent::Data { stream: 1, offset: 0 }, 1000, t0);
        assert_eq!(path.unacked_bytes, 1100);
        let done = path.on_ack(1, t0 + Duration::from_millis(30)).unwrap();
        assert!(matches!(done[..], [Sent::Unreliable]));
        assert_eq!(path.srtt(), Some(Duration::from_millis(30)));
        assert_eq!(path.unacked_bytes, 1000);
        assert!(path.on_ack(0, t0).is_err(), "acks never go backwards");
        assert!(path.on_ack(3, t0).is_err(), "nor past what was sent");
        let done = path.on_ack(2, t0 + Duration::from_millis(40)).unwrap();
        assert!(matches!(done[..], [Sent::Data { stream: 1, offset: 0 }]));
        assert_eq!(path.stalled(t0 + Duration::from_secs(9)), Duration::ZERO);
    }

    #[test]
    fn a_path_without_acks_stalls() {
        let t0 = Instant::now();
        let mut path = Path::new(1, t0, None, Some(Duration::from_millis(50)));
        assert_eq!(path.dead_after(Duration::from_millis(300)), Duration::from_millis(300));
        path.on_sent(Sent::Unreliable, 10, t0 + Duration::from_secs(1));
        assert_eq!(
            path.stalled(t0 + Duration::from_millis(1500)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn rate_follows_acked_bytes_and_drives_eta() {
        let t0 = Instant::now();
        let mut path = Path::new(1, t0, Some(100_000.0), Some(Duration::from_millis(10)));
        // 100 frames of 10 kB acked over 100 ms: 10 MB/s.
        for _ in 0..100 {
            path.on_sent(Sent::Unreliable, 10_000, t0);
        }
        path.on_ack(100, t0 + Duration::from_millis(100)).unwrap();
        assert!((path.info().rate - 10_000_000.0).abs() < 1.0, "{}", path.info().rate);
        // Idle: half the minimum RTT plus the frame's own time.
        let eta = path.eta(10_000);
        assert!(
            eta >= Duration::from_millis(5) && eta < Duration::from_millis(100),
            "{eta:?}"
        );
        // With a backlog, the backlog dominates.
        for _ in 0..100 {
            path.on_sent(Sent::Unreliable, 10_000, t0);
        }
        assert!(path.eta(10_000) > Duration::from_millis(100));
    }
}

//! One path's bookkeeping: which frames it carries that the far end has not acked yet, and
//! what the path looks like from them: round-trip time, delivery rate, and whether it has
//! stalled.
//!
//! The far end acks every frame it receives on a path (`PathAck`, a running count: TCP keeps
//! a path's frames in order, so a count is enough). The ack of a frame gives an RTT sample
//! that includes queueing, and the bytes acked per interval give the delivery rate. A path
//! with unacked frames whose acks stop moving is stalled; one stalled for
//! max(3 × RTT, `dead_after`) while other paths move is suspect: copies of what it carries go
//! on the others and it gets nothing new until its acks move again. Only a path stalled for
//! `dead_alone_after` is dead (see [`super::link::Link::on_tick`]).

use super::frame::Frame;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Delivery rate assumed for a path nothing is known about: 1 MB/s.
pub const DEFAULT_RATE: f64 = 1_000_000.0;
/// Shortest interval a rate sample spans; shorter ones are noise from ack bunching.
const MIN_SAMPLE: Duration = Duration::from_millis(40);
/// How long a path whose RTT is not known yet may go without an ack before it is suspect.
const UNKNOWN_RTT_STALL: Duration = Duration::from_secs(1);
/// How long the minimum RTT is remembered before it is re-learned.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// The scheduler gives a path about as many bytes as its estimated rate says it delivers in
/// time, so a path only ever shows what its estimate says: an underestimated one (no rate
/// hint, or a slow start) would never learn better. So a path claims more than its estimate
/// while it learns: [`STARTUP_GAIN`] times it until the estimate stops growing by
/// [`STARTUP_GROWTH`] for [`STARTUP_ROUNDS`] samples in a row that were not app-limited (as
/// BBR's startup), then
/// [`PROBE_GAIN`] times it for one sample in [`PROBE_EVERY`], to find capacity that comes
/// later. Claiming too much costs only a queue, which the next samples measure.
const STARTUP_GAIN: f64 = 2.0;
const STARTUP_GROWTH: f64 = 1.25;
const STARTUP_ROUNDS: u32 = 3;
const PROBE_GAIN: f64 = 1.5;
const PROBE_EVERY: u64 = 8;

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
    /// Stream data frames among `in_flight`.
    data_in_flight: usize,
    srtt: Option<Duration>,
    min_rtt: Option<(Duration, Instant)>,
    /// Bytes per second, from acks.
    rate: f64,
    /// When the current rate sample started, and the bytes acked then. `None` from the
    /// moment an idle path sends until its first ack: a sample that began at the send would
    /// count a round trip with no acks, and start every path too low.
    sample_start: Option<(Instant, u64)>,
    /// The path asked for a frame and the link had none for it (another path was better, or
    /// there was nothing to send) since the sample started: the sample measured what the
    /// path was given, not what it can carry.
    app_limited: bool,
    /// Rate samples taken; see [`PROBE_EVERY`].
    samples: u64,
    /// Startup: the best rate so far and the samples since it last grew by
    /// [`STARTUP_GROWTH`]; `None` once startup is over.
    startup: Option<(f64, u32)>,
    acked_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) rx_bytes: u64,
    /// Share of segments the kernel re-sent, as the engine reads it from `TCP_INFO`.
    pub(crate) loss: f64,
    /// Stalled while others moved: what it carries was copied to the others, and it gets
    /// nothing new until its acks move again.
    pub(crate) suspect: bool,
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
    /// Stalled while others moved: its frames were copied to the others (see the module).
    pub stalled: bool,
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
            data_in_flight: 0,
            srtt: rtt_hint,
            min_rtt: rtt_hint.map(|rtt| (rtt, now)),
            rate: rate_hint.filter(|r| r.is_finite() && *r > 0.0).unwrap_or(DEFAULT_RATE),
            sample_start: None,
            app_limited: false,
            samples: 0,
            startup: Some((0.0, 0)),
            acked_bytes: 0,
            tx_bytes: 0,
            rx_bytes: 0,
            loss: 0.0,
            suspect: false,
        }
    }

    /// Records a frame of `bytes` wire bytes just handed to the path.
    pub(crate) fn on_sent(&mut self, what: Sent, bytes: usize, now: Instant) {
        if self.in_flight.is_empty() {
            self.last_progress = now;
            self.sample_start = None;
        }
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        if matches!(what, Sent::Data { .. }) {
            self.data_in_flight += 1;
        }
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
            if matches!(frame.what, Sent::Data { .. }) {
                self.data_in_flight -= 1;
            }
            self.acked += 1;
            self.unacked_bytes -= u64::from(frame.bytes);
            self.acked_bytes += u64::from(frame.bytes);
            newest = Some(frame.at);
            done.push(frame.what);
        }
        if let Some(at) = newest {
            self.last_progress = now;
            self.suspect = false;
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

    /// The path could have taken a frame and got none.
    pub(crate) fn on_declined(&mut self) {
        self.app_limited = true;
    }

    /// Delivery rate: bytes acked over at least [`MIN_SAMPLE`] (and one minimum RTT). A
    /// faster sample is believed at once. A slower one only when the path was never left
    /// wanting during the sample: then it could not do better. An app-limited sample says
    /// what the path was given; believing it would feed back (the scheduler gives a path
    /// less, its rate looks lower, it gets less still). A path that really slowed keeps its
    /// socket full, is not left wanting, and its slower samples count.
    fn on_rate_sample(&mut self, now: Instant) {
        let Some((start, start_bytes)) = self.sample_start else {
            self.start_sample(now);
            return;
        };
        let span = now.saturating_duration_since(start);
        if span < MIN_SAMPLE.max(self.min_rtt()) {
            return;
        }
        let sample = (self.acked_bytes - start_bytes) as f64 / span.as_secs_f64();
        let limited = self.app_limited;
        if sample > self.rate {
            self.rate = sample;
        } else if !limited {
            self.rate = (self.rate * 3.0 + sample) / 4.0;
        }
        self.rate = self.rate.max(1_000.0);
        self.start_sample(now);
        self.samples += 1;
        if let Some((best, flat)) = self.startup {
            self.startup = if self.rate >= best * STARTUP_GROWTH {
                Some((self.rate, 0))
            } else if limited {
                Some((best, flat))
            } else if flat + 1 < STARTUP_ROUNDS {
                Some((best, flat + 1))
            } else {
                None
            };
        }
    }

    fn start_sample(&mut self, now: Instant) {
        self.sample_start = Some((now, self.acked_bytes));
        self.app_limited = false;
    }

    /// Frames not acked yet, oldest first.
    pub(crate) fn unacked(&self) -> impl Iterator<Item = &Sent> + '_ {
        self.in_flight.iter().map(|f| &f.what)
    }

    /// Frames that never got acked, oldest first, leaving the path empty (it is going away).
    pub(crate) fn drain_unacked(&mut self) -> impl Iterator<Item = Sent> + '_ {
        self.unacked_bytes = 0;
        self.data_in_flight = 0;
        self.in_flight.drain(..).map(|f| f.what)
    }

    pub(crate) fn min_rtt(&self) -> Duration {
        self.min_rtt.map_or(Duration::ZERO, |(rtt, _)| rtt)
    }

    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// How many times its estimated rate the path claims now (see [`STARTUP_GAIN`]).
    fn gain(&self) -> f64 {
        if self.startup.is_some() {
            STARTUP_GAIN
        } else if self.samples % PROBE_EVERY == PROBE_EVERY - 1 {
            PROBE_GAIN
        } else {
            1.0
        }
    }

    /// When a frame of `bytes` handed over now is expected at the far end, as a delay from
    /// now: behind everything not yet acked at the rate the path claims, and never sooner
    /// than half the minimum RTT.
    pub(crate) fn eta(&self, bytes: usize) -> Duration {
        let rate = self.rate.max(1.0) * self.gain();
        let queued = (self.unacked_bytes + bytes as u64) as f64 / rate;
        let idle = bytes as f64 / rate + self.min_rtt().as_secs_f64() / 2.0;
        Duration::from_secs_f64(queued.max(idle).min(3600.0))
    }

    /// A frame arrived on this path. While no stream data waits for an ack here, that is
    /// proof enough the path lives: the ack of a ping can sit behind a deep queue of the far
    /// end's data on the same path, and that queue moving is what matters. With data out,
    /// only acks count, so a path that only delivers one way still dies.
    pub(crate) fn on_received(&mut self, now: Instant) {
        if self.data_in_flight == 0 {
            self.last_progress = now;
        }
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
        // Before its first ack a path's RTT is unknown, and a satellite's first ack comes
        // after more than the floor: give it a second.
        (self.srtt.map_or(UNKNOWN_RTT_STALL, |srtt| srtt * 3)).max(floor)
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
            stalled: self.suspect,
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
        let unknown = Path::new(2, t0, None, None);
        assert_eq!(unknown.dead_after(Duration::from_millis(300)), UNKNOWN_RTT_STALL);
        path.on_sent(Sent::Unreliable, 10, t0 + Duration::from_secs(1));
        assert_eq!(
            path.stalled(t0 + Duration::from_millis(1500)),
            Duration::from_millis(500)
        );
    }

    /// Sends `frames` frames of 10 kB at `at`.
    fn send(path: &mut Path, frames: usize, at: Instant) {
        for _ in 0..frames {
            path.on_sent(Sent::Unreliable, 10_000, at);
        }
    }

    #[test]
    fn rate_follows_acked_bytes_and_drives_eta() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut path = Path::new(1, t0, Some(100_000.0), Some(ms(10)));
        send(&mut path, 101, t0);
        // The first ack starts the sample (the round trip before it carried no acks); 100
        // frames of 10 kB acked over the next 100 ms: 10 MB/s.
        path.on_ack(1, t0 + ms(10)).unwrap();
        path.on_ack(101, t0 + ms(110)).unwrap();
        assert!((path.info().rate - 10_000_000.0).abs() < 1.0, "{}", path.info().rate);
        // Idle: half the minimum RTT plus the frame's own time.
        let eta = path.eta(10_000);
        assert!(eta >= ms(5) && eta < ms(100), "{eta:?}");
        // With a backlog, the backlog dominates.
        send(&mut path, 300, t0 + ms(110));
        assert!(path.eta(10_000) > ms(100));
    }

    /// Sends 10 frames and acks 10 (older ones) per `step` from `t`, `rounds` times; marks the
    /// path declined (app-limited) in each round if `declined`.
    fn run(path: &mut Path, t: &mut Instant, step: Duration, rounds: usize, declined: bool) {
        for _ in 0..rounds {
            send(path, 10, *t);
            if declined {
                path.on_declined();
            }
            *t += step;
            let count = path.acked + 10;
            path.on_ack(count, *t).unwrap();
        }
    }

    #[test]
    fn a_slower_sample_counts_only_when_the_path_was_not_left_wanting() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut path = Path::new(1, t0, Some(2_000_000.0), Some(ms(40)));
        // Ten frames stay in flight throughout: the path never goes idle.
        send(&mut path, 20, t0);
        path.on_ack(10, t0 + ms(40)).unwrap();
        let mut t = t0 + ms(40);
        // 100 kB per 100 ms is 1 MB/s, half the estimate. The scheduler kept the path short
        // (it asked and got nothing): that says nothing about the path.
        run(&mut path, &mut t, ms(100), 10, true);
        assert_eq!(path.info().rate, 2_000_000.0);
        // The path took all it was given and still delivered 1 MB/s: it is slower.
        run(&mut path, &mut t, ms(100), 10, false);
        assert!(path.info().rate < 1_200_000.0, "{}", path.info().rate);
    }

    #[test]
    fn startup_claims_more_until_the_rate_stops_growing() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut path = Path::new(1, t0, None, Some(ms(40)));
        // Idle: the frame's own time at twice the rate, plus half the RTT.
        assert_eq!(path.eta(10_000), ms(5) + ms(20), "startup claims twice the rate");
        send(&mut path, 20, t0);
        path.on_ack(10, t0 + ms(40)).unwrap();
        let mut t = t0 + ms(40);
        // App-limited samples at the same rate do not end startup.
        run(&mut path, &mut t, ms(100), 10, true);
        assert!(path.startup.is_some());
        // Three flat samples of a full path do.
        run(&mut path, &mut t, ms(100), 3, false);
        assert!(path.startup.is_none());
        // Busy: the unacked bytes and the frame at the estimated rate, no more.
        let claimed = (path.unacked_bytes + 10_000) as f64 / path.eta(10_000).as_secs_f64();
        assert!((claimed - path.info().rate).abs() < 1000.0, "then it claims {claimed}");
    }

    #[test]
    fn arrivals_keep_a_ping_only_path_alive_but_not_one_with_data_out() {
        let t0 = Instant::now();
        let mut path = Path::new(1, t0, None, Some(Duration::from_millis(30)));
        path.on_sent(Sent::Unreliable, 20, t0);
        path.on_received(t0 + Duration::from_millis(900));
        assert_eq!(path.stalled(t0 + Duration::from_secs(1)), Duration::from_millis(100));
        path.on_sent(Sent::Data { stream: 1, offset: 0 }, 1000, t0 + Duration::from_secs(1));
        path.on_received(t0 + Duration::from_secs(2));
        assert_eq!(path.stalled(t0 + Duration::from_secs(2)), Duration::from_millis(1100));
    }
}

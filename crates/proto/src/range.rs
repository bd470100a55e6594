//! The range planner behind `booster get`: which source (uplink) fetches which byte range of one
//! HTTP file, so that the download runs at the sum of the sources' rates, has no slow tail, and
//! never fails while any source works. Sans-IO: the async engine does the requests, passes
//! `now` in, and does what it is told.
//!
//! Reading order: [`Planner::next`] (dynamic split, then endgame duplicates), then
//! [`Planner::progress`] and [`Planner::complete`] (rates, winners and losers), then
//! [`Planner::check_stalls`] and [`Planner::fail`].
//!
//! Byte accounting. Every byte of `[0, size)` is in exactly one of three states:
//! - *done*: reported received (the contiguous prefix in [`Planner::progress`], the whole
//!   assignment in [`Planner::complete`]) or [`Planner::mark_done`]. The engine reports only
//!   bytes it has written, so done bytes are on disk (or ready for the stream) and
//!   [`Planner::done_ranges`] is the resume state;
//! - *in flight*: in the unreceived tail `[start + received, end)` of a live assignment;
//! - *pooled*: unassigned, handed out lowest offset first.
//!
//! A piece has one or two holders. The second is a *duplicate* of the first holder's unreceived
//! tail, taken in the endgame by a source expected to finish it sooner; the first holder to
//! finish wins and the other is cancelled. A failed or stalled holder's unreceived bytes go
//! back to the pool unless the other holder still covers them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The engine's handle for a source (uplink).
pub type SourceId = usize;
/// A piece of the file; a duplicate shares the id of the piece it duplicates.
pub type PieceId = u64;

/// Time constant of the rate EWMA. About a second smooths TCP's bursts yet follows a link
/// whose rate changes within one piece (pieces last ~1.5 s).
const RATE_TAU: Duration = Duration::from_secs(1);
/// Progress is folded into the rate in samples at least this long: engines report every read
/// (a few KiB), and a rate over a few milliseconds is noise.
const RATE_SAMPLE: Duration = Duration::from_millis(100);
/// Cap on the expected piece time used for stall detection, in units of `target_piece_time`.
/// A source whose measured rate collapsed would otherwise get an unbounded stall timeout.
const STALL_EXPECTED_CAP: f64 = 4.0;
/// At most this many holders per piece: the original and one duplicate.
const MAX_HOLDERS: usize = 2;

/// Tuning of the [`Planner`]. Sizes in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannerConfig {
    /// A piece is sized to take its source about this long: long enough that the per-request
    /// round trip is a small overhead, short enough that the endgame is short.
    pub target_piece_time: Duration,
    /// Smallest piece (except at the end of a free range or the window).
    pub min_piece: u64,
    /// Largest piece, whatever the rate.
    pub max_piece: u64,
    /// Piece for a source with neither a measured nor a prior rate.
    pub initial_piece: u64,
    /// A source with a piece in flight and no progress for
    /// `max(stall_min, stall_factor × expected piece time)` is stalled.
    pub stall_min: Duration,
    /// See `stall_min`.
    pub stall_factor: f64,
    /// Allowance for a new request to start (about one RTT): a duplicate is only worth taking
    /// when it finishes sooner than the holder even after this delay.
    pub startup: Duration,
    /// Bounded lookahead for streaming: never assign bytes at or beyond `delivered() + window`.
    pub window: Option<u64>,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            target_piece_time: Duration::from_millis(1500),
            min_piece: 256 * 1024,
            max_piece: 64 * 1024 * 1024,
            initial_piece: 1024 * 1024,
            stall_min: Duration::from_secs(2),
            stall_factor: 4.0,
            startup: Duration::from_millis(100),
            window: None,
        }
    }
}

impl PlannerConfig {
    /// Repairs values that would otherwise stop the planner (zero-sized pieces, a zero window)
    /// or make it panic (min > max, a negative or NaN factor).
    fn sanitized(mut self) -> Self {
        self.min_piece = self.min_piece.max(1);
        self.max_piece = self.max_piece.max(self.min_piece);
        self.initial_piece = self.initial_piece.max(self.min_piece).min(self.max_piece);
        if !(self.stall_factor.is_finite() && self.stall_factor >= 0.0) {
            self.stall_factor = PlannerConfig::default().stall_factor;
        }
        self.window = self.window.map(|w| w.max(1));
        self
    }
}

/// Fetch `[start, end)` of the file as part of `piece`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub piece: PieceId,
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    /// Another source also holds this range; the engine writes identical bytes either way.
    pub duplicate: bool,
}

impl Assignment {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// The planner's answer to a source asking for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Fetch(Assignment),
    /// Nothing now; ask again after the next event (progress, completion, failure, stall).
    Wait,
    /// The file is complete.
    Done,
}

/// The engine must abort `source`'s request for `piece` (it lost a race or stalled). Reports
/// that still arrive for it are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancel {
    pub source: SourceId,
    pub piece: PieceId,
}

/// Plans the byte ranges of one download. See the module docs.
#[derive(Debug, Clone)]
pub struct Planner {
    size: u64,
    cfg: PlannerConfig,
    done: RangeSet,
    pool: RangeSet,
    pieces: BTreeMap<PieceId, Piece>,
    sources: BTreeMap<SourceId, Source>,
    next_piece: PieceId,
}

#[derive(Debug, Clone)]
struct Piece {
    end: u64,
    /// 1..=MAX_HOLDERS, distinct sources.
    holders: Vec<Holder>,
}

#[derive(Debug, Clone, Copy)]
struct Holder {
    source: SourceId,
    /// Start of this holder's assignment (a duplicate starts later than the original).
    start: u64,
    /// Contiguous bytes received from `start`.
    received: u64,
}

impl Holder {
    fn offset(&self) -> u64 {
        self.start + self.received
    }
}

#[derive(Debug, Clone)]
struct Source {
    prior: Option<f64>,
    /// EWMA of bytes per second, counting only time with a piece in flight.
    rate: Option<f64>,
    job: Option<Job>,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    piece: PieceId,
    last_progress: Instant,
    stall_after: Duration,
    /// The rate sample being collected: bytes and in-flight time since the last fold.
    clock: Instant,
    sample_bytes: u64,
    sample_time: Duration,
}

impl Source {
    fn known_rate(&self) -> Option<f64> {
        self.rate.or(self.prior)
    }

    /// Adds received bytes and the in-flight time up to `now` to the current sample.
    fn account(&mut self, bytes: u64, now: Instant) {
        let Some(job) = self.job.as_mut() else {
            return;
        };
        job.sample_bytes += bytes;
        job.sample_time += now.saturating_duration_since(job.clock);
        job.clock = job.clock.max(now);
        if job.sample_time >= RATE_SAMPLE {
            self.rate = fold(self.rate.or(self.prior), job.sample_bytes, job.sample_time);
            job.sample_bytes = 0;
            job.sample_time = Duration::ZERO;
        }
    }

    /// Ends the job (accounting its last bytes and time) and returns it.
    fn end_job(&mut self, bytes: u64, now: Instant) -> Option<Job> {
        self.account(bytes, now);
        let job = self.job.take()?;
        self.rate = fold(self.known_rate(), job.sample_bytes, job.sample_time);
        Some(job)
    }

    /// The rate as if the pending sample were folded in at `now`: a source that stopped
    /// delivering looks slower the longer it stays silent.
    fn projected_rate(&self, now: Instant) -> Option<f64> {
        let Some(job) = &self.job else {
            return self.known_rate();
        };
        let time = job.sample_time + now.saturating_duration_since(job.clock);
        if time < RATE_SAMPLE {
            return self.known_rate();
        }
        fold(self.known_rate(), job.sample_bytes, time)
    }
}

/// Folds a sample of `bytes` over `time` into an EWMA whose weight grows with `time`.
fn fold(rate: Option<f64>, bytes: u64, time: Duration) -> Option<f64> {
    let secs = time.as_secs_f64();
    let sample = bytes as f64 / secs;
    if secs <= 0.0 || !sample.is_finite() {
        return rate;
    }
    match rate {
        None => Some(sample),
        Some(old) => {
            let alpha = 1.0 - (-secs / RATE_TAU.as_secs_f64()).exp();
            Some(old + alpha * (sample - old))
        }
    }
}

/// `max(floor, factor × expected)` as a duration, without panicking on odd floats.
fn stall_timeout(floor: Duration, factor: f64, expected_secs: f64) -> Duration {
    Duration::try_from_secs_f64(factor * expected_secs)
        .unwrap_or(Duration::MAX)
        .max(floor)
}

impl Planner {
    /// A planner for a file of `size` bytes (0 is accepted and is complete at once).
    pub fn new(size: u64, cfg: PlannerConfig) -> Planner {
        let mut pool = RangeSet::default();
        pool.insert(0, size);
        Planner {
            size,
            cfg: cfg.sanitized(),
            done: RangeSet::default(),
            pool,
            pieces: BTreeMap::new(),
            sources: BTreeMap::new(),
            next_piece: 0,
        }
    }

    /// Adds a source; `prior_rate` (bytes/s, e.g. from the balancer) sizes its first piece.
    /// Adding a known source only updates its prior.
    pub fn add_source(&mut self, id: SourceId, prior_rate: Option<f64>) {
        let prior = prior_rate.filter(|r| r.is_finite() && *r > 0.0);
        let source = self.sources.entry(id).or_insert(Source {
            prior: None,
            rate: None,
            job: None,
        });
        if prior.is_some() {
            source.prior = prior;
        }
    }

    /// Drops a source for good; its piece goes back to the pool (or stays with its other
    /// holder). Returns the request to cancel, if it had one.
    pub fn remove_source(&mut self, id: SourceId) -> Vec<Cancel> {
        // The rate is dropped with the source, so the job's last known time will do.
        let Some(now) = self.sources.get(&id).and_then(|s| s.job.as_ref()).map(|job| job.clock) else {
            self.sources.remove(&id);
            return Vec::new();
        };
        let cancels = self
            .release(id, now)
            .map(|piece| Cancel { source: id, piece })
            .into_iter()
            .collect();
        self.sources.remove(&id);
        cancels
    }

    /// Marks `[start, end)` as already on disk (resume). Meant for before the first `next`;
    /// later calls are safe too (in-flight pieces simply carry on).
    pub fn mark_done(&mut self, start: u64, end: u64) {
        let end = end.min(self.size);
        if start < end {
            self.done.insert(start, end);
            self.pool.remove(start, end);
        }
    }

    /// A source with nothing in flight asks for work. (If it still holds a piece, that piece
    /// is treated as failed first.) Fresh bytes come first, lowest offset first; in the
    /// endgame an idle source may duplicate the tail of the piece expected to finish last.
    pub fn next(&mut self, id: SourceId, now: Instant) -> Next {
        self.release(id, now);
        if self.is_done() {
            return Next::Done;
        }
        if !self.sources.contains_key(&id) {
            return Next::Wait;
        }
        match self.fresh(id, now).or_else(|| self.duplicate(id, now)) {
            Some(assignment) => Next::Fetch(assignment),
            None => Next::Wait,
        }
    }

    /// `received` = bytes of this assignment received (and written) so far, contiguous from
    /// its start. Reaching the assignment's end counts as [`Planner::complete`]. Returns the
    /// loser to cancel when that finishes a duplicated piece.
    pub fn progress(&mut self, id: SourceId, piece: PieceId, received: u64, now: Instant) -> Vec<Cancel> {
        let Some(holder) = self.holder_mut(id, piece) else {
            return Vec::new();
        };
        let old = *holder;
        let new = received.min(self.pieces[&piece].end - old.start);
        if new <= old.received {
            return Vec::new();
        }
        self.set_received(id, piece, old, new, now);
        if old.start + new == self.pieces[&piece].end {
            return self.finish(id, piece, now);
        }
        Vec::new()
    }

    /// The assignment was fully received. Returns the loser to cancel, if the piece was
    /// duplicated.
    pub fn complete(&mut self, id: SourceId, piece: PieceId, now: Instant) -> Vec<Cancel> {
        let Some(holder) = self.holder_mut(id, piece) else {
            return Vec::new();
        };
        let old = *holder;
        let len = self.pieces[&piece].end - old.start;
        self.set_received(id, piece, old, len, now);
        self.finish(id, piece, now)
    }

    /// The request failed; its unreceived bytes go back to the pool unless the piece's other
    /// holder covers them. The source may ask again later.
    pub fn fail(&mut self, id: SourceId, piece: PieceId, now: Instant) {
        if self.holder_mut(id, piece).is_some() {
            self.release(id, now);
        }
    }

    /// Treats every source with a piece in flight and no progress for
    /// `max(stall_min, stall_factor × expected piece time)` as failed; returns their requests
    /// to cancel.
    pub fn check_stalls(&mut self, now: Instant) -> Vec<Cancel> {
        let stalled: Vec<(SourceId, PieceId)> = self
            .sources
            .iter()
            .filter_map(|(&id, source)| {
                let job = source.job.as_ref()?;
                (now.saturating_duration_since(job.last_progress) >= job.stall_after).then_some((id, job.piece))
            })
            .collect();
        stalled
            .into_iter()
            .map(|(source, piece)| {
                self.release(source, now);
                Cancel { source, piece }
            })
            .collect()
    }

    /// Every byte is done.
    pub fn is_done(&self) -> bool {
        self.delivered() == self.size
    }

    /// The contiguous done prefix: what can be streamed out.
    pub fn delivered(&self) -> u64 {
        match self.done.first() {
            Some((0, end)) => end,
            _ => 0,
        }
    }

    /// Done ranges, sorted and merged: the resume state.
    pub fn done_ranges(&self) -> Vec<(u64, u64)> {
        self.done.iter().collect()
    }

    /// Measured rate in bytes/s, or the prior when nothing was measured yet.
    pub fn rate(&self, id: SourceId) -> Option<f64> {
        self.sources.get(&id)?.known_rate()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first byte that may not be assigned yet (the window's end).
    fn limit(&self) -> u64 {
        match self.cfg.window {
            Some(window) => self.delivered().saturating_add(window).min(self.size),
            None => self.size,
        }
    }

    /// A new piece from the lowest free range inside the window.
    fn fresh(&mut self, id: SourceId, now: Instant) -> Option<Assignment> {
        let (start, free_end) = self.pool.first()?;
        let available = free_end.min(self.limit()).checked_sub(start).filter(|&n| n > 0)?;
        let len = self.piece_len(id);
        // Take a sliver that would be left behind along with this piece: a tiny piece later
        // costs a whole request round trip.
        let len = if available <= len.saturating_add(self.cfg.min_piece / 2).min(self.cfg.max_piece) {
            available
        } else {
            len.min(available)
        };
        let end = start + len;
        self.pool.remove(start, end);
        let piece = self.next_piece;
        self.next_piece += 1;
        self.pieces.insert(
            piece,
            Piece {
                end,
                holders: Vec::new(),
            },
        );
        Some(self.hold(id, piece, start, now))
    }

    /// Bytes for `id`'s next piece: its rate × `target_piece_time`, clamped; in the endgame
    /// no more than its fair share of the outstanding bytes, so that all sources finish
    /// together instead of one big last piece making the tail. With a window, the share is
    /// of half the window, so that all sources keep working while the front piece finishes.
    fn piece_len(&self, id: SourceId) -> u64 {
        let cfg = &self.cfg;
        let Some(rate) = self.sources.get(&id).and_then(Source::known_rate) else {
            return cfg.initial_piece;
        };
        let mut len = (rate * cfg.target_piece_time.as_secs_f64()) as u64;
        let total_rate: f64 = self.sources.values().filter_map(Source::known_rate).sum();
        if total_rate > 0.0 {
            let ahead = self.outstanding().min(cfg.window.map_or(u64::MAX, |w| w / 2));
            let share = (ahead as f64 * rate / total_rate).ceil() as u64;
            len = len.min(share);
        }
        len.max(cfg.min_piece).min(cfg.max_piece)
    }

    /// Bytes not done yet that someone still has to fetch: the pool plus in-flight tails.
    fn outstanding(&self) -> u64 {
        let in_flight: u64 = self
            .pieces
            .values()
            .map(|p| p.end - p.holders.iter().map(Holder::offset).max().unwrap_or(p.end))
            .sum();
        self.pool.len() + in_flight
    }

    /// The endgame: duplicate the unreceived tail of the single-held piece expected to finish
    /// last, if `id` is expected to finish it sooner, start-up allowance included.
    ///
    /// When free bytes remain but lie beyond the window, the piece that holds the window back
    /// (lowest offset) is the one to race instead: finishing it is what lets the stream move.
    fn duplicate(&mut self, id: SourceId, now: Instant) -> Option<Assignment> {
        let my_rate = self.sources.get(&id)?.known_rate().filter(|r| *r > 0.0)?;
        let window_blocked = self.pool.len() > 0;
        let mut latest: Option<(f64, PieceId, u64)> = None;
        for (&piece, p) in &self.pieces {
            let [holder] = p.holders.as_slice() else {
                continue;
            };
            let from = holder.offset();
            if holder.source == id || from >= p.end {
                continue;
            }
            let Some(rate) = self.sources.get(&holder.source).and_then(|s| s.projected_rate(now)) else {
                continue; // too new to judge
            };
            let remaining = (p.end - from) as f64;
            let eta = if rate > 0.0 { remaining / rate } else { f64::INFINITY };
            let better = |(latest_eta, _, latest_from): (f64, PieceId, u64)| match window_blocked {
                true => from < latest_from,
                false => eta > latest_eta,
            };
            if latest.is_none_or(better) {
                latest = Some((eta, piece, from));
            }
        }
        let (eta, piece, from) = latest?;
        let mine = (self.pieces[&piece].end - from) as f64 / my_rate + self.cfg.startup.as_secs_f64();
        (mine < eta).then(|| self.hold(id, piece, from, now))
    }

    /// Makes `id` a holder of `piece` from `start` and starts its job.
    fn hold(&mut self, id: SourceId, piece: PieceId, start: u64, now: Instant) -> Assignment {
        let p = self.pieces.get_mut(&piece).expect("hold: live piece");
        let duplicate = !p.holders.is_empty();
        p.holders.push(Holder {
            source: id,
            start,
            received: 0,
        });
        let assignment = Assignment {
            piece,
            start,
            end: p.end,
            duplicate,
        };
        let cfg = &self.cfg;
        let source = self.sources.get_mut(&id).expect("hold: known source");
        let target = cfg.target_piece_time.as_secs_f64();
        let expected = match source.known_rate() {
            Some(rate) if rate > 0.0 => assignment.len() as f64 / rate,
            _ => target,
        };
        source.job = Some(Job {
            piece,
            last_progress: now,
            stall_after: stall_timeout(
                cfg.stall_min,
                cfg.stall_factor,
                expected.min(STALL_EXPECTED_CAP * target),
            ),
            clock: now,
            sample_bytes: 0,
            sample_time: Duration::ZERO,
        });
        assignment
    }

    /// `id`'s holder entry for `piece`, if that is what `id` has in flight.
    fn holder_mut(&mut self, id: SourceId, piece: PieceId) -> Option<&mut Holder> {
        let job = self.sources.get(&id)?.job.as_ref()?;
        if job.piece != piece {
            return None;
        }
        self.pieces.get_mut(&piece)?.holders.iter_mut().find(|h| h.source == id)
    }

    /// Records `new > old.received` received bytes: done bytes, rate sample, stall clock.
    fn set_received(&mut self, id: SourceId, piece: PieceId, old: Holder, new: u64, now: Instant) {
        if let Some(holder) = self.holder_mut(id, piece) {
            holder.received = new;
        }
        self.done.insert(old.offset(), old.start + new);
        if let Some(source) = self.sources.get_mut(&id) {
            source.account(new - old.received, now);
            if let Some(job) = source.job.as_mut() {
                job.last_progress = job.last_progress.max(now);
            }
        }
    }

    /// `winner` finished `piece`: the piece is retired and any other holder is cancelled.
    /// When that completes the file, every request still running (possible after a late
    /// `mark_done`) is cancelled too.
    fn finish(&mut self, winner: SourceId, piece: PieceId, now: Instant) -> Vec<Cancel> {
        let Some(p) = self.pieces.remove(&piece) else {
            return Vec::new();
        };
        let mut cancels = Vec::new();
        for holder in p.holders {
            if let Some(source) = self.sources.get_mut(&holder.source) {
                source.end_job(0, now);
            }
            if holder.source != winner {
                cancels.push(Cancel {
                    source: holder.source,
                    piece,
                });
            }
        }
        if self.is_done() {
            let running: Vec<SourceId> = self
                .sources
                .iter()
                .filter(|(_, s)| s.job.is_some())
                .map(|(&id, _)| id)
                .collect();
            for id in running {
                cancels.extend(self.release(id, now).map(|piece| Cancel { source: id, piece }));
            }
        }
        cancels
    }

    /// Ends `id`'s job, if any, as a failure: its unreceived bytes go back to the pool unless
    /// the piece's other holder covers them. Returns the piece.
    fn release(&mut self, id: SourceId, now: Instant) -> Option<PieceId> {
        let job = self.sources.get_mut(&id)?.end_job(0, now)?;
        let p = self.pieces.get_mut(&job.piece)?;
        let at = p.holders.iter().position(|h| h.source == id)?;
        let holder = p.holders.remove(at);
        if p.holders.is_empty() {
            let end = p.end;
            self.pieces.remove(&job.piece);
            for (start, end) in self.done.gaps(holder.offset(), end) {
                self.pool.insert(start, end);
            }
        }
        Some(job.piece)
    }

    /// Checks the planner's internal consistency (for tests and fuzzing): every byte is in
    /// exactly one of done / pooled / in flight, pieces have 1..=2 distinct holders that
    /// know they hold them, and assignments stay inside the file.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut all = self.done.clone();
        for (start, end) in self.pool.iter() {
            if end > self.size || self.done.overlaps(start, end) {
                return Err(format!("pool range {start}..{end} outside the file or done"));
            }
            all.insert(start, end);
        }
        for (&piece, p) in &self.pieces {
            if p.holders.is_empty() || p.holders.len() > MAX_HOLDERS || p.end > self.size {
                return Err(format!("piece {piece}: {p:?}"));
            }
            for (i, h) in p.holders.iter().enumerate() {
                let job_piece = self
                    .sources
                    .get(&h.source)
                    .and_then(|s| s.job.as_ref())
                    .map(|j| j.piece);
                if job_piece != Some(piece) || h.start >= p.end || h.offset() > p.end {
                    return Err(format!("piece {piece}: holder {h:?} inconsistent"));
                }
                if p.holders[..i].iter().any(|o| o.source == h.source) {
                    return Err(format!("piece {piece}: source {} holds it twice", h.source));
                }
                if self.pool.overlaps(h.offset(), p.end) {
                    return Err(format!("piece {piece}: in flight and pooled"));
                }
                all.insert(h.offset(), p.end);
            }
        }
        for (&id, source) in &self.sources {
            if let Some(job) = &source.job {
                if !self
                    .pieces
                    .get(&job.piece)
                    .is_some_and(|p| p.holders.iter().any(|h| h.source == id))
                {
                    return Err(format!("source {id} holds piece {} that does not know it", job.piece));
                }
            }
        }
        if self.size > 0 && all.iter().collect::<Vec<_>>() != [(0, self.size)] {
            return Err(format!(
                "bytes lost: done ∪ pool ∪ in flight = {:?}",
                all.iter().collect::<Vec<_>>()
            ));
        }
        Ok(())
    }
}

/// Disjoint, merged half-open ranges with their total length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RangeSet {
    map: BTreeMap<u64, u64>,
    len: u64,
}

impl RangeSet {
    fn len(&self) -> u64 {
        self.len
    }

    fn first(&self) -> Option<(u64, u64)> {
        self.map.first_key_value().map(|(&s, &e)| (s, e))
    }

    fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= end {
                return;
            }
            if e >= start {
                self.map.remove(&s);
                self.len -= e - s;
                start = s;
            }
        }
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            self.map.remove(&s);
            self.len -= e - s;
            end = end.max(e);
        }
        self.map.insert(start, end);
        self.len += end - start;
    }

    fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        if let Some((&s, &e)) = self.map.range(..start).next_back() {
            if e > start {
                self.map.insert(s, start);
                self.len -= e - start;
                if e > end {
                    self.map.insert(end, e);
                    self.len += e - end;
                    return;
                }
            }
        }
        while let Some((&s, &e)) = self.map.range(start..end).next() {
            self.map.remove(&s);
            self.len -= e - s;
            if e > end {
                self.map.insert(end, e);
                self.len += e - end;
            }
        }
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        start < end && self.map.range(..end).next_back().is_some_and(|(_, &e)| e > start)
    }

    /// The parts of `[start, end)` not in the set.
    fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut at = start;
        let first = self.map.range(..=start).next_back().map(|(&s, _)| s).unwrap_or(start);
        for (&s, &e) in self.map.range(first..end) {
            if s > at {
                gaps.push((at, s));
            }
            at = at.max(e);
        }
        if at < end {
            gaps.push((at, end));
        }
        gaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const MB: f64 = 1_000_000.0;
    const STEP: Duration = Duration::from_millis(10);

    // ------------------------------------------------------------ simulator

    /// One simulated link: bytes flow at `rate` once a request's `startup` (RTT plus server
    /// think time) has passed; after `dies_at` nothing flows ever again.
    #[derive(Clone)]
    struct Link {
        rate: f64,
        startup: Duration,
        dies_at: Option<Duration>,
        removed_at: Option<Duration>,
    }

    fn link(mb_per_s: f64, startup_ms: u64) -> Link {
        Link {
            rate: mb_per_s * MB,
            startup: Duration::from_millis(startup_ms),
            dies_at: None,
            removed_at: None,
        }
    }

    struct Job {
        a: Assignment,
        received: u64,
        since: Duration,
        carry: f64,
    }

    #[derive(Debug)]
    struct Outcome {
        finish: Duration,
        /// Bytes per second over the last 10% of the file.
        tail_rate: f64,
        fetched: u64,
        stalls: usize,
        assignments: Vec<(SourceId, Assignment)>,
    }

    /// Steps virtual time by 10 ms: delivers bytes per link rate, reports progress and
    /// completions, checks stalls, and lets idle links ask for work.
    fn simulate(size: u64, cfg: PlannerConfig, links: &[Link], setup: impl FnOnce(&mut Planner)) -> Outcome {
        let window = cfg.window;
        let mut planner = Planner::new(size, cfg);
        setup(&mut planner);
        for id in 0..links.len() {
            planner.add_source(id, None);
        }
        let base = Instant::now();
        let mut jobs: Vec<Option<Job>> = links.iter().map(|_| None).collect();
        let mut alive: Vec<bool> = vec![true; links.len()];
        let (mut t, mut t90, mut fetched, mut stalls) = (Duration::ZERO, None, 0, 0);
        let mut assignments = Vec::new();
        let drop_cancelled = |jobs: &mut Vec<Option<Job>>, cancels: Vec<Cancel>| {
            for c in cancels {
                let job = jobs[c.source].take().expect("cancel of a live job");
                assert_eq!(job.a.piece, c.piece);
            }
        };
        while !planner.is_done() {
            assert!(t < Duration::from_secs(3600), "simulation did not finish");
            t += STEP;
            let now = base + t;
            for (id, l) in links.iter().enumerate() {
                if alive[id] && l.removed_at.is_some_and(|at| t >= at) {
                    alive[id] = false;
                    jobs[id] = None;
                    let cancels = planner.remove_source(id);
                    assert!(cancels.len() <= 1);
                }
            }
            for (id, l) in links.iter().enumerate() {
                let Some(job) = jobs[id].as_mut() else { continue };
                if t < job.since + l.startup || l.dies_at.is_some_and(|at| t >= at) {
                    continue;
                }
                let bytes = l.rate * STEP.as_secs_f64() + job.carry;
                job.carry = bytes.fract();
                let before = job.received;
                job.received = (job.received + bytes as u64).min(job.a.len());
                fetched += job.received - before;
                let (piece, received, len) = (job.a.piece, job.received, job.a.len());
                let cancels = if received == len {
                    jobs[id] = None;
                    planner.complete(id, piece, now)
                } else {
                    planner.progress(id, piece, received, now)
                };
                drop_cancelled(&mut jobs, cancels);
            }
            let cancels = planner.check_stalls(now);
            stalls += cancels.len();
            drop_cancelled(&mut jobs, cancels);
            for id in 0..links.len() {
                if !alive[id] || jobs[id].is_some() {
                    continue;
                }
                let limit = window.map_or(size, |w| planner.delivered().saturating_add(w));
                if let Next::Fetch(a) = planner.next(id, now) {
                    assert!(a.start < a.end && a.end <= size && a.end <= limit, "{a:?}");
                    assignments.push((id, a));
                    jobs[id] = Some(Job {
                        a,
                        received: 0,
                        since: t,
                        carry: 0.0,
                    });
                }
            }
            planner.check_invariants().unwrap();
            let done: u64 = planner.done_ranges().iter().map(|(s, e)| e - s).sum();
            if t90.is_none() && done as f64 >= 0.9 * size as f64 {
                t90 = Some(t);
            }
        }
        let tail = t
            .saturating_sub(t90.unwrap_or_default())
            .as_secs_f64()
            .max(STEP.as_secs_f64());
        Outcome {
            finish: t,
            tail_rate: 0.1 * size as f64 / tail,
            fetched,
            stalls,
            assignments,
        }
    }

    /// Prints the outcome against the ideal: `need` bytes at the sum of `links`' rates.
    fn report(name: &str, need: u64, links: &[Link], out: &Outcome) -> f64 {
        let sum: f64 = links.iter().map(|l| l.rate).sum();
        let ideal = need as f64 / sum;
        let finish = out.finish.as_secs_f64();
        println!(
            "{name}: finish {finish:.2} s vs ideal {ideal:.2} s ({:.1}% of the sum rate); tail {:.2} MB/s = {:.0}% \
             of the sum; fetched {:.1}% of what was needed; {} pieces; {} stalls",
            100.0 * ideal / finish,
            out.tail_rate / MB,
            100.0 * out.tail_rate / sum,
            100.0 * out.fetched as f64 / need as f64,
            out.assignments.len(),
            out.stalls,
        );
        finish / ideal
    }

    #[test]
    fn three_sources_reach_the_sum_rate_without_a_slow_tail() {
        let size = 50_000_000;
        let links = [link(0.5, 50), link(2.5, 50), link(2.5, 50)];
        let out = simulate(size, PlannerConfig::default(), &links, |_| {});
        let ratio = report("0.5+2.5+2.5 MB/s, 50 MB", size, &links, &out);
        assert!(ratio < 1.2, "finish is {ratio:.2}× the ideal");
        assert_eq!(out.stalls, 0);
        // Duplicates waste little: the endgame duplicates tails of at most one piece per source.
        assert!(out.fetched < size + size / 10, "fetched {}", out.fetched);
    }

    #[test]
    fn slow_source_with_startup_delay_never_slows_the_fast_one() {
        let size = 50_000_000;
        let fast = link(50.0 / 8.0, 20);
        let slow = link(5.0 / 8.0, 300);
        let alone = simulate(size, PlannerConfig::default(), std::slice::from_ref(&fast), |_| {});
        report("50 Mbit alone", size, std::slice::from_ref(&fast), &alone);
        let both = simulate(size, PlannerConfig::default(), &[fast.clone(), slow.clone()], |_| {});
        report("50 Mbit + 5 Mbit (300 ms startup)", size, &[fast, slow], &both);
        assert!(both.finish <= alone.finish, "{:?} > {:?}", both.finish, alone.finish);
        // The small file: the slow source's first 1 MiB piece would take ~2 s on its own.
        let size = 4_000_000;
        let fast = link(50.0 / 8.0, 20);
        let slow = link(5.0 / 8.0, 300);
        let alone = simulate(size, PlannerConfig::default(), std::slice::from_ref(&fast), |_| {});
        let both = simulate(size, PlannerConfig::default(), &[fast.clone(), slow.clone()], |_| {});
        report("4 MB, 50 Mbit + 5 Mbit (300 ms startup)", size, &[fast, slow], &both);
        assert!(both.finish <= alone.finish, "{:?} > {:?}", both.finish, alone.finish);
    }

    #[test]
    fn a_source_that_stalls_forever_is_detected_and_its_piece_reassigned() {
        let size = 30_000_000;
        let mut dead = link(2.5, 50);
        dead.dies_at = Some(Duration::from_millis(3_300));
        let links = [link(0.5, 50), dead, link(2.5, 50)];
        let out = simulate(size, PlannerConfig::default(), &links, |_| {});
        report(
            "2.5 MB/s source stalls forever at 3.3 s (ideal: the 2 healthy ones)",
            size,
            &[links[0].clone(), links[2].clone()],
            &out,
        );
        assert!(out.stalls >= 1, "the stall was never detected");
        let healthy = [link(0.5, 50), link(2.5, 50)];
        let sum: f64 = healthy.iter().map(|l| l.rate).sum();
        assert!(out.finish.as_secs_f64() < 1.3 * size as f64 / sum + 10.0);
    }

    #[test]
    fn a_removed_source_leaves_the_rest_to_finish() {
        let size = 30_000_000;
        let mut gone = link(2.5, 50);
        gone.removed_at = Some(Duration::from_millis(2_500));
        let links = [link(0.5, 50), gone, link(2.5, 50)];
        let out = simulate(size, PlannerConfig::default(), &links, |_| {});
        report(
            "2.5 MB/s source removed at 2.5 s (ideal: the 2 others)",
            size,
            &[links[0].clone(), links[2].clone()],
            &out,
        );
        assert!(out
            .assignments
            .iter()
            .all(|(id, _)| *id != 1 || out.finish > Duration::from_millis(2_500)));
    }

    #[test]
    fn resume_fetches_only_the_missing_ranges() {
        let size = 20_000_000;
        let have = [(0, 3_000_000), (5_000_000, 12_000_000), (19_000_000, 20_000_000)];
        let links = [link(0.5, 50), link(2.5, 50)];
        let out = simulate(size, PlannerConfig::default(), &links, |p| {
            for (s, e) in have {
                p.mark_done(s, e);
            }
        });
        report("resume with 11 of 20 MB on disk", 9_000_000, &links, &out);
        for (_, a) in &out.assignments {
            assert!(
                have.iter().all(|&(s, e)| a.end <= s || a.start >= e),
                "{a:?} refetches done bytes"
            );
        }
        assert!(
            out.fetched >= 9_000_000 && out.fetched < 10_000_000,
            "fetched {}",
            out.fetched
        );
    }

    #[test]
    fn window_bounds_the_lookahead() {
        let size = 40_000_000;
        let cfg = PlannerConfig {
            window: Some(8_000_000),
            ..PlannerConfig::default()
        };
        let links = [link(0.5, 50), link(2.5, 50), link(2.5, 50)];
        // `simulate` asserts every assignment ends within `delivered() + window`.
        let out = simulate(size, cfg, &links, |_| {});
        let ratio = report("window 8 MB", size, &links, &out);
        assert!(ratio < 1.5, "finish is {ratio:.2}× the ideal");
    }

    #[test]
    fn first_pieces_follow_prior_rates_and_later_ones_measured_rates() {
        let cfg = PlannerConfig::default();
        let mut p = Planner::new(100_000_000, cfg.clone());
        p.add_source(0, None);
        p.add_source(1, Some(4.0 * MB));
        let now = Instant::now();
        let Next::Fetch(a) = p.next(0, now) else { panic!() };
        assert_eq!((a.start, a.len(), a.duplicate), (0, cfg.initial_piece, false));
        let Next::Fetch(b) = p.next(1, now) else { panic!() };
        assert_eq!((b.start, b.len()), (a.end, 6_000_000));
        // Source 0 delivers 1 MB/s for a second.
        for ms in 1..=10 {
            p.progress(0, a.piece, ms * 100_000, now + Duration::from_millis(ms * 100));
        }
        let rate = p.rate(0).unwrap();
        assert!((rate - MB).abs() < 1.0, "{rate}");
        assert!(p.complete(0, a.piece, now + Duration::from_secs(1)).is_empty());
        let Next::Fetch(c) = p.next(0, now + Duration::from_secs(1)) else {
            panic!()
        };
        assert_eq!((c.start, c.len()), (b.end, 1_500_000));
        assert_eq!(p.delivered(), cfg.initial_piece);
    }

    #[test]
    fn duplicate_race_cancels_the_loser_and_stale_reports_are_ignored() {
        let mut p = Planner::new(2_000_000, PlannerConfig::default());
        let now = Instant::now();
        p.add_source(0, Some(0.1 * MB));
        p.add_source(1, Some(10.0 * MB));
        let Next::Fetch(slow) = p.next(0, now) else { panic!() };
        assert_eq!(slow.len(), 256 * 1024);
        let Next::Fetch(fast) = p.next(1, now) else { panic!() };
        assert_eq!((fast.start, fast.end), (slow.end, 2_000_000));
        let t = now + Duration::from_millis(200);
        p.progress(0, slow.piece, 20_000, t);
        assert!(p.complete(1, fast.piece, t).is_empty());
        let Next::Fetch(dup) = p.next(1, t) else { panic!() };
        assert_eq!(
            (dup.piece, dup.start, dup.end, dup.duplicate),
            (slow.piece, 20_000, slow.end, true)
        );
        // A piece never gets a third holder.
        p.add_source(2, Some(100.0 * MB));
        assert_eq!(p.next(2, t), Next::Wait);
        let cancels = p.complete(1, dup.piece, t + Duration::from_millis(50));
        assert_eq!(
            cancels,
            [Cancel {
                source: 0,
                piece: slow.piece
            }]
        );
        assert!(p.is_done());
        assert_eq!(p.done_ranges(), [(0, 2_000_000)]);
        // The loser's reports raced with the cancel.
        assert!(p.progress(0, slow.piece, 30_000, t).is_empty());
        assert!(p.complete(0, slow.piece, t).is_empty());
        p.fail(0, slow.piece, t);
        assert!(p.check_stalls(t + Duration::from_secs(100)).is_empty());
        assert_eq!(p.next(0, t), Next::Done);
    }

    #[test]
    fn failure_returns_the_unreceived_part() {
        let mut p = Planner::new(10_000_000, PlannerConfig::default());
        let now = Instant::now();
        p.add_source(0, None);
        let Next::Fetch(a) = p.next(0, now) else { panic!() };
        p.progress(0, a.piece, 1000, now);
        p.fail(0, a.piece, now);
        assert_eq!(p.done_ranges(), [(0, 1000)]);
        let Next::Fetch(b) = p.next(0, now) else { panic!() };
        assert_eq!(b.start, 1000);
        assert_eq!(
            p.remove_source(0),
            [Cancel {
                source: 0,
                piece: b.piece
            }]
        );
        assert_eq!(p.next(0, now), Next::Wait);
        p.check_invariants().unwrap();
    }

    #[test]
    fn completing_the_file_cancels_whatever_still_runs() {
        let mut p = Planner::new(3_000_000, PlannerConfig::default());
        let now = Instant::now();
        p.add_source(0, None);
        p.add_source(1, None);
        let Next::Fetch(a) = p.next(0, now) else { panic!() };
        let Next::Fetch(b) = p.next(1, now) else { panic!() };
        p.mark_done(b.start, 3_000_000);
        assert!(!p.is_done());
        assert_eq!(
            p.complete(0, a.piece, now),
            [Cancel {
                source: 1,
                piece: b.piece
            }]
        );
        assert!(p.is_done());
        p.check_invariants().unwrap();
    }

    // ------------------------------------------------------------ range set vs a bitmap

    proptest! {
        #[test]
        fn range_set_matches_a_bitmap(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..64), 0..60)) {
            let mut set = RangeSet::default();
            let mut bits = [false; 64];
            for (insert, a, b) in ops {
                let (s, e) = (a.min(b), a.max(b));
                prop_assert_eq!(set.overlaps(s, e), bits[s as usize..e as usize].iter().any(|&x| x));
                let gaps: u64 = set.gaps(s, e).iter().map(|(s, e)| e - s).sum();
                prop_assert_eq!(gaps, bits[s as usize..e as usize].iter().filter(|&&x| !x).count() as u64);
                if insert { set.insert(s, e) } else { set.remove(s, e) }
                bits[s as usize..e as usize].iter_mut().for_each(|x| *x = insert);
                let mut expect = RangeSet::default();
                for (i, _) in bits.iter().enumerate().filter(|(_, &x)| x) {
                    expect.map.insert(i as u64, i as u64 + 1);
                }
                let merged: Vec<(u64, u64)> = set.iter().collect();
                prop_assert!(merged.windows(2).all(|w| w[0].1 < w[1].0), "not merged: {:?}", merged);
                prop_assert_eq!(set.len(), bits.iter().filter(|&&x| x).count() as u64);
                for (s, e) in merged {
                    prop_assert!(bits[s as usize..e as usize].iter().all(|&x| x));
                }
            }
        }
    }

    // ------------------------------------------------------------ operation sequences

    const SOURCES: SourceId = 4;

    #[derive(Debug, Clone)]
    enum Op {
        Add(SourceId, Option<u32>),
        Remove(SourceId),
        Next(SourceId),
        /// Received bytes grow by this many 1/256ths of what is left.
        Progress(SourceId, u8),
        Complete(SourceId),
        Fail(SourceId),
        /// A report for a piece the source does not hold (it raced with a cancel).
        Stale(SourceId, PieceId, u8),
        Advance(u16),
        CheckStalls,
        MarkDone(u16, u16),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let id = 0..SOURCES;
        prop_oneof![
            2 => (id.clone(), proptest::option::of(1u32..10_000_000)).prop_map(|(i, r)| Op::Add(i, r)),
            1 => id.clone().prop_map(Op::Remove),
            6 => id.clone().prop_map(Op::Next),
            6 => (id.clone(), any::<u8>()).prop_map(|(i, f)| Op::Progress(i, f)),
            3 => id.clone().prop_map(Op::Complete),
            1 => id.clone().prop_map(Op::Fail),
            1 => (id.clone(), 0u64..20, 0u8..3).prop_map(|(i, p, k)| Op::Stale(i, p, k)),
            4 => (1u16..3000).prop_map(Op::Advance),
            2 => Just(Op::CheckStalls),
            1 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::MarkDone(a, b)),
        ]
    }

    /// The engine as the tests see it: what each source holds and which bytes were really
    /// received, to check the planner against.
    struct Model {
        planner: Planner,
        size: u64,
        window: Option<u64>,
        base: Instant,
        t: Duration,
        added: BTreeSet<SourceId>,
        held: BTreeMap<SourceId, (Assignment, u64)>,
        received: RangeSet,
        delivered: u64,
    }

    impl Model {
        fn new(size: u64, window: Option<u64>) -> Model {
            let cfg = PlannerConfig {
                min_piece: 1_000,
                initial_piece: 4_000,
                max_piece: 50_000,
                window,
                ..PlannerConfig::default()
            };
            Model {
                planner: Planner::new(size, cfg),
                size,
                window,
                base: Instant::now(),
                t: Duration::ZERO,
                added: BTreeSet::new(),
                held: BTreeMap::new(),
                received: RangeSet::default(),
                delivered: 0,
            }
        }

        fn now(&self) -> Instant {
            self.base + self.t
        }

        fn cancelled(&mut self, cancels: Vec<Cancel>) {
            for c in cancels {
                let held = self.held.remove(&c.source).map(|(a, _)| a.piece);
                assert_eq!(held, Some(c.piece), "cancel {c:?} of nothing held");
            }
        }

        fn apply(&mut self, op: &Op) {
            let now = self.now();
            match *op {
                Op::Add(id, prior) => {
                    self.planner.add_source(id, prior.map(f64::from));
                    self.added.insert(id);
                }
                Op::Remove(id) => {
                    let cancels = self.planner.remove_source(id);
                    let held = self.held.remove(&id).map(|(a, _)| a.piece);
                    assert_eq!(
                        cancels.iter().map(|c| (c.source, c.piece)).collect::<Vec<_>>(),
                        held.map(|p| (id, p)).into_iter().collect::<Vec<_>>()
                    );
                    self.added.remove(&id);
                }
                Op::Next(id) => {
                    let limit = self
                        .window
                        .map_or(self.size, |w| self.planner.delivered().saturating_add(w));
                    self.held.remove(&id);
                    match self.planner.next(id, now) {
                        Next::Fetch(a) => {
                            assert!(self.added.contains(&id), "work for unknown source {id}");
                            assert!(
                                a.start < a.end && a.end <= self.size && a.end <= limit,
                                "{a:?} limit {limit}"
                            );
                            let holders = self.held.values().filter(|(h, _)| h.piece == a.piece).count();
                            assert!(holders < MAX_HOLDERS, "third holder for {a:?}");
                            assert_eq!(a.duplicate, holders == 1);
                            self.held.insert(id, (a, 0));
                        }
                        Next::Done => assert!(self.planner.is_done()),
                        Next::Wait => assert!(!self.planner.is_done()),
                    }
                }
                Op::Progress(id, fraction) => {
                    let Some((a, received)) = self.held.get(&id).copied() else {
                        return;
                    };
                    let new = received + (a.len() - received) * u64::from(fraction) / 256;
                    self.received.insert(a.start, a.start + new);
                    self.held.insert(id, (a, new));
                    let cancels = self.planner.progress(id, a.piece, new, now);
                    if new == a.len() {
                        self.held.remove(&id);
                    }
                    self.cancelled(cancels);
                }
                Op::Complete(id) => {
                    let Some((a, _)) = self.held.remove(&id) else { return };
                    self.received.insert(a.start, a.end);
                    let cancels = self.planner.complete(id, a.piece, now);
                    self.cancelled(cancels);
                }
                Op::Fail(id) => {
                    if let Some((a, _)) = self.held.remove(&id) {
                        self.planner.fail(id, a.piece, now);
                    }
                }
                Op::Stale(id, piece, kind) => {
                    if self.held.get(&id).is_some_and(|(a, _)| a.piece == piece) {
                        return;
                    }
                    match kind {
                        0 => assert!(self.planner.progress(id, piece, u64::MAX, now).is_empty()),
                        1 => assert!(self.planner.complete(id, piece, now).is_empty()),
                        _ => self.planner.fail(id, piece, now),
                    }
                }
                Op::Advance(ms) => self.t += Duration::from_millis(u64::from(ms)),
                Op::CheckStalls => {
                    let cancels = self.planner.check_stalls(now);
                    self.cancelled(cancels);
                }
                Op::MarkDone(a, b) => {
                    let (s, e) = (
                        self.size * u64::from(a.min(b)) / 65535,
                        self.size * u64::from(a.max(b)) / 65535,
                    );
                    self.received.insert(s, e);
                    self.planner.mark_done(s, e);
                }
            }
            self.check();
        }

        fn check(&mut self) {
            let p = &self.planner;
            if let Err(e) = p.check_invariants() {
                panic!("{e}");
            }
            assert!(p.delivered() >= self.delivered, "delivered went backwards");
            self.delivered = p.delivered();
            for (s, e) in p.done_ranges() {
                assert!(
                    self.received.gaps(s, e).is_empty(),
                    "{s}..{e} is done but was never received"
                );
            }
            for (a, _) in self.held.values() {
                assert!(self.held.values().filter(|(h, _)| h.piece == a.piece).count() <= MAX_HOLDERS);
            }
            if p.is_done() {
                assert_eq!(self.received.gaps(0, self.size), []);
            }
        }

        /// A well-behaved engine: every source completes what it is given. Must finish.
        fn drive_to_completion(&mut self) {
            if self.added.is_empty() {
                self.apply(&Op::Add(0, None));
            }
            let ids: Vec<SourceId> = self.added.iter().copied().collect();
            for _ in 0..100_000 {
                if self.planner.is_done() {
                    return;
                }
                self.apply(&Op::Advance(10));
                for &id in &ids {
                    if self.held.contains_key(&id) {
                        self.apply(&Op::Complete(id));
                    } else {
                        self.apply(&Op::Next(id));
                    }
                }
            }
            panic!("no progress: {:?}", self.planner);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn random_operations_keep_every_invariant(
            size in prop_oneof![1u64..100, 1u64..200_000],
            window in proptest::option::of(1u64..60_000),
            ops in proptest::collection::vec(arb_op(), 0..120),
        ) {
            let mut model = Model::new(size, window);
            for op in &ops {
                model.apply(op);
            }
            model.drive_to_completion();
            prop_assert!(model.planner.is_done());
            prop_assert_eq!(model.planner.done_ranges(), vec![(0, size)]);
        }
    }
}

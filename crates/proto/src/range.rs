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
            self.rate = fold(self.known_rate(), job.sample_bytes, job.sample_time);
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
    Duration::try_from_secs_f64(factor * expected_secs).unwrap_or(Duration::MAX).max(floor)
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
    pub fn remove_source(&mut self, id: SourceId, now: Instant) -> Vec<Cancel> {
        let cancels = self.release(id, now).map(|piece| Cancel { source: id, piece }).into_iter().collect();
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
        self.pieces.insert(piece, Piece { end, holders: Vec::new() });
        Some(self.hold(id, piece, start, now))
    }

    /// Bytes for `id`'s next piece: its rate × `target_piece_time`, clamped; in the endgame
    /// no more than its fair share of the outstanding bytes, so that all sources finish
    /// together instead of one big last piece making the tail.
    fn piece_len(&self, id: SourceId) -> u64 {
        let cfg = &self.cfg;
        let Some(rate) = self.sources.get(&id).and_then(Source::known_rate) else {
            return cfg.initial_piece;
        };
        let mut len = (rate * cfg.target_piece_time.as_secs_f64()) as u64;
        let total_rate: f64 = self.sources.values().filter_map(Source::known_rate).sum();
        if total_rate > 0.0 {
            let share = (self.outstanding() as f64 * rate / total_rate).ceil() as u64;
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
    fn duplicate(&mut self, id: SourceId, now: Instant) -> Option<Assignment> {
        let my_rate = self.sources.get(&id)?.known_rate().filter(|r| *r > 0.0)?;
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
            if latest.is_none_or(|(latest_eta, ..)| eta > latest_eta) {
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
        p.holders.push(Holder { source: id, start, received: 0 });
        let assignment = Assignment { piece, start, end: p.end, duplicate };
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
            stall_after: stall_timeout(cfg.stall_min, cfg.stall_factor, expected.min(STALL_EXPECTED_CAP * target)),
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
                cancels.push(Cancel { source: holder.source, piece });
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
                let job_piece = self.sources.get(&h.source).and_then(|s| s.job.as_ref()).map(|j| j.piece);
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
                if !self.pieces.get(&job.piece).is_some_and(|p| p.holders.iter().any(|h| h.source == id)) {
                    return Err(format!("source {id} holds piece {} that does not know it", job.piece));
                }
            }
        }
        if self.size > 0 && all.iter().collect::<Vec<_>>() != [(0, self.size)] {
            return Err(format!("bytes lost: done ∪ pool ∪ in flight = {:?}", all.iter().collect::<Vec<_>>()));
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
mod tests;

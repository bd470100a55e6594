//! Tail stealing: the end of a download the proxy forwards whole is fetched, at the same time,
//! over an uplink that went idle.
//!
//! A large plain-HTTP `GET` that [`split`] did not split (it came in a burst of new
//! connections, the links were busy, or another split held the slot) runs on one uplink. When
//! the other uplinks finish their own work first, that download is all that is left, on one
//! link: the slow tail of a client that starts a dozen downloads at once through the gateway.
//!
//! So while such a body is forwarded, every [`CHECK`] the forwarder looks for a source with
//! nothing open on it. When there is one and the body still has at least [`MIN_LEFT_TIME`] to
//! go at its own rate, that source fetches the body's end, `[meet, size)`, by ranges with
//! `If-Range` (the range engine of `booster get`), `meet` chosen so that both parts finish
//! together at the rates seen. The original connection goes on from the front.
//!
//! Nothing is committed: the two race. Whichever has the next byte for the client gives it,
//! and the original connection keeps reading until the body is complete (stolen bytes ahead of
//! it in the buffer do not prove the thief faster, only earlier; dropping the original on that
//! once left the rest to a slow link). When the stolen end completes the body first, the
//! original connection is closed mid-body. A steal that fails (a range answered with anything
//! but the expected `206`, a changed entity, a reset) just ends, and the original connection
//! delivers the rest itself: a steal can make a download shorter, never wrong, and never cut
//! one off that would have completed without it. The price is bytes fetched twice where the
//! two overlap, at most the stolen end ([`MAX_STOLEN`]).

use crate::{
    dial::Metered,
    fetch::{self, Connector, NodeConnector},
    http_proxy::BodyError,
    proxy::Ctx,
    source::Source,
    split::{self, Steal},
};
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How often a body forwarded whole looks for an idle uplink.
const CHECK: Duration = Duration::from_millis(250);
/// A body is stolen from only after it has run this long: its own rate is known by then, and
/// the connections of a burst have found their uplinks.
const SETTLE: Duration = Duration::from_secs(1);
/// ... and only while it has at least this long to go at that rate: a steal costs a connection
/// and a request before its first byte.
const MIN_LEFT_TIME: Duration = Duration::from_secs(1);
/// Fewest bytes left worth a steal.
const MIN_LEFT: u64 = 512 << 10;
/// Most bytes left for a steal: a larger rest is a split's work, and the stolen end waits in
/// memory until the front meets it.
const MAX_LEFT: u64 = 32 << 20;
/// Most bytes stolen (and so held) for one body: the end is never longer than this.
const MAX_STOLEN: u64 = 8 << 20;
/// Chunks between the range engine and the forwarder; the bytes held are bounded by
/// [`MAX_STOLEN`] (chunks are shrunk to their length when held), not by this.
const CHANNEL: usize = 64;
/// No steal while the forwarder spent more than this share of the last second writing to the
/// client: the client, not the uplink, sets the pace, and a thief would only fill memory.
const CLIENT_BOUND: f64 = 0.25;
/// Bytes read from the original connection at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What became of a body forwarded with a chance of a steal.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The original connection delivered the whole body: it may carry the next request.
    Whole,
    /// Stolen bytes finished the body: the original connection stopped mid-body.
    Stolen,
}

/// Steals since the node started, by outcome (`/metrics`: `booster_tail_steals_total`).
#[derive(Debug, Default)]
pub struct Counts {
    /// The stolen end finished the body before the original connection did.
    pub finished: AtomicU64,
    /// The original connection finished the body first (the stolen bytes were not needed).
    pub outrun: AtomicU64,
    /// The range fetch failed (no ranges, a changed entity, its uplink failing).
    pub failed: AtomicU64,
}

/// A source claimed for one steal; released on drop.
struct Claim(Arc<Source>);

impl Claim {
    fn take(source: &Arc<Source>) -> Option<Claim> {
        source
            .stolen
            .compare_exchange(false, true, Relaxed, Relaxed)
            .ok()
            .map(|_| Claim(source.clone()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.stolen.store(false, Relaxed);
    }
}

/// A steal under way.
struct Running {
    meet: u64,
    source: String,
    rx: tokio::sync::mpsc::Receiver<(u64, Vec<u8>)>,
    /// Stolen bytes received, by offset, not yet given to the client.
    held: BTreeMap<u64, Vec<u8>>,
    held_bytes: u64,
    engine: tokio::task::JoinHandle<Result<(), fetch::FetchError>>,
    /// The engine ended well: everything it fetched is in `held` or given out.
    ended: bool,
    /// Stops the engine when the steal ends, however it ends.
    _stop: tokio_util::sync::DropGuard,
}

/// The original connection's rate over about the last second, and the share of that time the
/// forwarder spent blocked writing to the client.
struct Rate {
    /// (when, bytes read, time blocked on the client so far).
    samples: std::collections::VecDeque<(Instant, u64, Duration)>,
}

impl Rate {
    fn new(now: Instant, at: u64) -> Rate {
        Rate {
            samples: std::collections::VecDeque::from([(now, at, Duration::ZERO)]),
        }
    }

    /// Records `at` bytes and `blocked` time at `now`; the rate in bytes/s and the blocked
    /// share since the oldest sample kept.
    fn sample(&mut self, now: Instant, at: u64, blocked: Duration) -> (f64, f64) {
        self.samples.push_back((now, at, blocked));
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= SETTLE {
            self.samples.pop_front();
        }
        let (t0, b0, k0) = self.samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            (0.0, 0.0)
        } else {
            ((at - b0) as f64 / secs, (blocked - k0).as_secs_f64() / secs)
        }
    }
}

/// Writes `bytes` to the client, adding the time it took to `blocked`.
async fn give<W: AsyncWrite + Unpin>(client: &mut W, bytes: &[u8], blocked: &mut Duration) -> Result<(), BodyError> {
    let t = Instant::now();
    client.write_all(bytes).await.map_err(BodyError::Write)?;
    *blocked += t.elapsed();
    Ok(())
}

/// Where the stolen end starts: the front at `rate` and the thief at `thief` bytes/s finish
/// the bytes left from `at` together; the end is at most [`MAX_STOLEN`] and at least one read.
/// `size - at` must be at least two reads ([`start`] asks for [`MIN_LEFT`]).
fn meeting_point(at: u64, size: u64, rate: f64, thief: f64) -> u64 {
    let left = size - at;
    let front = if rate + thief > 0.0 {
        (left as f64 * rate / (rate + thief)) as u64
    } else {
        left / 2
    };
    (at + front)
        .max(size.saturating_sub(MAX_STOLEN))
        .clamp(at + READ_CHUNK as u64, size - READ_CHUNK as u64)
}

/// One thing that happened while forwarding.
enum Got {
    Original(std::io::Result<usize>),
    Stolen(Option<(u64, Vec<u8>)>),
    Check,
}

async fn recv(steal: &mut Option<Running>) -> Option<(u64, Vec<u8>)> {
    match steal {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Forwards a body of `size` bytes whose entity has `validator`, from `up` (and `pending`, read
/// already) to `client`, stealing its end over an idle uplink when one turns up (see the
/// module). Bytes past the body stay in `pending` when the original connection delivered it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward_body<W: AsyncWrite + Unpin>(
    ctx: &Ctx,
    steal: &Steal,
    up: &mut Metered,
    pending: &mut Vec<u8>,
    client: &mut W,
    size: u64,
    validator: &str,
    idle: Duration,
) -> Result<Ended, BodyError> {
    let started = Instant::now();
    // `done`: bytes given to the client; `front`: bytes of the body read from `up`.
    let first = (pending.len() as u64).min(size) as usize;
    let mut blocked = Duration::ZERO;
    give(client, &pending[..first], &mut blocked).await?;
    pending.drain(..first);
    let (mut done, mut front) = (first as u64, first as u64);
    let mut original = true;
    // When the body last made progress: a byte in from either side, or out to the client (a
    // client that pauses reading holds the forwarder in a write, which is not the upstream's
    // idleness).
    let mut last_progress = started;
    let mut rate = Rate::new(started, front);
    let mut thief: Option<Running> = None;
    let mut tried = false;
    let mut check = tokio::time::interval(CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; READ_CHUNK];
    let lost = |why: &str| BodyError::Read(std::io::Error::other(why.to_owned()));
    while done < size {
        // The engine's chunks are taken while they fit the budget, and always once the front
        // has reached the stolen end (then they are what the client needs next).
        let take = thief
            .as_ref()
            .is_some_and(|s| !s.ended && (done >= s.meet || s.held_bytes < MAX_STOLEN));
        let got = tokio::select! {
            r = up.read(&mut buf), if original => Got::Original(r),
            c = recv(&mut thief), if take => Got::Stolen(c),
            _ = check.tick() => Got::Check,
        };
        match got {
            Got::Original(Ok(n)) if n > 0 => {
                let body = n.min((size - front) as usize);
                if front + body as u64 > done {
                    let skip = (done - front) as usize;
                    give(client, &buf[skip..body], &mut blocked).await?;
                    done = front + body as u64;
                }
                last_progress = Instant::now();
                front += body as u64;
                pending.extend_from_slice(&buf[body..n]);
            }
            Got::Original(r) => {
                let e = r.err().unwrap_or_else(|| std::io::ErrorKind::UnexpectedEof.into());
                // Without the original, only a steal whose end the front reached can finish.
                match &thief {
                    Some(s) if done >= s.meet => {
                        tracing::debug!(url = %steal.url, error = %e, "the original connection failed; the stolen end finishes the body");
                        original = false;
                    }
                    _ => return Err(BodyError::Read(e)),
                }
            }
            Got::Stolen(Some((offset, mut bytes))) => {
                last_progress = Instant::now();
                let s = thief.as_mut().expect("a steal sent it");
                // The engine's buffers are sized for a fast source: hold only the bytes.
                if bytes.capacity() > bytes.len() + bytes.len() / 4 {
                    bytes.shrink_to_fit();
                }
                // A piece fetched again (after a stall) may start where one is held: keep the
                // longer, as the ordered writer does.
                match s.held.entry(offset) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        s.held_bytes += bytes.len() as u64;
                        v.insert(bytes);
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) if o.get().len() < bytes.len() => {
                        s.held_bytes += (bytes.len() - o.get().len()) as u64;
                        o.insert(bytes);
                    }
                    std::collections::btree_map::Entry::Occupied(_) => {}
                }
            }
            Got::Stolen(None) => {
                // The engine ended: `Ok` means every stolen byte was sent.
                let s = thief.as_mut().expect("a steal ended");
                s.ended = true;
                let result = (&mut s.engine)
                    .await
                    .unwrap_or_else(|e| Err(fetch::FetchError::Usage(e.to_string())));
                if let Err(e) = result {
                    ctx.node.steals.failed.fetch_add(1, Relaxed);
                    if !original {
                        return Err(lost(&format!("the stolen end: {e}")));
                    }
                    tracing::debug!(url = %steal.url, source = %s.source, error = %e, "tail steal failed; the original connection goes on");
                    thief = None;
                }
            }
            Got::Check => {
                let now = Instant::now();
                // No progress for the idle timeout: the body is stuck.
                if now.duration_since(last_progress) >= idle {
                    return Err(BodyError::Read(std::io::ErrorKind::TimedOut.into()));
                }
                let (r, client_share) = rate.sample(now, front, blocked);
                if !tried && original && client_share < CLIENT_BOUND && now.duration_since(started) >= SETTLE {
                    if let Some(s) = start(ctx, steal, up.source(), front, size, r, validator) {
                        tracing::debug!(url = %steal.url, source = %s.source, from = s.meet, size, "tail steal: an idle uplink fetches the end");
                        thief = Some(s);
                        tried = true;
                    }
                }
            }
        }
        // Once the front reached the stolen end, stolen bytes go out as soon as they are next.
        if let Some(s) = thief.as_mut().filter(|s| done >= s.meet) {
            while let Some(entry) = s.held.first_entry() {
                let offset = *entry.key();
                if offset > done {
                    break;
                }
                let bytes = entry.remove();
                s.held_bytes -= bytes.len() as u64;
                let end = offset + bytes.len() as u64;
                if end > done {
                    give(client, &bytes[(done - offset) as usize..], &mut blocked).await?;
                    done = end;
                    last_progress = Instant::now();
                }
            }
            if !original && s.ended && done < size && s.held.first_key_value().is_none_or(|(&o, _)| o > done) {
                return Err(lost("the stolen end is incomplete"));
            }
        }
        if !original && thief.is_none() {
            return Err(lost("both connections of the body failed"));
        }
    }
    client.flush().await.map_err(BodyError::Write)?;
    // Stolen bytes finished the body: the original connection stopped mid-body.
    let original = original && front == size;
    if let Some(s) = &thief {
        let outcome = if original {
            &ctx.node.steals.outrun
        } else {
            &ctx.node.steals.finished
        };
        outcome.fetch_add(1, Relaxed);
        tracing::debug!(
            url = %steal.url,
            source = %s.source,
            from = s.meet,
            original_read = front,
            ended = if original { "whole" } else { "stolen" },
            "tail steal done"
        );
    }
    Ok(if original { Ended::Whole } else { Ended::Stolen })
}

/// Starts a steal of `[meet, size)` when an idle source may take it (see the module).
fn start(
    ctx: &Ctx,
    steal: &Steal,
    current: &Arc<Source>,
    front: u64,
    size: u64,
    rate: f64,
    validator: &str,
) -> Option<Running> {
    let left = size - front;
    if !(MIN_LEFT..=MAX_LEFT).contains(&left) || rate <= 0.0 || (left as f64) < rate * MIN_LEFT_TIME.as_secs_f64() {
        return None;
    }
    let candidates = split::sources(&ctx.node, &steal.dest, ctx)?;
    let idle = candidates.into_iter().filter(|s| {
        !Arc::ptr_eq(s, current)
            && s.open.load(Relaxed) == 0
            && s.connecting.load(Relaxed) == 0
            && !s.stolen.load(Relaxed)
    });
    let (source, thief) = idle
        .map(|s| {
            let v = s.view();
            let r = if v.capacity_known { v.capacity } else { rate };
            (s, r)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let claim = Claim::take(&source)?;
    let meet = meeting_point(front, size, rate, thief);
    let connector: Arc<dyn Connector> =
        Arc::new(NodeConnector::with_sources(ctx.node.clone(), vec![source.clone()]).via(steal.via.clone()));
    let stop = ctx.kill.child_token();
    let opts = fetch::Options {
        stop: stop.clone(),
        notify: Arc::new(|m| tracing::debug!("tail steal: {m}")),
        ..fetch::Options::default()
    };
    let rest = fetch::Rest {
        url: steal.url.clone(),
        headers: steal.headers.clone(),
        start: meet,
        size,
        validator: validator.to_owned(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL);
    let engine = tokio::spawn(async move {
        let _claim = claim;
        fetch::fetch_rest(rest, connector, opts, tx).await
    });
    Some(Running {
        meet,
        source: source.name.clone(),
        rx,
        held: BTreeMap::new(),
        held_bytes: 0,
        engine,
        ended: false,
        _stop: stop.drop_guard(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meeting_point_splits_what_is_left_by_rate() {
        // Equal rates: half each.
        assert_eq!(meeting_point(1_000_000, 3_000_000, 1e6, 1e6), 2_000_000);
        // A thief four times as fast takes four fifths.
        assert_eq!(meeting_point(0, 5_000_000, 1e6, 4e6), 1_000_000);
        // Never more than MAX_STOLEN.
        assert_eq!(meeting_point(0, 30 << 20, 1e6, 100e6), (30 << 20) - MAX_STOLEN);
        // Both parts at least one read long.
        assert_eq!(meeting_point(0, 1 << 20, 1.0, 1e9), READ_CHUNK as u64);
        assert_eq!(meeting_point(0, 1 << 20, 1e9, 1.0), (1 << 20) - READ_CHUNK as u64);
    }

    #[test]
    fn the_rate_and_the_clients_share_are_over_the_last_second() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut r = Rate::new(t, 0);
        assert_eq!(r.sample(t + ms(500), 500, ms(0)), (1000.0, 0.0));
        r.sample(t + ms(1000), 1000, ms(0));
        r.sample(t + ms(1500), 1500, ms(100));
        // Faster now: 1000 bytes in the last half second; the window keeps about a second,
        // in which 400 ms went to writes to the client.
        let (rate, client) = r.sample(t + ms(2000), 2500, ms(400));
        assert!((rate - 1500.0).abs() < 1.0, "{rate}");
        assert!((client - 0.4).abs() < 1e-9, "{client}");
    }
}

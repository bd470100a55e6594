//! Log lines that someone else can cause at will: a client speaking garbage, a target refusing,
//! a stranger with the wrong secret, a scan, a full descriptor table. Each kind goes through a
//! [`Throttle`]: a few lines a minute at info level, the rest at debug level, and the next info
//! line says how many were held back (`held_back=N`). A flood then costs the log a handful of
//! lines a minute instead of one per connection, and nothing is hidden from `-v`.
//!
//! ```ignore
//! logs::throttled!(info, logs::CLIENTS, client = %peer, "neither SOCKS5 nor HTTP; closing");
//! ```

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// The window a throttle's budget is counted over.
const WINDOW: Duration = Duration::from_secs(60);

/// Clients that failed their session: malformed or unsupported requests, failed
/// authentication. Enough lines that a person fixing a client's settings sees each try.
pub static CLIENTS: Throttle = Throttle::new(10);
/// Connections that could not be made for a client (refused, unreachable, timed out).
pub static DIALS: Throttle = Throttle::new(10);
/// Refused handshakes at the peer port and the relay (wrong secret, garbage, replays, too
/// many at once): one line a minute, since a scan or a misconfigured peer repeats forever.
pub static STRANGERS: Throttle = Throttle::new(1);
/// `accept` failing, as it does with every try while the descriptor table is full.
pub static ACCEPTS: Throttle = Throttle::new(1);
/// Connections refused because the node holds as many as it may (`max_connections`).
pub static FULL: Throttle = Throttle::new(1);

/// Admits at most `per_minute` lines per minute and counts the rest.
pub struct Throttle {
    per_minute: u32,
    state: Mutex<State>,
}

struct State {
    window_start: Option<Instant>,
    admitted: u32,
    held_back: u64,
}

impl Throttle {
    pub const fn new(per_minute: u32) -> Throttle {
        Throttle {
            per_minute,
            state: Mutex::new(State {
                window_start: None,
                admitted: 0,
                held_back: 0,
            }),
        }
    }

    /// `Some(lines held back since the last admitted one)` when a line may be logged now.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW)
        {
            s.window_start = Some(now);
            s.admitted = 0;
        }
        if s.admitted < self.per_minute {
            s.admitted += 1;
            Some(std::mem::take(&mut s.held_back))
        } else {
            s.held_back += 1;
            None
        }
    }
}

/// Logs at `$level` (`info` or `warn`) if `$throttle` admits the line, with `held_back` when
/// lines were held back before it, and at debug level otherwise. The other arguments are those
/// of `tracing::info!`.
macro_rules! throttled {
    ($level:ident, $throttle:expr, $($arg:tt)+) => {
        match $throttle.admit() {
            Some(0) => tracing::$level!($($arg)+),
            Some(held_back) => tracing::$level!(held_back, $($arg)+),
            None => tracing::debug!($($arg)+),
        }
    };
}
pub(crate) use throttled;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_budget_then_counts_and_reports_the_rest_in_the_next_window() {
        let t = Throttle::new(2);
        let t0 = Instant::now();
        assert_eq!(t.admit_at(t0), Some(0));
        assert_eq!(t.admit_at(t0 + Duration::from_secs(1)), Some(0));
        for i in 2..7 {
            assert_eq!(t.admit_at(t0 + Duration::from_secs(i)), None);
        }
        // A minute after the window opened, a new one opens and reports the five held back.
        assert_eq!(t.admit_at(t0 + WINDOW), Some(5));
        assert_eq!(t.admit_at(t0 + WINDOW), Some(0));
        assert_eq!(t.admit_at(t0 + WINDOW + Duration::from_secs(59)), None);
        assert_eq!(t.admit_at(t0 + WINDOW * 2), Some(1));
    }

    #[test]
    fn one_a_minute() {
        let t = Throttle::new(1);
        let t0 = Instant::now();
        assert_eq!(t.admit_at(t0), Some(0));
        assert_eq!(t.admit_at(t0), None);
        assert_eq!(t.admit_at(t0 + Duration::from_secs(59)), None);
        assert_eq!(t.admit_at(t0 + Duration::from_secs(60)), Some(2));
    }
}

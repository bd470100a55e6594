//! booster's wire formats and sans-IO state machines. No tokio and no clock reads: time is
//! an argument, so everything here is unit-testable, proptest-able and fuzzable.
//!
//! Reading order:
//! - [`bond`]: the bonded tunnel: frames, reorder buffer, paths and the scheduler.
//! - [`socks5`]: the SOCKS5 codec (RFC 1928, RFC 1929 auth, UDP header).
//! - [`http`]: HTTP/1.x heads for the proxy (CONNECT and absolute-form requests, responses)
//!   and body framing.
//! - [`peer`]: the peer protocol's frames (control and stream channels), carried in Noise.
//! - [`range`]: the range planner of `booster get`: who fetches which bytes, with no slow tail.
//!
//! Every decoder returns `Ok(None)` for "need more bytes" and `Err` for "malformed", and never
//! panics on any input.
#![forbid(unsafe_code)]

pub mod bond;
pub mod http;
pub mod peer;
pub mod range;
pub mod socks5;
mod wire;

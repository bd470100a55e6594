//! booster's wire formats and sans-IO state machines. No tokio and no clock reads: time is
//! an argument, so everything here is unit-testable, proptest-able and fuzzable.
//!
//! Reading order:
//! - [`socks5`]: the SOCKS5 codec (RFC 1928, RFC 1929 auth, UDP header).
//! - [`http`]: the HTTP proxy request head (CONNECT and absolute-form).
//!
//! Every decoder returns `Ok(None)` for "need more bytes" and `Err` for "malformed", and never
//! panics on any input.
#![forbid(unsafe_code)]

pub mod http;
pub mod socks5;

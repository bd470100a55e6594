//! booster: joins several uplinks (local interfaces and peers' uplinks) into one fast
//! connection, behind one SOCKS5 + HTTP proxy port.
//!
//! Reading order (see `docs/internals.md` for the glossary and data flow):
//! 1. [`config`] and [`units`]: what the user asks for, parsed then validated.
//! 2. [`state`] and [`source`]: the node's one live state, and each source's counters.
//! 3. [`proxy`], then [`socks`], [`http_proxy`] and [`udp`]: client sessions.
//! 4. [`balancer`]: which source gets a new connection, and retry on failure.
//! 5. [`dial`] (with [`dns`] and [`sys`]): the only place that opens outbound sockets.
//! 6. [`pipe`]: the data path.
//! 7. [`discovery`], [`store`], [`run`]: uplinks at runtime, persistence, start and shutdown.
//!    Seeing and steering: [`conns`] (open client connections), [`api`] (control API, event
//!    stream, runtime policies), [`metrics`] (Prometheus) and [`dashboard`] (the web page).
//! 8. [`fetch`]: one HTTP download over every source by byte ranges (`booster get`).
//! 9. [`peer`] (borrowing a peer's uplinks), [`lend`] (lending ours), [`noise`] (the encrypted
//!    channel under both) and [`mdns`] (finding nodes on the LAN).
#![deny(unsafe_code)]

pub mod api;
pub mod balancer;
pub mod bond;
pub mod client;
pub mod cmd;
pub mod config;
pub mod conns;
pub mod dashboard;
pub mod dial;
pub mod discovery;
pub mod dns;
pub mod fetch;
pub mod gateway;
pub mod http_proxy;
pub mod lend;
pub mod logs;
pub mod mdns;
pub mod metrics;
pub mod noise;
pub mod peer;
pub mod pipe;
pub mod policy;
pub mod proxy;
pub mod relay;
pub mod run;
pub mod socks;
pub mod source;
pub mod split;
pub mod state;
pub mod steal;
pub mod store;
pub mod sys;
pub mod target;
pub mod udp;
pub mod units;

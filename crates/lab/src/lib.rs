//! The lab: link emulation, network-namespace topologies, an origin server and the
//! comparison benchmark.
//!
//! Reading order:
//! - [`profile`]: the named profiles (`home`, `peers`, `skewed`, `lossy`), one table for everything.
//! - [`emulink`]: the in-process tier (no root). An emulated uplink with rate, RTT, jitter,
//!   stall and cut, and a control handle to change them at runtime. Used by tests and the demo.
//! - [`origin`]: our own HTTP origin with Range, ETag and Last-Modified, known SHA-256 bodies
//!   and broken modes (ignore Range, change ETag, reset mid-body, slow).
//! - [`netns`]: the namespace tier (root). Namespaces named `bt-<unique>-…`, veths, tbf for rate,
//!   torn down on drop.
//! - [`delayline`]: the userspace delay line on a TUN device (this kernel has no netem): RTT,
//!   jitter, loss, blackhole.
//! - [`plot`]: throughput-over-time SVG charts.
//! - [`topology`]: builds a profile's namespaces and links, with cut / blackhole / restore.

pub mod bench;
pub mod calibrate;
pub mod delayline;
pub mod emulink;
pub mod load;
pub mod netns;
pub mod origin;
pub mod plot;
pub mod profile;
pub mod soak;
pub mod topology;

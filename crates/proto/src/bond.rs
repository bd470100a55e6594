//! The bond: one TCP stream carried over several paths (one TCP connection per uplink) to a
//! relay, which puts it back in order. Sans-IO: the engine (`booster::bond`) owns the
//! sockets and the clock and drives a [`Link`].
//!
//! - [`frame`]: the wire format of a path, inside Noise.
//! - [`stream`]: a stream's send buffer and reorder buffer.
//! - [`path`]: a path's acks, RTT, rate and stall detection.
//! - [`link`]: the state machine of one end: streams, paths and the scheduler.
//!
//! Reliability lives at this level, not TCP's: every frame on a path is acked by the far
//! end's bond layer (`PathAck`), and a frame stays in memory until then. When a path dies,
//! whatever it had not got acked is sent again on the others, so no byte is lost and the
//! stream never resets.

pub mod frame;
pub mod link;
pub mod path;
pub mod stream;

pub use frame::{Frame, FrameError, Mode, WELCOME_NEW};
pub use link::{Config, Event, Link, LinkError, Role};
pub use path::PathInfo;

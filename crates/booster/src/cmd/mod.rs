//! One file per CLI subcommand.

pub mod demo;
pub mod get;
pub mod peers;
pub mod start;
pub mod status;

//! One file per CLI subcommand.

pub mod demo;
pub mod get;
pub mod monitor;
pub mod peers;
pub mod speedtest;
pub mod start;
pub mod status;

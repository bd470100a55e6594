//! One file per CLI subcommand.

pub mod demo;
pub mod gateway;
pub mod get;
pub mod monitor;
pub mod peers;
pub mod relay;
pub mod speedtest;
pub mod start;
pub mod status;

//! One file per CLI subcommand.

pub mod start;
pub mod status;

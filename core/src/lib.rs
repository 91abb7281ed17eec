//! gauntlet-core: pure types and logic shared by every gauntlet room; no sockets, no clocks.
//!
//! # Layout
//! - [`config_file`]: load a TOML file into a typed, validated value; every error names
//!   `file:line:col: field: what is wrong`.
//! - [`units`]: small validated value types (rates in `0..=1`, ...) that reject bad input while
//!   the file is parsed, so the error still knows where it came from.

pub mod config_file;
pub mod units;

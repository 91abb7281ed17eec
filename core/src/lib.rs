//! gauntlet-core: pure types and logic shared by every gauntlet room; no sockets, no clocks.
//!
//! # Layout
//! - [`config_file`]: load a TOML file into a typed, validated value; every error names
//!   `file:line:col: field: what is wrong`.
//! - [`units`]: small validated value types (rates in `0..=1`, ...) that reject bad input while
//!   the file is parsed, so the error still knows where it came from.
//! - [`plan`]: the plan: read from TOML once (`plan::spec`), validated with every problem
//!   located (`plan::validate`), resolved into the typed [`plan::Plan`] that travels to
//!   workers (load models, steps, matchers, classifiers as enums holding exactly their
//!   fields).
//! - [`checks`]: the checks a plan declares, named as reports name them.
//! - [`segment`]: execution segments on exact integer ticks, a worker's share of VUs and
//!   arrivals, cut again exactly when a share is handed over.
//! - [`schedule`]: the load's shape over time (VUs wanted, arrival times).
//! - [`names`]: the names a plan's measurements can carry (metrics, checks, steps,
//!   failure categories).
//! - [`metrics`]: histograms, counters, failure patterns, checks and failure attribution in
//!   one mergeable snapshot.
//! - [`prometheus`]: a latency histogram in Prometheus' terms (fixed buckets, exact quantiles,
//!   exact seconds), for the coordinator's `/metrics`.
//! - [`hdr`]: histograms as V2 + deflate bytes (the wire) and base64 (report.json), decoded
//!   within bounds.
//! - [`sparse`]: histograms as their non-zero counts, and a snapshot held so: how the
//!   coordinator decodes and merges a worker's snapshot cheaply.
//! - [`attribution`]: every session that ended, counted by subject, target, live sessions of
//!   its subject, sessions in flight, connect interval and worker, in bounded tables.
//! - [`report`]: the run report (`report.json`) and everything that makes it: the verdict
//!   (`report::verdict`), the load delivered (`report::delivery`), the sessions of unknown
//!   outcome (`report::unknown`), the one builder (`report::build`), its forms (text,
//!   `report.md`, `report.html`, `junit.xml`) and their files (`report::files`).
//! - [`compare`]: progress between two runs of a plan, each change tested: the statistics
//!   (`compare::stats`) and the rule that calls it a change or noise (`compare::rule`).
//! - [`thresholds`]: pass/fail rules over the whole run or sliding windows.
//! - [`words`]: the shared vocabulary as types: run phases, failure categories, the verdict
//!   and its cause.
//! - [`template`]: `{placeholder}` strings, parsed once when the plan loads.
//! - [`redact`]: what a credential looks like (secret names, JWTs, `Bearer`, URL user-info)
//!   and its masking, for every plan, URL, sample and log line shown or stored.

pub mod attribution;
pub mod capacity;
pub mod checks;
pub mod compare;
pub mod config_file;
pub mod hdr;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod prometheus;
pub mod redact;
pub mod report;
pub mod schedule;
pub mod segment;
pub mod sparse;
pub mod template;
pub mod thresholds;
pub mod units;
pub mod words;

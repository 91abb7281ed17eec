//! gauntlet-worker: the engine that runs a worker's share of a plan against the target.
//!
//! # Layout
//! - [`access`]: what a worker's operator lets plans read (variables, files) and reach
//!   (target hosts).
//! - [`agent`]: the worker's side of the fleet: the [`agent::Agent`] (register, Session
//!   stream, reconnects with backoff, lease, drain); `agent::outbox` (numbered snapshots and
//!   `Done`s resent until acknowledged, then pruned; progress for heartbeats); `agent::share`
//!   (one assignment run with the engine).
//! - [`program`]: a plan compiled for execution (templates, regexes, keys, metric ids, TLS);
//!   `program::step`: one struct per step kind.
//! - [`engine`]: the closed and open load models, graceful stop, interval snapshots.
//! - [`session`]: one VU session: WebSocket steps over a [`session::Socket`] (any `Sink` +
//!   `Stream` of frames), HTTP and sleep steps, timing, checks.
//! - [`sequence`]: whole-conversation checks (orders, sets, missing / duplicate events).
//! - [`matcher`]: JSON-pointer matchers and captures.
//! - [`json`]: a received frame's JSON, borrowed from its text, read by the matchers.
//! - [`classify`]: the failure taxonomy and the plan's classifiers.
//! - [`auth`]: JWT minting per VU and the subject pool.
//! - [`recorder`]: per-VU buffers flushed into sharded histograms; snapshot deltas.
//! - [`render`]: templates filled from a session's context.
//! - [`rng`]: a small seedable random source.
//! - [`sources`]: the source addresses outgoing connections are bound to
//!   (`--local-addresses`).

pub mod access;
pub mod agent;
pub mod auth;
pub mod classify;
pub mod engine;
pub mod error;
pub mod json;
pub mod matcher;
pub mod program;
pub mod recorder;
pub mod render;
pub mod rng;
pub mod sequence;
pub mod session;
pub mod sources;

pub use engine::{Delta, RunConfig, run};
pub use program::{CompileError, Program};

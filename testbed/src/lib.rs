//! gauntlet-testbed: a faithful, fast, deterministic emulation of the agent-pipeline service
//! described in `shared/reference/staging-protocol.md`, with every failure mode gauntlet must
//! detect available as a switch, and ground truth of what it did at `GET /__testbed/stats`.
//!
//! # Layout
//! The rooms, from the bottom up; a room imports only rooms listed above it.
//! - [`protocol`]: the reference protocol's vocabulary: the five agent events and the frame
//!   shapes. Imports nothing of the testbed.
//! - [`capacity`]: the testbed-wide run limit (`pipeline.concurrency`): a fair queue before
//!   `agent_started`, and its ground truth. Imports nothing of the testbed.
//! - [`rng`]: the seeded, order-independent draws behind faults and delays.
//! - [`delay`]: delay distributions for agent events (fixed, uniform, normal, log-normal).
//! - [`factory`]: the per-user manager factory with its limit and emergency cleanup.
//! - [`faults`]: the fault switches and the seeded, order-independent draw that decides them.
//! - [`config`]: the testbed's settings (TOML file, CLI flags) and their defaults, which mirror
//!   the reference service.
//! - [`stats`]: ground-truth counters and their JSON snapshot (with the factory's and the
//!   capacity's).
//! - [`auth`]: where a token is found on the upgrade request, and JWT validation (HS256, RS256).
//! - [`frames`]: the JSON frames the service sends.
//! - [`pipeline`]: the agent pipeline's event schedule, faults applied, and the task that
//!   plays it.
//! - [`app`]: the shared state ([`app::App`]) every connection and request holds.
//! - [`connection`]: one WebSocket connection, from upgrade to close.
//! - [`http`]: health, discovery, MCP and message endpoints, and the admin endpoints.
//! - [`server`]: the router on top of [`connection`] and [`http`], [`serve`] and the
//!   in-process [`Testbed`] handle.

pub mod app;
pub mod auth;
pub mod capacity;
pub mod config;
pub mod connection;
pub mod delay;
pub mod factory;
pub mod faults;
pub mod frames;
pub mod http;
pub mod pipeline;
pub mod protocol;
pub mod rng;
pub mod server;
pub mod stats;

pub use config::TestbedConfig;
pub use server::{Testbed, serve};
pub use stats::StatsSnapshot;

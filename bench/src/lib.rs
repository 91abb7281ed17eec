//! gauntlet-bench: the reference clients and targets of gauntlet's benchmarks, as a library
//! (for `cargo bench` of the worker and the testbed) and as the `gauntlet-bench` binary (for
//! `bench/run.py`, which runs each client and server as a process of its own, to measure each
//! one's CPU and memory).
//!
//! # Layout
//! - [`echo`]: the bare tokio-tungstenite echo server (counting what it echoed, optionally
//!   stalling once), child-process servers, the 200-byte request;
//! - [`bare`]: the bare tokio-tungstenite client loop (round trips, latencies, paced);
//! - [`delay`]: a server answering every frame after exactly D.

pub mod bare;
pub mod delay;
pub mod echo;

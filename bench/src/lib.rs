//! gauntlet-bench: the reference clients and targets of gauntlet's benchmarks, as a library
//! (for `cargo bench` of the worker and the testbed) and as the `gauntlet-bench` binary (for
//! `bench/run.py`, which runs each client and server as a process of its own, to measure each
//! one's CPU and memory).
//!
//! # Layout
//! - [`echo`]: the bare tokio-tungstenite echo server (counting what it echoed, optionally
//!   stalling once), child-process servers, the 200-byte request;
//! - [`bare`]: the bare tokio-tungstenite client loop (round trips, latencies, paced);
//! - [`delay`]: a server answering every frame after exactly D;
//! - [`setup`]: the bare session-setup client (JWT, connect, confirmation, close);
//! - [`env_or`] and [`runtime`]: the knobs and the runtime of the crates' `cargo bench` mains.

pub mod bare;
pub mod delay;
pub mod echo;
pub mod setup;

/// A bench's knob: the unsigned integer in the environment variable `name`, else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The multi-thread runtime a bench's roles run on.
///
/// # Panics
/// If the runtime cannot be built (a bench has nothing to measure without it).
pub fn runtime() -> tokio::runtime::Runtime {
    #[allow(clippy::expect_used)]
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

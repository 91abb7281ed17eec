//! `gauntlet-bench`: the benchmark's reference processes, one role per subcommand: the echo
//! server, the answer-after-D server, and the bare client loop. Servers print their port on the
//! first line of stdout; the client prints one line of JSON when it is done. `bench/run.py`
//! starts them, and measures each one's CPU and peak RSS.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gauntlet_bench::bare::{self, Pace};
use gauntlet_bench::{delay, echo, setup};

#[derive(Debug, Parser)]
#[command(
    name = "gauntlet-bench",
    about = "Reference servers and clients of gauntlet's benchmarks"
)]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// The bare echo server; each line on stdin is answered with `count N` (frames echoed).
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Stall once, this long after the first frame (with --stall).
        #[arg(long, value_parser = humantime::parse_duration)]
        stall_at: Option<Duration>,
        /// How long the stall lasts: every frame meanwhile waits until its end.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        stall: Duration,
    },
    /// A server answering every frame after exactly `--delay`.
    Delay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The answer's delay after the frame was read.
        #[arg(long, value_parser = humantime::parse_duration)]
        delay: Duration,
    },
    /// The bare client loop; prints `{"round_trips_per_s": ...}` or, with --latency, the
    /// latency percentiles in microseconds.
    Bare {
        /// Server port on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// WebSocket path.
        #[arg(long, default_value = "/")]
        path: String,
        /// Connections.
        #[arg(long)]
        conns: usize,
        /// Seconds counted (after the warm-up).
        #[arg(long)]
        seconds: u64,
        /// Not counted at the start.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        warmup: Duration,
        /// Record each round trip's latency instead of counting.
        #[arg(long)]
        latency: bool,
        /// With --latency: each connection plans a send every this long (naive pacing, timed
        /// from the actual send); default: closed loop.
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<Duration>,
    },
    /// The bare session-setup client (open model: JWT, connect, confirmation, close); prints
    /// `{"passed": N, "failed": M}`.
    Setup {
        /// Testbed port on 127.0.0.1 (path `/ws`).
        #[arg(long)]
        port: u16,
        /// Arrivals per second.
        #[arg(long)]
        rate: u32,
        /// How long arrivals come.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Duration,
        /// The JWT key's variable.
        #[arg(long, default_value = "JWT_SECRET_KEY")]
        secret_env: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.role {
        Role::Echo {
            listen,
            stall_at,
            stall,
        } => runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            echo::println_port(&listener);
            let echoed = Arc::new(echo::Echoed::default());
            echo::answer_counts(echoed.clone());
            let stall = stall_at.map(|at| echo::Stall { at, length: stall });
            echo::serve(listener, echoed, stall).await;
            Ok(())
        }),
        Role::Delay { listen, delay } => {
            let (listener, addr) = delay::bind(listen)?;
            println!("{}", addr.port());
            delay::serve(listener, delay, 10_000);
            Ok(())
        }
        Role::Bare {
            port,
            path,
            conns,
            seconds,
            warmup,
            latency,
            every,
        } => runtime.block_on(async {
            if latency {
                let pace = every.map_or(Pace::Closed, Pace::Every);
                let h = bare::latencies(
                    ("127.0.0.1", port, &path),
                    conns,
                    pace,
                    warmup,
                    warmup + Duration::from_secs(seconds),
                )
                .await?;
                let over = h.count_between(100_000, u64::MAX);
                println!(
                    "{}",
                    serde_json::json!({
                        "count": h.len(),
                        "p50_us": h.value_at_quantile(0.5),
                        "p90_us": h.value_at_quantile(0.9),
                        "p99_us": h.value_at_quantile(0.99),
                        "max_us": h.max(),
                        "over_100ms": over,
                    })
                );
            } else {
                let rate = bare::round_trips(port, conns, warmup, seconds).await;
                println!("{}", serde_json::json!({ "round_trips_per_s": rate }));
            }
            Ok(())
        }),
        Role::Setup {
            port,
            rate,
            duration,
            secret_env,
        } => {
            let secret = std::env::var(&secret_env)
                .map_err(|_| anyhow::anyhow!("{secret_env} is not set"))?;
            let counts = runtime.block_on(setup::run(port, rate, duration, &secret));
            println!(
                "{}",
                serde_json::json!({
                    "passed": counts.passed.load(std::sync::atomic::Ordering::Relaxed),
                    "failed": counts.failed.load(std::sync::atomic::Ordering::Relaxed),
                })
            );
            Ok(())
        }
    }
}

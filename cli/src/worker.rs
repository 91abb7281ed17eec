//! `gauntlet worker`: registers with a coordinator and runs its share of each run, exposing to
//! plans only what its operator allows, until a signal (then it drains).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use gauntlet_worker::agent::{AgentConfig, run_agent};
use tokio_util::sync::CancellationToken;

/// `gauntlet worker` flags.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Coordinator URL.
    #[arg(
        long,
        env = "GAUNTLET_COORDINATOR",
        default_value = "http://127.0.0.1:7000"
    )]
    coordinator: String,
    /// Relative share of the load this worker takes (1 to 1000000).
    #[arg(long, env = "GAUNTLET_CAPACITY", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    capacity: u32,
    /// Worker name (default: the host name).
    #[arg(long, env = "GAUNTLET_WORKER_NAME")]
    name: Option<String>,
    /// How long running sessions get to finish on SIGTERM/SIGINT.
    #[arg(long, env = "GAUNTLET_DRAIN", default_value = "15s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Bearer token the coordinator requires.
    #[arg(long, env = "GAUNTLET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Extra CA certificate (PEM) to trust for an https:// coordinator.
    #[arg(long, env = "GAUNTLET_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Environment variables plans may read (`{env:NAME}`, `[auth] secret_env`/`key_env`),
    /// comma-separated, `*` as a wildcard (`JWT_SECRET_KEY,STAGING_*`). None by default; the
    /// fleet's tokens never.
    #[arg(long, env = "GAUNTLET_PLAN_ENV", value_delimiter = ',')]
    plan_env: Vec<String>,
    /// Files plans may read (`[auth] secret_file`/`key_file`, `[target.tls] ca_file`),
    /// comma-separated paths, `*` as a wildcard (`/run/secrets/*`). None by default.
    #[arg(long, env = "GAUNTLET_PLAN_FILES", value_delimiter = ',')]
    plan_files: Vec<String>,
    /// Hosts plans may send traffic to: names, `*.domain`, IP addresses or CIDR blocks,
    /// comma-separated (`*` for any). A plan aiming elsewhere is refused, and so is an HTTP
    /// request or redirect to elsewhere.
    #[arg(
        long,
        env = "GAUNTLET_ALLOW_TARGET",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128,localhost"
    )]
    allow_target: Vec<String>,
    /// Source addresses to bind outgoing connections to (WebSocket and HTTP), comma-separated
    /// (`127.0.0.2,127.0.0.3`): session `i` (VU or arrival number) connects from address
    /// `i % n`, so one worker is not held to one address's ~28k ephemeral ports (k6's
    /// `--local-ips`). Each must be an address of this machine; none by default (the kernel
    /// picks).
    #[arg(long, env = "GAUNTLET_LOCAL_ADDRESSES", value_delimiter = ',')]
    local_addresses: Vec<String>,
    /// Threads that run sessions (1 to 1024; default: one per CPU the process may use). One
    /// worker process per core with `--threads 1` spends less CPU per session than one
    /// worker with a thread per core (no wake-ups across threads; BENCHMARKS.md, session
    /// setup), and gives each process its own open-files limit.
    #[arg(long, env = "GAUNTLET_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

/// Runs a worker until a signal.
pub async fn run(args: WorkerArgs, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let name = args.name.unwrap_or_else(host_name);
    crate::limits::check_open_files(0);
    let config = AgentConfig {
        coordinator: args.coordinator,
        name,
        capacity: args.capacity,
        labels: BTreeMap::new(),
        drain: args.drain,
        token: args.token,
        tls_ca: crate::usage::read_pem(args.tls_ca.as_deref())?,
        access: gauntlet_worker::access::Access::new(
            &args.plan_env,
            &args.plan_files,
            &args
                .allow_target
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .map_err(|e| crate::usage::UsageError(e.to_string()))?,
        sources: gauntlet_worker::sources::SourceAddresses::new(&args.local_addresses)
            .map_err(|e| crate::usage::UsageError(e.to_string()))?,
    };
    run_agent(config, shutdown).await?;
    Ok(0)
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

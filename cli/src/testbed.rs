//! `gauntlet testbed`: the reference service on a socket; flags override the config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use gauntlet_testbed::TestbedConfig;
use gauntlet_testbed::config::{ConfirmationShape, RejectionMode};

/// A flag combination that cannot work (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `gauntlet testbed` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "GAUNTLET_TESTBED_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// TOML config file (see docs/testbed.md); flags below override it.
    #[arg(long, env = "GAUNTLET_TESTBED_CONFIG")]
    config: Option<PathBuf>,
    /// File holding the HS256 secret (default: the JWT_SECRET_KEY environment variable).
    #[arg(long, env = "GAUNTLET_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// Required token issuer.
    #[arg(long)]
    issuer: Option<String>,
    /// Seed of fault and delay draws.
    #[arg(long)]
    seed: Option<u64>,
    /// Live managers per user before FACTORY_INIT_FAILED.
    #[arg(long)]
    max_managers_per_user: Option<usize>,
    /// How rejected tokens are answered.
    #[arg(long, value_enum)]
    rejection: Option<Rejection>,
    /// Shape of the connection confirmation frame.
    #[arg(long, value_enum)]
    confirmation: Option<Confirmation>,
    /// /health answers 503 for this long after start (e.g. `5s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Rejection {
    AcceptThenClose,
    RejectHandshake,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Confirmation {
    SystemMessage,
    ConnectionEstablished,
}

impl Args {
    /// The config file with the flags applied over it.
    pub fn into_config(self) -> anyhow::Result<(SocketAddr, TestbedConfig)> {
        let mut config = match &self.config {
            Some(path) => TestbedConfig::load(path)?,
            None => TestbedConfig::default(),
        };
        if let Some(path) = self.jwt_secret_file {
            config.auth.secret_file = Some(path);
        }
        if let Some(issuer) = self.issuer {
            config.auth.issuer = issuer;
        }
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(n) = self.max_managers_per_user {
            if n == 0 {
                return Err(UsageError("--max-managers-per-user must be at least 1".into()).into());
            }
            config.websocket.max_managers_per_user = n;
        }
        if let Some(r) = self.rejection {
            config.auth.rejection = match r {
                Rejection::AcceptThenClose => RejectionMode::AcceptThenClose,
                Rejection::RejectHandshake => RejectionMode::RejectHandshake,
            };
        }
        if let Some(c) = self.confirmation {
            config.websocket.confirmation = match c {
                Confirmation::SystemMessage => ConfirmationShape::SystemMessage,
                Confirmation::ConnectionEstablished => ConfirmationShape::ConnectionEstablished,
            };
        }
        if let Some(w) = self.warmup {
            config.http.warmup = w;
        }
        config.resolve_secret().map_err(UsageError)?;
        Ok((self.listen, config))
    }
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let (listen, config) = args.into_config()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, issuer = %config.auth.issuer, faults = !config.faults.is_empty(), "testbed listening: ws://{addr}/ws, stats at http://{addr}/__testbed/stats");
    let shutdown = crate::signals::shutdown_token();
    gauntlet_testbed::serve(config, listener, shutdown).await?;
    Ok(0)
}

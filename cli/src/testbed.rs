//! `gauntlet testbed`: the reference service on a socket; flags override the config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use gauntlet_testbed::TestbedConfig;
use gauntlet_testbed::config::{ConfirmationShape, MAX_CONCURRENCY, RejectionMode};

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
    #[arg(long, env = "GAUNTLET_TESTBED_ISSUER")]
    issuer: Option<String>,
    /// Seed of fault and delay draws.
    #[arg(long, env = "GAUNTLET_TESTBED_SEED")]
    seed: Option<u64>,
    /// Live managers per user before FACTORY_INIT_FAILED.
    #[arg(long, env = "GAUNTLET_TESTBED_MAX_MANAGERS_PER_USER")]
    max_managers_per_user: Option<usize>,
    /// How rejected tokens are answered.
    #[arg(long, env = "GAUNTLET_TESTBED_REJECTION", value_enum)]
    rejection: Option<Rejection>,
    /// Shape of the connection confirmation frame.
    #[arg(long, env = "GAUNTLET_TESTBED_CONFIRMATION", value_enum)]
    confirmation: Option<Confirmation>,
    /// /health answers 503 for this long after start (e.g. `5s`).
    #[arg(long, env = "GAUNTLET_TESTBED_WARMUP", value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// At most this many agent runs in progress across the testbed; further runs wait, in
    /// arrival order, before `agent_started` (0: unlimited). With fixed delays the testbed
    /// then serves exactly W / (run duration) runs per second.
    #[arg(long, env = "GAUNTLET_TESTBED_PIPELINE_CONCURRENCY", value_name = "W")]
    pipeline_concurrency: Option<usize>,
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
        let config = match &self.config {
            Some(path) => TestbedConfig::load(path)?,
            None => TestbedConfig::default(),
        };
        let (listen, mut config) = self.apply(config)?;
        config
            .resolve_secret()
            .map_err(|e| crate::usage::UsageError(e.to_string()))?;
        Ok((listen, config))
    }

    /// `config` with the flags applied over it (the secret not yet resolved).
    fn apply(self, mut config: TestbedConfig) -> anyhow::Result<(SocketAddr, TestbedConfig)> {
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
                return Err(crate::usage::UsageError(
                    "--max-managers-per-user must be at least 1".into(),
                )
                .into());
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
        if let Some(w) = self.pipeline_concurrency {
            if w > MAX_CONCURRENCY {
                return Err(crate::usage::UsageError(format!(
                    "--pipeline-concurrency must be at most {MAX_CONCURRENCY} (0: unlimited)"
                ))
                .into());
            }
            config.pipeline.concurrency = w;
        }
        Ok((self.listen, config))
    }
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(args: Args, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<u8> {
    let (listen, config) = args.into_config()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, issuer = %config.auth.issuer, faults = !config.faults.is_empty(), "testbed listening: ws://{addr}/ws, stats at http://{addr}/__testbed/stats");
    gauntlet_testbed::serve(config, listener, shutdown).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn apply(flags: &[&str], config: TestbedConfig) -> anyhow::Result<TestbedConfig> {
        let argv = std::iter::once("testbed").chain(flags.iter().copied());
        Ok(Cli::try_parse_from(argv)?.args.apply(config)?.1)
    }

    #[test]
    fn pipeline_concurrency_flag_overrides_the_file() {
        let mut file = TestbedConfig::default();
        file.pipeline.concurrency = 3;
        let c = apply(&["--pipeline-concurrency", "8"], file.clone()).unwrap();
        assert_eq!(c.pipeline.concurrency, 8);
        let c = apply(&["--pipeline-concurrency", "0"], file.clone()).unwrap();
        assert_eq!(c.pipeline.concurrency, 0, "0: unlimited");
        let e = apply(&["--pipeline-concurrency", "1000001"], file).unwrap_err();
        assert!(
            e.downcast_ref::<crate::usage::UsageError>().is_some(),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "--pipeline-concurrency must be at most 1000000 (0: unlimited)"
        );
    }
}

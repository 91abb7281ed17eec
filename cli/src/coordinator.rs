//! `gauntlet coordinator`: the fleet's centre on its gRPC port (and the HTTP port, if asked),
//! refusing to listen beyond loopback without its credentials, until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use gauntlet_coordinator::{Coordinator, CoordinatorConfig};
use tokio_util::sync::CancellationToken;

use crate::usage::UsageError;

/// `gauntlet coordinator` flags.
#[derive(Debug, clap::Args)]
pub struct CoordinatorArgs {
    /// gRPC address workers and clients connect to.
    #[arg(long, env = "GAUNTLET_LISTEN", default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// A worker silent for this long is lost.
    #[arg(long, env = "GAUNTLET_HEARTBEAT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Duration,
    /// Bearer token workers must present (`gauntlet worker --token`); also required of
    /// submitters when no --submit-token is set.
    #[arg(long, env = "GAUNTLET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Bearer token submitters must present (`gauntlet run --token`) to submit, watch or cancel
    /// runs; a worker's token then cannot. Set both when the coordinator is reachable by others.
    #[arg(long, env = "GAUNTLET_SUBMIT_TOKEN", hide_env_values = true)]
    submit_token: Option<String>,
    /// Listen beyond loopback without both tokens, or serve HTTP beyond loopback without one
    /// (anyone who reaches the port could then run plans on the fleet, pose as a worker, or
    /// read every run). The variable takes 1/0, true/false, yes/no.
    #[arg(long, env = "GAUNTLET_INSECURE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    insecure: bool,
    /// HTTP address of the live page (`/`), `/api/runs`, `/api/live`, `/metrics` and
    /// `/healthz`.
    #[arg(long, env = "GAUNTLET_HTTP")]
    http: Option<SocketAddr>,
    /// Token the HTTP port requires (all but `/healthz`), as a bearer token or a basic-auth
    /// password; default: the submit token (or, without one, the worker token).
    #[arg(long, env = "GAUNTLET_HTTP_TOKEN", hide_env_values = true)]
    http_token: Option<String>,
    /// Serve gRPC over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "GAUNTLET_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, env = "GAUNTLET_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Record every run (started, finished, or interrupted by a coordinator restart) in this
    /// history database.
    #[arg(long, env = "GAUNTLET_COORDINATOR_HISTORY")]
    history: Option<PathBuf>,
}

/// Runs a coordinator until a signal.
pub async fn run(args: CoordinatorArgs, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let config = CoordinatorConfig {
        heartbeat_timeout: args.heartbeat_timeout,
        ..CoordinatorConfig::default()
    };
    let lacking: Vec<&str> = [
        ("--token", &args.token),
        ("--submit-token", &args.submit_token),
    ]
    .iter()
    .filter(|(_, t)| t.as_deref().is_none_or(str::is_empty))
    .map(|(flag, _)| *flag)
    .collect();
    if !args.listen.ip().is_loopback() && !lacking.is_empty() && !args.insecure {
        return Err(UsageError(format!(
            "refusing to listen on {} without {}: anyone who reaches it could run plans on the \
             fleet or pose as a worker. Set the tokens (GAUNTLET_TOKEN for workers, \
             GAUNTLET_SUBMIT_TOKEN for submitters), listen on loopback, or pass --insecure \
             (GAUNTLET_INSECURE=true)",
            args.listen,
            lacking.join(" and ")
        ))
        .into());
    }
    if args.token.as_deref().is_some_and(|t| !t.is_empty()) && args.token == args.submit_token {
        return Err(UsageError(
            "--token and --submit-token are the same: a worker could then submit runs".into(),
        )
        .into());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    errln!("coordinator listening on {}", listener.local_addr()?);
    let mut coordinator = Coordinator::new(config, shutdown.clone())
        .with_token(args.token)
        .with_submit_token(args.submit_token)
        .with_http_token(args.http_token);
    if let Some(http) = args.http
        && !http.ip().is_loopback()
        && coordinator.http_token().is_none()
        && !args.insecure
    {
        return Err(UsageError(format!(
            "refusing to serve HTTP on {http} without a token: it shows every run. Set \
             GAUNTLET_SUBMIT_TOKEN (or GAUNTLET_HTTP_TOKEN), listen on loopback, or pass \
             --insecure (GAUNTLET_INSECURE=true)"
        ))
        .into());
    }
    if let Some(path) = &args.history {
        coordinator = coordinator.with_history(gauntlet_coordinator::history::History::open(path)?);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let cert =
            std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
        let key = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
        coordinator = coordinator.with_tls(cert, key);
    }
    let http = match args.http {
        Some(addr) => {
            let http = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (HTTP)"))?;
            errln!("coordinator HTTP on {}", http.local_addr()?);
            Some(http)
        }
        None => None,
    };
    coordinator.serve(listener, http).await?;
    Ok(0)
}

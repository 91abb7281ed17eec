//! `gauntlet coordinator`, `gauntlet worker`, and the client side of a run: submit a plan to a
//! coordinator (or to one started in this process with in-process workers, over the same
//! gRPC calls), follow its progress, and return the report.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use gauntlet_coordinator::{Coordinator, CoordinatorConfig};
use gauntlet_core::report::Report;
use gauntlet_proto::v1;
use gauntlet_proto::v1::control_service_client::ControlServiceClient;
use gauntlet_worker::agent::{AgentConfig, run_agent};
use tokio_util::sync::CancellationToken;

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
    /// read every run).
    #[arg(long)]
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
}

/// Runs a coordinator until a signal.
#[allow(clippy::print_stderr)]
pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<u8> {
    let shutdown = crate::signals::shutdown_token();
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
        return Err(crate::testbed::UsageError(format!(
            "refusing to listen on {} without {}: anyone who reaches it could run plans on the \
             fleet or pose as a worker. Set the tokens (GAUNTLET_TOKEN for workers, \
             GAUNTLET_SUBMIT_TOKEN for submitters), listen on loopback, or pass --insecure",
            args.listen,
            lacking.join(" and ")
        ))
        .into());
    }
    if args.token.as_deref().is_some_and(|t| !t.is_empty()) && args.token == args.submit_token {
        return Err(crate::testbed::UsageError(
            "--token and --submit-token are the same: a worker could then submit runs".into(),
        )
        .into());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("coordinator listening on {}", listener.local_addr()?);
    let mut coordinator = Coordinator::new(config, shutdown.clone())
        .with_token(args.token)
        .with_submit_token(args.submit_token)
        .with_http_token(args.http_token);
    if let Some(http) = args.http
        && !http.ip().is_loopback()
        && coordinator.http_token().is_none()
        && !args.insecure
    {
        return Err(crate::testbed::UsageError(format!(
            "refusing to serve HTTP on {http} without a token: it shows every run. Set \
             GAUNTLET_SUBMIT_TOKEN (or GAUNTLET_HTTP_TOKEN), listen on loopback, or pass --insecure"
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
    if let Some(addr) = args.http {
        let http = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (HTTP)"))?;
        eprintln!("coordinator HTTP on {}", http.local_addr()?);
        let served = coordinator.clone();
        tokio::spawn(async move {
            if let Err(e) = served.serve_http(http).await {
                tracing::error!(error = %e, "coordinator HTTP server stopped");
            }
        });
    }
    coordinator.serve(listener).await?;
    Ok(0)
}

/// Runs a worker until a signal.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<u8> {
    let name = args.name.unwrap_or_else(host_name);
    crate::run::check_open_files(0);
    let config = AgentConfig {
        coordinator: args.coordinator,
        name,
        capacity: args.capacity,
        labels: BTreeMap::new(),
        drain: args.drain,
        token: args.token,
        tls_ca: read_pem(args.tls_ca.as_deref())?,
        access: gauntlet_worker::access::Access::new(
            &args.plan_env,
            &args.plan_files,
            &args
                .allow_target
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .map_err(crate::testbed::UsageError)?,
    };
    run_agent(config, crate::signals::shutdown_token()).await?;
    Ok(0)
}

/// Reads a PEM file given on the command line.
pub fn read_pem(path: Option<&std::path::Path>) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// A plan to submit.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Plan text.
    pub plan_toml: String,
    /// Its file name.
    pub plan_file: String,
    /// `--target`.
    pub target: Option<String>,
    /// `--ws-target`.
    pub ws_target: Option<String>,
    /// Workers to wait for.
    pub min_workers: u32,
    /// Bearer token of a remote coordinator.
    pub token: Option<String>,
    /// Extra CA certificate (PEM) for an https:// coordinator.
    pub tls_ca: Option<Vec<u8>>,
}

/// Where a run goes.
#[derive(Debug, Clone)]
pub enum Fleet {
    /// A coordinator elsewhere.
    Remote(String),
    /// A coordinator and this many workers started here, on loopback.
    InProcess(u32),
}

/// Submits `submission`, follows it, and returns its report.
pub async fn run_plan(fleet: Fleet, submission: Submission, quiet: bool) -> anyhow::Result<Report> {
    let stop_local = CancellationToken::new();
    let (url, local_workers) = match fleet {
        Fleet::Remote(url) => (url, 0),
        Fleet::InProcess(n) => {
            let coordinator = Coordinator::new(CoordinatorConfig::default(), stop_local.clone());
            let (addr, _) = coordinator
                .start("127.0.0.1:0".parse()?)
                .await
                .context("cannot start the in-process coordinator")?;
            let url = format!("http://{addr}");
            for i in 0..n {
                let config = AgentConfig {
                    coordinator: url.clone(),
                    name: format!("local-{}", i + 1),
                    capacity: 1,
                    labels: BTreeMap::new(),
                    drain: Duration::from_secs(15),
                    token: None,
                    tls_ca: None,
                    // The user's own plan in the user's own process.
                    access: gauntlet_worker::access::Access::open(),
                };
                let stop = stop_local.clone();
                tokio::spawn(async move {
                    if let Err(e) = run_agent(config, stop).await {
                        tracing::error!(error = %e, "in-process worker stopped");
                    }
                });
            }
            (url, n)
        }
    };
    let result = follow(&url, submission, local_workers, quiet).await;
    stop_local.cancel();
    result
}

#[allow(clippy::print_stderr)]
async fn follow(
    url: &str,
    submission: Submission,
    local_workers: u32,
    quiet: bool,
) -> anyhow::Result<Report> {
    let channel = gauntlet_proto::auth::endpoint(url, submission.tls_ca.as_deref())
        .map_err(anyhow::Error::msg)?
        .connect()
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    // The last progress message carries the whole report: a long soak's intervals or a
    // hostile target's failure details must not make it too big to receive (tonic's default
    // is 4 MiB).
    let mut client = ControlServiceClient::with_interceptor(
        channel,
        gauntlet_proto::auth::attach_token(submission.token.clone()),
    )
    .max_decoding_message_size(gauntlet_proto::MAX_REPORT_BYTES);
    let min_workers = if submission.min_workers > 0 {
        submission.min_workers
    } else {
        local_workers
    };
    let submitted = client
        .submit_run(v1::SubmitRunRequest {
            plan_toml: submission.plan_toml,
            plan_file: submission.plan_file,
            target: submission.target.unwrap_or_default(),
            ws_target: submission.ws_target.unwrap_or_default(),
            min_workers,
            min_workers_timeout_ms: 0,
        })
        .await
        .map_err(|s| anyhow::anyhow!("the coordinator refused the run: {}", s.message()))?
        .into_inner();
    let run_id = submitted.run_id;
    let ctrl_c = crate::signals::shutdown_token();
    let mut stream = client
        .watch_run(v1::WatchRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("cannot follow run {run_id}: {}", s.message()))?
        .into_inner();
    let tty = std::io::stderr().is_terminal() && !quiet;
    let mut last_line = tokio::time::Instant::now();
    let mut cancelled = false;
    loop {
        let next = tokio::select! {
            _ = ctrl_c.cancelled(), if !cancelled => {
                cancelled = true;
                eprintln!("\nstopping run {run_id} (Ctrl-C): running sessions get their graceful stop");
                let _ = client.cancel_run(v1::CancelRunRequest { run_id: run_id.clone() }).await;
                continue;
            }
            next = stream.message() => next,
        };
        let progress = match next {
            Ok(Some(p)) => p,
            Ok(None) => {
                bail!("the coordinator ended run {run_id}'s progress stream without a report")
            }
            Err(s) => bail!(
                "lost the coordinator while following run {run_id}: {}",
                s.message()
            ),
        };
        if !progress.report_json.is_empty() {
            if tty {
                eprintln!();
            }
            let report: Report = serde_json::from_str(&progress.report_json)
                .context("the coordinator sent an unreadable report")?;
            return Ok(report);
        }
        if quiet {
            continue;
        }
        let line = progress_line(&progress);
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = tokio::time::Instant::now();
            eprintln!("{line}");
        }
    }
}

fn progress_line(p: &v1::RunProgress) -> String {
    let c = p.counters.unwrap_or_default();
    let elapsed = p.elapsed_ms as f64 / 1000.0;
    let planned = if p.planned_ms > 0 {
        format!("/{:.0}s", p.planned_ms as f64 / 1000.0)
    } else {
        String::new()
    };
    let rate = if elapsed > 0.0 {
        c.sessions_started as f64 / elapsed
    } else {
        0.0
    };
    let metrics: Vec<String> = p
        .metrics
        .iter()
        .map(|m| {
            format!(
                "{} p50 {:.1}ms p99 {:.1}ms",
                m.name,
                m.p50_us as f64 / 1000.0,
                m.p99_us as f64 / 1000.0
            )
        })
        .collect();
    let failures: Vec<String> = p
        .failures
        .iter()
        .map(|f| format!("{}={}", f.category, f.count))
        .collect();
    format!(
        "[{} {elapsed:.1}s{planned}] workers {}{} VUs {} sessions {} ({rate:.0}/s) passed {} failed {} {} {}",
        match p.phase() {
            v1::RunPhase::Waiting => "waiting",
            v1::RunPhase::Running => "running",
            v1::RunPhase::Finished => "finished",
            v1::RunPhase::Unspecified => "?",
        },
        p.workers,
        if p.workers_lost > 0 {
            format!(" ({} lost)", p.workers_lost)
        } else {
            String::new()
        },
        p.active_vus,
        c.sessions_started,
        c.sessions_passed,
        c.sessions_failed,
        failures.join(" "),
        metrics.join(", ")
    )
}

/// Writes `report.json`, `report.md`, `report.html` and `junit.xml` into `dir` (report.md compares with
/// `previous` when given); returns the path of report.json.
pub fn write_report(dir: &std::path::Path, report: &Report) -> anyhow::Result<std::path::PathBuf> {
    write_reports(dir, report, None)
}

/// [`write_report`] with a previous run to compare against.
pub fn write_reports(
    dir: &std::path::Path,
    report: &Report,
    previous: Option<&Report>,
) -> anyhow::Result<std::path::PathBuf> {
    use gauntlet_core::report::{html, junit, markdown};
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok::<_, anyhow::Error>(path)
    };
    // report.json first: the figures are safe before anything else is attempted.
    let json = write("report.json", &serde_json::to_string_pretty(report)?)?;
    let comparison = previous.map(|p| gauntlet_core::compare::compare(p, report));
    write("report.md", &markdown::render(report, comparison.as_ref()))?;
    write("report.html", &html::render(report, comparison.as_ref()))?;
    write("junit.xml", &junit::render(report))?;
    Ok(json)
}

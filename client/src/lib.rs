//! gauntlet-client: the run client. It submits a plan to a coordinator, follows the run's
//! progress to its report, and cancels the run when its caller's token is cancelled (the run
//! then ends with what it delivered, and the report still comes). The coordinator is a remote
//! one, or one started in this process with in-process workers on loopback: the same gRPC
//! calls either way, so `gauntlet run` on one machine and on a fleet are one code path.

use std::collections::BTreeMap;
use std::time::Duration;

use gauntlet_coordinator::{Coordinator, CoordinatorConfig};
use gauntlet_core::plan::LoadOverride;
use gauntlet_core::report::Report;
use gauntlet_proto::v1;
use gauntlet_proto::v1::control_service_client::ControlServiceClient;
use gauntlet_worker::agent::{AgentConfig, run_agent};
use tokio_util::sync::CancellationToken;

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
    /// Workers to wait for (0: the plan's, or, in process, all of them).
    pub min_workers: u32,
    /// Bearer token of a remote coordinator (its submit token).
    pub token: Option<String>,
    /// Extra CA certificate (PEM) for an https:// coordinator.
    pub tls_ca: Option<Vec<u8>>,
    /// `--vus`, `--rate`, `--stage`...: replaces the plan's `[load]` for this run.
    pub load: LoadOverride,
    /// `--var NAME=VALUE`: replaces the scenarios' variables of that name.
    pub vars: std::collections::BTreeMap<String, String>,
}

/// Where a run goes.
#[derive(Debug, Clone)]
pub enum Fleet {
    /// A coordinator elsewhere.
    Remote(String),
    /// A coordinator and this many workers started here, on loopback.
    InProcess(u32),
}

/// What happens while a run is followed.
#[derive(Debug)]
pub enum Event<'a> {
    /// The run was submitted under this id.
    Submitted(&'a str),
    /// The coordinator's latest progress.
    Progress(&'a v1::RunProgress),
    /// The caller asked to stop: the run was cancelled, its sessions get their graceful stop.
    Stopping(&'a str),
    /// The progress stream broke (a starved or restarting coordinator, a network cut): it is
    /// being watched again, for up to [`RESUME_FOR`] since it broke.
    Resuming {
        /// The run.
        run: &'a str,
        /// Why the stream broke.
        why: &'a str,
    },
}

/// How long a broken progress stream is watched again before the client gives up on the run
/// (the run goes on without it: `gauntlet show RUN` on the coordinator's history has it).
pub const RESUME_FOR: Duration = Duration::from_secs(30);

/// Why a run could not be followed to its report.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The in-process coordinator could not start.
    #[error("cannot start the in-process coordinator: {0}")]
    Start(#[source] std::io::Error),
    /// The coordinator URL is not usable.
    #[error(transparent)]
    BadUrl(#[from] gauntlet_proto::auth::EndpointError),
    /// The coordinator could not be reached.
    #[error("cannot reach the coordinator at {url}: {source}")]
    Unreachable {
        /// Its URL.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The coordinator refused the run (a bad plan, a wrong token...).
    #[error("the coordinator refused the run: {0}")]
    Refused(String),
    /// The run's progress could not be followed.
    #[error("cannot follow run {run}: {why}")]
    Watch {
        /// The run.
        run: String,
        /// Why.
        why: String,
    },
    /// The coordinator went away while the run was followed.
    #[error("lost the coordinator while following run {run}: {why}")]
    Lost {
        /// The run.
        run: String,
        /// Why.
        why: String,
    },
    /// The stream ended without the report.
    #[error("the coordinator ended run {0}'s progress stream without a report")]
    NoReport(String),
    /// The report does not parse.
    #[error("the coordinator sent an unreadable report: {0}")]
    BadReport(#[source] serde_json::Error),
}

/// A coordinator and its workers started in this process, on loopback, for as many runs as
/// the caller submits (`gauntlet capacity` runs every step on one); dropping it stops them.
#[derive(Debug)]
pub struct LocalFleet {
    url: String,
    workers: u32,
    stop: CancellationToken,
}

impl LocalFleet {
    /// Starts a coordinator on 127.0.0.1 and `workers` workers registered with it.
    pub async fn start(workers: u32) -> Result<LocalFleet, ClientError> {
        let stop = CancellationToken::new();
        let coordinator = Coordinator::new(CoordinatorConfig::default(), stop.clone());
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let (addr, _) = coordinator.start(addr).await.map_err(ClientError::Start)?;
        let url = format!("http://{addr}");
        for i in 0..workers {
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
                sources: Default::default(),
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Err(e) = run_agent(config, stop).await {
                    tracing::error!(error = %e, "in-process worker stopped");
                }
            });
        }
        Ok(LocalFleet { url, workers, stop })
    }

    /// Submits `submission` to this fleet and follows it to its report (as [`run_plan`]);
    /// the run waits for all of this fleet's workers unless the submission says otherwise.
    pub async fn run(
        &self,
        submission: Submission,
        stop: &CancellationToken,
        observe: impl FnMut(Event<'_>),
    ) -> Result<Report, ClientError> {
        follow(&self.url, submission, self.workers, stop, observe).await
    }
}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Submits `submission` to `fleet`, follows it to its report and returns it, telling
/// `observe` what happens. Cancelling `stop` cancels the run; its report still comes.
pub async fn run_plan(
    fleet: Fleet,
    submission: Submission,
    stop: &CancellationToken,
    observe: impl FnMut(Event<'_>),
) -> Result<Report, ClientError> {
    match fleet {
        Fleet::Remote(url) => follow(&url, submission, 0, stop, observe).await,
        Fleet::InProcess(n) => {
            let local = LocalFleet::start(n).await?;
            local.run(submission, stop, observe).await
        }
    }
}

async fn follow(
    url: &str,
    submission: Submission,
    local_workers: u32,
    stop: &CancellationToken,
    mut observe: impl FnMut(Event<'_>),
) -> Result<Report, ClientError> {
    let channel = gauntlet_proto::auth::endpoint(url, submission.tls_ca.as_deref())
        .map_err(ClientError::BadUrl)?
        .connect()
        .await
        .map_err(|source| ClientError::Unreachable {
            url: url.to_owned(),
            source,
        })?;
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
    let load_json = if submission.load.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&submission.load).map_err(ClientError::BadReport)?
    };
    let run_id = client
        .submit_run(v1::SubmitRunRequest {
            plan_toml: submission.plan_toml,
            plan_file: submission.plan_file,
            target: submission.target.unwrap_or_default(),
            ws_target: submission.ws_target.unwrap_or_default(),
            min_workers,
            min_workers_timeout_ms: 0,
            load_json,
            vars_json: if submission.vars.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&submission.vars).map_err(ClientError::BadReport)?
            },
        })
        .await
        .map_err(|s| ClientError::Refused(s.message().to_owned()))?
        .into_inner()
        .run_id;
    observe(Event::Submitted(&run_id));
    let mut stream = client
        .watch_run(v1::WatchRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .map_err(|s| ClientError::Watch {
            run: run_id.clone(),
            why: s.message().to_owned(),
        })?
        .into_inner();
    let mut cancelled = false;
    // When the stream broke, if it is broken now, and the wait before watching again.
    let mut broken: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let next = tokio::select! {
            _ = stop.cancelled(), if !cancelled => {
                cancelled = true;
                observe(Event::Stopping(&run_id));
                let _ = client.cancel_run(v1::CancelRunRequest { run_id: run_id.clone() }).await;
                continue;
            }
            next = stream.message() => next,
        };
        let progress = match next {
            Ok(Some(p)) => {
                broken = None;
                backoff = Duration::from_millis(100);
                p
            }
            // The stream broke, or ended without the report: the run goes on at the
            // coordinator, so it is watched again (a `WatchRun` starts with the run's latest
            // progress, the report if it finished meanwhile).
            Ok(None) | Err(_) => {
                let why = match next {
                    Err(s) => s.message().to_owned(),
                    _ => "the progress stream ended without the report".to_owned(),
                };
                let since = *broken.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= RESUME_FOR {
                    return Err(ClientError::Lost {
                        run: run_id,
                        why: format!(
                            "{why} (watched again for {})",
                            humantime::format_duration(RESUME_FOR)
                        ),
                    });
                }
                observe(Event::Resuming {
                    run: &run_id,
                    why: &why,
                });
                tokio::select! {
                    _ = stop.cancelled(), if !cancelled => {
                        cancelled = true;
                        observe(Event::Stopping(&run_id));
                        let _ = client.cancel_run(v1::CancelRunRequest { run_id: run_id.clone() }).await;
                    }
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                match client
                    .watch_run(v1::WatchRunRequest {
                        run_id: run_id.clone(),
                    })
                    .await
                {
                    Ok(s) => stream = s.into_inner(),
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        return Err(ClientError::Lost {
                            run: run_id,
                            why: format!(
                                "{why}; the coordinator no longer knows the run (it restarted)"
                            ),
                        });
                    }
                    // Still unreachable: the next message attempt fails at once and loops.
                    Err(_) => {}
                }
                continue;
            }
        };
        if !progress.report_json.is_empty() {
            return serde_json::from_str(&progress.report_json).map_err(ClientError::BadReport);
        }
        observe(Event::Progress(&progress));
    }
}

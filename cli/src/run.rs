//! `gauntlet run PLAN` and `gauntlet validate PLAN`: load and check a plan, run it on a fleet
//! (a coordinator and workers started in this process unless `--coordinator` names one),
//! write report.json, print the summary, and exit with the verdict's code.

use anyhow::Context;
use gauntlet_core::plan::{Overrides, Plan};
use std::path::PathBuf;

use crate::fleet::{Fleet, Submission, run_plan, write_report};

/// Where the plan's target comes from when the command line overrides it.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// HTTP base URL replacing the plan's `target.base_url`; the WebSocket URL follows it
    /// (`http` -> `ws`, `https` -> `wss`, plus `target.ws_path`).
    #[arg(long, env = "GAUNTLET_TARGET")]
    target: Option<String>,
    /// WebSocket URL replacing the plan's, on its own.
    #[arg(long, env = "GAUNTLET_WS_TARGET")]
    ws_target: Option<String>,
}

impl TargetArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            target: self.target.clone(),
            ws_target: self.ws_target.clone(),
        }
    }
}

/// `gauntlet run` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plan (TOML; see docs/plans.md).
    plan: PathBuf,
    /// Coordinator URL; without it a coordinator and `--workers` workers start in this
    /// process, on loopback, and the run goes through the same gRPC calls.
    #[arg(long, env = "GAUNTLET_COORDINATOR")]
    coordinator: Option<String>,
    /// In-process workers (without `--coordinator`).
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Kept for compatibility: the same as giving no `--coordinator`.
    #[arg(long, hide = true)]
    local: bool,
    /// Wait for this many workers before starting (default: the plan's `fleet.min_workers`).
    #[arg(long)]
    min_workers: Option<u32>,
    #[command(flatten)]
    target: TargetArgs,
    /// Directory for report.json (default: gauntlet-runs/<run id>).
    #[arg(long, env = "GAUNTLET_OUT")]
    out: Option<PathBuf>,
    /// Bearer token of the coordinator.
    #[arg(long, env = "GAUNTLET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Extra CA certificate (PEM) to trust for an https:// coordinator.
    #[arg(long, env = "GAUNTLET_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[command(flatten)]
    history: crate::history::HistoryArgs,
    /// Do not store the run in the history.
    #[arg(long)]
    no_history: bool,
}

/// `gauntlet validate` flags.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The plan.
    plan: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
}

/// Checks a plan and prints what it would run.
#[allow(clippy::print_stdout)]
pub fn validate(args: ValidateArgs) -> anyhow::Result<u8> {
    let plan = Plan::load(&args.plan, &args.target.overrides())?;
    println!(
        "{}: ok: plan `{}`, {} scenario(s), {:?} model, target {} / {}",
        args.plan.display(),
        plan.name,
        plan.scenarios.len(),
        plan.load.model,
        plan.target.base_url.as_deref().unwrap_or("-"),
        plan.ws_url().unwrap_or_default()
    );
    Ok(0)
}

/// Runs a plan on a fleet (in-process by default) and writes its report.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn run(args: Args) -> anyhow::Result<u8> {
    // Validate here first: a bad plan is exit 2 with its location, before any network.
    let plan = Plan::load(&args.plan, &args.target.overrides())?;
    let text = std::fs::read_to_string(&args.plan)
        .with_context(|| format!("cannot read {}", args.plan.display()))?;
    if args.workers == 0 && args.coordinator.is_none() {
        return Err(crate::testbed::UsageError("--workers must be at least 1".into()).into());
    }
    let fleet = match args.coordinator {
        Some(url) => Fleet::Remote(url),
        None => {
            check_open_files(plan.max_vus());
            Fleet::InProcess(args.workers)
        }
    };
    eprintln!(
        "running plan `{}` against {} ({})",
        plan.name,
        plan.target.base_url.as_deref().unwrap_or("-"),
        plan.ws_url().unwrap_or_default()
    );
    let submission = Submission {
        plan_toml: text,
        plan_file: args.plan.display().to_string(),
        target: args.target.target.clone(),
        ws_target: args.target.ws_target.clone(),
        min_workers: args.min_workers.unwrap_or(0),
        token: args.token.clone(),
        tls_ca: crate::fleet::read_pem(args.tls_ca.as_deref())?,
    };
    let plan_toml = submission.plan_toml.clone();
    let report = run_plan(fleet, submission, false).await?;
    let dir = args
        .out
        .unwrap_or_else(|| PathBuf::from("gauntlet-runs").join(&report.run_id));
    // The files first: whatever the history database does, the run is on disk.
    let path = write_report(&dir, &report)?;
    if !args.no_history {
        store(&args.history, &report, &plan_toml, &dir);
    }
    println!("{}", report.render_text());
    println!("report: {}", path.display());
    Ok(report.verdict.exit_code())
}

/// Stores the run and, when the plan ran before, rewrites report.md with the progress since
/// then. A database problem is a warning: the report files are already written.
#[allow(clippy::print_stderr)]
fn store(
    args: &crate::history::HistoryArgs,
    report: &gauntlet_core::report::Report,
    plan_toml: &str,
    dir: &std::path::Path,
) {
    let result = (|| -> anyhow::Result<()> {
        let history = args.open()?;
        let previous = history.previous(&report.plan.name, &report.run_id)?;
        history.store(report, plan_toml)?;
        if previous.is_some() {
            crate::fleet::write_reports(dir, report, previous.as_ref())?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!(
            "warning: the run was not stored in the history ({e:#}); its report files are in {}",
            dir.display()
        );
    }
}

/// Raises this process's open-files limit to its hard limit (every connection is a file) and
/// warns when the plan's VUs cannot all hold a connection within it.
#[allow(clippy::print_stderr)]
pub fn check_open_files(vus: u64) {
    // Room for the runtime, logs and HTTP connections besides one socket per VU.
    const SPARE: u64 = 64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if vus + SPARE > limit => eprintln!(
            "warning: this process may open {limit} files, but the plan runs up to {vus} VUs \
             with a connection each: sessions beyond the limit will fail to connect \
             (\"Too many open files\"). Raise the hard limit (ulimit -Hn) or split the load \
             across workers."
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot read or raise the open-files limit"),
    }
}

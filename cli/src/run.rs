//! `gauntlet run PLAN` and `gauntlet validate PLAN`: load and check a plan, run it on a fleet
//! (a coordinator and workers started in this process unless `--coordinator` names one),
//! write report.json, print the summary, and exit with the verdict's code.

use std::time::Duration;

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
    /// The coordinator's submit token (its --submit-token, or its --token when it has none).
    #[arg(long, env = "GAUNTLET_SUBMIT_TOKEN", hide_env_values = true)]
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
pub fn validate(args: ValidateArgs) -> anyhow::Result<u8> {
    let plan = Plan::load(&args.plan, &args.target.overrides())?;
    outln!(
        "{}: ok: plan `{}`, {} scenario(s), {:?} model, target {} / {}",
        args.plan.display(),
        plan.name,
        plan.scenarios.len(),
        plan.load.model(),
        shown_url(plan.target.base_url.as_deref().unwrap_or("-")),
        shown_url(&plan.ws_url().unwrap_or_default())
    );
    Ok(0)
}

/// A target URL as `validate` and `run` print it: user-info and secret query parameters
/// masked.
fn shown_url(url: &str) -> String {
    gauntlet_core::redact::url(url)
}

/// Checks the plan and the flags, and prepares what to submit where.
fn prepare(args: &Args) -> anyhow::Result<(Fleet, Submission, Plan)> {
    // Validate here first: a bad plan is exit 2 with its location, before any network.
    let text = std::fs::read_to_string(&args.plan).map_err(|source| {
        gauntlet_core::config_file::ConfigError::Read {
            path: args.plan.clone(),
            source,
        }
    })?;
    let plan = Plan::from_text(
        &args.plan.display().to_string(),
        &text,
        &args.target.overrides(),
    )?;
    if args.workers == 0 && args.coordinator.is_none() {
        return Err(crate::testbed::UsageError("--workers must be at least 1".into()).into());
    }
    let fleet = match &args.coordinator {
        Some(url) => Fleet::Remote(url.clone()),
        None => {
            check_open_files(plan.max_vus());
            Fleet::InProcess(args.workers)
        }
    };
    let submission = Submission {
        plan_toml: text,
        plan_file: args.plan.display().to_string(),
        target: args.target.target.clone(),
        ws_target: args.target.ws_target.clone(),
        min_workers: args.min_workers.unwrap_or(0),
        token: args.token.clone(),
        tls_ca: crate::fleet::read_pem(args.tls_ca.as_deref())?,
    };
    Ok((fleet, submission, plan))
}

/// Runs a plan on a fleet (in-process by default) and writes its report.
#[allow(clippy::print_stderr)]
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let (fleet, submission, plan) = prepare(&args)?;
    eprintln!(
        "running plan `{}` against {} ({})",
        plan.name,
        shown_url(plan.target.base_url.as_deref().unwrap_or("-")),
        shown_url(&plan.ws_url().unwrap_or_default())
    );
    let plan_toml = submission.plan_toml.clone();
    let report = run_plan(fleet, submission, false).await?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("gauntlet-runs").join(&report.run_id));
    // The files first: whatever the history database does, the run is on disk.
    let path = write_report(&dir, &report)?;
    if !args.no_history {
        store(&args.history, &report, &plan_toml, &dir, true);
    }
    outln!("{}", report.render_text());
    outln!("report: {}", path.display());
    Ok(report.verdict.exit_code())
}

/// `gauntlet loop` flags.
#[derive(Debug, clap::Args)]
pub struct LoopArgs {
    #[command(flatten)]
    run: Args,
    /// A cycle reaches the goal when its verdict is pass with at least this many sessions passed.
    #[arg(long)]
    until_passes: u64,
    /// Give up after this many cycles.
    #[arg(long, default_value_t = 10)]
    max_cycles: u32,
    /// Shell command run between cycles (a redeploy, a fix script); its exit status and
    /// duration are recorded with the cycle.
    #[arg(long)]
    between: Option<String>,
}

/// One cycle of a loop.
#[derive(Debug)]
struct Cycle {
    number: u32,
    report: gauntlet_core::report::Report,
    between: Option<(Option<i32>, Duration)>,
}

/// Runs cycle after cycle until one passes with enough sessions, a cycle runs nothing, or the
/// cycles run out.
#[allow(clippy::print_stderr)]
pub async fn run_loop(args: LoopArgs) -> anyhow::Result<u8> {
    if args.until_passes == 0 {
        return Err(crate::testbed::UsageError("--until-passes must be at least 1".into()).into());
    }
    let (fleet, submission, plan) = prepare(&args.run)?;
    let out = args
        .run
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("gauntlet-runs").join(format!("loop-{}", plan.name)));
    let mut cycles: Vec<Cycle> = Vec::new();
    let mut between_result = None;
    let outcome = loop {
        let number = cycles.len() as u32 + 1;
        eprintln!("== cycle {number} of at most {}", args.max_cycles);
        let report = run_plan(fleet.clone(), submission.clone(), false).await?;
        let dir = out.join(format!("cycle-{number}"));
        write_report(&dir, &report)?;
        // Progress vs the previous cycle of this loop.
        if let Some(prev) = cycles.last() {
            crate::fleet::write_reports(&dir, &report, Some(&prev.report))?;
        }
        if !args.run.no_history {
            // The loop compares with its own previous cycle, not the history's latest run.
            store(
                &args.run.history,
                &report,
                &submission.plan_toml,
                &dir,
                false,
            );
        }
        outln!("{}", report.render_text());
        outln!("report: {}", dir.join("report.json").display());
        let passed = report.verdict == gauntlet_core::report::Verdict::Pass
            && report.totals.passed >= args.until_passes;
        let ran_nothing = report.totals.passed + report.totals.failed == 0
            || report
                .verdict_reason
                .starts_with("the target was never reached");
        cycles.push(Cycle {
            number,
            report,
            between: between_result.take(),
        });
        if ran_nothing {
            break LoopEnd::RanNothing;
        }
        if passed {
            break LoopEnd::Reached;
        }
        if number >= args.max_cycles {
            break LoopEnd::OutOfCycles;
        }
        if let Some(cmd) = &args.between {
            eprintln!("== between cycles: {cmd}");
            let started = tokio::time::Instant::now();
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .status()
                .await;
            let code = match status {
                Ok(s) => s.code(),
                Err(e) => {
                    eprintln!("warning: cannot run `{cmd}`: {e}");
                    None
                }
            };
            between_result = Some((code, started.elapsed()));
        }
    };
    outln!("\n{}", cycle_table(&cycles));
    let last = cycles
        .last()
        .map(|c| c.report.verdict_reason.clone())
        .unwrap_or_default();
    match outcome {
        LoopEnd::Reached => {
            outln!(
                "goal reached in cycle {}: verdict pass with at least {} sessions passed",
                cycles.len(),
                args.until_passes
            );
            Ok(0)
        }
        LoopEnd::RanNothing => {
            outln!(
                "STOPPED: cycle {} ran nothing ({last}); a cycle that executes nothing is an error, not a pass",
                cycles.len()
            );
            Ok(crate::exit::RUN_ERROR)
        }
        LoopEnd::OutOfCycles => {
            outln!(
                "goal not reached in {} cycles (last verdict: {last})",
                cycles.len()
            );
            Ok(crate::exit::FAILED)
        }
    }
}

#[derive(Debug)]
enum LoopEnd {
    Reached,
    RanNothing,
    OutOfCycles,
}

/// The loop's closing table: cycle, verdict, sessions, failures by category, p99, between.
fn cycle_table(cycles: &[Cycle]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "| cycle | verdict | sessions | passed | failures by category | session p99 | before it |\n|---:|---|---:|---:|---|---:|---|\n",
    );
    for c in cycles {
        let r = &c.report;
        let by = r.failures_by_category();
        let failures = if by.is_empty() {
            "-".to_owned()
        } else {
            by.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p99 = r.metrics.get("session").map_or("-".to_owned(), |m| {
            format!("{:.1} ms", m.p99_us as f64 / 1000.0)
        });
        let between = match c.between {
            None => "-".to_owned(),
            Some((code, took)) => format!(
                "between: exit {} in {:.1} s",
                code.map_or("?".to_owned(), |c| c.to_string()),
                took.as_secs_f64()
            ),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {failures} | {p99} | {between} |",
            c.number,
            r.verdict.as_str(),
            r.totals.sessions,
            r.totals.passed
        );
    }
    out
}

/// Stores the run and, when the plan ran before, rewrites report.md with the progress since
/// then. A database problem is a warning: the report files are already written.
#[allow(clippy::print_stderr)]
fn store(
    args: &crate::history::HistoryArgs,
    report: &gauntlet_core::report::Report,
    plan_toml: &str,
    dir: &std::path::Path,
    compare_with_previous: bool,
) {
    let result = (|| -> anyhow::Result<()> {
        let history = args.open()?;
        let previous = history.previous(&report.plan.name, &report.run_id)?;
        history.store(report, plan_toml)?;
        if compare_with_previous && previous.is_some() {
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

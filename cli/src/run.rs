//! `gauntlet run PLAN` and `gauntlet validate PLAN`: load and check a plan, run it on this
//! machine with the worker engine, print progress and the summary, and exit 0 only when
//! sessions ran and every one of them passed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gauntlet_core::metrics::Snapshot;
use gauntlet_core::plan::{Overrides, Plan};
use gauntlet_worker::{Program, RunConfig};
use tokio::sync::mpsc;

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
    /// Run in this process with the worker engine (the only mode until the fleet lands).
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    target: TargetArgs,
    /// Seed of VU random draws (think times, scenario picks); random when unset.
    #[arg(long, env = "GAUNTLET_SEED")]
    seed: Option<u64>,
    /// How often progress is printed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    progress: Duration,
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

/// Runs a plan locally.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let _ = args.local;
    let plan = Plan::load(&args.plan, &args.target.overrides())?;
    let name = plan.name.clone();
    let program = Program::compile(plan)
        .with_context(|| format!("{}: cannot run this plan here", args.plan.display()))?;
    let program = Arc::new(program);
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let config = RunConfig {
        seed,
        ..RunConfig::default()
    };
    eprintln!(
        "running plan `{name}` against {} ({})",
        program.base_url, program.ws_url
    );
    check_open_files(program.plan.max_vus());
    let stop = crate::signals::shutdown_token();
    // A handful of deltas in flight at most; the engine waits when the printer lags.
    let (tx, mut rx) = mpsc::channel::<Snapshot>(16);
    let engine = tokio::spawn(gauntlet_worker::run(Arc::clone(&program), config, stop, tx));
    let mut total = Snapshot::default();
    let started = tokio::time::Instant::now();
    let mut next_progress = started + args.progress;
    while let Some(delta) = rx.recv().await {
        total.merge(&delta);
        let now = tokio::time::Instant::now();
        if now >= next_progress {
            next_progress = now + args.progress;
            let c = &total.counters;
            let failures: Vec<String> = total
                .failures_by_category()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            eprintln!(
                "[{:>6.1}s] sessions {} passed {} failed {} {}",
                started.elapsed().as_secs_f64(),
                c.sessions_started,
                c.sessions_passed,
                c.sessions_failed,
                failures.join(" ")
            );
        }
    }
    let elapsed = engine.await.context("the engine stopped unexpectedly")?;
    println!("\nplan `{name}`");
    print!("{}", total.render_summary(elapsed.as_secs_f64()));
    let c = &total.counters;
    if c.sessions_passed + c.sessions_failed == 0 {
        println!("\nverdict: error: no session ran to completion");
        return Ok(crate::exit::RUN_ERROR);
    }
    let unreachable = ["connect_refused", "dns", "tls"];
    if c.sessions_passed == 0
        && total
            .failures
            .keys()
            .all(|k| unreachable.contains(&k.category.as_str()))
    {
        println!(
            "\nverdict: error: the target was never reached (every session failed to connect)"
        );
        return Ok(crate::exit::RUN_ERROR);
    }
    if c.sessions_failed > 0 {
        println!(
            "\nverdict: fail: {} of {} sessions failed",
            c.sessions_failed,
            c.sessions_passed + c.sessions_failed
        );
        return Ok(crate::exit::FAILED);
    }
    println!("\nverdict: pass");
    Ok(0)
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

//! `gauntlet capacity PLAN`: finds the highest load the target holds. Each step runs the plan
//! on the fleet at one load (arrival rate for an open-model plan, VUs for a closed one) for
//! `--step-duration`, judged by the plan's thresholds on that run and by whether its queue
//! drained ([`gauntlet_core::capacity::judge`]); the search
//! ([`gauntlet_core::capacity::Search`]) climbs, bisects and re-tests the edge. Every step's
//! run is stored and written like any run (steps/ in the output folder); the answer goes to
//! capacity.json, report.md, report.html and junit.xml.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use gauntlet_client::{Fleet, LocalFleet, Submission};
use gauntlet_core::capacity::{self, Capacity, Knobs, Search, search::Next};
use gauntlet_core::plan::{Load, LoadOverride, Model, Plan};
use gauntlet_core::report::{Report, files};
use gauntlet_core::words::Cause;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::progress::Progress;
use crate::usage::UsageError;

/// `gauntlet capacity` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: crate::run::FleetArgs,
    /// Lowest load tried: sessions/s for an open-model plan, VUs for a closed one (default: a
    /// tenth of the plan's peak load).
    #[arg(long)]
    from: Option<f64>,
    /// Highest load tried (default: ten times the plan's peak load).
    #[arg(long)]
    to: Option<f64>,
    /// How long each step's load runs (an open-model step runs longer when it needs to, to
    /// reach --min-samples).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    step_duration: Duration,
    /// An unjudged run at the step's load before each step, to warm the target up (0s: none).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Finished sessions a step needs to be judged; a step with fewer is inconclusive and its
    /// load runs again, twice then four times as long.
    #[arg(long, default_value_t = 100)]
    min_samples: u64,
    /// The climb's multiplier from one step to the next until one breaks.
    #[arg(long, default_value_t = 2.0)]
    factor: f64,
    /// Stop refining when the loads that held and broke are this close (0.05: 5 %).
    #[arg(long, default_value_t = 0.05)]
    resolution: f64,
    /// Re-tests of the highest load that held (a noise guard: a re-test that breaks moves the
    /// limit down).
    #[arg(long, default_value_t = 1)]
    retest: u32,
    /// Most steps, re-tests included.
    #[arg(long, default_value_t = 12)]
    max_steps: u32,
    /// Most time for the whole search; it stops before a step that would not fit.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    max_time: Duration,
}

/// The plan's peak load: its highest arrival rate (open) or VU count (closed).
fn peak(load: &Load) -> f64 {
    let (start, stages) = load.ramp();
    stages.iter().map(|s| s.target).fold(start, f64::max)
}

/// The load override of one step: a flat `load` for `duration`; an open-model step gets the
/// plan's VU pool scaled with the rate, so the pool is no tighter than the plan's.
fn step_load(plan: &Plan, load: f64, duration: Duration) -> LoadOverride {
    match &plan.load {
        Load::Open(open) => {
            let base = peak(&plan.load).max(f64::MIN_POSITIVE);
            let scaled = (open.max_vus as f64 * load / base).ceil() as u64;
            LoadOverride {
                rate: Some(load),
                max_vus: Some(scaled.max(open.max_vus).max(1)),
                duration: Some(duration),
                ..LoadOverride::default()
            }
        }
        Load::Closed(_) => LoadOverride {
            vus: Some(load as u64),
            duration: Some(duration),
            ..LoadOverride::default()
        },
    }
}

/// How long a step at `load` runs.
fn step_duration(knobs: &Knobs, model: Model, load: f64) -> Duration {
    match model {
        // Enough arrivals for --min-samples, with a margin, up to 5 steps' worth.
        Model::Open => {
            let needed = Duration::from_secs_f64((knobs.min_samples as f64 * 1.25 / load).min(1e6));
            needed.clamp(knobs.step_duration, knobs.step_duration * 5)
        }
        Model::Closed => knobs.step_duration,
    }
}

/// Runs the search.
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let (fleet, submission, plan) =
        crate::run::prepare(&args.run, &crate::run::LoadArgs::default())?;
    let model = plan.load.model();
    let base = peak(&plan.load);
    let integral = model == Model::Closed;
    let knobs = Knobs {
        from: args.from.unwrap_or(if integral {
            (base / 10.0).round().max(1.0)
        } else {
            base / 10.0
        }),
        to: args.to.unwrap_or(base * 10.0),
        factor: args.factor,
        resolution: args.resolution,
        step_duration: args.step_duration,
        warmup: args.warmup,
        min_samples: args.min_samples,
        retest: args.retest,
        max_steps: args.max_steps,
        max_time: args.max_time,
        integral,
    };
    knobs.check().map_err(UsageError)?;
    if base <= 0.0 && (args.from.is_none() || args.to.is_none()) {
        return Err(
            UsageError("the plan's load is 0: give the range with --from and --to".into()).into(),
        );
    }
    let unit = if integral { "VUs" } else { "sessions/s" };
    let dir = args.run.out.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        PathBuf::from("gauntlet-runs").join(format!("capacity-{secs}"))
    });
    errln!(
        "capacity of plan `{}`: {} to {} {unit}, steps of {}",
        plan.name,
        capacity::num(knobs.from),
        capacity::num(knobs.to),
        humantime::format_duration(knobs.step_duration)
    );
    let local = match &fleet {
        Fleet::InProcess(n) => Some(LocalFleet::start(*n).await?),
        Fleet::Remote(_) => None,
    };
    let started = Instant::now();
    let mut search = Search::new(knobs.clone());
    let mut error = None;
    let stopped = loop {
        let (load, retest, stretch) = match search.next() {
            Next::Run {
                load,
                retest,
                stretch,
            } => (load, retest, stretch),
            Next::Done(why) => break why.to_owned(),
        };
        if shutdown.is_cancelled() {
            error = Some("cancelled (Ctrl-C)".to_owned());
            break "it was cancelled".to_owned();
        }
        // A load whose last step had too few sessions to judge runs again, longer.
        let duration = step_duration(&knobs, model, load) * (1 << stretch);
        let cost = duration + knobs.warmup;
        if started.elapsed() + cost > knobs.max_time {
            break "the time budget (--max-time) is spent".to_owned();
        }
        let index = search.steps().len() as u32 + 1;
        if !knobs.warmup.is_zero() {
            errln!(
                "step {index}: warming up at {} {unit} for {}",
                capacity::num(load),
                humantime::format_duration(knobs.warmup)
            );
            let warm = step_submission(&submission, &plan, load, knobs.warmup);
            step_run(&fleet, local.as_ref(), warm, &shutdown, true).await?;
        }
        errln!(
            "step {index}: {} {unit} for {}{}{}",
            capacity::num(load),
            humantime::format_duration(duration),
            if retest { " (re-test)" } else { "" },
            if stretch > 0 {
                " (longer: too few sessions to judge before)"
            } else {
                ""
            }
        );
        let sub = step_submission(&submission, &plan, load, duration);
        let report = step_run(&fleet, local.as_ref(), sub, &shutdown, false).await?;
        let step_dir = dir.join(capacity::step_dir(index, load));
        files::write(&step_dir, &report, None)
            .with_context(|| format!("writing {}", step_dir.display()))?;
        if !args.run.no_history {
            crate::history::store(&args.run.history, &report, &submission.plan_toml, &step_dir);
        }
        if shutdown.is_cancelled() {
            error = Some("cancelled (Ctrl-C)".to_owned());
            break "it was cancelled".to_owned();
        }
        if let Some(e) = capacity::not_about_capacity(&report) {
            error = Some(e);
            break "a step's run ended in an error that says nothing about capacity".to_owned();
        }
        if report.verdict_cause == Cause::TargetUnreachable && search.held().is_none() {
            error = Some(format!(
                "the target was never reached at {} {unit}: {}",
                capacity::num(load),
                report.verdict_reason
            ));
            break "the target was never reached".to_owned();
        }
        let step = capacity::judge(
            &report,
            index,
            load,
            retest,
            duration.as_millis() as u64,
            knobs.min_samples,
        );
        errln!(
            "step {index}: {}{}",
            step.outcome.as_str(),
            if step.why.is_empty() {
                String::new()
            } else {
                format!(": {}", step.why.join("; "))
            }
        );
        search.record(step);
    };
    drop(local);
    let result = Capacity::conclude(&plan.name, model, &search, &stopped, error);
    let path = capacity::render::write(&dir, &result)
        .with_context(|| format!("writing the capacity report into {}", dir.display()))?;
    outln!("{}", result.answer);
    outln!("capacity: {}", dir.join("capacity.json").display());
    outln!("report: {}", path.display());
    Ok(result.exit_code)
}

fn step_submission(base: &Submission, plan: &Plan, load: f64, duration: Duration) -> Submission {
    Submission {
        load: step_load(plan, load, duration),
        ..base.clone()
    }
}

async fn step_run(
    fleet: &Fleet,
    local: Option<&LocalFleet>,
    submission: Submission,
    shutdown: &CancellationToken,
    quiet: bool,
) -> anyhow::Result<Report> {
    // Every step runs for a duration: its bar is of time.
    let mut progress = Progress::new(quiet, None);
    let report = match (fleet, local) {
        (_, Some(local)) => local.run(submission, shutdown, |e| progress.show(e)).await,
        (fleet, None) => {
            gauntlet_client::run_plan(fleet.clone(), submission, shutdown, |e| progress.show(e))
                .await
        }
    };
    progress.done();
    Ok(report?)
}

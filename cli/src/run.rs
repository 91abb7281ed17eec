//! `gauntlet run PLAN` and `gauntlet validate PLAN`: load and check a plan, run it on a fleet
//! (a coordinator and workers started in this process unless `--coordinator` names one)
//! through the run client, write the report files, print the summary, and exit with the
//! verdict's code.

use std::path::PathBuf;

use gauntlet_client::{Fleet, Submission, run_plan};
use gauntlet_core::plan::{LoadOverride, Overrides, Plan};
use gauntlet_core::report::{Report, files};
use tokio_util::sync::CancellationToken;

use crate::progress::Progress;
use crate::usage::UsageError;

/// Where the plan's target comes from when the command line overrides it.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// HTTP base URL replacing the plan's `target.base_url`, or a comma-separated list of them
    /// (instances addressed directly: VU or arrival `i` uses entry `i % n`); the WebSocket URL
    /// follows it (`http` -> `ws`, `https` -> `wss`, plus `target.ws_path`).
    #[arg(long, env = "GAUNTLET_TARGET")]
    target: Option<String>,
    /// WebSocket URL replacing the plan's, on its own (comma-separated for several).
    #[arg(long, env = "GAUNTLET_WS_TARGET")]
    ws_target: Option<String>,
    /// `NAME=VALUE`: replaces variable NAME in every scenario's `vars` that declares it (the
    /// value is a template, like the plan's; a name no scenario declares is an error);
    /// repeatable. Shown in the report as an override (a secret-looking name's value masked).
    #[arg(short = 'e', long = "var", value_name = "NAME=VALUE", value_parser = gauntlet_core::plan::parse_var)]
    vars: Vec<(String, String)>,
}

impl TargetArgs {
    pub(crate) fn overrides(&self, load: &LoadArgs) -> Overrides {
        Overrides {
            target: self.target.clone(),
            ws_target: self.ws_target.clone(),
            load: load.overrides(),
            vars: self.vars(),
        }
    }

    /// The `--var`s, the last of a name winning.
    pub(crate) fn vars(&self) -> std::collections::BTreeMap<String, String> {
        self.vars.iter().cloned().collect()
    }
}

/// Load settings replacing the plan's `[load]` for this run, as k6's flags do; the report
/// lists them as overrides.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LoadArgs {
    /// VUs (closed model): with `--duration`, a flat load replacing the plan's.
    #[arg(long)]
    vus: Option<u64>,
    /// Sessions per VU (closed model); alone, the run is bound by iterations only.
    #[arg(long)]
    iterations: Option<u64>,
    /// How long new sessions start (`30s`, `5m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Arrival rate, sessions per second (switches to the open model; with `--max-vus`).
    #[arg(long)]
    rate: Option<f64>,
    /// VUs available to run arrivals (open model).
    #[arg(long)]
    max_vus: Option<u64>,
    /// A ramp `DURATION:TARGET` (VUs, or sessions/s with `--rate`); repeat for more stages.
    #[arg(long = "stage", value_parser = gauntlet_core::plan::parse_stage)]
    stages: Vec<gauntlet_core::plan::Stage>,
}

impl LoadArgs {
    pub(crate) fn overrides(&self) -> LoadOverride {
        LoadOverride {
            vus: self.vus,
            iterations: self.iterations,
            duration: self.duration,
            rate: self.rate,
            max_vus: self.max_vus,
            stages: self.stages.clone(),
        }
    }
}

/// `gauntlet run` flags: where and what to run, and load overrides.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
    #[command(flatten)]
    pub(crate) load: LoadArgs,
}

/// The flags `run`, `loop` and `capacity` share: the plan, the fleet, the target, the
/// report's folder and the history.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// The plan (TOML; see docs/plans.md).
    plan: PathBuf,
    /// Coordinator URL; without it a coordinator and `--workers` workers start in this
    /// process, on loopback, and the run goes through the same gRPC calls.
    #[arg(long, env = "GAUNTLET_COORDINATOR")]
    coordinator: Option<String>,
    /// In-process workers (without `--coordinator`).
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Wait for this many workers before starting (default: the plan's `fleet.min_workers`).
    #[arg(long, env = "GAUNTLET_MIN_WORKERS")]
    min_workers: Option<u32>,
    #[command(flatten)]
    target: TargetArgs,
    /// Directory for report.json, report.md, report.html and junit.xml (default:
    /// gauntlet-runs/<run id>; for `capacity`, gauntlet-runs/capacity-<unix time>).
    #[arg(long, env = "GAUNTLET_OUT")]
    pub(crate) out: Option<PathBuf>,
    /// The coordinator's submit token (its --submit-token, or its --token when it has none).
    #[arg(long, env = "GAUNTLET_SUBMIT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Extra CA certificate (PEM) to trust for an https:// coordinator.
    #[arg(long, env = "GAUNTLET_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) history: crate::history::HistoryArgs,
    /// Do not store the run in the history.
    #[arg(long)]
    pub(crate) no_history: bool,
}

/// `gauntlet validate` flags.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The plan.
    plan: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    load: LoadArgs,
}

/// Checks a plan and prints what it would run.
pub fn validate(args: ValidateArgs) -> anyhow::Result<u8> {
    let plan = Plan::load(&args.plan, &args.target.overrides(&args.load))?;
    outln!("{}: ok: plan `{}`", args.plan.display(), plan.name);
    out!("{}", what_would_run(&plan));
    Ok(0)
}

/// What a plan would run, in a few lines: target, load, subjects, scenarios, checks,
/// thresholds and overrides.
pub(crate) fn what_would_run(plan: &Plan) -> String {
    use gauntlet_core::plan::{Load, RateSchedule, VuSchedule};
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  target:     {} (WebSocket {})",
        shown_urls(plan.base_urls()),
        shown_urls(&plan.ws_urls())
    );
    let ramp = |start: f64, stages: &[gauntlet_core::plan::Stage], unit: &str| {
        let total: std::time::Duration = stages.iter().map(|s| s.duration).sum();
        let steps: Vec<String> = stages
            .iter()
            .map(|s| {
                format!(
                    "{} {unit} over {}",
                    s.target,
                    humantime::format_duration(s.duration)
                )
            })
            .collect();
        format!(
            "from {start} {unit}: {} ({} in all)",
            steps.join(", then "),
            humantime::format_duration(total)
        )
    };
    let load = match &plan.load {
        Load::Closed(c) => {
            let vus = match &c.vus {
                VuSchedule::Fixed { vus, duration } => match (duration, c.iterations) {
                    (Some(d), Some(i)) => format!(
                        "{} for {}, at most {} each",
                        count(*vus, "VU", "VUs"),
                        humantime::format_duration(*d),
                        count(i, "session", "sessions")
                    ),
                    (Some(d), None) => format!(
                        "{} for {}",
                        count(*vus, "VU", "VUs"),
                        humantime::format_duration(*d)
                    ),
                    (None, Some(i)) => format!(
                        "{} x {} = {}",
                        count(*vus, "VU", "VUs"),
                        count(i, "session", "sessions"),
                        count(vus.saturating_mul(i), "session", "sessions")
                    ),
                    (None, None) => count(*vus, "VU", "VUs"),
                },
                VuSchedule::Stages { start, stages } => ramp(*start as f64, stages, "VUs"),
            };
            format!("closed model, {vus}")
        }
        Load::Open(o) => {
            let rate = match &o.rate {
                RateSchedule::Fixed { rate, duration } => format!(
                    "{rate} sessions/s for {} (~{})",
                    humantime::format_duration(*duration),
                    count(
                        (rate * duration.as_secs_f64()).round() as u64,
                        "session",
                        "sessions"
                    )
                ),
                RateSchedule::Stages { start, stages } => ramp(*start, stages, "sessions/s"),
            };
            format!(
                "open model, {rate}, at most {} at once",
                count(o.max_vus, "VU", "VUs")
            )
        }
    };
    let _ = writeln!(out, "  load:       {load}");
    let subjects = match &plan.auth {
        None => "no [auth]: no token is sent".to_owned(),
        Some(a) => match a.subject_pool {
            Some(n) => format!(
                "`{}`, a pool of {} shared by the VUs",
                a.subject,
                count(n, "subject", "subjects")
            ),
            None if plan.load.model() == gauntlet_core::plan::Model::Open => {
                format!("`{}`, one subject per arrival", a.subject)
            }
            None => format!("`{}`, one subject per VU", a.subject),
        },
    };
    let _ = writeln!(out, "  subjects:   {subjects}");
    let weights: u32 = plan.scenarios.iter().map(|s| s.weight).sum();
    for s in &plan.scenarios {
        let kinds: Vec<&str> = s.steps.iter().map(|st| st.kind()).collect();
        let _ = writeln!(
            out,
            "  scenario:   `{}`, weight {} ({:.0} % of sessions), {}: {}",
            s.name,
            s.weight,
            100.0 * f64::from(s.weight) / f64::from(weights.max(1)),
            count(s.steps.len() as u64, "step", "steps"),
            kinds.join(", ")
        );
    }
    let checks = gauntlet_core::checks::declared(plan);
    let required = checks
        .iter()
        .filter(|c| c.kind.must_evaluate() && !c.optional)
        .count();
    let _ = writeln!(
        out,
        "  checks:     {} ({required} must evaluate: expectations, sequences, isolation)",
        checks.len()
    );
    if plan.thresholds.is_empty() {
        let _ = writeln!(out, "  thresholds: none: any failed session fails the run");
    }
    for t in &plan.thresholds {
        let _ = writeln!(out, "  threshold:  {}", t.expr());
    }
    if !plan.overrides.is_empty() {
        let _ = writeln!(out, "  overrides:  {}", plan.overrides.join(" "));
    }
    out
}

/// `n` and the word for one or for many: `1 VU`, `2 VUs`.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A target URL as `validate` and `run` print it: user-info and secret query parameters
/// masked.
/// A target list as shown: credentials masked, the first three entries and how many more.
fn shown_urls(urls: &[String]) -> String {
    match urls {
        [] => "-".into(),
        [one] => gauntlet_core::redact::url(one),
        _ => {
            let mut shown: Vec<String> = urls
                .iter()
                .take(3)
                .map(|u| gauntlet_core::redact::url(u))
                .collect();
            if urls.len() > 3 {
                shown.push(format!("and {} more", urls.len() - 3));
            }
            format!("{} instances: {}", urls.len(), shown.join(", "))
        }
    }
}

/// Checks the plan and the flags, and prepares what to submit where.
pub(crate) fn prepare(
    args: &FleetArgs,
    load: &LoadArgs,
) -> anyhow::Result<(Fleet, Submission, Plan)> {
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
        &args.target.overrides(load),
    )?;
    if args.workers == 0 && args.coordinator.is_none() {
        return Err(UsageError("--workers must be at least 1".into()).into());
    }
    let fleet = match &args.coordinator {
        Some(url) => Fleet::Remote(url.clone()),
        None => {
            crate::limits::check_open_files(plan.max_vus());
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
        tls_ca: crate::usage::read_pem(args.tls_ca.as_deref())?,
        load: load.overrides(),
        vars: args.target.vars(),
    };
    Ok((fleet, submission, plan))
}

/// Runs a plan on a fleet (in-process by default) and writes its report.
pub async fn run(args: Args, shutdown: CancellationToken) -> anyhow::Result<u8> {
    let (fleet, submission, plan) = prepare(&args.fleet, &args.load)?;
    let args = args.fleet;
    errln!(
        "running plan `{}` against {} ({})",
        plan.name,
        shown_urls(plan.base_urls()),
        shown_urls(&plan.ws_urls())
    );
    let plan_toml = submission.plan_toml.clone();
    let planned = plan.load.planned_sessions();
    let report = follow(fleet, submission, &shutdown, false, planned).await?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("gauntlet-runs").join(&report.run_id));
    // The files first, once, comparing with the plan's previous run if the history has one:
    // whatever the history database does next, the run is on disk.
    let previous = if args.no_history {
        None
    } else {
        crate::history::previous(&args.history, &report)
    };
    let path = match files::write(&dir, &report, previous.as_ref()) {
        Ok(path) => path,
        Err(e) => {
            // The run is measured: say what it found before saying the files are missing.
            outln!("{}", report.render_text());
            errln!(
                "{}",
                unwritable_out(&report.run_id, &dir, &e, in_container())
            );
            return Ok(3);
        }
    };
    if !args.no_history {
        crate::history::store(&args.history, &report, &plan_toml, &dir);
    }
    outln!("{}", report.render_text());
    outln!("report: {}", path.display());
    Ok(report.verdict.exit_code())
}

/// What to say when the report files of run `id` cannot be written into `dir`: the folder
/// must be writable; the docker-compose advice only `in_container` (where `run` is the compose
/// service writing as its image's user).
fn unwritable_out(
    id: &str,
    dir: &std::path::Path,
    e: &impl std::fmt::Display,
    in_container: bool,
) -> String {
    let advice = if in_container {
        " (with docker-compose: `export GAUNTLET_USER=$(id -u):$(id -g)` and `mkdir -p \
         gauntlet-runs` before `run`)"
    } else {
        " (or name another with --out)"
    };
    format!(
        "gauntlet: error: the run `{id}` finished but its report files could not be written into \
         {}: {e:#}. The folder must be writable by this process{advice}; a coordinator with a \
         history keeps the run (`gauntlet show {id}`).",
        dir.display()
    )
}

/// Whether this process runs in a container: Docker's `/.dockerenv` or Podman's
/// `/run/.containerenv`.
fn in_container() -> bool {
    ["/.dockerenv", "/run/.containerenv"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

/// Runs `submission` on `fleet` to its report, its progress on stderr (`quiet`: none;
/// `planned_sessions`: the count an iteration-bound run's bar fills to, from its resolved
/// plan); cancelling `shutdown` (Ctrl-C) cancels the run and still returns its report.
pub(crate) async fn follow(
    fleet: Fleet,
    submission: Submission,
    shutdown: &CancellationToken,
    quiet: bool,
    planned_sessions: Option<u64>,
) -> anyhow::Result<Report> {
    let mut progress = Progress::new(quiet, planned_sessions);
    let report = run_plan(fleet, submission, shutdown, |e| progress.show(e)).await;
    progress.done();
    Ok(report?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Only a run in a container is told about docker-compose.
    #[test]
    fn an_unwritable_folder_is_explained_for_where_the_run_is() {
        let e = anyhow::anyhow!("Permission denied (os error 13)");
        let dir = Path::new("gauntlet-runs/r1");
        let local = super::unwritable_out("r1", dir, &e, false);
        assert!(
            local.contains("could not be written into gauntlet-runs/r1: Permission denied"),
            "{local}"
        );
        assert!(local.contains("must be writable by this process (or name another with --out)"));
        assert!(!local.contains("docker-compose"), "{local}");
        let contained = super::unwritable_out("r1", dir, &e, true);
        assert!(
            contained.contains("with docker-compose: `export GAUNTLET_USER"),
            "{contained}"
        );
        assert!(contained.contains("`gauntlet show r1`"), "{contained}");
    }
}

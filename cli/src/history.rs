//! `gauntlet history`, `show` and `report`: the run history kept in SQLite, read back and
//! re-rendered (`compare` reads it too, in `compare.rs`).

use std::path::PathBuf;

use anyhow::Context;
use gauntlet_coordinator::history::{History, HistoryError, default_path};

/// Where the history database is.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// The history database (default: $XDG_DATA_HOME/gauntlet/history.db or
    /// ~/.local/share/gauntlet/history.db).
    #[arg(long = "history", env = "GAUNTLET_HISTORY")]
    pub path: Option<PathBuf>,
}

impl HistoryArgs {
    /// The database path.
    pub fn path(&self) -> PathBuf {
        self.path.clone().unwrap_or_else(default_path)
    }

    /// Opens the database, creating it if needed (to store a run).
    pub fn open(&self) -> anyhow::Result<History> {
        Ok(History::open(&self.path())?)
    }

    /// Opens a database that must exist (to read runs back): a path that does not exist is a
    /// usage error naming it, never a new empty database.
    pub fn open_existing(&self) -> anyhow::Result<History> {
        let path = self.path();
        if !path.exists() {
            return Err(crate::usage::UsageError(format!(
                "no history database at {}: runs are stored there by `gauntlet run` (--history PATH or GAUNTLET_HISTORY chooses another)",
                path.display()
            ))
            .into());
        }
        Ok(History::open(&path)?)
    }

    /// What reading run `id` gave: a run the history does not hold is a usage error (exit
    /// 2, as in `compare`) naming it and the database.
    pub fn found<T>(&self, id: &str, read: Result<T, HistoryError>) -> anyhow::Result<T> {
        match read {
            Err(HistoryError::NotFound(_)) => Err(crate::usage::UsageError(format!(
                "no run `{id}` in the history {} (`gauntlet history` lists its runs)",
                self.path().display()
            ))
            .into()),
            other => Ok(other?),
        }
    }
}

/// `gauntlet history` flags.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only runs of this plan.
    #[arg(long)]
    plan: Option<String>,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    history: HistoryArgs,
}

/// `gauntlet show` flags.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// Run id.
    run: String,
    /// Print report.json instead of the summary.
    #[arg(long, conflicts_with = "plan")]
    json: bool,
    /// Print the plan the run was made with, as stored (credentials masked).
    #[arg(long)]
    plan: bool,
    #[command(flatten)]
    history: HistoryArgs,
}

/// `gauntlet report` flags.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run id.
    run: String,
    /// Directory for report.json, report.md, report.html and junit.xml (default:
    /// gauntlet-runs/<run id>, as for `run`).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    history: HistoryArgs,
}

/// Lists runs.
pub fn list(args: ListArgs) -> anyhow::Result<u8> {
    let rows = args
        .history
        .open_existing()?
        .list(args.plan.as_deref(), args.limit)?;
    if rows.is_empty() {
        let path = args.history.path();
        match &args.plan {
            Some(plan) => outln!("no runs of plan `{plan}` in {}", path.display()),
            None => outln!("no runs in {}", path.display()),
        }
        return Ok(0);
    }
    outln!(
        "{:<24} {:<24} {:<26} {:<7} {:>9} {:>7}",
        "run",
        "plan",
        "started",
        "verdict",
        "sessions",
        "failed"
    );
    for r in rows {
        outln!(
            "{:<24} {:<24} {:<26} {:<7} {:>9} {:>7}",
            r.run_id,
            r.plan,
            r.started_at,
            r.verdict,
            r.sessions,
            r.failed
        );
    }
    Ok(0)
}

/// Shows one run.
pub fn show(args: ShowArgs) -> anyhow::Result<u8> {
    let history = args.history.open_existing()?;
    if args.plan {
        out!(
            "{}",
            args.history.found(&args.run, history.plan(&args.run))?
        );
        return Ok(0);
    }
    let report = args.history.found(&args.run, history.report(&args.run))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", report.render_text());
    }
    Ok(0)
}

/// Re-renders a stored run's report files.
pub fn report(args: ReportArgs) -> anyhow::Result<u8> {
    let history = args.history.open_existing()?;
    let report = args.history.found(&args.run, history.report(&args.run))?;
    let previous = history.previous(&report.plan.name, &report.run_id)?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("gauntlet-runs").join(&report.run_id));
    let path = gauntlet_core::report::files::write(&out, &report, previous.as_ref())
        .with_context(|| format!("cannot write the report of {}", args.run))?;
    outln!("report: {}", path.display());
    Ok(0)
}

/// The previous run of `report`'s plan in the history, to compare with; a database problem
/// is a warning (the run's files are written without the comparison).
pub fn previous(
    args: &HistoryArgs,
    report: &gauntlet_core::report::Report,
) -> Option<gauntlet_core::report::Report> {
    if !args.path().exists() {
        // No database yet: no previous run, and nothing to create before the run is stored.
        return None;
    }
    let found = args
        .open()
        .and_then(|h| Ok(h.previous(&report.plan.name, &report.run_id)?));
    match found {
        Ok(previous) => previous,
        Err(e) => {
            errln!("warning: cannot read the history for a comparison ({e:#})");
            None
        }
    }
}

/// Stores the run. A database problem is a warning: the report files are already written.
pub fn store(
    args: &HistoryArgs,
    report: &gauntlet_core::report::Report,
    plan_toml: &str,
    dir: &std::path::Path,
) {
    let result = args.open().and_then(|h| Ok(h.store(report, plan_toml)?));
    if let Err(e) = result {
        errln!(
            "warning: the run was not stored in the history ({e:#}); its report files are in {}",
            dir.display()
        );
    }
}

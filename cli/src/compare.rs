//! `gauntlet compare BEFORE AFTER`: two runs, each named by its id in the history or by its
//! report.json (a file, or the run's folder), compared with `gauntlet_core::compare`: per
//! metric and failure category the test and whether the change is real. `--json` prints the
//! whole comparison; `--fail-on-regression` makes a significant worsening exit 1.

use std::path::{Path, PathBuf};

use anyhow::Context;
use gauntlet_coordinator::history::{History, HistoryError};
use gauntlet_core::compare::{Rule, compare_with};
use gauntlet_core::report::Report;

use crate::exit;
use crate::history::HistoryArgs;
use crate::usage::UsageError;

/// The largest report.json read: far beyond any run's (a run's report with every histogram is
/// a few hundred KB), bounded so that a wrong file is refused before it is read.
const MAX_REPORT_FILE: u64 = 256 << 20;

/// `gauntlet compare` flags.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct CompareArgs {
    /// The earlier run: a run id in the history, a report.json, or a run's folder holding one.
    before: String,
    /// The later run, named the same ways.
    after: String,
    /// Print the whole comparison as JSON (every metric and failure category with its test,
    /// `significant`, `direction`, `status` and verdict; `regressions` lists what got
    /// significantly worse).
    #[arg(long)]
    json: bool,
    /// Exit 1 when any metric got significantly slower or any failure rate (all sessions, or
    /// one category, a new one included) significantly rose.
    #[arg(long)]
    fail_on_regression: bool,
    /// The smallest relative change of a median that counts, percent.
    #[arg(long, default_value = "10", value_name = "PERCENT", value_parser = percent)]
    min_change: f64,
    /// The smallest absolute change of a median that counts (`5ms`, `500us`, `0s`).
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    min_shift: std::time::Duration,
    /// The smallest factor by which a tail (p99, else p95) must grow or shrink to count when
    /// the median did not change.
    #[arg(long, default_value = "3", value_name = "FACTOR", value_parser = factor)]
    min_tail_factor: f64,
    /// The smallest absolute change of that tail that counts.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    min_tail_shift: std::time::Duration,
    #[command(flatten)]
    history: HistoryArgs,
}

const AFTER_HELP: &str = "\
A latency changed only when the rank test (Mann-Whitney U on the two histograms) gives
p < 0.01, the effect is at least small (Vargha-Delaney A outside 0.44..0.56), the median moved
at least --min-change and --min-shift in that direction, and the medians' 99 % intervals do not
overlap; each side needs 20 samples. A metric whose median did not change is changed in the
tail when its p99 (p95 under 528 samples) moved by --min-tail-factor and --min-tail-shift with
its 99 % intervals apart (tails of identical runs move far more than medians: see
docs/report.md#changes-of-the-tail-alone). A failure rate changed when the two-proportion test (Fisher's
exact test for small counts) gives p < 0.01 with 20 finished sessions a side. A report written
before report.json carried histograms cannot be tested: its metrics say so.

Exit codes: 0 compared (and nothing significantly worse with --fail-on-regression); 1 something
got significantly worse (--fail-on-regression only); 2 a file or run id that names no report;
3 a report that cannot be compared (a histogram that does not decode), or the history cannot
be read.";

/// A tail factor: a finite number of at least 1.
fn factor(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a factor of at least 1 (3: a tail tripled or cut to a third)"
        )),
    }
}

fn percent(text: &str) -> Result<f64, String> {
    let x: f64 = text
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a percentage"))?;
    if !x.is_finite() || x < 0.0 {
        return Err(format!("`{text}`: a percentage of 0 or more"));
    }
    Ok(x / 100.0)
}

/// Where one side's report comes from.
enum Source {
    File(PathBuf),
    Run(String),
}

impl Source {
    /// An existing file is a report.json, an existing folder holds one; anything else that
    /// looks like a path is a missing file, the rest a run id.
    fn of(arg: &str) -> Result<Source, UsageError> {
        let path = Path::new(arg);
        if path.is_dir() {
            let file = path.join("report.json");
            if !file.is_file() {
                return Err(UsageError(format!(
                    "{arg} is a folder without a report.json"
                )));
            }
            return Ok(Source::File(file));
        }
        if path.is_file() {
            return Ok(Source::File(path.to_owned()));
        }
        if arg.contains(std::path::MAIN_SEPARATOR) || arg.contains('/') || arg.ends_with(".json") {
            return Err(UsageError(format!("no such file: {arg}")));
        }
        Ok(Source::Run(arg.to_owned()))
    }
}

/// Reads a report.json given on the command line.
fn read_file(path: &Path) -> Result<Report, UsageError> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| UsageError(format!("cannot read {shown}: {e}")))?
        .len();
    if len > MAX_REPORT_FILE {
        return Err(UsageError(format!(
            "{shown} is {len} bytes: larger than any report.json (at most {MAX_REPORT_FILE})"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read {shown}: {e}")))?;
    let report: Report = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{shown} is not a gauntlet report.json: {e}")))?;
    // A run names at most this many metrics (a snapshot carries no more): each histogram is
    // decoded within bounds, and so is their number.
    let most = gauntlet_proto::MAX_SNAPSHOT_ENTRIES;
    if report.metrics.len() > most {
        return Err(UsageError(format!(
            "{shown} is not a gauntlet report.json: {} metrics (a run has at most {most})",
            report.metrics.len()
        )));
    }
    Ok(report)
}

/// The history, opened only when a side names a run id; one that does not exist is a usage
/// error naming it, never created.
fn open_history(args: &HistoryArgs, id: &str) -> anyhow::Result<History> {
    args.open_existing()
        .with_context(|| format!("`{id}` is no file, so it names a run in the history"))
}

/// Run `id`'s report from the history.
fn stored(history: &History, args: &HistoryArgs, id: &str) -> anyhow::Result<Report> {
    match history.report(id) {
        Err(HistoryError::NotFound(_)) => Err(UsageError(format!(
            "`{id}` is neither a file nor a run in the history {}",
            args.path().display()
        ))
        .into()),
        other => Ok(other?),
    }
}

/// Compares two runs.
pub fn run(args: CompareArgs) -> anyhow::Result<u8> {
    let sources = [Source::of(&args.before)?, Source::of(&args.after)?];
    let mut history: Option<History> = None;
    let mut reports = Vec::with_capacity(2);
    for source in &sources {
        reports.push(match source {
            Source::File(path) => read_file(path)?,
            Source::Run(id) => {
                let h = match history.take() {
                    Some(h) => h,
                    None => open_history(&args.history, id)?,
                };
                let report = stored(&h, &args.history, id)?;
                history = Some(h);
                report
            }
        });
    }
    let (before, after) = (&reports[0], &reports[1]);
    let rule = Rule {
        min_relative: args.min_change,
        min_shift_us: u64::try_from(args.min_shift.as_micros()).unwrap_or(u64::MAX),
        min_tail_ratio: args.min_tail_factor,
        min_tail_shift_us: u64::try_from(args.min_tail_shift.as_micros()).unwrap_or(u64::MAX),
        ..Rule::default()
    };
    let comparison = compare_with(before, after, &rule)
        .with_context(|| format!("cannot compare {} with {}", args.before, args.after))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        let from = |s: &Source| match s {
            Source::File(path) => path.display().to_string(),
            Source::Run(_) => "the history".to_owned(),
        };
        outln!(
            "before: run `{}` ({})\nafter:  run `{}` ({})\n",
            comparison.before_run,
            from(&sources[0]),
            comparison.after_run,
            from(&sources[1])
        );
        out!("{}", comparison.to_markdown());
    }
    Ok(if args.fail_on_regression && comparison.regressed() {
        exit::FAILED
    } else {
        0
    })
}

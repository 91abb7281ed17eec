//! `gauntlet loop PLAN`: cycle after cycle (a run each, with progress vs the previous cycle)
//! until one passes with enough sessions, a cycle runs nothing, the cycles run out, or a
//! signal stops the loop; a command may run between cycles. Ends with a cycle table.

use std::path::PathBuf;
use std::time::Duration;

use gauntlet_core::report::files;
use tokio_util::sync::CancellationToken;

use crate::usage::UsageError;

/// `gauntlet loop` flags.
#[derive(Debug, clap::Args)]
pub struct LoopArgs {
    #[command(flatten)]
    pub(crate) run: crate::run::Args,
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
pub async fn run(args: LoopArgs, shutdown: CancellationToken) -> anyhow::Result<u8> {
    if args.until_passes == 0 {
        return Err(UsageError("--until-passes must be at least 1".into()).into());
    }
    let (fleet, submission, plan) = crate::run::prepare(&args.run.fleet, &args.run.load)?;
    let planned = plan.load.planned_sessions();
    let out = args
        .run
        .fleet
        .out
        .clone()
        // The plan's name in a file name: its safe form (no `/`, no space, no leading `.`).
        .unwrap_or_else(|| {
            PathBuf::from("gauntlet-runs")
                .join(format!("loop-{}", gauntlet_core::names::safe(&plan.name)))
        });
    let mut cycles: Vec<Cycle> = Vec::new();
    let mut between_result = None;
    let outcome = loop {
        let number = cycles.len() as u32 + 1;
        errln!("== cycle {number} of at most {}", args.max_cycles);
        let report =
            crate::run::follow(fleet.clone(), submission.clone(), &shutdown, false, planned)
                .await?;
        let dir = out.join(format!("cycle-{number}"));
        // With progress vs the previous cycle of this loop.
        files::write(&dir, &report, cycles.last().map(|prev| &prev.report))?;
        if !args.run.fleet.no_history {
            // The loop compares with its own previous cycle, not the history's latest run.
            crate::history::store(
                &args.run.fleet.history,
                &report,
                &submission.plan_toml,
                &dir,
            );
        }
        outln!("{}", report.render_text());
        outln!("report: {}", dir.join("report.json").display());
        let passed = report.verdict == gauntlet_core::report::Verdict::Pass
            && report.totals.passed >= args.until_passes;
        let ran_nothing =
            report.totals.passed + report.totals.failed == 0 || report.verdict_cause.ran_nothing();
        cycles.push(Cycle {
            number,
            report,
            between: between_result.take(),
        });
        if shutdown.is_cancelled() {
            break LoopEnd::Interrupted;
        }
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
            errln!("== between cycles: {cmd}");
            let started = tokio::time::Instant::now();
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .status()
                .await;
            let code = match status {
                Ok(s) => s.code(),
                Err(e) => {
                    errln!("warning: cannot run `{cmd}`: {e}");
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
        LoopEnd::Interrupted => {
            outln!(
                "STOPPED: interrupted (Ctrl-C) during cycle {}; no further cycle runs",
                cycles.len()
            );
            Ok(crate::exit::RUN_ERROR)
        }
    }
}

#[derive(Debug)]
enum LoopEnd {
    Reached,
    RanNothing,
    OutOfCycles,
    Interrupted,
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

//! The `gauntlet` binary: parses the command line, sets up logging and the one root
//! cancellation token (SIGINT and SIGTERM cancel it, and every command drains from it), and
//! hands each subcommand to its room. Errors print their whole chain; the exit code says what
//! happened.
//!
//! # Layout
//! - `run`: `run` and `validate`; `cycles`: `loop`; `capacity`: `capacity`; `history`: `history`, `show`, `report`
//!   and storing runs; `compare`: `compare` (run ids or report.json files); `completions`:
//!   `completions` and `man`;
//! - `coordinator`, `worker`, `testbed`, `demo`, `probe`, `init`, `schema`: the other commands;
//! - `progress`: a run's progress on stderr; `limits`: the open-files limit; `usage`: input
//!   that cannot work (exit 2); `signals`: the root token; `out`: stdout and stderr that a
//!   closed reader cannot break.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[macro_use]
mod out;

mod capacity;
mod compare;
mod completions;
mod coordinator;
mod cycles;
mod demo;
mod history;
mod init;
mod limits;
mod probe;
mod progress;
mod run;
mod schema;
mod signals;
mod testbed;
mod usage;
mod worker;

/// A distributed load-and-correctness fleet for WebSocket agent-pipeline services.
#[derive(Debug, Parser)]
#[command(name = "gauntlet", version, long_about = None)]
struct Cli {
    /// Log filter, RUST_LOG syntax (e.g. `info`, `gauntlet_testbed=debug`); default `info` for
    /// the services (coordinator, worker, testbed), `warn` for the other commands.
    #[arg(long, global = true, env = "GAUNTLET_LOG")]
    log: Option<String>,
    /// Log as JSON lines (for clusters); the variable takes 1/0, true/false, yes/no.
    #[arg(long, global = true, env = "GAUNTLET_LOG_JSON", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reference agent-pipeline service with fault injection (the target of demos and
    /// tests).
    Testbed(testbed::Args),
    /// Run a plan on a fleet: a coordinator's, or one started in this process.
    Run(run::Args),
    /// Run a plan cycle after cycle until a cycle passes with enough sessions.
    Loop(cycles::LoopArgs),
    /// Find the highest load the target holds: step the plan's load up, bisect between the
    /// last step that held and the first that broke, and say what broke it (exit 0: a limit
    /// found, or the whole range held; 1: even the lowest step broke; 3: no answer, an error,
    /// a load too short to judge or a budget spent first).
    Capacity(capacity::Args),
    /// Exit 0 if an http:// URL answers 2xx within 2 s (container health checks).
    Probe(probe::Args),
    /// List stored runs, newest first.
    History(history::ListArgs),
    /// Show a stored run's summary (or its report.json).
    Show(history::ShowArgs),
    /// Write a stored run's report.json, report.md, report.html and junit.xml again.
    Report(history::ReportArgs),
    /// Compare two runs (run ids in the history or report.json files): failure categories and
    /// rates, latency per metric, and whether each change is significant or noise.
    Compare(compare::CompareArgs),
    /// Run the coordinator: workers register with it, runs are submitted to it.
    Coordinator(coordinator::CoordinatorArgs),
    /// Run a worker: it registers with a coordinator and runs its share of each run.
    Worker(worker::WorkerArgs),
    /// Write a commented starter plan that runs against `gauntlet testbed` as written.
    Init(init::Args),
    /// Check a plan and report every problem as file:line:col: field: what is wrong.
    Validate(run::ValidateArgs),
    /// Print the JSON Schema of a plan file (for editors: `gauntlet schema plan >
    /// plan.schema.json`, then `#:schema ./plan.schema.json` as the plan's first line), of
    /// report.json, or of `compare --json`.
    Schema(schema::Args),
    /// Print a shell completion script: `gauntlet completions bash > /etc/bash_completion.d/gauntlet`
    /// (zsh: into a directory of `$fpath` as `_gauntlet`; fish: `~/.config/fish/completions/`).
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff): `gauntlet man > gauntlet.1 && man ./gauntlet.1`; a command's
    /// own page: `gauntlet man run > gauntlet-run.1`.
    Man(completions::ManArgs),
    /// Run an example plan on an in-process fleet against an embedded testbed with faults
    /// switched on, and show gauntlet's findings next to the testbed's ground truth.
    Demo(demo::Args),
}

/// Exit codes shared by every command.
pub mod exit {
    /// Thresholds failed.
    pub const FAILED: u8 = 1;
    /// Invalid input: a bad plan, config or flag.
    pub const USAGE: u8 = 2;
    /// The run itself failed (nothing ran, target unreachable, I/O).
    pub const RUN_ERROR: u8 = 3;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let service = matches!(
        cli.command,
        Command::Coordinator(_) | Command::Worker(_) | Command::Testbed(_)
    );
    let filter = cli
        .log
        .clone()
        .unwrap_or_else(|| if service { "info" } else { "warn" }.to_owned());
    init_tracing(&filter, cli.log_json);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Worker(args) = &cli.command
        && let Some(n) = args.threads
    {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            report(&anyhow::Error::new(e).context("cannot start the async runtime"));
            return ExitCode::from(exit::RUN_ERROR);
        }
    };
    let result = runtime.block_on(async {
        // The one root token: a signal cancels it, and with it whatever the command runs.
        let root = signals::shutdown_token();
        match cli.command {
            Command::Testbed(args) => testbed::run(args, root).await,
            Command::Demo(args) => demo::run(args, root).await,
            Command::Run(args) => run::run(args, root).await,
            Command::Loop(args) => cycles::run(args, root).await,
            Command::Capacity(args) => capacity::run(args, root).await,
            Command::Coordinator(args) => coordinator::run(args, root).await,
            Command::History(args) => history::list(args),
            Command::Probe(args) => probe::run(args).await,
            Command::Show(args) => history::show(args),
            Command::Report(args) => history::report(args),
            Command::Compare(args) => compare::run(args),
            Command::Worker(args) => worker::run(args, root).await,
            Command::Validate(args) => run::validate(args),
            Command::Init(args) => init::run(args),
            Command::Schema(args) => schema::run(args),
            Command::Completions(args) => completions::completions(args),
            Command::Man(args) => completions::man(args),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&e);
            let usage = e.chain().any(|c| {
                c.is::<gauntlet_core::config_file::ConfigError>()
                    || c.is::<gauntlet_core::plan::PlanError>()
                    || c.is::<gauntlet_worker::CompileError>()
            }) || e.downcast_ref::<usage::UsageError>().is_some();
            ExitCode::from(if usage { exit::USAGE } else { exit::RUN_ERROR })
        }
    }
}

/// Log output with credentials masked ([`gauntlet_core::redact::text`]), at every level and
/// whatever the filter: the worker and its dependencies log what they send at debug and trace
/// (the whole upgrade request with `Authorization: Bearer <jwt>`, tungstenite every frame,
/// hyper, h2 and tonic their connections), and no list of targets to cap would stay complete. The
/// formatter writes each event, whole, in one `write`, so each event is masked as a whole.
/// It goes out through [`out::stderr`]: above the live bar, and never failing, so a closed
/// stderr neither panics the task that logged nor stops the process on its way out.
struct Redacted;

impl std::io::Write for Redacted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = gauntlet_core::redact::text(&String::from_utf8_lossy(buf));
        out::stderr(line.as_bytes());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Prints an error and its causes, one per line, each once.
fn report(error: &anyhow::Error) {
    // A plan error may quote a URL with user-info; a coordinator's refusal, a header.
    let masked = |e: &dyn std::fmt::Display| gauntlet_core::redact::message(&e.to_string());
    let mut said = vec![masked(error)];
    errln!("error: {}", said[0]);
    for cause in error.chain().skip(1) {
        let cause = masked(cause);
        // A message that quotes its cause (`cannot read: No such file...`) is not followed by
        // it again.
        if said.iter().any(|s| s.contains(&cause)) {
            continue;
        }
        errln!("  caused by: {cause}");
        said.push(cause);
    }
}

fn init_tracing(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, and never when NO_COLOR is set.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| Redacted)
        // A write that fails is not told on stderr with `eprintln!` (which panics on a closed
        // stderr); `Redacted` never fails anyway.
        .log_internal_errors(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::CommandFactory as _;

    /// Every flag of the long-lived processes can come from the environment, so a deployment's
    /// manifest (compose, Kubernetes) sets them without a command line.
    #[test]
    fn every_flag_of_the_services_has_its_variable() {
        let cli = super::Cli::command();
        for name in ["coordinator", "worker", "testbed"] {
            let command = cli.find_subcommand(name).unwrap();
            let lacking: Vec<String> = command
                .get_arguments()
                .filter(|a| !a.is_positional() && a.get_id() != "help")
                .filter(|a| a.get_env().is_none())
                .map(|a| a.get_id().to_string())
                .collect();
            assert!(
                lacking.is_empty(),
                "gauntlet {name}: no env for {lacking:?}"
            );
        }
    }

    /// `run`'s connection flags come from the environment too (a compose or Kubernetes job
    /// submits with them), `--min-workers` among them.
    #[test]
    fn runs_connection_flags_have_their_variables() {
        let cli = super::Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        for id in [
            "coordinator",
            "token",
            "tls_ca",
            "target",
            "ws_target",
            "out",
            "path",
            "min_workers",
        ] {
            let arg = run.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert!(arg.get_env().is_some(), "gauntlet run --{id}: no env");
        }
    }

    /// Every boolean flag a variable can set reads it as people write it in a manifest:
    /// `1`/`0`, `true`/`false`, `yes`/`no` (clap's default for a flag takes only true/false).
    #[test]
    fn boolean_variables_read_1_and_0() {
        fn flags(command: &clap::Command, found: &mut Vec<clap::Arg>) {
            found.extend(
                command
                    .get_arguments()
                    .filter(|a| a.get_env().is_some())
                    .filter(|a| matches!(a.get_action(), clap::ArgAction::SetTrue))
                    .cloned(),
            );
            for sub in command.get_subcommands() {
                flags(sub, found);
            }
        }
        let mut found = Vec::new();
        flags(&super::Cli::command(), &mut found);
        let ids: std::collections::BTreeSet<String> =
            found.iter().map(|a| a.get_id().to_string()).collect();
        assert!(
            ids.contains("log_json") && ids.contains("insecure"),
            "{ids:?}"
        );
        for arg in found {
            let long = format!("--{}", arg.get_long().unwrap());
            // The flag's own value parser, given the value the variable would hold.
            let command = clap::Command::new("t").arg(
                arg.clone()
                    .global(false)
                    .action(clap::ArgAction::Set)
                    .num_args(1),
            );
            for (value, meant) in [
                ("1", true),
                ("0", false),
                ("true", true),
                ("false", false),
                ("yes", true),
                ("no", false),
            ] {
                let matches = command
                    .clone()
                    .try_get_matches_from(["t", &long, value])
                    .unwrap_or_else(|e| panic!("{long} {value}: {e}"));
                assert_eq!(
                    matches.get_one::<bool>(arg.get_id().as_str()),
                    Some(&meant),
                    "{long} {value}"
                );
            }
        }
    }
}

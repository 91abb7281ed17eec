//! The progress of a run as it goes, on stderr: one line rewritten in place on a terminal,
//! a plain line every 5 s otherwise; and the line that says a Ctrl-C is stopping the run.

use std::io::IsTerminal as _;
use std::time::Duration;

use gauntlet_client::Event;
use gauntlet_proto::v1;
use tokio::time::Instant;

/// Prints a run's progress events.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    quiet: bool,
    last_line: Option<Instant>,
    /// A line was left unfinished on the terminal.
    open: bool,
}

impl Progress {
    /// A printer; `quiet` prints nothing but the stop notice.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal() && !quiet,
            quiet,
            last_line: Some(Instant::now()),
            open: false,
        }
    }

    /// Prints what `event` says.
    #[allow(clippy::print_stderr)]
    pub fn show(&mut self, event: gauntlet_client::Event<'_>) {
        match event {
            Event::Submitted(_) => {}
            Event::Stopping(run) => {
                eprintln!(
                    "\nstopping run {run} (Ctrl-C): running sessions get their graceful stop"
                );
                self.open = false;
            }
            Event::Progress(p) if !self.quiet => {
                let line = progress_line(p);
                if self.tty {
                    eprint!("\r\x1b[2K{line}");
                    self.open = true;
                } else if self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                {
                    self.last_line = Some(Instant::now());
                    eprintln!("{line}");
                }
            }
            Event::Progress(_) => {}
        }
    }

    /// Ends an unfinished line (the run is over).
    #[allow(clippy::print_stderr)]
    pub fn done(&mut self) {
        if self.open {
            eprintln!();
            self.open = false;
        }
    }
}

fn progress_line(p: &v1::RunProgress) -> String {
    let c = p.counters.unwrap_or_default();
    let elapsed = p.elapsed_ms as f64 / 1000.0;
    let planned = if p.planned_ms > 0 {
        format!("/{:.0}s", p.planned_ms as f64 / 1000.0)
    } else {
        String::new()
    };
    let rate = if elapsed > 0.0 {
        c.sessions_started as f64 / elapsed
    } else {
        0.0
    };
    let metrics: Vec<String> = p
        .metrics
        .iter()
        .map(|m| {
            format!(
                "{} p50 {:.1}ms p99 {:.1}ms",
                m.name,
                m.p50_us as f64 / 1000.0,
                m.p99_us as f64 / 1000.0
            )
        })
        .collect();
    let failures: Vec<String> = p
        .failures
        .iter()
        .map(|f| format!("{}={}", f.category, f.count))
        .collect();
    format!(
        "[{} {elapsed:.1}s{planned}] workers {}{} VUs {} sessions {} ({rate:.0}/s) passed {} failed {} {} {}",
        match p.phase() {
            v1::RunPhase::Waiting => "waiting",
            v1::RunPhase::Running => "running",
            v1::RunPhase::Finished => "finished",
            v1::RunPhase::Unspecified => "?",
        },
        p.workers,
        if p.workers_lost > 0 {
            format!(" ({} lost)", p.workers_lost)
        } else {
            String::new()
        },
        p.active_vus,
        c.sessions_started,
        c.sessions_passed,
        c.sessions_failed,
        failures.join(" "),
        metrics.join(", ")
    )
}

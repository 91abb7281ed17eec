//! The progress of a run as it goes, on stderr: on a terminal a live bar (indicatif) of the
//! time elapsed of the planned (a spinner when the plan has no planned length: iterations
//! only) with sessions, rate, failures by category and the ETA; otherwise a plain line every
//! 5 s; and the line that says a Ctrl-C is stopping the run. No colour codes either way.

use std::io::IsTerminal as _;
use std::time::Duration;

use gauntlet_client::Event;
use gauntlet_proto::v1;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

/// Prints a run's progress events.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    quiet: bool,
    last_line: Option<Instant>,
    /// The live bar, from the first progress on a terminal.
    bar: Option<ProgressBar>,
    /// The progress stream broke and is being watched again (said once per break).
    resuming: bool,
}

impl Progress {
    /// A printer; `quiet` prints nothing but the stop notice.
    pub fn new(quiet: bool) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal() && !quiet,
            quiet,
            last_line: Some(Instant::now()),
            bar: None,
            resuming: false,
        }
    }

    /// Prints what `event` says.
    pub fn show(&mut self, event: gauntlet_client::Event<'_>) {
        match event {
            Event::Submitted(_) => {}
            Event::Stopping(run) => {
                let line = format!(
                    "stopping run {run} (Ctrl-C): running sessions get their graceful stop"
                );
                match &self.bar {
                    Some(bar) => bar.println(line),
                    None => errln!("\n{line}"),
                }
            }
            Event::Resuming { run, why } => {
                // Once per break, not once per attempt.
                if self.resuming {
                    return;
                }
                self.resuming = true;
                let line = format!(
                    "lost the progress stream of run {run} ({}): watching it again for up to {}",
                    gauntlet_core::redact::message(why),
                    humantime::format_duration(gauntlet_client::RESUME_FOR)
                );
                match &self.bar {
                    Some(bar) => bar.println(line),
                    None => errln!("{line}"),
                }
            }
            Event::Progress(p) if !self.quiet => {
                self.resuming = false;
                if self.tty {
                    // A spinner while the run waits for workers; the bar once its planned
                    // length is known.
                    if self
                        .bar
                        .as_ref()
                        .is_some_and(|b| b.length().is_none() && p.planned_ms > 0)
                        && let Some(old) = self.bar.take()
                    {
                        old.finish_and_clear();
                    }
                    let bar = self.bar.get_or_insert_with(|| {
                        let bar = new_bar(p.planned_ms);
                        crate::out::show_bar(Some(bar.clone()));
                        bar
                    });
                    if p.planned_ms > 0 {
                        bar.set_length(p.planned_ms);
                        bar.set_position(p.elapsed_ms.min(p.planned_ms));
                    } else {
                        bar.tick();
                    }
                    bar.set_message(bar_message(p));
                } else if self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                {
                    self.last_line = Some(Instant::now());
                    errln!("{}", progress_line(p));
                }
            }
            Event::Progress(_) => self.resuming = false,
        }
    }

    /// Ends the bar (the run is over), leaving its last state on the terminal.
    pub fn done(&mut self) {
        if let Some(bar) = self.bar.take() {
            crate::out::show_bar(None);
            bar.abandon();
            errln!();
        }
    }
}

/// The bar: time of the planned length with the ETA, or a spinner without one.
fn new_bar(planned_ms: u64) -> ProgressBar {
    let (bar, template) = if planned_ms > 0 {
        (
            ProgressBar::new(planned_ms),
            "{spinner} [{elapsed_precise}] [{bar:30}] {percent:>3}% ETA {eta} {msg}",
        )
    } else {
        (
            ProgressBar::new_spinner(),
            "{spinner} [{elapsed_precise}] {msg}",
        )
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Sessions, rate, failures by category, VUs and workers, for the bar.
fn bar_message(p: &v1::RunProgress) -> String {
    let c = p.counters.unwrap_or_default();
    let elapsed = p.elapsed_ms as f64 / 1000.0;
    let rate = if elapsed > 0.0 {
        c.sessions_started as f64 / elapsed
    } else {
        0.0
    };
    let mut msg = format!(
        "sessions {} ({rate:.0}/s) passed {} failed {}",
        c.sessions_started, c.sessions_passed, c.sessions_failed
    );
    let failures: Vec<String> = p
        .failures
        .iter()
        .map(|f| format!("{}={}", f.category, f.count))
        .collect();
    if !failures.is_empty() {
        msg.push_str(&format!(" [{}]", failures.join(" ")));
    }
    msg.push_str(&format!(" VUs {} workers {}", p.active_vus, p.workers));
    if p.workers_lost > 0 {
        msg.push_str(&format!(" ({} lost)", p.workers_lost));
    }
    msg
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

//! The progress of a run as it goes, on stderr: on a terminal a live bar (indicatif) of the
//! time elapsed of the planned length, or, for a run bound by iterations only, of the sessions
//! ended of those planned (VUs x iterations; a spinner when neither is known), with sessions,
//! rate, failures by category and the ETA once there is progress to go on; otherwise a plain
//! line every 5 s; and the line that says a Ctrl-C is stopping the run. Log lines go above the
//! bar (`out::stderr` suspends it). No colour codes either way.

use std::io::IsTerminal as _;
use std::time::Duration;

use gauntlet_client::Event;
use gauntlet_proto::v1;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

/// An iteration-bound run's ETA is an estimate from the rate of sessions ended: none before
/// this share of them ended (nor in the first seconds), when the rate says little yet.
const ETA_AFTER_SESSIONS: f64 = 0.05;
/// ... and none before this much of the run elapsed.
const ETA_AFTER: Duration = Duration::from_secs(2);
/// A time-bound run's ETA is the planned time left, said once the run is underway (the first
/// progress of a run comes at 0 %).
const ETA_AFTER_TIME: f64 = 0.01;

/// Prints a run's progress events.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    quiet: bool,
    last_line: Option<Instant>,
    /// The live bar and what it measures, from the first progress on a terminal.
    bar: Option<(Gauge, ProgressBar)>,
    /// The progress stream broke and is being watched again (said once per break).
    resuming: bool,
    /// The sessions of a run bound by iterations only (`Load::planned_sessions` of the
    /// resolved plan, with the command line's load).
    planned_sessions: Option<u64>,
}

/// What the bar fills with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gauge {
    /// Milliseconds elapsed of the planned length.
    Time { planned_ms: u64 },
    /// Sessions ended of those planned (a run bound by iterations only).
    Sessions { planned: u64 },
    /// Nothing to fill against: a spinner.
    Spinner,
}

impl Gauge {
    fn of(p: &v1::RunProgress, planned_sessions: Option<u64>) -> Gauge {
        match planned_sessions {
            _ if p.planned_ms > 0 => Gauge::Time {
                planned_ms: p.planned_ms,
            },
            Some(planned) if planned > 0 => Gauge::Sessions { planned },
            _ => Gauge::Spinner,
        }
    }

    /// The bar's length and position for `p`.
    fn fill(self, p: &v1::RunProgress) -> Option<(u64, u64)> {
        match self {
            Gauge::Time { planned_ms } => Some((planned_ms, p.elapsed_ms.min(planned_ms))),
            Gauge::Sessions { planned } => Some((planned, ended(p).min(planned))),
            Gauge::Spinner => None,
        }
    }
}

/// Sessions that ended, whichever way.
fn ended(p: &v1::RunProgress) -> u64 {
    let c = p.counters.unwrap_or_default();
    c.sessions_passed
        .saturating_add(c.sessions_failed)
        .saturating_add(c.sessions_interrupted)
}

impl Progress {
    /// A printer; `quiet` prints nothing but the stop notice; `planned_sessions` is the run's
    /// session count when only iterations bound it.
    pub fn new(quiet: bool, planned_sessions: Option<u64>) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal() && !quiet,
            quiet,
            last_line: Some(Instant::now()),
            bar: None,
            resuming: false,
            planned_sessions,
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
                    Some((_, bar)) => bar.println(line),
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
                    Some((_, bar)) => bar.println(line),
                    None => errln!("{line}"),
                }
            }
            Event::Progress(p) if !self.quiet => {
                self.resuming = false;
                if self.tty {
                    self.draw(p);
                } else if self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                {
                    self.last_line = Some(Instant::now());
                    errln!("{}", progress_line(p, self.planned_sessions));
                }
            }
            Event::Progress(_) => self.resuming = false,
        }
    }

    /// Updates the bar, replacing it when what it measures changed (a spinner until the
    /// planned length is known).
    fn draw(&mut self, p: &v1::RunProgress) {
        let gauge = Gauge::of(p, self.planned_sessions);
        if self.bar.as_ref().is_some_and(|(g, _)| *g != gauge)
            && let Some((_, old)) = self.bar.take()
        {
            old.finish_and_clear();
        }
        let (_, bar) = self.bar.get_or_insert_with(|| {
            let bar = new_bar(gauge);
            crate::out::show_bar(Some(bar.clone()));
            (gauge, bar)
        });
        // The message first: setting the position draws the bar.
        bar.set_message(bar_message(p, gauge));
        match gauge.fill(p) {
            Some((length, position)) => {
                bar.set_length(length);
                bar.set_position(position);
            }
            None => bar.tick(),
        }
    }

    /// Ends the bar (the run is over), leaving its last state on the terminal.
    pub fn done(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            crate::out::show_bar(None);
            bar.abandon();
            errln!();
        }
    }
}

/// The bar: a filling bar with its percentage, or a spinner; the ETA is in the message.
fn new_bar(gauge: Gauge) -> ProgressBar {
    let (bar, template) = match gauge {
        Gauge::Time { planned_ms: length } | Gauge::Sessions { planned: length } => (
            ProgressBar::new(length),
            "{spinner} [{elapsed_precise}] [{bar:30}] {percent:>3}% {msg}",
        ),
        Gauge::Spinner => (
            ProgressBar::new_spinner(),
            "{spinner} [{elapsed_precise}] {msg}",
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The time left, once there is progress enough to say it: for a time-bound run the planned
/// time left (after 1 %), for an iteration-bound one an estimate from the rate of sessions
/// ended (after 5 % of them and 2 s); `None` before, and for a spinner.
fn eta(p: &v1::RunProgress, gauge: Gauge) -> Option<Duration> {
    let (length, position) = gauge.fill(p)?;
    let done = position as f64 / length.max(1) as f64;
    match gauge {
        Gauge::Time { .. } if done >= ETA_AFTER_TIME => {
            Some(Duration::from_millis(length.saturating_sub(position)))
        }
        Gauge::Sessions { .. }
            if done >= ETA_AFTER_SESSIONS && Duration::from_millis(p.elapsed_ms) >= ETA_AFTER =>
        {
            let per_session = p.elapsed_ms as f64 / position as f64;
            let left = per_session * length.saturating_sub(position) as f64;
            // Whole seconds: an estimate has no finer grain.
            Some(Duration::from_secs((left / 1000.0).round() as u64))
        }
        _ => None,
    }
}

/// Sessions (ended of planned for an iteration-bound run), rate, failures by category, VUs,
/// workers, and the ETA, for the bar.
fn bar_message(p: &v1::RunProgress, gauge: Gauge) -> String {
    let c = p.counters.unwrap_or_default();
    let mut msg = match eta(p, gauge) {
        Some(left) => format!("ETA {} ", short_duration(left)),
        None => String::new(),
    };
    msg.push_str(&format!(
        "{} passed {} failed {}",
        sessions(p, gauge),
        c.sessions_passed,
        c.sessions_failed
    ));
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

/// `sessions N (R/s)`: sessions started and their rate, or, for a run bound by iterations,
/// `sessions N of M (R/s)`: sessions ended of those planned, and the rate they end at.
fn sessions(p: &v1::RunProgress, gauge: Gauge) -> String {
    let c = p.counters.unwrap_or_default();
    let (count, of) = match gauge {
        Gauge::Sessions { planned } => (ended(p), format!(" of {planned}")),
        _ => (c.sessions_started, String::new()),
    };
    let elapsed = p.elapsed_ms as f64 / 1000.0;
    let rate = if elapsed > 0.0 {
        count as f64 / elapsed
    } else {
        0.0
    };
    format!("sessions {count}{of} ({rate:.0}/s)")
}

/// A duration in its two largest units (`1m 5s`, `2h 3m`, `9s`).
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

fn progress_line(p: &v1::RunProgress, planned_sessions: Option<u64>) -> String {
    let gauge = Gauge::of(p, planned_sessions);
    let elapsed = p.elapsed_ms as f64 / 1000.0;
    let planned = if p.planned_ms > 0 {
        format!("/{:.0}s", p.planned_ms as f64 / 1000.0)
    } else {
        String::new()
    };
    let c = p.counters.unwrap_or_default();
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
        "[{} {elapsed:.1}s{planned}] workers {}{} VUs {} {} passed {} failed {} {} {}",
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
        sessions(p, gauge),
        c.sessions_passed,
        c.sessions_failed,
        failures.join(" "),
        metrics.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's progress: `elapsed_ms` in, `planned_ms` of a time-bound run (0 otherwise),
    /// sessions started, passed and failed.
    fn progress(elapsed_ms: u64, planned_ms: u64, counts: [u64; 3]) -> v1::RunProgress {
        v1::RunProgress {
            phase: v1::RunPhase::Running.into(),
            elapsed_ms,
            planned_ms,
            active_vus: 5,
            workers: 1,
            counters: Some(v1::Counters {
                sessions_started: counts[0],
                sessions_passed: counts[1],
                sessions_failed: counts[2],
                ..v1::Counters::default()
            }),
            ..v1::RunProgress::default()
        }
    }

    #[test]
    fn an_iteration_bound_run_counts_sessions_of_those_planned() {
        let p = progress(2_000, 0, [14, 9, 1]);
        let gauge = Gauge::of(&p, Some(20));
        assert_eq!(gauge, Gauge::Sessions { planned: 20 });
        assert_eq!(gauge.fill(&p), Some((20, 10)));
        let line = progress_line(&p, Some(20));
        assert!(
            line.contains(" sessions 10 of 20 (5/s) passed 9 failed 1"),
            "{line}"
        );
        let msg = bar_message(&p, gauge);
        assert!(msg.starts_with("ETA 2s sessions 10 of 20"), "{msg}");
        // Without a planned count (a time-bound plan), sessions started, as before.
        let line = progress_line(&p, None);
        assert!(line.contains(" sessions 14 (7/s) passed"), "{line}");
        assert_eq!(Gauge::of(&p, None), Gauge::Spinner);
    }

    #[test]
    fn no_eta_before_there_is_progress_to_go_on() {
        // A 9-minute plan at its first progress: no ETA at 0 %.
        let p = progress(0, 540_000, [0, 0, 0]);
        let gauge = Gauge::of(&p, None);
        assert_eq!(eta(&p, gauge), None);
        assert!(bar_message(&p, gauge).starts_with("sessions 0 (0/s)"));
        // Under way: the planned time left.
        let p = progress(60_000, 540_000, [10, 10, 0]);
        assert_eq!(eta(&p, gauge), Some(Duration::from_secs(480)));
        assert!(bar_message(&p, gauge).starts_with("ETA 8m 0s "));
        // Iterations: no estimate from 1 session of 100, nor in the first 2 s.
        let sessions = Gauge::Sessions { planned: 100 };
        assert_eq!(eta(&progress(10_000, 0, [5, 1, 0]), sessions), None);
        assert_eq!(eta(&progress(1_000, 0, [50, 40, 0]), sessions), None);
        assert_eq!(
            eta(&progress(10_000, 0, [50, 20, 5]), sessions),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_secs(9)), "9s");
        assert_eq!(short_duration(Duration::from_secs(65)), "1m 5s");
        assert_eq!(short_duration(Duration::from_secs(7_380)), "2h 3m");
    }
}

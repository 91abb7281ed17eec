//! `/metrics`: the Prometheus text exposition of every run (its phase, sessions and failures by
//! scenario and category, latency as histograms and exact summaries, active VUs), the workers,
//! and what was refused. Every family, label and bucket is described in docs/metrics.md. Names
//! from a plan appear in their safe forms (`gauntlet_core::names`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use gauntlet_core::names::{Vocabulary, safe};
use gauntlet_core::prometheus::{BUCKETS_US, Buckets, QUANTILES, seconds};
use gauntlet_core::report::Report;
use gauntlet_core::words::RunPhase;

use crate::run::{LiveFigures, RunFigures};
use crate::{Coordinator, lock};

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric's latency as exposed: its safe name, its buckets (absent when a report carries
/// no histogram for it) and its exact quantiles, microseconds.
#[derive(Debug, Clone)]
struct Latency {
    metric: String,
    buckets: Option<Buckets>,
    count: u64,
    quantiles: [u64; QUANTILES.len()],
}

/// One run as `/metrics` shows it: labels escaped, figures in exposition terms.
#[derive(Debug, Clone)]
struct Exposed {
    /// `run="...",plan="..."`.
    labels: String,
    phase: RunPhase,
    /// Started, passed, failed, interrupted, dropped, unknown.
    sessions: [u64; 6],
    /// (scenario, category, failed sessions).
    failures: Vec<(String, String, u64)>,
    latency: Vec<Latency>,
    /// (safe metric name, samples, exact quantiles in microseconds) over the recent window.
    recent: Vec<(String, u64, [u64; QUANTILES.len()])>,
    active_vus: u64,
}

fn run_labels(id: &str, plan: &str) -> String {
    format!("run=\"{}\",plan=\"{}\"", label(id), label(&safe(plan)))
}

impl Exposed {
    fn live(id: &str, plan: &gauntlet_core::plan::Plan, f: LiveFigures) -> Exposed {
        let names = Vocabulary::of(plan).safe_metrics();
        Exposed {
            labels: run_labels(id, &plan.name),
            phase: f.phase,
            sessions: f.sessions,
            failures: f
                .failures
                .into_iter()
                .map(|((scenario, category), n)| (scenario, category, n))
                .collect(),
            latency: f
                .latency
                .into_iter()
                .map(|(name, (buckets, quantiles))| Latency {
                    metric: names.get(&name).into_owned(),
                    count: buckets.count,
                    buckets: Some(buckets),
                    quantiles,
                })
                .collect(),
            recent: f
                .recent
                .into_iter()
                .map(|(name, (count, quantiles))| (names.get(&name).into_owned(), count, quantiles))
                .collect(),
            active_vus: f.active_vus,
        }
    }

    /// A finished run, from its report: the histograms it keeps are decoded once (the caller
    /// keeps the result).
    fn finished(id: &str, plan: &gauntlet_core::plan::Plan, r: &Report) -> Exposed {
        let names = Vocabulary::of(plan).safe_metrics();
        let t = &r.totals;
        let mut failures: BTreeMap<(String, String), u64> = BTreeMap::new();
        for x in &r.failures {
            *failures
                .entry((x.scenario.clone(), x.category.to_string()))
                .or_default() += x.count;
        }
        Exposed {
            labels: run_labels(id, &plan.name),
            phase: RunPhase::Finished,
            sessions: [
                t.sessions,
                t.passed,
                t.failed,
                t.interrupted,
                t.dropped,
                t.unknown,
            ],
            failures: failures
                .into_iter()
                .map(|((scenario, category), n)| (scenario, category, n))
                .collect(),
            latency: r
                .metrics
                .iter()
                .map(|(name, m)| Latency {
                    metric: if m.safe_name.is_empty() {
                        names.get(name).into_owned()
                    } else {
                        m.safe_name.clone()
                    },
                    buckets: m
                        .decode_histogram()
                        .and_then(Result::ok)
                        .map(|h| Buckets::of(&h)),
                    count: m.count,
                    quantiles: [m.p50_us, m.p90_us, m.p95_us, m.p99_us, m.p999_us],
                })
                .collect(),
            recent: Vec::new(),
            active_vus: 0,
        }
    }
}

/// The exposition, keeping what it computed of finished runs (their figures no longer change):
/// one per HTTP port.
#[derive(Debug, Default)]
pub struct Exposition {
    finished: Mutex<BTreeMap<String, Arc<Exposed>>>,
}

impl Exposition {
    /// The Prometheus text exposition of every run and the workers.
    pub fn render(&self, coordinator: &Coordinator) -> String {
        let runs: Vec<Arc<Exposed>> = coordinator
            .runs()
            .iter()
            .map(|run| {
                if let Some(done) = lock(&self.finished).get(&run.id) {
                    return Arc::clone(done);
                }
                match run.figures() {
                    RunFigures::Live(f) => Arc::new(Exposed::live(&run.id, &run.plan, f)),
                    RunFigures::Finished(report) => {
                        let done = Arc::new(Exposed::finished(&run.id, &run.plan, &report));
                        lock(&self.finished).insert(run.id.clone(), Arc::clone(&done));
                        done
                    }
                }
            })
            .collect();
        let mut out = String::new();
        write_runs(&mut out, &runs);
        write_fleet(&mut out, coordinator);
        out
    }
}

/// The Prometheus text exposition of every run and the workers (computing every finished run's
/// figures afresh; the HTTP port keeps them in its [`Exposition`]).
pub fn metrics(coordinator: &Coordinator) -> String {
    Exposition::default().render(coordinator)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn write_runs(out: &mut String, runs: &[Arc<Exposed>]) {
    family(
        out,
        "gauntlet_run_phase",
        "gauge",
        "1 for the phase each run is in (waiting, running, finished), 0 for the others.",
    );
    for r in runs {
        for phase in [RunPhase::Waiting, RunPhase::Running, RunPhase::Finished] {
            let _ = writeln!(
                out,
                "gauntlet_run_phase{{{},phase=\"{}\"}} {}",
                r.labels,
                phase.as_str(),
                u8::from(r.phase == phase)
            );
        }
    }
    family(
        out,
        "gauntlet_sessions_total",
        "counter",
        "Sessions by outcome (unknown: at most this many ran on lost workers and never reported, known at the end of the run).",
    );
    for r in runs {
        for (i, outcome) in ["started", "passed", "failed", "interrupted"]
            .iter()
            .enumerate()
            .chain([(5, &"unknown")])
        {
            let _ = writeln!(
                out,
                "gauntlet_sessions_total{{{},outcome=\"{outcome}\"}} {}",
                r.labels, r.sessions[i]
            );
        }
    }
    family(
        out,
        "gauntlet_dropped_arrivals_total",
        "counter",
        "Open-model arrivals that found no free VU.",
    );
    for r in runs {
        let _ = writeln!(
            out,
            "gauntlet_dropped_arrivals_total{{{}}} {}",
            r.labels, r.sessions[4]
        );
    }
    family(
        out,
        "gauntlet_failures_total",
        "counter",
        "Failed sessions by scenario and category.",
    );
    for r in runs {
        for (scenario, category, n) in &r.failures {
            let _ = writeln!(
                out,
                "gauntlet_failures_total{{{},scenario=\"{}\",category=\"{}\"}} {n}",
                r.labels,
                label(&safe(scenario)),
                label(&safe(category))
            );
        }
    }
    family(
        out,
        "gauntlet_latency_seconds",
        "histogram",
        "Latency of every metric of the run so far, from the merged fleet histogram (buckets: 1-2-5 steps from 1 ms to 100 s).",
    );
    for r in runs {
        for l in &r.latency {
            let Some(b) = &l.buckets else { continue };
            let base = format!("{},metric=\"{}\"", r.labels, label(&l.metric));
            for (le, n) in BUCKETS_US.iter().zip(b.cumulative) {
                let _ = writeln!(
                    out,
                    "gauntlet_latency_seconds_bucket{{{base},le=\"{}\"}} {n}",
                    seconds(u128::from(*le))
                );
            }
            let _ = writeln!(
                out,
                "gauntlet_latency_seconds_bucket{{{base},le=\"+Inf\"}} {}\n\
                 gauntlet_latency_seconds_sum{{{base}}} {}\n\
                 gauntlet_latency_seconds_count{{{base}}} {}",
                b.count,
                seconds(b.sum_us),
                b.count
            );
        }
    }
    family(
        out,
        "gauntlet_latency_run_seconds",
        "summary",
        "Exact quantiles of every metric over the whole run so far (the report's once it ends); its sum and count are gauntlet_latency_seconds'.",
    );
    for r in runs {
        for l in r.latency.iter().filter(|l| l.count > 0) {
            for ((_, q), v) in QUANTILES.iter().zip(l.quantiles) {
                let _ = writeln!(
                    out,
                    "gauntlet_latency_run_seconds{{{},metric=\"{}\",quantile=\"{q}\"}} {}",
                    r.labels,
                    label(&l.metric),
                    seconds(u128::from(v))
                );
            }
        }
    }
    family(
        out,
        "gauntlet_latency_recent_seconds",
        "summary",
        "Exact quantiles of the main metrics (session, ws.handshake, ws.confirmation) over the snapshot intervals that began in the last 10 s, while the run goes.",
    );
    for r in runs {
        for (metric, _, quantiles) in &r.recent {
            for ((_, q), v) in QUANTILES.iter().zip(quantiles) {
                let _ = writeln!(
                    out,
                    "gauntlet_latency_recent_seconds{{{},metric=\"{}\",quantile=\"{q}\"}} {}",
                    r.labels,
                    label(metric),
                    seconds(u128::from(*v))
                );
            }
        }
    }
    family(
        out,
        "gauntlet_latency_recent_samples",
        "gauge",
        "Samples behind gauntlet_latency_recent_seconds.",
    );
    for r in runs {
        for (metric, n, _) in &r.recent {
            let _ = writeln!(
                out,
                "gauntlet_latency_recent_samples{{{},metric=\"{}\"}} {n}",
                r.labels,
                label(metric)
            );
        }
    }
    family(out, "gauntlet_active_vus", "gauge", "VUs in a session.");
    for r in runs {
        let _ = writeln!(out, "gauntlet_active_vus{{{}}} {}", r.labels, r.active_vus);
    }
}

fn write_fleet(out: &mut String, coordinator: &Coordinator) {
    let connected = coordinator
        .registry
        .connected(coordinator.config.heartbeat_timeout)
        .len();
    let known = coordinator.registry.all().len();
    family(
        out,
        "gauntlet_workers",
        "gauge",
        "Workers known to the coordinator.",
    );
    let _ = writeln!(out, "gauntlet_workers{{state=\"connected\"}} {connected}");
    let _ = writeln!(out, "gauntlet_workers{{state=\"known\"}} {known}");
    family(
        out,
        "gauntlet_refused_connections_total",
        "counter",
        "Connections closed on arrival because a port held its maximum.",
    );
    let _ = writeln!(
        out,
        "gauntlet_refused_connections_total {}",
        coordinator
            .refused_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    family(
        out,
        "gauntlet_rejected_messages_total",
        "counter",
        "Worker snapshots refused, never merged, by reason.",
    );
    for reason in crate::run::intake::Reason::ALL {
        let _ = writeln!(
            out,
            "gauntlet_rejected_messages_total{{reason=\"{}\"}} {}",
            reason.as_str(),
            coordinator.rejected.get(reason)
        );
    }
}

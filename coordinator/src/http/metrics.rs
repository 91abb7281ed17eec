//! `/metrics`: the Prometheus text exposition of every run (sessions and failures by run,
//! scenario and category, latency summaries, active VUs), the workers, and what was refused.
//! Names from a plan appear in their safe forms (`gauntlet_core::names`).

use gauntlet_core::names::{Vocabulary, safe};

use crate::Coordinator;

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of every run and the workers.
pub fn metrics(coordinator: &Coordinator) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let runs = coordinator.runs();
    let _ = writeln!(
        out,
        "# HELP gauntlet_sessions_total Sessions by outcome (unknown: at most this many ran on lost workers and never reported, known at the end of the run).\n# TYPE gauntlet_sessions_total counter"
    );
    let figures: Vec<_> = runs.iter().map(|r| (r, r.figures())).collect();
    for (r, f) in &figures {
        for (i, outcome) in ["started", "passed", "failed", "interrupted"]
            .iter()
            .enumerate()
            .chain([(5, &"unknown")])
        {
            let _ = writeln!(
                out,
                "gauntlet_sessions_total{{run=\"{}\",plan=\"{}\",outcome=\"{outcome}\"}} {}",
                label(&r.id),
                label(&safe(&r.plan.name)),
                f.sessions[i]
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP gauntlet_dropped_arrivals_total Open-model arrivals that found no free VU.\n# TYPE gauntlet_dropped_arrivals_total counter"
    );
    for (r, f) in &figures {
        let _ = writeln!(
            out,
            "gauntlet_dropped_arrivals_total{{run=\"{}\",plan=\"{}\"}} {}",
            label(&r.id),
            label(&safe(&r.plan.name)),
            f.sessions[4]
        );
    }
    let _ = writeln!(
        out,
        "# HELP gauntlet_failures_total Failed sessions by scenario and category.\n# TYPE gauntlet_failures_total counter"
    );
    for (r, f) in &figures {
        for ((scenario, category), n) in &f.failures {
            let _ = writeln!(
                out,
                "gauntlet_failures_total{{run=\"{}\",plan=\"{}\",scenario=\"{}\",category=\"{}\"}} {n}",
                label(&r.id),
                label(&safe(&r.plan.name)),
                label(scenario),
                label(category)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP gauntlet_latency_seconds Latency of the main metrics (exact fleet-wide quantiles).\n# TYPE gauntlet_latency_seconds summary"
    );
    for (r, f) in &figures {
        let names = Vocabulary::of(&r.plan).safe_metrics();
        for (metric, (count, sum, quantiles)) in &f.latency {
            let base = format!(
                "run=\"{}\",plan=\"{}\",metric=\"{}\"",
                label(&r.id),
                label(&safe(&r.plan.name)),
                label(&names.get(metric))
            );
            for (q, v) in quantiles {
                let _ = writeln!(
                    out,
                    "gauntlet_latency_seconds{{{base},quantile=\"{q}\"}} {v}"
                );
            }
            let _ = writeln!(out, "gauntlet_latency_seconds_sum{{{base}}} {sum}");
            let _ = writeln!(out, "gauntlet_latency_seconds_count{{{base}}} {count}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP gauntlet_active_vus VUs in a session.\n# TYPE gauntlet_active_vus gauge"
    );
    for (r, f) in &figures {
        let _ = writeln!(
            out,
            "gauntlet_active_vus{{run=\"{}\",plan=\"{}\"}} {}",
            label(&r.id),
            label(&safe(&r.plan.name)),
            f.active_vus
        );
    }
    let connected = coordinator
        .registry
        .connected(coordinator.config.heartbeat_timeout)
        .len();
    let known = coordinator.registry.all().len();
    let _ = writeln!(
        out,
        "# HELP gauntlet_workers Workers known to the coordinator.\n# TYPE gauntlet_workers gauge"
    );
    let _ = writeln!(out, "gauntlet_workers{{state=\"connected\"}} {connected}");
    let _ = writeln!(out, "gauntlet_workers{{state=\"known\"}} {known}");
    let _ = writeln!(
        out,
        "# HELP gauntlet_refused_connections_total Connections closed on arrival because a port held its maximum.\n# TYPE gauntlet_refused_connections_total counter\ngauntlet_refused_connections_total {}",
        coordinator
            .refused_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP gauntlet_rejected_messages_total Worker snapshots refused, never merged, by reason.\n# TYPE gauntlet_rejected_messages_total counter"
    );
    for reason in crate::run::intake::Reason::ALL {
        let _ = writeln!(
            out,
            "gauntlet_rejected_messages_total{{reason=\"{}\"}} {}",
            reason.as_str(),
            coordinator.rejected.get(reason)
        );
    }
    out
}

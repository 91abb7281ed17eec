//! The coordinator's HTTP port: `/healthz` for probes, `/api/runs` (JSON) for scripts and
//! `/metrics` (Prometheus text format: fleet-wide counters by run, scenario and category,
//! latency summaries, worker gauges).

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use crate::Coordinator;

/// The HTTP routes.
pub fn router(coordinator: Coordinator) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get({
                let coordinator = coordinator.clone();
                move || {
                    let coordinator = coordinator.clone();
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            metrics(&coordinator),
                        )
                    }
                }
            }),
        )
        .route(
            "/api/runs",
            get(move || {
                let coordinator = coordinator.clone();
                async move { Json(runs(&coordinator)) }
            }),
        )
}

fn runs(coordinator: &Coordinator) -> Value {
    let runs: Vec<Value> = coordinator
        .runs()
        .iter()
        .map(|r| {
            let report = r.report();
            json!({
                "run_id": r.id,
                "plan": r.plan.name,
                "state": r.phase(),
                "verdict": report.as_ref().map(|rep| rep.verdict.as_str()),
                "verdict_reason": report.as_ref().map(|rep| rep.verdict_reason.clone()),
            })
        })
        .collect();
    json!({ "runs": runs, "workers": coordinator.registry.all().len() })
}

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
        "# HELP gauntlet_sessions_total Sessions by outcome.\n# TYPE gauntlet_sessions_total counter"
    );
    let figures: Vec<_> = runs.iter().map(|r| (r, r.figures())).collect();
    for (r, f) in &figures {
        for (i, outcome) in ["started", "passed", "failed", "interrupted"]
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                out,
                "gauntlet_sessions_total{{run=\"{}\",plan=\"{}\",outcome=\"{outcome}\"}} {}",
                label(&r.id),
                label(&r.plan.name),
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
            label(&r.plan.name),
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
                label(&r.plan.name),
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
        for (metric, (count, sum, quantiles)) in &f.latency {
            let base = format!(
                "run=\"{}\",plan=\"{}\",metric=\"{}\"",
                label(&r.id),
                label(&r.plan.name),
                label(metric)
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
            label(&r.plan.name),
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
    out
}

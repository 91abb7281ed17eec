//! The coordinator's HTTP port: `/` a live page of the running and recent runs (refreshed from
//! `/api/live`, with the report's charts), `/healthz` for probes, `/api/runs` (JSON) for
//! scripts and
//! `/metrics` (Prometheus text format: fleet-wide counters by run, scenario and category,
//! latency summaries, worker gauges).

use axum::Json;
use axum::Router;
use axum::response::IntoResponse as _;
use axum::routing::get;
use serde_json::{Value, json};

use crate::Coordinator;

/// The HTTP routes. With an HTTP token ([`Coordinator::with_http_token`], by default the
/// submit token) every route but `/healthz` needs it, as `Authorization: Bearer <token>` (for
/// scrapers and scripts) or as the password of HTTP basic authentication (a browser asks for
/// it; any user name).
pub fn router(coordinator: Coordinator) -> Router {
    let token = coordinator.http_token();
    let guarded = routes(coordinator).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let token = token.clone();
            async move {
                match &token {
                    Some(t) if !authorized(req.headers(), t) => (
                        axum::http::StatusCode::UNAUTHORIZED,
                        [(
                            axum::http::header::WWW_AUTHENTICATE,
                            "Basic realm=\"gauntlet coordinator\", charset=\"UTF-8\"",
                        )],
                        "this coordinator's HTTP port needs its token: Authorization: Bearer <token>, or the token as the basic-auth password\n",
                    )
                        .into_response(),
                    _ => next.run(req).await,
                }
            }
        },
    ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(guarded)
}

/// Whether `headers` carry `token`, as a bearer token or a basic-auth password.
fn authorized(headers: &axum::http::HeaderMap, token: &str) -> bool {
    use base64::Engine as _;
    let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(given) = value.strip_prefix("Bearer ") {
        return gauntlet_proto::auth::same(given.trim().as_bytes(), token.as_bytes());
    }
    if let Some(b64) = value.strip_prefix("Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let password = match decoded.iter().position(|b| *b == b':') {
            Some(i) => &decoded[i + 1..],
            None => &decoded[..],
        };
        return gauntlet_proto::auth::same(password, token.as_bytes());
    }
    false
}

fn routes(coordinator: Coordinator) -> Router {
    Router::new()
        .route("/", get(|| async { axum::response::Html(LIVE_PAGE) }))
        .route(
            "/api/live",
            get({
                let coordinator = coordinator.clone();
                move || {
                    let coordinator = coordinator.clone();
                    async move { Json(live(&coordinator)) }
                }
            }),
        )
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
                "state": r.phase().as_str(),
                "verdict": report.as_ref().map(|rep| rep.verdict.as_str()),
                "verdict_reason": report.as_ref().map(|rep| rep.verdict_reason.clone()),
            })
        })
        .collect();
    json!({ "runs": runs, "workers": live_workers(coordinator), "workers_known": coordinator.registry.all().len() })
}

/// Workers connected now (a stream open and heard from within the heartbeat timeout); the
/// registry also remembers workers that left.
fn live_workers(coordinator: &Coordinator) -> usize {
    coordinator
        .registry
        .connected(coordinator.config.heartbeat_timeout)
        .len()
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

/// Runs shown on the live page: the running ones and the most recent others.
const LIVE_RUNS: usize = 5;

/// The live page's data: per run its figures and charts (SVG, the same as report.html's).
pub fn live(coordinator: &Coordinator) -> Value {
    let mut runs = coordinator.runs();
    runs.sort_by(|a, b| b.id.cmp(&a.id));
    let runs: Vec<Value> = runs
        .iter()
        .take(LIVE_RUNS)
        .map(|r| {
            let report = r.live_report();
            let finished = r.phase() == gauntlet_core::words::RunPhase::Finished;
            json!({
                "run_id": r.id,
                "plan": r.plan.name,
                "state": r.phase().as_str(),
                "verdict": if finished { report.verdict.as_str() } else { "" },
                "verdict_reason": if finished { report.verdict_reason.clone() } else { String::new() },
                "elapsed_s": report.duration_s,
                "sessions": report.totals.sessions,
                "passed": report.totals.passed,
                "failed": report.totals.failed,
                "charts": gauntlet_core::report::html::charts(&report),
            })
        })
        .collect();
    json!({ "runs": runs, "workers": live_workers(coordinator), "workers_known": coordinator.registry.all().len() })
}

/// The live page: plain HTML and a few lines of script that refresh from `/api/live`.
const LIVE_PAGE: &str = r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>gauntlet coordinator</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;color:#1a1a1a;max-width:1100px}h1{font-size:20px}
h2{font-size:16px;margin-top:24px;border-bottom:1px solid #ddd}.pass{color:#1b7f3b}.fail{color:#b00020}.error{color:#8a4b00}
.chart{display:block;margin:10px 0;border:1px solid #eee}.chart .title{font-size:14px;font-weight:bold}.chart .tick{font-size:10px;fill:#555}
.chart .label{font-size:11px;fill:#333}.chart .legend{font-size:11px}.chart .axis{stroke:#333}.chart .grid{stroke:#eee}.chart .empty{fill:#999}</style>
</head><body><h1>gauntlet coordinator</h1><p id="summary">loading…</p><div id="runs"></div>
<script>
function esc(s){return String(s).replace(/[&<>"]/g,function(c){return{"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;"}[c];});}
async function refresh(){
  try{
    const data=await (await fetch('/api/live')).json();
    document.getElementById('summary').textContent=data.workers+' workers connected ('+data.workers_known+' known), '+data.runs.length+' recent runs';
    document.getElementById('runs').innerHTML=data.runs.map(function(r){
      return '<h2>'+esc(r.plan)+' <code>'+esc(r.run_id)+'</code>: '+esc(r.state)+(r.verdict?' <span class="'+esc(r.verdict)+'">'+esc(r.verdict)+'</span>':'')+'</h2>'
        +'<p>'+r.elapsed_s.toFixed(1)+' s, '+r.sessions+' sessions, '+r.passed+' passed, '+r.failed+' failed. '+esc(r.verdict_reason)+'</p>'
        +r.charts.join('');
    }).join('');
  }catch(e){document.getElementById('summary').textContent='coordinator unreachable: '+e;}
}
refresh();setInterval(refresh,2000);
</script></body></html>
"#;

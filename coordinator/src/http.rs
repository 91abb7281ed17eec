//! The coordinator's HTTP port: `/healthz` for probes and `/api/runs` (JSON) for scripts; the
//! live page and `/metrics` come here too.

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

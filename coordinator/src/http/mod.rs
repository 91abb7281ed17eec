//! The coordinator's HTTP port: `/` a live page of the running and recent runs, `/api/runs`
//! and `/api/live` (JSON) for scripts and the page, `/metrics` (Prometheus text) for
//! dashboards, `/healthz` for probes; every route but `/healthz` behind the HTTP token.
//!
//! # Layout
//! - this file: the routes and the token check;
//! - `api`: `/api/runs` and `/api/live`; `page`: the live page; `metrics`: `/metrics`.

mod api;
mod metrics;
mod page;

use axum::Router;
use axum::response::IntoResponse as _;
use axum::routing::get;

use crate::Coordinator;
pub use api::live;
pub use metrics::metrics;

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
        .route("/", get(|| async { axum::response::Html(page::LIVE_PAGE) }))
        .route(
            "/api/live",
            get({
                let coordinator = coordinator.clone();
                move || {
                    let coordinator = coordinator.clone();
                    async move { axum::Json(api::live(&coordinator)) }
                }
            }),
        )
        .route(
            "/metrics",
            get({
                let coordinator = coordinator.clone();
                let exposition = std::sync::Arc::new(metrics::Exposition::default());
                move || {
                    let coordinator = coordinator.clone();
                    let exposition = std::sync::Arc::clone(&exposition);
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            exposition.render(&coordinator),
                        )
                    }
                }
            }),
        )
        .route(
            "/api/runs",
            get(move || {
                let coordinator = coordinator.clone();
                async move { axum::Json(api::runs(&coordinator)) }
            }),
        )
}

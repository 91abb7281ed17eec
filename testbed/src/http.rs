//! The HTTP side: health (503 during warm-up), discovery, MCP and message endpoints with JSON
//! errors, the `http_error` fault, and the admin endpoints (`/__testbed/stats`, `/__testbed/faults`).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::App;
use crate::faults::{FaultKind, Faults, fires};
use crate::stats::StatsSnapshot;

/// The endpoints the reference suite calls "critical": each must answer 200.
pub const CRITICAL_PATHS: [&str; 5] = [
    "/health",
    "/api/health",
    "/api/discovery/services",
    "/api/mcp/config",
    "/api/mcp/servers",
];

/// Message endpoints: 401 JSON without a valid bearer token, 200 JSON with one.
pub const MESSAGE_PATHS: [&str; 5] = [
    "/api/messages",
    "/api/threads",
    "/api/conversations",
    "/api/chat",
    "/api/chat/messages",
];

/// `/health`, `/api/health`.
pub async fn health(State(app): State<Arc<App>>) -> Response {
    let c = &app.config.http;
    if app.warming_up() {
        let body = json!({"status": "unhealthy", "service": c.service, "version": c.version, "reason": "starting"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({"status": "healthy", "service": c.service, "version": c.version, "timestamp": crate::frames::timestamp()}))
        .into_response()
}

/// `/api/discovery/services`.
pub async fn discovery(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({"services": [
        {"name": app.config.http.service, "type": "backend", "health": "/health"},
        {"name": "websocket", "type": "websocket", "path": "/ws"},
        {"name": "auth", "type": "auth", "issuer": app.config.auth.issuer},
    ]}))
}

/// `/api/mcp/config`.
pub async fn mcp_config() -> Json<Value> {
    Json(json!({"enabled": true, "transport": "websocket", "servers_endpoint": "/api/mcp/servers"}))
}

/// `/api/mcp/servers`.
pub async fn mcp_servers() -> Json<Value> {
    Json(
        json!({"data": [{"name": "filesystem", "status": "connected"}, {"name": "search", "status": "connected"}]}),
    )
}

/// The message endpoints.
pub async fn messages(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let token = crate::auth::find_token(&headers, None).filter(|t| t.placement == "header");
    match token.map(|t| app.validator.validate(&t.jwt)) {
        Some(Ok(identity)) => Json(json!({"data": [], "user_id": identity.sub})).into_response(),
        Some(Err(reason)) => error(
            StatusCode::UNAUTHORIZED,
            "Invalid authentication credentials",
            "AUTH_FAILED",
            reason.name(),
        ),
        None => error(
            StatusCode::UNAUTHORIZED,
            "Not authenticated",
            "AUTH_REQUIRED",
            "no_token",
        ),
    }
}

fn error(status: StatusCode, detail: &str, code: &str, reason: &str) -> Response {
    (
        status,
        Json(json!({"detail": detail, "error_code": code, "reason": reason})),
    )
        .into_response()
}

/// Unknown paths: JSON 404, as every error is JSON.
pub async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found", "NOT_FOUND", "no_route")
}

/// Known path, wrong method: JSON 405.
pub async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        "METHOD_NOT_ALLOWED",
        "method",
    )
}

/// Middleware for every non-admin, non-WebSocket request: the `http_error` fault, then the
/// ground-truth count of (route, status).
pub async fn count_and_inject(
    State(app): State<Arc<App>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = matched.as_ref().map_or("other", |m| m.as_str()).to_owned();
    if route.starts_with("/__testbed") || route.starts_with("/ws") || route == "/websocket" {
        return next.run(request).await;
    }
    app.mark_request();
    let faults = app.faults_in_force();
    if let Some(f) = &faults.http_error
        && (f.paths.is_empty() || f.paths.contains(&route))
    {
        let nth = app.next_http_request(&route);
        if fires(
            app.config.seed,
            FaultKind::HttpError,
            f.rate,
            None,
            &route,
            &[nth],
        ) {
            app.stats.fault(FaultKind::HttpError);
            app.stats.http(&route, f.status);
            let status =
                StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(
                status,
                "Internal server error",
                "INTERNAL_ERROR",
                "injected",
            );
        }
    }
    let response = next.run(request).await;
    app.stats.http(&route, response.status().as_u16());
    response
}

/// `GET /__testbed/stats`.
pub async fn stats(State(app): State<Arc<App>>) -> Json<StatsSnapshot> {
    Json(app.snapshot())
}

/// `GET /__testbed/faults`.
pub async fn get_faults(State(app): State<Arc<App>>) -> Json<Faults> {
    Json((*app.faults()).clone())
}

/// `PUT /__testbed/faults`: replaces every switch; the body has the shape of `[faults]`.
pub async fn put_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let mut de = serde_json::Deserializer::from_slice(&body);
    let faults: Faults = match serde_path_to_error::deserialize(&mut de) {
        Ok(f) => f,
        Err(e) => {
            let msg = format!("faults.{}: {}", e.path(), e.inner());
            return (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response();
        }
    };
    if let Err((kind, msg)) = faults.check() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("faults.{kind}: {msg}")})),
        )
            .into_response();
    }
    app.set_faults(faults.clone());
    Json(faults).into_response()
}

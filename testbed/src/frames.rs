//! The JSON frames the service sends: confirmation, pong, ack, error and agent events, in the
//! shapes the reference service uses.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

use crate::protocol::{AgentEvent, ConfirmationShape, EventShape};

/// Seconds since the epoch, as the reference service writes timestamps.
pub fn timestamp() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An `error_message` frame.
pub fn error_message(code: &str, message: &str, details: Value) -> String {
    json!({
        "type": "error_message",
        "error_code": code,
        "error_message": message,
        "details": details,
        "timestamp": timestamp(),
        "recovery_suggestions": Value::Null,
    })
    .to_string()
}

#[derive(Serialize)]
struct Pong<'a> {
    r#type: &'static str,
    data: PongData<'a>,
}

#[derive(Serialize)]
struct PongData<'a> {
    timestamp: f64,
    user_id: &'a str,
}

/// The answer to `{"type":"ping"}`.
pub fn pong(user_id: &str) -> String {
    let pong = Pong {
        r#type: "pong",
        data: PongData {
            timestamp: timestamp(),
            user_id,
        },
    };
    serde_json::to_string(&pong).unwrap_or_default()
}

/// The answer to `{"type":"heartbeat"}`.
pub fn heartbeat_ack(user_id: &str) -> String {
    json!({"type": "heartbeat_ack", "data": {"timestamp": timestamp(), "user_id": user_id}})
        .to_string()
}

/// The answer to a frame of an unknown type.
pub fn ack(received_type: &str) -> String {
    json!({
        "type": "ack",
        "received_type": received_type,
        "status": "acknowledged",
        "timestamp": timestamp(),
    })
    .to_string()
}

/// The connection confirmation frame.
pub fn confirmation(
    shape: ConfirmationShape,
    connection_id: &str,
    user_id: &str,
    thread_id: &str,
    server_id: &str,
) -> String {
    let data = json!({
        "event": "connection_established",
        "connection_id": connection_id,
        "user_id": user_id,
        "thread_id": thread_id,
        "connection_ready": true,
    });
    match shape {
        ConfirmationShape::SystemMessage => json!({
            "type": "system_message",
            "data": data,
            "timestamp": timestamp(),
            "server_id": server_id,
        }),
        ConfirmationShape::ConnectionEstablished => json!({
            "type": "connection_established",
            "data": data,
            "connection_id": connection_id,
            "user_id": user_id,
            "timestamp": timestamp(),
            "server_id": server_id,
        }),
    }
    .to_string()
}

/// Who an agent event belongs to.
#[derive(Debug, Clone)]
pub struct RunIds {
    /// `run_id`.
    pub run_id: String,
    /// `thread_id`.
    pub thread_id: String,
    /// `request_id` (wrapped shape only).
    pub request_id: String,
    /// `agent_name`.
    pub agent_name: String,
}

/// One agent event frame, carrying `user_id` (which an isolation breach falsifies).
pub fn agent_event(shape: EventShape, event: AgentEvent, ids: &RunIds, user_id: &str) -> String {
    let message = format!("{} {}", ids.agent_name, event.status());
    match shape {
        EventShape::Flat => json!({
            "type": event.name(),
            "run_id": ids.run_id,
            "thread_id": ids.thread_id,
            "user_id": user_id,
            "agent_name": ids.agent_name,
            "timestamp": timestamp(),
            "payload": {"status": event.status(), "message": message},
        }),
        EventShape::Wrapped => json!({
            "type": event.name(),
            "data": {
                "run_id": ids.run_id,
                "thread_id": ids.thread_id,
                "request_id": ids.request_id,
                "agent_name": ids.agent_name,
                "status": event.status(),
                "message": message,
            },
            "critical": true,
            "user_context": {"user_id": user_id, "request_id": ids.request_id},
            "timestamp": timestamp(),
        }),
    }
    .to_string()
}

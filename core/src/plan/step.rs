//! The steps of a scenario, resolved: one type per kind, each holding exactly its settings (a
//! frame to send is JSON or text, a sequence is orders or a set, a connection opens with its
//! confirmations or is refused as expected).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::check::Matcher;
use super::load::Pause;

/// One step of a scenario.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Open the WebSocket.
    WsConnect(WsConnect),
    /// Send a frame.
    WsSend(WsSend),
    /// Wait for one frame that matches.
    WsExpect(WsExpect),
    /// Wait for a whole event sequence.
    WsExpectSequence(WsExpectSequence),
    /// WebSocket ping control frame, wait for the pong.
    WsPing(WsPing),
    /// Close the WebSocket.
    WsClose(WsClose),
    /// One HTTP request.
    Http(Http),
    /// Pause.
    Sleep(Sleep),
    /// Run nested steps several times.
    Repeat(Repeat),
}

impl Step {
    /// The kind's TOML key.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::WsConnect(_) => "ws_connect",
            Step::WsSend(_) => "ws_send",
            Step::WsExpect(_) => "ws_expect",
            Step::WsExpectSequence(_) => "ws_expect_sequence",
            Step::WsPing(_) => "ws_ping",
            Step::WsClose(_) => "ws_close",
            Step::Http(_) => "http",
            Step::Sleep(_) => "sleep",
            Step::Repeat(_) => "repeat",
        }
    }

    /// The step's own name, if the plan gave one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Step::WsConnect(s) => s.name.as_deref(),
            Step::WsSend(s) => s.name.as_deref(),
            Step::WsExpect(s) => s.name.as_deref(),
            Step::WsExpectSequence(s) => s.name.as_deref(),
            Step::WsPing(s) => s.name.as_deref(),
            Step::WsClose(s) => s.name.as_deref(),
            Step::Http(s) => s.name.as_deref(),
            Step::Sleep(s) => s.name.as_deref(),
            Step::Repeat(s) => s.name.as_deref(),
        }
    }
}

pub(super) fn default_step_timeout() -> Duration {
    Duration::from_secs(10)
}

/// What a `ws_connect` expects when the server must refuse.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectRejection {
    /// HTTP status of a refused handshake (`403`).
    #[serde(default)]
    pub status: Option<u16>,
    /// Close code after an accepted upgrade (`1008`).
    #[serde(default)]
    pub close_code: Option<u16>,
}

/// `ws_ping`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsPing {
    /// Step name (default `ws_ping`).
    #[serde(default)]
    pub name: Option<String>,
    /// Bound on the pong.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// `ws_close`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsClose {
    /// Step name (default `ws_close`).
    #[serde(default)]
    pub name: Option<String>,
    /// Close code sent.
    #[serde(default = "default_close_code")]
    pub code: u16,
    /// Close reason sent.
    #[serde(default)]
    pub reason: String,
    /// Bound on the server's close reply.
    #[serde(default = "default_close_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

fn default_close_code() -> u16 {
    1000
}
fn default_close_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `sleep`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    /// Step name (default `sleep`).
    #[serde(default)]
    pub name: Option<String>,
    /// `"1s"` or `{ min = "1s", max = "2s" }`.
    pub duration: Pause,
}

/// `ws_connect`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct WsConnect {
    /// Step name (default `ws_connect`).
    pub name: Option<String>,
    /// Path replacing the target's WebSocket path (`/ws/test`).
    pub path: Option<String>,
    /// Query parameters (values are templates).
    pub query: BTreeMap<String, String>,
    /// Extra upgrade headers (values are templates).
    pub headers: BTreeMap<String, String>,
    /// Send the VU's token (default true when `[auth]` exists).
    pub auth: Option<bool>,
    /// Whether the connection must open (and with what confirmation) or be refused.
    pub outcome: ConnectOutcome,
    /// Bound on the confirmation (or rejection) after the upgrade.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// What a `ws_connect` must end in.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectOutcome {
    /// The connection opens; any one of these frames (none: no frame) must arrive first.
    Open {
        /// The confirmation frames, any one of which will do.
        confirmation: Vec<Matcher>,
    },
    /// The server must refuse it.
    Refused(ExpectRejection),
}

/// `ws_send`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct WsSend {
    /// Step name (default `ws_send`).
    pub name: Option<String>,
    /// The frame.
    pub payload: Payload,
    /// Name of the instant the frame left, for event latencies (default `send`).
    pub mark: Option<String>,
}

/// A frame or a body to send.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// JSON (string values are templates).
    Json(Value),
    /// Raw text (a template).
    Text(String),
}

/// `ws_expect`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct WsExpect {
    /// Step name (default `ws_expect`, or the expected `type`).
    pub name: Option<String>,
    /// Shorthand for a matcher `{ pointer = "/type", equals = ... }`.
    pub frame_type: Option<String>,
    /// Every matcher must hold (with `frame_type`, at least one of the two is given).
    pub matchers: Vec<Matcher>,
    /// Bound on the wait.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Latency is measured from this mark (default: the last `ws_send`).
    pub since: Option<String>,
    /// Variables to capture: `{ run_id = "/run_id" }`.
    pub capture: BTreeMap<String, String>,
    /// The step may never be reached in a run without making the verdict an error.
    pub optional: bool,
}

/// `ws_expect_sequence`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct WsExpectSequence {
    /// Step name (default `ws_expect_sequence`).
    pub name: Option<String>,
    /// Where a frame's event type is.
    pub type_pointer: String,
    /// The events expected.
    pub expected: Expected,
    /// Types skipped entirely (`pong`, `heartbeat`).
    pub ignore: Vec<String>,
    /// Types that end the sequence (default: the last type of each order, or the whole set).
    pub terminal: Vec<String>,
    /// Types that end the sequence as a failure (`agent_error`, `agent_failed`).
    pub error_types: Vec<String>,
    /// Bound on the whole sequence.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Bound on the wait between two events.
    #[serde(with = "humantime_serde::option")]
    #[schemars(with = "Option<String>")]
    pub gap_timeout: Option<Duration>,
    /// Event latencies are measured from this mark (default: the last `ws_send`).
    pub since: Option<String>,
    /// Variables to capture from the first event: `{ run_id = "/run_id" }`.
    pub capture: BTreeMap<String, String>,
    /// The step may never be reached in a run without making the verdict an error.
    pub optional: bool,
}

/// The events a sequence expects.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// The received types must equal one of these orders.
    Orders(Vec<Vec<String>>),
    /// Each of these types must arrive exactly once, in any order.
    Set(Vec<String>),
}

impl Expected {
    /// Every type expected, orders flattened, in order of first appearance (duplicates kept).
    pub fn types(&self) -> Vec<&String> {
        match self {
            Expected::Orders(orders) => orders.iter().flatten().collect(),
            Expected::Set(set) => set.iter().collect(),
        }
    }
}

/// `http`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct Http {
    /// Step name (default `<METHOD> <path>`).
    pub name: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path below the base URL, or an absolute URL (a template).
    pub path: String,
    /// Extra headers (values are templates).
    pub headers: BTreeMap<String, String>,
    /// Send `Authorization: Bearer <token>`.
    pub auth: bool,
    /// The body, if any.
    pub body: Option<Payload>,
    /// Accepted statuses (default: any 2xx).
    pub expect_status: Vec<u16>,
    /// The body must be JSON.
    pub expect_json: bool,
    /// Checks on the JSON body; each must hold.
    pub matchers: Vec<Matcher>,
    /// Variables to capture from the JSON body.
    pub capture: BTreeMap<String, String>,
    /// Bound on the whole request.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// `repeat`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
pub struct Repeat {
    /// Step name (default `repeat`).
    pub name: Option<String>,
    /// How many times.
    pub count: u32,
    /// The steps repeated.
    pub steps: Vec<Step>,
}

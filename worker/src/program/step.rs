//! A compiled step: what each step kind needs at run time, one struct per kind, so a handler
//! takes exactly the step it handles.

use std::time::Duration;

use gauntlet_core::plan::{ExpectRejection, Pause};
use gauntlet_core::template::Template;

use crate::matcher::CompiledMatcher;
use crate::recorder::{CheckId, MetricId};
use crate::render::JsonTemplate;
use crate::sequence::SequenceCheck;

/// A compiled step.
#[derive(Debug)]
pub struct CompiledStep {
    /// Display name, unique in its scenario.
    pub name: String,
    /// `step.<scenario>.<name>`.
    pub metric: MetricId,
    /// `<scenario>/<name>`, for steps that check something.
    pub check: CheckId,
    /// What it does.
    pub kind: StepKind,
}

/// What a compiled step does.
#[derive(Debug)]
pub enum StepKind {
    /// `ws_connect`.
    Connect(ConnectStep),
    /// `ws_send`.
    Send(SendStep),
    /// `ws_expect`.
    Expect(ExpectStep),
    /// `ws_expect_sequence`.
    Sequence(SequenceStep),
    /// `ws_ping`.
    Ping(PingStep),
    /// `ws_close`.
    Close(CloseStep),
    /// `http` (boxed: the largest kind, and a rare one).
    Http(Box<HttpStep>),
    /// `sleep`.
    Sleep(Pause),
    /// `repeat`.
    Repeat(RepeatStep),
}

/// A compiled `ws_connect` step.
#[derive(Debug)]
pub struct ConnectStep {
    /// Path override.
    pub path: Option<String>,
    /// Query parameters.
    pub query: Vec<(String, Template)>,
    /// Extra headers.
    pub headers: Vec<(String, Template)>,
    /// Send the token.
    pub auth: bool,
    /// Any-of confirmation matchers.
    pub confirmation: Vec<CompiledMatcher>,
    /// Expected refusal.
    pub rejection: Option<ExpectRejection>,
    /// Bound after the upgrade.
    pub timeout: Duration,
}

/// A compiled `ws_send` step.
#[derive(Debug)]
pub struct SendStep {
    /// The frame.
    pub frame: Frame,
    /// Mark index.
    pub mark: usize,
}

/// A compiled `ws_expect` step.
#[derive(Debug)]
pub struct ExpectStep {
    /// All must match.
    pub matchers: Vec<CompiledMatcher>,
    /// Bound.
    pub timeout: Duration,
    /// Mark latency counts from (`None`: the last send).
    pub since: Option<usize>,
    /// Captures.
    pub capture: Vec<(String, String)>,
    /// `event.<scenario>.<name>`.
    pub event_metric: MetricId,
}

/// A compiled `ws_expect_sequence` step.
#[derive(Debug)]
pub struct SequenceStep {
    /// The rules.
    pub check: SequenceCheck,
    /// Where the type is.
    pub type_pointer: String,
    /// Whole bound.
    pub timeout: Duration,
    /// Gap bound.
    pub gap_timeout: Option<Duration>,
    /// Mark latency counts from.
    pub since: Option<usize>,
    /// Captures (from the first expected event).
    pub capture: Vec<(String, String)>,
    /// `event.<scenario>.<type>` by type index.
    pub event_metrics: Vec<MetricId>,
}

/// A compiled `ws_ping` step.
#[derive(Debug)]
pub struct PingStep {
    /// Bound.
    pub timeout: Duration,
}

/// A compiled `ws_close` step.
#[derive(Debug)]
pub struct CloseStep {
    /// Code.
    pub code: u16,
    /// Reason.
    pub reason: String,
    /// Bound on the reply.
    pub timeout: Duration,
}

/// A compiled `repeat` step.
#[derive(Debug)]
pub struct RepeatStep {
    /// Times.
    pub count: u32,
    /// Steps.
    pub steps: Vec<CompiledStep>,
}

/// A frame to send.
#[derive(Debug)]
pub enum Frame {
    /// JSON.
    Json(JsonTemplate),
    /// Raw text.
    Text(Template),
}

/// A compiled `http` step.
#[derive(Debug)]
pub struct HttpStep {
    /// Method.
    pub method: reqwest::Method,
    /// Path or URL.
    pub path: Template,
    /// Headers.
    pub headers: Vec<(String, Template)>,
    /// Bearer token.
    pub auth: bool,
    /// JSON body.
    pub json: Option<JsonTemplate>,
    /// Raw body.
    pub body: Option<Template>,
    /// Accepted statuses (empty: 2xx).
    pub expect_status: Vec<u16>,
    /// Body must be JSON.
    pub expect_json: bool,
    /// Checks on the body.
    pub matchers: Vec<CompiledMatcher>,
    /// Captures.
    pub capture: Vec<(String, String)>,
    /// Bound.
    pub timeout: Duration,
}

//! The plan as its TOML file writes it: the shapes `serde` reads, with every field a plan may
//! set. `validate` checks them (every problem, located) and [`PlanSpec::resolve`]
//! turns a valid one into the typed [`Plan`] that travels to workers.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::AuthSpec;
use super::check::{ClassifierSpec, IsolationCheck, MatcherSpec};
use super::load::LoadSpec;
use super::step::{
    ConnectOutcome, ExpectRejection, Expected, Payload, Sleep, Step, WsClose, WsPing,
    default_step_timeout,
};
use super::target::Target;
use super::{Fleet, Plan, Scenario, step};
use crate::thresholds::ThresholdSpec;

/// A whole plan as the file writes it: what `validate` checks, before it is resolved into a
/// [`Plan`].
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    /// Short name; runs of the same plan are compared by it.
    pub name: String,
    /// What the plan is for.
    #[serde(default)]
    pub description: String,
    /// Where to send the load.
    #[serde(default)]
    pub target: Target,
    /// JWT minting; no `[auth]` sends no token.
    #[serde(default)]
    pub auth: Option<AuthSpec>,
    /// How many sessions, how fast.
    pub load: LoadSpec,
    /// What a session does.
    #[serde(default)]
    pub scenarios: Vec<ScenarioSpec>,
    /// Fields of received frames that must belong to this VU.
    #[serde(default)]
    pub isolation: Vec<IsolationCheck>,
    /// Plan-specific failure categories, tried before the built-in ones.
    #[serde(default)]
    pub classifiers: Vec<ClassifierSpec>,
    /// Pass/fail rules judged by the coordinator; none means "no session may fail".
    #[serde(default)]
    pub thresholds: Vec<ThresholdSpec>,
    /// How the fleet runs this plan.
    #[serde(default)]
    pub fleet: Fleet,
}

/// A scenario as written.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// Name (unique in the plan; used in metric names).
    pub name: String,
    /// Relative share of sessions.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Variables rendered at session start (`thread = "t-{vu}-{iteration}"`), usable as
    /// `{thread}` in later templates.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// What the session does, in order.
    pub steps: Vec<StepSpec>,
}

fn default_weight() -> u32 {
    1
}

/// One step as written. In TOML the table has a single key naming the kind:
/// `{ ws_send = { ... } }`; a table with two kinds, none or an unknown one is refused naming
/// them and the kinds there are ([`StepSpec::KINDS`]).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepSpec {
    /// Open the WebSocket.
    WsConnect(WsConnectSpec),
    /// Send a frame.
    WsSend(WsSendSpec),
    /// Wait for one frame that matches.
    WsExpect(WsExpectSpec),
    /// Wait for a whole event sequence.
    WsExpectSequence(WsExpectSequenceSpec),
    /// WebSocket ping control frame, wait for the pong.
    WsPing(WsPing),
    /// Close the WebSocket.
    WsClose(WsClose),
    /// One HTTP request.
    Http(HttpSpec),
    /// Pause.
    Sleep(Sleep),
    /// Run nested steps several times.
    Repeat(RepeatSpec),
}

impl<'de> Deserialize<'de> for StepSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StepSpec, D::Error> {
        d.deserialize_map(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> serde::de::Visitor<'de> for StepVisitor {
    type Value = StepSpec;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a step: a table with one key naming its kind ({})",
            StepSpec::KINDS.join(", ")
        )
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StepSpec, A::Error> {
        use serde::de::Error as _;
        let kinds = || StepSpec::KINDS.join(", ");
        let Some(kind) = map.next_key::<String>()? else {
            return Err(A::Error::custom(format!(
                "a step needs a kind: one of {}",
                kinds()
            )));
        };
        let step = match kind.as_str() {
            "ws_connect" => StepSpec::WsConnect(map.next_value()?),
            "ws_send" => StepSpec::WsSend(map.next_value()?),
            "ws_expect" => StepSpec::WsExpect(map.next_value()?),
            "ws_expect_sequence" => StepSpec::WsExpectSequence(map.next_value()?),
            "ws_ping" => StepSpec::WsPing(map.next_value()?),
            "ws_close" => StepSpec::WsClose(map.next_value()?),
            "http" => StepSpec::Http(map.next_value()?),
            "sleep" => StepSpec::Sleep(map.next_value()?),
            "repeat" => StepSpec::Repeat(map.next_value()?),
            other => {
                return Err(A::Error::custom(format!(
                    "unknown step kind `{other}`: the kinds are {}",
                    kinds()
                )));
            }
        };
        if let Some(second) = map.next_key::<String>()? {
            return Err(A::Error::custom(format!(
                "a step has exactly one kind, this one has `{kind}` and `{second}`: write each as its own step ({{ {kind} = ... }}, {{ {second} = ... }}); the kinds are {}",
                kinds()
            )));
        }
        Ok(step)
    }
}

impl StepSpec {
    /// Every kind's TOML key.
    pub const KINDS: [&'static str; 9] = [
        "ws_connect",
        "ws_send",
        "ws_expect",
        "ws_expect_sequence",
        "ws_ping",
        "ws_close",
        "http",
        "sleep",
        "repeat",
    ];

    /// The kind's TOML key.
    pub fn kind(&self) -> &'static str {
        match self {
            StepSpec::WsConnect(_) => "ws_connect",
            StepSpec::WsSend(_) => "ws_send",
            StepSpec::WsExpect(_) => "ws_expect",
            StepSpec::WsExpectSequence(_) => "ws_expect_sequence",
            StepSpec::WsPing(_) => "ws_ping",
            StepSpec::WsClose(_) => "ws_close",
            StepSpec::Http(_) => "http",
            StepSpec::Sleep(_) => "sleep",
            StepSpec::Repeat(_) => "repeat",
        }
    }

    /// The step's own name, if the plan gave one.
    pub fn name(&self) -> Option<&str> {
        match self {
            StepSpec::WsConnect(s) => s.name.as_deref(),
            StepSpec::WsSend(s) => s.name.as_deref(),
            StepSpec::WsExpect(s) => s.name.as_deref(),
            StepSpec::WsExpectSequence(s) => s.name.as_deref(),
            StepSpec::WsPing(s) => s.name.as_deref(),
            StepSpec::WsClose(s) => s.name.as_deref(),
            StepSpec::Http(s) => s.name.as_deref(),
            StepSpec::Sleep(s) => s.name.as_deref(),
            StepSpec::Repeat(s) => s.name.as_deref(),
        }
    }
}

/// `ws_connect`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsConnectSpec {
    /// Step name (default `ws_connect`).
    #[serde(default)]
    pub name: Option<String>,
    /// Path replacing the target's WebSocket path (`/ws/test`).
    #[serde(default)]
    pub path: Option<String>,
    /// Query parameters (values are templates).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Extra upgrade headers (values are templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Send the VU's token (default true when `[auth]` exists).
    #[serde(default)]
    pub auth: Option<bool>,
    /// Frame(s) confirming the connection: any one of them must arrive first.
    #[serde(default)]
    pub confirmation: Vec<MatcherSpec>,
    /// Expect the server to refuse instead of opening.
    #[serde(default)]
    pub expect_rejection: Option<ExpectRejection>,
    /// Bound on the confirmation (or rejection) after the upgrade.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

/// `ws_send`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsSendSpec {
    /// Step name (default `ws_send`).
    #[serde(default)]
    pub name: Option<String>,
    /// A JSON frame (string values are templates).
    #[serde(default)]
    pub json: Option<Value>,
    /// A raw text frame (a template).
    #[serde(default)]
    pub text: Option<String>,
    /// Name of the instant the frame left, for event latencies (default `send`).
    #[serde(default)]
    pub mark: Option<String>,
}

/// `ws_expect`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsExpectSpec {
    /// Step name (default `ws_expect`, or the expected `type`).
    #[serde(default)]
    pub name: Option<String>,
    /// Shorthand for a matcher `{ pointer = "/type", equals = ... }`.
    #[serde(default, rename = "type")]
    pub frame_type: Option<String>,
    /// Every matcher must hold.
    #[serde(default, rename = "match")]
    pub matchers: Vec<MatcherSpec>,
    /// Bound on the wait.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Latency is measured from this mark (default: the last `ws_send`).
    #[serde(default)]
    pub since: Option<String>,
    /// Variables to capture: `{ run_id = "/run_id" }`.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// The step may never be reached in a run without making the verdict an error.
    #[serde(default)]
    pub optional: bool,
}

/// `ws_expect_sequence`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsExpectSequenceSpec {
    /// Step name (default `ws_expect_sequence`).
    #[serde(default)]
    pub name: Option<String>,
    /// Where a frame's event type is.
    #[serde(default = "default_type_pointer")]
    pub type_pointer: String,
    /// Allowed orders; the received types must equal one of them.
    #[serde(default)]
    pub orders: Vec<Vec<String>>,
    /// Or: types that must each arrive exactly once, in any order.
    #[serde(default)]
    pub set: Vec<String>,
    /// Types skipped entirely (`pong`, `heartbeat`).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Types that end the sequence (default: the last type of each order, or the whole set).
    #[serde(default)]
    pub terminal: Vec<String>,
    /// Types that end the sequence as a failure (`agent_error`, `agent_failed`).
    #[serde(default)]
    pub error_types: Vec<String>,
    /// Bound on the whole sequence.
    #[serde(default = "default_sequence_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Bound on the wait between two events.
    #[serde(default, with = "humantime_serde::option")]
    #[schemars(with = "Option<String>")]
    pub gap_timeout: Option<Duration>,
    /// Event latencies are measured from this mark (default: the last `ws_send`).
    #[serde(default)]
    pub since: Option<String>,
    /// Variables to capture from the first event: `{ run_id = "/run_id" }`.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// The step may never be reached in a run without making the verdict an error.
    #[serde(default)]
    pub optional: bool,
}

fn default_type_pointer() -> String {
    "/type".into()
}
fn default_sequence_timeout() -> Duration {
    Duration::from_secs(15)
}

/// `http`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// Step name (default `<METHOD> <path>`).
    #[serde(default)]
    pub name: Option<String>,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path below the base URL, or an absolute URL (a template).
    pub path: String,
    /// Extra headers (values are templates).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Send `Authorization: Bearer <token>`.
    #[serde(default)]
    pub auth: bool,
    /// A JSON body (string values are templates).
    #[serde(default)]
    pub json: Option<Value>,
    /// A raw body (a template).
    #[serde(default)]
    pub body: Option<String>,
    /// Accepted statuses (default: any 2xx).
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// The body must be JSON.
    #[serde(default)]
    pub expect_json: bool,
    /// Checks on the JSON body; each must hold.
    #[serde(default, rename = "match")]
    pub matchers: Vec<MatcherSpec>,
    /// Variables to capture from the JSON body.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// Bound on the whole request.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

fn default_method() -> String {
    "GET".into()
}

/// `repeat`.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatSpec {
    /// Step name (default `repeat`).
    #[serde(default)]
    pub name: Option<String>,
    /// How many times.
    pub count: u32,
    /// The steps repeated.
    pub steps: Vec<StepSpec>,
}

impl PlanSpec {
    /// The typed plan. Validation has found no problem, so every "exactly one of" holds; a
    /// plan that somehow breaks one resolves to `None` (never a panic).
    pub fn resolve(&self) -> Option<Plan> {
        Some(Plan {
            name: self.name.clone(),
            description: self.description.clone(),
            target: self.target.clone(),
            auth: match &self.auth {
                Some(a) => Some(a.resolve()?),
                None => None,
            },
            load: self.load.resolve(),
            scenarios: self
                .scenarios
                .iter()
                .map(ScenarioSpec::resolve)
                .collect::<Option<_>>()?,
            isolation: self.isolation.clone(),
            classifiers: self
                .classifiers
                .iter()
                .map(ClassifierSpec::resolve)
                .collect(),
            thresholds: self
                .thresholds
                .iter()
                .map(ThresholdSpec::resolve)
                .collect::<Option<_>>()?,
            fleet: self.fleet.clone(),
            overrides: Vec::new(),
        })
    }
}

impl ScenarioSpec {
    fn resolve(&self) -> Option<Scenario> {
        Some(Scenario {
            name: self.name.clone(),
            weight: self.weight,
            vars: self.vars.clone(),
            steps: resolve_steps(&self.steps)?,
        })
    }
}

fn resolve_steps(steps: &[StepSpec]) -> Option<Vec<Step>> {
    steps.iter().map(StepSpec::resolve).collect()
}

fn matchers(list: &[MatcherSpec]) -> Vec<super::check::Matcher> {
    list.iter().map(MatcherSpec::resolve).collect()
}

impl StepSpec {
    fn resolve(&self) -> Option<Step> {
        Some(match self {
            StepSpec::WsConnect(s) => Step::WsConnect(step::WsConnect {
                name: s.name.clone(),
                path: s.path.clone(),
                query: s.query.clone(),
                headers: s.headers.clone(),
                auth: s.auth,
                outcome: match &s.expect_rejection {
                    Some(r) => ConnectOutcome::Refused(r.clone()),
                    None => ConnectOutcome::Open {
                        confirmation: matchers(&s.confirmation),
                    },
                },
                timeout: s.timeout,
            }),
            StepSpec::WsSend(s) => Step::WsSend(step::WsSend {
                name: s.name.clone(),
                payload: match (&s.json, &s.text) {
                    (Some(json), None) => Payload::Json(json.clone()),
                    (None, Some(text)) => Payload::Text(text.clone()),
                    _ => return None,
                },
                mark: s.mark.clone(),
            }),
            StepSpec::WsExpect(s) => Step::WsExpect(step::WsExpect {
                name: s.name.clone(),
                frame_type: s.frame_type.clone(),
                matchers: matchers(&s.matchers),
                timeout: s.timeout,
                since: s.since.clone(),
                capture: s.capture.clone(),
                optional: s.optional,
            }),
            StepSpec::WsExpectSequence(s) => Step::WsExpectSequence(step::WsExpectSequence {
                name: s.name.clone(),
                type_pointer: s.type_pointer.clone(),
                expected: match (s.orders.is_empty(), s.set.is_empty()) {
                    (false, true) => Expected::Orders(s.orders.clone()),
                    (true, false) => Expected::Set(s.set.clone()),
                    _ => return None,
                },
                ignore: s.ignore.clone(),
                terminal: s.terminal.clone(),
                error_types: s.error_types.clone(),
                timeout: s.timeout,
                gap_timeout: s.gap_timeout,
                since: s.since.clone(),
                capture: s.capture.clone(),
                optional: s.optional,
            }),
            StepSpec::WsPing(s) => Step::WsPing(s.clone()),
            StepSpec::WsClose(s) => Step::WsClose(s.clone()),
            StepSpec::Http(s) => Step::Http(step::Http {
                name: s.name.clone(),
                method: s.method.clone(),
                path: s.path.clone(),
                headers: s.headers.clone(),
                auth: s.auth,
                body: match (&s.json, &s.body) {
                    (Some(json), None) => Some(Payload::Json(json.clone())),
                    (None, Some(body)) => Some(Payload::Text(body.clone())),
                    (None, None) => None,
                    _ => return None,
                },
                expect_status: s.expect_status.clone(),
                expect_json: s.expect_json,
                matchers: matchers(&s.matchers),
                capture: s.capture.clone(),
                timeout: s.timeout,
            }),
            StepSpec::Sleep(s) => Step::Sleep(s.clone()),
            StepSpec::Repeat(s) => Step::Repeat(step::Repeat {
                name: s.name.clone(),
                count: s.count,
                steps: resolve_steps(&s.steps)?,
            }),
        })
    }
}

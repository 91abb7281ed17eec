//! The plan: what a run does (target, auth, load model, scenarios and their steps, isolation
//! checks, classifiers), parsed from TOML and validated with every error located at
//! `file:line:col: field`. `docs/plans.md` documents each field; keep the two in step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config_file::{ConfigError, Located, locate_path, parse};
use crate::template::{Builtin, Template};

/// A whole plan.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
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
    pub auth: Option<Auth>,
    /// How many sessions, how fast.
    pub load: Load,
    /// What a session does.
    #[serde(default)]
    pub scenarios: Vec<Scenario>,
    /// Fields of received frames that must belong to this VU.
    #[serde(default)]
    pub isolation: Vec<IsolationCheck>,
    /// Plan-specific failure categories, tried before the built-in ones.
    #[serde(default)]
    pub classifiers: Vec<Classifier>,
    /// Pass/fail rules judged by the coordinator; none means "no session may fail".
    #[serde(default)]
    pub thresholds: Vec<crate::thresholds::Threshold>,
    /// How the fleet runs this plan.
    #[serde(default)]
    pub fleet: Fleet,
}

/// Fleet settings of a plan (the command line can override them).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// Wait for this many workers before starting.
    #[serde(default)]
    pub min_workers: Option<u32>,
    /// How long to wait for them.
    #[serde(default, with = "humantime_serde::option")]
    pub min_workers_timeout: Option<Duration>,
    /// What a lost worker's share becomes.
    #[serde(default)]
    pub on_worker_loss: WorkerLoss,
    /// Snapshot interval.
    #[serde(default, with = "humantime_serde::option")]
    pub interval: Option<Duration>,
    /// The smallest fraction of the planned load a run may deliver and still pass (default
    /// 1.0: a run that delivered less than asked, through lost workers, a cancel or an abort,
    /// is an error, never a pass).
    #[serde(default)]
    pub min_delivered: Option<f64>,
    /// How many sessions of unknown outcome (running on a worker that was lost, so their
    /// result never arrived) a run may have and still pass (default 0).
    #[serde(default)]
    pub max_unknown: Option<u64>,
    /// Hard bound on the whole run from its start; past it the run is stopped with verdict
    /// error (default: the planned duration plus graceful stop plus 30 s, or 1 hour for a plan
    /// without a time bound such as iterations only).
    #[serde(default, with = "humantime_serde::option")]
    pub deadline: Option<Duration>,
}

/// What happens to a lost worker's share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLoss {
    /// The survivors take it over for the rest of the run.
    #[default]
    Reassign,
    /// The run goes on without it (the report shows the load delivered).
    Continue,
    /// The run stops with verdict error.
    Abort,
}

/// The service under test.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// HTTP base URL (`http://127.0.0.1:8080`); `--target` / `GAUNTLET_TARGET` override it.
    #[serde(default)]
    pub base_url: Option<String>,
    /// WebSocket URL; by default `base_url` with `ws(s)://` and `ws_path`.
    #[serde(default)]
    pub ws_url: Option<String>,
    /// Path of the WebSocket endpoint when `ws_url` is derived from `base_url`.
    #[serde(default = "default_ws_path")]
    pub ws_path: String,
    /// Headers sent with every HTTP request and WebSocket upgrade.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS settings for `https://` and `wss://`.
    #[serde(default)]
    pub tls: Tls,
    /// Bound on TCP connect + TLS + upgrade of one connection.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The largest HTTP response body a session reads, bytes; a larger one fails the session
    /// as `response_too_large` (a hostile or broken target cannot exhaust the worker).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// The largest WebSocket message (and frame) a session accepts, bytes; a larger one fails
    /// the session as `response_too_large`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            base_url: None,
            ws_url: None,
            ws_path: default_ws_path(),
            headers: BTreeMap::new(),
            tls: Tls::default(),
            connect_timeout: default_connect_timeout(),
            max_response_bytes: default_max_response_bytes(),
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

/// 256 KiB: far above an agent event, small enough that 1,000 sessions each holding a message
/// just under it cost a worker about 256 MiB (BENCHMARKS.md, hostile targets).
fn default_max_message_bytes() -> u64 {
    256 << 10
}

/// 256 KiB: far above an API answer of a chat backend; a session reads a body in chunks and
/// keeps at most this.
fn default_max_response_bytes() -> u64 {
    256 << 10
}

fn default_ws_path() -> String {
    "/ws".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

/// TLS options.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Accept any server certificate (staging with self-signed certificates only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Extra CA certificates (PEM) trusted besides the bundled web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// JWT signing algorithm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret.
    #[default]
    HS256,
    /// RSA PKCS#1 v1.5 SHA-256 with a PEM private key.
    RS256,
    /// ECDSA P-256 SHA-256 with a PEM private key.
    ES256,
}

/// Where the token travels on the WebSocket upgrade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// `Authorization: Bearer <jwt>`.
    #[default]
    Header,
    /// A `Sec-WebSocket-Protocol` entry `<prefix><base64url(jwt)>`.
    Subprotocol,
    /// `?<query_param>=<jwt>`.
    Query,
}

/// When a VU gets a new token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPer {
    /// A fresh token for every session.
    #[default]
    Session,
    /// One token per VU for the whole run (re-minted when it nears expiry); in the open model
    /// one per subject on each worker.
    Vu,
}

/// JWT minting.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Signing algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Environment variable holding the HS256 secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the HS256 secret (trailing newline ignored).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the RS256/ES256 private key (PEM).
    #[serde(default)]
    pub key_env: Option<String>,
    /// File holding the RS256/ES256 private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Where the token goes on the upgrade.
    #[serde(default)]
    pub placement: Placement,
    /// Query parameter name for `placement = "query"`.
    #[serde(default = "default_query_param")]
    pub query_param: String,
    /// Subprotocol prefix for `placement = "subprotocol"`.
    #[serde(default = "default_subprotocol_prefix")]
    pub subprotocol_prefix: String,
    /// Token lifetime (`exp - iat`).
    #[serde(default = "default_lifetime", with = "humantime_serde")]
    pub lifetime: Duration,
    /// A fresh token per session or per VU.
    #[serde(default)]
    pub token_per: TokenPer,
    /// The JWT subject of subject number `{subject_index}`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// How many distinct subjects the sessions map onto: closed model, VU `v` gets subject
    /// `v % pool`; open model, arrival `k` (fleet-wide) gets subject `k % pool`. Unset gives
    /// every VU its own subject (open model: `k % max_vus`).
    #[serde(default)]
    pub subject_pool: Option<u64>,
    /// Claims; string values are templates. `sub`, `iat`, `exp` and `jti` are added unless set.
    #[serde(default)]
    pub claims: BTreeMap<String, Value>,
}

fn default_query_param() -> String {
    "token".into()
}
fn default_subprotocol_prefix() -> String {
    "jwt.".into()
}
fn default_lifetime() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_subject() -> String {
    "gauntlet-user-{subject_index}".into()
}

/// Closed or open load model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// A fixed (or ramping) number of VUs, each running sessions back to back.
    #[default]
    Closed,
    /// Sessions arrive at a rate, whatever the target's speed.
    Open,
}

/// One ramp: reach `target` (VUs, or sessions/s in the open model) linearly over `duration`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Length of the ramp.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Value at the end of the ramp.
    pub target: f64,
}

/// A fixed or uniformly random pause.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Pause {
    /// `"1s"`.
    Fixed(#[serde(with = "humantime_serde")] Duration),
    /// `{ min = "1s", max = "3s" }`.
    Uniform {
        /// Shortest.
        #[serde(with = "humantime_serde")]
        min: Duration,
        /// Longest.
        #[serde(with = "humantime_serde")]
        max: Duration,
    },
}

/// How much load, how fast.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// `closed` (VUs) or `open` (arrival rate).
    #[serde(default)]
    pub model: Model,
    /// Closed: VUs (the start value when `stages` ramp).
    #[serde(default)]
    pub vus: Option<u64>,
    /// Closed: sessions per VU, then the VU stops.
    #[serde(default)]
    pub iterations: Option<u64>,
    /// How long new sessions start.
    #[serde(default, with = "humantime_serde::option")]
    pub duration: Option<Duration>,
    /// Ramps of VUs (closed) or of the arrival rate (open), one after the other.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Time sessions still running at the end get to finish before they are interrupted.
    #[serde(default = "default_graceful_stop", with = "humantime_serde")]
    pub graceful_stop: Duration,
    /// Open: sessions per second (the start value when `stages` ramp).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Open: VUs available to run arrivals; an arrival finding none free is dropped (counted).
    #[serde(default)]
    pub max_vus: Option<u64>,
    /// Pause between two sessions of one VU (closed model).
    #[serde(default)]
    pub think_time: Option<Pause>,
}

fn default_graceful_stop() -> Duration {
    Duration::from_secs(10)
}

/// A named, weighted sequence of steps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
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
    pub steps: Vec<Step>,
}

fn default_weight() -> u32 {
    1
}

/// One step. In TOML the table has a single key naming the kind: `{ ws_send = { ... } }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
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

/// What a `ws_connect` expects when the server must refuse.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectRejection {
    /// HTTP status of a refused handshake (`403`).
    #[serde(default)]
    pub status: Option<u16>,
    /// Close code after an accepted upgrade (`1008`).
    #[serde(default)]
    pub close_code: Option<u16>,
}

/// `ws_connect`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsConnect {
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
    pub confirmation: Vec<Matcher>,
    /// Expect the server to refuse instead of opening.
    #[serde(default)]
    pub expect_rejection: Option<ExpectRejection>,
    /// Bound on the confirmation (or rejection) after the upgrade.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_step_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `ws_send`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsSend {
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

/// A check on one JSON value, found by JSON pointer (RFC 6901).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// Where (`/type`, `/data/event`); `""` is the whole frame.
    pub pointer: String,
    /// Equal to this value (strings are templates).
    #[serde(default)]
    pub equals: Option<Value>,
    /// A string matching this regex.
    #[serde(default)]
    pub regex: Option<String>,
    /// Present (`true`) or absent (`false`).
    #[serde(default)]
    pub exists: Option<bool>,
    /// Equal to one of these.
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
}

/// `ws_expect`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsExpect {
    /// Step name (default `ws_expect`, or the expected `type`).
    #[serde(default)]
    pub name: Option<String>,
    /// Shorthand for a matcher `{ pointer = "/type", equals = ... }`.
    #[serde(default, rename = "type")]
    pub frame_type: Option<String>,
    /// Every matcher must hold.
    #[serde(default, rename = "match")]
    pub matchers: Vec<Matcher>,
    /// Bound on the wait.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsExpectSequence {
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
    pub timeout: Duration,
    /// Bound on the wait between two events.
    #[serde(default, with = "humantime_serde::option")]
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

/// `ws_ping`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WsPing {
    /// Step name (default `ws_ping`).
    #[serde(default)]
    pub name: Option<String>,
    /// Bound on the pong.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// `ws_close`.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    pub timeout: Duration,
}

fn default_close_code() -> u16 {
    1000
}
fn default_close_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `http`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
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
    pub matchers: Vec<Matcher>,
    /// Variables to capture from the JSON body.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// Bound on the whole request.
    #[serde(default = "default_step_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_method() -> String {
    "GET".into()
}

/// `sleep`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    /// Step name (default `sleep`).
    #[serde(default)]
    pub name: Option<String>,
    /// `"1s"` or `{ min = "1s", max = "2s" }`.
    pub duration: Pause,
}

/// `repeat`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// Step name (default `repeat`).
    #[serde(default)]
    pub name: Option<String>,
    /// How many times.
    pub count: u32,
    /// The steps repeated.
    pub steps: Vec<Step>,
}

/// A field of received frames that must equal this VU's own value.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IsolationCheck {
    /// Name in reports (default: the pointer).
    #[serde(default)]
    pub name: Option<String>,
    /// Where (`/user_id`); frames without it are not checked.
    pub pointer: String,
    /// The VU's value (a template: `{subject}`, `{thread}`, `{run_id}`). Each variable it reads
    /// must be defined by some scenario; a frame is checked once every one of them is set.
    pub equals: String,
    /// A check that may never be evaluated in a run (its pointer may match no frame) without
    /// making the verdict an error.
    #[serde(default)]
    pub optional: bool,
}

/// Maps what a failure looked like to a plan-specific category; every condition given must
/// hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Classifier {
    /// Category name (`[a-z0-9_]+`).
    pub category: String,
    /// WebSocket close code.
    #[serde(default)]
    pub close_code: Option<u16>,
    /// Regex on the close reason.
    #[serde(default)]
    pub close_reason: Option<String>,
    /// `error_code` of an error frame.
    #[serde(default)]
    pub error_code: Option<String>,
    /// Regex on the raw text of the frame that failed the session.
    #[serde(default)]
    pub frame_regex: Option<String>,
    /// HTTP status (of a handshake or an `http` step).
    #[serde(default)]
    pub http_status: Option<u16>,
}

/// Values given on the command line that override the plan.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--target`: replaces `target.base_url`; the WebSocket URL follows it.
    pub target: Option<String>,
    /// `--ws-target`: replaces the WebSocket URL on its own.
    pub ws_target: Option<String>,
}

/// A plan that failed to load: every problem found, each located.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Unreadable or syntactically / structurally wrong.
    #[error(transparent)]
    File(#[from] ConfigError),
    /// Well-formed but wrong; one line per problem.
    #[error("{}", .0.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Located>),
}

impl Plan {
    /// Reads, parses and validates the plan at `path`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Plan, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Plan::from_text(&path.display().to_string(), &text, overrides)
    }

    /// Parses and validates `text`, naming it `file` in errors.
    pub fn from_text(file: &str, text: &str, overrides: &Overrides) -> Result<Plan, PlanError> {
        let mut plan: Plan = parse(file, text).map_err(ConfigError::from)?;
        plan.apply(overrides);
        let problems = plan.problems();
        if problems.is_empty() {
            Ok(plan)
        } else {
            Err(PlanError::Invalid(
                problems
                    .into_iter()
                    .map(|(path, msg)| locate_path(file, text, &path, msg))
                    .collect(),
            ))
        }
    }

    fn apply(&mut self, overrides: &Overrides) {
        if let Some(target) = &overrides.target {
            self.target.base_url = Some(target.clone());
            self.target.ws_url = None;
        }
        if let Some(ws) = &overrides.ws_target {
            self.target.ws_url = Some(ws.clone());
        }
    }

    /// The WebSocket URL: `ws_url`, or `base_url` with its scheme mapped and `ws_path`.
    pub fn ws_url(&self) -> Option<String> {
        if let Some(url) = &self.target.ws_url {
            return Some(url.clone());
        }
        let base = self.target.base_url.as_deref()?;
        let (scheme, rest) = base.split_once("://")?;
        let scheme = match scheme {
            "https" => "wss",
            _ => "ws",
        };
        Some(format!(
            "{scheme}://{}{}",
            rest.trim_end_matches('/'),
            self.target.ws_path
        ))
    }

    /// The closed model's largest VU count, or the open model's VU cap.
    pub fn max_vus(&self) -> u64 {
        let load = &self.load;
        match load.model {
            Model::Closed => load
                .stages
                .iter()
                .map(|s| s.target.max(0.0).ceil() as u64)
                .chain(load.vus)
                .max()
                .unwrap_or(0),
            Model::Open => load.max_vus.unwrap_or(0),
        }
    }

    /// Every semantic problem as `(path, message)`.
    fn problems(&self) -> Vec<(String, String)> {
        let mut p = Problems::default();
        // What templates applied to every session (target headers, isolation checks) may read.
        let everywhere = self.scenario_scope();
        self.check_target(&everywhere, &mut p);
        if let Some(auth) = &self.auth {
            check_auth(auth, &everywhere, &mut p);
        }
        self.check_load(&mut p);
        if self.scenarios.is_empty() {
            p.add(
                "scenarios",
                "a plan needs at least one [[scenarios]]".into(),
            );
        }
        let mut names = BTreeSet::new();
        for (i, scenario) in self.scenarios.iter().enumerate() {
            let at = format!("scenarios[{i}]");
            if !names.insert(scenario.name.as_str()) {
                p.add(
                    &format!("{at}.name"),
                    format!("scenario `{}` is defined twice", scenario.name),
                );
            }
            check_name(&scenario.name, &format!("{at}.name"), &mut p);
            if scenario.weight == 0 && self.scenarios.len() == 1 {
                p.add(
                    &format!("{at}.weight"),
                    "the only scenario needs a weight above 0".into(),
                );
            }
            let captured = captures_of(&scenario.steps, &format!("{at}.steps"));
            // Scenario vars are rendered at session start, in name order: each reads the
            // builtins and the vars before it.
            let mut scope = Scope::default();
            for (name, field) in &captured {
                scope.later.insert(
                    name.clone(),
                    format!(
                        "is captured by {field}, but scenario vars are rendered when the \
                         session starts, before any step"
                    ),
                );
            }
            for name in scenario.vars.keys() {
                scope.later.insert(
                    name.clone(),
                    "is a scenario var rendered after this one (vars are rendered in name \
                     order)"
                        .into(),
                );
            }
            for (name, value) in &scenario.vars {
                check_name(name, &format!("{at}.vars.{name}"), &mut p);
                scope.later.insert(
                    name.clone(),
                    "is this var itself (vars are rendered in name order)".into(),
                );
                p.template(value, &format!("{at}.vars.{name}"), &scope);
                scope.later.remove(name);
                scope.known.insert(name.clone());
            }
            // Steps read the vars and what earlier steps captured.
            for (name, field) in &captured {
                scope.later.insert(
                    name.clone(),
                    format!("is captured by {field}, after this template is rendered"),
                );
            }
            if scenario.steps.is_empty() {
                p.add(
                    &format!("{at}.steps"),
                    "a scenario needs at least one step".into(),
                );
            }
            let mut ws = WsState::default();
            check_steps(
                &scenario.steps,
                &format!("{at}.steps"),
                &mut scope,
                &mut ws,
                &mut p,
            );
        }
        if self.scenarios.iter().all(|s| s.weight == 0) && self.scenarios.len() > 1 {
            p.add(
                "scenarios",
                "every scenario has weight 0: nothing would run".into(),
            );
        }
        // Isolation values apply to every scenario: they may read any scenario's vars and
        // captures (a check is skipped in a session where its value is not set yet).
        for (i, check) in self.isolation.iter().enumerate() {
            let at = format!("isolation[{i}]");
            p.pointer(&check.pointer, &format!("{at}.pointer"));
            p.template(&check.equals, &format!("{at}.equals"), &everywhere);
        }
        for (i, t) in self.thresholds.iter().enumerate() {
            if let Err(msg) = t.check() {
                p.add(&format!("thresholds[{i}]"), msg);
            }
        }
        if let Some(d) = self.fleet.interval
            && d < Duration::from_millis(100)
        {
            p.add("fleet.interval", "must be at least 100ms".into());
        }
        if let Some(f) = self.fleet.min_delivered
            && !(0.0..=1.0).contains(&f)
        {
            p.add(
                "fleet.min_delivered",
                format!("must be a fraction between 0 and 1, not {f}"),
            );
        }
        if let Some(d) = self.fleet.deadline
            && d < Duration::from_secs(1)
        {
            p.add("fleet.deadline", "must be at least 1s".into());
        }
        for (i, c) in self.classifiers.iter().enumerate() {
            let at = format!("classifiers[{i}]");
            check_name(&c.category, &format!("{at}.category"), &mut p);
            if c.close_code.is_none()
                && c.close_reason.is_none()
                && c.error_code.is_none()
                && c.frame_regex.is_none()
                && c.http_status.is_none()
            {
                p.add(
                    &at,
                    "a classifier needs at least one of close_code, close_reason, error_code, \
                     frame_regex, http_status"
                        .into(),
                );
            }
            for (field, re) in [
                ("close_reason", &c.close_reason),
                ("frame_regex", &c.frame_regex),
            ] {
                if let Some(re) = re {
                    p.regex(re, &format!("{at}.{field}"));
                }
            }
        }
        p.0
    }

    /// What a template outside the scenarios, applied to every session (isolation checks,
    /// target headers), may read: the builtins and every scenario's vars and captures.
    fn scenario_scope(&self) -> Scope {
        let mut scope = Scope::default();
        for (i, scenario) in self.scenarios.iter().enumerate() {
            scope.known.extend(scenario.vars.keys().cloned());
            let captured = captures_of(&scenario.steps, &format!("scenarios[{i}].steps"));
            scope.known.extend(captured.into_keys());
        }
        scope
    }

    fn check_target(&self, everywhere: &Scope, p: &mut Problems) {
        match &self.target.base_url {
            None => p.add(
                "target.base_url",
                "no target: set target.base_url in the plan, or pass --target / GAUNTLET_TARGET"
                    .into(),
            ),
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    p.add(
                        "target.base_url",
                        format!("`{url}` must start with http:// or https://"),
                    );
                }
            }
        }
        if let Some(url) = &self.target.ws_url
            && !(url.starts_with("ws://") || url.starts_with("wss://"))
        {
            p.add(
                "target.ws_url",
                format!("`{url}` must start with ws:// or wss://"),
            );
        }
        if !self.target.ws_path.starts_with('/') {
            p.add("target.ws_path", "must start with `/`".into());
        }
        for (name, value) in &self.target.headers {
            p.template(value, &format!("target.headers.{name}"), everywhere);
        }
        if self.target.connect_timeout.is_zero() {
            p.add("target.connect_timeout", "must be above 0".into());
        }
        for (field, v) in [
            ("target.max_response_bytes", self.target.max_response_bytes),
            ("target.max_message_bytes", self.target.max_message_bytes),
        ] {
            if !(1..=(256 << 20)).contains(&v) {
                p.add(
                    field,
                    format!("must be between 1 and 268435456 (256 MiB), not {v}"),
                );
            }
        }
    }

    fn check_load(&self, p: &mut Problems) {
        let load = &self.load;
        for (i, stage) in load.stages.iter().enumerate() {
            if !(stage.target.is_finite() && stage.target >= 0.0) {
                p.add(
                    &format!("load.stages[{i}].target"),
                    "must be 0 or more".into(),
                );
            }
            if load.model == Model::Closed && stage.target.fract() != 0.0 {
                p.add(
                    &format!("load.stages[{i}].target"),
                    "closed-model stages count VUs: use a whole number".into(),
                );
            }
        }
        if !load.stages.is_empty() && load.duration.is_some() {
            p.add(
                "load.duration",
                "give either duration or stages (the stages' sum is the duration)".into(),
            );
        }
        if let Some(Pause::Uniform { min, max }) = load.think_time
            && min > max
        {
            p.add("load.think_time", "min is above max".into());
        }
        // Loads no fleet can run: each VU holds a connection, a task and its buffers, and the
        // coordinator numbers arrivals one by one.
        if self.max_vus() > MAX_VUS {
            let field = match load.model {
                Model::Closed if load.stages.is_empty() => "load.vus",
                Model::Closed => "load.stages",
                Model::Open => "load.max_vus",
            };
            p.add(
                field,
                format!(
                    "{} VUs cannot run: at most {MAX_VUS} (about 8 KiB of memory and an open file each, on some worker)",
                    self.max_vus()
                ),
            );
        }
        let peak_rate = load
            .stages
            .iter()
            .map(|s| s.target)
            .chain(load.rate)
            .fold(0.0f64, f64::max);
        if load.model == Model::Open && peak_rate > MAX_RATE {
            p.add(
                if load.stages.is_empty() {
                    "load.rate"
                } else {
                    "load.stages"
                },
                format!("{peak_rate} sessions per second cannot run: at most {MAX_RATE}"),
            );
        }
        match load.model {
            Model::Closed => {
                if load.vus.is_none() && load.stages.is_empty() {
                    p.add("load.vus", "the closed model needs vus (or stages)".into());
                }
                if load.iterations.is_none() && load.duration.is_none() && load.stages.is_empty() {
                    p.add(
                        "load",
                        "the closed model needs iterations, duration or stages to end".into(),
                    );
                }
                if load.iterations == Some(0) {
                    p.add("load.iterations", "must be at least 1".into());
                }
                if self.max_vus() == 0 {
                    p.add(
                        "load.vus",
                        "no VU would ever run: set vus or a stage target above 0".into(),
                    );
                }
                for field in ["rate", "max_vus"] {
                    let set = match field {
                        "rate" => load.rate.is_some(),
                        _ => load.max_vus.is_some(),
                    };
                    if set {
                        p.add(
                            &format!("load.{field}"),
                            format!("`{field}` belongs to the open model (model = \"open\")"),
                        );
                    }
                }
            }
            Model::Open => {
                match load.rate {
                    None if load.stages.is_empty() => {
                        p.add("load.rate", "the open model needs rate (or stages)".into());
                    }
                    Some(r) if !(r.is_finite() && r >= 0.0) => {
                        p.add("load.rate", "must be 0 or more sessions per second".into());
                    }
                    _ => {}
                }
                if load.max_vus.unwrap_or(0) == 0 {
                    p.add(
                        "load.max_vus",
                        "the open model needs max_vus of at least 1".into(),
                    );
                }
                if load.duration.is_none() && load.stages.is_empty() {
                    p.add("load", "the open model needs duration or stages".into());
                }
                if load.vus.is_some() {
                    p.add(
                        "load.vus",
                        "the open model sizes its pool with max_vus".into(),
                    );
                }
                if load.iterations.is_some() {
                    p.add(
                        "load.iterations",
                        "`iterations` belongs to the closed model".into(),
                    );
                }
            }
        }
    }
}

/// The most VUs a plan may ask for: 10 million (a fleet of 1,000 workers at 10,000 each).
pub const MAX_VUS: u64 = 10_000_000;
/// The highest arrival rate a plan may ask for, sessions per second.
pub const MAX_RATE: f64 = 10_000_000.0;

fn check_auth(auth: &Auth, scenarios: &Scope, p: &mut Problems) {
    let sources = [
        ("secret_env", auth.secret_env.is_some()),
        ("secret_file", auth.secret_file.is_some()),
        ("key_env", auth.key_env.is_some()),
        ("key_file", auth.key_file.is_some()),
    ];
    let given: Vec<&str> = sources
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| *n)
        .collect();
    let wanted = match auth.algorithm {
        Algorithm::HS256 => "secret_env or secret_file",
        _ => "key_env or key_file",
    };
    match given.as_slice() {
        [] => p.add("auth", format!("{:?} needs {wanted}", auth.algorithm)),
        [one] => {
            let is_secret = one.starts_with("secret");
            if is_secret != (auth.algorithm == Algorithm::HS256) {
                p.add(
                    &format!("auth.{one}"),
                    format!("{:?} reads its key from {wanted}", auth.algorithm),
                );
            }
        }
        many => p.add(
            &format!("auth.{}", many[1]),
            format!("give one key source, not {}", many.join(" and ")),
        ),
    }
    if auth.lifetime.is_zero() {
        p.add("auth.lifetime", "must be above 0".into());
    }
    if auth.subject_pool == Some(0) {
        p.add("auth.subject_pool", "must be at least 1".into());
    }
    // A token is minted before the session's vars exist: only builtins.
    let minted_before = |excluded: &[Builtin]| {
        let mut scope = Scope {
            excluded: excluded.to_vec(),
            ..Scope::default()
        };
        for name in &scenarios.known {
            scope.later.insert(
                name.clone(),
                "is a scenario var or a capture, and tokens are minted before the session's \
                 vars exist"
                    .into(),
            );
        }
        scope
    };
    let subject_scope = minted_before(&[Builtin::Subject, Builtin::Token]);
    if let Ok(t) = Template::parse(&auth.subject)
        && t.builtins()
            .any(|b| matches!(b, Builtin::Subject | Builtin::Token))
    {
        p.add("auth.subject", "cannot use {subject} or {token}".into());
    }
    p.template(&auth.subject, "auth.subject", &subject_scope);
    let claim_scope = minted_before(&[Builtin::Token]);
    for (name, value) in &auth.claims {
        p.finite(value, &format!("auth.claims.{name}"));
        each_string_at(value, &format!("auth.claims.{name}"), &mut |s, at| {
            if let Ok(t) = Template::parse(s)
                && t.builtins().any(|b| b == Builtin::Token)
            {
                p.add(at, "a claim cannot use {token}".into());
            }
            p.template(s, at, &claim_scope);
        });
    }
}

/// What the validator knows about the WebSocket at a point in a scenario.
#[derive(Debug, Default, Clone)]
struct WsState {
    open: bool,
    marks: BTreeSet<String>,
}

fn check_steps(steps: &[Step], at: &str, scope: &mut Scope, ws: &mut WsState, p: &mut Problems) {
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{at}[{i}].{}", step.kind());
        if let Some(name) = step.name() {
            check_name_loose(name, &format!("{at}.name"), p);
        }
        let needs_ws = matches!(
            step,
            Step::WsSend(_)
                | Step::WsExpect(_)
                | Step::WsExpectSequence(_)
                | Step::WsPing(_)
                | Step::WsClose(_)
        );
        if needs_ws && !ws.open {
            p.add(
                &at,
                format!(
                    "`{}` needs an open WebSocket: add a ws_connect step before it",
                    step.kind()
                ),
            );
        }
        match step {
            Step::WsConnect(s) => {
                if let Some(path) = &s.path
                    && !path.starts_with('/')
                {
                    p.add(&format!("{at}.path"), "must start with `/`".into());
                }
                for (k, v) in &s.query {
                    p.template(v, &format!("{at}.query.{k}"), scope);
                }
                for (k, v) in &s.headers {
                    p.template(v, &format!("{at}.headers.{k}"), scope);
                }
                for (j, m) in s.confirmation.iter().enumerate() {
                    p.matcher(m, &format!("{at}.confirmation[{j}]"), scope);
                }
                if let Some(r) = &s.expect_rejection {
                    if r.status.is_none() && r.close_code.is_none() {
                        p.add(
                            &format!("{at}.expect_rejection"),
                            "give status (handshake) and/or close_code".into(),
                        );
                    }
                    if !s.confirmation.is_empty() {
                        p.add(
                            &format!("{at}.confirmation"),
                            "a connection expected to be rejected has no confirmation".into(),
                        );
                    }
                    ws.open = false;
                } else {
                    ws.open = true;
                }
                p.nonzero(s.timeout, &format!("{at}.timeout"));
            }
            Step::WsSend(s) => {
                match (&s.json, &s.text) {
                    (Some(json), None) => {
                        p.finite(json, &format!("{at}.json"));
                        each_string_at(json, &format!("{at}.json"), &mut |t, field| {
                            p.template(t, field, scope);
                        });
                    }
                    (None, Some(text)) => p.template(text, &format!("{at}.text"), scope),
                    _ => p.add(&at, "give exactly one of json and text".into()),
                }
                ws.marks
                    .insert(s.mark.clone().unwrap_or_else(|| "send".into()));
            }
            Step::WsExpect(s) => {
                if s.frame_type.is_none() && s.matchers.is_empty() {
                    p.add(&at, "give `type` or at least one `match`".into());
                }
                for (j, m) in s.matchers.iter().enumerate() {
                    p.matcher(m, &format!("{at}.match[{j}]"), scope);
                }
                p.since(s.since.as_deref(), ws, &format!("{at}.since"));
                p.nonzero(s.timeout, &format!("{at}.timeout"));
                p.captures(&s.capture, &format!("{at}.capture"), scope);
            }
            Step::WsExpectSequence(s) => {
                p.pointer(&s.type_pointer, &format!("{at}.type_pointer"));
                match (s.orders.is_empty(), s.set.is_empty()) {
                    (true, true) => p.add(&at, "give `orders` or `set`".into()),
                    (false, false) => p.add(&at, "give `orders` or `set`, not both".into()),
                    _ => {}
                }
                for (j, order) in s.orders.iter().enumerate() {
                    if order.is_empty() {
                        p.add(
                            &format!("{at}.orders[{j}]"),
                            "an order needs at least one type".into(),
                        );
                    }
                }
                let mut seen = BTreeSet::new();
                for t in &s.set {
                    if !seen.insert(t) {
                        p.add(&format!("{at}.set"), format!("`{t}` is listed twice"));
                    }
                }
                let expected: BTreeSet<&String> = s.orders.iter().flatten().chain(&s.set).collect();
                for t in s.ignore.iter().chain(&s.error_types) {
                    if expected.contains(t) {
                        p.add(
                            &at,
                            format!("`{t}` is both expected and in ignore/error_types"),
                        );
                    }
                }
                for t in &s.terminal {
                    if !expected.contains(t) {
                        p.add(
                            &format!("{at}.terminal"),
                            format!("`{t}` is not an expected type"),
                        );
                    }
                }
                p.since(s.since.as_deref(), ws, &format!("{at}.since"));
                p.nonzero(s.timeout, &format!("{at}.timeout"));
                if let Some(g) = s.gap_timeout {
                    p.nonzero(g, &format!("{at}.gap_timeout"));
                }
                p.captures(&s.capture, &format!("{at}.capture"), scope);
            }
            Step::WsPing(s) => p.nonzero(s.timeout, &format!("{at}.timeout")),
            Step::WsClose(s) => {
                if !matches!(s.code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                    p.add(
                        &format!("{at}.code"),
                        format!("{} is not a close code a client may send", s.code),
                    );
                }
                ws.open = false;
            }
            Step::Http(s) => {
                let method_ok =
                    !s.method.is_empty() && s.method.chars().all(|c| c.is_ascii_uppercase());
                if !method_ok {
                    p.add(
                        &format!("{at}.method"),
                        format!("`{}` is not an HTTP method (GET, POST, ...)", s.method),
                    );
                }
                p.template(&s.path, &format!("{at}.path"), scope);
                for (k, v) in &s.headers {
                    p.template(v, &format!("{at}.headers.{k}"), scope);
                }
                if s.json.is_some() && s.body.is_some() {
                    p.add(&at, "give json or body, not both".into());
                }
                if let Some(json) = &s.json {
                    p.finite(json, &format!("{at}.json"));
                    each_string_at(json, &format!("{at}.json"), &mut |t, field| {
                        p.template(t, field, scope);
                    });
                }
                if let Some(body) = &s.body {
                    p.template(body, &format!("{at}.body"), scope);
                }
                for status in &s.expect_status {
                    if !(100..=599).contains(status) {
                        p.add(
                            &format!("{at}.expect_status"),
                            format!("{status} is not an HTTP status"),
                        );
                    }
                }
                for (j, m) in s.matchers.iter().enumerate() {
                    p.matcher(m, &format!("{at}.match[{j}]"), scope);
                }
                p.nonzero(s.timeout, &format!("{at}.timeout"));
                p.captures(&s.capture, &format!("{at}.capture"), scope);
            }
            Step::Sleep(s) => {
                if let Pause::Uniform { min, max } = s.duration
                    && min > max
                {
                    p.add(&format!("{at}.duration"), "min is above max".into());
                }
            }
            Step::Repeat(s) => {
                if s.count == 0 {
                    p.add(&format!("{at}.count"), "must be at least 1".into());
                }
                if s.steps.is_empty() {
                    p.add(&format!("{at}.steps"), "needs at least one step".into());
                }
                let before = ws.clone();
                check_steps(&s.steps, &format!("{at}.steps"), scope, ws, p);
                if before.open != ws.open && s.count > 1 {
                    p.add(
                        &format!("{at}.steps"),
                        "the repeated steps must leave the WebSocket as they found it (open or closed)".into(),
                    );
                }
            }
        }
    }
}

fn check_name(name: &str, at: &str, p: &mut Problems) {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        p.add(
            at,
            format!("`{name}` must be lowercase letters, digits, _ or -"),
        );
    }
}

fn check_name_loose(name: &str, at: &str, p: &mut Problems) {
    if name.trim().is_empty() || name.contains('\n') {
        p.add(at, "a name needs visible text on one line".into());
    }
}

/// Calls `f` on every string inside `value`.
pub fn each_string(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| each_string(v, f)),
        Value::Object(map) => map.values().for_each(|v| each_string(v, f)),
        _ => {}
    }
}

/// Calls `f` on every string inside `value` with its field path below `at`
/// (`at.payload.items[0]`), so a problem points at the string itself.
fn each_string_at(value: &Value, at: &str, f: &mut impl FnMut(&str, &str)) {
    match value {
        Value::String(s) => f(s, at),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                each_string_at(v, &format!("{at}[{i}]"), f);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                each_string_at(v, &format!("{at}.{k}"), f);
            }
        }
        _ => {}
    }
}

/// What a template may read at one place of a plan.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// Variables set when a template here is rendered (besides the builtins).
    known: BTreeSet<String>,
    /// Variables defined nearby but not set yet when a template here is rendered, with why
    /// (`is captured by scenarios[0].steps[3].ws_expect.capture.run_id, ...`).
    later: BTreeMap<String, String>,
    /// Builtins a template here cannot use (checked apart; left out of the list of known names).
    excluded: Vec<Builtin>,
}

impl Scope {
    /// The names a template here may read, builtins first: `vu, iteration, ..., thread`.
    fn names(&self) -> String {
        Builtin::ALL
            .iter()
            .filter(|(_, b)| !self.excluded.contains(b))
            .map(|(n, _)| *n)
            .chain(self.known.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every variable the steps capture (inside `repeat` too), with the field of its first capture.
fn captures_of(steps: &[Step], at: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{at}[{i}].{}", step.kind());
        let capture = match step {
            Step::WsExpect(s) => &s.capture,
            Step::WsExpectSequence(s) => &s.capture,
            Step::Http(s) => &s.capture,
            Step::Repeat(s) => {
                for (name, field) in captures_of(&s.steps, &format!("{at}.steps")) {
                    out.entry(name).or_insert(field);
                }
                continue;
            }
            _ => continue,
        };
        for name in capture.keys() {
            out.entry(name.clone())
                .or_insert_with(|| format!("{at}.capture.{name}"));
        }
    }
    out
}

#[derive(Debug, Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, path: &str, message: String) {
        self.0.push((path.to_owned(), message));
    }

    fn nonzero(&mut self, d: Duration, at: &str) {
        if d.is_zero() {
            self.add(at, "must be above 0".into());
        }
    }

    /// Checks a template's syntax and that every variable it reads is known in `scope`.
    fn template(&mut self, text: &str, at: &str, scope: &Scope) {
        let t = match Template::parse(text) {
            Ok(t) => t,
            Err(e) => return self.add(at, e.0),
        };
        let mut seen = BTreeSet::new();
        for v in t.vars() {
            if scope.known.contains(v) || !seen.insert(v) {
                continue;
            }
            let message = match scope.later.get(v) {
                Some(why) => format!("template variable `{v}` {why}"),
                None => format!(
                    "unknown template variable `{v}` (known here: {})",
                    scope.names()
                ),
            };
            self.add(at, message);
        }
    }

    fn pointer(&mut self, pointer: &str, at: &str) {
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            self.add(
                at,
                format!("`{pointer}` is not a JSON pointer (start it with `/`)"),
            );
        }
    }

    /// TOML has no null: a null in a JSON value was a `nan` or `inf`, which serde_json turns
    /// into null without a word, so the plan would send or expect something else than it says.
    fn finite(&mut self, value: &Value, at: &str) {
        match value {
            Value::Null => self.add(at, "`nan` and `inf` have no JSON form".into()),
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.finite(v, &format!("{at}[{i}]"));
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    self.finite(v, &format!("{at}.{k}"));
                }
            }
            _ => {}
        }
    }

    fn regex(&mut self, re: &str, at: &str) {
        if let Err(e) = regex::Regex::new(re) {
            self.add(at, format!("bad regex: {e}"));
        }
    }

    fn matcher(&mut self, m: &Matcher, at: &str, scope: &Scope) {
        self.pointer(&m.pointer, &format!("{at}.pointer"));
        let given = [
            m.equals.is_some(),
            m.regex.is_some(),
            m.exists.is_some(),
            m.one_of.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            self.add(
                at,
                "give exactly one of equals, regex, exists, one_of".into(),
            );
        }
        if let Some(Value::String(s)) = &m.equals {
            self.template(s, &format!("{at}.equals"), scope);
        }
        if let Some(v) = &m.equals {
            self.finite(v, &format!("{at}.equals"));
        }
        for (i, v) in m.one_of.iter().flatten().enumerate() {
            self.finite(v, &format!("{at}.one_of[{i}]"));
        }
        if let Some(re) = &m.regex {
            self.regex(re, &format!("{at}.regex"));
        }
    }

    fn since(&mut self, since: Option<&str>, ws: &WsState, at: &str) {
        if let Some(mark) = since
            && !ws.marks.contains(mark)
        {
            self.add(at, format!("no earlier ws_send sets mark `{mark}`"));
        }
    }

    fn captures(&mut self, capture: &BTreeMap<String, String>, at: &str, scope: &mut Scope) {
        for (name, pointer) in capture {
            let ok =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || Builtin::ALL.iter().any(|(n, _)| n == name) {
                self.add(
                    &format!("{at}.{name}"),
                    format!("`{name}` cannot be a variable name"),
                );
            }
            self.pointer(pointer, &format!("{at}.{name}"));
            scope.known.insert(name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
[target]
base_url = "http://127.0.0.1:1"
[load]
vus = 1
iterations = 1
[[scenarios]]
name = "s"
steps = [ { ws_connect = {} }, { ws_send = { json = { type = "ping" } } }, { ws_expect = { type = "pong" } } ]
"#;

    fn errors(text: &str) -> Vec<Located> {
        match Plan::from_text("p.toml", text, &Overrides::default()) {
            Err(PlanError::Invalid(v)) => v,
            Err(PlanError::File(ConfigError::Invalid(l))) => vec![l],
            other => panic!("expected errors, got {other:?}"),
        }
    }

    #[test]
    fn minimal_plan_loads_and_derives_the_ws_url() {
        let plan = Plan::from_text("p.toml", MINIMAL, &Overrides::default()).unwrap();
        assert_eq!(plan.ws_url().as_deref(), Some("ws://127.0.0.1:1/ws"));
        let over = Overrides {
            target: Some("https://staging.example/".into()),
            ws_target: None,
        };
        let plan = Plan::from_text("p.toml", MINIMAL, &over).unwrap();
        assert_eq!(plan.ws_url().as_deref(), Some("wss://staging.example/ws"));
    }

    #[test]
    fn unknown_step_field_points_at_its_line() {
        let text = MINIMAL.replace(
            "{ type = \"pong\" }",
            "{ type = \"pong\", timout = \"1s\" }",
        );
        let e = errors(&text);
        assert_eq!(e[0].line, 10, "{}", e[0]);
        assert!(e[0].message.contains("unknown field `timout`"), "{}", e[0]);
    }

    #[test]
    fn semantic_errors_are_located() {
        let text = MINIMAL.replace(
            "ws_send = { json = { type = \"ping\" } }",
            "ws_send = { json = { type = \"{nope}\" } }",
        );
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "scenarios[0].steps[1].ws_send.json.type");
        assert_eq!(e[0].line, 10);
        assert!(e[0].message.contains("`nope`"), "{}", e[0]);
    }

    /// A plan whose scenario defines `{thread}` and captures `{run_id}`, with its isolation
    /// check and one step template to be typo'd by the tests.
    const THREADS: &str = r#"name = "threads"
[target]
base_url = "http://127.0.0.1:1"
[load]
vus = 1
iterations = 1

[[scenarios]]
name = "agent-run"
vars = { thread = "thread-{vu}-{iteration}" }
steps = [
  { ws_connect = { query = { thread_id = "{thread}" } } },
  { ws_send = { json = { type = "start_agent", thread_id = "{thread}" } } },
  { ws_expect = { type = "agent_started", capture = { run_id = "/run_id" } } },
  { ws_expect = { type = "agent_completed", match = [{ pointer = "/run_id", equals = "{run_id}" }] } },
]

[[isolation]]
name = "event-thread"
pointer = "/thread_id"
equals = "{thread}"
"#;

    fn messages(text: &str) -> Vec<String> {
        match Plan::from_text("plan.toml", text, &Overrides::default()) {
            Err(PlanError::Invalid(v)) => v.iter().map(ToString::to_string).collect(),
            other => panic!("expected semantic errors, got {other:?}"),
        }
    }

    #[test]
    fn every_template_variable_of_a_good_plan_is_known() {
        Plan::from_text("plan.toml", THREADS, &Overrides::default()).unwrap();
    }

    #[test]
    fn a_typo_in_an_isolation_template_names_the_variable_and_the_known_ones() {
        let text = THREADS.replace("equals = \"{thread}\"", "equals = \"{thread_id}\"");
        assert_eq!(
            messages(&text),
            [
                "plan.toml:21:10: isolation[0].equals: unknown template variable `thread_id` \
                 (known here: vu, iteration, subject, subject_index, scenario, uuid, now, \
                 now_ms, token, run_id, thread)"
            ]
        );
    }

    #[test]
    fn a_typo_in_a_step_template_names_the_variable_and_the_known_ones() {
        let text = THREADS.replace(
            "type = \"start_agent\", thread_id = \"{thread}\"",
            "type = \"start_agent\", thread_id = \"{thraed}\"",
        );
        assert_eq!(
            messages(&text),
            [
                "plan.toml:13:60: scenarios[0].steps[1].ws_send.json.thread_id: unknown template \
                 variable `thraed` (known here: vu, iteration, subject, subject_index, \
                 scenario, uuid, now, now_ms, token, thread)"
            ]
        );
        // In a matcher, a header, an HTTP path: the same.
        let text = THREADS.replace("equals = \"{run_id}\"", "equals = \"{runid}\"");
        let e = messages(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "plan.toml:15:86: scenarios[0].steps[3].ws_expect.match[0].equals: unknown \
                 template variable `runid` (known here: "
            ) && e[0].ends_with("token, run_id, thread)"),
            "{e:?}"
        );
        let text = THREADS.replace(
            "{ ws_connect = { query",
            "{ http = { path = \"/t/{thread}/{tread}\", headers = { x = \"{vu}{who}\" } } },\n  { ws_connect = { query",
        );
        let e = errors(&text);
        let fields: Vec<&str> = e.iter().map(|l| l.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "scenarios[0].steps[0].http.path",
                "scenarios[0].steps[0].http.headers.x"
            ],
            "{e:?}"
        );
        assert!(e[0].message.contains("`tread`"), "{}", e[0]);
        assert!(e[1].message.contains("`who`"), "{}", e[1]);
    }

    #[test]
    fn a_capture_is_known_after_its_step_and_everywhere_in_isolation_checks() {
        // Before the capturing step: defined, but not set yet.
        let text = THREADS.replace(
            "{ type = \"start_agent\", thread_id = \"{thread}\" }",
            "{ type = \"start_agent\", thread_id = \"{run_id}\" }",
        );
        assert_eq!(
            messages(&text),
            [
                "plan.toml:13:60: scenarios[0].steps[1].ws_send.json.thread_id: template \
                 variable `run_id` is captured by scenarios[0].steps[2].ws_expect.capture.run_id, \
                 after this template is rendered"
            ]
        );
        // Captured inside a repeat: known after it, and to isolation checks.
        let text = THREADS
            .replace(
                "{ ws_expect = { type = \"agent_started\", capture = { run_id = \"/run_id\" } } },",
                "{ repeat = { count = 2, steps = [{ ws_expect = { type = \"agent_started\", capture = { run_id = \"/run_id\" } } }] } },",
            )
            .replace("equals = \"{thread}\"", "equals = \"{run_id}\"");
        Plan::from_text("plan.toml", &text, &Overrides::default()).unwrap();
        // Scenario vars are rendered first, in name order.
        let text = THREADS.replace(
            "vars = { thread = \"thread-{vu}-{iteration}\" }",
            "vars = { thread = \"thread-{vu}-{run_id}\", a = \"{b}\", b = \"{vu}\", c = \"{b}-{c}\" }",
        );
        let e = messages(&text);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].contains(
                "vars.a: template variable `b` is a scenario var rendered after this one"
            ),
            "{e:?}"
        );
        assert!(
            e[1].contains("vars.c: template variable `c` is this var itself"),
            "{e:?}"
        );
        assert!(
            e[2].contains(
                "vars.thread: template variable `run_id` is captured by \
                 scenarios[0].steps[2].ws_expect.capture.run_id, but scenario vars are rendered \
                 when the session starts"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn target_headers_read_any_scenario_variable_and_claims_none() {
        let text = THREADS.replace(
            "base_url = \"http://127.0.0.1:1\"",
            "base_url = \"http://127.0.0.1:1\"\nheaders = { x-thread = \"{thread}\" }",
        );
        Plan::from_text("plan.toml", &text, &Overrides::default()).unwrap();
        let text = text.replace("x-thread = \"{thread}\"", "x-thread = \"{thread}{stage}\"");
        let e = messages(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "plan.toml:4:24: target.headers.x-thread: unknown template variable `stage`"
            ),
            "{e:?}"
        );
        let text = format!(
            "{THREADS}[auth]\nsecret_env = \"K\"\nclaims = {{ t = [\"{{thread}}\"], u = \"{{usr}}\" }}\n"
        );
        let e = messages(&text);
        assert_eq!(
            e,
            [
                "plan.toml:24:17: auth.claims.t[0]: template variable `thread` is a scenario var \
                 or a capture, and tokens are minted before the session's vars exist",
                "plan.toml:24:34: auth.claims.u: unknown template variable `usr` (known here: vu, \
                 iteration, subject, subject_index, scenario, uuid, now, now_ms)"
            ]
        );
    }

    #[test]
    fn steps_need_an_open_socket_and_captures_flow_forward() {
        let text = MINIMAL.replace("{ ws_connect = {} }, ", "");
        let e = errors(&text);
        assert!(
            e.iter()
                .any(|l| l.message.contains("needs an open WebSocket")),
            "{e:?}"
        );
        let text = MINIMAL.replace(
            "{ ws_expect = { type = \"pong\" } }",
            "{ ws_expect = { type = \"pong\", capture = { uid = \"/data/user_id\" } } }, { ws_send = { text = \"{uid}\" } }",
        );
        Plan::from_text("p.toml", &text, &Overrides::default()).unwrap();
    }

    #[test]
    fn load_models_are_checked() {
        let text = MINIMAL.replace("vus = 1\niterations = 1", "model = \"open\"\nrate = 5");
        let e = errors(&text);
        let msgs: Vec<&str> = e.iter().map(|l| l.message.as_str()).collect();
        assert!(msgs.iter().any(|m| m.contains("max_vus")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("needs duration or stages")),
            "{msgs:?}"
        );
    }

    #[test]
    fn auth_needs_one_matching_key_source() {
        let text = format!("{MINIMAL}\n[auth]\nalgorithm = \"RS256\"\nsecret_env = \"X\"\n");
        let e = errors(&text);
        assert_eq!(e[0].field, "auth.secret_env");
        assert!(e[0].line > 0);
    }

    #[test]
    fn loads_that_cannot_run_are_refused() {
        let text = MINIMAL.replace("vus = 1", "vus = 4294967295");
        let e = errors(&text);
        assert_eq!(e[0].field, "load.vus", "{e:?}");
        assert!(
            e[0].message
                .contains("4294967295 VUs cannot run: at most 10000000"),
            "{}",
            e[0]
        );
        assert!(e[0].line > 0);
    }

    #[test]
    fn thresholds_and_fleet_are_checked() {
        let text = format!("{MINIMAL}\n[[thresholds]]\nmetric = \"session\"\nbelow = \"1s\"\n");
        let e = errors(&text);
        assert_eq!(e[0].field, "thresholds[0]");
        assert!(e[0].message.contains("stat and below"), "{}", e[0]);
        assert!(e[0].line > 0);
        let text = format!("{MINIMAL}\n[fleet]\non_worker_loss = \"shrug\"\n");
        let e = errors(&text);
        assert_eq!(e[0].field, "fleet.on_worker_loss");
        let text = format!(
            "{MINIMAL}\n[fleet]\nmin_workers = 3\non_worker_loss = \"abort\"\n[[thresholds]]\nfailures = \"*\"\nrate_below = 0.01\n"
        );
        let plan = Plan::from_text("p.toml", &text, &Overrides::default()).unwrap();
        assert_eq!(plan.fleet.min_workers, Some(3));
        assert_eq!(plan.thresholds.len(), 1);
    }

    #[test]
    fn nan_and_inf_in_json_values_are_refused() {
        let text = MINIMAL.replace("{ type = \"ping\" }", "{ type = \"ping\", x = [1, nan] }");
        let e = errors(&text);
        assert_eq!(
            e[0].field, "scenarios[0].steps[1].ws_send.json.x[1]",
            "{}",
            e[0]
        );
        assert_eq!((e[0].line, e[0].col), (10, 78), "{}", e[0]);
        assert!(e[0].message.contains("no JSON form"), "{}", e[0]);
        let text = format!("{MINIMAL}[auth]\nsecret_env = \"K\"\nclaims = {{ r = inf }}\n");
        assert_eq!(errors(&text)[0].field, "auth.claims.r");
    }

    #[test]
    fn missing_target_says_how_to_set_it() {
        let text = MINIMAL.replace("[target]\nbase_url = \"http://127.0.0.1:1\"\n", "");
        let e = errors(&text);
        assert!(e[0].message.contains("--target"), "{}", e[0]);
    }
}

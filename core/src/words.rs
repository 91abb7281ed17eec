//! gauntlet's vocabulary as types: the phases of a run, the failure categories of the
//! taxonomy, the verdict and what caused it. Rooms compare these, never strings or message
//! prefixes; their names (`as_str`) are what reports, `/metrics` and the wire show.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPhase {
    /// Waiting for enough workers.
    Waiting,
    /// Shares assigned; sessions running.
    Running,
    /// Ended: the report exists.
    Finished,
}

impl RunPhase {
    /// `waiting`, `running` or `finished`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Waiting => "waiting",
            RunPhase::Running => "running",
            RunPhase::Finished => "finished",
        }
    }
}

impl fmt::Display for RunPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The category of a failed session: one of the built-in taxonomy, or a plan classifier's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureCategory {
    /// TCP connection refused (or reset while connecting).
    ConnectRefused,
    /// The host name did not resolve.
    Dns,
    /// TLS failed.
    Tls,
    /// A handshake refused with 401/403, close 1008, or an auth error frame.
    AuthRejected,
    /// A handshake refused with another status.
    HandshakeRejected,
    /// Close 1011 "Factory ..." or a FACTORY_* error frame.
    FactoryInitFailed,
    /// Close 1011 "... not ready" or SERVICE_NOT_READY.
    ServiceNotReady,
    /// Close 1011 otherwise, or INTERNAL_ERROR.
    InternalError,
    /// The connection closed (or reset) where no close was expected.
    UnexpectedClose,
    /// An error frame of another code.
    ErrorFrame,
    /// A wait ended.
    Timeout,
    /// Events in an order no rule allows.
    SequenceViolation,
    /// An expected event never came.
    MissingEvent,
    /// An event came twice.
    DuplicateEvent,
    /// A frame carried another user's id.
    IsolationBreach,
    /// An `http` step got a status it does not accept.
    HttpStatus,
    /// A named check failed.
    CheckFailed,
    /// The peer broke the protocol.
    ProtocolError,
    /// A body or message over the plan's cap.
    ResponseTooLarge,
    /// A plan classifier's category.
    Plan(String),
}

impl FailureCategory {
    /// The built-in categories, in taxonomy order.
    pub const BUILTIN: [FailureCategory; 19] = [
        FailureCategory::ConnectRefused,
        FailureCategory::Dns,
        FailureCategory::Tls,
        FailureCategory::AuthRejected,
        FailureCategory::HandshakeRejected,
        FailureCategory::FactoryInitFailed,
        FailureCategory::ServiceNotReady,
        FailureCategory::InternalError,
        FailureCategory::UnexpectedClose,
        FailureCategory::ErrorFrame,
        FailureCategory::Timeout,
        FailureCategory::SequenceViolation,
        FailureCategory::MissingEvent,
        FailureCategory::DuplicateEvent,
        FailureCategory::IsolationBreach,
        FailureCategory::HttpStatus,
        FailureCategory::CheckFailed,
        FailureCategory::ProtocolError,
        FailureCategory::ResponseTooLarge,
    ];

    /// Its name (`factory_init_failed`, or the classifier's).
    pub fn as_str(&self) -> &str {
        match self {
            FailureCategory::ConnectRefused => "connect_refused",
            FailureCategory::Dns => "dns",
            FailureCategory::Tls => "tls",
            FailureCategory::AuthRejected => "auth_rejected",
            FailureCategory::HandshakeRejected => "handshake_rejected",
            FailureCategory::FactoryInitFailed => "factory_init_failed",
            FailureCategory::ServiceNotReady => "service_not_ready",
            FailureCategory::InternalError => "internal_error",
            FailureCategory::UnexpectedClose => "unexpected_close",
            FailureCategory::ErrorFrame => "error_frame",
            FailureCategory::Timeout => "timeout",
            FailureCategory::SequenceViolation => "sequence_violation",
            FailureCategory::MissingEvent => "missing_event",
            FailureCategory::DuplicateEvent => "duplicate_event",
            FailureCategory::IsolationBreach => "isolation_breach",
            FailureCategory::HttpStatus => "http_status",
            FailureCategory::CheckFailed => "check_failed",
            FailureCategory::ProtocolError => "protocol_error",
            FailureCategory::ResponseTooLarge => "response_too_large",
            FailureCategory::Plan(name) => name,
        }
    }

    /// The category named `name`: a built-in one, else a plan classifier's.
    pub fn named(name: &str) -> FailureCategory {
        FailureCategory::BUILTIN
            .iter()
            .find(|c| c.as_str() == name)
            .cloned()
            .unwrap_or_else(|| FailureCategory::Plan(name.to_owned()))
    }

    /// Whether the session never reached the target (no connection was made): a run whose
    /// every session failed so was not a test of the target.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            FailureCategory::ConnectRefused | FailureCategory::Dns | FailureCategory::Tls
        )
    }
}

impl fmt::Display for FailureCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for FailureCategory {
    fn from(name: &str) -> FailureCategory {
        FailureCategory::named(name)
    }
}

impl PartialEq<&str> for FailureCategory {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for FailureCategory {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl Serialize for FailureCategory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureCategory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(FailureCategory::named(&name))
    }
}

impl JsonSchema for FailureCategory {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FailureCategory".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

/// Failed sessions by category, most frequent first (then by name): the one place failures
/// are tallied, for summaries, progress, `/metrics`, comparisons and charts alike.
pub fn tally<'a>(
    failures: impl IntoIterator<Item = (&'a FailureCategory, u64)>,
) -> Vec<(FailureCategory, u64)> {
    let mut by: std::collections::BTreeMap<&FailureCategory, u64> = Default::default();
    for (category, n) in failures {
        let c = by.entry(category).or_default();
        *c = c.saturating_add(n);
    }
    let mut out: Vec<(FailureCategory, u64)> =
        by.into_iter().map(|(k, v)| (k.clone(), v)).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
    out
}

/// Pass, fail or error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Sessions ran and every threshold held.
    Pass,
    /// A threshold failed.
    Fail,
    /// The run could not be judged: nothing ran, no worker, the target never reached, aborted.
    Error,
}

impl Verdict {
    /// `pass`, `fail` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
        }
    }

    /// The exit code of `gauntlet run` for this verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Error => 3,
        }
    }
}

/// What decided a verdict, so that callers act on it without reading its words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Every threshold held over a complete run.
    Held,
    /// A threshold failed.
    ThresholdsFailed,
    /// An `abort_on_fail` threshold failed live and stopped the run.
    Aborted,
    /// No session's outcome reached the coordinator.
    NothingRan,
    /// Every session failed to connect: the target was never reached.
    TargetUnreachable,
    /// Some workers could not run their share (a key, a refused target...).
    SharesFailed,
    /// Fewer workers than the run needs connected in time.
    TooFewWorkers,
    /// Someone cancelled the run.
    Cancelled,
    /// The coordinator shut down mid-run.
    Interrupted,
    /// The run reached its hard deadline.
    Deadline,
    /// A worker was lost and the plan says `on_worker_loss = "abort"`.
    WorkerLost,
    /// A threshold had nothing to judge.
    Unjudged,
    /// Less load delivered than asked, sessions of unknown outcome, or a check that never
    /// evaluated.
    Incomplete,
    /// Not recorded (a report written before causes were).
    #[default]
    Unrecorded,
}

impl Cause {
    /// Whether the run sent nothing that tested the target (a loop stops at once then).
    pub fn ran_nothing(self) -> bool {
        matches!(self, Cause::NothingRan | Cause::TargetUnreachable)
    }
}

/// A verdict with its cause and reason: what a run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Pass, fail or error.
    pub verdict: Verdict,
    /// What decided it.
    pub cause: Cause,
    /// Why, in words, with the figures.
    pub reason: String,
}

impl Judgement {
    /// A judgement of `verdict` caused by `cause`, for `reason`.
    pub fn new(verdict: Verdict, cause: Cause, reason: impl Into<String>) -> Judgement {
        Judgement {
            verdict,
            cause,
            reason: reason.into(),
        }
    }

    /// An error: the run cannot be judged.
    pub fn error(cause: Cause, reason: impl Into<String>) -> Judgement {
        Judgement::new(Verdict::Error, cause, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_named_as_reports_name_them() {
        for c in &FailureCategory::BUILTIN {
            assert_eq!(&FailureCategory::named(c.as_str()), c);
        }
        assert_eq!(
            FailureCategory::named("manager_limit"),
            FailureCategory::Plan("manager_limit".into())
        );
        let json = serde_json::to_string(&FailureCategory::FactoryInitFailed).unwrap_or_default();
        assert_eq!(json, "\"factory_init_failed\"");
        assert!(
            FailureCategory::Dns.is_unreachable() && !FailureCategory::Timeout.is_unreachable()
        );
    }
}

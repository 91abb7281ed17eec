//! What a plan checks and how it names failures: isolation checks on every frame, JSON-pointer
//! matchers, and classifiers that map what a failure looked like to a plan's own category.
//! Matchers and classifiers have a spec (the TOML shape, checked by validation) and a resolved
//! form that holds exactly one test, or a non-empty list of conditions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A field of received frames that must equal this VU's own value.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
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

/// A check on one JSON value as the plan writes it: a pointer and exactly one test.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherSpec {
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

impl MatcherSpec {
    /// The resolved matcher (validation has checked that exactly one test is given).
    pub fn resolve(&self) -> Matcher {
        let test = if let Some(v) = &self.equals {
            MatchTest::Equals(v.clone())
        } else if let Some(re) = &self.regex {
            MatchTest::Regex(re.clone())
        } else if let Some(values) = &self.one_of {
            MatchTest::OneOf(values.clone())
        } else {
            MatchTest::Exists(self.exists.unwrap_or(true))
        };
        Matcher {
            pointer: self.pointer.clone(),
            test,
        }
    }
}

/// A check on one JSON value, found by JSON pointer (RFC 6901).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema, Serialize)]
pub struct Matcher {
    /// Where (`/type`, `/data/event`); `""` is the whole frame.
    pub pointer: String,
    /// What must hold there.
    pub test: MatchTest,
}

/// The test of a [`Matcher`].
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchTest {
    /// Equal to this value (strings are templates).
    Equals(Value),
    /// A string matching this regex.
    Regex(String),
    /// Present (`true`) or absent (`false`).
    Exists(bool),
    /// Equal to one of these.
    OneOf(Vec<Value>),
}

/// A plan classifier as written (`[[classifiers]]`): a category and at least one condition.
#[derive(Debug, Clone, Deserialize, JsonSchema, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierSpec {
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

impl ClassifierSpec {
    /// The resolved classifier: its conditions, in the order the plan file lists the fields.
    pub fn resolve(&self) -> Classifier {
        let mut when = Vec::new();
        when.extend(self.close_code.map(Condition::CloseCode));
        when.extend(self.close_reason.clone().map(Condition::CloseReason));
        when.extend(self.error_code.clone().map(Condition::ErrorCode));
        when.extend(self.frame_regex.clone().map(Condition::FrameRegex));
        when.extend(self.http_status.map(Condition::HttpStatus));
        Classifier {
            category: self.category.clone(),
            when,
        }
    }
}

/// Maps what a failure looked like to a plan-specific category; every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
pub struct Classifier {
    /// Category name (`[a-z0-9_]+`).
    pub category: String,
    /// The conditions, at least one.
    pub when: Vec<Condition>,
}

/// One condition of a [`Classifier`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The WebSocket closed with this code.
    CloseCode(u16),
    /// The close reason matches this regex.
    CloseReason(String),
    /// An error frame carried this `error_code`.
    ErrorCode(String),
    /// The raw text of the frame that failed the session matches this regex.
    FrameRegex(String),
    /// The HTTP status of a handshake or an `http` step.
    HttpStatus(u16),
}

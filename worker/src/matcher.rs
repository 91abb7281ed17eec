//! Checks on JSON values found by JSON pointer (equals, regex, exists, one-of) and captures,
//! compiled once from the plan.

use std::borrow::Cow;

use crate::error::CompileError;
use crate::json::Json;

use gauntlet_core::plan::{MatchTest, Matcher};
use regex::Regex;
use serde_json::Value;

use crate::render::{Context, compile, render};
use crate::rng::Rng;

/// A compiled matcher.
#[derive(Debug, Clone)]
pub struct CompiledMatcher {
    pointer: String,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Equals(Value),
    EqualsTemplate(gauntlet_core::template::Template),
    Regex(Regex),
    Exists(bool),
    OneOf(Vec<Value>),
}

impl CompiledMatcher {
    /// Compiles a validated plan matcher.
    pub fn compile(m: &Matcher) -> Result<CompiledMatcher, CompileError> {
        let test = match &m.test {
            MatchTest::Equals(Value::String(s)) => {
                let t = compile(s)?;
                match t.as_literal() {
                    Some(lit) => Test::Equals(Value::String(lit.to_owned())),
                    None => Test::EqualsTemplate(t),
                }
            }
            MatchTest::Equals(other) => Test::Equals(other.clone()),
            MatchTest::Regex(re) => Test::Regex(Regex::new(re).map_err(|e| e.to_string())?),
            MatchTest::Exists(e) => Test::Exists(*e),
            MatchTest::OneOf(values) => Test::OneOf(values.clone()),
        };
        Ok(CompiledMatcher {
            pointer: m.pointer.clone(),
            test,
        })
    }

    /// A matcher `pointer == value`.
    pub fn equals(pointer: &str, value: &str) -> CompiledMatcher {
        CompiledMatcher {
            pointer: pointer.to_owned(),
            test: Test::Equals(Value::String(value.to_owned())),
        }
    }

    /// Whether `frame` passes.
    pub fn matches(&self, frame: &Json<'_>, ctx: &Context<'_>, rng: &mut Rng) -> bool {
        let found = frame.pointer(&self.pointer);
        match &self.test {
            Test::Exists(want) => found.is_some() == *want,
            Test::Equals(v) => found.is_some_and(|f| f == v),
            Test::EqualsTemplate(t) => match (found, render(t, ctx, rng)) {
                (Some(Json::String(s)), Some(want)) => *s == want,
                _ => false,
            },
            Test::Regex(re) => match found {
                Some(Json::String(s)) => re.is_match(s),
                Some(other @ (Json::Number(_) | Json::Bool(_))) => re.is_match(&other.to_string()),
                _ => false,
            },
            Test::OneOf(values) => found.is_some_and(|f| values.iter().any(|v| f == v)),
        }
    }

    /// Describes the matcher for failure messages.
    pub fn describe(&self) -> String {
        match &self.test {
            Test::Equals(v) => format!("{} == {v}", self.pointer),
            Test::EqualsTemplate(t) => format!("{} == \"{t}\"", self.pointer),
            Test::Regex(re) => format!("{} ~ /{}/", self.pointer, re.as_str()),
            Test::Exists(true) => format!("{} exists", self.pointer),
            Test::Exists(false) => format!("{} is absent", self.pointer),
            Test::OneOf(values) => format!("{} in {}", self.pointer, Value::Array(values.clone())),
        }
    }
}

/// The text of the value at `pointer`, for captures and isolation checks (strings as they are,
/// numbers and booleans printed, anything else as JSON).
pub fn text_at<'f>(frame: &'f Json<'_>, pointer: &str) -> Option<Cow<'f, str>> {
    match frame.pointer(pointer)? {
        Json::String(s) => Some(Cow::Borrowed(s)),
        Json::Null => None,
        other => Some(Cow::Owned(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::render::Vars;
    use serde_json::json;

    fn m(toml_matcher: Value) -> CompiledMatcher {
        let spec: gauntlet_core::plan::MatcherSpec = serde_json::from_value(toml_matcher).unwrap();
        CompiledMatcher::compile(&spec.resolve()).unwrap()
    }

    #[test]
    fn each_test_kind() {
        let vars = Vars::default();
        let ctx = Context {
            vu: 1,
            iteration: 0,
            subject: "user-1",
            subject_index: 1,
            scenario: "s",
            token: "",
            vars: &vars,
        };
        let mut rng = Rng::keyed(&[0]);
        let text = json!({"type": "pong", "data": {"user_id": "user-1", "n": 3}}).to_string();
        let frame = Json::parse(&text).unwrap();
        assert!(m(json!({"pointer": "/type", "equals": "pong"})).matches(&frame, &ctx, &mut rng));
        assert!(
            m(json!({"pointer": "/data/user_id", "equals": "{subject}"}))
                .matches(&frame, &ctx, &mut rng)
        );
        assert!(
            !m(json!({"pointer": "/data/user_id", "equals": "x{subject}"}))
                .matches(&frame, &ctx, &mut rng)
        );
        assert!(
            m(json!({"pointer": "/data/n", "regex": "^[0-9]$"})).matches(&frame, &ctx, &mut rng)
        );
        assert!(m(json!({"pointer": "/data/x", "exists": false})).matches(&frame, &ctx, &mut rng));
        assert!(
            m(json!({"pointer": "/type", "one_of": ["ping", "pong"]}))
                .matches(&frame, &ctx, &mut rng)
        );
        assert!(
            !m(json!({"pointer": "/type", "one_of": ["ping"]})).matches(&frame, &ctx, &mut rng)
        );
        assert_eq!(text_at(&frame, "/data/n").as_deref(), Some("3"));
    }
}

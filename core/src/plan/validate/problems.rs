//! The problems of a plan as they are found (path and message), what a template may read at
//! one place, and the checks on names, pointers, regexes, matchers and templates every part
//! of validation shares.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::steps::WsState;
use crate::plan::check::MatcherSpec as Matcher;
use crate::template::{Builtin, Template};

pub(super) fn check_name(name: &str, at: &str, p: &mut Problems) {
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

pub(super) fn check_name_loose(name: &str, at: &str, p: &mut Problems) {
    if name.trim().is_empty() || name.contains('\n') {
        p.add(at, "a name needs visible text on one line".into());
    }
}

/// Calls `f` on every string inside `value` with its field path below `at`
/// (`at.payload.items[0]`), so a problem points at the string itself.
pub(super) fn each_string_at(value: &Value, at: &str, f: &mut impl FnMut(&str, &str)) {
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
pub(super) struct Scope {
    /// Variables set when a template here is rendered (besides the builtins).
    pub(super) known: BTreeSet<String>,
    /// Variables defined nearby but not set yet when a template here is rendered, with why
    /// (`is captured by scenarios[0].steps[3].ws_expect.capture.run_id, ...`).
    pub(super) later: BTreeMap<String, String>,
    /// Builtins a template here cannot use (checked apart; left out of the list of known names).
    pub(super) excluded: Vec<Builtin>,
}

impl Scope {
    /// The names a template here may read, builtins first: `vu, iteration, ..., thread`.
    pub(super) fn names(&self) -> String {
        Builtin::ALL
            .iter()
            .filter(|(_, b)| !self.excluded.contains(b))
            .map(|(n, _)| *n)
            .chain(self.known.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Default)]
pub(super) struct Problems(pub(super) Vec<(String, String)>);

impl Problems {
    pub(super) fn add(&mut self, path: &str, message: String) {
        self.0.push((path.to_owned(), message));
    }

    pub(super) fn nonzero(&mut self, d: Duration, at: &str) {
        if d.is_zero() {
            self.add(at, "must be above 0".into());
        }
    }

    /// Checks a header's name: an HTTP token (RFC 9110, 5.1: letters, digits and
    /// ``!#$%&'*+-.^_`|~``), the names `http::HeaderName` accepts.
    pub(super) fn header(&mut self, name: &str, value: &str, at: &str, scope: &Scope) {
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            self.add(
                at,
                format!(
                    "`{name}` is not an HTTP header name (letters, digits and \
                     !#$%&'*+-.^_`|~ only)"
                ),
            );
        }
        self.template(value, at, scope);
    }

    /// Checks a template's syntax and that every variable it reads is known in `scope`.
    pub(super) fn template(&mut self, text: &str, at: &str, scope: &Scope) {
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

    pub(super) fn pointer(&mut self, pointer: &str, at: &str) {
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            self.add(
                at,
                format!("`{pointer}` is not a JSON pointer (start it with `/`)"),
            );
        }
    }

    /// TOML has no null: a null in a JSON value was a `nan` or `inf`, which serde_json turns
    /// into null without a word, so the plan would send or expect something else than it says.
    pub(super) fn finite(&mut self, value: &Value, at: &str) {
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

    pub(super) fn regex(&mut self, re: &str, at: &str) {
        if let Err(e) = regex::Regex::new(re) {
            self.add(at, format!("bad regex: {e}"));
        }
    }

    pub(super) fn matcher(&mut self, m: &Matcher, at: &str, scope: &Scope) {
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

    pub(super) fn since(&mut self, since: Option<&str>, ws: &WsState, at: &str) {
        if let Some(mark) = since
            && !ws.marks.contains(mark)
        {
            self.add(at, format!("no earlier ws_send sets mark `{mark}`"));
        }
    }

    pub(super) fn captures(
        &mut self,
        capture: &BTreeMap<String, String>,
        at: &str,
        scope: &mut Scope,
    ) {
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

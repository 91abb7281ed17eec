//! Validation of a scenario's steps: each kind's own rules, whether the WebSocket is open where
//! a step needs it, marks set before they are read, and captures known after their step.

use std::collections::{BTreeMap, BTreeSet};

use super::problems::{Problems, Scope, check_name_loose, each_string_at};
use crate::plan::load::Pause;
use crate::plan::spec::StepSpec as Step;

/// What the validator knows about the WebSocket at a point in a scenario.
#[derive(Debug, Default, Clone)]
pub(super) struct WsState {
    pub(super) open: bool,
    pub(super) marks: BTreeSet<String>,
}

pub(super) fn check_steps(
    steps: &[Step],
    at: &str,
    scope: &mut Scope,
    ws: &mut WsState,
    p: &mut Problems,
) {
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
                    p.header(k, v, &format!("{at}.headers.{k}"), scope);
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
                    p.header(k, v, &format!("{at}.headers.{k}"), scope);
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

/// Every variable the steps capture (inside `repeat` too), with the field of its first capture.
pub(super) fn captures_of(steps: &[Step], at: &str) -> BTreeMap<String, String> {
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

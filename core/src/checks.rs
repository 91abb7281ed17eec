//! The checks a plan declares, named exactly as the worker's recorder and the reports name
//! them, so a report can show every one (even those that never ran) and the verdict can say
//! which never evaluated.

use std::collections::BTreeMap;

use crate::plan::{Plan, Step};

/// What a declared check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// A step of a scenario (its kind's TOML key: `ws_expect`, `ws_connect`, ...).
    Step(&'static str),
    /// An `[[isolation]]` check.
    Isolation,
}

impl CheckKind {
    /// Whether a whole run in which this check never evaluated must not pass: expectations,
    /// sequences and isolation checks are what a plan asks to be verified; other steps (a send,
    /// a sleep) are only means to that.
    pub fn must_evaluate(self) -> bool {
        matches!(
            self,
            CheckKind::Isolation | CheckKind::Step("ws_expect" | "ws_expect_sequence")
        )
    }

    /// In words, for reasons and reports.
    pub fn describe(self) -> &'static str {
        match self {
            CheckKind::Isolation => "isolation check",
            CheckKind::Step("ws_expect") => "expectation",
            CheckKind::Step("ws_expect_sequence") => "sequence",
            CheckKind::Step(_) => "step",
        }
    }
}

/// One check a plan declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredCheck {
    /// Its name in reports: `scenario/step` or `isolation:name`.
    pub name: String,
    /// What it is.
    pub kind: CheckKind,
    /// The plan said `optional = true`: never evaluating it is no error.
    pub optional: bool,
}

/// A step's name before it is made unique in its scenario: the plan's `name`, else
/// `expect TYPE` for a typed `ws_expect`, `METHOD PATH` for `http` (the path's credentials
/// masked, [`crate::redact::url`]: reports and metrics carry step names), else the kind.
pub fn step_base_name(step: &Step) -> String {
    match (step.name(), step) {
        (Some(n), _) => n.to_owned(),
        (None, Step::WsExpect(e)) if e.frame_type.is_some() => {
            format!("expect {}", e.frame_type.as_deref().unwrap_or_default())
        }
        (None, Step::Http(h)) => format!("{} {}", h.method, crate::redact::url(&h.path)),
        (None, s) => s.kind().to_owned(),
    }
}

/// Makes step names unique within one scenario: the second `ws_send` is `ws_send#2`.
#[derive(Debug, Default)]
pub struct UniqueNames(BTreeMap<String, u32>);

impl UniqueNames {
    /// `base`, or `base#n` for its n-th use.
    pub fn unique(&mut self, base: String) -> String {
        let n = self.0.entry(base.clone()).or_insert(0);
        *n += 1;
        if *n == 1 { base } else { format!("{base}#{n}") }
    }
}

/// The name of an isolation check in reports.
pub fn isolation_name(check: &crate::plan::IsolationCheck) -> String {
    format!(
        "isolation:{}",
        check.name.clone().unwrap_or_else(|| check.pointer.clone())
    )
}

/// Whether a step records a check when it runs: a connect, an expectation, a sequence, a ping
/// and an HTTP request do; a send, a close, a sleep and a repeat block only act.
pub fn checks_something(step: &Step) -> bool {
    !matches!(
        step,
        Step::WsSend(_) | Step::WsClose(_) | Step::Sleep(_) | Step::Repeat(_)
    )
}

/// Every check `plan` declares, scenario steps first (depth first, in order), then isolation.
pub fn declared(plan: &Plan) -> Vec<DeclaredCheck> {
    fn walk(steps: &[Step], scenario: &str, names: &mut UniqueNames, out: &mut Vec<DeclaredCheck>) {
        for step in steps {
            // Every step takes a name (so later names get the same `#n` as the recorder's), but
            // only steps that check something are checks.
            let name = names.unique(step_base_name(step));
            if let Step::Repeat(r) = step {
                walk(&r.steps, scenario, names, out);
                continue;
            }
            if !checks_something(step) {
                continue;
            }
            let optional = match step {
                Step::WsExpect(s) => s.optional,
                Step::WsExpectSequence(s) => s.optional,
                _ => false,
            };
            out.push(DeclaredCheck {
                name: format!("{scenario}/{name}"),
                kind: CheckKind::Step(step.kind()),
                optional,
            });
        }
    }
    let mut out = Vec::new();
    for s in &plan.scenarios {
        walk(&s.steps, &s.name, &mut UniqueNames::default(), &mut out);
    }
    for c in &plan.isolation {
        let name = isolation_name(c);
        if out.iter().all(|d| d.name != name) {
            out.push(DeclaredCheck {
                name,
                kind: CheckKind::Isolation,
                optional: c.optional,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::plan::Overrides;

    #[test]
    fn names_follow_the_steps_and_repeat_blocks() {
        let text = r#"
name = "c"
[target]
base_url = "http://127.0.0.1:1"
[load]
vus = 1
iterations = 1
[[scenarios]]
name = "chat"
steps = [
  { ws_connect = {} },
  { ws_send = { json = { type = "ping" } } },
  { ws_expect = { type = "pong" } },
  { repeat = { count = 2, steps = [ { ws_send = { text = "x" } }, { ws_expect = { type = "ack", optional = true } } ] } },
  { ws_expect = { type = "pong", name = "expect ack" } },
]
[[isolation]]
pointer = "/user_id"
equals = "{subject}"
"#;
        let plan = Plan::from_text("c.toml", text, &Overrides::default()).unwrap();
        let d = declared(&plan);
        let names: Vec<&str> = d.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "chat/ws_connect",
                "chat/expect pong",
                "chat/expect ack",
                "chat/expect ack#2",
                "isolation:/user_id"
            ]
        );
        let must: Vec<&str> = d
            .iter()
            .filter(|c| c.kind.must_evaluate() && !c.optional)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            must,
            [
                "chat/expect pong",
                "chat/expect ack#2",
                "isolation:/user_id"
            ]
        );
    }

    #[test]
    fn an_http_steps_default_name_masks_its_credentials() {
        let text = r#"
name = "c"
[target]
base_url = "http://127.0.0.1:1"
[load]
vus = 1
iterations = 1
[[scenarios]]
name = "api"
steps = [
  { http = { path = "/items?api_key=k-1&page=2" } },
  { http = { method = "POST", path = "https://u:p@127.0.0.1:1/x" } },
  { http = { path = "/health" } },
]
"#;
        let plan = Plan::from_text("c.toml", text, &Overrides::default()).unwrap();
        let names: Vec<String> = declared(&plan).into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "api/GET /items?api_key=<redacted>&page=2",
                "api/POST https://<redacted>@127.0.0.1:1/x",
                "api/GET /health"
            ]
        );
    }
}

//! The names a plan's measurements can carry: its metrics, checks, scenarios, the steps a
//! failure can be filed under and the failure categories. Workers name what they record with
//! exactly these; the coordinator refuses a snapshot that names anything else, so no peer can
//! make it store names (and memory) the plan never asked for.

use std::collections::{BTreeMap, BTreeSet};

use crate::checks::{UniqueNames, isolation_name, step_base_name};
use crate::plan::{Plan, Step};

/// Metric of TCP + TLS + upgrade.
pub const METRIC_HANDSHAKE: &str = "ws.handshake";
/// Metric of connect start to confirmation frame.
pub const METRIC_CONFIRMATION: &str = "ws.confirmation";
/// Metric of whole sessions (every scenario).
pub const METRIC_SESSION: &str = "session";
/// The step a failure is filed under when minting the session's token failed.
pub const STEP_AUTH: &str = "auth";

/// Everything a plan's measurements may be named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vocabulary {
    /// Latency metrics: `session`, `session.<scenario>`, `ws.handshake`, `ws.confirmation`,
    /// `step.<scenario>.<step>`, `event.<scenario>.<step or event type>`.
    pub metrics: BTreeSet<String>,
    /// Checks: `<scenario>/<step>` for every step, `isolation:<name>`.
    pub checks: BTreeSet<String>,
    /// Per scenario, the steps a failure can be filed under: every step's unique name,
    /// [`STEP_AUTH`] and `isolation:<name>`.
    pub steps: BTreeMap<String, BTreeSet<String>>,
    /// Failure categories: the built-in ones and the plan's classifiers'.
    pub categories: BTreeSet<String>,
}

impl Vocabulary {
    /// The names `plan`'s measurements can carry.
    pub fn of(plan: &Plan) -> Vocabulary {
        let mut v = Vocabulary::default();
        for m in [METRIC_HANDSHAKE, METRIC_CONFIRMATION, METRIC_SESSION] {
            v.metrics.insert(m.to_owned());
        }
        let isolation: Vec<String> = plan.isolation.iter().map(isolation_name).collect();
        for s in &plan.scenarios {
            v.metrics.insert(format!("session.{}", s.name));
            let mut steps: BTreeSet<String> = isolation.iter().cloned().collect();
            steps.insert(STEP_AUTH.to_owned());
            walk(
                &s.steps,
                &s.name,
                &mut UniqueNames::default(),
                &mut v,
                &mut steps,
            );
            v.steps.insert(s.name.clone(), steps);
        }
        v.checks.extend(isolation);
        v.categories.extend(
            crate::words::FailureCategory::BUILTIN
                .iter()
                .map(|c| c.as_str().to_owned()),
        );
        v.categories
            .extend(plan.classifiers.iter().map(|c| c.category.clone()));
        v
    }

    /// Whether a failure may be filed under `scenario` / `step`.
    pub fn has_step(&self, scenario: &str, step: &str) -> bool {
        self.steps.get(scenario).is_some_and(|s| s.contains(step))
    }
}

/// Names every step the way the worker's program does: depth first, a `repeat` block taking
/// its own name before its steps.
fn walk(
    steps: &[Step],
    scenario: &str,
    names: &mut UniqueNames,
    v: &mut Vocabulary,
    failure_steps: &mut BTreeSet<String>,
) {
    for step in steps {
        let name = names.unique(step_base_name(step));
        v.metrics.insert(format!("step.{scenario}.{name}"));
        v.checks.insert(format!("{scenario}/{name}"));
        match step {
            Step::WsExpect(_) => {
                v.metrics.insert(format!("event.{scenario}.{name}"));
            }
            Step::WsExpectSequence(s) => {
                for t in s.expected.types() {
                    v.metrics.insert(format!("event.{scenario}.{t}"));
                }
            }
            Step::Repeat(r) => walk(&r.steps, scenario, names, v, failure_steps),
            _ => {}
        }
        failure_steps.insert(name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::plan::Overrides;

    #[test]
    fn every_step_names_a_metric_and_a_check() {
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
  { repeat = { count = 2, steps = [ { ws_expect = { type = "pong" } } ] } },
  { ws_expect_sequence = { orders = [["a", "b"]], ignore = ["x"] } },
]
[[isolation]]
name = "user"
pointer = "/user_id"
equals = "{subject}"
[[classifiers]]
category = "manager_limit"
close_code = 1011
"#;
        let plan = Plan::from_text("c.toml", text, &Overrides::default()).unwrap();
        let v = Vocabulary::of(&plan);
        let metrics: Vec<&str> = v.metrics.iter().map(String::as_str).collect();
        assert_eq!(
            metrics,
            [
                "event.chat.a",
                "event.chat.b",
                "event.chat.expect pong",
                "session",
                "session.chat",
                "step.chat.expect pong",
                "step.chat.repeat",
                "step.chat.ws_connect",
                "step.chat.ws_expect_sequence",
                "step.chat.ws_send",
                "ws.confirmation",
                "ws.handshake",
            ]
        );
        assert!(v.checks.contains("chat/ws_send") && v.checks.contains("isolation:user"));
        assert!(v.has_step("chat", "expect pong") && v.has_step("chat", "isolation:user"));
        assert!(v.has_step("chat", "auth") && !v.has_step("chat", "nope"));
        assert!(v.categories.contains("manager_limit") && v.categories.contains("timeout"));
    }
}

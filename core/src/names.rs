//! The names a plan's measurements can carry: its metrics, checks, scenarios, the steps a
//! failure can be filed under and the failure categories. Workers name what they record with
//! exactly these; the coordinator refuses a snapshot that names anything else, so no peer can
//! make it store names (and memory) the plan never asked for.
//!
//! Reports keep the human names (`event.agent.expect pong`); where a name must stand without
//! quoting (a Prometheus label a dashboard filters on, a file name, a word typed in a shell) it
//! is written in its safe form ([`safe`], made distinct within a plan by [`SafeNames`]).

use std::borrow::Cow;
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

    /// The safe forms of the metrics' names ([`SafeNames`]).
    pub fn safe_metrics(&self) -> SafeNames {
        SafeNames::of(&self.metrics)
    }

    /// Whether a failure may be filed under `scenario` / `step`.
    pub fn has_step(&self, scenario: &str, step: &str) -> bool {
        self.steps.get(scenario).is_some_and(|s| s.contains(step))
    }
}

/// Whether `c` stands as itself in a safe name: ASCII letters and digits, `_`, `.`, `:`, `-`.
fn is_safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// A name in its safe form: nothing in it needs quoting in a Prometheus label matcher, a file
/// name or a POSIX shell word, and it is never read as a flag or a hidden file.
///
/// - ASCII letters and digits, `_`, `.`, `:` and `-` stay as they are;
/// - every other ASCII character (a space, a quote, `/`, `#`, a control character) becomes
///   `_`;
/// - every other character becomes `u` and its Unicode code point in lowercase hex, at least
///   four digits (`é` is `u00e9`, `日` is `u65e5`), so names in other scripts stay apart;
/// - a leading `-` or `.` becomes `_`, and the empty name is `_`.
///
/// A name already safe is returned as it is (every built-in name is: `session`,
/// `ws.handshake`, `step.chat.ws_connect`). `step.chat.expect pong` is
/// `step.chat.expect_pong`; `step.chat.GET /api/x?y=1` is `step.chat.GET__api_x_y_1`.
///
/// No mapping that leaves safe names alone can keep every other name apart (`a b` and `a_b`
/// both want `a_b`): [`SafeNames`] settles that for the names of one plan.
pub fn safe(name: &str) -> Cow<'_, str> {
    let leading = |s: &str| s.starts_with(['-', '.']);
    if !name.is_empty() && !leading(name) && name.chars().all(is_safe_char) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if is_safe_char(c) {
            out.push(c);
        } else if c.is_ascii() {
            out.push('_');
        } else {
            out.push_str(&format!("u{:04x}", u32::from(c)));
        }
    }
    if leading(&out) {
        // `-` and `.` are one byte.
        out.replace_range(..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    Cow::Owned(out)
}

/// The safe forms of a set of names (a plan's metrics), distinct from each other: a name
/// already safe keeps itself; every other name gets its [`safe`] form, or, when that is taken
/// by another name of the set, the form with `-2` appended (`-3`, ... : the first free one),
/// the names taken in sort order. So a plan's names never collide in `/metrics`, and a name
/// changes only when another of the same plan wants its safe form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SafeNames(BTreeMap<String, String>);

impl SafeNames {
    /// The safe forms of `names`.
    pub fn of<'a>(names: impl IntoIterator<Item = &'a String>) -> SafeNames {
        let names: BTreeSet<&String> = names.into_iter().collect();
        let mut map = BTreeMap::new();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        for name in &names {
            if let Cow::Borrowed(same) = safe(name) {
                taken.insert(same.to_owned());
                map.insert((*name).clone(), same.to_owned());
            }
        }
        for name in names {
            if map.contains_key(name) {
                continue;
            }
            let base = safe(name).into_owned();
            let mut candidate = base.clone();
            let mut n = 2u32;
            while taken.contains(&candidate) {
                candidate = format!("{base}-{n}");
                n += 1;
            }
            taken.insert(candidate.clone());
            map.insert(name.clone(), candidate);
        }
        SafeNames(map)
    }

    /// The safe form of `name`: its own if it is one of the set, else [`safe`]'s.
    pub fn get<'a>(&'a self, name: &'a str) -> Cow<'a, str> {
        match self.0.get(name) {
            Some(s) => Cow::Borrowed(s),
            None => safe(name),
        }
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

    #[test]
    fn safe_names_keep_safe_characters_and_map_the_rest() {
        for keep in [
            "session",
            "ws.handshake",
            "step.chat.ws_connect",
            "a:b-c_D9",
        ] {
            assert!(matches!(safe(keep), Cow::Borrowed(_)), "{keep}");
        }
        assert_eq!(safe("event.agent.expect pong"), "event.agent.expect_pong");
        assert_eq!(safe("step.chat.GET /api/x?y=1"), "step.chat.GET__api_x_y_1");
        assert_eq!(safe("say \"héllo\" / 日本"), "say__hu00e9llo____u65e5u672c");
        assert_eq!(
            safe("'quoted' $HOME `x`; rm\t\n"),
            "_quoted___HOME__x___rm__"
        );
        assert_eq!(safe("🦀"), "u1f980");
        assert_eq!(safe("-rf"), "_rf");
        assert_eq!(safe(".."), "_.");
        assert_eq!(safe(""), "_");
        // Nothing a shell, a label matcher or a file name would read specially is left.
        for name in [
            "a b",
            "x\"y'z",
            "p/q\\r",
            "ü→∑",
            "$(id)",
            "a|b&c;d<e>f*g?h[i]{j}~k",
        ] {
            let s = safe(name);
            assert!(
                s.chars().all(is_safe_char) && !s.starts_with(['-', '.']),
                "{name} -> {s}"
            );
        }
    }

    #[test]
    fn a_plans_safe_names_are_distinct_and_safe_names_stay() {
        let names: Vec<String> = [
            "step.c.a b",
            "step.c.a_b",
            "step.c.a/b",
            "step.c.a_b-2",
            "step.c.é",
            "step.c.è",
        ]
        .map(str::to_owned)
        .to_vec();
        let safe = SafeNames::of(&names);
        assert_eq!(
            safe.get("step.c.a_b"),
            "step.c.a_b",
            "a safe name keeps itself"
        );
        assert_eq!(safe.get("step.c.a_b-2"), "step.c.a_b-2");
        // `a b` and `a/b` both want `a_b`, taken; in sort order they get the next free forms.
        assert_eq!(safe.get("step.c.a b"), "step.c.a_b-3");
        assert_eq!(safe.get("step.c.a/b"), "step.c.a_b-4");
        assert_eq!(safe.get("step.c.é"), "step.c.u00e9");
        assert_eq!(safe.get("step.c.è"), "step.c.u00e8");
        let all: BTreeSet<String> = names.iter().map(|n| safe.get(n).into_owned()).collect();
        assert_eq!(all.len(), names.len());
        assert_eq!(safe.get("not.in.the set"), "not.in.the_set");
    }

    #[test]
    fn a_step_named_with_spaces_quotes_a_slash_and_other_scripts() {
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
  { ws_send = { json = { type = "ping" }, name = "say \"héllo\" / 日本" } },
  { ws_expect = { type = "pong" } },
]
"#;
        let plan = Plan::from_text("c.toml", text, &Overrides::default()).unwrap();
        let v = Vocabulary::of(&plan);
        assert!(v.metrics.contains("step.chat.say \"héllo\" / 日本"));
        let safe = v.safe_metrics();
        assert_eq!(
            safe.get("step.chat.say \"héllo\" / 日本"),
            "step.chat.say__hu00e9llo____u65e5u672c"
        );
        assert_eq!(safe.get("event.chat.expect pong"), "event.chat.expect_pong");
        assert_eq!(safe.get("ws.handshake"), "ws.handshake");
    }
}

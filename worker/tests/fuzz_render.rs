//! Fuzzes rendering (`render::render`, `render::compile`, `JsonTemplate`) with templates built
//! from arbitrary parts and parsed from arbitrary strings, random session contexts and
//! variables; asserts it never panics, renders `None` exactly when a variable is unset, and
//! otherwise yields exactly each part's value in order (literal text as itself, variable values
//! verbatim even when they hold braces), and that JSON templates render every string leaf so.
//!
//! Seeds: `fuzz/corpus/template/*.txt` (shared with `core/tests/fuzz_template.rs`).

#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/support.rs"]
mod support;

use gauntlet_core::template::{Builtin, Part, Template};
use gauntlet_worker::render::{self, Context, JsonTemplate, Vars, unix_now};
use gauntlet_worker::rng::Rng;
use proptest::prelude::*;
use serde_json::Value;
use std::time::Duration;
use support::Outcome;

/// Variable names the generated templates read; `VARS` of them may be set.
const NAMES: [&str; 4] = ["a", "run_id", "thread", "x_1"];

/// A session's context, owned.
#[derive(Debug, Clone)]
struct Session {
    vu: u64,
    iteration: u64,
    subject: String,
    subject_index: u64,
    scenario: String,
    token: String,
    vars: Vec<(usize, String)>,
    rng_key: u64,
}

impl Session {
    fn vars(&self) -> Vars {
        let mut vars = Vars::default();
        for (i, value) in &self.vars {
            vars.set(NAMES[*i], value.clone());
        }
        vars
    }

    fn context<'a>(&'a self, vars: &'a Vars) -> Context<'a> {
        Context {
            vu: self.vu,
            iteration: self.iteration,
            subject: &self.subject,
            subject_index: self.subject_index,
            scenario: &self.scenario,
            token: &self.token,
            vars,
        }
    }
}

/// Text a value may hold: braces, placeholders and multi-byte characters included.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[{}a-z_0-9é🚀 ]{0,12}",
        Just("{vu}".to_owned())
    ]
}

fn session() -> impl Strategy<Value = Session> {
    (
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        (value_text(), value_text(), value_text()),
        prop::collection::vec((0..NAMES.len(), value_text()), 0..NAMES.len() + 1),
    )
        .prop_map(
            |((vu, iteration, subject_index, rng_key), (subject, scenario, token), vars)| Session {
                vu,
                iteration,
                subject,
                subject_index,
                scenario,
                token,
                vars,
                rng_key,
            },
        )
}

fn part(with_clock: bool) -> impl Strategy<Value = Part> {
    let builtins: Vec<Builtin> = Builtin::ALL
        .iter()
        .map(|(_, b)| *b)
        .filter(|b| with_clock || !matches!(b, Builtin::Uuid | Builtin::Now | Builtin::NowMs))
        .collect();
    prop_oneof![
        3 => value_text().prop_map(Part::Literal),
        2 => prop::sample::select(builtins).prop_map(Part::Builtin),
        2 => prop::sample::select(NAMES.to_vec()).prop_map(|n| Part::Var(n.to_owned())),
    ]
}

/// A template from parts, through its text (so adjacent literals merge as parsing does).
fn template(with_clock: bool) -> impl Strategy<Value = Template> {
    prop::collection::vec(part(with_clock), 0..8).prop_map(|parts| {
        let text = Template { parts }.to_string();
        Template::parse(&text).unwrap()
    })
}

/// What one part renders to.
#[derive(Debug)]
enum Piece {
    Exact(String),
    /// `{now}` / `{now_ms}`: a number read between the two clock readings.
    Clock(u128, u128),
}

/// The pieces `t` must render to when rendered between the clock readings `before` and
/// `after`, or `None` when it reads an unset variable.
fn expected(
    t: &Template,
    s: &Session,
    vars: &Vars,
    mut rng: Rng,
    (before, after): (Duration, Duration),
) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    for part in &t.parts {
        out.push(match part {
            Part::Literal(text) => Piece::Exact(text.clone()),
            Part::Var(name) => Piece::Exact(vars.get(name)?.to_owned()),
            Part::Env(_) => Piece::Exact(String::new()),
            Part::Builtin(b) => match b {
                Builtin::Vu => Piece::Exact(s.vu.to_string()),
                Builtin::Iteration => Piece::Exact(s.iteration.to_string()),
                Builtin::Subject => Piece::Exact(s.subject.clone()),
                Builtin::SubjectIndex => Piece::Exact(s.subject_index.to_string()),
                Builtin::Scenario => Piece::Exact(s.scenario.clone()),
                Builtin::Token => Piece::Exact(s.token.clone()),
                Builtin::Uuid => Piece::Exact(rng.uuid()),
                Builtin::Now => {
                    Piece::Clock(u128::from(before.as_secs()), u128::from(after.as_secs()))
                }
                Builtin::NowMs => Piece::Clock(before.as_millis(), after.as_millis()),
            },
        });
    }
    Some(out)
}

/// Whether `out` is exactly `pieces` in order.
fn matches(pieces: &[Piece], out: &str) -> bool {
    match pieces.split_first() {
        None => out.is_empty(),
        Some((Piece::Exact(text), rest)) => out
            .strip_prefix(text.as_str())
            .is_some_and(|tail| matches(rest, tail)),
        Some((Piece::Clock(low, high), rest)) => (1..=out.len().min(39)).any(|n| {
            out.is_char_boundary(n)
                && out[..n].bytes().all(|b| b.is_ascii_digit())
                && out[..n]
                    .parse::<u128>()
                    .is_ok_and(|v| (*low..=*high).contains(&v))
                && matches(rest, &out[n..])
        }),
    }
}

fn check_render(t: &Template, s: &Session) -> Outcome {
    let vars = s.vars();
    let rng = Rng::keyed(&[s.rng_key]);
    let before = unix_now();
    let got = render::render(t, &s.context(&vars), &mut rng.clone());
    let want = expected(t, s, &vars, rng.clone(), (before, unix_now()));
    let unset: Vec<&str> = t.vars().filter(|v| vars.get(v).is_none()).collect();
    prop_assert_eq!(got.is_none(), !unset.is_empty(), "unset: {:?}", unset);
    if let (Some(got), Some(want)) = (got, want) {
        prop_assert!(matches(&want, &got), "{t:?} rendered {got:?}, not {want:?}");
    }
    // Literal text renders to itself.
    if let Some(text) = t.as_literal() {
        let escaped = text.replace('{', "{{").replace('}', "}}");
        let t = render::compile(&escaped).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = render::render(&t, &s.context(&vars), &mut rng.clone());
        prop_assert_eq!(got.as_deref(), Some(text));
    }
    Ok(())
}

/// Every seed of the corpus, run before any random case.
fn every_seed_renders() {
    let s = Session {
        vu: 7,
        iteration: 2,
        subject: "user-{7}".into(),
        subject_index: 3,
        scenario: "s".into(),
        token: "tok".into(),
        vars: vec![(1, "r{1}".into())],
        rng_key: 1,
    };
    for (name, bytes) in support::corpus("template") {
        let text = String::from_utf8(bytes).unwrap();
        if let Ok(t) = Template::parse(&text) {
            check_render(&t, &s).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        }
    }
}

#[test]
fn templates_render_exactly_their_parts() {
    every_seed_renders();
    let mut runner = support::runner(512);
    let strategy = (template(true), session());
    support::run(&mut runner, &strategy, |(t, s)| check_render(&t, &s));
}

#[test]
fn arbitrary_strings_compile_and_render_or_are_refused() {
    let mut runner = support::runner(512);
    let strategy = (
        prop_oneof![
            any::<String>(),
            "[{}a-z_:é ]{0,24}",
            // Environment variables that are surely unset.
            "[a-z{}]{0,6}\\{env:GAUNTLET_FUZZ_UNSET_[A-Z]{1,4}\\}[a-z{}]{0,6}",
        ],
        session(),
    );
    support::run(&mut runner, &strategy, |(text, s)| {
        let parsed = Template::parse(&text);
        match render::compile(&text) {
            Ok(t) => {
                let parsed = parsed.map_err(|e| TestCaseError::fail(e.to_string()))?;
                // Nothing but environment variables differs from the parsed template.
                prop_assert_eq!(
                    t.vars().collect::<Vec<_>>(),
                    parsed.vars().collect::<Vec<_>>()
                );
                prop_assert_eq!(t.envs().count(), 0);
                check_render(&t, &s)?;
            }
            Err(e) => match parsed {
                Err(p) => prop_assert_eq!(e.0, p.0),
                Ok(p) => {
                    let missing = p.envs().find(|v| std::env::var(v).is_err());
                    prop_assert!(missing.is_some_and(|v| e.contains(v)), "{e}");
                }
            },
        }
        Ok(())
    });
}

/// A JSON value whose strings are templates without clock or random parts, with the value it
/// must render to in `session` (`None`: a variable is unset).
fn json_template() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        3 => template(false).prop_map(|t| Value::String(t.to_string())),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z{}]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn render_leaves(v: &Value, s: &Session, vars: &Vars) -> Option<Value> {
    Some(match v {
        Value::String(text) => {
            let t = Template::parse(text).unwrap();
            let pieces = expected(
                &t,
                s,
                vars,
                Rng::keyed(&[0]),
                (Duration::ZERO, Duration::ZERO),
            )?;
            Value::String(
                pieces
                    .into_iter()
                    .map(|p| match p {
                        Piece::Exact(text) => text,
                        Piece::Clock(..) => unreachable!("no clock in JSON leaves"),
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_leaves(i, s, vars))
                .collect::<Option<_>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Some((k.clone(), render_leaves(v, s, vars)?)))
                .collect::<Option<_>>()?,
        ),
        other => other.clone(),
    })
}

#[test]
fn json_templates_render_every_leaf() {
    let mut runner = support::runner(256);
    support::run(&mut runner, &(json_template(), session()), |(json, s)| {
        let t = JsonTemplate::compile(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let vars = s.vars();
        let mut rng = Rng::keyed(&[s.rng_key]);
        let want = render_leaves(&json, &s, &vars);
        let value = t.render_value(&s.context(&vars), &mut rng);
        let text = t.render_text(&s.context(&vars), &mut rng);
        prop_assert_eq!(&value, &want);
        prop_assert_eq!(text.is_some(), want.is_some());
        if let (Some(text), Some(want)) = (text, want) {
            let parsed: Value = serde_json::from_str(text.as_str()).unwrap();
            prop_assert_eq!(parsed, want);
        }
        if matches!(t, JsonTemplate::Fixed(..)) {
            let mut placeholders = 0;
            gauntlet_core::plan::each_string(&json, &mut |leaf| {
                placeholders += Template::parse(leaf).unwrap().as_literal().is_none() as usize;
            });
            prop_assert_eq!(placeholders, 0, "a fixed frame with placeholders");
        }
        Ok(())
    });
}

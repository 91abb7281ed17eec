//! Fuzzes `Plan::from_text` with mutated example plans (`plans/*.toml` and the seeds in
//! `fuzz/corpus/plan/`: lines deleted, duplicated, swapped or inserted, values replaced by other
//! TOML values, bytes flipped) and arbitrary strings; asserts it never panics, every error is
//! `file:line:col: field: message` with its line and column inside the text, and a plan that
//! loads loads the same again and re-validates once serialized back to TOML.
//!
//! Seeds: `accept-*.toml` must load, `reject-*.toml` must be refused, others may go either way.

#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/support.rs"]
mod support;

use gauntlet_core::config_file::{ConfigError, Located};
use gauntlet_core::plan::{Overrides, Plan, PlanError, PlanSpec};
use proptest::prelude::*;
use proptest::sample::Index;
use support::Outcome;

const FILE: &str = "fuzz.toml";

/// The example plans and the corpus seeds, as `(name, text)`.
fn bases() -> Vec<(String, String)> {
    let plans = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plans");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&plans)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = format!("plans/{}", p.file_name().unwrap().to_string_lossy());
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no plans in {}", plans.display());
    out.extend(
        support::corpus("plan")
            .into_iter()
            .map(|(name, bytes)| (name, String::from_utf8_lossy(&bytes).into_owned())),
    );
    out
}

fn locations(e: &PlanError) -> Result<Vec<&Located>, TestCaseError> {
    Ok(match e {
        PlanError::File(ConfigError::Invalid(l)) => vec![l],
        PlanError::File(ConfigError::Read { .. }) => {
            return Err(TestCaseError::fail("from_text reported a read error"));
        }
        PlanError::Invalid(problems) => {
            prop_assert!(!problems.is_empty(), "an invalid plan with no problem");
            problems.iter().collect()
        }
    })
}

/// `l` is `file:line:col: field: message` (the place and field left out only when unknown),
/// and its place is inside `text`.
fn check_located(l: &Located, text: &str) -> Outcome {
    prop_assert_eq!(l.file.as_str(), FILE);
    prop_assert!(!l.message.is_empty(), "no message: {l:?}");
    if l.line == 0 {
        prop_assert_eq!(l.col, 0, "a column without a line: {:?}", l);
    } else {
        let lines: Vec<&str> = text.split('\n').collect();
        prop_assert!(
            l.line <= lines.len(),
            "line {} of {}: {l}",
            l.line,
            lines.len()
        );
        let width = lines[l.line - 1].chars().count();
        prop_assert!(
            (1..=width + 1).contains(&l.col),
            "column {} of a {width}-character line: {l}",
            l.col
        );
    }
    let shown = l.to_string();
    let mut rest = shown.strip_prefix(FILE).unwrap_or_default();
    if l.line > 0 {
        let place = format!(":{}:{}", l.line, l.col);
        prop_assert!(rest.starts_with(&place), "{shown:?} lacks {place:?}");
        rest = &rest[place.len()..];
    }
    if !l.field.is_empty() {
        let field = format!(": {}", l.field);
        prop_assert!(rest.starts_with(&field), "{shown:?} lacks {field:?}");
        rest = &rest[field.len()..];
    }
    prop_assert_eq!(rest, format!(": {}", l.message), "in {:?}", shown);
    Ok(())
}

/// Loads `text` and checks every property; returns whether it loaded.
fn check(text: &str) -> Result<bool, TestCaseError> {
    let overrides = Overrides::default();
    match Plan::from_text(FILE, text, &overrides) {
        Err(e) => {
            let shown = e.to_string();
            for l in locations(&e)? {
                check_located(l, text)?;
                prop_assert!(shown.contains(&l.to_string()));
            }
            prop_assert!(Plan::from_text(FILE, text, &overrides).is_err());
            Ok(false)
        }
        Ok(plan) => {
            // The plan as written re-serializes to a file that loads to the same plan (a
            // fixpoint), and the resolved plan travels to workers (JSON) unchanged.
            let spec: PlanSpec = gauntlet_core::config_file::parse(FILE, text)
                .map_err(|e| TestCaseError::fail(format!("loads, but its spec does not: {e}")))?;
            let serialized = toml::to_string(&spec).map_err(|e| {
                TestCaseError::fail(format!("a loaded plan does not serialize: {e}"))
            })?;
            let wire = serde_json::to_string(&plan).unwrap();
            let again = Plan::from_text(FILE, text, &overrides)
                .map_err(|e| TestCaseError::fail(format!("loads once, not twice: {e}")))?;
            prop_assert_eq!(&serde_json::to_string(&again).unwrap(), &wire);
            let reloaded = Plan::from_text(FILE, &serialized, &overrides).map_err(|e| {
                TestCaseError::fail(format!(
                    "serialized back, the plan is refused: {e}\n{serialized}"
                ))
            })?;
            prop_assert_eq!(&serde_json::to_string(&reloaded).unwrap(), &wire);
            let travelled: Plan = serde_json::from_str(&wire).map_err(|e| {
                TestCaseError::fail(format!("the resolved plan does not travel: {e}"))
            })?;
            prop_assert_eq!(&serde_json::to_string(&travelled).unwrap(), &wire);
            Ok(true)
        }
    }
}

/// Every seed of the corpus, run before any random case.
fn every_seed_and_example_plan_holds() {
    for (name, text) in bases() {
        let loaded = check(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name.starts_with("plans/") || name.starts_with("accept-") {
            assert!(
                loaded,
                "{name} is refused: {}",
                Plan::from_text(FILE, &text, &Overrides::default()).unwrap_err()
            );
        }
        if name.starts_with("reject-") {
            assert!(!loaded, "{name} loads");
        }
    }
}

/// A TOML value, as text.
fn toml_value() -> impl Strategy<Value = String> {
    let simple = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "0",
            "-1",
            "1",
            "65536",
            "4294967296",
            "99999999999999999999",
            "nan",
            "inf",
            "-inf",
            "-0.0",
            "1e308",
            "0.5",
            "1.5",
            "true",
            "false",
            "\"\"",
            "\"{vu}\"",
            "\"{\"",
            "\"}\"",
            "\"{{}}\"",
            "\"{env:}\"",
            "\"{nope}\"",
            "\"0s\"",
            "\"5x\"",
            "\"1h\"",
            "\"18446744073709551615s\"",
            "\"(\"",
            "\"[a-\"",
            "\"ws://\"",
            "\"http://127.0.0.1:0\"",
            "\"/\"",
            "\"open\"",
            "\"closed\"",
            "\"HS256\"",
            "1979-05-27T07:32:00Z",
            "[]",
            "{}",
            "{ a = 1 }",
            "[1, \"a\"]",
            "'''multi\nline'''",
        ])
        .prop_map(str::to_owned),
        any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
    ];
    simple.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", fields.join(", "))
            }),
        ]
    })
}

/// One edit of a plan's text.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    InsertLine(Index, String),
    /// Replace what follows the first `=` of a line that has one.
    ReplaceValue(Index, String),
    FlipByte(Index, u8),
    InsertBytes(Index, Vec<u8>),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let line = prop_oneof![
        toml_value().prop_map(|v| format!("x = {v}")),
        ("[a-z_]{1,12}", toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        prop::sample::select(vec![
            "[load]",
            "[target]",
            "[auth]",
            "[fleet]",
            "[[scenarios]]",
            "[[classifiers]]",
            "[[isolation]]",
            "[[thresholds]]",
            "[scenarios.vars]",
            "steps = []",
            "[",
            "]]",
            "=",
            "\"",
        ])
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        3 => any::<Index>().prop_map(Edit::DeleteLine),
        2 => any::<Index>().prop_map(Edit::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        2 => (any::<Index>(), line).prop_map(|(at, l)| Edit::InsertLine(at, l)),
        4 => (any::<Index>(), toml_value()).prop_map(|(at, v)| Edit::ReplaceValue(at, v)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::FlipByte(at, b)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Edit::InsertBytes(at, b)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(edit: &Edit, text: &str) -> String {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let pick = |at: &Index, n: usize| at.index(n.max(1));
    let bytes_edit = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = text.as_bytes().to_vec();
        edit(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    };
    match edit {
        Edit::DeleteLine(at) => {
            lines.remove(pick(at, lines.len()));
        }
        Edit::DuplicateLine(at) => {
            let i = pick(at, lines.len());
            let copy = lines[i].clone();
            lines.insert(i, copy);
        }
        Edit::SwapLines(a, b) => {
            let (a, b) = (pick(a, lines.len()), pick(b, lines.len()));
            lines.swap(a, b);
        }
        Edit::InsertLine(at, line) => {
            let i = pick(at, lines.len() + 1);
            lines.insert(i, format!("{line}\n"));
        }
        Edit::ReplaceValue(at, value) => {
            let with_value: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].contains('='))
                .collect();
            if !with_value.is_empty() {
                let i = with_value[pick(at, with_value.len())];
                let key = lines[i].split_once('=').unwrap().0.to_owned();
                lines[i] = format!("{key}= {value}\n");
            }
        }
        Edit::FlipByte(at, mask) => {
            return bytes_edit(&|b| {
                if !b.is_empty() {
                    let i = pick(at, b.len());
                    b[i] ^= mask;
                }
            });
        }
        Edit::InsertBytes(at, inserted) => {
            return bytes_edit(&|b| {
                let i = pick(at, b.len() + 1);
                b.splice(i..i, inserted.iter().copied());
            });
        }
        Edit::Truncate(at) => {
            return bytes_edit(&|b| b.truncate(pick(at, b.len() + 1)));
        }
    }
    lines.concat()
}

#[test]
fn mutated_plans_load_or_are_located() {
    every_seed_and_example_plan_holds();
    let bases: Vec<String> = bases().into_iter().map(|(_, text)| text).collect();
    let mut runner = support::runner(512);
    let strategy = (
        prop::sample::select(bases),
        prop::collection::vec(edit(), 1..4),
    );
    support::run(&mut runner, &strategy, |(base, edits)| {
        let text = edits.iter().fold(base, |text, e| apply(e, &text));
        check(&text).map(|_| ())
    });
}

#[test]
fn arbitrary_text_loads_or_is_located() {
    let mut runner = support::runner(512);
    let strategy = prop_oneof![
        any::<String>(),
        "[a-z_\\[\\]=\"'{}.,\\n\\r\\t #0-9-]{0,200}",
        // A well-formed skeleton with arbitrary values.
        (toml_value(), toml_value(), toml_value()).prop_map(|(a, b, c)| format!(
            "name = {a}\n[load]\nvus = {b}\n[[scenarios]]\nname = \"s\"\nsteps = [{{ sleep = {{ duration = {c} }} }}]\n"
        )),
    ];
    support::run(&mut runner, &strategy, |text| check(&text).map(|_| ()));
}

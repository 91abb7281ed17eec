//! Fuzzes `Template::parse` with arbitrary and brace-heavy strings; asserts it never panics, a
//! parsed template prints back to text that parses to the same template, escaped literal text
//! parses to exactly that text, and an error's "at character N" points at the offending brace.
//!
//! Seeds: `fuzz/corpus/template/*.txt`, one template per file (whole file, no trailing newline
//! added); `ok-*` must parse, `err-*` must not.

#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/support.rs"]
mod support;

use gauntlet_core::template::{Part, Template};
use proptest::prelude::*;
use support::Outcome;

/// `text` written as a template of nothing but itself.
fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

/// Every property, for any `text`; returns whether it parsed.
fn check(text: &str) -> Result<bool, TestCaseError> {
    match Template::parse(text) {
        Ok(t) => {
            for pair in t.parts.windows(2) {
                prop_assert!(
                    !matches!(pair, [Part::Literal(_), Part::Literal(_)]),
                    "adjacent literals in {t:?}"
                );
            }
            for part in &t.parts {
                if let Part::Literal(s) = part {
                    prop_assert!(!s.is_empty(), "an empty literal in {t:?}");
                }
            }
            let printed = t.to_string();
            prop_assert_eq!(
                Template::parse(&printed),
                Ok(t.clone()),
                "via {:?}",
                printed
            );
            // Text without braces is its own template.
            if !text.contains(['{', '}']) {
                prop_assert_eq!(t.as_literal(), Some(text));
            }
            Ok(true)
        }
        Err(e) => {
            let message = e.to_string();
            // "unmatched `}` at character N" / "unclosed `{` at character N": N counts characters.
            if let Some((_, after)) = message.split_once("at character ") {
                let n: usize = after
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                let brace = if message.starts_with("unmatched") {
                    '}'
                } else {
                    '{'
                };
                prop_assert_eq!(
                    text.chars().nth(n.wrapping_sub(1)),
                    Some(brace),
                    "{} in {:?}",
                    message,
                    text
                );
            }
            Ok(false)
        }
    }
}

fn literal_round_trip(text: &str) -> Outcome {
    let t = Template::parse(&escape(text)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(t.as_literal(), Some(text));
    Ok(())
}

/// Every seed of the corpus, run before any random case.
fn every_seed_holds() {
    for (name, bytes) in support::corpus("template") {
        let text = String::from_utf8(bytes).unwrap();
        let parsed = check(&text).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        literal_round_trip(&text).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        if name.starts_with("ok-") {
            assert!(parsed, "seed {name} does not parse");
        }
        if name.starts_with("err-") {
            assert!(!parsed, "seed {name} parses");
        }
    }
}

/// Strings made mostly of braces, placeholder names and multi-byte characters.
fn template_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        prop::sample::select(vec![
            "vu",
            "iteration",
            "subject",
            "subject_index",
            "scenario",
            "uuid",
            "now",
            "now_ms",
            "token",
            "env:",
            "env:HOME",
            "env:A-B",
            "run_id",
            " ",
            ":",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,6}",
        "[é🚀ü\u{0}\u{200b}]{1,3}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|p| p.concat())
}

#[test]
fn arbitrary_strings_parse_or_point_at_the_brace() {
    every_seed_holds();
    let mut runner = support::runner(1024);
    let strategy = prop_oneof![any::<String>(), template_like()];
    support::run(&mut runner, &strategy, |text| {
        check(&text)?;
        literal_round_trip(&text)
    });
}

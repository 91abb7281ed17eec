//! Fuzzes `classify::classify` with arbitrary symptoms and arbitrary valid plan classifiers;
//! asserts it never panics, the category is always `[a-z0-9_]+` (a built-in one or a
//! classifier's), the detail does not depend on the classifiers, the first matching classifier
//! wins, dropping a condition never stops a classifier matching, a classifier on `close_code = X`
//! alone catches exactly the `Close { code: X }` symptoms (and likewise `http_status`,
//! `error_code`), and with no classifiers the same symptom always gets the same category.
//!
//! Seeds: `fuzz/corpus/classify/*.toml`, each a `[[classifiers]]` list and a `[[symptoms]]` list
//! (`kind` plus the variant's fields), every symptom classified by every prefix of the list.

#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/support.rs"]
mod support;

use gauntlet_core::plan::ClassifierSpec as Classifier;
use gauntlet_worker::classify::{CompiledClassifier, Symptom};

/// The classifier's `(category, detail)`, the category by its name.
fn classify(s: &Symptom, classifiers: &[CompiledClassifier]) -> (String, String) {
    let (category, detail) = gauntlet_worker::classify::classify(s, classifiers);
    (category.to_string(), detail)
}
use proptest::prelude::*;
use support::Outcome;

/// Every category the built-in taxonomy can answer.
const BUILTIN: [&str; 19] = [
    "connect_refused",
    "dns",
    "tls",
    "auth_rejected",
    "handshake_rejected",
    "factory_init_failed",
    "service_not_ready",
    "internal_error",
    "unexpected_close",
    "error_frame",
    "timeout",
    "sequence_violation",
    "missing_event",
    "duplicate_event",
    "isolation_breach",
    "http_status",
    "check_failed",
    "protocol_error",
    "response_too_large",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "factory",
            "Factory SSOT validation failed",
            "Critical FACTORY failure",
            "Service not ready: warming up",
            "NOT READY",
            "Internal error",
            "SSOT Auth failed",
            "UserExecutionContext",
            "{\"type\":\"error_message\",\"error_code\":\"AUTH_REQUIRED\"}",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z :]{0,24}",
        any::<String>(),
    ]
}

fn code() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![
            1000u16, 1001, 1005, 1006, 1007, 1008, 1009, 1011, 4000, 4401
        ]),
        any::<u16>(),
    ]
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![200u16, 400, 401, 403, 404, 429, 500, 502, 503]),
        any::<u16>(),
    ]
}

fn error_code() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "AUTH_REQUIRED",
            "AUTH_FAILED",
            "AUTHX",
            "NO_TOKEN",
            "VALIDATION_FAILED",
            "FACTORY_INIT_FAILED",
            "FACTORY",
            "INTERNAL_ERROR",
            "SERVICE_NOT_READY",
            "SERVICE_UNAVAILABLE",
            "FORMAT_ERROR",
            "UNKNOWN",
            "",
        ])
        .prop_map(str::to_owned),
        "[A-Z_]{0,12}",
        any::<String>(),
    ]
}

fn symptom() -> impl Strategy<Value = Symptom> {
    prop_oneof![
        1 => text().prop_map(Symptom::ConnectRefused),
        1 => text().prop_map(Symptom::Dns),
        1 => text().prop_map(Symptom::Tls),
        1 => (status(), text()).prop_map(|(status, body)| Symptom::Handshake { status, body }),
        3 => (code(), text()).prop_map(|(code, reason)| Symptom::Close { code, reason }),
        1 => text().prop_map(Symptom::Reset),
        2 => (error_code(), text()).prop_map(|(code, text)| Symptom::ErrorFrame { code, text }),
        1 => text().prop_map(Symptom::Timeout),
        1 => text().prop_map(Symptom::Sequence),
        1 => text().prop_map(Symptom::MissingEvent),
        1 => text().prop_map(Symptom::DuplicateEvent),
        1 => (text(), text()).prop_map(|(check, text)| Symptom::Isolation { check, text }),
        1 => (status(), text()).prop_map(|(status, body)| Symptom::HttpStatus { status, body }),
        1 => (text(), text()).prop_map(|(name, sample)| Symptom::CheckFailed { name, sample }),
        1 => text().prop_map(Symptom::Protocol),
        1 => text().prop_map(Symptom::TooLarge),
    ]
}

fn regex() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            ".*",
            "^$",
            "(?i)factory",
            "^Service not ready",
            "not ready|warming",
            "[0-9]+",
            "UserExecutionContext",
            "\\{",
        ])
        .prop_map(str::to_owned),
        any::<String>().prop_map(|s| regex::escape(&s)),
    ]
}

/// A classifier that passes plan validation: a `[a-z0-9_]+` category (prefixed `p_`, which no
/// built-in category is, so a match is visible) and at least one condition.
fn classifier() -> impl Strategy<Value = Classifier> {
    (
        "p_[a-z0-9_]{0,8}",
        prop::option::of(code()),
        prop::option::of(regex()),
        prop::option::of(error_code()),
        prop::option::of(regex()),
        prop::option::of(status()),
    )
        .prop_map(
            |(category, close_code, close_reason, error_code, frame_regex, http_status)| {
                Classifier {
                    category,
                    close_code,
                    close_reason,
                    error_code,
                    frame_regex,
                    http_status,
                }
            },
        )
        .prop_filter("a classifier needs a condition", |c| {
            !conditions(c).is_empty()
        })
}

/// Which conditions `c` has, by number (0 close_code .. 4 http_status).
fn conditions(c: &Classifier) -> Vec<usize> {
    [
        c.close_code.is_some(),
        c.close_reason.is_some(),
        c.error_code.is_some(),
        c.frame_regex.is_some(),
        c.http_status.is_some(),
    ]
    .iter()
    .enumerate()
    .filter_map(|(i, given)| given.then_some(i))
    .collect()
}

fn without(c: &Classifier, condition: usize) -> Classifier {
    let mut c = c.clone();
    match condition {
        0 => c.close_code = None,
        1 => c.close_reason = None,
        2 => c.error_code = None,
        3 => c.frame_regex = None,
        _ => c.http_status = None,
    }
    c
}

fn compile(c: &Classifier) -> Result<CompiledClassifier, TestCaseError> {
    CompiledClassifier::compile(&c.resolve())
        .map_err(|e| TestCaseError::fail(format!("a valid classifier does not compile: {e}")))
}

/// Whether `c` alone takes `s`.
fn matches(c: &Classifier, s: &Symptom) -> Result<bool, TestCaseError> {
    Ok(classify(s, &[compile(c)?]).0 == c.category)
}

fn check(s: &Symptom, classifiers: &[Classifier]) -> Outcome {
    let compiled = classifiers
        .iter()
        .map(compile)
        .collect::<Result<Vec<_>, _>>()?;
    let builtin = classify(s, &[]);
    prop_assert_eq!(&builtin, &classify(&s.clone(), &[]), "not deterministic");
    prop_assert!(
        BUILTIN.contains(&builtin.0.as_str()),
        "unknown category {}",
        builtin.0
    );
    let (category, detail) = classify(s, &compiled);
    prop_assert!(
        !category.is_empty()
            && category
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "category {category:?}"
    );
    prop_assert_eq!(&detail, &builtin.1, "the detail depends on the classifiers");
    // The first classifier that matches on its own wins; none: the built-in category.
    let mut first = None;
    for c in classifiers {
        if matches(c, s)? {
            first = Some(c.category.clone());
            break;
        }
    }
    prop_assert_eq!(category, first.unwrap_or(builtin.0));
    for c in classifiers {
        if matches(c, s)? {
            // Dropping a condition never stops a match.
            for condition in conditions(c) {
                let looser = without(c, condition);
                if !conditions(&looser).is_empty() {
                    prop_assert!(matches(&looser, s)?, "{c:?} matches {s:?}, {looser:?} not");
                }
            }
        }
        // Single conditions take exactly their symptoms.
        let only = Classifier {
            category: c.category.clone(),
            close_code: None,
            close_reason: None,
            error_code: None,
            frame_regex: None,
            http_status: None,
        };
        if let Some(x) = c.close_code {
            let want = matches!(s, Symptom::Close { code, .. } if *code == x);
            let one = Classifier {
                close_code: Some(x),
                ..only.clone()
            };
            prop_assert_eq!(matches(&one, s)?, want, "close_code = {}", x);
        }
        if let Some(x) = c.http_status {
            let want = matches!(s, Symptom::Handshake { status, .. }
                | Symptom::HttpStatus { status, .. } if *status == x);
            let one = Classifier {
                http_status: Some(x),
                ..only.clone()
            };
            prop_assert_eq!(matches(&one, s)?, want, "http_status = {}", x);
        }
        if let Some(x) = &c.error_code {
            let want = matches!(s, Symptom::ErrorFrame { code, .. } if code == x);
            let one = Classifier {
                error_code: Some(x.clone()),
                ..only.clone()
            };
            prop_assert_eq!(matches(&one, s)?, want, "error_code = {}", x);
        }
    }
    Ok(())
}

#[test]
fn symptoms_get_one_stable_category() {
    every_seed_holds();
    let mut runner = support::runner(512);
    let strategy = (symptom(), prop::collection::vec(classifier(), 0..4));
    support::run(&mut runner, &strategy, |(s, classifiers)| {
        check(&s, &classifiers)
    });
}

/// A close-code classifier catches exactly the closes with its code, whatever else they carry.
#[test]
fn close_code_classifiers_take_exactly_their_code() {
    let mut runner = support::runner(256);
    let strategy = (code(), symptom(), code(), text());
    support::run(&mut runner, &strategy, |(x, s, other, reason)| {
        let c = Classifier {
            category: "p_close".into(),
            close_code: Some(x),
            close_reason: None,
            error_code: None,
            frame_regex: None,
            http_status: None,
        };
        let closing = Symptom::Close { code: x, reason };
        prop_assert!(matches(&c, &closing)?);
        let other = Symptom::Close {
            code: other,
            reason: String::new(),
        };
        prop_assert_eq!(
            matches(&c, &other)?,
            other
                == Symptom::Close {
                    code: x,
                    reason: String::new()
                }
        );
        check(&s, &[c])
    });
}

/// A seed: a classifier list and symptoms, in TOML.
#[derive(Debug, serde::Deserialize)]
struct Seed {
    #[serde(default)]
    classifiers: Vec<Classifier>,
    symptoms: Vec<SeedSymptom>,
}

#[derive(Debug, serde::Deserialize)]
struct SeedSymptom {
    kind: String,
    #[serde(default)]
    code: Option<toml::Value>,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    text: String,
}

impl SeedSymptom {
    fn symptom(&self) -> Symptom {
        let text = self.text.clone();
        let number = || {
            self.code
                .as_ref()
                .and_then(toml::Value::as_integer)
                .unwrap() as u16
        };
        let name = || {
            self.code
                .as_ref()
                .and_then(toml::Value::as_str)
                .unwrap()
                .to_owned()
        };
        match self.kind.as_str() {
            "connect_refused" => Symptom::ConnectRefused(text),
            "dns" => Symptom::Dns(text),
            "tls" => Symptom::Tls(text),
            "handshake" => Symptom::Handshake {
                status: self.status,
                body: text,
            },
            "close" => Symptom::Close {
                code: number(),
                reason: text,
            },
            "reset" => Symptom::Reset(text),
            "error_frame" => Symptom::ErrorFrame { code: name(), text },
            "timeout" => Symptom::Timeout(text),
            "sequence" => Symptom::Sequence(text),
            "missing_event" => Symptom::MissingEvent(text),
            "duplicate_event" => Symptom::DuplicateEvent(text),
            "isolation" => Symptom::Isolation {
                check: "c".into(),
                text,
            },
            "http_status" => Symptom::HttpStatus {
                status: self.status,
                body: text,
            },
            "check_failed" => Symptom::CheckFailed {
                name: "c".into(),
                sample: text,
            },
            "protocol" => Symptom::Protocol(text),
            "too_large" => Symptom::TooLarge(text),
            other => panic!("unknown symptom kind {other}"),
        }
    }
}

/// Every seed of the corpus, run before any random case.
fn every_seed_holds() {
    for (name, bytes) in support::corpus("classify") {
        let seed: Seed = toml::from_str(std::str::from_utf8(&bytes).unwrap())
            .unwrap_or_else(|e| panic!("seed {name}: {e}"));
        for s in &seed.symptoms {
            let s = s.symptom();
            for k in 0..=seed.classifiers.len() {
                check(&s, &seed.classifiers[..k]).unwrap_or_else(|e| panic!("seed {name}: {e}"));
            }
        }
    }
}

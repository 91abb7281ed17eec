//! The failure taxonomy: turns what a session saw (a close code, an error frame, a refused
//! handshake, a timeout...) into one stable category name plus a detail, trying the plan's
//! classifiers first.

use crate::error::CompileError;

use gauntlet_core::plan::{Classifier, Condition};
use gauntlet_core::words::FailureCategory;
use regex::Regex;

/// What went wrong, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Symptom {
    /// TCP connection refused (or reset while connecting).
    ConnectRefused(String),
    /// The host name did not resolve.
    Dns(String),
    /// TLS failed.
    Tls(String),
    /// The upgrade was answered with this HTTP status.
    Handshake {
        /// Status code.
        status: u16,
        /// Response body (may be empty).
        body: String,
    },
    /// The server closed the WebSocket.
    Close {
        /// Close code (1005 when the frame had none).
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The connection ended without a close frame.
    Reset(String),
    /// An error frame arrived.
    ErrorFrame {
        /// Its `error_code` (`UNKNOWN` when absent).
        code: String,
        /// The raw frame.
        text: String,
    },
    /// A wait ended.
    Timeout(String),
    /// Events came in an order no rule allows.
    Sequence(String),
    /// An expected event never came.
    MissingEvent(String),
    /// An event came twice.
    DuplicateEvent(String),
    /// A frame carried another user's id.
    Isolation {
        /// Which check.
        check: String,
        /// The raw frame.
        text: String,
    },
    /// An HTTP step got a status it does not accept.
    HttpStatus {
        /// Status code.
        status: u16,
        /// Body.
        body: String,
    },
    /// A named check failed.
    CheckFailed {
        /// The check.
        name: String,
        /// What was seen.
        sample: String,
    },
    /// The peer broke the protocol (bad frame, non-JSON where JSON is needed).
    Protocol(String),
    /// A response body or WebSocket message over the plan's cap.
    TooLarge(String),
}

impl Symptom {
    /// The raw sample kept with the failure.
    pub fn sample(&self) -> String {
        match self {
            Symptom::ConnectRefused(m) | Symptom::Dns(m) | Symptom::Tls(m) | Symptom::Reset(m) => {
                m.clone()
            }
            Symptom::Handshake { status, body } | Symptom::HttpStatus { status, body } => {
                format!("HTTP {status} {body}")
            }
            Symptom::Close { code, reason } => format!("close {code} \"{reason}\""),
            Symptom::ErrorFrame { text, .. } | Symptom::Isolation { text, .. } => text.clone(),
            Symptom::Timeout(m)
            | Symptom::Sequence(m)
            | Symptom::MissingEvent(m)
            | Symptom::DuplicateEvent(m)
            | Symptom::Protocol(m)
            | Symptom::TooLarge(m) => m.clone(),
            Symptom::CheckFailed { sample, .. } => sample.clone(),
        }
    }
}

/// A plan classifier, compiled: its category and its conditions, every one of which must hold.
#[derive(Debug, Clone)]
pub struct CompiledClassifier {
    category: FailureCategory,
    when: Vec<Test>,
}

/// One compiled condition.
#[derive(Debug, Clone)]
enum Test {
    CloseCode(u16),
    CloseReason(Regex),
    ErrorCode(String),
    FrameRegex(Regex),
    HttpStatus(u16),
}

impl CompiledClassifier {
    /// Compiles a validated classifier.
    pub fn compile(c: &Classifier) -> Result<CompiledClassifier, CompileError> {
        let re = |r: &str| Regex::new(r).map_err(|e| e.to_string());
        let when = c
            .when
            .iter()
            .map(|cond| {
                Ok(match cond {
                    Condition::CloseCode(code) => Test::CloseCode(*code),
                    Condition::CloseReason(r) => Test::CloseReason(re(r)?),
                    Condition::ErrorCode(code) => Test::ErrorCode(code.clone()),
                    Condition::FrameRegex(r) => Test::FrameRegex(re(r)?),
                    Condition::HttpStatus(status) => Test::HttpStatus(*status),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(CompiledClassifier {
            category: FailureCategory::named(&c.category),
            when,
        })
    }

    fn matches(&self, s: &Symptom) -> bool {
        !self.when.is_empty() && self.when.iter().all(|t| t.holds(s))
    }
}

impl Test {
    fn holds(&self, s: &Symptom) -> bool {
        let close = match s {
            Symptom::Close { code, reason } => Some((*code, reason.as_str())),
            _ => None,
        };
        match self {
            Test::CloseCode(want) => close.map(|c| c.0) == Some(*want),
            Test::CloseReason(re) => close.is_some_and(|c| re.is_match(c.1)),
            Test::ErrorCode(want) => {
                matches!(s, Symptom::ErrorFrame { code, .. } if code == want)
            }
            Test::FrameRegex(re) => match s {
                Symptom::ErrorFrame { text, .. } | Symptom::Isolation { text, .. } => {
                    re.is_match(text)
                }
                Symptom::CheckFailed { sample, .. } => re.is_match(sample),
                _ => false,
            },
            Test::HttpStatus(want) => matches!(
                s,
                Symptom::Handshake { status, .. } | Symptom::HttpStatus { status, .. }
                    if status == want
            ),
        }
    }
}

/// `(category, detail)` for `symptom`: the first plan classifier that matches, else the
/// built-in taxonomy.
pub fn classify(
    symptom: &Symptom,
    classifiers: &[CompiledClassifier],
) -> (FailureCategory, String) {
    if let Some(c) = classifiers.iter().find(|c| c.matches(symptom)) {
        return (c.category.clone(), detail(symptom));
    }
    (builtin(symptom), detail(symptom))
}

/// The built-in taxonomy's category of `symptom`.
fn builtin(symptom: &Symptom) -> FailureCategory {
    use FailureCategory as C;
    match symptom {
        Symptom::ConnectRefused(_) => C::ConnectRefused,
        Symptom::Dns(_) => C::Dns,
        Symptom::Tls(_) => C::Tls,
        Symptom::Handshake {
            status: 401 | 403, ..
        } => C::AuthRejected,
        Symptom::Handshake { .. } => C::HandshakeRejected,
        Symptom::Close { code: 1008, .. } => C::AuthRejected,
        Symptom::Close { code: 1011, reason } => {
            let r = reason.to_ascii_lowercase();
            if r.contains("factory") {
                C::FactoryInitFailed
            } else if r.contains("not ready") {
                C::ServiceNotReady
            } else {
                C::InternalError
            }
        }
        Symptom::Close { .. } | Symptom::Reset(_) => C::UnexpectedClose,
        Symptom::ErrorFrame { code, .. } => error_code_category(code),
        Symptom::Timeout(_) => C::Timeout,
        Symptom::Sequence(_) => C::SequenceViolation,
        Symptom::MissingEvent(_) => C::MissingEvent,
        Symptom::DuplicateEvent(_) => C::DuplicateEvent,
        Symptom::Isolation { .. } => C::IsolationBreach,
        Symptom::HttpStatus { .. } => C::HttpStatus,
        Symptom::CheckFailed { .. } => C::CheckFailed,
        Symptom::Protocol(_) => C::ProtocolError,
        Symptom::TooLarge(_) => C::ResponseTooLarge,
    }
}

fn error_code_category(code: &str) -> FailureCategory {
    match code {
        c if c.starts_with("AUTH") || c == "NO_TOKEN" || c == "VALIDATION_FAILED" => {
            FailureCategory::AuthRejected
        }
        c if c.starts_with("FACTORY") => FailureCategory::FactoryInitFailed,
        "INTERNAL_ERROR" => FailureCategory::InternalError,
        "SERVICE_NOT_READY" | "SERVICE_UNAVAILABLE" => FailureCategory::ServiceNotReady,
        _ => FailureCategory::ErrorFrame,
    }
}

/// What distinguishes a failure inside its category, at most
/// [`gauntlet_core::metrics::DETAIL_BYTES`] long.
fn detail(symptom: &Symptom) -> String {
    let detail = match symptom {
        Symptom::Handshake { status, .. } | Symptom::HttpStatus { status, .. } => {
            status.to_string()
        }
        Symptom::Close { code, .. } => code.to_string(),
        Symptom::Reset(_) => "1006".into(),
        // The target's own words: masked like a sample.
        Symptom::ErrorFrame { code, .. } => gauntlet_core::redact::text(code),
        Symptom::Timeout(what)
        | Symptom::Sequence(what)
        | Symptom::MissingEvent(what)
        | Symptom::DuplicateEvent(what) => what.clone(),
        Symptom::Isolation { check, .. } => check.clone(),
        Symptom::CheckFailed { name, .. } => name.clone(),
        Symptom::ConnectRefused(_)
        | Symptom::Dns(_)
        | Symptom::Tls(_)
        | Symptom::Protocol(_)
        | Symptom::TooLarge(_) => String::new(),
    };
    gauntlet_core::metrics::cut(detail, gauntlet_core::metrics::DETAIL_BYTES)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn close(code: u16, reason: &str) -> Symptom {
        Symptom::Close {
            code,
            reason: reason.into(),
        }
    }

    fn frame(code: &str, text: &str) -> Symptom {
        Symptom::ErrorFrame {
            code: code.into(),
            text: text.into(),
        }
    }

    #[test]
    fn staging_failure_modes_have_their_categories() {
        let c = |s: &Symptom| classify(s, &[]).0;
        assert_eq!(c(&close(1008, "SSOT Auth failed")), "auth_rejected");
        assert_eq!(
            c(&close(1011, "Factory SSOT validation failed")),
            "factory_init_failed"
        );
        assert_eq!(
            c(&close(1011, "Critical factory failure")),
            "factory_init_failed"
        );
        assert_eq!(
            c(&close(1011, "Service not ready: warming up")),
            "service_not_ready"
        );
        assert_eq!(c(&close(1011, "Internal error")), "internal_error");
        assert_eq!(c(&close(1001, "going away")), "unexpected_close");
        assert_eq!(c(&frame("AUTH_REQUIRED", "{}")), "auth_rejected");
        assert_eq!(c(&frame("NO_TOKEN", "{}")), "auth_rejected");
        assert_eq!(
            c(&frame("FACTORY_INIT_FAILED", "{}")),
            "factory_init_failed"
        );
        assert_eq!(c(&frame("FORMAT_ERROR", "{}")), "error_frame");
        assert_eq!(
            classify(
                &Symptom::Handshake {
                    status: 403,
                    body: String::new()
                },
                &[]
            ),
            ("auth_rejected".into(), "403".into())
        );
        assert_eq!(
            classify(
                &Symptom::Handshake {
                    status: 502,
                    body: String::new()
                },
                &[]
            ),
            ("handshake_rejected".into(), "502".into())
        );
    }

    #[test]
    fn an_error_codes_credentials_are_masked_in_the_detail() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl";
        assert_eq!(
            classify(&frame(&format!("BAD_TOKEN {jwt}"), "{}"), &[]),
            ("error_frame".into(), "BAD_TOKEN <redacted>".into())
        );
        assert_eq!(
            classify(&frame("AUTH_FAILED", "{}"), &[]),
            ("auth_rejected".into(), "AUTH_FAILED".into())
        );
    }

    #[test]
    fn every_builtin_category_is_in_the_vocabulary() {
        let text = |s: &str| s.to_owned();
        let symptoms = [
            Symptom::ConnectRefused(text("x")),
            Symptom::Dns(text("x")),
            Symptom::Tls(text("x")),
            Symptom::Handshake {
                status: 403,
                body: text(""),
            },
            Symptom::Handshake {
                status: 502,
                body: text(""),
            },
            close(1008, ""),
            close(1011, "factory"),
            close(1011, "not ready"),
            close(1011, ""),
            close(1000, ""),
            Symptom::Reset(text("x")),
            frame("AUTH_X", "{}"),
            frame("FACTORY_X", "{}"),
            frame("INTERNAL_ERROR", "{}"),
            frame("SERVICE_NOT_READY", "{}"),
            frame("OTHER", "{}"),
            Symptom::Timeout(text("x")),
            Symptom::Sequence(text("x")),
            Symptom::MissingEvent(text("x")),
            Symptom::DuplicateEvent(text("x")),
            Symptom::Isolation {
                check: text("c"),
                text: text("{}"),
            },
            Symptom::HttpStatus {
                status: 500,
                body: text(""),
            },
            Symptom::CheckFailed {
                name: text("n"),
                sample: text("s"),
            },
            Symptom::Protocol(text("x")),
            Symptom::TooLarge(text("x")),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for s in &symptoms {
            seen.insert(builtin(s));
        }
        assert_eq!(seen.len(), FailureCategory::BUILTIN.len(), "{seen:?}");
        // Details stay short whatever the symptom carries.
        let long = classify(&Symptom::Timeout("x".repeat(5000)), &[]).1;
        assert!(
            long.len() <= gauntlet_core::metrics::DETAIL_BYTES + 3,
            "{}",
            long.len()
        );
    }

    #[test]
    fn plan_classifiers_come_first_and_need_every_condition() {
        let user_context = CompiledClassifier::compile(&Classifier {
            category: "user_context_invalid".into(),
            when: vec![
                Condition::ErrorCode("AUTH_REQUIRED".into()),
                Condition::FrameRegex("UserExecutionContext".into()),
            ],
        })
        .unwrap();
        let list = [user_context];
        let hit = frame(
            "AUTH_REQUIRED",
            r#"{"details":{"error":"user_context must be a UserExecutionContext instance"}}"#,
        );
        assert_eq!(classify(&hit, &list).0, "user_context_invalid");
        let miss = frame("AUTH_REQUIRED", r#"{"details":{}}"#);
        assert_eq!(classify(&miss, &list).0, "auth_rejected");
    }

    #[test]
    fn close_and_status_conditions() {
        let c = |toml_text: &str| {
            let parsed: gauntlet_core::plan::ClassifierSpec =
                toml::from_str(&format!("category = \"x\"\n{toml_text}")).unwrap();
            CompiledClassifier::compile(&parsed.resolve()).unwrap()
        };
        let slow_deploy = [c(
            "close_code = 1011\nclose_reason = \"^Service not ready: migrat\"",
        )];
        assert_eq!(
            classify(&close(1011, "Service not ready: migrating"), &slow_deploy).0,
            "x"
        );
        assert_eq!(
            classify(&close(1011, "Service not ready: warming"), &slow_deploy).0,
            "service_not_ready"
        );
        assert_eq!(
            classify(&close(1008, "Service not ready: migrating"), &slow_deploy).0,
            "auth_rejected"
        );
        let gateway = [c("http_status = 502")];
        let bad_gateway = Symptom::HttpStatus {
            status: 502,
            body: String::new(),
        };
        assert_eq!(classify(&bad_gateway, &gateway), ("x".into(), "502".into()));
        let refused = Symptom::Handshake {
            status: 502,
            body: String::new(),
        };
        assert_eq!(classify(&refused, &gateway).0, "x");
        assert_eq!(classify(&close(1011, "x"), &gateway).0, "internal_error");
    }
}

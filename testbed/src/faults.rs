//! Fault switches. Each fault has a rate (0..1), optionally a rule selecting users and
//! optionally a time window (`from_s`, `until_s`: seconds on the testbed's clock, which starts
//! at its first request other than the admin endpoints); whether it fires is a seeded draw
//! keyed by (seed, fault, user, that user's connection number, pipeline number), so a given
//! seed and workload inject the same faults every time. A fault outside its window is off: it
//! is not drawn at all.

use std::time::Duration;

use gauntlet_core::units::Rate;
use serde::{Deserialize, Serialize};

use crate::protocol::AgentEvent;
use crate::rng::{SplitMix, hash_str};

/// Every kind of fault, with its stable name (the key in `[faults]` and in stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// A valid token is rejected as if it were bad.
    AuthReject,
    /// AUTH_REQUIRED with "user_context must be a UserExecutionContext instance", close 1008.
    UserContext,
    /// FACTORY_INIT_FAILED, close 1011 "Factory SSOT validation failed".
    FactoryInit,
    /// FACTORY_CRITICAL_FAILURE, close 1011 "Critical factory failure".
    FactoryCritical,
    /// Close 1011 "Service not ready: ...".
    ServiceNotReady,
    /// Close 1011 "Internal error", no frame.
    InternalError,
    /// One event is sent one place earlier than it should be.
    OutOfOrder,
    /// One event is never sent.
    MissingEvent,
    /// One event is sent twice.
    DuplicateEvent,
    /// One event carries another user's `user_id`.
    IsolationBreach,
    /// Extra delay before the pipeline's first event.
    LatencySpike,
    /// The TCP connection is dropped, without a close frame, after one event.
    TcpDrop,
    /// An HTTP endpoint answers 5xx.
    HttpError,
}

impl FaultKind {
    /// All kinds, in stats order.
    pub const ALL: [FaultKind; 13] = [
        FaultKind::AuthReject,
        FaultKind::UserContext,
        FaultKind::FactoryInit,
        FaultKind::FactoryCritical,
        FaultKind::ServiceNotReady,
        FaultKind::InternalError,
        FaultKind::OutOfOrder,
        FaultKind::MissingEvent,
        FaultKind::DuplicateEvent,
        FaultKind::IsolationBreach,
        FaultKind::LatencySpike,
        FaultKind::TcpDrop,
        FaultKind::HttpError,
    ];

    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::AuthReject => "auth_reject",
            FaultKind::UserContext => "user_context",
            FaultKind::FactoryInit => "factory_init",
            FaultKind::FactoryCritical => "factory_critical",
            FaultKind::ServiceNotReady => "service_not_ready",
            FaultKind::InternalError => "internal_error",
            FaultKind::OutOfOrder => "out_of_order",
            FaultKind::MissingEvent => "missing_event",
            FaultKind::DuplicateEvent => "duplicate_event",
            FaultKind::IsolationBreach => "isolation_breach",
            FaultKind::LatencySpike => "latency_spike",
            FaultKind::TcpDrop => "tcp_drop",
            FaultKind::HttpError => "http_error",
        }
    }
}

/// Which users a fault may hit. Every rule given must hold; the suffix rules read the decimal
/// digits at the end of `sub` (`user-17` has suffix 17; a subject without one never matches
/// a suffix rule).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserSelector {
    /// Exact subjects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// Smallest suffix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix_min: Option<u64>,
    /// Largest suffix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix_max: Option<u64>,
    /// With `suffix_rem`: the suffix modulo this must be one of `suffix_rem`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix_mod: Option<u64>,
    /// Accepted remainders.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suffix_rem: Vec<u64>,
}

impl UserSelector {
    /// Does `sub` match?
    pub fn matches(&self, sub: &str) -> bool {
        if !self.subjects.is_empty() && !self.subjects.iter().any(|s| s == sub) {
            return false;
        }
        let uses_suffix =
            self.suffix_min.is_some() || self.suffix_max.is_some() || self.suffix_mod.is_some();
        if !uses_suffix {
            return true;
        }
        let digits = sub.len() - sub.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let Ok(suffix) = sub[sub.len() - digits..].parse::<u64>() else {
            return false;
        };
        self.suffix_min.is_none_or(|min| suffix >= min)
            && self.suffix_max.is_none_or(|max| suffix <= max)
            && self
                .suffix_mod
                .is_none_or(|m| self.suffix_rem.contains(&(suffix % m)))
    }

    fn check(&self) -> Result<(), String> {
        match self.suffix_mod {
            Some(0) => Err("users.suffix_mod must be at least 1".into()),
            Some(_) if self.suffix_rem.is_empty() => {
                Err("users.suffix_mod needs suffix_rem".into())
            }
            None if !self.suffix_rem.is_empty() => Err("users.suffix_rem needs suffix_mod".into()),
            _ => Ok(()),
        }
    }
}

/// A connection-level fault.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Probability per connection.
    pub rate: Rate,
    /// Which users it may hit (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<UserSelector>,
    /// On from this many seconds after the testbed's first request (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_s: Option<f64>,
    /// Off from this many seconds after the testbed's first request (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_s: Option<f64>,
}

/// A pipeline fault acting on one event.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventFault {
    /// Probability per pipeline.
    pub rate: Rate,
    /// Which users it may hit (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<UserSelector>,
    /// The event acted on (each fault has its own default, see `docs/testbed.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<AgentEvent>,
    /// On from this many seconds after the testbed's first request (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_s: Option<f64>,
    /// Off from this many seconds after the testbed's first request (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_s: Option<f64>,
}

/// Extra latency before a pipeline's first event.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeFault {
    /// Probability per pipeline.
    pub rate: Rate,
    /// Which users it may hit (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<UserSelector>,
    /// The extra delay.
    #[serde(with = "humantime_serde", default = "default_spike")]
    pub extra: Duration,
    /// On from this many seconds after the testbed's first request (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_s: Option<f64>,
    /// Off from this many seconds after the testbed's first request (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_s: Option<f64>,
}

fn default_spike() -> Duration {
    Duration::from_secs(2)
}

/// HTTP 5xx on chosen endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    /// Probability per request.
    pub rate: Rate,
    /// Status to answer (500..=599).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Paths it applies to; empty: every endpoint but the admin ones.
    #[serde(default)]
    pub paths: Vec<String>,
    /// On from this many seconds after the testbed's first request (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_s: Option<f64>,
    /// Off from this many seconds after the testbed's first request (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_s: Option<f64>,
}

/// `(from_s, until_s)`: a fault's window in seconds on the testbed's clock, either end open.
pub type Window = (Option<f64>, Option<f64>);

/// The window of a fault: `from_s..until_s` on the testbed's clock, either end open.
pub trait Timed {
    /// `(from_s, until_s)`.
    fn window(&self) -> Window;

    /// Whether it is on `at` after the testbed's first request.
    fn on_at(&self, at: Duration) -> bool {
        let t = at.as_secs_f64();
        let (from, until) = self.window();
        from.is_none_or(|f| t >= f) && until.is_none_or(|u| t < u)
    }
}

macro_rules! timed {
    ($($t:ty),*) => {$(
        impl Timed for $t {
            fn window(&self) -> Window {
                (self.from_s, self.until_s)
            }
        }
    )*};
}
timed!(Fault, EventFault, SpikeFault, HttpFault);

fn check_window(w: Window) -> Result<(), String> {
    for (name, v) in [("from_s", w.0), ("until_s", w.1)] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(format!(
                "{name} must be a finite number of seconds, 0 or more (got {v})"
            ));
        }
    }
    if let (Some(from), Some(until)) = w
        && from >= until
    {
        return Err(format!("from_s ({from}) must be before until_s ({until})"));
    }
    Ok(())
}

fn default_status() -> u16 {
    500
}

/// The whole set of switches (`[faults.<name>]` in TOML, the body of `PUT /__testbed/faults`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Faults {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_reject: Option<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_context: Option<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factory_init: Option<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factory_critical: Option<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_not_ready: Option<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_error: Option<Fault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_order: Option<EventFault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_event: Option<EventFault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_event: Option<EventFault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation_breach: Option<EventFault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_spike: Option<SpikeFault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_drop: Option<EventFault>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_error: Option<HttpFault>,
}

/// The connection-level faults, in the order they are tried (the first that fires wins).
pub const CONNECTION_FAULTS: [FaultKind; 5] = [
    FaultKind::ServiceNotReady,
    FaultKind::InternalError,
    FaultKind::UserContext,
    FaultKind::FactoryCritical,
    FaultKind::FactoryInit,
];

impl Faults {
    /// No switch on.
    pub fn is_empty(&self) -> bool {
        *self == Faults::default()
    }

    /// The connection-level fault `kind`, if switched on.
    pub fn connection(&self, kind: FaultKind) -> Option<&Fault> {
        match kind {
            FaultKind::AuthReject => self.auth_reject.as_ref(),
            FaultKind::UserContext => self.user_context.as_ref(),
            FaultKind::FactoryInit => self.factory_init.as_ref(),
            FaultKind::FactoryCritical => self.factory_critical.as_ref(),
            FaultKind::ServiceNotReady => self.service_not_ready.as_ref(),
            FaultKind::InternalError => self.internal_error.as_ref(),
            _ => None,
        }
    }

    /// The event fault `kind`, if switched on, with its event resolved to the kind's default.
    pub fn event(&self, kind: FaultKind) -> Option<(&EventFault, AgentEvent)> {
        let (fault, default) = match kind {
            FaultKind::OutOfOrder => (self.out_of_order.as_ref(), AgentEvent::ToolCompleted),
            FaultKind::MissingEvent => (self.missing_event.as_ref(), AgentEvent::ToolCompleted),
            FaultKind::DuplicateEvent => (self.duplicate_event.as_ref(), AgentEvent::AgentThinking),
            FaultKind::IsolationBreach => {
                (self.isolation_breach.as_ref(), AgentEvent::AgentThinking)
            }
            FaultKind::TcpDrop => (self.tcp_drop.as_ref(), AgentEvent::AgentThinking),
            _ => (None, AgentEvent::AgentStarted),
        };
        fault.map(|f| (f, f.event.unwrap_or(default)))
    }

    /// The user selector of fault `kind`, if it is switched on and has one.
    pub fn users(&self, kind: FaultKind) -> Option<&UserSelector> {
        match kind {
            FaultKind::LatencySpike => self.latency_spike.as_ref()?.users.as_ref(),
            FaultKind::HttpError => None,
            kind => match self.connection(kind) {
                Some(fault) => fault.users.as_ref(),
                None => self.event(kind)?.0.users.as_ref(),
            },
        }
    }

    /// Every switched-on fault's window, by name.
    fn windows(&self) -> Vec<(&'static str, Window)> {
        fn w<T: Timed>(name: &'static str, f: &Option<T>) -> Option<(&'static str, Window)> {
            f.as_ref().map(|f| (name, f.window()))
        }
        [
            w("auth_reject", &self.auth_reject),
            w("user_context", &self.user_context),
            w("factory_init", &self.factory_init),
            w("factory_critical", &self.factory_critical),
            w("service_not_ready", &self.service_not_ready),
            w("internal_error", &self.internal_error),
            w("out_of_order", &self.out_of_order),
            w("missing_event", &self.missing_event),
            w("duplicate_event", &self.duplicate_event),
            w("isolation_breach", &self.isolation_breach),
            w("latency_spike", &self.latency_spike),
            w("tcp_drop", &self.tcp_drop),
            w("http_error", &self.http_error),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Whether any switched-on fault has a window.
    pub fn timed(&self) -> bool {
        self.windows()
            .iter()
            .any(|(_, w)| w.0.is_some() || w.1.is_some())
    }

    /// The faults on `at` after the testbed's first request: those outside their window off.
    pub fn in_force(&self, at: Duration) -> Faults {
        fn keep<T: Timed + Clone>(f: &Option<T>, at: Duration) -> Option<T> {
            f.as_ref().filter(|f| f.on_at(at)).cloned()
        }
        Faults {
            auth_reject: keep(&self.auth_reject, at),
            user_context: keep(&self.user_context, at),
            factory_init: keep(&self.factory_init, at),
            factory_critical: keep(&self.factory_critical, at),
            service_not_ready: keep(&self.service_not_ready, at),
            internal_error: keep(&self.internal_error, at),
            out_of_order: keep(&self.out_of_order, at),
            missing_event: keep(&self.missing_event, at),
            duplicate_event: keep(&self.duplicate_event, at),
            isolation_breach: keep(&self.isolation_breach, at),
            latency_spike: keep(&self.latency_spike, at),
            tcp_drop: keep(&self.tcp_drop, at),
            http_error: keep(&self.http_error, at),
        }
    }

    /// Rules serde cannot express: `(fault name, message)` of the first broken one.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (name, w) in self.windows() {
            check_window(w).map_err(|m| (name, m))?;
        }
        for kind in FaultKind::ALL {
            if let Some(Err(msg)) = self.users(kind).map(UserSelector::check) {
                return Err((kind.name(), msg));
            }
        }
        if let Some((_, AgentEvent::AgentStarted)) = self.event(FaultKind::OutOfOrder) {
            return Err((
                "out_of_order",
                "event: agent_started is first and cannot move earlier".into(),
            ));
        }
        if let Some(f) = &self.http_error
            && !(500..=599).contains(&f.status)
        {
            return Err((
                "http_error",
                format!("status must be 500..=599 (got {})", f.status),
            ));
        }
        Ok(())
    }
}

/// Does a fault with `rate` and `users` fire for `sub`, keyed by `key` (connection and pipeline
/// numbers)? Pure: the same arguments always give the same answer.
pub fn fires(
    seed: u64,
    kind: FaultKind,
    rate: Rate,
    users: Option<&UserSelector>,
    sub: &str,
    key: &[u64],
) -> bool {
    if rate == Rate::ZERO || users.is_some_and(|u| !u.matches(sub)) {
        return false;
    }
    let mut parts = vec![seed, kind as u64, hash_str(sub)];
    parts.extend_from_slice(key);
    SplitMix::keyed(&parts).chance(rate.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_rules() {
        let s = UserSelector {
            suffix_mod: Some(4),
            suffix_rem: vec![0, 1],
            ..Default::default()
        };
        assert!(s.matches("user-4"));
        assert!(s.matches("user-9"));
        assert!(!s.matches("user-7"));
        assert!(!s.matches("alice"));
        let s = UserSelector {
            suffix_min: Some(10),
            suffix_max: Some(19),
            ..Default::default()
        };
        assert!(s.matches("u15") && !s.matches("u20") && !s.matches("u9"));
        let s = UserSelector {
            subjects: vec!["a".into()],
            ..Default::default()
        };
        assert!(s.matches("a") && !s.matches("b"));
        assert!(UserSelector::default().matches("anyone"));
    }

    #[test]
    fn draws_are_deterministic_and_respect_selectors() {
        let rate = Rate::new(0.5).unwrap();
        let a: Vec<bool> = (0..64)
            .map(|n| fires(1, FaultKind::FactoryInit, rate, None, "u1", &[n]))
            .collect();
        let b: Vec<bool> = (0..64)
            .map(|n| fires(1, FaultKind::FactoryInit, rate, None, "u1", &[n]))
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
        let only_a = UserSelector {
            subjects: vec!["a".into()],
            ..Default::default()
        };
        assert!(!fires(
            1,
            FaultKind::AuthReject,
            Rate::ONE,
            Some(&only_a),
            "b",
            &[0]
        ));
        assert!(fires(
            1,
            FaultKind::AuthReject,
            Rate::ONE,
            Some(&only_a),
            "a",
            &[0]
        ));
    }

    #[test]
    fn check_refuses_impossible_switches() {
        let mut f = Faults {
            http_error: Some(HttpFault {
                rate: Rate::ONE,
                status: 404,
                paths: vec![],
                from_s: None,
                until_s: None,
            }),
            ..Default::default()
        };
        assert_eq!(f.check().unwrap_err().0, "http_error");
        f.http_error = None;
        f.out_of_order = None;
        f.latency_spike = Some(SpikeFault {
            rate: Rate::ONE,
            users: Some(UserSelector {
                suffix_mod: Some(0),
                suffix_rem: vec![0],
                ..Default::default()
            }),
            extra: Duration::from_secs(1),
            from_s: None,
            until_s: None,
        });
        assert_eq!(f.check().unwrap_err().0, "latency_spike");
        f.latency_spike = None;
        f.out_of_order = Some(EventFault {
            rate: Rate::ONE,
            users: None,
            event: Some(AgentEvent::AgentStarted),
            from_s: None,
            until_s: None,
        });
        assert_eq!(f.check().unwrap_err().0, "out_of_order");
    }

    #[test]
    fn windows_switch_faults_on_and_off_and_are_checked() {
        let f: Faults = serde_json::from_value(serde_json::json!({
            "factory_init": { "rate": 1.0, "from_s": 2, "until_s": 4.5 },
            "missing_event": { "rate": 0.5, "until_s": 1 },
            "tcp_drop": { "rate": 0.5 },
        }))
        .unwrap();
        assert!(f.timed());
        let at = |s: f64| f.in_force(Duration::from_secs_f64(s));
        assert!(at(1.99).factory_init.is_none() && at(2.0).factory_init.is_some());
        assert!(at(4.49).factory_init.is_some() && at(4.5).factory_init.is_none());
        assert!(at(0.5).missing_event.is_some() && at(1.0).missing_event.is_none());
        assert!(at(1e6).tcp_drop.is_some(), "no window: always on");
        assert!(!Faults::default().timed());
        for (bad, says) in [
            (
                serde_json::json!({"factory_init": {"rate": 1.0, "from_s": 3, "until_s": 3}}),
                "before until_s",
            ),
            (
                serde_json::json!({"latency_spike": {"rate": 1.0, "from_s": -1}}),
                "0 or more",
            ),
        ] {
            let f: Faults = serde_json::from_value(bad).unwrap();
            let (_, m) = f.check().unwrap_err();
            assert!(m.contains(says), "{m}");
        }
    }
}

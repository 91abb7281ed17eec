//! Each fault knob, switched on at rate 0.5: what clients observe equals, exactly, what
//! `/__testbed/stats` reports; and the same seed and workload inject the same faults.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use gauntlet_core::units::Rate;
use gauntlet_testbed::faults::{EventFault, Fault, Faults, SpikeFault, UserSelector};
use serde_json::json;
use tokio::time::Instant;

const USERS: usize = 40;

fn half() -> Rate {
    Rate::new(0.5).unwrap()
}

/// What one client saw when it connected (and, if let in, closed again).
#[derive(Debug, PartialEq, Eq, Clone)]
enum Outcome {
    Established,
    Refused {
        error_code: Option<String>,
        code: u16,
        reason: String,
    },
}

async fn connect_once(tb: &gauntlet_testbed::Testbed, sub: &str) -> Outcome {
    let mut ws = connect(tb, sub).await;
    let mut error_code = None;
    loop {
        match next(&mut ws).await {
            Next::Json(v) if v["type"] == "error_message" => {
                error_code = v["error_code"].as_str().map(str::to_owned)
            }
            Next::Json(v) if v["data"]["event"] == "connection_established" => {
                return Outcome::Established;
            }
            Next::Json(v) => panic!("unexpected frame {v}"),
            Next::Close(code, reason) => {
                return Outcome::Refused {
                    error_code,
                    code,
                    reason,
                };
            }
            Next::Gone => panic!("connection dropped without a close frame"),
        }
    }
}

async fn connect_all(tb: &gauntlet_testbed::Testbed) -> Vec<Outcome> {
    let mut out = Vec::new();
    for u in 0..USERS {
        out.push(connect_once(tb, &format!("user-{u}")).await);
    }
    out
}

#[tokio::test]
async fn each_connection_fault_matches_ground_truth() {
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        u16,
        &'static str,
    );
    let cases: [Case; 6] = [
        (
            "auth_reject",
            "injected_auth",
            Some("AUTH_FAILED"),
            1008,
            "SSOT Auth failed",
        ),
        (
            "user_context",
            "user_context",
            Some("AUTH_REQUIRED"),
            1008,
            "Authentication failed",
        ),
        (
            "factory_init",
            "factory_init_failed",
            Some("FACTORY_INIT_FAILED"),
            1011,
            "Factory SSOT validation failed",
        ),
        (
            "factory_critical",
            "factory_critical",
            Some("FACTORY_CRITICAL_FAILURE"),
            1011,
            "Critical factory failure",
        ),
        (
            "service_not_ready",
            "service_not_ready",
            None,
            1011,
            "Service not ready: agent supervisor not initialized",
        ),
        (
            "internal_error",
            "internal_error",
            None,
            1011,
            "Internal error",
        ),
    ];
    for (kind, reason, error_code, code, close_reason) in cases {
        let mut c = config();
        let fault = Fault {
            rate: half(),
            users: None,
            from_s: None,
            until_s: None,
        };
        let faults: Faults = serde_json::from_value(json!({ kind: fault })).unwrap();
        c.faults = faults;
        let tb = start(c).await;
        let outcomes = connect_all(&tb).await;
        let expected = Outcome::Refused {
            error_code: error_code.map(Into::into),
            code,
            reason: close_reason.into(),
        };
        let refused = outcomes.iter().filter(|o| **o == expected).count() as u64;
        let established = outcomes
            .iter()
            .filter(|o| **o == Outcome::Established)
            .count() as u64;
        assert_eq!(
            refused + established,
            USERS as u64,
            "{kind}: unexpected outcomes {outcomes:?}"
        );
        assert!(
            refused > 0 && established > 0,
            "{kind}: rate 0.5 over {USERS} users should hit some, spare some"
        );
        let stats = tb.stats();
        assert_eq!(stats.faults[kind], refused, "{kind}");
        assert_eq!(stats.connections.rejected[reason], refused, "{kind}");
        assert_eq!(stats.connections.rejected_total, refused, "{kind}");
        assert_eq!(stats.connections.established, established, "{kind}");
    }
}

#[tokio::test]
async fn same_seed_same_workload_same_faults_and_selectors_limit_users() {
    let mut c = config();
    c.seed = 1234;
    c.faults.factory_init = Some(Fault {
        rate: half(),
        users: None,
        from_s: None,
        until_s: None,
    });
    let failing = |outcomes: Vec<Outcome>| -> BTreeSet<usize> {
        outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| **o != Outcome::Established)
            .map(|(i, _)| i)
            .collect()
    };
    let first = failing(connect_all(&start(c.clone()).await).await);
    let second = failing(connect_all(&start(c.clone()).await).await);
    assert_eq!(first, second);
    c.seed = 99;
    assert_ne!(failing(connect_all(&start(c.clone()).await).await), first);

    // Only users whose numeric suffix is 0 mod 4 can be hit; at rate 1 all of them are.
    c.faults.factory_init = Some(Fault {
        rate: Rate::ONE,
        users: Some(UserSelector {
            suffix_mod: Some(4),
            suffix_rem: vec![0],
            ..Default::default()
        }),
        from_s: None,
        until_s: None,
    });
    let hit = failing(connect_all(&start(c).await).await);
    assert_eq!(hit, (0..USERS).filter(|u| u % 4 == 0).collect());
}

/// What one client saw of one agent run.
#[derive(Debug, Default)]
struct Run {
    types: Vec<String>,
    foreign_user: usize,
    dropped: bool,
    first_event_after: Duration,
}

async fn run_pipeline(tb: &gauntlet_testbed::Testbed, sub: String) -> Run {
    let mut ws = established(tb, &sub).await;
    let sent = Instant::now();
    send_json(
        &mut ws,
        json!({"type": "start_agent", "payload": {"user_request": "hello"}}),
    )
    .await;
    let mut run = Run::default();
    loop {
        match next(&mut ws).await {
            Next::Json(v) => {
                if run.types.is_empty() {
                    run.first_event_after = sent.elapsed();
                }
                if v["user_id"] != sub.as_str() {
                    run.foreign_user += 1;
                }
                let t = v["type"].as_str().unwrap().to_owned();
                run.types.push(t.clone());
                if t == "agent_completed" {
                    return run;
                }
            }
            Next::Gone => {
                run.dropped = true;
                return run;
            }
            Next::Close(code, reason) => panic!("unexpected close {code} {reason}"),
        }
    }
}

async fn run_all(tb: &gauntlet_testbed::Testbed) -> Vec<Run> {
    let futures = (0..USERS).map(|u| run_pipeline(tb, format!("user-{u}")));
    futures_util::future::join_all(futures).await
}

const CLEAN: [&str; 5] = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
];

#[tokio::test]
async fn each_pipeline_fault_matches_ground_truth() {
    type Observe = fn(&Run) -> bool;
    let event_fault = || EventFault {
        rate: half(),
        users: None,
        event: None,
        from_s: None,
        until_s: None,
    };
    let cases: [(&str, Faults, Observe); 5] = [
        (
            "out_of_order",
            Faults {
                out_of_order: Some(event_fault()),
                ..Default::default()
            },
            |r| {
                r.types
                    == [
                        "agent_started",
                        "agent_thinking",
                        "tool_completed",
                        "tool_executing",
                        "agent_completed",
                    ]
            },
        ),
        (
            "missing_event",
            Faults {
                missing_event: Some(event_fault()),
                ..Default::default()
            },
            |r| {
                r.types
                    == [
                        "agent_started",
                        "agent_thinking",
                        "tool_executing",
                        "agent_completed",
                    ]
            },
        ),
        (
            "duplicate_event",
            Faults {
                duplicate_event: Some(event_fault()),
                ..Default::default()
            },
            |r| {
                r.types
                    == [
                        "agent_started",
                        "agent_thinking",
                        "agent_thinking",
                        "tool_executing",
                        "tool_completed",
                        "agent_completed",
                    ]
            },
        ),
        (
            "isolation_breach",
            Faults {
                isolation_breach: Some(event_fault()),
                ..Default::default()
            },
            |r| r.foreign_user == 1 && r.types == CLEAN,
        ),
        (
            "tcp_drop",
            Faults {
                tcp_drop: Some(event_fault()),
                ..Default::default()
            },
            |r| r.dropped && r.types == ["agent_started", "agent_thinking"],
        ),
    ];
    for (kind, faults, observed) in cases {
        let mut c = config();
        c.faults = faults;
        let tb = start(c).await;
        let runs = run_all(&tb).await;
        let faulty = runs.iter().filter(|r| observed(r)).count() as u64;
        let clean = runs
            .iter()
            .filter(|r| r.types == CLEAN && r.foreign_user == 0 && !r.dropped)
            .count() as u64;
        assert_eq!(
            faulty + clean,
            USERS as u64,
            "{kind}: unexpected runs {runs:?}"
        );
        assert!(faulty > 0 && clean > 0, "{kind}");
        let stats = tb.stats();
        assert_eq!(stats.faults[kind], faulty, "{kind}");
        assert_eq!(stats.pipelines.started, USERS as u64, "{kind}");
        if kind == "tcp_drop" {
            assert_eq!(stats.pipelines.dropped, faulty);
            assert_eq!(stats.pipelines.completed, clean);
        } else {
            assert_eq!(stats.pipelines.completed, USERS as u64, "{kind}");
        }
        let events: u64 = stats.events_sent.values().sum();
        let seen: u64 = runs.iter().map(|r| r.types.len() as u64).sum();
        assert_eq!(events, seen, "{kind}: events written vs events received");
    }
}

#[tokio::test]
async fn latency_spike_delays_exactly_the_spiked_runs() {
    let mut c = config();
    let extra = Duration::from_millis(1500);
    c.faults.latency_spike = Some(SpikeFault {
        rate: half(),
        users: None,
        extra,
        from_s: None,
        until_s: None,
    });
    let tb = start(c).await;
    let runs = run_all(&tb).await;
    assert!(runs.iter().all(|r| r.types == CLEAN));
    let spiked = runs.iter().filter(|r| r.first_event_after >= extra).count() as u64;
    assert!(spiked > 0 && spiked < USERS as u64);
    assert_eq!(tb.stats().faults["latency_spike"], spiked);
}

#[tokio::test]
async fn http_error_fault_matches_ground_truth_and_changes_at_run_time() {
    let tb = start(config()).await;
    let body =
        json!({"http_error": {"rate": 0.5, "status": 503, "paths": ["/api/health"]}}).to_string();
    let (status, echoed) = http(
        &tb,
        "PUT",
        "/__testbed/faults",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{echoed}");
    let mut failed = 0;
    for _ in 0..USERS {
        let (status, body) = http(&tb, "GET", "/api/health", &[], "").await;
        match status {
            200 => assert_eq!(body["status"], "healthy"),
            503 => {
                assert_eq!(body["error_code"], "INTERNAL_ERROR");
                failed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // Other paths are untouched.
    assert_eq!(http(&tb, "GET", "/health", &[], "").await.0, 200);
    let stats = tb.stats();
    assert!(failed > 0 && failed < USERS as u64);
    assert_eq!(stats.faults["http_error"], failed);
    assert_eq!(stats.http["/api/health"][&503], failed);
    assert_eq!(stats.http["/api/health"][&200], USERS as u64 - failed);

    // Switching every fault off at run time.
    let (status, _) = http(&tb, "PUT", "/__testbed/faults", &[], "{}").await;
    assert_eq!(status, 200);
    assert_eq!(http(&tb, "GET", "/api/health", &[], "").await.0, 200);

    // Bad switches are refused with the field named.
    let (status, err) = http(
        &tb,
        "PUT",
        "/__testbed/faults",
        &[],
        r#"{"auth_reject": {"rate": 2}}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .starts_with("faults.auth_reject.rate"),
        "{err}"
    );
    let (status, err) = http(
        &tb,
        "PUT",
        "/__testbed/faults",
        &[],
        r#"{"typo": {"rate": 1}}"#,
    )
    .await;
    assert_eq!(status, 400, "{err}");
}

#[tokio::test]
async fn runtime_switch_applies_to_new_connections() {
    let tb = start(config()).await;
    assert_eq!(connect_once(&tb, "user-1").await, Outcome::Established);
    tb.set_faults(Faults {
        internal_error: Some(Fault {
            rate: Rate::ONE,
            users: None,
            from_s: None,
            until_s: None,
        }),
        ..Default::default()
    });
    assert!(matches!(
        connect_once(&tb, "user-1").await,
        Outcome::Refused { code: 1011, .. }
    ));
    assert_eq!(tb.stats().faults["internal_error"], 1);
}

/// A fault with a window is on only inside it, on the clock that starts at the testbed's first
/// request (paused time: the clock jumps, nothing waits).
#[tokio::test(start_paused = true)]
async fn a_windowed_fault_is_on_only_inside_its_window() {
    let mut c = config();
    c.faults = serde_json::from_value(json!({
        "factory_init": { "rate": 1.0, "from_s": 10, "until_s": 20 },
    }))
    .unwrap();
    let tb = start(c).await;
    // Time before the first request does not count.
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(connect_once(&tb, "user-1").await, Outcome::Established);
    tokio::time::advance(Duration::from_secs(10)).await;
    let refused = connect_once(&tb, "user-1").await;
    assert!(
        matches!(&refused, Outcome::Refused { code: 1011, error_code: Some(e), .. } if e == "FACTORY_INIT_FAILED"),
        "{refused:?}"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(connect_once(&tb, "user-1").await, Outcome::Established);
    let stats = tb.stats();
    assert_eq!(
        stats.faults["factory_init"], 1,
        "decided inside the window only"
    );
}

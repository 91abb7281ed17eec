//! The engine against the in-process testbed with each fault switched on: gauntlet's failure
//! counts per category equal, exactly, what the testbed's ground truth says it injected.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gauntlet_testbed::faults::Faults;
use serde_json::json;

const VUS: u64 = 40;

fn faults(value: serde_json::Value) -> Faults {
    serde_json::from_value(value).unwrap()
}

/// 40 VUs, one agent run each, every VU its own subject.
fn agent_plan(tb: &gauntlet_testbed::Testbed, name: &str, gap: &str) -> gauntlet_core::plan::Plan {
    let text = format!(
        "name = \"{name}\"\n[load]\nvus = {VUS}\niterations = 1\n{}\n{}",
        auth(name, ""),
        agent_scenario(gap)
    );
    plan(tb, &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_passes_every_session_and_counts_every_event() {
    let tb = start(config()).await;
    let s = run(agent_plan(&tb, "clean", "10s")).await;
    let truth = tb.stats();
    assert_eq!(s.counters.sessions_started, VUS);
    assert_eq!(s.counters.sessions_passed, VUS, "{s:#?}");
    assert_eq!(s.counters.sessions_failed, 0);
    assert_eq!(truth.connections.established, VUS);
    for event in [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_completed",
    ] {
        assert_eq!(
            s.histograms[&format!("event.agent-run.{event}")].len(),
            truth.events_sent[event],
            "{event}"
        );
    }
    assert_eq!(s.histograms["session"].len(), VUS);
    assert_eq!(s.histograms["ws.handshake"].len(), VUS);
    assert_eq!(s.histograms["ws.confirmation"].len(), VUS);
    // Each event frame passed one isolation check.
    let events: u64 = truth.events_sent.values().sum();
    assert_eq!(s.checks["isolation:event-user"].run, events);
    assert_eq!(s.checks["isolation:event-user"].failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_faults_are_classified_exactly() {
    // fault knob -> the category gauntlet must report (two come from the plan's classifiers).
    let cases = [
        ("auth_reject", "auth_rejected"),
        ("user_context", "user_context_invalid"),
        ("factory_init", "factory_init_failed"),
        ("factory_critical", "factory_critical"),
        ("service_not_ready", "service_not_ready"),
        ("internal_error", "internal_error"),
    ];
    for (knob, category_name) in cases {
        let s = one_fault(knob, category_name).await;
        let injected = s.counters.sessions_failed;
        assert_eq!(s.counters.sessions_passed, VUS - injected, "{knob}");
    }
}

/// Runs the agent plan with fault `knob` at rate 0.5 and checks that the sessions failing
/// under `category_name` are exactly the injected ones, and nothing else fails.
async fn one_fault(knob: &str, category_name: &str) -> gauntlet_core::metrics::Snapshot {
    let tb = start(config()).await;
    tb.set_faults(faults(json!({ knob: { "rate": 0.5 } })));
    let s = run(agent_plan(&tb, knob, "10s")).await;
    let injected = tb.stats().faults[knob];
    assert!(
        injected > 0 && injected < VUS,
        "{knob}: {injected} injected"
    );
    assert_eq!(
        category(&s, category_name),
        injected,
        "{knob}: {:#?}",
        s.failures
    );
    assert_eq!(
        s.counters.sessions_failed, injected,
        "{knob}: nothing else fails"
    );
    tb.stop().await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_faults_are_classified_exactly() {
    let cases = [
        ("out_of_order", "sequence_violation"),
        ("missing_event", "missing_event"),
        ("duplicate_event", "duplicate_event"),
        ("isolation_breach", "isolation_breach"),
        ("tcp_drop", "unexpected_close"),
    ];
    for (knob, category_name) in cases {
        one_fault(knob, category_name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_spike_beyond_the_gap_timeout_is_a_timeout_awaiting_the_first_event() {
    let tb = start(config()).await;
    tb.set_faults(faults(
        json!({ "latency_spike": { "rate": 0.5, "extra": "3s" } }),
    ));
    let s = run(agent_plan(&tb, "spike", "1500ms")).await;
    let injected = tb.stats().faults["latency_spike"];
    assert!(injected > 0 && injected < VUS);
    assert_eq!(category(&s, "timeout"), injected, "{:#?}", s.failures);
    let awaited: Vec<&str> = s.failures.keys().map(|k| k.detail.as_str()).collect();
    assert!(
        awaited.iter().all(|d| d.ends_with("agent_started")),
        "{awaited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_counted_by_status() {
    let tb = start(config()).await;
    tb.set_faults(faults(
        json!({ "http_error": { "rate": 0.5, "status": 502, "paths": ["/api/health"] } }),
    ));
    let text = r#"
name = "http"
[load]
vus = 4
iterations = 10
[[scenarios]]
name = "health"
steps = [ { http = { path = "/api/health", expect_json = true } } ]
"#;
    let s = run(plan(&tb, text)).await;
    let injected = tb.stats().faults["http_error"];
    assert!(injected > 0 && injected < 40);
    assert_eq!(category(&s, "http_status"), injected);
    assert!(s.failures.keys().all(|k| k.detail == "502"));
    assert_eq!(s.counters.sessions_passed, 40 - injected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_rejections_are_auth_rejected_with_their_status() {
    let mut c = config();
    c.auth.rejection = gauntlet_testbed::config::RejectionMode::RejectHandshake;
    let tb = start(c).await;
    tb.set_faults(faults(json!({ "auth_reject": { "rate": 0.5 } })));
    let s = run(agent_plan(&tb, "handshake", "10s")).await;
    let injected = tb.stats().faults["auth_reject"];
    assert_eq!(category(&s, "auth_rejected"), injected);
    assert!(
        s.failures.keys().all(|k| k.detail == "403"),
        "{:#?}",
        s.failures
    );
}

/// The per-user manager limit: many VUs on few subjects hit it, the same VUs on as many
/// subjects do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_pool_decides_whether_factory_limits_appear() {
    let hold = r#"
[load]
vus = 30
iterations = 1
[[scenarios]]
name = "hold"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { sleep = { duration = "500ms" } },
  { ws_close = {} },
]
"#;
    let mut c = config();
    c.websocket.max_managers_per_user = 5;
    let tb = start(c.clone()).await;
    let shared = format!(
        "name = \"shared\"\n{}\n{hold}",
        auth("shared", "subject_pool = 2")
    );
    let s = run(plan(&tb, &shared)).await;
    let truth = tb.stats();
    let limited = truth
        .connections
        .rejected
        .get("factory_init_failed")
        .copied()
        .unwrap_or(0);
    // 15 concurrent connections per user against a limit of 5: 10 of each user's fail.
    assert_eq!(limited, 20, "{truth:#?}");
    assert_eq!(category(&s, "factory_init_failed"), limited);
    assert_eq!(s.counters.sessions_passed, 10);
    tb.stop().await.unwrap();

    let tb = start(c).await;
    let spread = format!(
        "name = \"spread\"\n{}\n{hold}",
        auth("spread", "subject_pool = 30")
    );
    let s = run(plan(&tb, &spread)).await;
    assert_eq!(s.counters.sessions_failed, 0, "{:#?}", s.failures);
    assert_eq!(s.counters.sessions_passed, 30);
    assert!(tb.stats().connections.rejected.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_placement_and_algorithm_is_accepted() {
    let rsa_private = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testbed/tests/fixtures/rsa_private.pem"
    );
    let rsa_public = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testbed/tests/fixtures/rsa_public.pem"
    );
    let mut c = config();
    c.auth.rsa_public_key_file = Some(rsa_public.into());
    let tb = start(c).await;
    let ping = r#"
[load]
vus = 3
iterations = 2
[[scenarios]]
name = "ping"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "ping" } } },
  { ws_expect = { type = "pong", match = [{ pointer = "/data/user_id", equals = "{subject}" }] } },
]
"#;
    for placement in ["header", "subprotocol", "query"] {
        let text = format!(
            "name = \"p\"\n{}\n{ping}",
            auth(placement, &format!("placement = \"{placement}\""))
        );
        let s = run(plan(&tb, &text)).await;
        assert_eq!(
            s.counters.sessions_passed, 6,
            "{placement}: {:#?}",
            s.failures
        );
    }
    let rs256 = format!(
        "name = \"rs\"\n[auth]\nalgorithm = \"RS256\"\nkey_file = \"{rsa_private}\"\ntoken_per = \"vu\"\nclaims = {{ iss = \"netra-auth-service\", token_type = \"access\" }}\n{ping}"
    );
    let s = run(plan(&tb, &rs256)).await;
    assert_eq!(s.counters.sessions_passed, 6, "{:#?}", s.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_rejection_passes_and_an_unexpected_open_fails() {
    let tb = start(config()).await;
    let text = format!(
        r#"name = "reject"
{}
[load]
vus = 2
iterations = 2
[[scenarios]]
name = "anonymous"
steps = [ {{ ws_connect = {{ auth = false, expect_rejection = {{ close_code = 1008 }}, timeout = "500ms" }} }} ]
"#,
        auth("reject", "")
    );
    let s = run(plan(&tb, &text)).await;
    assert_eq!(s.counters.sessions_passed, 4, "{:#?}", s.failures);
    assert_eq!(tb.stats().connections.rejected["no_token"], 4);

    // Let in although a rejection was expected: the check fails.
    let let_in = text.replace("auth = false, ", "");
    let s = run(plan(&tb, &let_in)).await;
    assert_eq!(category(&s, "check_failed"), 4, "{:#?}", s.failures);

    // Refused, but not the way expected: the refusal is the failure, under its own category.
    tb.set_faults(faults(json!({ "factory_init": { "rate": 1.0 } })));
    let s = run(plan(&tb, &let_in)).await;
    assert_eq!(category(&s, "factory_init_failed"), 4, "{:#?}", s.failures);
    assert_eq!(s.checks["anonymous/ws_connect"].failed, 4);
}

/// A plan `name` of 3 VUs x 2 sessions of scenario `flow` running `steps` (TOML lines).
fn flow_plan(tb: &gauntlet_testbed::Testbed, name: &str, steps: &str) -> gauntlet_core::plan::Plan {
    let text = format!(
        "name = \"{name}\"\n{}\n[load]\nvus = 3\niterations = 2\n[[scenarios]]\nname = \"flow\"\nsteps = [\n{steps}\n]\n",
        auth(name, "")
    );
    plan(tb, &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_steps_carry_the_token_and_captures_flow_into_later_frames() {
    let tb = start(config()).await;
    let steps = r#"
  { http = { path = "/api/messages", auth = true, match = [{ pointer = "/user_id", equals = "{subject}" }], capture = { uid = "/user_id" } } },
  { ws_connect = {} },
  { ws_send = { json = { type = "hello-{uid}" } } },
  { ws_expect = { type = "ack", match = [{ pointer = "/received_type", equals = "hello-{uid}" }] } },"#;
    let s = run(flow_plan(&tb, "capture", steps)).await;
    assert_eq!(s.counters.sessions_passed, 6, "{:#?}", s.failures);
    assert_eq!(tb.stats().http["/api/messages"][&200], 6);
    assert_eq!(s.checks["flow/GET /api/messages"].run, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_a_ws_expect_matched_feeds_its_captures_into_later_frames() {
    let tb = start(config()).await;
    let steps = r#"
  { ws_connect = {} },
  { ws_expect = { type = "system_message", match = [{ pointer = "/data/event", equals = "connection_established" }], capture = { uid = "/data/user_id", ready = "/data/connection_ready" } } },
  { ws_send = { json = { type = "hello-{uid}-{ready}" } } },
  { ws_expect = { type = "ack", match = [{ pointer = "/received_type", equals = "hello-{subject}-true" }] } },"#;
    let s = run(flow_plan(&tb, "ws-capture", steps)).await;
    assert_eq!(s.counters.sessions_passed, 6, "{:#?}", s.failures);
    assert_eq!(s.counters.sessions_failed, 0);
}

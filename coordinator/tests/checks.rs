//! A check that never ran is never silent: every declared isolation check, expectation,
//! sequence and classifier appears in report.json, the summary, report.md, report.html and
//! junit.xml with its count, even 0; a required one that never evaluated makes the verdict an
//! error naming it; `optional = true` and classifiers that matched nothing do not. Against an
//! in-process testbed.

#![allow(clippy::unwrap_used)]

use gauntlet_core::report::{Report, Verdict, html, junit, markdown};

mod common;
use common::{coordinator, run, worker};

/// A plan of 4 VUs x 2 agent runs with an isolation check whose pointer has a typo
/// (`/payload/userid`: the events carry `/user_id`), marked optional or not, a scenario that
/// never runs (weight 0), and a classifier for a failure that never happens.
fn plan(target: &str, secret: &std::path::Path, optional: bool) -> String {
    format!(
        r#"
name = "checks"
[target]
base_url = "{target}"
[auth]
secret_file = "{secret}"
subject = "user-{{subject_index}}"
claims = {{ iss = "netra-auth-service", token_type = "access" }}
[load]
vus = 4
iterations = 2
[[scenarios]]
name = "agent"
steps = [
  {{ ws_connect = {{ confirmation = [{{ pointer = "/data/event", equals = "connection_established" }}] }} }},
  {{ ws_send = {{ json = {{ type = "start_agent", payload = {{ user_request = "go" }} }} }} }},
  {{ ws_expect_sequence = {{ name = "events", orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], ignore = ["pong", "ack"], timeout = "5s" }} }},
  {{ ws_close = {{}} }},
]
[[scenarios]]
name = "rare"
weight = 0
steps = [
  {{ ws_connect = {{}} }},
  {{ ws_send = {{ json = {{ type = "ping" }} }} }},
  {{ ws_expect = {{ type = "pong", optional = {optional} }} }},
]
[[isolation]]
name = "event-user"
pointer = "/user_id"
equals = "{{subject}}"
[[isolation]]
name = "typo"
pointer = "/payload/userid"
equals = "{{subject}}"
optional = {optional}
[[classifiers]]
category = "quota_exceeded"
error_code = "QUOTA"
"#,
        secret = secret.display()
    )
}

async fn run_against_testbed(optional: bool) -> Report {
    let secret = std::env::temp_dir().join(format!(
        "gauntlet-checks-{}-{optional}.secret",
        std::process::id()
    ));
    std::fs::write(&secret, "checks").unwrap();
    let mut config = gauntlet_testbed::TestbedConfig::default();
    config.auth.secret = Some(gauntlet_testbed::config::Secret(b"checks".to_vec()));
    config.pipeline.delay = gauntlet_testbed::delay::Delay::ZERO;
    let tb = gauntlet_testbed::Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (url, stop) = coordinator().await;
    let (_, w) = worker(&url, "w");
    let r = run(&url, plan(&tb.http_url(), &secret, optional), 1).await;
    w.cancel();
    stop.cancel();
    tb.stop().await.unwrap();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_never_evaluated_is_an_error_named_in_every_report_form() {
    let r = run_against_testbed(false).await;
    assert_eq!(r.totals.sessions, 8);
    assert_eq!(r.totals.failed, 0, "{:?}", r.failures);
    assert_eq!(r.verdict, Verdict::Error, "{}", r.verdict_reason);
    assert_eq!(r.never_evaluated, ["rare/expect pong", "isolation:typo"]);
    assert!(
        r.verdict_reason
            .contains("never evaluated in the whole run: `rare/expect pong`, `isolation:typo`"),
        "{}",
        r.verdict_reason
    );
    // Every declared check is listed with its count, the unevaluated at 0.
    assert_eq!(r.checks["isolation:typo"], [0, 0]);
    assert_eq!(r.checks["rare/expect pong"], [0, 0]);
    assert_eq!(r.checks["rare/ws_connect"], [0, 0]);
    assert_eq!(r.checks["agent/events"], [8, 0]);
    assert!(r.checks["isolation:event-user"][0] >= 40, "{:?}", r.checks);
    // A classifier that matched nothing is shown as such, and is no error.
    assert_eq!(r.classifiers["quota_exceeded"], 0);

    let text = r.render_text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("isolation:typo") && l.ends_with("0        0  NEVER EVALUATED")),
        "{text}"
    );
    assert!(
        text.contains("quota_exceeded") && text.contains("(matched nothing)"),
        "{text}"
    );
    let md = markdown::render(&r, None);
    assert!(
        md.contains("| `isolation:typo` | 0 | 0 | **never evaluated** |"),
        "{md}"
    );
    assert!(
        md.contains("| `quota_exceeded` | 0 (matched nothing) |"),
        "{md}"
    );
    let page = html::render(&r, None);
    assert!(
        page.contains("<tr><td><code>isolation:typo</code></td><td class=\"num\">0</td><td class=\"num\">0</td><td class=\"fail\">never evaluated</td></tr>"),
        "{page}"
    );
    let xml = junit::render(&r);
    assert!(
        xml.contains("name=\"isolation:typo\">\n      <failure type=\"never_evaluated\""),
        "{xml}"
    );
    assert!(
        xml.contains("name=\"quota_exceeded\"><system-out>matched 0 failed sessions</system-out>"),
        "{xml}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["checks"]["isolation:typo"], serde_json::json!([0, 0]));
    assert_eq!(json["never_evaluated"][1], "isolation:typo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_checks_may_stay_unevaluated() {
    let r = run_against_testbed(true).await;
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.verdict_reason);
    assert!(r.never_evaluated.is_empty());
    // Still shown, with their 0.
    assert_eq!(r.checks["isolation:typo"], [0, 0]);
    assert_eq!(r.checks["rare/expect pong"], [0, 0]);
}

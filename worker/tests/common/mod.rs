//! Helpers for the engine's integration tests: an in-process testbed on port 0, plans built
//! around it, and a run that collects every snapshot into one total.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gauntlet_core::metrics::Snapshot;
use gauntlet_core::plan::{Overrides, Plan};
use gauntlet_testbed::config::Secret;
use gauntlet_testbed::{Testbed, TestbedConfig};
use gauntlet_worker::{Program, RunConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "worker-test-secret";

/// A testbed config with the test secret, no pipeline delay and no keepalive pings.
pub fn config() -> TestbedConfig {
    let mut c = TestbedConfig::default();
    c.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    c.pipeline.delay = gauntlet_testbed::delay::Delay::ZERO;
    c.websocket.keepalive_interval = Duration::ZERO;
    c
}

pub async fn start(config: TestbedConfig) -> Testbed {
    Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A file holding the HS256 secret, unique to this test process and name.
pub fn secret_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "gauntlet-worker-{}-{name}.secret",
        std::process::id()
    ));
    std::fs::write(&path, SECRET).unwrap();
    path
}

/// The `[auth]` table of test plans (HS256 from a secret file).
pub fn auth(name: &str, extra: &str) -> String {
    format!(
        r#"
[auth]
algorithm = "HS256"
secret_file = "{}"
subject = "user-{{subject_index}}"
claims = {{ iss = "netra-auth-service", token_type = "access" }}
{extra}
"#,
        secret_file(name).display()
    )
}

/// The agent-pipeline scenario of `plans/agent-pipeline.toml`, with `gap` as its gap timeout.
pub fn agent_scenario(gap: &str) -> String {
    format!(
        r#"
[[scenarios]]
name = "agent-run"
vars = {{ thread = "thread-{{vu}}-{{iteration}}" }}
steps = [
  {{ ws_connect = {{ query = {{ thread_id = "{{thread}}" }}, confirmation = [{{ pointer = "/data/event", equals = "connection_established" }}] }} }},
  {{ ws_send = {{ mark = "request", json = {{ type = "start_agent", payload = {{ user_request = "go" }} }} }} }},
  {{ ws_expect_sequence = {{
      name = "agent events",
      since = "request",
      orders = [
        ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"],
        ["agent_started", "agent_thinking", "agent_completed"],
        ["agent_started", "tool_executing", "tool_completed", "agent_completed"],
      ],
      ignore = ["pong", "heartbeat", "ack"],
      error_types = ["agent_error", "agent_failed"],
      timeout = "15s",
      gap_timeout = "{gap}",
  }} }},
  {{ ws_close = {{}} }},
]

[[isolation]]
name = "event-user"
pointer = "/user_id"
equals = "{{subject}}"

[[classifiers]]
category = "user_context_invalid"
error_code = "AUTH_REQUIRED"
frame_regex = "UserExecutionContext"

[[classifiers]]
category = "factory_critical"
error_code = "FACTORY_CRITICAL_FAILURE"
"#
    )
}

/// Loads `text` as a plan aimed at `tb`.
pub fn plan(tb: &Testbed, text: &str) -> Plan {
    let over = Overrides {
        target: Some(tb.http_url()),
        ws_target: None,
        ..Default::default()
    };
    match Plan::from_text("test.toml", text, &over) {
        Ok(p) => p,
        Err(e) => panic!("bad test plan: {e}\n{text}"),
    }
}

/// Runs `plan` to the end and returns the merged total of its snapshots.
pub async fn run(plan: Plan) -> Snapshot {
    run_with(plan, RunConfig::default(), CancellationToken::new()).await
}

pub async fn run_with(plan: Plan, config: RunConfig, stop: CancellationToken) -> Snapshot {
    let program = Arc::new(Program::compile(plan).unwrap());
    let (tx, mut rx) = mpsc::channel(16);
    let engine = tokio::spawn(gauntlet_worker::run(program, config, stop, tx));
    let mut total = Snapshot::default();
    while let Some(s) = rx.recv().await {
        total.merge(&s.snapshot);
    }
    engine.await.unwrap();
    total
}

/// Failed sessions whose primary category is `category`.
pub fn category(s: &Snapshot, category: &str) -> u64 {
    s.failures
        .iter()
        .filter(|(k, _)| k.category == category)
        .map(|(_, v)| v.count)
        .sum()
}

//! A session that sleeps keeps its connection alive: against a server that pings every
//! connection and closes those that leave a ping unanswered (uvicorn's keepalive, 1011), the
//! sleeping sessions answer every ping, and the agent events that arrive while they sleep are
//! read, in order, by the steps after the sleep.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const VUS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_sessions_answer_the_servers_pings_and_read_what_came_meanwhile() {
    let mut c = config();
    c.websocket.keepalive_interval = Duration::from_millis(200);
    c.websocket.keepalive_timeout = Duration::from_secs(1);
    let tb = start(c).await;
    let text = format!(
        r#"name = "keepalive"
[load]
vus = {VUS}
iterations = 1
{}
[[scenarios]]
name = "s"
steps = [
  {{ ws_connect = {{ confirmation = [{{ pointer = "/data/event", equals = "connection_established" }}] }} }},
  {{ ws_send = {{ mark = "request", json = {{ type = "start_agent", payload = {{ user_request = "go" }} }} }} }},
  {{ sleep = {{ duration = "2s" }} }},
  {{ ws_expect_sequence = {{
      name = "agent events",
      since = "request",
      orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]],
      ignore = ["pong", "heartbeat", "ack"],
      timeout = "5s",
  }} }},
  {{ sleep = {{ duration = "2s" }} }},
  {{ ws_close = {{}} }},
]
"#,
        auth("keepalive", "")
    );
    let s = run(plan(&tb, &text)).await;
    let truth = tb.stats();
    assert_eq!(s.counters.sessions_passed, VUS, "{:#?}", s.failures);
    assert_eq!(s.counters.sessions_failed, 0);
    assert_eq!(s.checks["s/agent events"].run, VUS);
    assert_eq!(s.checks["s/agent events"].failed, 0);
    assert_eq!(truth.frames.keepalive_timeouts, 0);
    // Pings were sent and answered: each session slept 4 s with a ping every 200 ms.
    assert!(truth.frames.keepalive_pongs >= VUS * 10, "{truth:#?}");
    assert_eq!(truth.events_sent["agent_completed"], VUS);
}

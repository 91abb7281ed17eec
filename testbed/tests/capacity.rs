//! The testbed's capacity (`pipeline.concurrency`): at most W runs in progress, the rest
//! waiting in arrival order before `agent_started`, a waiting client that leaves taking no
//! slot, unlimited by default; checked against the ground truth in `/__testbed/stats`.
//!
//! Time is paused, so fixed delays give exact figures: a run of five 100 ms gaps is in progress
//! for exactly 500 ms. The clock only moves when every task waits, and then jumps to the next
//! timer, so these tests never compare a client's reading of the clock with a server's; they
//! compare the order in which clients see events (a frame written at one instant is always
//! seen before a frame written at a later one) and the testbed's own wait figures. The manager
//! sweeper's 1 s tick keeps each jump while a client waits on the network short, and clients
//! turn Nagle's algorithm off (as the testbed does) so that no frame sits in the kernel waiting
//! for an ACK while the clock jumps ahead.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LIMIT, Ws, config, expect_close, http, next_json, send_json, start, token};
use futures_util::SinkExt;
use gauntlet_testbed::TestbedConfig;
use gauntlet_testbed::delay::Delay;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const GAP: Duration = Duration::from_millis(100);

/// Fixed 100 ms gaps (a run lasts 500 ms), at most `concurrency` runs at once, the sweeper
/// ticking every second.
fn capacity_config(concurrency: usize) -> TestbedConfig {
    let mut c = config();
    c.pipeline.delay = Delay::Fixed { value: GAP };
    c.pipeline.concurrency = concurrency;
    c.websocket.manager_idle = Duration::from_secs(1);
    c
}

/// Connects as `sub` with Nagle's algorithm off and reads the confirmation frame.
async fn established(tb: &gauntlet_testbed::Testbed, sub: &str) -> Ws {
    let request = format!("{}?token={}", tb.ws_url(), token(sub))
        .into_client_request()
        .unwrap();
    let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
    let (mut ws, _) = tokio::time::timeout(LIMIT, connect).await.unwrap().unwrap();
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["data"]["event"], "connection_established", "{hello}");
    ws
}

/// What clients saw, in the order they saw it: (client, event type).
type Log = Arc<Mutex<Vec<(usize, String)>>>;

/// Reads one run's five events on `ws` into `log`; returns their types in order.
async fn read_run(client: usize, mut ws: Ws, log: Log) -> Vec<String> {
    let mut types = Vec::new();
    for _ in 0..5 {
        let e = next_json(&mut ws).await;
        let kind = e["type"].as_str().unwrap().to_owned();
        log.lock().unwrap().push((client, kind.clone()));
        types.push(kind);
    }
    types
}

/// `n` clients (users `user-0`...), each with one run asked for in the same instant; returns
/// the log of `agent_started` (S) and `agent_completed` (C) as the clients saw them.
async fn start_runs_at_once(tb: &gauntlet_testbed::Testbed, n: usize) -> String {
    let mut clients = Vec::new();
    for i in 0..n {
        clients.push(established(tb, &format!("user-{i}")).await);
    }
    // Every frame is written before the testbed reads any, so all arrive in one instant.
    for ws in &mut clients {
        send_json(ws, json!({"type": "start_agent"})).await;
    }
    let log = Log::default();
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(read_run(i, ws, log.clone())))
        .collect();
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            [
                "agent_started",
                "agent_thinking",
                "tool_executing",
                "tool_completed",
                "agent_completed"
            ]
        );
    }
    let log = log.lock().unwrap();
    log.iter()
        .filter_map(|(_, kind)| match kind.as_str() {
            "agent_started" => Some('S'),
            "agent_completed" => Some('C'),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn six_runs_at_concurrency_two_go_in_three_waves_of_two() {
    let tb = start(capacity_config(2)).await;
    let seen = start_runs_at_once(&tb, 6).await;
    // Never more than two in progress: the 3rd and 4th start only after two runs complete,
    // the 5th and 6th after four.
    assert_eq!(seen, "SSCCSSCCSSCC");

    let stats = tb.stats();
    assert_eq!((stats.pipelines.started, stats.pipelines.completed), (6, 6));
    let cap = stats.capacity;
    assert_eq!(cap.concurrency, 2);
    assert_eq!(cap.max_in_progress, 2);
    assert_eq!((cap.in_progress, cap.waiting), (0, 0));
    assert_eq!((cap.waited, cap.abandoned), (4, 0));
    // Runs 3 and 4 waited one run (500 ms), runs 5 and 6 two (1 s): 3 s in all.
    assert_eq!(cap.wait_total_us, 3_000_000);
    assert_eq!(cap.wait_max_us, 1_000_000);
    // Each run held its slot for its five 100 ms gaps: the mean run length is 500 ms.
    assert_eq!((cap.runs_ended, cap.busy_total_us), (6, 3_000_000));

    // The same figures over HTTP, under the documented names.
    let (status, body) = http(&tb, "GET", "/__testbed/stats", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["capacity"],
        json!({
            "concurrency": 2, "in_progress": 0, "max_in_progress": 2, "waiting": 0,
            "waited": 4, "abandoned": 0, "wait_total_us": 3_000_000, "wait_max_us": 1_000_000,
            "runs_ended": 6, "busy_total_us": 3_000_000,
        })
    );
}

#[tokio::test(start_paused = true)]
async fn unlimited_by_default_every_run_starts_at_once() {
    assert_eq!(TestbedConfig::default().pipeline.concurrency, 0);
    let tb = start(capacity_config(0)).await;
    let seen = start_runs_at_once(&tb, 6).await;
    assert_eq!(seen, "SSSSSSCCCCCC");
    let cap = tb.stats().capacity;
    assert_eq!((cap.concurrency, cap.max_in_progress), (0, 6));
    assert_eq!((cap.waited, cap.wait_total_us, cap.wait_max_us), (0, 0, 0));
}

/// Pings and reads until the pong: the testbed has handled every frame sent before.
async fn ping(ws: &mut Ws) {
    send_json(ws, json!({"type": "ping"})).await;
    assert_eq!(next_json(ws).await["type"], "pong");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_client_that_disconnects_takes_no_slot() {
    // 10 s gaps: a's run lasts 50 s, far longer than the clock's jumps while b and c queue.
    let mut c = capacity_config(1);
    c.pipeline.delay = Delay::Fixed {
        value: Duration::from_secs(10),
    };
    let tb = start(c).await;
    let mut running = established(&tb, "user-a").await;
    let mut leaving = established(&tb, "user-b").await;
    let mut next = established(&tb, "user-c").await;
    send_json(&mut running, json!({"type": "start_agent"})).await;
    ping(&mut running).await;
    // b queues first, then c; a queued connection still answers pings.
    send_json(&mut leaving, json!({"type": "start_agent"})).await;
    ping(&mut leaving).await;
    send_json(&mut next, json!({"type": "start_agent"})).await;
    ping(&mut next).await;
    let cap = tb.stats().capacity;
    assert_eq!((cap.in_progress, cap.waiting, cap.waited), (1, 2, 2));

    // b leaves while a still runs: once b has the testbed's answer to its close, its
    // connection has ended and its run has left the queue.
    leaving.send(Message::Close(None)).await.unwrap();
    expect_close(&mut leaving).await;
    drop(leaving);
    let cap = tb.stats().capacity;
    assert_eq!((cap.waiting, cap.abandoned), (1, 1));
    assert_eq!(tb.stats().pipelines.completed, 0, "a's run is still going");

    // a completes; the slot goes to c, never to b.
    let log = Log::default();
    assert_eq!(
        read_run(0, running, log.clone()).await[4],
        "agent_completed"
    );
    assert_eq!(read_run(2, next, log.clone()).await[0], "agent_started");

    let stats = tb.stats();
    assert_eq!(
        (
            stats.pipelines.started,
            stats.pipelines.completed,
            stats.pipelines.aborted
        ),
        (2, 2, 0)
    );
    assert_eq!(stats.users["user-b"].pipelines, 0);
    assert_eq!(stats.users["user-c"].pipelines, 1);
    let cap = stats.capacity;
    assert_eq!(cap.max_in_progress, 1);
    assert_eq!((cap.waited, cap.abandoned, cap.waiting), (2, 1, 0));
}

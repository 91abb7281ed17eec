//! Frames and bad input: ping/pong, ack, FORMAT_ERROR, oversize and huge frames, binary frames,
//! the two event shapes and their order and gaps, HTTP endpoints, warm-up, and a client that
//! never answers keepalive pings.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use gauntlet_testbed::config::EventShape;
use gauntlet_testbed::delay::Delay;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn ping_ack_and_format_errors() {
    let tb = start(config()).await;
    let mut ws = established(&tb, "user-1").await;
    send_json(&mut ws, json!({"type": "ping"})).await;
    let pong = next_json(&mut ws).await;
    assert_eq!(
        (pong["type"].as_str(), pong["data"]["user_id"].as_str()),
        (Some("pong"), Some("user-1"))
    );

    send_json(&mut ws, json!({"type": "something_new", "x": 1})).await;
    let ack = next_json(&mut ws).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["received_type"], "something_new");
    assert_eq!(ack["status"], "acknowledged");

    // `["ping"]` once filled the frame's fields in order and got a pong (found by fuzz_frames).
    for garbage in ["{not json", "[1,2]", "[\"ping\"]", "{\"type\": 5}", ""] {
        ws.send(Message::Text(garbage.into())).await.unwrap();
        let err = next_json(&mut ws).await;
        assert_eq!(err["error_code"], "FORMAT_ERROR", "{garbage:?}");
    }
    ws.send(Message::Binary(vec![0xff, 0x00, 0x13].into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["error_code"], "FORMAT_ERROR");

    // Over 8192 bytes: silently dropped, connection still fine.
    let big = json!({"type": "ping", "pad": "x".repeat(9000)}).to_string();
    ws.send(Message::Text(big.into())).await.unwrap();
    send_json(&mut ws, json!({"type": "heartbeat"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "heartbeat_ack");

    let stats = tb.stats();
    assert_eq!(stats.frames.pongs, 1);
    assert_eq!(stats.frames.acks, 1);
    assert_eq!(stats.frames.invalid_json, 5);
    assert_eq!(stats.frames.binary, 1);
    assert_eq!(stats.frames.oversize_dropped, 1);
    assert_eq!(stats.frames.received, 10);
}

#[tokio::test]
async fn a_message_over_the_hard_cap_closes_1009() {
    let mut c = config();
    c.websocket.max_message_bytes = 64 * 1024;
    let tb = start(c).await;
    let mut ws = established(&tb, "user-1").await;
    let huge = "y".repeat(200 * 1024);
    ws.send(Message::Text(huge.into())).await.unwrap();
    assert_eq!(expect_close(&mut ws).await.0, 1009);
    assert_eq!(tb.stats().frames.too_large_closes, 1);
    // The testbed is still serving.
    let _ok = established(&tb, "user-2").await;
}

#[tokio::test]
async fn events_come_in_order_with_ids_and_at_least_the_configured_gaps() {
    let mut c = config();
    let gap = Duration::from_millis(30);
    c.pipeline.delay = Delay::Fixed { value: gap };
    let tb = start(c).await;
    let mut ws = established(&tb, "user-5").await;
    for alias in ["start_agent", "user_message", "chat"] {
        let started = Instant::now();
        send_json(
            &mut ws,
            json!({"type": alias, "payload": {"message": "hi"}, "thread_id": "t-9"}),
        )
        .await;
        let mut types = Vec::new();
        let mut run_ids = std::collections::BTreeSet::new();
        for i in 1..=5u32 {
            let e = next_json(&mut ws).await;
            assert!(
                started.elapsed() >= gap * i,
                "event {i} came before its gap"
            );
            assert_eq!(e["user_id"], "user-5");
            assert_eq!(e["thread_id"], "t-9");
            assert!(e["payload"]["status"].is_string());
            run_ids.insert(e["run_id"].as_str().unwrap().to_owned());
            types.push(e["type"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            types,
            [
                "agent_started",
                "agent_thinking",
                "tool_executing",
                "tool_completed",
                "agent_completed"
            ],
            "{alias}"
        );
        assert_eq!(run_ids.len(), 1);
    }
    let stats = tb.stats();
    assert_eq!((stats.pipelines.started, stats.pipelines.completed), (3, 3));
    assert!(stats.events_sent.values().all(|n| *n == 3));
}

#[tokio::test]
async fn wrapped_event_shape_carries_user_context() {
    let mut c = config();
    c.websocket.event_shape = EventShape::Wrapped;
    let tb = start(c).await;
    let mut ws = established(&tb, "user-3").await;
    send_json(
        &mut ws,
        json!({"type": "execute_agent", "payload": {"user_request": "go"}}),
    )
    .await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["type"], "agent_started");
    assert_eq!(e["critical"], true);
    assert_eq!(e["user_context"]["user_id"], "user-3");
    assert!(
        e["data"]["run_id"].is_string()
            && e["data"]["thread_id"].is_string()
            && e["data"]["request_id"].is_string()
    );
}

#[tokio::test]
async fn http_endpoints_answer_json() {
    let tb = start(config()).await;
    for path in gauntlet_testbed::http::CRITICAL_PATHS {
        let (status, body) = http(&tb, "GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}");
        assert!(body.is_object(), "{path}");
    }
    assert_eq!(
        http(&tb, "GET", "/api/health", &[], "").await.1["status"],
        "healthy"
    );
    assert!(http(&tb, "GET", "/api/discovery/services", &[], "").await.1["services"].is_array());
    assert!(http(&tb, "GET", "/api/mcp/servers", &[], "").await.1["data"].is_array());
    let bearer = format!("Bearer {}", token("user-1"));
    for path in gauntlet_testbed::http::MESSAGE_PATHS {
        let (status, body) = http(&tb, "GET", path, &[], "").await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (401, Some("AUTH_REQUIRED")),
            "{path}"
        );
        let (status, _) = http(&tb, "GET", path, &[("authorization", &bearer)], "").await;
        assert_eq!(status, 200, "{path}");
    }
    assert_eq!(http(&tb, "GET", "/nope", &[], "").await.0, 404);
    assert_eq!(http(&tb, "DELETE", "/health", &[], "").await.0, 405);
    let (status, body) = http(&tb, "GET", "/ws", &[], "").await;
    assert_eq!(status, 400, "{body}");
    let stats = tb.stats();
    assert_eq!(stats.http["/health"][&200], 1);
    assert_eq!(stats.http["/api/messages"][&401], 1);
    assert_eq!(stats.http["other"][&404], 1);
}

#[tokio::test]
async fn warm_up_means_unhealthy_and_service_not_ready() {
    let mut c = config();
    c.http.warmup = Duration::from_secs(3600);
    let tb = start(c).await;
    let (status, body) = http(&tb, "GET", "/health", &[], "").await;
    assert_eq!((status, body["status"].as_str()), (503, Some("unhealthy")));
    let mut ws = connect(&tb, "user-1").await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1011);
    assert!(reason.starts_with("Service not ready: "), "{reason}");
    assert_eq!(tb.stats().connections.rejected["warming_up"], 1);
}

/// A raw client that completes the handshake, then only reads bytes: it never answers the
/// server's pings, like a half-open peer. The server must close it 1011.
#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed() {
    let mut c = config();
    c.websocket.keepalive_interval = Duration::from_millis(50);
    c.websocket.keepalive_timeout = Duration::from_millis(100);
    // This client never answers the close frame either; do not wait long for it.
    c.websocket.send_timeout = Duration::from_millis(100);
    let tb = start(c).await;
    let mut tcp = raw_upgrade(&tb, "user-1").await;
    assert_eq!(read_until_closed(&mut tcp).await, 1011);
    assert_eq!(tb.stats().frames.keepalive_timeouts, 1);
}

#[tokio::test]
async fn config_file_errors_name_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("gauntlet-testbed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "seed = 1\n[websocket]\nmax_managers_per_user = -3\n").unwrap();
    let err = gauntlet_testbed::TestbedConfig::load(&path)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("{}:3:", path.display())), "{err}");
    assert!(err.contains("websocket.max_managers_per_user"), "{err}");
    std::fs::write(
        &path,
        "[faults.tcp_drop]\nrate = 0.5\nevent = \"agent_sleeping\"\n",
    )
    .unwrap();
    let err = gauntlet_testbed::TestbedConfig::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(":3:") && err.contains("faults.tcp_drop.event"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_1007() {
    let mut c = config();
    c.websocket.send_timeout = Duration::from_millis(100);
    let tb = start(c).await;
    let mut tcp = raw_upgrade(&tb, "user-1").await;
    tcp.write_all(&masked_text_frame(&[0xff, 0xfe, 0x41]))
        .await
        .unwrap();
    assert_eq!(read_until_closed(&mut tcp).await, 1007);
    assert_eq!(tb.stats().frames.invalid_utf8_closes, 1);
}

/// A client that floods agent runs and never reads: the testbed's writes block, the send
/// timeout ends the connection, and nothing grows without bound meanwhile.
#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_by_the_send_timeout() {
    let mut c = config();
    c.websocket.send_timeout = Duration::from_millis(200);
    let tb = start(c).await;
    let mut tcp = raw_upgrade(&tb, "user-1").await;
    let frame = masked_text_frame(br#"{"type":"start_agent"}"#);
    let flood = async {
        // Bounded: at most 200,000 frames; the server cuts us off long before.
        for _ in 0..200_000 {
            if tcp.write_all(&frame).await.is_err() {
                return true;
            }
        }
        false
    };
    let cut_off = tokio::time::timeout(LIMIT, flood)
        .await
        .expect("the server never cut the client off");
    assert!(cut_off, "the server never cut the client off");
    let stats = tb.stats();
    assert_eq!(stats.frames.send_timeouts, 1);
    assert_eq!(stats.connections.closed, 1);
}

/// More runs than a connection has slots for: reading pauses, nothing is lost.
#[tokio::test]
async fn more_runs_than_slots_all_complete() {
    let tb = start(config()).await;
    let mut ws = established(&tb, "user-1").await;
    for _ in 0..40 {
        send_json(
            &mut ws,
            json!({"type": "start_agent", "payload": {"user_request": "x"}}),
        )
        .await;
    }
    let mut completed = 0;
    while completed < 40 {
        if next_json(&mut ws).await["type"] == "agent_completed" {
            completed += 1;
        }
    }
    let stats = tb.stats();
    assert_eq!(
        (stats.pipelines.started, stats.pipelines.completed),
        (40, 40)
    );
    assert!(stats.events_sent.values().all(|n| *n == 40));
}

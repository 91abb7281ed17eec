//! A hostile target cannot exhaust a worker: an HTTP body over `target.max_response_bytes`
//! (also an endless chunked one) and a WebSocket message over `target.max_message_bytes` fail
//! their sessions as `response_too_large`, read no further than the cap, and the run ends.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use futures_util::SinkExt;
use gauntlet_core::metrics::Snapshot;
use gauntlet_core::plan::{Overrides, Plan};
use gauntlet_worker::{Program, RunConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

async fn run(text: &str) -> Snapshot {
    let plan = Plan::from_text("caps.toml", text, &Overrides::default()).unwrap();
    let program = Arc::new(Program::compile(plan).unwrap());
    let (tx, mut rx) = mpsc::channel(16);
    let engine = tokio::spawn(gauntlet_worker::run(
        program,
        RunConfig::default(),
        CancellationToken::new(),
        tx,
    ));
    let mut total = Snapshot::default();
    while let Some(s) = rx.recv().await {
        total.merge(&s.snapshot);
    }
    engine.await.unwrap();
    total
}

fn too_large(s: &Snapshot) -> u64 {
    s.failures
        .iter()
        .filter(|(k, _)| k.category == "response_too_large")
        .map(|(_, v)| v.count)
        .sum()
}

/// An HTTP server that answers every request with a chunked body that never ends (it stops
/// writing when the client goes away).
async fn endless_http() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536));
                // Bounded: 64 MiB at most, far past the cap, unless the client leaves first.
                for _ in 0..1024 {
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// A WebSocket server that sends one 2 MiB text message after the upgrade.
async fn huge_ws() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(sock).await else {
                    return;
                };
                let _ = ws.send(Message::text("y".repeat(2 << 20))).await;
                let _ = ws.close(None).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_http_body_is_cut_at_the_cap() {
    let target = endless_http().await;
    let s = run(&format!(
        "name = \"caps\"\n[target]\nbase_url = \"{target}\"\nmax_response_bytes = 100000\n[load]\nvus = 3\niterations = 2\n[[scenarios]]\nname = \"big\"\nsteps = [ {{ http = {{ path = \"/\" }} }} ]\n"
    ))
    .await;
    assert_eq!(s.counters.sessions_failed, 6, "{:?}", s.failures);
    assert_eq!(too_large(&s), 6, "{:?}", s.failures);
    // Read no further than the cap: under 100,000 bytes kept per session.
    assert!(s.counters.bytes_received <= 6 * 100_000, "{:?}", s.counters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_message_over_the_cap_fails_its_session() {
    let target = huge_ws().await;
    let s = run(&format!(
        "name = \"caps\"\n[target]\nbase_url = \"{target}\"\nws_path = \"/\"\n[load]\nvus = 2\niterations = 2\n[[scenarios]]\nname = \"big\"\nsteps = [ {{ ws_connect = {{}} }}, {{ ws_expect = {{ type = \"never\", timeout = \"5s\" }} }} ]\n"
    ))
    .await;
    assert_eq!(s.counters.sessions_failed, 4, "{:?}", s.failures);
    assert_eq!(too_large(&s), 4, "{:?}", s.failures);
    let sample = &s.failures.values().next().unwrap().samples[0];
    assert!(
        sample.contains("target.max_message_bytes = 262144"),
        "{sample}"
    );
}

/// A WebSocket server that sends 150 frames nobody waits for (JSON of another type, text that
/// is not JSON, binary), then nothing.
async fn junk_ws() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(sock).await else {
                    return;
                };
                for i in 0..150 {
                    let frame = match i % 3 {
                        0 => Message::text(format!(
                            "{{\"type\":\"junk\",\"n\":{i},\"pad\":\"{}\"}}",
                            "z".repeat(4000)
                        )),
                        1 => Message::text("not json at all"),
                        _ => Message::binary(vec![0u8; 64]),
                    };
                    if ws.send(frame).await.is_err() {
                        return;
                    }
                }
                // Then silence until the client leaves.
                let _ = futures_util::StreamExt::next(&mut ws).await;
            });
        }
    });
    format!("http://{addr}")
}

/// A session that timed out among frames it did not wait for says so: how many, and the first
/// one, in its sample; and the sample stays within the documented 512 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_among_junk_frames_names_them() {
    let target = junk_ws().await;
    let s = run(&format!(
        "name = \"junk\"\n[target]\nbase_url = \"{target}\"\nws_path = \"/\"\n[load]\nvus = 2\niterations = 1\n[[scenarios]]\nname = \"wait\"\nsteps = [ {{ ws_connect = {{}} }}, {{ ws_expect = {{ type = \"agent_started\", timeout = \"1s\" }} }} ]\n"
    ))
    .await;
    assert_eq!(s.counters.sessions_failed, 2, "{:?}", s.failures);
    let (key, stats) = s.failures.iter().next().unwrap();
    assert_eq!(key.category, "timeout");
    assert_eq!(
        key.detail,
        "expect agent_started: /type == \"agent_started\""
    );
    let sample = &stats.samples[0];
    assert!(
        sample.contains("meanwhile 150 frames arrived that it did not wait for, the first: `{\"type\":\"junk\",\"n\":0"),
        "{sample}"
    );
    assert!(
        sample.len() <= gauntlet_core::metrics::SAMPLE_BYTES + '…'.len_utf8(),
        "{} bytes",
        sample.len()
    );
}

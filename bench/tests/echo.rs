//! The benchmark's reference pieces count what they did: the echo server's count of frames
//! echoed equals the round trips the bare loop recorded, give or take the one each connection
//! may have in flight when the loop stops (the harness reads that count to
//! measure every client alike), and the delay server answers no frame before its delay (by
//! construction: it sleeps until the frame's read time plus the delay, and a client's send
//! comes before the read).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gauntlet_bench::bare::{Pace, latencies};
use gauntlet_bench::echo::{Echoed, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_server_counts_exactly_the_round_trips_made() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let echoed = Arc::new(Echoed::default());
    let server = tokio::spawn(serve(listener, echoed.clone(), None));
    let h = latencies(
        ("127.0.0.1", port, "/"),
        5,
        Pace::Closed,
        Duration::ZERO,
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert!(!h.is_empty());
    // Every round trip the loop recorded was echoed; when the loop stops, each of its 5
    // connections may have one more frame echoed whose answer it no longer waited for.
    let frames = echoed.frames.load(Ordering::Relaxed);
    assert!(
        (h.len()..=h.len() + 5).contains(&frames),
        "{frames} frames echoed, {} round trips recorded",
        h.len()
    );
    server.abort();
}

#[test]
fn the_delay_server_answers_no_frame_before_its_delay() {
    let (listener, addr) = gauntlet_bench::delay::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    std::thread::spawn(move || gauntlet_bench::delay::serve(listener, Duration::from_millis(1), 4));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let h = runtime
        .block_on(latencies(
            ("127.0.0.1", addr.port(), "/"),
            2,
            Pace::Every(Duration::from_millis(20)),
            Duration::ZERO,
            Duration::from_millis(200),
        ))
        .unwrap();
    assert!(h.len() >= 2, "{}", h.len());
    assert!(h.min() >= 1000, "answered before the delay: {} us", h.min());
}

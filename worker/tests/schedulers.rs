//! The load models' bookkeeping, on paused tokio time with plans whose steps only sleep (no
//! network): exact session counts for iterations, durations, graceful stop and dropped
//! arrivals; and, on a real socket, the open model counting latency from the intended start.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use gauntlet_core::plan::{Overrides, Plan};
use gauntlet_worker::RunConfig;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn sleepy(load: &str, sleep: &str) -> Plan {
    let text = format!(
        r#"name = "sleepy"
[target]
base_url = "http://127.0.0.1:9"
[load]
{load}
[[scenarios]]
name = "nap"
steps = [ {{ sleep = {{ duration = "{sleep}" }} }} ]
"#
    );
    Plan::from_text("sleepy.toml", &text, &Overrides::default()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn closed_iterations_run_exactly_and_time_each_session() {
    let t0 = Instant::now();
    let s = run(sleepy("vus = 3\niterations = 4", "1s")).await;
    assert_eq!(s.counters.sessions_started, 12);
    assert_eq!(s.counters.sessions_passed, 12);
    let h = &s.histograms["session"];
    assert_eq!(h.len(), 12);
    // Every session took exactly 1 s (within the histogram's 3 significant digits).
    assert!(h.equivalent(h.min(), 1_000_000) && h.equivalent(h.max(), 1_000_000));
    assert_eq!(t0.elapsed(), Duration::from_secs(4));
}

#[tokio::test(start_paused = true)]
async fn closed_duration_stops_new_sessions_and_interrupts_after_the_graceful_stop() {
    // Each VU starts sessions at 0, 3, 6 and 9 s; the one started at 9 s would end at 12 s,
    // after duration (10 s) + graceful_stop (1 s), so it is interrupted.
    let s = run(sleepy(
        "vus = 2\nduration = \"10s\"\ngraceful_stop = \"1s\"",
        "3s",
    ))
    .await;
    assert_eq!(s.counters.sessions_started, 8);
    assert_eq!(s.counters.sessions_passed, 6);
    assert_eq!(s.counters.sessions_interrupted, 2);
    assert_eq!(s.counters.sessions_failed, 0);
}

#[tokio::test(start_paused = true)]
async fn think_time_spaces_sessions() {
    let s = run(sleepy(
        "vus = 1\nduration = \"10s\"\nthink_time = \"1s\"",
        "1s",
    ))
    .await;
    // Sessions at 0, 2, 4, 6 and 8 s.
    assert_eq!(s.counters.sessions_passed, 5);
}

#[tokio::test(start_paused = true)]
async fn open_model_drops_arrivals_that_find_no_free_vu() {
    // 10 arrivals/s for 2 s = 20; 5 VUs each busy 3 s: the first 5 run, 15 are dropped.
    let s = run(sleepy(
        "model = \"open\"\nrate = 10\nduration = \"2s\"\nmax_vus = 5",
        "3s",
    ))
    .await;
    assert_eq!(s.counters.sessions_passed, 5);
    assert_eq!(s.counters.dropped_arrivals, 15);
    // With enough VUs nothing is dropped.
    let s = run(sleepy(
        "model = \"open\"\nrate = 10\nduration = \"2s\"\nmax_vus = 40",
        "3s",
    ))
    .await;
    assert_eq!(
        (s.counters.sessions_passed, s.counters.dropped_arrivals),
        (20, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn open_model_interrupts_a_reused_vus_session_after_the_graceful_stop() {
    // Arrivals at 0, 1, 2 and 3 s, 2.5 s each, two VUs: the first two run, the third finds no
    // free VU, the fourth reuses the first VU at 3 s and would end at 5.5 s, after duration
    // (4 s) + graceful_stop (1 s), so it is interrupted.
    let s = run(sleepy(
        "model = \"open\"\nrate = 1\nduration = \"4s\"\nmax_vus = 2\ngraceful_stop = \"1s\"",
        "2500ms",
    ))
    .await;
    assert_eq!(s.counters.sessions_started, 3);
    assert_eq!(s.counters.sessions_passed, 2);
    assert_eq!(s.counters.dropped_arrivals, 1);
    assert_eq!(s.counters.sessions_interrupted, 1);
    assert_eq!(s.counters.sessions_failed, 0);
}

#[tokio::test(start_paused = true)]
async fn a_stop_request_drains_like_the_end_of_the_run() {
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(4500)).await;
        trigger.cancel();
    });
    let t0 = Instant::now();
    let s = run_with(
        sleepy("vus = 2\nduration = \"1h\"\ngraceful_stop = \"10s\"", "2s"),
        RunConfig::default(),
        stop,
    )
    .await;
    // Sessions at 0, 2 and 4 s per VU; the third ends at 6 s, inside the graceful period.
    assert_eq!(s.counters.sessions_passed, 6);
    assert_eq!(s.counters.sessions_interrupted, 0);
    assert_eq!(t0.elapsed(), Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn segments_split_vus_and_arrivals_without_overlap() {
    use gauntlet_core::segment::ExecutionSegment;
    let segments = ExecutionSegment::split(&[1, 2]);
    let mut closed = 0;
    let mut open = 0;
    for (_, segment) in segments {
        let config = RunConfig {
            segment,
            ..RunConfig::default()
        };
        let s = run_with(
            sleepy("vus = 7\niterations = 2", "1s"),
            config,
            CancellationToken::new(),
        )
        .await;
        closed += s.counters.sessions_passed;
        let s = run_with(
            sleepy(
                "model = \"open\"\nrate = 10\nduration = \"3s\"\nmax_vus = 40",
                "1s",
            ),
            config,
            CancellationToken::new(),
        )
        .await;
        open += s.counters.sessions_passed;
    }
    assert_eq!(closed, 14);
    assert_eq!(open, 30);
}

/// A target whose HTTP answers all stall between 0.5 s and 1.5 s after it starts.
async fn stalling_target() -> String {
    use axum::Router;
    use axum::routing::get;
    let t0 = Instant::now();
    let app = Router::new().route(
        "/",
        get(move || async move {
            let since = t0.elapsed();
            if since >= Duration::from_millis(500) && since < Duration::from_millis(1500) {
                tokio::time::sleep_until(t0 + Duration::from_millis(1500)).await;
            }
            "{}"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn one_request(base: &str, load: &str) -> Plan {
    let text = format!(
        r#"name = "stall"
[target]
base_url = "{base}"
[load]
{load}
[[scenarios]]
name = "get"
steps = [ {{ http = {{ path = "/" }} }} ]
"#
    );
    Plan::from_text("stall.toml", &text, &Overrides::default()).unwrap()
}

/// Coordinated omission: during a 1 s stall the open model keeps sessions arriving and
/// counts each from its intended start, so the stall shows in its p99; a closed loop with
/// one VU waits politely and records the stall once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_models_p99_includes_a_stall_the_closed_loop_hides() {
    let base = stalling_target().await;
    let open = run(one_request(
        &base,
        "model = \"open\"\nrate = 100\nduration = \"2s\"\nmax_vus = 200",
    ))
    .await;
    let h = &open.histograms["session"];
    assert_eq!(open.counters.dropped_arrivals, 0);
    assert!(
        h.value_at_quantile(0.99) >= 800_000,
        "open p99 {} us",
        h.value_at_quantile(0.99)
    );
    let slow_open = h.count_between(500_000, h.max());
    assert!(slow_open >= 40, "{slow_open} open sessions saw the stall");

    let base = stalling_target().await;
    let closed = run(one_request(&base, "vus = 1\nduration = \"2s\"")).await;
    let h = &closed.histograms["session"];
    assert_eq!(
        h.count_between(500_000, h.max().max(500_000)),
        1,
        "the closed loop records the stall once"
    );
}

#[tokio::test(start_paused = true)]
async fn scenarios_share_sessions_by_weight() {
    let text = r#"name = "weights"
[target]
base_url = "http://127.0.0.1:9"
[load]
vus = 10
iterations = 40
[[scenarios]]
name = "heavy"
weight = 3
steps = [ { sleep = { duration = "1s" } } ]
[[scenarios]]
name = "light"
weight = 1
steps = [ { sleep = { duration = "1s" } } ]
"#;
    let s = run(Plan::from_text("weights.toml", text, &Overrides::default()).unwrap()).await;
    let heavy = s.histograms["session.heavy"].len();
    let light = s.histograms["session.light"].len();
    assert_eq!(heavy + light, 400);
    assert!((255..=345).contains(&heavy), "heavy {heavy}, light {light}");
}

//! How a run ends decides its verdict and its `delivered`: completed, cancelled (what Ctrl-C
//! does), aborted by a threshold, its only worker lost, the coordinator stopping, a worker that
//! heartbeats but never reports, and the hard deadline. In-process coordinator and workers,
//! plans whose steps only sleep.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gauntlet_core::report::{Report, Verdict};
use gauntlet_proto::v1::control_service_client::ControlServiceClient;
use gauntlet_proto::v1::{self, coordinator_message, worker_message};
use tokio_stream::StreamExt;

mod common;
use common::{
    coordinator, hand_worker, run, sleepy, submit, wait_for_workers, watch_report, worker,
};

/// Submits `plan`, cancels it (as Ctrl-C on `gauntlet run` does) once it has run `ms`, and
/// returns its report.
async fn cancelled_at(url: &str, plan: String, ms: u64) -> Report {
    let (id, mut client) = submit(url, plan, 1).await;
    until_elapsed(&mut client, &id, ms).await;
    client
        .cancel_run(v1::CancelRunRequest { run_id: id.clone() })
        .await
        .unwrap();
    watch_report(&mut client, &id).await
}

/// Watches run `id` until its progress says `elapsed_ms >= ms` (the run's own clock).
async fn until_elapsed(
    client: &mut ControlServiceClient<tonic::transport::Channel>,
    id: &str,
    ms: u64,
) {
    let mut stream = client
        .watch_run(v1::WatchRunRequest { run_id: id.into() })
        .await
        .unwrap()
        .into_inner();
    while let Some(p) = stream.message().await.unwrap() {
        if p.phase() == v1::RunPhase::Running && p.elapsed_ms >= ms {
            return;
        }
    }
    panic!("the run ended before {ms} ms");
}

fn near(value: f64, want: f64, within: f64) -> bool {
    (value - want).abs() <= within
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_run_delivered_everything_in_each_load_model() {
    let (url, _stop) = coordinator().await;
    let _a = worker(&url, "a");
    let _b = worker(&url, "b");
    wait_for_workers(&url, 2).await;
    for load in [
        "vus = 4\niterations = 3",
        "vus = 4\nduration = \"1s\"",
        "vus = 4\nstages = [{ duration = \"500ms\", target = 4 }, { duration = \"500ms\", target = 0 }]",
        "model = \"open\"\nrate = 20\nduration = \"1s\"\nmax_vus = 10",
        // Shares that run out of work before the plan's end still delivered all of it: one VU
        // for two workers (one share has none), iterations done before the duration, and
        // arrivals so sparse that a worker's last one comes long before the end.
        "vus = 1\nduration = \"1s\"",
        "vus = 2\niterations = 2\nduration = \"3s\"",
        "model = \"open\"\nrate = 3\nduration = \"2s\"\nmax_vus = 4",
    ] {
        let r = run(&url, sleepy(load, ""), 2).await;
        assert_eq!(r.verdict, Verdict::Pass, "{load}: {}", r.verdict_reason);
        assert_eq!(r.delivered, 1.0, "{load}");
        let shares: f64 = r.workers.iter().map(|w| w.share).sum();
        assert!(near(shares, 1.0, 1e-9), "{load}: {:?}", r.workers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_delivered_what_ran_before_the_cancel() {
    let (url, _stop) = coordinator().await;
    let _a = worker(&url, "a");
    wait_for_workers(&url, 1).await;
    // Closed, 8 s; cancelled (as Ctrl-C does) at 2 s: a quarter of the VU-seconds.
    let r = cancelled_at(&url, sleepy("vus = 4\nduration = \"8s\"", ""), 2000).await;
    assert_eq!(r.verdict, Verdict::Error);
    assert_eq!(r.verdict_reason, "the run was cancelled");
    assert!(near(r.delivered, 0.25, 0.08), "delivered {}", r.delivered);
    // Open model, 40/s for 4 s, cancelled at 1 s: a quarter of the arrivals.
    let open = "model = \"open\"\nrate = 40\nduration = \"4s\"\nmax_vus = 20";
    let r = cancelled_at(&url, sleepy(open, ""), 1000).await;
    assert_eq!(r.verdict, Verdict::Error);
    assert!(near(r.delivered, 0.25, 0.1), "delivered {}", r.delivered);
    // Iterations only: the sessions started over those planned.
    let r = cancelled_at(&url, sleepy("vus = 2\niterations = 40", ""), 1000).await;
    assert_eq!(r.verdict, Verdict::Error);
    assert_eq!(r.delivered, r.totals.sessions as f64 / 80.0);
    assert!(r.delivered < 0.5, "delivered {}", r.delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_is_a_fail_whose_reason_and_table_agree_and_whose_delivered_stops_at_the_abort() {
    let (url, _stop) = coordinator().await;
    let _a = worker(&url, "a");
    wait_for_workers(&url, 1).await;
    // Every session takes 100 ms: a p50 below 50 ms fails as soon as it is judged, at 1 s.
    let threshold = "[[thresholds]]\nmetric = \"session\"\nstat = \"p50\"\nbelow = \"50ms\"\nabort_on_fail = true\ngrace = \"1s\"";
    let r = run(
        &url,
        sleepy(
            "vus = 2\nduration = \"10s\"\ngraceful_stop = \"1s\"",
            threshold,
        ),
        1,
    )
    .await;
    assert_eq!(r.verdict, Verdict::Fail, "{}", r.verdict_reason);
    assert_eq!(r.verdict.exit_code(), 1);
    // The reason quotes the whole run's figure, as the threshold table does.
    let t = &r.thresholds[0];
    assert!(!t.pass);
    assert!(
        r.verdict_reason.starts_with("aborted at ")
            && r.verdict_reason.contains(&t.reason)
            && t.reason.contains(&gauntlet_core::thresholds::show(
                t.observed.unwrap(),
                &t.unit
            )),
        "{} / {t:?}",
        r.verdict_reason
    );
    let text = r.render_text();
    assert!(
        text.contains(&format!(
            "observed {}",
            gauntlet_core::thresholds::show(t.observed.unwrap(), &t.unit)
        )),
        "{text}"
    );
    // Aborted between 1 and 2 s of 10 s.
    assert!(
        r.delivered > 0.09 && r.delivered < 0.21,
        "delivered {}",
        r.delivered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_only_worker_is_an_error_naming_it_and_the_load_delivered() {
    let (url, _stop) = coordinator().await;
    let (only, _) = worker(&url, "only");
    wait_for_workers(&url, 1).await;
    // 10 VUs x 40 iterations of 100 ms naps; the worker vanishes 1.5 s in (after its first
    // snapshot).
    let (id, mut client) = submit(&url, sleepy("vus = 10\niterations = 40", ""), 1).await;
    until_elapsed(&mut client, &id, 1500).await;
    only.abort();
    let r = watch_report(&mut client, &id).await;
    assert_eq!(r.verdict, Verdict::Error, "{}", r.verdict_reason);
    assert_eq!(r.verdict.exit_code(), 3);
    assert!(r.delivered < 0.7, "delivered {}", r.delivered);
    assert!(
        r.verdict_reason.contains(&format!(
            "only {} of the planned load was delivered (lost workers: only)",
            gauntlet_core::report::percent(r.delivered)
        )),
        "{}",
        r.verdict_reason
    );
    // It had sessions running: their outcome is unknown, and said so.
    assert!(r.totals.unknown > 0, "{:?}", r.totals);
    assert!(
        r.verdict_reason.contains("the outcome of up to"),
        "{}",
        r.verdict_reason
    );
    assert_eq!(r.workers[0].in_flight_bound, Some(r.totals.unknown));
    assert!(r.render_text().contains(&format!(
        "unknown outcome: up to {} sessions",
        r.totals.unknown
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interrupted_by_the_coordinator_stopping_is_an_error_with_what_it_delivered() {
    let (url, stop) = coordinator().await;
    let _a = worker(&url, "a");
    wait_for_workers(&url, 1).await;
    let (id, mut client) = submit(&url, sleepy("vus = 2\nduration = \"8s\"", ""), 1).await;
    let mut stream = client
        .watch_run(v1::WatchRunRequest { run_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let mut stopped = false;
    while let Some(Ok(p)) = stream.next().await {
        if !stopped && p.phase() == v1::RunPhase::Running && p.elapsed_ms >= 2000 {
            stop.cancel();
            stopped = true;
        }
        if !p.report_json.is_empty() {
            last = Some(p.report_json);
            break;
        }
    }
    let r: Report = serde_json::from_str(&last.expect("the report reaches the client")).unwrap();
    assert_eq!(r.verdict, Verdict::Error);
    assert!(
        r.verdict_reason.contains("the coordinator shut down"),
        "{}",
        r.verdict_reason
    );
    assert!(near(r.delivered, 0.25, 0.05), "delivered {}", r.delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_heartbeats_but_never_reports_is_lost_after_the_stall_timeout() {
    let (url, _stop) = coordinator().await;
    // A hand-made worker: registers, takes its assignment, heartbeats, never sends a snapshot.
    let (tx, mut inbound, _) = hand_worker(&url, "mute", "").await;
    let beats = tokio::spawn(async move {
        loop {
            let beat = v1::WorkerMessage {
                kind: Some(worker_message::Kind::Heartbeat(v1::Heartbeat::default())),
            };
            if tx.send(beat).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (stops_tx, mut stops) = tokio::sync::mpsc::unbounded_channel();
    let listen = tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            if let Some(coordinator_message::Kind::Stop(s)) = m.kind {
                let _ = stops_tx.send(s.reason);
            }
        }
    });
    // Iterations only: no planned duration would ever end it. (1 s intervals, as the stall
    // timeout below counts them; a run of 2,000 sessions would get 250 ms ones.)
    let r = run(
        &url,
        sleepy("vus = 2\niterations = 1000", "[fleet]\ninterval = \"1s\""),
        1,
    )
    .await;
    assert_eq!(r.verdict, Verdict::Error, "{}", r.verdict_reason);
    let w = &r.workers[0];
    let lost = w.lost_at_ms.expect("declared lost");
    // Stall timeout: heartbeat timeout (1 s) + 2 intervals (1 s each), checked every 250 ms.
    assert!((3000..=4500).contains(&lost), "lost at {lost} ms");
    // It is told to stop (again while it keeps talking), and the run is no pass.
    let stop = tokio::time::timeout(Duration::from_secs(5), stops.recv())
        .await
        .expect("a Stop reaches the lost worker")
        .unwrap();
    assert!(stop.contains("declared lost"), "{stop}");
    beats.abort();
    listen.abort();
    assert!(
        r.verdict_reason.contains("lost workers: mute"),
        "{}",
        r.verdict_reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_has_a_hard_deadline() {
    let (url, _stop) = coordinator().await;
    let _a = worker(&url, "a");
    wait_for_workers(&url, 1).await;
    let r = run(
        &url,
        sleepy("vus = 1\niterations = 100000", "[fleet]\ndeadline = \"2s\""),
        1,
    )
    .await;
    assert_eq!(r.verdict, Verdict::Error);
    assert!(
        r.verdict_reason
            .contains("reached its hard deadline (fleet.deadline = 2s)"),
        "{}",
        r.verdict_reason
    );
    assert!(r.duration_s < 8.0, "{}", r.duration_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_arrivals_are_load_not_delivered() {
    let (url, _stop) = coordinator().await;
    let _a = worker(&url, "a");
    wait_for_workers(&url, 1).await;
    // 20 arrivals a second of 100 ms sessions need 2 VUs; one is allowed: about half drop.
    let r = run(
        &url,
        sleepy(
            "model = \"open\"\nrate = 20\nduration = \"2s\"\nmax_vus = 1",
            "",
        ),
        1,
    )
    .await;
    assert!(r.totals.dropped > 10, "{:?}", r.totals);
    let sent = 1.0 - r.totals.dropped as f64 / 40.0;
    assert!(
        near(r.delivered, sent, 0.03),
        "delivered {} vs {sent}",
        r.delivered
    );
    assert_eq!(r.verdict, Verdict::Error);
    assert!(
        r.verdict_reason.contains(&format!(
            "({} arrivals dropped for want of a free VU: raise load.max_vus)",
            r.totals.dropped
        )),
        "{}",
        r.verdict_reason
    );
}

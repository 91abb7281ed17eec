//! Run lifecycle on an in-process coordinator with in-process workers and plans whose steps
//! only sleep (no target): protocol checks, waiting for workers, worker loss policies, live
//! aborts, and idempotent snapshots over the real gRPC stream. Against an in-process testbed:
//! the open model's sessions per subject (its per-user ground truth) are the same with 1, 2, 3
//! or 7 workers.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use gauntlet_coordinator::{Coordinator, CoordinatorConfig};
use gauntlet_core::report::{Report, Verdict};
use gauntlet_proto::v1::control_service_client::ControlServiceClient;
use gauntlet_proto::v1::worker_service_client::WorkerServiceClient;
use gauntlet_proto::v1::{self, worker_message};
use gauntlet_worker::agent::{AgentConfig, run_agent};
use tokio_util::sync::CancellationToken;

mod common;
use common::{
    answer, arrivals, coordinator, coordinator_with, hand_worker, naps_passed, run, sleepy,
    wait_for_workers, worker,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_the_load_and_pass() {
    let db = std::env::temp_dir().join(format!(
        "gauntlet-coordinator-history-{}.db",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&db);
    let stop = CancellationToken::new();
    let config = CoordinatorConfig {
        heartbeat_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(200),
        start_delay: Duration::from_millis(100),
        min_workers_timeout: Duration::from_secs(10),
        ..CoordinatorConfig::default()
    };
    let history = gauntlet_coordinator::history::History::open(&db).unwrap();
    let (addr, _) = Coordinator::new(config, stop.clone())
        .with_history(history)
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{addr}");
    let _a = worker(&url, "a");
    let _b = worker(&url, "b");
    let r = run(&url, sleepy("vus = 10\niterations = 3", ""), 2).await;
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.verdict_reason);
    assert_eq!(r.totals.sessions, 30);
    assert_eq!(r.workers.len(), 2);
    assert_eq!(r.workers.iter().map(|w| w.sessions).sum::<u64>(), 30);
    assert!(
        r.workers.iter().all(|w| w.sessions == 15),
        "{:?}",
        r.workers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_protocol_is_refused_with_a_clear_message() {
    let (url, _stop) = coordinator().await;
    let mut client = WorkerServiceClient::connect(url).await.unwrap();
    let status = client
        .register(v1::RegisterRequest {
            name: "old".into(),
            protocol: 999,
            version: "0.0.1".into(),
            ..v1::RegisterRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("speaks protocol 999"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_workers_is_an_error_not_a_hang() {
    let (url, _stop) = coordinator().await;
    let _a = worker(&url, "a");
    let r = run(
        &url,
        sleepy(
            "vus = 1\niterations = 1",
            "[fleet]\nmin_workers_timeout = \"1s\"",
        ),
        2,
    )
    .await;
    assert_eq!(r.verdict, Verdict::Error);
    assert!(
        r.verdict_reason.contains("only 1 of the 2 workers"),
        "{}",
        r.verdict_reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_nothing_is_an_error() {
    let (url, _stop) = coordinator().await;
    let _a = worker(&url, "a");
    wait_for_workers(&url, 1).await;
    // Sessions that never end inside the run (30 s naps in a 1 s run with 100 ms to finish):
    // every one is interrupted, none passed or failed. (A load that schedules no session at
    // all, rate 0, no longer gets this far: validation refuses it, below.)
    let napping = "name = \"napping\"\n[target]\nbase_url = \"http://127.0.0.1:9\"\n[load]\nmodel = \"open\"\nrate = 2\nduration = \"1s\"\nmax_vus = 2\ngraceful_stop = \"100ms\"\n[[scenarios]]\nname = \"nap\"\nsteps = [ { sleep = { duration = \"30s\" } } ]\n";
    let r = run(&url, napping.to_owned(), 1).await;
    assert_eq!(r.verdict, Verdict::Error);
    assert!(
        r.verdict_reason.contains("no session ran"),
        "{}",
        r.verdict_reason
    );
    let mut client = ControlServiceClient::connect(url.clone()).await.unwrap();
    let refused = client
        .submit_run(v1::SubmitRunRequest {
            plan_toml: sleepy(
                "model = \"open\"\nrate = 0\nduration = \"1s\"\nmax_vus = 1",
                "",
            ),
            plan_file: "sleepy.toml".into(),
            min_workers: 1,
            ..v1::SubmitRunRequest::default()
        })
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("no session would start"),
        "{}",
        refused.message()
    );
}

/// Runs `duration` of sleepy sessions on two workers with `on_worker_loss = policy`, and
/// makes one of them vanish (its task aborted: no more heartbeats) 1.5 s in.
async fn lose_a_worker(duration: &str, policy: &str) -> Report {
    let (url, _stop) = coordinator().await;
    let (a, _) = worker(&url, "a");
    let _b = worker(&url, "b");
    wait_for_workers(&url, 2).await;
    let plan = sleepy(
        &format!("vus = 10\nduration = \"{duration}\"\ngraceful_stop = \"1s\""),
        &format!("[fleet]\non_worker_loss = \"{policy}\""),
    );
    let report = tokio::spawn(async move { run(&url, plan, 2).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.abort();
    report.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_worker_with_continue_leaves_part_of_the_load_undelivered() {
    let r = lose_a_worker("4s", "continue").await;
    let lost = r.workers.iter().filter(|w| w.lost_at_ms.is_some()).count();
    assert_eq!(lost, 1, "{:?}", r.workers);
    assert!(
        r.delivered < 0.9 && r.delivered > 0.5,
        "delivered {}",
        r.delivered
    );
}

/// A loss moves a share once, to a few survivors, never to the whole fleet: of six workers,
/// the lost one's rest goes to exactly four (`MAX_HEIRS`), named in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_share_goes_to_at_most_four_survivors() {
    let (url, _stop) = coordinator().await;
    let (a, _) = worker(&url, "a");
    let _others: Vec<_> = ["b", "c", "d", "e", "f"]
        .iter()
        .map(|n| worker(&url, n))
        .collect();
    wait_for_workers(&url, 6).await;
    let plan = sleepy("vus = 12\nduration = \"4s\"\ngraceful_stop = \"1s\"", "");
    let report = tokio::spawn(async move { run(&url, plan, 6).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.abort();
    let r = report.await.unwrap();
    let lost: Vec<_> = r
        .workers
        .iter()
        .filter(|w| w.lost_at_ms.is_some())
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", r.workers);
    assert_eq!(lost[0].name, "a");
    let heirs = &lost[0].handed_to;
    assert_eq!(heirs.len(), 4, "{heirs:?}");
    assert!(heirs.iter().all(|h| h != "a"), "{heirs:?}");
    let distinct: std::collections::BTreeSet<_> = heirs.iter().collect();
    assert_eq!(distinct.len(), 4, "{heirs:?}");
    assert!(
        r.workers
            .iter()
            .all(|w| w.name == "a" || w.handed_to.is_empty()),
        "only the lost worker's share moved: {:?}",
        r.workers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_worker_with_abort_ends_the_run_as_an_error() {
    let r = lose_a_worker("20s", "abort").await;
    assert_eq!(r.verdict, Verdict::Error);
    assert!(
        r.verdict_reason.contains("was lost"),
        "{}",
        r.verdict_reason
    );
    assert!(r.duration_s < 15.0, "aborted early: {}", r.duration_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_on_fail_threshold_stops_the_run_after_its_grace() {
    let (url, _stop) = coordinator().await;
    let _a = worker(&url, "a");
    wait_for_workers(&url, 1).await;
    // Every session takes 100 ms: a p50 below 50 ms fails as soon as it is judged.
    let threshold = "[[thresholds]]\nmetric = \"session\"\nstat = \"p50\"\nbelow = \"50ms\"\nabort_on_fail = true\ngrace = \"1s\"";
    let r = run(
        &url,
        sleepy(
            "vus = 2\nduration = \"30s\"\ngraceful_stop = \"1s\"",
            threshold,
        ),
        1,
    )
    .await;
    assert_eq!(r.verdict, Verdict::Fail);
    assert!(
        r.verdict_reason.starts_with("aborted"),
        "{}",
        r.verdict_reason
    );
    assert!(r.duration_s < 10.0, "{}", r.duration_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_sent_twice_is_counted_once() {
    let (url, _stop) = coordinator().await;
    // A hand-driven worker: register, open the stream, take the assignment, report one
    // snapshot twice, finish.
    let (tx, mut inbound, _) = hand_worker(&url, "manual", "").await;
    let url2 = url.clone();
    let report =
        tokio::spawn(async move { run(&url2, sleepy("vus = 7\niterations = 1", ""), 1).await });
    let assignment = loop {
        if let Some(v1::coordinator_message::Kind::Assignment(a)) =
            inbound.message().await.unwrap().unwrap().kind
        {
            break a;
        }
    };
    let snapshot = naps_passed(7, 100_000);
    let wire = gauntlet_proto::snapshot_to_proto(
        &snapshot,
        &assignment.run_id,
        assignment.first_seq + 1,
        1000,
        0,
    );
    for _ in 0..2 {
        tx.send(v1::WorkerMessage {
            kind: Some(worker_message::Kind::Snapshot(wire.clone())),
        })
        .await
        .unwrap();
    }
    for _ in 0..2 {
        let ack = answer(&mut inbound).await.unwrap();
        assert_eq!(ack.seq, wire.seq);
    }
    let done = v1::Done {
        run_id: assignment.run_id.clone(),
        last_seq: wire.seq,
        error: String::new(),
        first_seq: assignment.first_seq,
        left: false,
        stopped_at_ms: 0,
        sessions_started: 7,
        gave_up: false,
    };
    tx.send(v1::WorkerMessage {
        kind: Some(worker_message::Kind::Done(done)),
    })
    .await
    .unwrap();
    // The Done is acknowledged too, so the worker stops resending it.
    let ack = answer(&mut inbound).await.unwrap();
    assert_eq!((ack.seq, ack.done_first_seq), (0, assignment.first_seq));
    let r = report.await.unwrap();
    assert_eq!(
        r.totals.sessions, 7,
        "each snapshot is merged once, however often it arrives"
    );
    assert_eq!(r.workers[0].snapshots, 1);
}

/// A TCP proxy that can cut every connection through it and refuse new ones for a while.
struct Cuttable {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

async fn cuttable_proxy(to: std::net::SocketAddr) -> Cuttable {
    use tokio::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut watch = watch.clone();
            if *watch.borrow() {
                continue; // refused: dropped at once
            }
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(to).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = watch.wait_for(|c| *c) => {}
                }
            });
        }
    });
    Cuttable { addr, cut }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_held_during_a_network_cut_arrive_after_it_and_count_once() {
    let (url, _stop) = coordinator_with(Duration::from_secs(5)).await;
    let coordinator_addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let proxy = cuttable_proxy(coordinator_addr).await;
    let _a = worker(&format!("http://{}", proxy.addr), "behind-proxy");
    wait_for_workers(&url, 1).await;
    let url2 = url.clone();
    // 4 VUs x 25 sessions of 100 ms: about 2.5 s of work, every session counted.
    let report =
        tokio::spawn(async move { run(&url2, sleepy("vus = 4\niterations = 25", ""), 1).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Cut for less than the heartbeat timeout (1 s) but several snapshot intervals... the
    // interval is 1 s here, so hold the cut 800 ms and let the worker buffer what it measures.
    proxy.cut.send_replace(true);
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.cut.send_replace(false);
    let r = report.await.unwrap();
    assert_eq!(r.totals.sessions, 100, "{}", r.render_text());
    assert_eq!(r.totals.passed, 100);
    assert!(
        r.workers[0].lost_at_ms.is_none(),
        "a short cut is not a loss: {:?}",
        r.workers
    );
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.verdict_reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_both_services_and_the_http_port_answers() {
    let stop = CancellationToken::new();
    let config = CoordinatorConfig {
        heartbeat_interval: Duration::from_millis(200),
        start_delay: Duration::from_millis(100),
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::new(config, stop.clone()).with_token(Some("s3cret".into()));
    let (addr, _) = coordinator
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{addr}");
    // No token: refused, and the agent says so instead of retrying forever.
    let config = |token: Option<&str>| AgentConfig {
        coordinator: url.clone(),
        name: "t".into(),
        capacity: 1,
        labels: BTreeMap::new(),
        drain: Duration::from_secs(1),
        token: token.map(str::to_owned),
        tls_ca: None,
        access: gauntlet_worker::access::Access::open(),
        sources: Default::default(),
    };
    let refused = run_agent(config(None), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("needs a token"), "{refused}");
    let mut control = ControlServiceClient::connect(url.clone()).await.unwrap();
    let status = control.list_runs(v1::ListRunsRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // With it: works.
    let stop_worker = CancellationToken::new();
    let agent = tokio::spawn(run_agent(config(Some("s3cret")), stop_worker.clone()));
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut control = ControlServiceClient::with_interceptor(
        channel,
        gauntlet_proto::auth::attach_token(Some("s3cret".into())),
    );
    let id = control
        .submit_run(v1::SubmitRunRequest {
            plan_toml: sleepy("vus = 2\niterations = 2", ""),
            plan_file: "sleepy.toml".into(),
            min_workers: 1,
            ..v1::SubmitRunRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run_id;
    let mut stream = control
        .watch_run(v1::WatchRunRequest { run_id: id })
        .await
        .unwrap()
        .into_inner();
    let mut report: Option<Report> = None;
    while let Some(p) = stream.message().await.unwrap() {
        if !p.report_json.is_empty() {
            report = Some(serde_json::from_str(&p.report_json).unwrap());
        }
    }
    let report = report.unwrap();
    assert_eq!(report.totals.passed, 4, "{}", report.verdict_reason);

    // The HTTP port lists the run, to whoever has the token (here the only one, the worker
    // token; with a submit token, that one); /healthz answers anyone.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, gauntlet_coordinator::http::router(coordinator)).await
    });
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = |path: &str, auth: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        async move {
            let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
            tcp.write_all(request.as_bytes()).await.unwrap();
            let mut body = String::new();
            tcp.read_to_string(&mut body).await.unwrap();
            body
        }
    };
    let bearer = "Authorization: Bearer s3cret\r\n";
    assert!(get("/api/runs", "").await.starts_with("HTTP/1.1 401"));
    assert!(
        get("/metrics", "Authorization: Bearer nope\r\n")
            .await
            .starts_with("HTTP/1.1 401")
    );
    assert!(get("/healthz", "").await.starts_with("HTTP/1.1 200"));
    // A browser's basic authentication: any user, the token as password (`x:s3cret`).
    assert!(
        get("/", "Authorization: Basic eDpzM2NyZXQ=\r\n")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let body = get("/api/runs", bearer).await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains(&report.run_id) && body.contains("\"verdict\":\"pass\""),
        "{body}"
    );
    assert!(body.contains("\"workers\":1,\"workers_known\":1"), "{body}");
    stop_worker.cancel();
    agent.await.unwrap().unwrap();
    // A worker that left is still known, no longer counted as live (once the coordinator has
    // seen its stream close: polled, bounded).
    let mut body = String::new();
    for _ in 0..100 {
        body = get("/api/runs", bearer).await;
        if body.contains("\"workers\":0,") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(body.contains("\"workers\":0,\"workers_known\":1"), "{body}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let stop = CancellationToken::new();
    let config = CoordinatorConfig {
        heartbeat_interval: Duration::from_millis(200),
        start_delay: Duration::from_millis(100),
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::new(config, stop.clone())
        .with_tls(leaf.pem().into_bytes(), key.serialize_pem().into_bytes());
    let (addr, _) = coordinator
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("https://{addr}");
    let ca_pem = ca.pem().into_bytes();

    // Without the CA the coordinator's certificate is not trusted.
    let untrusted = gauntlet_proto::auth::endpoint(&url, None)
        .unwrap()
        .connect()
        .await;
    assert!(untrusted.is_err(), "an unknown CA must not be trusted");

    let worker_stop = CancellationToken::new();
    let agent = tokio::spawn(run_agent(
        AgentConfig {
            coordinator: url.clone(),
            name: "tls".into(),
            capacity: 1,
            labels: BTreeMap::new(),
            drain: Duration::from_secs(1),
            token: None,
            tls_ca: Some(ca_pem.clone()),
            access: gauntlet_worker::access::Access::open(),
            sources: Default::default(),
        },
        worker_stop.clone(),
    ));
    let channel = gauntlet_proto::auth::endpoint(&url, Some(&ca_pem))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut control = ControlServiceClient::new(channel);
    for _ in 0..200 {
        if !control
            .list_workers(v1::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let id = control
        .submit_run(v1::SubmitRunRequest {
            plan_toml: sleepy("vus = 2\niterations = 2", ""),
            plan_file: "sleepy.toml".into(),
            min_workers: 1,
            ..v1::SubmitRunRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run_id;
    let mut stream = control
        .watch_run(v1::WatchRunRequest { run_id: id })
        .await
        .unwrap()
        .into_inner();
    let mut passed = 0;
    while let Some(p) = stream.message().await.unwrap() {
        if !p.report_json.is_empty() {
            let r: Report = serde_json::from_str(&p.report_json).unwrap();
            passed = r.totals.passed;
        }
    }
    assert_eq!(passed, 4);
    worker_stop.cancel();
    agent.await.unwrap().unwrap();
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_on_a_metric_without_samples_is_an_error() {
    let (url, _stop) = coordinator().await;
    let _a = worker(&url, "a");
    let typo = "[[thresholds]]\nmetric = \"sesion\"\nstat = \"p99\"\nbelow = \"1s\"";
    let r = run(&url, sleepy("vus = 1\niterations = 2", typo), 1).await;
    assert_eq!(r.verdict, Verdict::Error);
    assert!(
        r.verdict_reason.contains("`p99(sesion) < 1s`"),
        "{}",
        r.verdict_reason
    );
    assert_eq!(r.thresholds[0].observed, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_match_the_report() {
    let stop = CancellationToken::new();
    let config = CoordinatorConfig {
        heartbeat_interval: Duration::from_millis(200),
        start_delay: Duration::from_millis(100),
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::new(config, stop.clone());
    let (addr, _) = coordinator
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{addr}");
    let _w = worker(&url, "m");
    // Half the sessions nap and pass, half dial a closed port and fail.
    let plan = "name = \"mixed\"\n[target]\nbase_url = \"http://127.0.0.1:9\"\n[load]\nvus = 4\niterations = 5\n\
        [[scenarios]]\nname = \"nap\"\nsteps = [ { sleep = { duration = \"10ms\" } } ]\n\
        [[scenarios]]\nname = \"dial\"\nsteps = [ { ws_connect = {} } ]\n";
    let r = run(&url, plan.to_owned(), 1).await;
    assert!(
        r.totals.failed > 0 && r.totals.passed > 0,
        "{}",
        r.render_text()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, gauntlet_coordinator::http::router(coordinator)).await
    });
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(
        value("gauntlet_sessions_total", &[("outcome", "passed")]),
        r.totals.passed as f64
    );
    assert_eq!(
        value("gauntlet_sessions_total", &[("outcome", "failed")]),
        r.totals.failed as f64
    );
    assert_eq!(
        value("gauntlet_sessions_total", &[("outcome", "unknown")]),
        r.totals.unknown as f64
    );
    assert_eq!(
        value(
            "gauntlet_failures_total",
            &[("category", "connect_refused"), ("scenario", "dial")]
        ),
        r.totals.failed as f64
    );
    assert_eq!(
        value(
            "gauntlet_run_phase",
            &[("run", &r.run_id), ("phase", "finished")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "gauntlet_run_phase",
            &[("run", &r.run_id), ("phase", "running")]
        ),
        0.0
    );
    // Every metric of the report is a histogram: cumulative buckets, the last (+Inf) and
    // `_count` its count exactly, `_sum` its mean times its count.
    assert_eq!(r.metrics.len(), 3, "{:?}", r.metrics.keys());
    let latency = |family: &str, metric: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == family && s.labels.get("metric") == Some(metric))
            .unwrap_or_else(|| panic!("no {family} of {metric}: {body}"))
            .value
            .clone()
    };
    for (name, m) in &r.metrics {
        assert_eq!(m.safe_name, *name, "the plan's names are safe already");
        let prometheus_parse::Value::Histogram(buckets) = latency("gauntlet_latency_seconds", name)
        else {
            panic!("{name} is not a histogram: {body}");
        };
        assert_eq!(buckets.len(), 17, "16 bounds and +Inf: {buckets:?}");
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
            "cumulative: {buckets:?}"
        );
        assert_eq!(buckets[0].less_than, 0.001);
        assert_eq!(buckets[16].less_than, f64::INFINITY);
        assert_eq!(buckets[16].count, m.count as f64, "{name}");
        assert_eq!(
            value("gauntlet_latency_seconds_count", &[("metric", name)]),
            m.count as f64,
            "{name}"
        );
        let sum = value("gauntlet_latency_seconds_sum", &[("metric", name)]);
        let mean = m.mean_us * m.count as f64 / 1e6;
        assert!(
            (sum - mean).abs() <= 1e-9 * mean.max(1.0),
            "{name}: {sum} vs {mean}"
        );
        // The report's p99 is in the first bucket whose count reaches 99 % of the samples.
        let rank = (0.99 * m.count as f64).ceil();
        let first = buckets.iter().position(|b| b.count >= rank).unwrap();
        let bound_us = (buckets[first].less_than * 1e6).round();
        assert!(
            m.p99_us as f64 <= bound_us,
            "{name}: p99 {} us, bucket {bound_us}",
            m.p99_us
        );
        if first > 0 {
            assert!(m.p99_us as f64 > (buckets[first - 1].less_than * 1e6).round());
        }
        // The exact quantiles are the report's.
        let prometheus_parse::Value::Summary(q) = latency("gauntlet_latency_run_seconds", name)
        else {
            panic!("{name} has no exact summary: {body}");
        };
        let exact: Vec<(f64, f64)> = q.iter().map(|q| (q.quantile, q.count)).collect();
        let us = |v: u64| v as f64 / 1e6;
        assert_eq!(
            exact,
            [
                (0.5, us(m.p50_us)),
                (0.9, us(m.p90_us)),
                (0.95, us(m.p95_us)),
                (0.99, us(m.p99_us)),
                (0.999, us(m.p999_us))
            ],
            "{name}"
        );
    }
    assert!(
        !body.contains("gauntlet_latency_recent_seconds{"),
        "a finished run has no recent window: {body}"
    );
    assert_eq!(value("gauntlet_workers", &[("state", "known")]), 1.0);

    // The live page and its JSON: the run with the report's charts.
    let get = |path: &'static str| async move {
        let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        response.split_once("\r\n\r\n").unwrap().1.to_owned()
    };
    let page = get("/").await;
    assert!(page.contains("fetch('/api/live')"), "{page}");
    let live: serde_json::Value = serde_json::from_str(&get("/api/live").await).unwrap();
    let run0 = &live["runs"][0];
    assert_eq!(run0["run_id"], r.run_id.as_str());
    assert_eq!(run0["state"], "finished");
    assert_eq!(run0["passed"], r.totals.passed);
    let charts = run0["charts"].as_array().unwrap();
    assert!(
        charts.len() >= 4
            && charts
                .iter()
                .all(|c| c.as_str().unwrap().starts_with("<svg")),
        "{charts:?}"
    );
    stop.cancel();
}

/// GETs `/metrics` from the HTTP port at `http` (no token) and returns the body.
async fn scrape(http: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_shows_exact_quantiles_of_its_recent_window() {
    let stop = CancellationToken::new();
    let config = CoordinatorConfig {
        start_delay: Duration::from_millis(100),
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::new(config, stop.clone());
    let (addr, _) = coordinator
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{addr}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, gauntlet_coordinator::http::router(coordinator)).await
    });
    // A hand-driven worker reports 3 sessions of 100 ms in the first interval and 2 of
    // 300 ms in the second, and has not finished.
    let (tx, mut inbound, _) = hand_worker(&url, "manual", "").await;
    let url2 = url.clone();
    let report = tokio::spawn(async move {
        run(
            &url2,
            sleepy("vus = 7\niterations = 1", "[fleet]\ninterval = \"1s\""),
            1,
        )
        .await
    });
    let assignment = loop {
        if let Some(v1::coordinator_message::Kind::Assignment(a)) =
            inbound.message().await.unwrap().unwrap().kind
        {
            break a;
        }
    };
    let mut merged = gauntlet_core::metrics::histogram();
    for (i, (n, us)) in [(3u64, 100_000u64), (2, 300_000)].into_iter().enumerate() {
        merged.record_n(us, n).unwrap();
        let wire = gauntlet_proto::snapshot_to_proto(
            &naps_passed(n, us),
            &assignment.run_id,
            assignment.first_seq + 1 + i as u64,
            1000 * (i as u64 + 1),
            0,
        );
        tx.send(v1::WorkerMessage {
            kind: Some(worker_message::Kind::Snapshot(wire.clone())),
        })
        .await
        .unwrap();
        assert_eq!(answer(&mut inbound).await.unwrap().seq, wire.seq);
    }
    let running = scrape(http).await;
    let run_labels = format!("run=\"{}\",plan=\"sleepy\"", assignment.run_id);
    let line = |name: &str, labels: &str| format!("{name}{{{run_labels}{labels}}} ");
    let value = |body: &str, name: &str, labels: &str| -> Option<String> {
        let line = line(name, labels);
        body.lines()
            .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_owned))
    };
    assert_eq!(
        value(&running, "gauntlet_run_phase", ",phase=\"running\"").as_deref(),
        Some("1"),
        "{running}"
    );
    assert_eq!(
        value(&running, "gauntlet_sessions_total", ",outcome=\"passed\"").as_deref(),
        Some("5")
    );
    // The recent window (every interval so far: the run is younger than 10 s) holds the five
    // samples, and its quantiles are theirs, exactly.
    assert_eq!(
        value(
            &running,
            "gauntlet_latency_recent_samples",
            ",metric=\"session\""
        )
        .as_deref(),
        Some("5"),
        "{running}"
    );
    for (q, label) in gauntlet_core::prometheus::QUANTILES {
        let exact = gauntlet_core::prometheus::seconds(u128::from(merged.value_at_quantile(q)));
        assert_eq!(
            value(
                &running,
                "gauntlet_latency_recent_seconds",
                &format!(",metric=\"session\",quantile=\"{label}\"")
            ),
            Some(exact),
            "q={q}: {running}"
        );
    }
    assert_eq!(
        value(
            &running,
            "gauntlet_latency_seconds_count",
            ",metric=\"session.nap\""
        )
        .as_deref(),
        Some("5")
    );
    assert_eq!(
        value(
            &running,
            "gauntlet_latency_seconds_bucket",
            ",metric=\"session\",le=\"0.2\""
        )
        .as_deref(),
        Some("3")
    );
    assert_eq!(
        value(
            &running,
            "gauntlet_latency_seconds_bucket",
            ",metric=\"session\",le=\"0.5\""
        )
        .as_deref(),
        Some("5")
    );
    assert_eq!(
        value(
            &running,
            "gauntlet_latency_recent_samples",
            ",metric=\"session.nap\""
        ),
        None,
        "only the main metrics have a recent window"
    );

    let done = v1::Done {
        run_id: assignment.run_id.clone(),
        last_seq: assignment.first_seq + 2,
        error: String::new(),
        first_seq: assignment.first_seq,
        left: false,
        stopped_at_ms: 0,
        sessions_started: 5,
        gave_up: false,
    };
    tx.send(v1::WorkerMessage {
        kind: Some(worker_message::Kind::Done(done)),
    })
    .await
    .unwrap();
    let r = report.await.unwrap();
    assert_eq!(r.totals.passed, 5, "{}", r.verdict_reason);
    let finished = scrape(http).await;
    assert_eq!(
        value(&finished, "gauntlet_run_phase", ",phase=\"finished\"").as_deref(),
        Some("1")
    );
    assert_eq!(
        value(
            &finished,
            "gauntlet_latency_recent_samples",
            ",metric=\"session\""
        ),
        None,
        "a finished run has no recent window"
    );
    assert_eq!(
        value(
            &finished,
            "gauntlet_latency_run_seconds",
            ",metric=\"session\",quantile=\"0.99\""
        ),
        Some(gauntlet_core::prometheus::seconds(u128::from(
            r.metrics["session"].p99_us
        )))
    );
    // Scraped again: the same text (a finished run's figures are kept, not recomputed).
    assert_eq!(scrape(http).await, finished);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_past_its_lease_stops_its_sessions() {
    let mut config = gauntlet_testbed::TestbedConfig::default();
    config.auth.secret = Some(gauntlet_testbed::config::Secret(b"lease".to_vec()));
    let tb = gauntlet_testbed::Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // Lease (heartbeat timeout) 2 s.
    let (url, _stop) = coordinator_with(Duration::from_secs(2)).await;
    let coordinator_addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let proxy = cuttable_proxy(coordinator_addr).await;
    let _w = worker(&format!("http://{}", proxy.addr), "cut-off");
    wait_for_workers(&url, 1).await;
    let secret = std::env::temp_dir().join(format!("gauntlet-lease-{}.secret", std::process::id()));
    std::fs::write(&secret, "lease").unwrap();
    let plan = format!(
        "name = \"lease\"\n[target]\nbase_url = \"{}\"\n[auth]\nsecret_file = \"{}\"\nclaims = {{ iss = \"netra-auth-service\", token_type = \"access\" }}\n\
         [load]\nvus = 4\nduration = \"60s\"\ngraceful_stop = \"1s\"\n\
         [[scenarios]]\nname = \"hold\"\nsteps = [ {{ ws_connect = {{}} }}, {{ sleep = {{ duration = \"300ms\" }} }}, {{ ws_close = {{}} }} ]\n",
        tb.http_url(),
        secret.display()
    );
    let url2 = url.clone();
    let run_task = tokio::spawn(async move { run(&url2, plan, 1).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tb.stats().connections.accepted < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never got going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Cut for good: the coordinator loses the worker, the worker loses the coordinator.
    proxy.cut.send_replace(true);
    let cut = tokio::time::Instant::now();
    let r = run_task.await.unwrap();
    assert_eq!(
        r.workers.iter().filter(|w| w.lost_at_ms.is_some()).count(),
        1
    );
    // Past its lease (2 s) plus the graceful stop (1 s), the worker has stopped starting
    // sessions: the testbed's count stops growing.
    let stopped = loop {
        let before = tb.stats().connections.accepted;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        if tb.stats().connections.accepted == before {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < Duration::from_secs(15),
            "sessions still starting {:?} after the cut",
            cut.elapsed()
        );
    };
    assert!(stopped < Duration::from_secs(15), "{stopped:?}");
}

/// The testbed's totals per user.
type PerUser = BTreeMap<String, gauntlet_testbed::stats::UserTotals>;

/// An open-model plan of 200 arrivals (400/s for 0.5 s) on a pool of 10 subjects against
/// `target`: each session connects, runs one agent pipeline and closes. `max_vus` lets every
/// arrival be in flight at once on every worker (each of 7 holds a seventh of 1,400), so none is
/// dropped however slowly a busy machine runs the sessions: the counts below are exact.
fn two_hundred_arrivals(target: &str, secret: &std::path::Path) -> String {
    arrivals(target, secret, 400, "500ms", 1400)
}

/// Results must not depend on the number of workers: in the open model arrival `k` runs as
/// subject `k % subject_pool` whichever worker and VU slot run it, so 200 arrivals on 10
/// subjects are exactly 20 sessions per user in the testbed's ground truth with 1, 2, 3 or 7
/// workers, and the per-user faults (drawn per user and connection number) come out the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_subjects_do_not_depend_on_the_number_of_workers() {
    let secret =
        std::env::temp_dir().join(format!("gauntlet-subjects-{}.secret", std::process::id()));
    std::fs::write(&secret, "subjects").unwrap();
    // The 1-worker run's per-user totals and failure counts, which the others must equal.
    let mut first: Option<(PerUser, Vec<(String, u64)>)> = None;
    for workers in [1u32, 2, 3, 7] {
        let mut config = gauntlet_testbed::TestbedConfig::default();
        config.auth.secret = Some(gauntlet_testbed::config::Secret(b"subjects".to_vec()));
        config.pipeline.delay = gauntlet_testbed::delay::Delay::ZERO;
        // Only the injected faults refuse connections, never the real per-user limit.
        config.websocket.max_managers_per_user = 1000;
        config.faults = serde_json::from_value(serde_json::json!({
            "factory_init": { "rate": 0.2 },
            "missing_event": { "rate": 0.2 },
        }))
        .unwrap();
        let tb = gauntlet_testbed::Testbed::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (url, stop) = coordinator().await;
        let fleet: Vec<_> = (0..workers)
            .map(|i| worker(&url, &format!("w{i}")))
            .collect();
        let r = run(&url, two_hundred_arrivals(&tb.http_url(), &secret), workers).await;
        let what = format!("{workers} workers");
        assert_eq!(r.workers.len(), workers as usize, "{what}");
        assert_eq!(r.totals.sessions, 200, "{what}");
        assert_eq!(r.totals.dropped, 0, "{what}");

        let truth = tb.stats();
        let users = truth.users;
        assert_eq!(users.len(), 10, "{what}: {users:?}");
        for (sub, totals) in &users {
            assert_eq!(totals.connections, 20, "{what}: {sub} {totals:?}");
        }
        let mut failures: Vec<(String, u64)> = r
            .failures
            .iter()
            .map(|f| (f.category.to_string(), f.count))
            .collect();
        failures.sort();
        assert_eq!(
            failures,
            vec![
                (
                    "factory_init_failed".to_owned(),
                    truth.faults["factory_init"]
                ),
                ("missing_event".to_owned(), truth.faults["missing_event"]),
            ],
            "{what}"
        );
        match &first {
            None => first = Some((users, failures)),
            Some((users_1, failures_1)) => {
                assert_eq!(&users, users_1, "{what} vs 1 worker");
                assert_eq!(&failures, failures_1, "{what} vs 1 worker");
            }
        }
        for (_, w) in fleet {
            w.cancel();
        }
        stop.cancel();
        tb.stop().await.unwrap();
    }
}

/// Workers cut off from the coordinator for longer than their lease give their shares up
/// (they cannot know the coordinator still counts on them). With the whole fleet cut at once
/// the coordinator suspects the network and loses nobody; when they are back, on new streams,
/// the shares they gave up go back to them (the run's only workers) and the run completes,
/// its `delivered` short by the time nobody ran them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_gave_their_shares_up_past_their_lease_take_them_back() {
    // Lease (heartbeat timeout) 2 s.
    let (url, _stop) = coordinator_with(Duration::from_secs(2)).await;
    let coordinator_addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let proxy = cuttable_proxy(coordinator_addr).await;
    let _a = worker(&format!("http://{}", proxy.addr), "a");
    let _b = worker(&format!("http://{}", proxy.addr), "b");
    wait_for_workers(&url, 2).await;
    let url2 = url.clone();
    let report = tokio::spawn(async move {
        run(
            &url2,
            sleepy("vus = 4\nduration = \"12s\"\ngraceful_stop = \"1s\"", ""),
            2,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Past the lease (2 s) and the graceful stop (1 s): both give their shares up.
    proxy.cut.send_replace(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.cut.send_replace(false);
    let r = report.await.unwrap();
    assert!(
        r.workers.iter().all(|w| w.lost_at_ms.is_none()),
        "{:?}",
        r.workers
    );
    for w in &r.workers {
        assert!(
            w.left_at_ms.is_some(),
            "{} gave its share up: {:?}",
            w.name,
            r.workers
        );
        assert!(
            !w.handed_to.is_empty(),
            "{} gave its share up: {:?}",
            w.name,
            r.workers
        );
        assert!(
            w.handed_to.iter().all(|h| h == "a" || h == "b"),
            "{:?}",
            r.workers
        );
    }
    assert!(
        r.delivered < 0.9 && r.delivered > 0.3,
        "delivered {}: the cut is not delivered",
        r.delivered
    );
}

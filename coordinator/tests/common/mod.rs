//! Helpers shared by the coordinator's integration tests: an in-process coordinator on port 0,
//! in-process workers, plans whose steps only sleep, and a run submitted and watched to its
//! report over the real gRPC services.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use gauntlet_coordinator::{Coordinator, CoordinatorConfig};
use gauntlet_core::report::Report;
use gauntlet_proto::v1;
use gauntlet_proto::v1::control_service_client::ControlServiceClient;
use gauntlet_worker::agent::{AgentConfig, run_agent};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub async fn coordinator() -> (String, CancellationToken) {
    coordinator_with(Duration::from_secs(1)).await
}

pub async fn coordinator_with(heartbeat_timeout: Duration) -> (String, CancellationToken) {
    let stop = CancellationToken::new();
    let config = CoordinatorConfig {
        heartbeat_timeout,
        heartbeat_interval: Duration::from_millis(200),
        start_delay: Duration::from_millis(100),
        min_workers_timeout: Duration::from_secs(10),
        ..CoordinatorConfig::default()
    };
    let (addr, _) = Coordinator::new(config, stop.clone())
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (format!("http://{addr}"), stop)
}

pub fn worker(url: &str, name: &str) -> (JoinHandle<()>, CancellationToken) {
    worker_with(url, name, gauntlet_worker::access::Access::open())
}

/// An in-process worker whose operator allows `access`.
pub fn worker_with(
    url: &str,
    name: &str,
    access: gauntlet_worker::access::Access,
) -> (JoinHandle<()>, CancellationToken) {
    let stop = CancellationToken::new();
    let config = AgentConfig {
        coordinator: url.to_owned(),
        name: name.to_owned(),
        capacity: 1,
        labels: BTreeMap::new(),
        drain: Duration::from_secs(5),
        token: None,
        tls_ca: None,
        access,
        sources: Default::default(),
    };
    let token = stop.clone();
    (
        tokio::spawn(async move { run_agent(config, token).await.unwrap() }),
        stop,
    )
}

pub fn sleepy(load: &str, extra: &str) -> String {
    format!(
        "name = \"sleepy\"\n[target]\nbase_url = \"http://127.0.0.1:9\"\n[load]\n{load}\n[[scenarios]]\nname = \"nap\"\nsteps = [ {{ sleep = {{ duration = \"100ms\" }} }} ]\n{extra}\n"
    )
}

pub async fn run(url: &str, plan: String, min_workers: u32) -> Report {
    let (id, mut client) = submit(url, plan, min_workers).await;
    watch_report(&mut client, &id).await
}

/// Submits `plan`; returns its run id and the client that submitted it.
pub async fn submit(
    url: &str,
    plan: String,
    min_workers: u32,
) -> (String, ControlServiceClient<tonic::transport::Channel>) {
    let mut client = ControlServiceClient::connect(url.to_owned()).await.unwrap();
    let id = client
        .submit_run(v1::SubmitRunRequest {
            plan_toml: plan,
            plan_file: "sleepy.toml".into(),
            min_workers,
            ..v1::SubmitRunRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run_id;
    (id, client)
}

/// Watches run `id` to its report.
pub async fn watch_report(
    client: &mut ControlServiceClient<tonic::transport::Channel>,
    id: &str,
) -> Report {
    let mut stream = client
        .watch_run(v1::WatchRunRequest { run_id: id.into() })
        .await
        .unwrap()
        .into_inner();
    while let Some(p) = stream.message().await.unwrap() {
        if !p.report_json.is_empty() {
            return serde_json::from_str(&p.report_json).unwrap();
        }
    }
    panic!("no report");
}

/// A worker driven by hand: registered (claiming `claim` as its id, if given), its Session
/// stream open. Returns what it sends through, and what it receives.
pub async fn hand_worker(
    url: &str,
    name: &str,
    claim: &str,
) -> (
    tokio::sync::mpsc::Sender<v1::WorkerMessage>,
    tonic::Streaming<v1::CoordinatorMessage>,
    v1::RegisterResponse,
) {
    use gauntlet_proto::v1::worker_service_client::WorkerServiceClient;
    let mut client = WorkerServiceClient::connect(url.to_owned()).await.unwrap();
    let id = client
        .register(v1::RegisterRequest {
            name: name.into(),
            capacity: 1,
            protocol: gauntlet_proto::PROTOCOL_VERSION,
            worker_id: claim.into(),
            ..v1::RegisterRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(v1::WorkerMessage {
        kind: Some(v1::worker_message::Kind::Hello(v1::Hello {
            worker_id: id.worker_id.clone(),
            session_key: id.session_key.clone(),
        })),
    })
    .await
    .unwrap();
    let inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, inbound, id)
}

pub async fn wait_for_workers(url: &str, n: usize) {
    let mut client = ControlServiceClient::connect(url.to_owned()).await.unwrap();
    for _ in 0..200 {
        let w = client
            .list_workers(v1::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers;
        if w.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("workers never registered");
}

/// A snapshot of `n` sessions of the sleepy plan's `nap` scenario that passed, each lasting
/// `us` microseconds: consistent, as a real worker records it (attribution included).
pub fn naps_passed(n: u64, us: u64) -> gauntlet_core::metrics::Snapshot {
    let mut s = gauntlet_core::metrics::Snapshot::default();
    let mut h = gauntlet_core::metrics::histogram();
    h.record_n(us, n).unwrap();
    s.histograms.insert("session".into(), h.clone());
    s.histograms.insert("session.nap".into(), h);
    s.counters.sessions_started = n;
    s.counters.sessions_passed = n;
    s.attribution.carried(
        &gauntlet_core::attribution::SessionTags {
            subject: Some("vu-0".into()),
            target: Some(gauntlet_core::attribution::NO_TARGET.into()),
            live: 0,
            in_flight: 0,
            started: Some(0),
        },
        &gauntlet_core::attribution::Outcomes {
            passed: n,
            ..Default::default()
        },
    );
    s
}

/// The next acknowledgement or refusal on a hand-driven worker's stream (within 10 s: a
/// snapshot the coordinator neither acknowledges nor refuses fails the test).
pub async fn answer(
    inbound: &mut tonic::Streaming<v1::CoordinatorMessage>,
) -> Result<v1::Ack, v1::Refused> {
    let next = async {
        loop {
            match inbound.message().await.unwrap().unwrap().kind {
                Some(v1::coordinator_message::Kind::Ack(a)) => return Ok(a),
                Some(v1::coordinator_message::Kind::Refused(r)) => return Err(r),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("neither acknowledged nor refused within 10 s")
}

/// An open-model plan against a testbed at `target` whose JWT secret is in `secret`: `rate`
/// agent-pipeline sessions a second for `duration`, on 10 subjects, every event checked, with
/// at most `max_vus` sessions in flight across the fleet (further arrivals are dropped).
pub fn arrivals(
    target: &str,
    secret: &std::path::Path,
    rate: u32,
    duration: &str,
    max_vus: u32,
) -> String {
    format!(
        r#"name = "subjects"
[target]
base_url = "{target}"
[auth]
secret_file = "{secret}"
subject = "user-{{subject_index}}"
subject_pool = 10
claims = {{ iss = "netra-auth-service", token_type = "access" }}
[load]
model = "open"
rate = {rate}
duration = "{duration}"
max_vus = {max_vus}
graceful_stop = "5s"
[[scenarios]]
name = "agent"
vars = {{ thread = "thread-{{vu}}-{{iteration}}" }}
steps = [
  {{ ws_connect = {{ query = {{ thread_id = "{{thread}}" }}, confirmation = [{{ pointer = "/data/event", equals = "connection_established" }}] }} }},
  {{ ws_send = {{ json = {{ type = "start_agent", payload = {{ user_request = "go" }} }} }} }},
  {{ ws_expect_sequence = {{ orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], ignore = ["pong", "ack"], timeout = "5s" }} }},
  {{ ws_close = {{}} }},
]
[[isolation]]
pointer = "/user_id"
equals = "{{subject}}"
"#,
        secret = secret.display()
    )
}

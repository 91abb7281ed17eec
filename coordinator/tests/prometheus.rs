//! A real Prometheus scrapes a coordinator: Debian's `prometheus` package (installed by
//! `.ci/run`; skipped, saying why, where it is missing) is started on 127.0.0.1 with a
//! generated config that scrapes the coordinator's token-guarded HTTP port with a bearer token
//! from a file, while two workers run a plan against the testbed (with faults) through that
//! coordinator. Once Prometheus has scraped the finished run, its query API must give the
//! report's session totals and failure counts exactly, the report's exact quantiles exactly,
//! and `histogram_quantile` a value in the same bucket as the report's quantile (the buckets'
//! resolution: docs/metrics.md). Its process is killed by PID and its data dir removed, also
//! when the test fails.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gauntlet_coordinator::{Coordinator, CoordinatorConfig};
use gauntlet_core::prometheus::BUCKETS_US;
use gauntlet_core::report::Report;
use gauntlet_proto::v1;
use gauntlet_proto::v1::control_service_client::ControlServiceClient;
use gauntlet_worker::agent::{AgentConfig, run_agent};
use tokio_util::sync::CancellationToken;

const WORKER_TOKEN: &str = "prometheus-test-workers";
const SUBMIT_TOKEN: &str = "prometheus-test-submitters";
const SECRET: &str = "prometheus-test-secret";

/// The plan: two workers, 4 VUs for 4 s of agent runs on the testbed; the send step's name has
/// spaces, quotes, a slash and another script, so /metrics carries its safe form.
fn plan(target: &str, secret: &Path) -> String {
    format!(
        r#"name = "prometheus probe"
[target]
base_url = "{target}"
[auth]
secret_file = "{secret}"
claims = {{ iss = "netra-auth-service", token_type = "access" }}
[load]
vus = 4
duration = "4s"
graceful_stop = "5s"
[[scenarios]]
name = "agent"
steps = [
  {{ ws_connect = {{ confirmation = [{{ pointer = "/data/event", equals = "connection_established" }}] }} }},
  {{ ws_send = {{ json = {{ type = "start_agent", payload = {{ user_request = "go" }} }}, name = "start \"the\" agent / 日本" }} }},
  {{ ws_expect_sequence = {{ orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], ignore = ["pong", "ack"], timeout = "5s" }} }},
  {{ ws_close = {{}} }},
]
[fleet]
interval = "250ms"
"#,
        secret = secret.display()
    )
}

/// Debian's `prometheus` on PATH (or `GAUNTLET_PROMETHEUS`), if it runs.
fn prometheus_binary() -> Option<PathBuf> {
    let candidate = std::env::var_os("GAUNTLET_PROMETHEUS")
        .map_or_else(|| PathBuf::from("prometheus"), PathBuf::from);
    Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(candidate)
}

/// A file removed when dropped (also when the test fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A Prometheus of this test's own: killed by its PID and its directory removed when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Child::kill signals this child's PID, and only it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// Starts `binary` on 127.0.0.1 (a port the kernel picks), scraping `target` every second
    /// with `token` as its bearer token.
    async fn start(binary: &Path, target: SocketAddr, token: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("gauntlet-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("token"), token).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: gauntlet\n    authorization:\n      type: Bearer\n      \
                 credentials_file: {}\n    static_configs:\n      - targets: [\"{target}\"]\n",
                dir.join("token").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut p = Prometheus {
            child,
            dir,
            addr: "127.0.0.1:0".parse().unwrap(),
        };
        // Its port, from the kernel's table of its listening sockets; then wait until ready.
        for _ in 0..300 {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}): {}", p.log());
            }
            if p.addr.port() == 0
                && let Some(port) = listening_port(p.child.id())
            {
                p.addr.set_port(port);
            }
            if p.addr.port() != 0 && get(p.addr, "/-/ready").await.is_some_and(|(s, _)| s == 200) {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("prometheus not ready within 15 s: {}", p.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The instant vector of `query` now: (labels, value) per series.
    async fn query(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let (status, body) = get(self.addr, &path).await.unwrap();
        assert_eq!(status, 200, "{query}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{query}: {body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                (labels, r["value"][1].as_str().unwrap().parse().unwrap())
            })
            .collect()
    }

    /// The value of `query`, which must give exactly one series.
    async fn one(&self, query: &str) -> f64 {
        let result = self.query(query).await;
        assert_eq!(result.len(), 1, "{query}: {result:?}");
        result[0].1
    }
}

/// The TCP port `pid` listens on (IPv4 or IPv6), read from /proc.
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address st ... inode: fields 1, 3 and 9; 0A is LISTEN.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                return u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok();
            }
        }
    }
    None
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET over HTTP/1.0 (so the answer is never chunked): status and body, `None` when nothing
/// listens yet.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n")?.1.to_owned()))
}

fn agent(url: &str, name: &str, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let config = AgentConfig {
        coordinator: url.to_owned(),
        name: name.to_owned(),
        capacity: 1,
        labels: BTreeMap::new(),
        drain: Duration::from_secs(5),
        token: Some(WORKER_TOKEN.into()),
        tls_ca: None,
        access: gauntlet_worker::access::Access::open(),
        sources: Default::default(),
    };
    tokio::spawn(async move { run_agent(config, stop).await.unwrap() })
}

/// The bucket (index into [`BUCKETS_US`], or its length for `+Inf`) `us` microseconds fall in.
fn bucket_of_us(us: u64) -> usize {
    BUCKETS_US
        .iter()
        .position(|le| us <= *le)
        .unwrap_or(BUCKETS_US.len())
}

/// The bucket `s` seconds from Prometheus fall in. `histogram_quantile` interpolates
/// `start + (end - start) * fraction`, which at a fraction of 1 may land a rounding step above
/// `end`: that is still `end`'s bucket.
fn bucket_of_seconds(s: f64) -> usize {
    BUCKETS_US
        .iter()
        .position(|le| s <= *le as f64 / 1e6 * (1.0 + 1e-12))
        .unwrap_or(BUCKETS_US.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_reports_figures() {
    let Some(binary) = prometheus_binary() else {
        assert!(
            std::env::var_os("GAUNTLET_REQUIRE_PROMETHEUS").is_none(),
            "GAUNTLET_REQUIRE_PROMETHEUS is set but no prometheus runs here"
        );
        eprintln!(
            "SKIPPED: no prometheus on this machine (.ci/run installs Debian's `prometheus`; \
             or name one in GAUNTLET_PROMETHEUS)"
        );
        return;
    };
    let mut config = gauntlet_testbed::TestbedConfig::default();
    config.auth.secret = Some(gauntlet_testbed::config::Secret(SECRET.as_bytes().to_vec()));
    config.faults = serde_json::from_value(serde_json::json!({
        "missing_event": { "rate": 0.1 },
        "factory_init": { "rate": 0.1 }
    }))
    .unwrap();
    let tb = gauntlet_testbed::Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let secret = Scratch(
        std::env::temp_dir().join(format!("gauntlet-prometheus-{}.secret", std::process::id())),
    );
    std::fs::write(&secret.0, SECRET).unwrap();

    let stop = CancellationToken::new();
    let coordinator = Coordinator::new(
        CoordinatorConfig {
            heartbeat_interval: Duration::from_millis(200),
            start_delay: Duration::from_millis(100),
            ..CoordinatorConfig::default()
        },
        stop.clone(),
    )
    .with_token(Some(WORKER_TOKEN.into()))
    .with_submit_token(Some(SUBMIT_TOKEN.into()));
    let (grpc, _) = coordinator
        .clone()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, gauntlet_coordinator::http::router(coordinator)).await
    });
    // The port is guarded: without the token, 401.
    assert_eq!(get(http, "/metrics").await.unwrap().0, 401);
    let prometheus = Prometheus::start(&binary, http, SUBMIT_TOKEN).await;
    // Prometheus hands new targets to its scrapers every 5 s: wait (bounded) for its first
    // scrape, so that it sees the run while it goes.
    let mut up = false;
    for _ in 0..300 {
        if prometheus
            .query("up{job=\"gauntlet\"}")
            .await
            .first()
            .is_some_and(|(_, v)| *v == 1.0)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        up,
        "no scrape of the coordinator within 15 s: {}",
        prometheus.log()
    );

    let url = format!("http://{grpc}");
    let workers = CancellationToken::new();
    let _a = agent(&url, "a", workers.clone());
    let _b = agent(&url, "b", workers.clone());
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut control = ControlServiceClient::with_interceptor(
        channel,
        gauntlet_proto::auth::attach_token(Some(SUBMIT_TOKEN.into())),
    );
    let run_id = control
        .submit_run(v1::SubmitRunRequest {
            plan_toml: plan(&tb.http_url(), &secret.0),
            plan_file: "prometheus.toml".into(),
            min_workers: 2,
            ..v1::SubmitRunRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run_id;
    let mut stream = control
        .watch_run(v1::WatchRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut report: Option<Report> = None;
    while let Some(p) = stream.message().await.unwrap() {
        if !p.report_json.is_empty() {
            report = Some(serde_json::from_str(&p.report_json).unwrap());
        }
    }
    let r = report.unwrap();
    assert!(
        r.totals.passed > 0 && r.totals.failed > 0,
        "the faults show: {}",
        r.render_text()
    );

    // Wait (bounded) until Prometheus has scraped the finished run.
    let run = format!("run=\"{run_id}\"");
    let finished = format!("gauntlet_run_phase{{{run},phase=\"finished\"}}");
    let mut scraped = false;
    for _ in 0..200 {
        if prometheus
            .query(&finished)
            .await
            .first()
            .is_some_and(|(_, v)| *v == 1.0)
        {
            scraped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        scraped,
        "no scrape of the finished run within 10 s: {}",
        prometheus.log()
    );
    assert_eq!(
        prometheus.one("up{job=\"gauntlet\"}").await,
        1.0,
        "the bearer token works"
    );
    // It scraped the run while it ran too: a dashboard saw it live.
    assert_eq!(
        prometheus
            .one(&format!(
                "max_over_time(gauntlet_run_phase{{{run},phase=\"running\"}}[5m])"
            ))
            .await,
        1.0
    );
    assert!(
        prometheus
            .one(&format!(
                "max_over_time(gauntlet_latency_recent_samples{{{run},metric=\"session\"}}[5m])"
            ))
            .await
            > 0.0,
        "the recent window was exposed while the run went"
    );

    // Totals and failures: exact.
    let t = &r.totals;
    for (outcome, n) in [
        ("started", t.sessions),
        ("passed", t.passed),
        ("failed", t.failed),
        ("interrupted", t.interrupted),
        ("unknown", t.unknown),
    ] {
        let q = format!(
            "gauntlet_sessions_total{{{run},plan=\"prometheus_probe\",outcome=\"{outcome}\"}}"
        );
        assert_eq!(prometheus.one(&q).await, n as f64, "{outcome}");
        eprintln!("{q} = {n} (report: {n})");
    }
    let mut expected: BTreeMap<(String, String), f64> = BTreeMap::new();
    for f in &r.failures {
        *expected
            .entry((f.scenario.clone(), f.category.to_string()))
            .or_default() += f.count as f64;
    }
    let scraped: BTreeMap<(String, String), f64> = prometheus
        .query(&format!("gauntlet_failures_total{{{run}}}"))
        .await
        .into_iter()
        .map(|(l, v)| ((l["scenario"].clone(), l["category"].clone()), v))
        .collect();
    eprintln!("failures: prometheus {scraped:?}, report {expected:?}");
    assert_eq!(scraped, expected);
    assert_eq!(
        prometheus
            .one(&format!("sum(gauntlet_failures_total{{{run}}})"))
            .await,
        t.failed as f64
    );

    // Latency: every metric's count exactly, the exact quantiles exactly, histogram_quantile
    // in the report's quantile's bucket.
    let human = "step.agent.start \"the\" agent / 日本";
    assert_eq!(
        r.metrics[human].safe_name,
        "step.agent.start__the__agent___u65e5u672c"
    );
    for name in [
        "session",
        "ws.handshake",
        "event.agent.agent_completed",
        human,
    ] {
        let m = &r.metrics[name];
        let metric = format!("{run},metric=\"{}\"", m.safe_name);
        assert_eq!(
            prometheus
                .one(&format!("gauntlet_latency_seconds_count{{{metric}}}"))
                .await,
            m.count as f64,
            "{name}"
        );
        for (q, label, exact_us) in [
            (0.5, "0.5", m.p50_us),
            (0.9, "0.9", m.p90_us),
            (0.99, "0.99", m.p99_us),
        ] {
            let exact = prometheus
                .one(&format!(
                    "gauntlet_latency_run_seconds{{{metric},quantile=\"{label}\"}}"
                ))
                .await;
            assert_eq!(exact, exact_us as f64 / 1e6, "{name} q={q}");
            let estimate = prometheus
                .one(&format!(
                    "histogram_quantile({q}, gauntlet_latency_seconds_bucket{{{metric}}})"
                ))
                .await;
            eprintln!(
                "{name} q={q}: report {exact_us} us, exact summary {exact} s, histogram_quantile {estimate} s"
            );
            assert_eq!(
                bucket_of_seconds(estimate),
                bucket_of_us(exact_us),
                "{name} q={q}: histogram_quantile {estimate} s and the report's {exact_us} us \
                 in different buckets"
            );
        }
    }
    drop(prometheus);
    workers.cancel();
    stop.cancel();
}

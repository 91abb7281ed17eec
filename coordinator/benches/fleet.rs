//! Coordinator benchmark: a fleet of simulated workers (in-process gRPC clients speaking the
//! real WorkerService protocol) streams a 20-metric snapshot each every interval to a
//! coordinator in its own process, whose CPU and memory are read from /proc; then the time
//! from the last worker's Done to the report. Run: `cargo bench -p gauntlet-coordinator
//! --bench fleet` (knobs: BENCH_WORKERS, default 1,000; BENCH_SECONDS, default 60).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gauntlet_bench::{env_or, runtime};
use gauntlet_coordinator::{Coordinator, CoordinatorConfig};
use gauntlet_core::attribution::{NO_TARGET, Outcomes, SessionTags};
use gauntlet_core::metrics::{FailureKey, FailureStats, Snapshot, histogram};
use gauntlet_core::names::Vocabulary;
use gauntlet_core::plan::{Overrides, Plan};
use gauntlet_core::words::FailureCategory;
use gauntlet_proto::v1;
use gauntlet_proto::v1::control_service_client::ControlServiceClient;
use gauntlet_proto::v1::worker_message::Kind;
use gauntlet_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio::time::Instant;

const ROLE: &str = "GAUNTLET_FLEET_BENCH_ROLE";
/// Latency metrics in every snapshot.
const METRICS: usize = 20;
/// Sessions each simulated worker ends per interval (so ~200 samples per histogram).
const SESSIONS: u64 = 200;
/// Of them, failed (a timeout on one step).
const FAILED: u64 = 2;
/// VUs per worker.
const VUS: u64 = 10;
/// Different snapshot contents per interval (workers take them in turn).
const VARIANTS: usize = 8;

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("coordinator") => runtime().block_on(coordinator()),
        _ => runtime().block_on(measure(
            env_or("BENCH_WORKERS", 1_000),
            env_or("BENCH_SECONDS", 60),
        )),
    }
}

/// The coordinator process: the defaults of `gauntlet coordinator` (1 s heartbeats, lost after
/// 5 s), a history database, its address on stdout; it stops when its stdin closes.
async fn coordinator() {
    let db = std::env::temp_dir().join(format!("gauntlet-fleet-bench-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let stop = tokio_util::sync::CancellationToken::new();
    let history = gauntlet_coordinator::history::History::open(&db).unwrap();
    let (addr, _) = Coordinator::new(CoordinatorConfig::default(), stop.clone())
        .with_history(history)
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    println!("{addr}");
    std::io::stdout().flush().unwrap();
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {}
    })
    .await
    .unwrap();
    stop.cancel();
    let _ = std::fs::remove_file(&db);
}

/// The plan: `METRICS - 4` sleep steps give `session`, `session.fleet`, the two WebSocket
/// metrics and one per step: 20 latency metrics with 16 steps (the simulated workers send 20).
fn plan(workers: u64, seconds: u64) -> String {
    let steps = vec!["{ sleep = { duration = \"1ms\" } }"; METRICS - 4].join(", ");
    format!(
        "name = \"fleet\"\n[target]\nbase_url = \"http://127.0.0.1:9\"\n[load]\nvus = {}\nduration = \"{seconds}s\"\n[fleet]\nmin_workers = {workers}\ninterval = \"1s\"\n[[scenarios]]\nname = \"fleet\"\nsteps = [ {steps} ]\n",
        workers * VUS
    )
}

/// A small deterministic generator (xorshift), for latencies that differ between workers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A latency in microseconds, log-uniform between 200 us and 50 ms.
    fn latency(&mut self) -> u64 {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        (200.0 * (250f64).powf(u)) as u64
    }
}

/// One interval's measurements of one worker, consistent as a real worker records them: every
/// metric `SESSIONS` samples, `FAILED` sessions timed out, every session attributed to one of
/// 10 subjects, counted once in each table.
fn snapshot(names: &[String], interval: u64, rng: &mut Rng, run_ms: u64) -> Snapshot {
    let mut s = Snapshot::default();
    for name in names {
        let mut h = histogram();
        for _ in 0..SESSIONS {
            h.record(rng.latency()).unwrap();
        }
        s.histograms.insert(name.clone(), h);
    }
    s.counters.sessions_started = SESSIONS;
    s.counters.sessions_passed = SESSIONS - FAILED;
    s.counters.sessions_failed = FAILED;
    s.failures.insert(
        FailureKey {
            category: FailureCategory::Timeout,
            detail: "no frame within 5s".into(),
            scenario: "fleet".into(),
            step: "sleep".into(),
        },
        FailureStats {
            count: FAILED,
            first_ms: run_ms.saturating_sub(500),
            last_ms: run_ms,
            samples: vec!["waited 5s for a frame".into()],
        },
    );
    for i in 0..SESSIONS {
        let failed = i < FAILED;
        let mut outcomes = Outcomes::default();
        if failed {
            outcomes.failed.insert(FailureCategory::Timeout, 1);
        } else {
            outcomes.passed = 1;
        }
        s.attribution.carried(
            &SessionTags {
                subject: Some(format!("user-{}", i % 10)),
                target: Some(NO_TARGET.into()),
                live: i % 3,
                in_flight: i % VUS,
                started: Some(interval.saturating_sub(i % 2)),
            },
            &outcomes,
        );
    }
    s
}

/// What the fleet saw.
#[derive(Debug, Default)]
struct Tally {
    acked: AtomicU64,
    refused: AtomicU64,
    assigned: AtomicU64,
    done: AtomicU64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// One simulated worker: registers, heartbeats with its share's progress, and on its
/// assignment sends one snapshot per interval (taken in turn from `wire`, one list per
/// interval) and its Done; then its stream stays open until `release` says so.
async fn worker(
    url: String,
    n: usize,
    wire: Arc<Vec<Vec<v1::Snapshot>>>,
    tally: Arc<Tally>,
    last_done: mpsc::UnboundedSender<Instant>,
    release: tokio_util::sync::CancellationToken,
) {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = WorkerServiceClient::new(channel);
    let id = client
        .register(v1::RegisterRequest {
            name: format!("sim-{n}"),
            capacity: 1,
            protocol: gauntlet_proto::PROTOCOL_VERSION,
            ..v1::RegisterRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (tx, rx) = mpsc::channel(64);
    tx.send(v1::WorkerMessage {
        kind: Some(Kind::Hello(v1::Hello {
            worker_id: id.worker_id.clone(),
            session_key: id.session_key.clone(),
        })),
    })
    .await
    .unwrap();
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // The share's progress for heartbeats: (run, first_seq, start instant in Unix ms).
    let share: Arc<std::sync::Mutex<Option<(String, u64, u64)>>> = Default::default();
    let beat = {
        let (tx, share) = (tx.clone(), Arc::clone(&share));
        let every = Duration::from_millis(id.heartbeat_interval_ms.max(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let progress = share
                    .lock()
                    .unwrap()
                    .clone()
                    .map(|(run_id, first_seq, start)| {
                        let at_ms = unix_ms().saturating_sub(start);
                        v1::ShareProgress {
                            run_id,
                            first_seq,
                            started: at_ms / 1000 * SESSIONS,
                            active: VUS,
                            at_ms,
                            shortest_us: 200,
                            dropped: 0,
                        }
                    });
                let heartbeat = v1::Heartbeat {
                    progress: progress.into_iter().collect(),
                };
                if tx
                    .send(v1::WorkerMessage {
                        kind: Some(Kind::Heartbeat(heartbeat)),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let mut sender = None;
    loop {
        let message = tokio::select! {
            m = inbound.message() => m,
            () = release.cancelled() => break,
        };
        let Ok(Some(message)) = message else { break };
        match message.kind {
            Some(v1::coordinator_message::Kind::Assignment(a)) => {
                tally.assigned.fetch_add(1, Ordering::Relaxed);
                *share.lock().unwrap() = Some((a.run_id.clone(), a.first_seq, a.start_at_unix_ms));
                let (tx, wire, tally, last_done) = (
                    tx.clone(),
                    Arc::clone(&wire),
                    Arc::clone(&tally),
                    last_done.clone(),
                );
                sender = Some(tokio::spawn(async move {
                    let start = a.start_at_unix_ms;
                    let intervals = wire.len() as u64;
                    for k in 1..=intervals {
                        let due = start + k * a.interval_ms;
                        tokio::time::sleep(Duration::from_millis(due.saturating_sub(unix_ms())))
                            .await;
                        let list = &wire[k as usize - 1];
                        let mut s = list[n % list.len()].clone();
                        s.run_id.clone_from(&a.run_id);
                        s.seq = a.first_seq + k;
                        tx.send(v1::WorkerMessage {
                            kind: Some(Kind::Snapshot(s)),
                        })
                        .await
                        .unwrap();
                    }
                    tx.send(v1::WorkerMessage {
                        kind: Some(Kind::Done(v1::Done {
                            run_id: a.run_id,
                            last_seq: a.first_seq + intervals,
                            first_seq: a.first_seq,
                            sessions_started: intervals * SESSIONS,
                            ..v1::Done::default()
                        })),
                    })
                    .await
                    .unwrap();
                    tally.done.fetch_add(1, Ordering::Relaxed);
                    let _ = last_done.send(Instant::now());
                }));
            }
            Some(v1::coordinator_message::Kind::Ack(_)) => {
                tally.acked.fetch_add(1, Ordering::Relaxed);
            }
            Some(v1::coordinator_message::Kind::Refused(r)) => {
                // The first few refusals said, all counted.
                let earlier = tally.refused.fetch_add(1, Ordering::Relaxed);
                if earlier < 5 {
                    eprintln!("refused: {} {}", r.reason, r.detail);
                }
            }
            _ => {}
        }
    }
    beat.abort();
    if let Some(s) = sender {
        s.abort();
    }
}

/// CPU time (user + system) of process `pid` so far.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's closing parenthesis; utime and stime are 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports in USER_HZ, 100 a second on every architecture it runs on here.
    Duration::from_millis(ticks * 10)
}

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

async fn measure(workers: u64, seconds: u64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "coordinator")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut addr = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut addr)
        .unwrap();
    let url = format!("http://{}", addr.trim());

    // Every interval's snapshots, encoded before the clock starts (V2 + deflate, as workers
    // send them).
    let text = plan(workers, seconds);
    let resolved = Plan::from_text("fleet.toml", &text, &Overrides::default()).unwrap();
    let vocabulary = Vocabulary::of(&resolved);
    let names: Vec<String> = vocabulary.metrics.iter().cloned().collect();
    assert_eq!(names.len(), METRICS, "{names:?}");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut bytes = 0usize;
    // The `session` histogram the report must show: every variant's, as many times as workers
    // send it.
    let mut expected = histogram();
    let senders = |v: usize| (0..workers as usize).filter(|n| n % VARIANTS == v).count() as u64;
    let wire: Vec<Vec<v1::Snapshot>> = (1..=seconds)
        .map(|k| {
            (0..VARIANTS)
                .map(|v| {
                    let s = snapshot(&names, k - 1, &mut rng, k * 1000);
                    for x in s.histograms["session"].iter_recorded() {
                        expected
                            .record_n(x.value_iterated_to(), x.count_at_value() * senders(v))
                            .unwrap();
                    }
                    let p = gauntlet_proto::snapshot_to_proto(&s, "", 0, k * 1000, VUS);
                    bytes += prost::Message::encoded_len(&p);
                    p
                })
                .collect()
        })
        .collect();
    let snapshot_bytes = bytes / (seconds as usize * VARIANTS);
    let wire = Arc::new(wire);

    let tally = Arc::new(Tally::default());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let release = tokio_util::sync::CancellationToken::new();
    let idle_rss = status_kib(pid, "VmRSS");
    let connecting = Instant::now();
    let mut fleet = Vec::new();
    for n in 0..workers as usize {
        fleet.push(tokio::spawn(worker(
            url.clone(),
            n,
            Arc::clone(&wire),
            Arc::clone(&tally),
            done_tx.clone(),
            release.clone(),
        )));
    }
    drop(done_tx);
    let mut control = ControlServiceClient::connect(url.clone()).await.unwrap();
    loop {
        let listed = control
            .list_workers(v1::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers
            .len() as u64;
        if listed == workers {
            break;
        }
        assert!(
            connecting.elapsed() < Duration::from_secs(120),
            "{listed} of {workers} registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let registered = connecting.elapsed();
    eprintln!(
        "{workers} workers registered in {:.1} s",
        registered.as_secs_f64()
    );
    let fleet_rss = status_kib(pid, "VmRSS");

    let run_id = control
        .submit_run(v1::SubmitRunRequest {
            plan_toml: text,
            plan_file: "fleet.toml".into(),
            min_workers: workers as u32,
            ..v1::SubmitRunRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run_id;
    let mut watch = control
        .watch_run(v1::WatchRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let watching = tokio::spawn(async move {
        while let Some(p) = watch.message().await.unwrap() {
            if !p.report_json.is_empty() {
                return (Instant::now(), p.report_json);
            }
        }
        panic!("the watch stream ended without a report");
    });

    // Sample the coordinator every second from the first assignment to the last Done.
    while tally.assigned.load(Ordering::Relaxed) < workers {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("every worker has its share");
    let cpu_start = cpu(pid);
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while tally.done.load(Ordering::Relaxed) < workers {
        tick.tick().await;
        samples.push((
            started.elapsed().as_secs(),
            status_kib(pid, "VmRSS"),
            cpu(pid),
            tally.acked.load(Ordering::Relaxed),
        ));
    }
    let mut last_done = started;
    for _ in 0..workers {
        last_done = last_done.max(done_rx.recv().await.unwrap());
    }
    let cpu_run = cpu(pid) - cpu_start;
    let span = last_done - started;
    let (reported, report) = watching.await.unwrap();
    let cpu_all = cpu(pid) - cpu_start;
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    release.cancel();
    for w in fleet {
        let _ = w.await;
    }

    println!(
        "coordinator with {workers} simulated workers, {seconds} s, one snapshot each per interval:"
    );
    println!(
        "  {} metrics x ~{SESSIONS} samples a snapshot, {snapshot_bytes} bytes on the wire (V2 + deflate, protobuf)",
        METRICS
    );
    println!(
        "  registered in {:.1} s; RSS idle {} KiB, with the fleet {} KiB",
        registered.as_secs_f64(),
        idle_rss,
        fleet_rss
    );
    let sent = workers * seconds;
    println!(
        "  snapshots: {sent} sent; {} acknowledgements (of snapshots and Dones), {} refused",
        tally.acked.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed)
    );
    println!(
        "  CPU: {:.2} s over {:.1} s = {:.1} % of one core (from the first assignment to the last Done)",
        cpu_run.as_secs_f64(),
        span.as_secs_f64(),
        100.0 * cpu_run.as_secs_f64() / span.as_secs_f64()
    );
    println!(
        "  report {} ms after the last Done (CPU to the report {:.2} s)",
        (reported - last_done).as_millis(),
        cpu_all.as_secs_f64()
    );
    println!("  RSS over the run (s, KiB, CPU-s so far, snapshots acknowledged):");
    for (s, rss, c, acked) in samples
        .iter()
        .filter(|(s, ..)| s % 10 == 0 || *s + 1 >= seconds)
    {
        println!(
            "    {s:>4} {rss:>8} {:>7.2} {acked:>8}",
            (*c - cpu_start).as_secs_f64()
        );
    }
    println!("  peak RSS (VmHWM) {} KiB", status_kib(pid, "VmHWM"));
    let totals = &report["totals"];
    let session = &report["metrics"]["session"];
    let figures = |v: &serde_json::Value| {
        ["count", "p50_us", "p99_us", "max_us"].map(|f| v[f].as_u64().unwrap_or(0))
    };
    let want = [
        expected.len(),
        expected.value_at_quantile(0.5),
        expected.value_at_quantile(0.99),
        expected.max(),
    ];
    println!(
        "  report: verdict {}, sessions passed {} failed {} (sent {} and {}); `session` count, p50, p99, max {:?} (sent {:?})",
        report["verdict"],
        totals["passed"],
        totals["failed"],
        sent * (SESSIONS - FAILED),
        sent * FAILED,
        figures(session),
        want
    );
    drop(child.stdin.take());
    let _ = child.wait();
    // Checked: a figure that is not what the fleet sent fails the bench.
    assert_eq!(
        tally.refused.load(Ordering::Relaxed),
        0,
        "refused snapshots"
    );
    assert_eq!(
        tally.acked.load(Ordering::Relaxed),
        sent + workers,
        "acknowledgements"
    );
    assert_eq!(totals["passed"].as_u64(), Some(sent * (SESSIONS - FAILED)));
    assert_eq!(totals["failed"].as_u64(), Some(sent * FAILED));
    assert_eq!(figures(session), want, "the merged `session` histogram");
    println!("  checked: every count and the `session` histogram's figures are what was sent");
}

//! Engine benchmark: WebSocket round trips per second of gauntlet's engine (a plan of
//! `ws_send` + `ws_expect` with a JSON-pointer check, histograms recorded) side by side with
//! a bare tokio-tungstenite client loop, against the same echo server in the same run; and
//! worker RSS per idle established session. Run: `cargo bench -p gauntlet-worker --bench
//! engine` (knobs: BENCH_SECONDS, BENCH_ROUNDS, BENCH_IDLE_SESSIONS).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use gauntlet_core::plan::{Overrides, Plan};
use gauntlet_worker::{Program, RunConfig};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use gauntlet_bench::echo::{ROLE, Server, echo_server};
use gauntlet_bench::{env_or, runtime};

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("echo") => runtime().block_on(echo_server()),
        Ok("idle-bare") => runtime().block_on(idle_bare(
            env_or("BENCH_PORT", 0) as u16,
            env_or("BENCH_IDLE_SESSIONS", 10_000),
        )),
        Ok("idle-engine") => runtime().block_on(idle_engine(
            env_or("BENCH_PORT", 0) as u16,
            env_or("BENCH_IDLE_SESSIONS", 10_000),
            false,
        )),
        Ok("idle-engine-ramp") => runtime().block_on(idle_engine(
            env_or("BENCH_PORT", 0) as u16,
            env_or("BENCH_IDLE_SESSIONS", 10_000),
            true,
        )),
        _ => runtime().block_on(measure(
            env_or("BENCH_SECONDS", 5),
            env_or("BENCH_ROUNDS", 3) as u32,
            env_or("BENCH_IDLE_SESSIONS", 10_000),
        )),
    }
}

/// The reference: N connections, each sends the request and waits for its echo, in a loop
/// (`gauntlet_bench::bare`, shared with `bench/run.py`).
async fn bare_round_trips(port: u16, conns: usize, seconds: u64) -> f64 {
    gauntlet_bench::bare::round_trips(port, conns, Duration::from_secs(1), seconds).await
}

fn echo_plan(port: u16, load: &str, steps: &str) -> Plan {
    let text = format!(
        r#"name = "bench"
[target]
base_url = "http://127.0.0.1:{port}"
ws_path = "/"
connect_timeout = "60s"
[load]
{load}
[[scenarios]]
name = "echo"
steps = [
{steps}
]
"#
    );
    Plan::from_text("bench.toml", &text, &Overrides::default()).unwrap()
}

/// The engine: N VUs, one session each, looping send + expect (JSON parsed, `/type` checked,
/// step and event latencies recorded). Round trips counted from the per-second snapshots
/// after the first (warm-up) second.
async fn engine_round_trips(port: u16, conns: usize, seconds: u64) -> f64 {
    let pad = "x".repeat(200 - r#"{"pad":"","type":"ping"}"#.len());
    let plan = echo_plan(
        port,
        &format!(
            "vus = {conns}\nduration = \"{}s\"\ngraceful_stop = \"0s\"",
            seconds + 2
        ),
        &format!(
            r#"  {{ ws_connect = {{}} }},
  {{ repeat = {{ count = 4000000000, steps = [
    {{ ws_send = {{ json = {{ type = "ping", pad = "{pad}" }} }} }},
    {{ ws_expect = {{ match = [{{ pointer = "/type", equals = "ping" }}], timeout = "10s" }} }},
  ] }} }},"#
        ),
    );
    let program = Arc::new(Program::compile(plan).unwrap());
    let (tx, mut rx) = mpsc::channel(64);
    let engine = tokio::spawn(gauntlet_worker::run(
        program,
        RunConfig::default(),
        CancellationToken::new(),
        tx,
    ));
    let mut frames = Vec::new();
    while let Some(s) = rx.recv().await {
        frames.push(s.snapshot.counters.frames_received);
    }
    engine.await.unwrap();
    // Deltas 2..=seconds+1 cover seconds 1..seconds+1 of the run.
    let counted: u64 = frames.iter().skip(1).take(seconds as usize).sum();
    counted as f64 / seconds as f64
}

/// Child role: runs N idle sessions (connect, then sleep) against the echo server and
/// reports how many are established.
async fn idle_engine(port: u16, n: u64, ramp: bool) {
    let load = if ramp {
        // VUs join over 10 s, then stay: sessions never end before the measurement.
        format!(
            "stages = [{{ duration = \"10s\", target = {n} }}, {{ duration = \"120s\", target = {n} }}]\ngraceful_stop = \"0s\""
        )
    } else {
        format!("vus = {n}\niterations = 1\ngraceful_stop = \"0s\"")
    };
    let plan = echo_plan(
        port,
        &load,
        "  { ws_connect = {} },\n  { sleep = { duration = \"120s\" } },",
    );
    let program = Arc::new(Program::compile(plan).unwrap());
    println!("ready");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(gauntlet_worker::run(
        program,
        RunConfig::default(),
        CancellationToken::new(),
        tx,
    ));
    let mut established = 0;
    while let Some(s) = rx.recv().await {
        established += s
            .snapshot
            .histograms
            .get("ws.handshake")
            .map_or(0, |h| h.len());
        println!(
            "established {established} failed {}",
            s.snapshot.counters.sessions_failed
        );
    }
}

/// Child role: N bare tokio-tungstenite connections held open (the floor for the engine's
/// idle figure), reported like `idle_engine`.
async fn idle_bare(port: u16, n: u64) {
    println!("ready");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let established = Arc::new(AtomicU64::new(0));
    // All at once, like the engine's VUs without a ramp; each task holds its connection
    // waiting on it, as a client would.
    for _ in 0..n {
        let established = established.clone();
        tokio::spawn(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0);
            let (mut ws, _) = tokio_tungstenite::client_async_with_config(
                format!("ws://127.0.0.1:{port}/"),
                tcp,
                Some(config),
            )
            .await
            .unwrap();
            established.fetch_add(1, Ordering::Relaxed);
            while let Some(Ok(_)) = ws.next().await {}
        });
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "established {} failed 0",
            established.load(Ordering::Relaxed)
        );
    }
}

/// RSS growth per idle session of a child in `role`, in KiB: (before, after, per session).
async fn idle_cost(port: u16, role: &str, idle: u64) -> (u64, u64, f64) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .env("BENCH_PORT", port.to_string())
        .env("BENCH_IDLE_SESSIONS", idle.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let before = rss();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let established: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        if established >= idle || Instant::now() > deadline {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss();
    let _ = child.kill();
    let _ = child.wait();
    (before, after, (after - before) as f64 / idle as f64)
}

async fn measure(seconds: u64, rounds: u32, idle: u64) {
    println!(
        "engine benchmark: {seconds} s per cell, {rounds} alternating rounds, {idle} idle sessions"
    );
    let echo = Server::spawn("echo");
    println!(
        "\n| connections | bare loop rt/s (median) | gauntlet engine rt/s (median) | engine / bare |"
    );
    println!("|---|---|---|---|");
    for conns in [10, 100].into_iter().filter(|_| rounds > 0) {
        let (mut b, mut e) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            b.push(bare_round_trips(echo.port, conns, seconds).await);
            e.push(engine_round_trips(echo.port, conns, seconds).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (bm, em) = (median(&mut b), median(&mut e));
        println!("| {conns} | {bm:.0} | {em:.0} | {:.1} % |", 100.0 * em / bm);
        eprintln!("  raw: bare {b:.0?} engine {e:.0?}");
    }
    drop(echo);

    println!(
        "\n| client | idle established sessions | RSS before (KiB) | after (KiB) | KiB per session | goal |"
    );
    println!("|---|---|---|---|---|---|");
    for (role, goal) in [
        ("idle-bare", "-"),
        ("idle-engine", "<= 8"),
        ("idle-engine-ramp", "<= 8"),
    ] {
        let echo = Server::spawn("echo");
        let (before, after, per) = idle_cost(echo.port, role, idle).await;
        println!("| {role} | {idle} | {before} | {after} | {per:.2} | {goal} |");
    }
}

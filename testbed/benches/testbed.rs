//! Testbed benchmark: ping/pong round trips per second against the testbed versus a bare
//! tokio-tungstenite echo server (same client, same run), and server RSS per idle established
//! connection. Servers run as child processes of this binary so client and server are measured
//! apart. Run: `cargo bench -p gauntlet-testbed --bench testbed` (env knobs in `Knobs`).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gauntlet_bench::echo::{ROLE, Server, echo_server, request};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use gauntlet_bench::env_or;
use gauntlet_testbed::config::Secret;
use gauntlet_testbed::{Testbed, TestbedConfig};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const SECRET: &str = "bench-secret";

/// Settings, from the environment.
struct Knobs {
    /// Seconds of measurement per (server, connections) cell.
    seconds: u64,
    /// Alternating rounds (echo, testbed, echo, testbed, ...).
    rounds: u32,
    /// Idle connections for the memory figure.
    idle: usize,
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument would also land here: ignore both.
    match std::env::var(ROLE).as_deref() {
        Ok("echo") => serve(echo_server()),
        Ok("testbed") => serve(testbed_server()),
        _ => {
            let knobs = Knobs {
                seconds: env_or("BENCH_SECONDS", 5),
                rounds: env_or("BENCH_ROUNDS", 3) as u32,
                idle: env_or("BENCH_IDLE_CONNS", 15_000) as usize,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(measure(knobs));
        }
    }
}

fn serve(server: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(server);
}

async fn testbed_server() {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    let testbed = Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    println!("{}", testbed.addr().port());
    std::future::pending::<()>().await;
}

fn token(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"sub": sub, "iat": now, "exp": now + 3600, "token_type": "access",
        "iss": "netra-auth-service", "jti": format!("{sub}-{now}")});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn open(port: u16, sub: &str, testbed: bool) -> Ws {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut request = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token(sub))).unwrap(),
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
        .await
        .unwrap();
    if testbed {
        let hello = ws.next().await.unwrap().unwrap();
        assert!(
            hello.to_text().unwrap().contains("connection_established"),
            "{hello:?}"
        );
    }
    ws
}

/// Round trips per second over `conns` connections for `seconds`.
async fn round_trips(port: u16, conns: usize, seconds: u64, testbed: bool) -> f64 {
    let mut sockets = Vec::with_capacity(conns);
    for i in 0..conns {
        sockets.push(open(port, &format!("bench-{i}"), testbed).await);
    }
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let body = request();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let (count, stop, counting, body) =
                (count.clone(), stop.clone(), counting.clone(), body.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    ws.send(Message::Text(body.clone().into())).await.unwrap();
                    loop {
                        match ws.next().await.unwrap().unwrap() {
                            Message::Text(_) => break,
                            _ => continue,
                        }
                    }
                    if counting.load(Ordering::Relaxed) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = ws.close(None).await;
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up, not counted
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let n = count.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    n as f64 / elapsed
}

/// Server RSS growth per idle established connection, in KiB.
async fn idle_cost(server: &Server, idle: usize, testbed: bool) -> (u64, u64, f64) {
    let before = server.rss_kib();
    let port = server.port;
    let mut sockets = Vec::with_capacity(idle);
    let mut batch = Vec::new();
    for i in 0..idle {
        batch.push(tokio::spawn(async move {
            open(port, &format!("idle-{i}"), testbed).await
        }));
        if batch.len() == 256 {
            for t in batch.drain(..) {
                sockets.push(t.await.unwrap());
            }
        }
    }
    for t in batch.drain(..) {
        sockets.push(t.await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // let the server settle
    let after = server.rss_kib();
    drop(sockets);
    (before, after, (after - before) as f64 / idle as f64)
}

async fn measure(knobs: Knobs) {
    println!(
        "testbed benchmark: {} s per cell, {} alternating rounds, {} idle connections",
        knobs.seconds, knobs.rounds, knobs.idle
    );
    let echo = Server::spawn("echo");
    let testbed = Server::spawn("testbed");
    println!(
        "\n| connections | bare echo rt/s (median) | testbed ping/pong rt/s (median) | testbed / echo |"
    );
    println!("|---|---|---|---|");
    for conns in [10, 100] {
        let (mut e, mut t) = (Vec::new(), Vec::new());
        for _ in 0..knobs.rounds {
            e.push(round_trips(echo.port, conns, knobs.seconds, false).await);
            t.push(round_trips(testbed.port, conns, knobs.seconds, true).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (em, tm) = (median(&mut e), median(&mut t));
        println!("| {conns} | {em:.0} | {tm:.0} | {:.1} % |", 100.0 * tm / em);
        eprintln!("  raw: echo {e:.0?} testbed {t:.0?}");
    }
    drop(echo);
    drop(testbed);
    println!(
        "\n| server | idle connections | RSS before (KiB) | RSS after (KiB) | KiB per connection |"
    );
    println!("|---|---|---|---|---|");
    for (role, is_testbed) in [("echo", false), ("testbed", true)] {
        let server = Server::spawn(role);
        let (before, after, per) = idle_cost(&server, knobs.idle, is_testbed).await;
        println!(
            "| {role} | {} | {before} | {after} | {per:.2} |",
            knobs.idle
        );
    }
}

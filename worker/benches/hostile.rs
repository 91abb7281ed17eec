//! Hostile-target benchmark: the worker's peak memory while 1,000 sessions at once face a
//! target built to exhaust it (messages just under the cap, frames over it, an endless HTTP
//! body, a frame that never finishes, a flood of junk frames). Each kind runs in a fresh child
//! process whose peak RSS (`VmHWM`) is the worker's alone; the hostile servers run in another
//! child. Run: `cargo bench -p gauntlet-worker --bench hostile` (knobs: BENCH_SESSIONS,
//! BENCH_CAP_BYTES to set both `target.max_message_bytes` and `max_response_bytes`; the plan's
//! defaults otherwise).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gauntlet_bench::{env_or, runtime};
use gauntlet_core::metrics::Snapshot;
use gauntlet_core::plan::{Overrides, Plan};
use gauntlet_worker::{Program, RunConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// The hostile behaviours, each on its own port.
const KINDS: [&str; 5] = [
    "near-cap-messages",
    "over-cap-frame",
    "endless-http-body",
    "unfinished-frame",
    "junk-flood",
];

fn kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The caps: `(max_message_bytes, max_response_bytes)`, the plan's defaults unless
/// BENCH_CAP_BYTES sets both.
fn caps() -> (u64, u64) {
    let d = gauntlet_core::plan::Target::default();
    match std::env::var("BENCH_CAP_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(cap) => (cap, cap),
        None => (d.max_message_bytes, d.max_response_bytes),
    }
}

fn main() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => runtime().block_on(serve(caps())),
        Some("client") => runtime().block_on(client(
            &args[2],
            &args[3],
            env_or("BENCH_SESSIONS", 1000),
            caps(),
        )),
        _ => measure(),
    }
}

/// Starts the servers, then each kind's client in a child of its own; prints the table.
fn measure() {
    let me = std::env::current_exe().unwrap();
    let mut server = Command::new(&me)
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let addrs: Vec<(String, String)> = (0..KINDS.len())
        .map(|_| {
            let line = lines.next().unwrap().unwrap();
            let (kind, addr) = line.split_once(' ').unwrap();
            (kind.to_owned(), addr.to_owned())
        })
        .collect();
    println!(
        "| hostile target | sessions | failed as | worker RSS before | peak RSS | peak per session | cap |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|");
    for (kind, addr) in &addrs {
        let out = Command::new(&me)
            .args(["client", kind, addr])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{}", text.lines().last().unwrap_or("(no output)"));
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = std::io::stdout().flush();
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// Runs `sessions` VUs at once against the hostile server of `kind`; prints one table row.
async fn client(kind: &str, addr: &str, sessions: u64, (ws_cap, http_cap): (u64, u64)) {
    let steps = match kind {
        "endless-http-body" => "[ { http = { path = \"/\", timeout = \"20s\" } } ]",
        _ => {
            "[ { ws_connect = {} }, { ws_expect = { type = \"agent_started\", timeout = \"8s\" } } ]"
        }
    };
    let text = format!(
        "name = \"hostile\"\n[target]\nbase_url = \"http://{addr}\"\nws_path = \"/\"\nmax_message_bytes = {ws_cap}\nmax_response_bytes = {http_cap}\nconnect_timeout = \"30s\"\n[load]\nvus = {sessions}\niterations = 1\ngraceful_stop = \"30s\"\n[[scenarios]]\nname = \"face\"\nsteps = {steps}\n"
    );
    let plan = Plan::from_text("hostile.toml", &text, &Overrides::default()).unwrap();
    let program = Arc::new(Program::compile(plan).unwrap());
    let before = kib("VmRSS:");
    let (tx, mut rx) = mpsc::channel(64);
    let engine = tokio::spawn(gauntlet_worker::run(
        program,
        RunConfig::default(),
        CancellationToken::new(),
        tx,
    ));
    let mut total = Snapshot::default();
    while let Some(d) = rx.recv().await {
        total.merge(&d.snapshot);
    }
    engine.await.unwrap();
    let peak = kib("VmHWM:");
    let categories: Vec<String> = total
        .failures_by_category()
        .into_iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!(
        "| {kind} | {sessions} | {} | {:.1} MiB | {:.1} MiB | {:.1} KiB | {} KiB |",
        if categories.is_empty() {
            format!("none failed ({} passed)", total.counters.sessions_passed)
        } else {
            categories.join(", ")
        },
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / sessions as f64,
        if kind == "endless-http-body" {
            http_cap
        } else {
            ws_cap
        } / 1024,
    );
}

/// The hostile servers, one port per kind; addresses go to stdout as `KIND ADDR` lines. Runs
/// until its parent closes stdin.
async fn serve(caps: (u64, u64)) {
    for kind in KINDS {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{kind} {}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(hostile(kind, sock, caps));
            }
        });
    }
    let _ = std::io::stdout().flush();
    // The parent's end of stdin closes when it exits.
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut buf = [0u8; 16];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
    })
    .await;
}

async fn hostile(kind: &'static str, mut sock: tokio::net::TcpStream, (ws, http): (u64, u64)) {
    if kind == "endless-http-body" {
        let cap = http as usize;
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        if sock.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("{:x}\r\n{}\r\n", 16384, "x".repeat(16384));
        // Bounded: 4 caps' worth, unless the client leaves first.
        for _ in 0..(4 * cap / 16384 + 1) {
            if sock.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        return;
    }
    let cap = ws as usize;
    if kind == "unfinished-frame" {
        // The upgrade, then a text frame header announcing just under the cap, and its payload
        // trickled until the client gives up.
        let Ok(mut ws) = tokio_tungstenite::accept_async(sock).await else {
            return;
        };
        let _ = ws.flush().await;
        let mut raw = ws.into_inner();
        let len = (cap - 1024) as u64;
        let mut header = vec![0x81u8, 127];
        header.extend(len.to_be_bytes());
        if raw.write_all(&header).await.is_err() {
            return;
        }
        let piece = vec![b'a'; 4096];
        for _ in 0..(len as usize / 4096) {
            if raw.write_all(&piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // One byte short of the frame: it never finishes; hold on until the client leaves.
        let mut byte = [0u8; 1];
        let _ = raw.read(&mut byte).await;
        return;
    }
    let Ok(mut ws) = tokio_tungstenite::accept_async(sock).await else {
        return;
    };
    match kind {
        "near-cap-messages" => {
            let big = "m".repeat(cap - 1024);
            for _ in 0..3 {
                if ws.send(Message::text(big.clone())).await.is_err() {
                    return;
                }
            }
        }
        "over-cap-frame" => {
            let _ = ws.send(Message::text("o".repeat(2 * cap))).await;
        }
        _ => {
            for i in 0..10_000u32 {
                let frame = Message::text(format!("{{\"type\":\"junk\",\"n\":{i}}}"));
                if ws.feed(frame).await.is_err() {
                    return;
                }
            }
            let _ = ws.flush().await;
        }
    }
    // Then silence until the client leaves.
    let _ = ws.next().await;
}

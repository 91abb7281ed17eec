//! The bare tokio-tungstenite echo server (the reference every round-trip figure is compared
//! with): accept, upgrade, echo every data frame, 4 KiB read buffer, no write buffering. It
//! counts the frames it echoed (the harness reads the count between two instants, so every
//! client is measured by the same counter), and can stall once for a while (every frame it
//! gets meanwhile waits), to show coordinated omission. Also: child-process servers with
//! their RSS, and the 200-byte request of the peers' measurements.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Environment variable telling a bench binary which child role to play.
pub const ROLE: &str = "GAUNTLET_BENCH_ROLE";

/// A one-time stall: `at` after the first frame arrives, every frame waits until `at + for_`.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    /// When, after the first frame.
    pub at: Duration,
    /// How long.
    pub length: Duration,
}

/// What the echo server shares between its connections.
#[derive(Debug, Default)]
pub struct Echoed {
    /// Data frames echoed so far.
    pub frames: AtomicU64,
    /// When the first frame arrived, microseconds since `epoch` plus one (0: none yet).
    first_us: AtomicU64,
}

/// The bare loop: accept on 127.0.0.1 (any port, printed on the first line of stdout), upgrade,
/// echo every data frame.
pub async fn echo_server() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    println_port(&listener);
    serve(listener, Arc::default(), None).await;
}

/// Prints the listener's port on a line of its own (how a parent learns it).
#[allow(clippy::print_stdout)]
pub fn println_port(listener: &TcpListener) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    println!("{port}");
}

/// Echoes on `listener` forever, counting into `echoed`, stalling once if `stall` says so.
pub async fn serve(listener: TcpListener, echoed: Arc<Echoed>, stall: Option<Stall>) {
    let epoch = Instant::now();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of file descriptors or the like: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let echoed = echoed.clone();
        tokio::spawn(async move {
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0);
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
            else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if !(msg.is_text() || msg.is_binary()) {
                    continue;
                }
                if let Some(stall) = stall {
                    let now = epoch.elapsed().as_micros() as u64 + 1;
                    let first = match echoed.first_us.compare_exchange(
                        0,
                        now,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => now,
                        Err(first) => first,
                    };
                    let from = Duration::from_micros(first - 1) + stall.at;
                    let elapsed = Duration::from_micros(now - 1);
                    if elapsed >= from && elapsed < from + stall.length {
                        tokio::time::sleep_until(epoch + from + stall.length).await;
                    }
                }
                if ws.send(msg).await.is_err() {
                    return;
                }
                echoed.frames.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Answers each line on stdin with `count N` on stdout: the frames echoed so far. Runs on a
/// thread of its own; when stdin closes (the parent is gone) the process exits.
#[allow(clippy::print_stdout)]
pub fn answer_counts(echoed: Arc<Echoed>) {
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
            println!("count {}", echoed.frames.load(Ordering::Relaxed));
        }
        std::process::exit(0);
    });
}

/// A child process of the bench binary playing a server role; killed when dropped.
#[derive(Debug)]
pub struct Server {
    /// The child.
    pub child: Child,
    /// Its port.
    pub port: u16,
}

impl Server {
    /// Starts the child in `role`; it prints its port on its first line.
    pub fn spawn(role: &str) -> Server {
        let mut child = Command::new(std::env::current_exe().expect("the bench binary"))
            .env(ROLE, role)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a server child");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        Server {
            port: line.trim().parse().expect("the child's port"),
            child,
        }
    }

    /// Resident set size of the child, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

/// `VmRSS` of process `pid`, KiB (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A 200-byte JSON request, as in the peers' measurements.
pub fn request() -> String {
    let base = r#"{"type":"ping","pad":""}"#;
    format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "x".repeat(200 - base.len())
    )
}

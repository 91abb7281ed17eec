//! Shared by the testbed and engine benchmarks: the bare tokio-tungstenite echo server (the
//! reference every figure is compared with), child-process servers with their RSS, and the
//! 200-byte request of the peers' measurements.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Environment variable telling a bench binary which child role to play.
pub const ROLE: &str = "GAUNTLET_BENCH_ROLE";

/// The bare loop: accept, upgrade, echo every data frame. Same read buffer as the testbed.
pub async fn echo_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tokio::spawn(async move {
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0);
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
            else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// A child process of the bench binary playing a server role; killed when dropped.
pub struct Server {
    /// The child.
    pub child: Child,
    /// Its port.
    pub port: u16,
}

impl Server {
    /// Starts the child in `role`; it prints its port on its first line.
    pub fn spawn(role: &str) -> Server {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, role)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Server {
            port: line.trim().parse().unwrap(),
            child,
        }
    }

    /// Resident set size of the child, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
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

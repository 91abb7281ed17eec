//! The bare tokio-tungstenite client loop, the limit every client is compared with: N
//! connections (4 KiB read buffer, no write buffering), each sending the 200-byte request and
//! waiting for its answer, in a loop. It counts round trips, and can record each one's latency
//! (from just before the send to the answer) into an HdrHistogram; paced, it waits for each
//! connection's next planned send and measures from the actual send, as naive tools do (it
//! omits what a stalled target delayed: coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::echo::request;

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens `conns` WebSocket connections to `host:port` (path `path`), one after the other.
pub async fn connect(host: &str, port: u16, path: &str, conns: usize) -> std::io::Result<Vec<Ws>> {
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            format!("ws://{host}:{port}{path}"),
            tcp,
            Some(config),
        )
        .await
        .map_err(std::io::Error::other)?;
        sockets.push(ws);
    }
    Ok(sockets)
}

/// Round trips per second of `conns` connections to `127.0.0.1:port`, counted for `seconds`
/// after a warm-up of `warmup`.
pub async fn round_trips(port: u16, conns: usize, warmup: Duration, seconds: u64) -> f64 {
    let sockets = connect("127.0.0.1", port, "/", conns)
        .await
        .expect("connect to the echo server");
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
                    if ws.send(Message::Text(body.clone().into())).await.is_err() {
                        return;
                    }
                    loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(_))) => break,
                            Some(Ok(_)) => continue,
                            _ => return,
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
    tokio::time::sleep(warmup).await;
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

/// How [`latencies`] sends.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Each connection sends again as soon as its answer arrives.
    Closed,
    /// Each connection plans a send every `interval` and, when an answer comes late, sends the
    /// next at once; a latency counts from the actual send.
    Every(Duration),
}

/// Latencies (microseconds) of round trips on `conns` connections to `host:port/path` for
/// `length`, the first `warmup` of it not recorded.
pub async fn latencies(
    (host, port, path): (&str, u16, &str),
    conns: usize,
    pace: Pace,
    warmup: Duration,
    length: Duration,
) -> std::io::Result<Histogram<u64>> {
    let sockets = connect(host, port, path, conns).await?;
    let start = Instant::now();
    let (record_from, end) = (start + warmup, start + length);
    let body = request();
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let body = body.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new(3).expect("a histogram of 3 digits");
                // Paced connections start spread over one interval.
                let mut next = match pace {
                    Pace::Closed => start,
                    Pace::Every(d) => start + d.mul_f64(i as f64 / conns.max(1) as f64),
                };
                loop {
                    if let Pace::Every(d) = pace {
                        tokio::time::sleep_until(next).await;
                        next += d;
                    }
                    let sent = Instant::now();
                    if sent >= end || ws.send(Message::Text(body.clone().into())).await.is_err() {
                        break;
                    }
                    let answered = loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(_))) => break true,
                            Some(Ok(_)) => continue,
                            _ => break false,
                        }
                    };
                    if !answered {
                        break;
                    }
                    if sent >= record_from {
                        let _ = h.record(sent.elapsed().as_micros().max(1) as u64);
                    }
                    // A late answer: the naive loop sends the next at once, the missed ones never.
                    if let Pace::Every(_) = pace
                        && next < Instant::now()
                    {
                        next = Instant::now();
                    }
                }
                let _ = ws.close(None).await;
                h
            })
        })
        .collect();
    let mut total = Histogram::<u64>::new(3).expect("a histogram of 3 digits");
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = total.add(&h);
        }
    }
    Ok(total)
}

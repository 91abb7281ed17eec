//! The bare session-setup client, the limit `bench/run.py`'s session-setup cell is compared
//! with: an open model of `rate` arrivals per second, each minting an HS256 JWT (the same
//! `jsonwebtoken` crate and claims as gauntlet's worker), connecting, upgrading with the token
//! as a bearer header, reading the confirmation frame (JSON, `/data/event` checked), then
//! closing and waiting for the server's close. Nothing is recorded but counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What [`run`] counted.
#[derive(Debug, Default)]
pub struct Counts {
    /// Sessions confirmed and closed cleanly.
    pub passed: AtomicU64,
    /// Anything else.
    pub failed: AtomicU64,
}

/// `rate` arrivals per second for `length` against `ws://127.0.0.1:port/ws`, each a session of
/// its own user; waits until every session has ended.
pub async fn run(port: u16, rate: u32, length: Duration, secret: &str) -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    let key = Arc::new(EncodingKey::from_secret(secret.as_bytes()));
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = Instant::now() + length;
    let mut tasks = tokio::task::JoinSet::new();
    let mut arrival = 0u64;
    loop {
        tick.tick().await;
        if Instant::now() >= end {
            break;
        }
        let (counts, key, url) = (counts.clone(), key.clone(), url.clone());
        tasks.spawn(async move {
            let ok = session(&url, port, &key, arrival).await.is_some();
            let c = if ok { &counts.passed } else { &counts.failed };
            c.fetch_add(1, Ordering::Relaxed);
        });
        arrival += 1;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    counts
}

/// One session; `None` on any failure.
async fn session(url: &str, port: u16, key: &EncodingKey, arrival: u64) -> Option<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let claims = serde_json::json!({
        "sub": format!("user-{arrival}"),
        "iss": "netra-auth-service",
        "token_type": "access",
        "iat": now,
        "exp": now + 3600,
        "jti": arrival.to_string(),
    });
    let token = jsonwebtoken::encode(&Header::default(), &claims, key).ok()?;
    let mut request = url.into_client_request().ok()?;
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
    );
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    tcp.set_nodelay(true).ok()?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
        .await
        .ok()?;
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).ok()?;
                if v.pointer("/data/event")? != "connection_established" {
                    return None;
                }
                break;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
    ws.close(None).await.ok()?;
    // The server's close ends the stream.
    while let Some(m) = ws.next().await {
        m.ok()?;
    }
    Some(())
}

//! Helpers for the testbed's integration tests: start a testbed on port 0, mint tokens, connect
//! real tokio-tungstenite clients, and make raw HTTP requests.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use gauntlet_testbed::config::Secret;
use gauntlet_testbed::{Testbed, TestbedConfig};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-please-ignore";
/// Every wait in these tests is bounded by this; a passing test never comes near it.
pub const LIMIT: Duration = Duration::from_secs(20);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A config with the test secret, no pipeline delay and no keepalive pings.
pub fn config() -> TestbedConfig {
    let mut c = TestbedConfig::default();
    c.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    c.pipeline.delay = gauntlet_testbed::delay::Delay::ZERO;
    c.websocket.keepalive_interval = Duration::ZERO;
    c
}

pub async fn start(config: TestbedConfig) -> Testbed {
    Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims the reference staging suite put in its tokens.
pub fn claims(sub: &str) -> Value {
    json!({
        "sub": sub, "email": format!("{sub}@example.com"), "permissions": ["read", "write"],
        "iat": now(), "exp": now() + 900, "token_type": "access",
        "iss": "netra-auth-service", "jti": format!("jti-{sub}-{}", now()),
    })
}

pub fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn token(sub: &str) -> String {
    sign(&claims(sub))
}

#[derive(Clone, Copy, Debug)]
pub enum Placement {
    Header,
    Subprotocol,
    Query,
}

pub async fn connect_with(
    tb: &Testbed,
    jwt: Option<&str>,
    placement: Placement,
    extra_query: &str,
) -> Result<(Ws, Response<Option<Vec<u8>>>), tungstenite::Error> {
    let mut url = tb.ws_url();
    if let (Some(t), Placement::Query) = (jwt, placement) {
        url = format!("{url}?token={t}");
    }
    if !extra_query.is_empty() {
        url = format!(
            "{url}{}{extra_query}",
            if url.contains('?') { '&' } else { '?' }
        );
    }
    let mut req = url.into_client_request().unwrap();
    match (jwt, placement) {
        (Some(t), Placement::Header) => {
            req.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        (Some(t), Placement::Subprotocol) => {
            let entry = format!(
                "jwt.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)
            );
            req.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&entry).unwrap(),
            );
        }
        _ => {}
    }
    tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect timed out")
}

pub async fn connect(tb: &Testbed, sub: &str) -> Ws {
    connect_with(tb, Some(&token(sub)), Placement::Header, "")
        .await
        .unwrap()
        .0
}

/// What the next thing on the socket is.
#[derive(Debug)]
pub enum Next {
    Json(Value),
    Close(u16, String),
    /// The TCP connection ended without a close frame.
    Gone,
}

pub async fn next(ws: &mut Ws) -> Next {
    loop {
        let msg = tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("nothing arrived in time");
        return match msg {
            Some(Ok(Message::Text(t))) => {
                Next::Json(serde_json::from_str(&t).expect("server sent invalid JSON"))
            }
            Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                Next::Close(code.into(), reason.to_string())
            }
            Some(Ok(Message::Close(None))) => Next::Close(1005, String::new()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(_)) | None => Next::Gone,
        };
    }
}

pub async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Next::Json(v) => v,
        other => panic!("expected a JSON frame, got {other:?}"),
    }
}

pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    match next(ws).await {
        Next::Close(code, reason) => (code, reason),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

pub async fn send_json(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// Connects and reads the confirmation frame.
pub async fn established(tb: &Testbed, sub: &str) -> Ws {
    let mut ws = connect(tb, sub).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["data"]["event"], "connection_established", "{hello}");
    ws
}

/// A raw HTTP/1.1 request; returns (status, JSON body).
pub async fn http(
    tb: &Testbed,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(tb.addr()).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        tb.addr(),
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{path}: body is not JSON ({e}): {body:?}"));
    (status, json)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A raw client: sends the upgrade request by hand and returns the socket with the response
/// head read. It answers nothing on its own (no pongs, no close replies).
pub async fn raw_upgrade(tb: &Testbed, sub: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(tb.addr()).await.unwrap();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        token(sub)
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// A client-to-server text frame (masked with a zero key, so the payload stays readable).
pub fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// Reads until the server closes the TCP connection; returns the close code of the last close
/// frame it sent.
pub async fn read_until_closed(tcp: &mut TcpStream) -> u16 {
    let mut bytes = Vec::new();
    tokio::time::timeout(LIMIT, tcp.read_to_end(&mut bytes))
        .await
        .expect("server never closed")
        .unwrap();
    let at = bytes
        .windows(2)
        .rposition(|w| w[0] == 0x88)
        .expect("no close frame");
    u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])
}

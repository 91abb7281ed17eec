//! The client side of the WebSocket upgrade (RFC 6455, section 4.1), done here rather than by
//! tungstenite's handshake machine, so a connection starts with only the bytes it needs.
//!
//! tungstenite's machine keeps 8 KiB per connecting session (a 4 KiB read chunk and a 4 KiB
//! buffer), then hands that 4 KiB buffer on as the open connection's read buffer for its whole
//! life, whatever `read_buffer_size` says. Here the response head is read into a buffer that
//! starts at [`HEAD_STEP`] bytes, grows by as much and is dropped once parsed; what followed
//! the head is the connection's first bytes.
//!
//! The request is written straight from the plan's URL and headers ([`UpgradeRequest`]): the
//! bytes tungstenite's `generate_request` wrote for the same `http::Request`, without building
//! one (a URL parsed again, a header map, formatting: 4 % of a pipeline session's CPU). The
//! key, the accept key, the checks of the reply and the errors are tungstenite's own
//! ([`generate_key`], [`derive_accept_key`], its error values), with its limits on the head's
//! size and reads.

use std::io::Write as _;

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError, UrlError};
use tokio_tungstenite::tungstenite::handshake::client::{Response, generate_key};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// The most a response head may take, in bytes and in reads, and after 64 reads the least
/// they must average (tungstenite's limits: a peer cannot drip its head a byte at a time).
const MAX_HEAD: usize = 64 * 1024;
const MAX_READS: usize = 512;
const DRIP_READS: usize = 64;
const DRIP_BYTES: usize = 128;
/// The most header lines a response head may have (tungstenite's limit).
const MAX_HEADERS: usize = 124;
/// What the head's buffer starts at and grows by: a `101` response takes 130-250 bytes.
const HEAD_STEP: usize = 512;
/// How much of a refusal's body is kept (what of it is already there: tungstenite's read of
/// 4 KiB gave as much).
const REFUSAL_BODY: usize = 4096;

/// The headers the upgrade sets itself, written first and in this order (tungstenite's).
const OWN: [&str; 5] = [
    "Host",
    "Connection",
    "Upgrade",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Key",
];

/// The longest URL an upgrade is written for (`http::Uri`'s limit).
const MAX_URL: usize = u16::MAX as usize - 1;

/// An upgrade request, written: its bytes, the key its reply must answer and the
/// subprotocols it offers.
pub(super) struct UpgradeRequest {
    bytes: Vec<u8>,
    key_at: std::ops::Range<usize>,
    offered: Option<Vec<String>>,
}

/// Why a request could not be written.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RequestError {
    /// The URL cannot be upgraded (its scheme, no host).
    Url(String),
    /// The header of that name has a value HTTP does not allow (a control character).
    Header(String),
}

impl UpgradeRequest {
    /// Writes the upgrade for `url`: `GET` of its path and query, the five headers of the
    /// upgrade (`Host` from the URL without user information, a fresh key), then `extra`
    /// (name, value), names as plan compilation checked them.
    ///
    /// As `http::HeaderMap::insert` did, a name given again in any case replaces the earlier
    /// value where it stood, one of the five included. Other names are written in lower case,
    /// but `Sec-WebSocket-Protocol` and `Origin`, as tungstenite wrote them.
    pub(super) fn new<V: AsRef<str>>(
        url: &url::Url,
        extra: &[(&str, V)],
    ) -> Result<Self, RequestError> {
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(RequestError::Url(
                UrlError::UnsupportedUrlScheme.to_string(),
            ));
        }
        // `http::Uri`'s limit, which the URL passed through before.
        if url.as_str().len() > MAX_URL {
            return Err(RequestError::Url(format!("longer than {MAX_URL} bytes")));
        }
        let host = match url.host_str() {
            None => return Err(RequestError::Url(UrlError::NoHostName.to_string())),
            Some("") => return Err(RequestError::Url(UrlError::EmptyHostName.to_string())),
            Some(h) => h,
        };
        // The value each name ends with: the last given.
        let last = |i: usize| {
            let name = extra[i].0;
            extra[i..]
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map_or("", |(_, v)| v.as_ref())
        };
        let given = |own: &str| {
            let i = extra
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(own))?;
            Some(last(i))
        };
        for (name, value) in extra {
            // What `http::HeaderValue` allows; the upgrade's own five were written as text
            // (`HeaderValue::to_str`), so a value replacing one is visible ASCII.
            let own = OWN.iter().any(|own| own.eq_ignore_ascii_case(name));
            let allowed = if own { visible } else { field_byte };
            if !value.as_ref().bytes().all(allowed) {
                return Err(RequestError::Header((*name).to_owned()));
            }
        }
        let key = generate_key();
        let mut bytes = Vec::with_capacity(
            160 + url.path().len()
                + url.query().map_or(0, |q| q.len() + 1)
                + host.len()
                + extra
                    .iter()
                    .map(|(n, v)| n.len() + v.as_ref().len() + 4)
                    .sum::<usize>(),
        );
        bytes.extend_from_slice(b"GET ");
        bytes.extend_from_slice(url.path().as_bytes());
        if let Some(q) = url.query() {
            bytes.push(b'?');
            bytes.extend_from_slice(q.as_bytes());
        }
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        let mut key_at = 0..0;
        for (i, own) in OWN.iter().enumerate() {
            bytes.extend_from_slice(own.as_bytes());
            bytes.extend_from_slice(b": ");
            let at = bytes.len();
            match (given(own), i) {
                (Some(v), _) => bytes.extend_from_slice(v.as_bytes()),
                (None, 0) => {
                    bytes.extend_from_slice(host.as_bytes());
                    // The URL names its port only when it is not its scheme's.
                    if let Some(port) = url.port() {
                        let _ = write!(bytes, ":{port}");
                    }
                }
                (None, 1) => bytes.extend_from_slice(b"Upgrade"),
                (None, 2) => bytes.extend_from_slice(b"websocket"),
                (None, 3) => bytes.extend_from_slice(b"13"),
                (None, _) => bytes.extend_from_slice(key.as_bytes()),
            }
            if i == OWN.len() - 1 {
                key_at = at..bytes.len();
            }
            bytes.extend_from_slice(b"\r\n");
        }
        let mut offered = None;
        for (i, (name, _)) in extra.iter().enumerate() {
            let first = extra[..i]
                .iter()
                .all(|(n, _)| !n.eq_ignore_ascii_case(name));
            if !first || OWN.iter().any(|own| own.eq_ignore_ascii_case(name)) {
                continue;
            }
            let value = last(i);
            if name.eq_ignore_ascii_case("Sec-WebSocket-Protocol") {
                bytes.extend_from_slice(b"Sec-WebSocket-Protocol");
                offered = Some(subprotocols(name, value)?);
            } else if name.eq_ignore_ascii_case("Origin") {
                bytes.extend_from_slice(b"Origin");
            } else {
                bytes.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
            }
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        Ok(UpgradeRequest {
            bytes,
            key_at,
            offered,
        })
    }
}

/// A byte `http::HeaderValue` allows in a value: anything but control characters (tab aside).
fn field_byte(b: u8) -> bool {
    (b >= 32 && b != 127) || b == b'\t'
}

/// A byte `http::HeaderValue::to_str` reads as text: visible ASCII, space or tab.
fn visible(b: u8) -> bool {
    (32..127).contains(&b) || b == b'\t'
}

/// The subprotocols a `Sec-WebSocket-Protocol` value offers (comma-separated); `Err` unless
/// it is visible ASCII (what `http::HeaderValue::to_str` accepts).
fn subprotocols(name: &str, value: &str) -> Result<Vec<String>, RequestError> {
    if !value.bytes().all(visible) {
        return Err(RequestError::Header(name.to_owned()));
    }
    Ok(value.split(',').map(|s| s.trim().to_owned()).collect())
}

/// Sends the upgrade `request` over `io` and reads the reply. `101` with the right headers:
/// the open WebSocket. Any other status: [`WsError::Http`] with the status and up to
/// [`REFUSAL_BODY`] bytes of the body, of what has arrived by then (as tungstenite gives it).
pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    request: UpgradeRequest,
    config: WebSocketConfig,
) -> Result<WebSocketStream<S>, WsError> {
    let UpgradeRequest {
        bytes,
        key_at,
        offered: wanted,
    } = request;
    let accept = derive_accept_key(&bytes[key_at]);
    // As tungstenite logged it (and as the binary's log masking reads it): the request,
    // debug-escaped, at trace level.
    tracing::trace!("Request: {:?}", String::from_utf8_lossy(&bytes));
    io.write_all(&bytes).await?;
    io.flush().await?;
    drop(bytes);
    let mut head = Vec::with_capacity(HEAD_STEP);
    let mut reads = 0;
    let (size, status) = loop {
        if head.len() == head.capacity() {
            head.reserve_exact(HEAD_STEP);
        }
        if io.read_buf(&mut head).await? == 0 {
            return Err(WsError::Protocol(ProtocolError::HandshakeIncomplete));
        }
        reads += 1;
        if head.len() > MAX_HEAD
            || reads > MAX_READS
            || (reads > DRIP_READS && reads * DRIP_BYTES > head.len())
        {
            return Err(WsError::AttackAttempt);
        }
        if let Some(parsed) = parse(&head, &accept, wanted.as_deref())? {
            break parsed;
        }
    };
    let mut tail = head[size..].to_vec();
    drop(head);
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // The head was read in small steps; what else of the body has arrived is taken
        // without waiting for more.
        if tail.len() < REFUSAL_BODY {
            tail.reserve_exact(REFUSAL_BODY - tail.len());
            while tail.len() < REFUSAL_BODY {
                match io.read_buf(&mut tail).now_or_never() {
                    Some(Ok(n)) if n > 0 => {}
                    _ => break,
                }
            }
        }
        let mut response = Response::new(Some(tail));
        *response.status_mut() = status;
        return Err(WsError::Http(Box::new(response)));
    }
    Ok(WebSocketStream::from_partially_read(io, tail, Role::Client, Some(config)).await)
}

/// The response head in `buf`: `None` while incomplete; once complete, its length and status,
/// a `101` only if its headers complete the upgrade (RFC 6455, 4.1: `Upgrade: websocket`,
/// `Connection: Upgrade`, the accept key, a subprotocol only if one was offered and one of
/// those). Synchronous, so the header table never lives in a connecting session's future.
fn parse(
    buf: &[u8],
    accept: &str,
    wanted: Option<&[String]>,
) -> Result<Option<(usize, StatusCode)>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let size = match response.parse(buf)? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(size) => size,
    };
    if response.version.unwrap_or(0) < 1 {
        return Err(WsError::Protocol(ProtocolError::WrongHttpVersion));
    }
    let status = StatusCode::from_u16(response.code.unwrap_or(0))?;
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Some((size, status)));
    }
    // The first header of that name, as `http::HeaderMap::get` gives it.
    let first = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let is = |name: &str, want: &str| {
        first(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(want))
    };
    if !is("Upgrade", "websocket") {
        return Err(WsError::Protocol(
            ProtocolError::MissingUpgradeWebSocketHeader,
        ));
    }
    if !is("Connection", "Upgrade") {
        return Err(WsError::Protocol(
            ProtocolError::MissingConnectionUpgradeHeader,
        ));
    }
    if first("Sec-WebSocket-Accept") != Some(accept.as_bytes()) {
        return Err(WsError::Protocol(
            ProtocolError::SecWebSocketAcceptKeyMismatch,
        ));
    }
    let refused = match (first("Sec-WebSocket-Protocol"), wanted) {
        (None, Some(_)) => Some(SubProtocolError::NoSubProtocol),
        (Some(_), None) => Some(SubProtocolError::ServerSentSubProtocolNoneRequested),
        (Some(chosen), Some(offered)) if !offered.iter().any(|p| p.as_bytes() == chosen) => {
            Some(SubProtocolError::InvalidSubProtocol)
        }
        _ => None,
    };
    if let Some(e) = refused {
        return Err(WsError::Protocol(
            ProtocolError::SecWebSocketSubProtocolError(e),
        ));
    }
    Ok(Some((size, status)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::spill::Spill;
    use futures_util::StreamExt;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{DuplexStream, ReadBuf};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    fn request(subprotocol: Option<&str>) -> UpgradeRequest {
        let url = url::Url::parse("ws://target.test/ws").unwrap();
        let extra: Vec<(&str, &str)> = subprotocol
            .map(|p| ("Sec-WebSocket-Protocol", p))
            .into_iter()
            .collect();
        UpgradeRequest::new(&url, &extra).unwrap()
    }

    /// What tungstenite's `generate_request` writes for `url` with `extra` inserted into its
    /// header map in order and `key` as the key: the request line and the upgrade's five
    /// headers in order, then the other header lines sorted (its map reorders them).
    fn as_tungstenite_writes(url: &str, extra: &[(&str, &str)], key: &str) -> Vec<String> {
        use tokio_tungstenite::tungstenite::handshake::client::generate_request;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut r = url.into_client_request().unwrap();
        r.headers_mut()
            .insert("Sec-WebSocket-Key", HeaderValue::from_str(key).unwrap());
        for (k, v) in extra {
            r.headers_mut().insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        lines(&generate_request(r).unwrap().0)
    }

    /// A request's lines: the first six in order, the rest sorted.
    fn lines(bytes: &[u8]) -> Vec<String> {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
        let mut lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
        lines[6..].sort();
        lines
    }

    #[test]
    fn requests_are_what_tungstenite_wrote() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("ws://target.test/ws", &[]),
            (
                "ws://127.0.0.1:8080/ws?a=1&b=x%20y",
                &[("Authorization", "Bearer t.k.n")],
            ),
            (
                "wss://u:p@target.test:443/deep/path",
                &[("X-Trace", "é \t1")],
            ),
            (
                "ws://[::1]:9/",
                &[("origin", "https://o"), ("sec-websocket-protocol", "a, b")],
            ),
            (
                "ws://h.test:81/x#frag",
                &[
                    ("X-A", "1"),
                    ("Host", "other.test"),
                    ("x-a", "2"),
                    ("X-B", ""),
                    ("Sec-WebSocket-Version", "8"),
                    ("USER-agent", "me"),
                ],
            ),
        ];
        for (url, extra) in cases {
            // As the session had it: the URL as the url crate writes it (no default port).
            let url = url::Url::parse(url).unwrap();
            let ours = UpgradeRequest::new(&url, extra).unwrap();
            let key = std::str::from_utf8(&ours.bytes[ours.key_at.clone()]).unwrap();
            assert_eq!(key.len(), 24, "a fresh key: 16 bytes in base64");
            assert_eq!(
                lines(&ours.bytes),
                as_tungstenite_writes(url.as_str(), extra, key),
                "{url} {extra:?}"
            );
        }
        // The upgrade's own headers replaced in any case, by visible ASCII only.
        let url = url::Url::parse("ws://h.test/").unwrap();
        let extra = [
            ("connection", "keep-alive, Upgrade"),
            ("UPGRADE", "WebSocket"),
            ("sec-websocket-key", "x"),
        ];
        let ours = UpgradeRequest::new(&url, &extra).unwrap();
        let key = std::str::from_utf8(&ours.bytes[ours.key_at.clone()]).unwrap();
        assert_eq!(key, "x");
        assert_eq!(
            lines(&ours.bytes),
            as_tungstenite_writes(url.as_str(), &extra, key)
        );
        for own in OWN {
            assert_eq!(
                UpgradeRequest::new(&url, &[(own, "\u{e9}")]).map(|_| ()),
                Err(RequestError::Header(own.into())),
                "tungstenite wrote {own} as text"
            );
        }
        let long = url::Url::parse(&format!("ws://h.test/{}", "a".repeat(MAX_URL))).unwrap();
        assert!(matches!(
            UpgradeRequest::new(&long, &[] as &[(&str, &str)]),
            Err(RequestError::Url(_))
        ));
        // A key the plan sets is the key; names repeated keep their first place.
        let url = url::Url::parse("ws://h.test/").unwrap();
        let extra = [
            ("x-z", "1"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("X-Y", "2"),
            ("X-Z", "3"),
        ];
        let ours = UpgradeRequest::new(&url, &extra).unwrap();
        assert_eq!(
            &ours.bytes[ours.key_at.clone()],
            b"dGhlIHNhbXBsZSBub25jZQ=="
        );
        let text = String::from_utf8(ours.bytes.clone()).unwrap();
        assert!(text.ends_with("\r\nx-z: 3\r\nx-y: 2\r\n\r\n"), "{text:?}");
        assert_eq!(
            ours.offered, None,
            "no subprotocol offered unless the header is there"
        );
    }

    #[test]
    fn values_http_forbids_and_urls_without_a_host_are_refused() {
        use tokio_tungstenite::tungstenite::http::HeaderValue;
        let url = url::Url::parse("ws://h.test/").unwrap();
        for c in (0u8..128).map(char::from).chain(['é', '\u{7ff}']) {
            let value = format!("a{c}b");
            let ours = UpgradeRequest::new(&url, &[("X-V", value.as_str())]).map(|_| ());
            match HeaderValue::from_str(&value) {
                Ok(_) => assert_eq!(ours, Ok(()), "{c:?}"),
                Err(_) => assert_eq!(ours, Err(RequestError::Header("X-V".into())), "{c:?}"),
            }
        }
        let offered = UpgradeRequest::new(&url, &[("Sec-WebSocket-Protocol", "a, é")]);
        assert_eq!(
            offered.map(|_| ()),
            Err(RequestError::Header("Sec-WebSocket-Protocol".into())),
            "offered subprotocols are visible ASCII"
        );
        let offered = UpgradeRequest::new(&url, &[("sec-websocket-protocol", " a ,b")]).unwrap();
        assert_eq!(offered.offered, Some(vec!["a".to_owned(), "b".to_owned()]));
        // (A `ws://` URL always has a host: the url crate parses none without one.)
        let url = url::Url::parse("http://h.test/").unwrap();
        assert!(matches!(
            UpgradeRequest::new(&url, &[] as &[(&str, &str)]),
            Err(RequestError::Url(_))
        ));
    }

    /// Reads the request's head off `peer` and returns the accept key its key asks for.
    async fn read_request(peer: &mut DuplexStream) -> (String, String) {
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            peer.read_exact(&mut byte).await.unwrap();
            got.push(byte[0]);
        }
        let head = String::from_utf8(got).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = derive_accept_key(key.trim().as_bytes());
        (head, accept)
    }

    /// Runs the upgrade against a peer that answers `reply(accept key)` and closes; returns
    /// the result and the request's head as the peer read it.
    async fn against(
        subprotocol: Option<&str>,
        reply: impl FnOnce(&str) -> Vec<u8> + Send + 'static,
    ) -> (
        Result<WebSocketStream<Spill<DuplexStream>>, WsError>,
        String,
    ) {
        let (mut peer, io) = tokio::io::duplex(256 * 1024);
        let server = tokio::spawn(async move {
            let (head, accept) = read_request(&mut peer).await;
            peer.write_all(&reply(&accept)).await.unwrap();
            // Then it goes away: what it wrote can still be read, then the stream ends.
            head
        });
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            // As a session does it: through the byte stream's scratch buffer.
            upgrade(
                Spill::new(io),
                request(subprotocol),
                WebSocketConfig::default(),
            ),
        )
        .await
        .expect("the upgrade ends, whatever the peer sent");
        (result, server.await.unwrap())
    }

    fn switching(accept: &str, extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    /// The request is tungstenite's; a `101` with the right key opens the socket, and a frame
    /// that arrived with the head is the first message read.
    #[tokio::test]
    async fn a_101_opens_and_bytes_after_the_head_are_the_first_frame() {
        let (result, head) = against(None, |accept| {
            let mut reply = switching(accept, "");
            // An unmasked text frame "hi" from the server, in the same write as the head.
            reply.extend_from_slice(&[0x81, 2, b'h', b'i']);
            reply
        })
        .await;
        assert!(
            head.starts_with("GET /ws HTTP/1.1\r\nHost: target.test\r\n"),
            "{head}"
        );
        assert!(head.contains("Upgrade: websocket\r\n"), "{head}");
        assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
        let mut ws = result.unwrap();
        let first = ws.next().await.unwrap().unwrap();
        assert_eq!(first, Message::text("hi"));
    }

    /// Any other status is the handshake's rejection, with its status and the body that came
    /// with the head.
    #[tokio::test]
    async fn a_403_is_the_status_with_its_body() {
        let (result, _) = against(None, |_| {
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 12\r\n\r\ninvalid user".to_vec()
        })
        .await;
        match result {
            Err(WsError::Http(r)) => {
                assert_eq!(r.status(), StatusCode::FORBIDDEN);
                assert_eq!(r.body().as_deref(), Some(&b"invalid user"[..]));
            }
            other => panic!("expected the 403, got {:?}", other.map(|_| ())),
        }
    }

    /// A reply that does not complete the upgrade is refused with tungstenite's error.
    #[tokio::test]
    async fn replies_that_do_not_complete_the_upgrade_are_refused() {
        let protocol = |r: Result<WebSocketStream<Spill<DuplexStream>>, WsError>| match r {
            Err(WsError::Protocol(p)) => p,
            other => panic!("expected a protocol error, got {:?}", other.map(|_| ())),
        };
        /// The subprotocols offered, the reply to the accept key, the error expected.
        type Refusal = (Option<&'static str>, fn(&str) -> Vec<u8>, ProtocolError);
        let refusals: [Refusal; 6] = [
            (
                None,
                |_| switching("d3Jvbmc=", ""),
                ProtocolError::SecWebSocketAcceptKeyMismatch,
            ),
            (
                None,
                |a| {
                    format!(
                        "HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {a}\r\n\r\n"
                    )
                    .into_bytes()
                },
                ProtocolError::MissingUpgradeWebSocketHeader,
            ),
            (
                None,
                |a| {
                    format!(
                        "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {a}\r\n\r\n"
                    )
                    .into_bytes()
                },
                ProtocolError::MissingConnectionUpgradeHeader,
            ),
            (
                None,
                |a| switching(a, "Sec-WebSocket-Protocol: chat\r\n"),
                ProtocolError::SecWebSocketSubProtocolError(
                    SubProtocolError::ServerSentSubProtocolNoneRequested,
                ),
            ),
            (
                Some("a, b"),
                |a| switching(a, ""),
                ProtocolError::SecWebSocketSubProtocolError(SubProtocolError::NoSubProtocol),
            ),
            (
                Some("a, b"),
                |a| switching(a, "Sec-WebSocket-Protocol: c\r\n"),
                ProtocolError::SecWebSocketSubProtocolError(SubProtocolError::InvalidSubProtocol),
            ),
        ];
        for (offered, reply, want) in refusals {
            let (r, _) = against(offered, reply).await;
            assert_eq!(protocol(r), want);
        }
        let (r, head) = against(Some("a, b"), |a| {
            switching(a, "Sec-WebSocket-Protocol: b\r\n")
        })
        .await;
        assert!(head.contains("Sec-WebSocket-Protocol: a, b\r\n"), "{head}");
        assert!(r.is_ok());
        let (r, _) = against(None, |_| b"HTTP/1.1 101 OK\r\nBad Header\r\n\r\n".to_vec()).await;
        assert!(matches!(
            r,
            Err(WsError::Protocol(ProtocolError::HttparseError(_)))
        ));
    }

    /// A peer that ends mid-head, or whose head never ends, is stopped: the first as an
    /// incomplete handshake, the second at 64 KiB.
    #[tokio::test]
    async fn a_head_cut_short_or_without_end_is_refused() {
        let (r, _) = against(None, |_| b"HTTP/1.1 101 Switching".to_vec()).await;
        assert!(matches!(
            r,
            Err(WsError::Protocol(ProtocolError::HandshakeIncomplete))
        ));
        let (r, _) = against(None, |_| {
            let mut endless = b"HTTP/1.1 200 OK\r\nX-Filler: ".to_vec();
            endless.resize(MAX_HEAD + 1024, b'a');
            endless
        })
        .await;
        assert!(
            matches!(r, Err(WsError::AttackAttempt)),
            "{:?}",
            r.map(|_| ())
        );
    }

    /// A refusal whose head is longer than the head buffer's first step keeps its body, up to
    /// 4 KiB of what has arrived, as tungstenite's 4 KiB reads did.
    #[tokio::test]
    async fn a_refusal_with_a_long_head_keeps_its_body() {
        let body: String = "no such user; ".repeat(150);
        let sent = body.clone();
        let (result, _) = against(None, move |_| {
            let cookie = "c".repeat(700);
            format!(
                "HTTP/1.1 403 Forbidden\r\nSet-Cookie: {cookie}\r\nContent-Length: {}\r\n\r\n{sent}",
                sent.len()
            )
            .into_bytes()
        })
        .await;
        match result {
            Err(WsError::Http(r)) => {
                assert_eq!(r.status(), StatusCode::FORBIDDEN);
                assert_eq!(r.body().as_deref(), Some(body.as_bytes()));
            }
            other => panic!("expected the 403, got {:?}", other.map(|_| ())),
        }
    }

    /// Header names and the `Upgrade` and `Connection` values match whatever their case.
    #[tokio::test]
    async fn header_names_and_values_match_in_any_case() {
        let (r, _) = against(None, |accept| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nCONNECTION: upgrade\r\n\
                 sec-websocket-accept: {accept}\r\n\r\n"
            )
            .into_bytes()
        })
        .await;
        assert!(r.is_ok(), "{:?}", r.map(|_| ()));
    }

    /// A peer that hands its head over a byte at a time (and reads nothing).
    struct Drip(Vec<u8>, usize);

    impl AsyncRead for Drip {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let at = self.1;
            if let Some(b) = self.0.get(at) {
                buf.put_slice(&[*b]);
                self.1 += 1;
            }
            Poll::Ready(Ok(()))
        }
    }

    /// A head dripped a byte at a time is refused once 64 reads average under 128 bytes,
    /// long before the 64 KiB limit.
    #[tokio::test]
    async fn a_head_dripped_a_byte_at_a_time_is_refused() {
        let mut head = b"HTTP/1.1 200 OK\r\nX-Filler: ".to_vec();
        head.resize(4096, b'a');
        // What the upgrade writes goes nowhere.
        let mut drip = tokio::io::join(Drip(head, 0), tokio::io::sink());
        let r = upgrade(&mut drip, request(None), WebSocketConfig::default()).await;
        assert!(
            matches!(r, Err(WsError::AttackAttempt)),
            "{:?}",
            r.map(|_| ())
        );
        assert_eq!(
            drip.reader().1,
            DRIP_READS + 1,
            "stopped at the first read past the threshold"
        );
    }
}

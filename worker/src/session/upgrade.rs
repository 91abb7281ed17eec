//! The client side of the WebSocket upgrade (RFC 6455, section 4.1), done here rather than by
//! tungstenite's handshake machine, so a connection starts with only the bytes it needs.
//!
//! tungstenite's machine keeps 8 KiB per connecting session (a 4 KiB read chunk and a 4 KiB
//! buffer), then hands that 4 KiB buffer on as the open connection's read buffer for its whole
//! life, whatever `read_buffer_size` says. Here the response head is read into a buffer that
//! starts at [`HEAD_STEP`] bytes, grows by as much and is dropped once parsed; what followed
//! the head is the connection's first bytes. The request, the checks of the reply and the
//! errors are tungstenite's own ([`generate_request`], [`derive_accept_key`], its error
//! values), with its limits on the head's size and reads.

use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::uri_mode;
use tokio_tungstenite::tungstenite::error::{ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response, generate_request};
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

/// Sends the upgrade `request` over `io` and reads the reply. `101` with the right headers:
/// the open WebSocket. Any other status: [`WsError::Http`] with the status and up to
/// [`REFUSAL_BODY`] bytes of the body, of what has arrived by then (as tungstenite gives it).
pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    request: Request,
    config: WebSocketConfig,
) -> Result<WebSocketStream<S>, WsError> {
    uri_mode(request.uri())?;
    let wanted = subprotocols(&request)?;
    let (bytes, key) = generate_request(request)?;
    let accept = derive_accept_key(key.as_bytes());
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

/// The subprotocols the request offers (`Sec-WebSocket-Protocol`, comma-separated).
fn subprotocols(request: &Request) -> Result<Option<Vec<String>>, WsError> {
    let Some(offered) = request.headers().get("Sec-WebSocket-Protocol") else {
        return Ok(None);
    };
    Ok(Some(
        offered
            .to_str()?
            .split(',')
            .map(|s| s.trim().to_owned())
            .collect(),
    ))
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

    fn request(subprotocol: Option<&str>) -> Request {
        let mut r = "ws://target.test/ws".into_client_request().unwrap();
        if let Some(p) = subprotocol {
            r.headers_mut()
                .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
        }
        r
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

//! `ws_connect` (its [`ConnectStep`]): DNS, TCP (to the session's target instance, from its
//! source address if the worker has them), TLS for `wss://`, the upgrade with the VU's token,
//! and the confirmation frame or the expected rejection.

use std::borrow::Cow;

use gauntlet_core::plan::Placement;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::ProtocolError;

use super::spill::Spill;
use super::upgrade::{RequestError, UpgradeRequest, upgrade};
use super::{Fatal, Read, Session, Want, Ws, close_quietly, unrendered};
use crate::classify::Symptom;
use crate::program::{CompiledStep, ConnectStep};

impl Session<'_> {
    pub(super) async fn connect(
        &mut self,
        step: &CompiledStep,
        c: &ConnectStep,
        start: Instant,
    ) -> Result<(), Fatal> {
        let ConnectStep {
            path,
            query,
            headers,
            auth,
            confirmation,
            rejection,
            timeout,
        } = c;
        if let Some(old) = self.ws.take() {
            close_quietly(old).await;
        }
        // What a pause read off the old connection is not the new one's.
        self.held = None;
        self.arrive();
        let p = self.p;
        let endpoint = &p.endpoint(self.vu.route).ws_url;
        let use_token = *auth && p.minter.is_some();
        let token_in_query =
            use_token && p.minter.as_ref().map(|m| m.placement) == Some(Placement::Query);
        // The endpoint's URL as it is, or a copy with the step's path and query.
        let mut changed = None;
        if path.is_some() || !query.is_empty() || token_in_query {
            let mut url = endpoint.clone();
            if let Some(path) = path {
                url.set_path(path);
            }
            let mut pairs = Vec::new();
            for (k, t) in query {
                match self.render(t) {
                    Some(v) => pairs.push((k.as_str(), v)),
                    None => {
                        self.fail(&step.name, unrendered(k));
                        return Err(Fatal);
                    }
                }
            }
            if token_in_query && let Some(m) = &p.minter {
                pairs.push((m.query_param.as_str(), self.token.clone()));
            }
            if !pairs.is_empty() {
                let mut q = url.query_pairs_mut();
                for (k, v) in &pairs {
                    q.append_pair(k, v);
                }
            }
            changed = Some(url);
        }
        let url = changed.as_ref().unwrap_or(endpoint);
        // The plan's headers (names checked when it compiled), then the token's.
        let mut extra: Vec<(&str, Cow<'_, str>)> =
            Vec::with_capacity(p.headers.len() + headers.len() + 1);
        for (k, t) in p.headers.iter().chain(headers) {
            let value = match t.as_literal() {
                Some(text) => Cow::Borrowed(text),
                None => match self.render(t) {
                    Some(v) => Cow::Owned(v),
                    None => {
                        self.fail(&step.name, unrendered(k));
                        return Err(Fatal);
                    }
                },
            };
            extra.push((k.as_str(), value));
        }
        if use_token && let Some(m) = &p.minter {
            match m.placement {
                Placement::Header => extra.push((
                    "Authorization",
                    Cow::Owned(format!("Bearer {}", self.token)),
                )),
                Placement::Subprotocol => {
                    use base64::Engine as _;
                    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(self.token.as_bytes());
                    extra.push((
                        "Sec-WebSocket-Protocol",
                        Cow::Owned(format!("{}{b64}", m.subprotocol_prefix)),
                    ));
                }
                Placement::Query => {}
            }
        }
        let request = match UpgradeRequest::new(url, &extra) {
            Ok(r) => r,
            Err(RequestError::Url(e)) => {
                self.fail(
                    &step.name,
                    Symptom::Protocol(format!("bad WebSocket URL {url}: {e}")),
                );
                return Err(Fatal);
            }
            Err(RequestError::Header(k)) => {
                self.fail(
                    &step.name,
                    Symptom::Protocol(format!("header `{k}` is not a valid HTTP header")),
                );
                return Err(Fatal);
            }
        };
        // The rendered values are in the request now: not kept across the connect's waits.
        drop(extra);
        let deadline = Instant::now() + self.p.plan.target.connect_timeout;
        let ws = match self.handshake(url, request, deadline).await {
            Ok(ws) => ws,
            Err(symptom) => {
                if let (Some(r), Symptom::Handshake { status, .. }) = (rejection, &symptom)
                    && r.status == Some(*status)
                {
                    self.vu.rec.check(step.check, true);
                    return Ok(());
                }
                if rejection.is_some() {
                    self.vu.rec.check(step.check, false);
                }
                self.fail(&step.name, symptom);
                return Err(Fatal);
            }
        };
        self.vu.rec.record(self.p.m_handshake, start.elapsed());
        self.ws = Some(ws);
        let deadline = Instant::now() + *timeout;
        if let Some(r) = rejection {
            // The upgrade was accepted: the server must now close with the expected code.
            let ended = loop {
                match self.next_frame(deadline).await {
                    Ok(Read::Text(_) | Read::Pong) => continue,
                    Ok(Read::Timeout) => break None,
                    Err(symptom) => break Some(symptom),
                }
            };
            self.ws = None;
            let passed = matches!(
                &ended,
                Some(Symptom::Close { code, .. }) if r.close_code == Some(*code)
            );
            self.vu.rec.check(step.check, passed);
            if passed {
                return Ok(());
            }
            let symptom = ended.unwrap_or_else(|| Symptom::CheckFailed {
                name: format!("{}: expected rejection", step.name),
                sample: "the connection stayed open".into(),
            });
            self.fail(&step.name, symptom);
            return Err(Fatal);
        }
        if confirmation.is_empty() {
            return Ok(());
        }
        self.wait_for(step, deadline, confirmation, Want::Any, "confirmation")
            .await?;
        self.vu.rec.record(self.p.m_confirmation, start.elapsed());
        Ok(())
    }

    async fn handshake(
        &mut self,
        url: &url::Url,
        request: UpgradeRequest,
        deadline: Instant,
    ) -> Result<Ws, Symptom> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        // Until it resolves, the target is the address as written.
        self.target = Some(format!("{host}:{port}"));
        let addrs = match timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port))).await
        {
            Err(_) => return Err(Symptom::Timeout(format!("resolving {host}"))),
            Ok(Err(e)) => return Err(Symptom::Dns(format!("{host}: {e}"))),
            Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
        };
        let Some(addr) = addrs.first().copied() else {
            return Err(Symptom::Dns(format!("{host}: no address")));
        };
        self.target = Some(addr.to_string());
        let tcp = match timeout_at(deadline, self.p.sources.connect(self.vu.route, addr)).await {
            Err(_) => return Err(Symptom::Timeout(format!("TCP connect to {addr}"))),
            Ok(Err(e)) => return Err(Symptom::ConnectRefused(format!("{addr}: {e}"))),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        // The byte stream is boxed before the upgrade, so the (boxed, but short-lived and
        // numerous) connecting future holds a pointer rather than TLS state in every one of
        // its nested handshake states, for `ws://` targets too.
        let io: Box<dyn Io> = if url.scheme() == "wss" {
            let name = match rustls::pki_types::ServerName::try_from(host.clone()) {
                Ok(n) => n,
                Err(e) => return Err(Symptom::Tls(format!("{host}: {e}"))),
            };
            let tls = tokio_rustls::TlsConnector::from(self.p.tls.clone());
            // Boxed: the TLS handshake's state is the largest of the connecting future's, which
            // every session (`ws://` ones too) allocates and copies.
            match timeout_at(deadline, Box::pin(tls.connect(name, tcp))).await {
                Err(_) => return Err(Symptom::Timeout("TLS handshake".into())),
                Ok(Err(e)) => return Err(Symptom::Tls(format!("{host}: {e}"))),
                Ok(Ok(stream)) => Box::new(Spill::new(stream)),
            }
        } else {
            Box::new(Spill::new(tcp))
        };
        match timeout_at(deadline, upgrade(io, request, self.p.ws_config)).await {
            Err(_) => Err(Symptom::Timeout("WebSocket upgrade".into())),
            // The open WebSocket becomes the session's socket.
            Ok(Ok(ws)) => Ok(Box::new(ws)),
            Ok(Err(WsError::Http(response))) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(Symptom::Handshake { status, body })
            }
            Ok(Err(WsError::Tls(e))) => Err(Symptom::Tls(e.to_string())),
            // The peer went away mid-upgrade (a restart, a dropped connection): a close, not a
            // protocol violation.
            Ok(Err(
                e @ (WsError::Io(_)
                | WsError::ConnectionClosed
                | WsError::AlreadyClosed
                | WsError::Protocol(
                    ProtocolError::HandshakeIncomplete
                    | ProtocolError::ResetWithoutClosingHandshake,
                )),
            )) => Err(Symptom::Reset(format!("during upgrade: {e}"))),
            Ok(Err(e)) => Err(Symptom::Protocol(format!("upgrade: {e}"))),
        }
    }
}

/// A byte stream to the target: plain TCP or TLS, boxed (see [`Session::handshake`]).
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

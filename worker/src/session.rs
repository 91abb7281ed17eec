//! One session: a VU runs one scenario's steps against the target, times each of them, checks
//! every frame (expectations, sequences, isolation) and ends passed, or failed with exactly
//! one primary failure (its first) while every check result is still counted.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gauntlet_core::metrics::FailureKey;
use gauntlet_core::plan::{Pause, Placement, TokenPer};
use serde_json::Value;
use std::pin::Pin;
use tokio::net::TcpStream;

use tokio::time::{Instant, Sleep, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::classify::{Symptom, classify};
use crate::matcher::text_at;
use crate::program::{CompiledScenario, CompiledStep, Frame, HttpStep, Program, StepKind};
use crate::recorder::VuRecorder;
use crate::render::{Context, Vars, render};
use crate::rng::Rng;
use crate::sequence::{Seen, Verdict};

/// A byte stream to the target: plain TCP or TLS, boxed so a session holds a pointer rather
/// than the largest variant (rustls state is over a kilobyte).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// A virtual user: its identity, credentials and local recorder, kept across sessions.
#[derive(Debug)]
pub struct Vu {
    /// Fleet-unique id.
    pub id: u64,
    /// Sessions run so far.
    pub iteration: u64,
    /// JWT subject.
    pub subject: String,
    /// Subject number.
    pub subject_index: u64,
    /// Random source.
    pub rng: Rng,
    /// Measurements.
    pub rec: VuRecorder,
    token: Option<(String, Instant)>,
    vars: Vars,
}

impl Vu {
    /// VU `id` of `program`.
    pub fn new(program: &Program, id: u64, rec: VuRecorder, seed: u64) -> Vu {
        let mut rng = Rng::keyed(&[seed, id]);
        let (subject, subject_index) = match &program.minter {
            Some(m) => (m.subject(id, &mut rng), m.subject_index(id)),
            None => (format!("vu-{id}"), id),
        };
        Vu {
            id,
            iteration: 0,
            subject,
            subject_index,
            rng,
            rec,
            token: None,
            vars: Vars::default(),
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed.
    Passed,
    /// It failed (its primary failure is recorded).
    Failed,
}

/// Where the session timer rests when nothing is awaited.
const IDLE_TIMER: Duration = Duration::from_secs(24 * 3600);

async fn close_quietly(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

/// A failure that ends the session (already recorded as a symptom).
#[derive(Debug)]
struct Fatal;

/// What reading the socket gave.
enum Read {
    Text(Utf8Bytes),
    Pong,
    Timeout,
}

struct Session<'a> {
    p: &'a Program,
    sc: &'a CompiledScenario,
    vu: &'a mut Vu,
    ws: Option<Ws>,
    token: String,
    marks: Vec<Option<Instant>>,
    last_send: Option<Instant>,
    first: Option<(Symptom, String, Instant)>,
    /// The first step's latency counts from here (the open model's intended start).
    origin: Option<Instant>,
    /// One timer per session for every wait (see [`Session::read`]).
    timer: Pin<Box<Sleep>>,
}

/// Runs scenario `scenario` once for `vu`; in the open model `origin` is the session's
/// intended start, from which its latencies count.
pub async fn run_session(p: &Program, vu: &mut Vu, scenario: usize, origin: Instant) -> Outcome {
    let sc = &p.scenarios[scenario];
    vu.rec.counters.sessions_started += 1;
    let mut s = Session {
        p,
        sc,
        token: String::new(),
        marks: vec![None; sc.marks],
        last_send: None,
        first: None,
        origin: Some(origin),
        ws: None,
        timer: Box::pin(tokio::time::sleep_until(origin + IDLE_TIMER)),
        vu,
    };
    let result = s.start().await;
    let result = match result {
        Ok(()) => s.run_steps(&sc.steps).await,
        Err(f) => Err(f),
    };
    let _ = result;
    if let Some(ws) = s.ws.take() {
        // Close politely without waiting long for the reply; the session's verdict is made.
        Box::pin(close_quietly(ws)).await;
    }
    let end = Instant::now();
    let vu = s.vu;
    vu.rec.record(p.m_session, end - origin);
    vu.rec.record(sc.m_session, end - origin);
    vu.iteration += 1;
    let outcome = match s.first.take() {
        None => {
            vu.rec.counters.sessions_passed += 1;
            Outcome::Passed
        }
        Some((symptom, step, at)) => {
            vu.rec.counters.sessions_failed += 1;
            let (category, detail) = classify(&symptom, &p.classifiers);
            let key = FailureKey {
                category,
                detail,
                scenario: sc.name.clone(),
                step,
            };
            vu.rec.failure(key, at, symptom.sample());
            Outcome::Failed
        }
    };
    vu.rec.flush();
    outcome
}

impl<'a> Session<'a> {
    /// Token and scenario variables for this session.
    async fn start(&mut self) -> Result<(), Fatal> {
        if let Some(minter) = &self.p.minter {
            let now = Instant::now();
            let reuse = match (&self.vu.token, minter.token_per) {
                (Some((_, expires)), TokenPer::Vu) => *expires > now + minter.lifetime() / 4,
                _ => false,
            };
            if !reuse {
                match minter.mint(
                    self.vu.id,
                    self.vu.iteration,
                    &mut self.vu.rng,
                    &Vars::default(),
                ) {
                    Ok(t) => self.vu.token = Some((t, now + minter.lifetime())),
                    Err(e) => {
                        self.fail(
                            "auth",
                            Symptom::CheckFailed {
                                name: "mint token".into(),
                                sample: e,
                            },
                        );
                        return Err(Fatal);
                    }
                }
            }
            self.token = self
                .vu
                .token
                .as_ref()
                .map(|(t, _)| t.clone())
                .unwrap_or_default();
        }
        self.vu.vars.clear();
        for (name, t) in &self.sc.vars {
            let value = {
                let ctx = ctx(
                    self.sc,
                    self.vu.id,
                    self.vu.iteration,
                    &self.vu.subject,
                    self.vu.subject_index,
                    &self.token,
                    &self.vu.vars,
                );
                render(t, &ctx, &mut self.vu.rng)
            };
            if let Some(v) = value {
                self.vu.vars.set(name, v);
            }
        }
        Ok(())
    }

    fn fail(&mut self, step: &str, symptom: Symptom) {
        if self.first.is_none() {
            self.first = Some((symptom, step.to_owned(), Instant::now()));
        }
    }

    fn render(&mut self, t: &gauntlet_core::template::Template) -> Option<String> {
        let ctx = ctx(
            self.sc,
            self.vu.id,
            self.vu.iteration,
            &self.vu.subject,
            self.vu.subject_index,
            &self.token,
            &self.vu.vars,
        );
        render(t, &ctx, &mut self.vu.rng)
    }

    fn step_start(&mut self) -> Instant {
        self.origin.take().unwrap_or_else(Instant::now)
    }

    /// Runs `steps` in order; `repeat` nests without recursion (an explicit stack), so a
    /// repeated step costs no allocation per turn.
    async fn run_steps(&mut self, steps: &'a [CompiledStep]) -> Result<(), Fatal> {
        struct Level<'s> {
            steps: &'s [CompiledStep],
            next: usize,
            turns_left: u32,
            /// The `repeat` step that opened this level, and when it started.
            opened_by: Option<(&'s CompiledStep, Instant)>,
        }
        let mut stack = vec![Level {
            steps,
            next: 0,
            turns_left: 1,
            opened_by: None,
        }];
        while let Some(level) = stack.last_mut() {
            if level.next == level.steps.len() {
                level.turns_left = level.turns_left.saturating_sub(1);
                if level.turns_left > 0 {
                    level.next = 0;
                    continue;
                }
                if let Some(Level {
                    opened_by: Some((step, start)),
                    ..
                }) = stack.pop()
                {
                    self.vu.rec.record(step.metric, start.elapsed());
                }
                continue;
            }
            let step = &level.steps[level.next];
            level.next += 1;
            let start = self.step_start();
            match &step.kind {
                StepKind::Repeat { count, steps } => {
                    stack.push(Level {
                        steps,
                        next: 0,
                        turns_left: *count,
                        opened_by: Some((step, start)),
                    });
                    continue;
                }
                StepKind::Sleep(pause) => {
                    let d = pause_duration(pause, &mut self.vu.rng);
                    if d >= Duration::from_millis(100) {
                        // A long pause: hand the buffered samples over and free the buffers.
                        self.vu.rec.shrink();
                    }
                    self.timer.as_mut().reset(Instant::now() + d);
                    self.timer.as_mut().await;
                    continue;
                }
                // Rare, large futures are boxed so an idle session's state stays small.
                StepKind::Connect { .. } => Box::pin(self.connect(step, start)).await?,
                StepKind::Http(h) => Box::pin(self.http(step, h)).await?,
                StepKind::Close {
                    code,
                    reason,
                    timeout,
                } => Box::pin(self.close(step, *code, reason, *timeout)).await?,
                StepKind::Send { frame, mark } => self.send(step, frame, *mark).await?,
                StepKind::Expect { .. } => self.expect(step, start).await?,
                StepKind::Sequence { .. } => Box::pin(self.sequence(step, start)).await?,
                StepKind::Ping { timeout } => self.ping(step, start, *timeout).await?,
            }
            self.vu.rec.record(step.metric, start.elapsed());
        }
        Ok(())
    }

    async fn connect(&mut self, step: &CompiledStep, start: Instant) -> Result<(), Fatal> {
        let StepKind::Connect {
            path,
            query,
            headers,
            auth,
            confirmation,
            rejection,
            timeout,
        } = &step.kind
        else {
            return Ok(());
        };
        if let Some(old) = self.ws.take() {
            close_quietly(old).await;
        }
        let mut url = self.p.ws_url.clone();
        if let Some(path) = path {
            url.set_path(path);
        }
        let use_token = *auth && self.p.minter.is_some();
        {
            let mut pairs = Vec::new();
            for (k, t) in query {
                match self.render(t) {
                    Some(v) => pairs.push((k.clone(), v)),
                    None => {
                        self.fail(&step.name, unrendered(k));
                        return Err(Fatal);
                    }
                }
            }
            if use_token
                && let Some(m) = &self.p.minter
                && m.placement == Placement::Query
            {
                pairs.push((m.query_param.clone(), self.token.clone()));
            }
            if !pairs.is_empty() {
                let mut q = url.query_pairs_mut();
                for (k, v) in &pairs {
                    q.append_pair(k, v);
                }
            }
        }
        let mut request = match url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => {
                self.fail(
                    &step.name,
                    Symptom::Protocol(format!("bad WebSocket URL {url}: {e}")),
                );
                return Err(Fatal);
            }
        };
        let mut all_headers = Vec::new();
        for (k, t) in self.p.headers.iter().chain(headers) {
            match self.render(t) {
                Some(v) => all_headers.push((k.clone(), v)),
                None => {
                    self.fail(&step.name, unrendered(k));
                    return Err(Fatal);
                }
            }
        }
        if use_token && let Some(m) = &self.p.minter {
            match m.placement {
                Placement::Header => {
                    all_headers.push(("Authorization".into(), format!("Bearer {}", self.token)))
                }
                Placement::Subprotocol => {
                    use base64::Engine as _;
                    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(self.token.as_bytes());
                    all_headers.push((
                        "Sec-WebSocket-Protocol".into(),
                        format!("{}{b64}", m.subprotocol_prefix),
                    ));
                }
                Placement::Query => {}
            }
        }
        for (k, v) in all_headers {
            match (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                (Ok(k), Ok(v)) => {
                    request.headers_mut().insert(k, v);
                }
                _ => {
                    self.fail(
                        &step.name,
                        Symptom::Protocol(format!("header `{k}` is not a valid HTTP header")),
                    );
                    return Err(Fatal);
                }
            }
        }
        let deadline = Instant::now() + self.p.plan.target.connect_timeout;
        let ws = match self.handshake(&url, request, deadline).await {
            Ok(ws) => ws,
            Err(symptom) => {
                if let (Some(r), Symptom::Handshake { status, .. }) = (rejection, &symptom)
                    && r.status.is_none_or(|want| want == *status)
                    && r.status.is_some()
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
            let passed = loop {
                match self.read(deadline, &step.name, true).await {
                    Ok(Read::Text(_) | Read::Pong) => continue,
                    Ok(Read::Timeout) => break false,
                    Err(Fatal) => {
                        let closed_as_expected = matches!(
                            &self.first,
                            Some((Symptom::Close { code, .. }, _, _)) if r.close_code == Some(*code)
                        );
                        if closed_as_expected {
                            self.first = None;
                        }
                        break closed_as_expected;
                    }
                }
            };
            self.ws = None;
            self.vu.rec.check(step.check, passed);
            if !passed {
                self.fail(
                    &step.name,
                    Symptom::CheckFailed {
                        name: format!("{}: expected rejection", step.name),
                        sample: "the connection stayed open".into(),
                    },
                );
                return Err(Fatal);
            }
            return Ok(());
        }
        if confirmation.is_empty() {
            return Ok(());
        }
        loop {
            match self.read(deadline, &step.name, false).await? {
                Read::Pong => continue,
                Read::Timeout => {
                    self.vu.rec.check(step.check, false);
                    self.fail(
                        &step.name,
                        Symptom::Timeout(format!("{}: confirmation", step.name)),
                    );
                    return Err(Fatal);
                }
                Read::Text(text) => {
                    let Some(frame) = self.inspect(&text) else {
                        continue;
                    };
                    let hit = {
                        let ctx = ctx(
                            self.sc,
                            self.vu.id,
                            self.vu.iteration,
                            &self.vu.subject,
                            self.vu.subject_index,
                            &self.token,
                            &self.vu.vars,
                        );
                        confirmation
                            .iter()
                            .any(|m| m.matches(&frame, &ctx, &mut self.vu.rng))
                    };
                    if hit {
                        self.vu.rec.check(step.check, true);
                        self.vu.rec.record(self.p.m_confirmation, start.elapsed());
                        return Ok(());
                    }
                    if let Some(symptom) = error_frame(&frame, &text) {
                        self.vu.rec.check(step.check, false);
                        self.fail(&step.name, symptom);
                        return Err(Fatal);
                    }
                }
            }
        }
    }

    async fn handshake(
        &mut self,
        url: &url::Url,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
        deadline: Instant,
    ) -> Result<Ws, Symptom> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs = match timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port))).await
        {
            Err(_) => return Err(Symptom::Timeout(format!("resolving {host}"))),
            Ok(Err(e)) => return Err(Symptom::Dns(format!("{host}: {e}"))),
            Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
        };
        let Some(addr) = addrs.first().copied() else {
            return Err(Symptom::Dns(format!("{host}: no address")));
        };
        let tcp = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(Symptom::Timeout(format!("TCP connect to {addr}"))),
            Ok(Err(e)) => return Err(Symptom::ConnectRefused(format!("{addr}: {e}"))),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if url.scheme() == "wss" {
            let name = match rustls::pki_types::ServerName::try_from(host.clone()) {
                Ok(n) => n,
                Err(e) => return Err(Symptom::Tls(format!("{host}: {e}"))),
            };
            let tls = tokio_rustls::TlsConnector::from(self.p.tls.clone());
            match timeout_at(deadline, tls.connect(name, tcp)).await {
                Err(_) => return Err(Symptom::Timeout("TLS handshake".into())),
                Ok(Err(e)) => return Err(Symptom::Tls(format!("{host}: {e}"))),
                Ok(Ok(stream)) => Box::new(stream),
            }
        } else {
            Box::new(tcp)
        };
        let upgrade =
            tokio_tungstenite::client_async_with_config(request, io, Some(self.p.ws_config));
        match timeout_at(deadline, upgrade).await {
            Err(_) => Err(Symptom::Timeout("WebSocket upgrade".into())),
            Ok(Ok((ws, _response))) => Ok(ws),
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
            Ok(Err(WsError::Io(e))) => Err(Symptom::Reset(format!("during upgrade: {e}"))),
            Ok(Err(e)) => Err(Symptom::Protocol(format!("upgrade: {e}"))),
        }
    }

    /// Reads the next text frame or pong; records closes and resets as the failure (unless
    /// `quiet`, where the caller judges the close itself).
    async fn read(&mut self, deadline: Instant, step: &str, quiet: bool) -> Result<Read, Fatal> {
        let Some(ws) = self.ws.as_mut() else {
            self.fail(step, Symptom::Protocol("no open WebSocket".into()));
            return Err(Fatal);
        };
        // The session timer is only moved earlier, never later: a wait with a later deadline
        // than the armed one lets it fire, checks the real deadline and re-arms. Back-to-back
        // waits (deadlines that grow) thus touch the timer wheel about once per timeout
        // period instead of once per frame.
        loop {
            if self.timer.deadline() > deadline {
                self.timer.as_mut().reset(deadline);
            }
            let next = tokio::select! {
                biased;
                next = ws.next() => next,
                _ = self.timer.as_mut() => {
                    if Instant::now() >= deadline {
                        return Ok(Read::Timeout);
                    }
                    self.timer.as_mut().reset(deadline);
                    continue;
                }
            };
            let symptom = match next {
                Some(Ok(msg)) => {
                    let c = &mut self.vu.rec.counters;
                    c.frames_received += 1;
                    c.bytes_received += msg.len() as u64;
                    match msg {
                        Message::Text(t) => return Ok(Read::Text(t)),
                        Message::Pong(_) => return Ok(Read::Pong),
                        Message::Ping(_) | Message::Binary(_) | Message::Frame(_) => continue,
                        Message::Close(frame) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            Symptom::Close { code, reason }
                        }
                    }
                }
                None => Symptom::Reset("connection closed without a close frame".into()),
                Some(Err(WsError::Protocol(e))) => Symptom::Reset(e.to_string()),
                Some(Err(WsError::Io(e))) => Symptom::Reset(e.to_string()),
                Some(Err(e)) => Symptom::Protocol(e.to_string()),
            };
            self.ws = None;
            if quiet {
                self.first
                    .get_or_insert((symptom, step.to_owned(), Instant::now()));
            } else {
                self.fail(step, symptom);
            }
            return Err(Fatal);
        }
    }

    /// Parses a frame and runs the isolation checks on it; `None` if it is not JSON.
    fn inspect(&mut self, text: &str) -> Option<Value> {
        let frame: Value = serde_json::from_str(text).ok()?;
        for check in &self.p.isolation {
            let Some(found) = text_at(&frame, &check.pointer) else {
                continue;
            };
            let Some(want) = self.render(&check.equals) else {
                continue;
            };
            let ok = found == want;
            self.vu.rec.check(check.check, ok);
            if !ok {
                self.fail(
                    &format!("isolation:{}", check.name),
                    Symptom::Isolation {
                        check: check.name.clone(),
                        text: text.to_owned(),
                    },
                );
            }
        }
        Some(frame)
    }

    async fn send(&mut self, step: &CompiledStep, frame: &Frame, mark: usize) -> Result<(), Fatal> {
        let text: Option<Utf8Bytes> = match frame {
            Frame::Json(t) => {
                let ctx = ctx(
                    self.sc,
                    self.vu.id,
                    self.vu.iteration,
                    &self.vu.subject,
                    self.vu.subject_index,
                    &self.token,
                    &self.vu.vars,
                );
                t.render_text(&ctx, &mut self.vu.rng)
            }
            Frame::Text(t) => self.render(t).map(Utf8Bytes::from),
        };
        let Some(text) = text else {
            self.fail(&step.name, unrendered("frame"));
            return Err(Fatal);
        };
        let len = text.len() as u64;
        let Some(ws) = self.ws.as_mut() else {
            self.fail(&step.name, Symptom::Protocol("no open WebSocket".into()));
            return Err(Fatal);
        };
        if let Err(e) = ws.send(Message::Text(text)).await {
            self.ws = None;
            self.fail(&step.name, Symptom::Reset(format!("send failed: {e}")));
            return Err(Fatal);
        }
        let now = Instant::now();
        self.marks[mark] = Some(now);
        self.last_send = Some(now);
        self.vu.rec.counters.frames_sent += 1;
        self.vu.rec.counters.bytes_sent += len;
        Ok(())
    }

    fn since(&self, since: Option<usize>, fallback: Instant) -> Instant {
        match since {
            Some(m) => self.marks[m].unwrap_or(fallback),
            None => self.last_send.unwrap_or(fallback),
        }
    }

    async fn expect(&mut self, step: &CompiledStep, start: Instant) -> Result<(), Fatal> {
        let StepKind::Expect {
            matchers,
            timeout,
            since,
            capture,
            event_metric,
        } = &step.kind
        else {
            return Ok(());
        };
        let deadline = start + *timeout;
        loop {
            match self.read(deadline, &step.name, false).await? {
                Read::Pong => continue,
                Read::Timeout => {
                    self.vu.rec.check(step.check, false);
                    self.fail(
                        &step.name,
                        Symptom::Timeout(format!("{}: {}", step.name, describe(matchers))),
                    );
                    return Err(Fatal);
                }
                Read::Text(text) => {
                    let Some(frame) = self.inspect(&text) else {
                        continue;
                    };
                    let hit = {
                        let ctx = ctx(
                            self.sc,
                            self.vu.id,
                            self.vu.iteration,
                            &self.vu.subject,
                            self.vu.subject_index,
                            &self.token,
                            &self.vu.vars,
                        );
                        matchers
                            .iter()
                            .all(|m| m.matches(&frame, &ctx, &mut self.vu.rng))
                    };
                    if hit {
                        let from = self.since(*since, start);
                        self.vu.rec.record(*event_metric, from.elapsed());
                        self.vu.rec.check(step.check, true);
                        self.capture(step, capture, &frame);
                        return Ok(());
                    }
                    if let Some(symptom) = error_frame(&frame, &text) {
                        self.vu.rec.check(step.check, false);
                        self.fail(&step.name, symptom);
                        return Err(Fatal);
                    }
                }
            }
        }
    }

    fn capture(&mut self, step: &CompiledStep, capture: &[(String, String)], frame: &Value) {
        for (name, pointer) in capture {
            match text_at(frame, pointer) {
                Some(v) => self.vu.vars.set(name, v),
                None => self.fail(
                    &step.name,
                    Symptom::CheckFailed {
                        name: format!("{}: capture {name}", step.name),
                        sample: format!("{pointer} not found in {}", frame),
                    },
                ),
            }
        }
    }

    async fn sequence(&mut self, step: &CompiledStep, start: Instant) -> Result<(), Fatal> {
        let StepKind::Sequence {
            check,
            type_pointer,
            timeout,
            gap_timeout,
            since,
            capture,
            event_metrics,
        } = &step.kind
        else {
            return Ok(());
        };
        let whole = start + *timeout;
        let from = self.since(*since, start);
        let mut received: Vec<usize> = Vec::with_capacity(check.types.len() + 2);
        let mut captured = false;
        let verdict = loop {
            let deadline = match gap_timeout {
                Some(g) => whole.min(Instant::now() + *g),
                None => whole,
            };
            let text = match self.read(deadline, &step.name, false).await {
                Err(Fatal) => {
                    self.vu.rec.check(step.check, false);
                    return Err(Fatal);
                }
                Ok(Read::Pong) => continue,
                Ok(Read::Timeout) => break check.verdict_on_timeout(&received),
                Ok(Read::Text(text)) => text,
            };
            let Some(frame) = self.inspect(&text) else {
                continue;
            };
            let Some(kind) = frame
                .pointer(type_pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                if let Some(symptom) = error_frame(&frame, &text) {
                    self.vu.rec.check(step.check, false);
                    self.fail(&step.name, symptom);
                    return Err(Fatal);
                }
                continue;
            };
            match check.on_type(&kind, &mut received) {
                Seen::Ignored => continue,
                Seen::Expected { index, first } => {
                    if first {
                        self.vu.rec.record(event_metrics[index], from.elapsed());
                    }
                    if !captured {
                        captured = true;
                        self.capture(step, capture, &frame);
                    }
                }
                Seen::Ended => {
                    if let Some(&index) = received.last()
                        && received.iter().filter(|t| **t == index).count() == 1
                    {
                        self.vu.rec.record(event_metrics[index], from.elapsed());
                    }
                    if !captured {
                        self.capture(step, capture, &frame);
                    }
                    break check.verdict(&received);
                }
                Seen::Error => {
                    // An error type ends the run unsuccessfully: an error frame named by its
                    // `error_code` if it has one, else by its type.
                    self.vu.rec.check(step.check, false);
                    let symptom = error_frame(&frame, &text).unwrap_or(Symptom::ErrorFrame {
                        code: kind,
                        text: text.to_string(),
                    });
                    self.fail(&step.name, symptom);
                    return Ok(());
                }
                Seen::Unexpected => {
                    if let Some(symptom) = error_frame(&frame, &text) {
                        self.vu.rec.check(step.check, false);
                        self.fail(&step.name, symptom);
                        return Err(Fatal);
                    }
                    break Verdict::Violation(format!("unexpected `{kind}`"));
                }
            }
        };
        let symptom = match verdict {
            Verdict::Pass => None,
            Verdict::Missing(t) => Some(Symptom::MissingEvent(t)),
            Verdict::Duplicate(t) => Some(Symptom::DuplicateEvent(t)),
            Verdict::Violation(what) => Some(Symptom::Sequence(what)),
            Verdict::Timeout(what) => Some(Symptom::Timeout(format!("{}: {what}", step.name))),
        };
        self.vu.rec.check(step.check, symptom.is_none());
        match symptom {
            None => Ok(()),
            Some(s @ Symptom::Timeout(_)) => {
                self.fail(&step.name, s);
                Err(Fatal)
            }
            Some(s) => {
                // The conversation was wrong but the socket is fine: go on with the next steps.
                self.fail(&step.name, s);
                Ok(())
            }
        }
    }

    async fn ping(
        &mut self,
        step: &CompiledStep,
        start: Instant,
        timeout: Duration,
    ) -> Result<(), Fatal> {
        let Some(ws) = self.ws.as_mut() else {
            self.fail(&step.name, Symptom::Protocol("no open WebSocket".into()));
            return Err(Fatal);
        };
        if let Err(e) = ws.send(Message::Ping(vec![0x67; 8].into())).await {
            self.ws = None;
            self.fail(&step.name, Symptom::Reset(format!("ping failed: {e}")));
            return Err(Fatal);
        }
        self.vu.rec.counters.frames_sent += 1;
        let deadline = start + timeout;
        loop {
            match self.read(deadline, &step.name, false).await? {
                Read::Pong => {
                    self.vu.rec.check(step.check, true);
                    return Ok(());
                }
                Read::Text(text) => {
                    let _ = self.inspect(&text);
                }
                Read::Timeout => {
                    self.vu.rec.check(step.check, false);
                    self.fail(&step.name, Symptom::Timeout(format!("{}: pong", step.name)));
                    return Err(Fatal);
                }
            }
        }
    }

    async fn close(
        &mut self,
        step: &CompiledStep,
        code: u16,
        reason: &str,
        timeout: Duration,
    ) -> Result<(), Fatal> {
        let Some(mut ws) = self.ws.take() else {
            return Ok(());
        };
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        };
        let closed = tokio::time::timeout(timeout, async {
            ws.close(Some(frame)).await.ok()?;
            // Drain until the server's reply ends the stream.
            while let Some(Ok(_)) = ws.next().await {}
            Some(())
        })
        .await;
        if !matches!(closed, Ok(Some(()))) {
            self.fail(
                &step.name,
                Symptom::Timeout(format!("{}: close reply", step.name)),
            );
        }
        Ok(())
    }

    async fn http(&mut self, step: &CompiledStep, h: &HttpStep) -> Result<(), Fatal> {
        let Some(path) = self.render(&h.path) else {
            self.fail(&step.name, unrendered("path"));
            return Err(Fatal);
        };
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path
        } else {
            format!("{}{path}", self.p.base_url)
        };
        let mut req = self
            .p
            .http
            .request(h.method.clone(), &url)
            .timeout(h.timeout);
        for (k, t) in self.p.headers.iter().chain(&h.headers) {
            match self.render(t) {
                Some(v) => req = req.header(k.as_str(), v),
                None => {
                    self.fail(&step.name, unrendered(k));
                    return Err(Fatal);
                }
            }
        }
        if h.auth && !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        let mut sent = 0u64;
        if let Some(json) = &h.json {
            let ctx = ctx(
                self.sc,
                self.vu.id,
                self.vu.iteration,
                &self.vu.subject,
                self.vu.subject_index,
                &self.token,
                &self.vu.vars,
            );
            let Some(body) = json.render_text(&ctx, &mut self.vu.rng) else {
                self.fail(&step.name, unrendered("json"));
                return Err(Fatal);
            };
            sent = body.len() as u64;
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        } else if let Some(body) = &h.body {
            let Some(body) = self.render(body) else {
                self.fail(&step.name, unrendered("body"));
                return Err(Fatal);
            };
            sent = body.len() as u64;
            req = req.body(body);
        }
        self.vu.rec.counters.bytes_sent += sent;
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.vu.rec.check(step.check, false);
                let symptom = if e.is_timeout() {
                    Symptom::Timeout(format!("{}: response", step.name))
                } else if e.is_connect() {
                    Symptom::ConnectRefused(format!("{url}: {}", error_chain(&e)))
                } else {
                    Symptom::Protocol(format!("{url}: {}", error_chain(&e)))
                };
                self.fail(&step.name, symptom);
                return Ok(());
            }
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                self.vu.rec.check(step.check, false);
                let symptom = if e.is_timeout() {
                    Symptom::Timeout(format!("{}: body", step.name))
                } else {
                    Symptom::Reset(format!("{url}: {}", error_chain(&e)))
                };
                self.fail(&step.name, symptom);
                return Ok(());
            }
        };
        self.vu.rec.counters.bytes_received += body.len() as u64;
        let text = String::from_utf8_lossy(&body);
        let status_ok = if h.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            h.expect_status.contains(&status)
        };
        if !status_ok {
            self.vu.rec.check(step.check, false);
            self.fail(
                &step.name,
                Symptom::HttpStatus {
                    status,
                    body: text.into_owned(),
                },
            );
            return Ok(());
        }
        let needs_json = h.expect_json || !h.matchers.is_empty() || !h.capture.is_empty();
        let json: Option<Value> = if needs_json {
            serde_json::from_slice(&body).ok()
        } else {
            None
        };
        if needs_json && json.is_none() {
            self.vu.rec.check(step.check, false);
            self.fail(
                &step.name,
                Symptom::CheckFailed {
                    name: format!("{}: JSON body", step.name),
                    sample: format!("HTTP {status} {text}"),
                },
            );
            return Ok(());
        }
        if let Some(json) = json {
            let failed = {
                let ctx = ctx(
                    self.sc,
                    self.vu.id,
                    self.vu.iteration,
                    &self.vu.subject,
                    self.vu.subject_index,
                    &self.token,
                    &self.vu.vars,
                );
                h.matchers
                    .iter()
                    .find(|m| !m.matches(&json, &ctx, &mut self.vu.rng))
                    .map(|m| m.describe())
            };
            if let Some(what) = failed {
                self.vu.rec.check(step.check, false);
                self.fail(
                    &step.name,
                    Symptom::CheckFailed {
                        name: format!("{}: {what}", step.name),
                        sample: format!("HTTP {status} {text}"),
                    },
                );
                return Ok(());
            }
            self.capture(step, &h.capture, &json);
        }
        self.vu.rec.check(step.check, true);
        Ok(())
    }
}

fn ctx<'a>(
    sc: &'a CompiledScenario,
    vu: u64,
    iteration: u64,
    subject: &'a str,
    subject_index: u64,
    token: &'a str,
    vars: &'a Vars,
) -> Context<'a> {
    Context {
        vu,
        iteration,
        subject,
        subject_index,
        scenario: &sc.name,
        token,
        vars,
    }
}

fn unrendered(what: &str) -> Symptom {
    Symptom::CheckFailed {
        name: format!("render {what}"),
        sample: format!("`{what}` reads a variable no earlier step captured"),
    }
}

fn describe(matchers: &[crate::matcher::CompiledMatcher]) -> String {
    matchers
        .iter()
        .map(|m| m.describe())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// An error frame: `type` `error_message`/`error`, or any frame with an `error_code`.
fn error_frame(frame: &Value, text: &str) -> Option<Symptom> {
    let kind = frame.get("type").and_then(Value::as_str);
    let code = frame.get("error_code").and_then(Value::as_str);
    if code.is_none() && !matches!(kind, Some("error_message" | "error")) {
        return None;
    }
    Some(Symptom::ErrorFrame {
        code: code.unwrap_or("UNKNOWN").to_owned(),
        text: text.to_owned(),
    })
}

/// A pause's length.
pub fn pause_duration(pause: &Pause, rng: &mut Rng) -> Duration {
    match *pause {
        Pause::Fixed(d) => d,
        Pause::Uniform { min, max } => min + (max - min).mul_f64(rng.unit()),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

//! One session: a VU runs one scenario's steps against the target, times each of them, checks
//! every frame (expectations, sequences, isolation) and ends passed, or failed with exactly
//! one primary failure (its first) while every check result is still counted.
//!
//! The steps talk to a [`Socket`]: any `Sink` of frames and `Stream` of frames. A real
//! session's is the `WebSocketStream` its `ws_connect` opened; the unit tests' is an in-memory
//! peer, so the conversation logic is tested without a network.
//!
//! # Layout
//! - this file: the VU and who its sessions run as (closed model: the VU's own identity; open
//!   model: the identity of the arrival it runs), the session's life (token, variables, the
//!   step loop, whose one `match` hands each step kind's struct to its handler), reading
//!   frames from the [`Socket`] with one reusable timer, isolation checks, waiting for a
//!   matching frame;
//! - `connect`: `ws_connect` (DNS, TCP, TLS, upgrade, confirmation or expected rejection);
//! - `conversation`: `ws_send`, `ws_expect`, `ws_expect_sequence`, `ws_ping`, `ws_close`;
//! - `spill`: the byte stream under a real session's WebSocket, read through one scratch
//!   buffer per thread so an open connection keeps only a small read buffer;
//! - `upgrade`: the client side of the WebSocket upgrade, reading the reply's head in small
//!   steps into a buffer dropped once it is parsed;
//! - `pause`: `sleep`, reading on while a WebSocket is open (pings answered, frames held);
//! - `http`: the `http` step;
//! - `tests`: the conversation steps against a scripted in-memory peer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use gauntlet_core::metrics::FailureKey;
use gauntlet_core::plan::{Pause, TokenPer};
use std::pin::Pin;

use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::auth::Identity;
use crate::classify::{Symptom, classify};
use crate::json::Json;
use crate::matcher::{CompiledMatcher, text_at};
use crate::program::{CompiledScenario, CompiledStep, Program, StepKind};
use crate::recorder::{Ending, Met, Presence, VuRecorder};
use crate::render::{Context, Vars, render, render_into};
use crate::rng::Rng;

/// A WebSocket as the conversation steps use it: frames out (a [`Sink`]) and frames in (a
/// [`Stream`]). A real session's is a `WebSocketStream` over TCP or TLS; a unit test's is an
/// in-memory peer.
pub trait Socket:
    Sink<Message, Error = WsError> + Stream<Item = Result<Message, WsError>> + Send + Unpin
{
}
impl<T> Socket for T where
    T: Sink<Message, Error = WsError> + Stream<Item = Result<Message, WsError>> + Send + Unpin
{
}

/// Boxed, once per connection: a session holds a pointer rather than the socket's state
/// (rustls' alone is over a kilobyte), whatever the socket is.
type Ws = Box<dyn Socket>;

mod connect;
mod conversation;
mod http;
mod pause;
mod spill;
#[cfg(test)]
mod tests;
mod upgrade;

pub(crate) use spill::READ_CHUNK;

/// A virtual user: its identity, credentials and local recorder, kept across sessions. In the
/// open model a VU is a slot that runs arrivals, and takes on each arrival's identity
/// ([`Vu::take_arrival`]).
#[derive(Debug)]
pub struct Vu {
    /// Fleet-unique id (the slot, in the open model).
    pub id: u64,
    /// `{vu}` of its sessions: the id in the closed model, the arrival's VU number in the open
    /// model.
    pub number: u64,
    /// Which target instance and source address its sessions use (entry `route % n` of each
    /// list): the id in the closed model, the arrival number in the open model, so the mapping
    /// is the same whatever the fleet.
    pub route: u64,
    /// `{iteration}`: sessions run so far in the closed model, the arrival's iteration in the
    /// open model.
    pub iteration: u64,
    /// JWT subject.
    pub subject: String,
    /// Subject number.
    pub subject_index: u64,
    /// Random source.
    pub rng: Rng,
    /// Measurements.
    pub rec: VuRecorder,
    token: Option<Token>,
    vars: Vars,
    /// What an isolation check expects, rendered into this buffer for each frame (kept across
    /// sessions, so a frame's check allocates nothing).
    expected: String,
}

/// The most a VU keeps of [`Vu`]'s buffer for isolation checks between frames, in bytes.
const KEEP_EXPECTED: usize = 256;

/// A minted token kept for reuse (`token_per = "vu"`), with the subject it was minted for.
#[derive(Debug, Clone)]
struct Token {
    jwt: String,
    expires: Instant,
    subject_index: u64,
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
            number: id,
            route: id,
            iteration: 0,
            subject,
            subject_index,
            rng,
            rec,
            token: None,
            vars: Vars::default(),
            expected: String::new(),
        }
    }

    /// Open model: takes on the identity of arrival `k` (0-based, numbered fleet-wide), so who
    /// a session runs as depends on the arrival alone, never on which slot, worker or fleet runs
    /// it. With `max_vus` VUs: `{vu}` is `k % max_vus`, `{iteration}` is `k / max_vus`, the
    /// subject is number `k % subject_pool` (`k % max_vus` without a pool, like the closed
    /// model's one subject per VU), and the random source is keyed by the run's seed and `k`.
    /// A kept token is dropped unless it is that subject's.
    pub fn take_arrival(&mut self, program: &Program, seed: u64, k: u64) {
        let max_vus = program.plan.max_vus().max(1);
        self.number = k % max_vus;
        self.route = k;
        self.iteration = k / max_vus;
        self.rng = Rng::keyed(&[seed, k]);
        let pool = program
            .minter
            .as_ref()
            .and_then(|m| m.pool())
            .unwrap_or(max_vus);
        self.subject_index = k % pool;
        self.subject = match &program.minter {
            Some(m) => m.render_subject(self.number, self.subject_index, &mut self.rng),
            None => format!("vu-{}", self.number),
        };
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.subject_index != self.subject_index)
        {
            self.token = None;
        }
    }
}

/// Open model with `token_per = "vu"`: the kept tokens of one worker, one per subject. A slot
/// runs arrivals of any subject, so it borrows the token of the subject it runs now (never
/// another's) and hands back what its session used.
#[derive(Debug, Default)]
pub struct SubjectTokens(Mutex<HashMap<u64, Token>>);

impl SubjectTokens {
    /// Gives `vu` the kept token of its current subject, if there is one.
    pub fn lend(&self, vu: &mut Vu) {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        vu.token = kept.get(&vu.subject_index).cloned();
    }

    /// Keeps the token `vu`'s last session used, for its subject.
    pub fn keep(&self, vu: &Vu) {
        if let Some(token) = &vu.token {
            let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
            kept.insert(token.subject_index, token.clone());
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
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(None))).await;
}

/// A failure that ends the session (already recorded as a symptom).
#[derive(Debug)]
struct Fatal;

/// Whether every matcher or any one must pass.
#[derive(Debug, Clone, Copy)]
enum Want {
    All,
    Any,
}

/// What reading the socket gave.
#[derive(Debug)]
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
    /// Boxed: only a failed session has one.
    first: Option<Box<(Symptom, String, Instant)>>,
    /// What the first failure's sample adds to its symptom's (the frames a timed-out wait
    /// skipped).
    note: Option<String>,
    /// Frames the current step read and could not use (not JSON, not matching, binary), and
    /// the first of them: a wait that times out among them says so.
    unexpected: (u64, Option<String>),
    /// The first step's latency counts from here (the open model's intended start).
    origin: Option<Instant>,
    /// One timer per session for every wait (see [`Session::read`]).
    timer: Pin<Box<Sleep>>,
    /// What it met when it began to connect (its first `ws_connect`, or its start when its
    /// scenario has none), and its presence in the share's book from then until it ends.
    arrived: Option<(Met, Presence)>,
    /// The address of the connection its steps used last (`host:port`).
    target: Option<String>,
    /// The run's interval it started in: its connect interval if it never connects.
    started_in: u64,
    /// What a `sleep` read off the WebSocket and no step has read yet (boxed: rare).
    held: Option<Box<pause::Held>>,
}

/// Runs scenario `scenario` once for `vu`; in the open model `origin` is the session's
/// intended start, from which its latencies count.
pub async fn run_session(p: &Program, vu: &mut Vu, scenario: usize, origin: Instant) -> Outcome {
    let mut s = Session::new(p, vu, scenario, origin);
    if s.start().await.is_ok() {
        let _ = s.run_steps(&p.scenarios[scenario].steps).await;
    }
    if let Some(ws) = s.ws.take() {
        // Close politely without waiting long for the reply; the session's verdict is made.
        Box::pin(close_quietly(ws)).await;
    }
    s.finish(origin)
}

/// [`run_session`] on a WebSocket already open: the steps after the scenario's first
/// `ws_connect` run on `ws`. Unit tests hand a session an in-memory peer this way; a real
/// session always connects.
#[cfg(test)]
async fn run_session_on(
    p: &Program,
    vu: &mut Vu,
    scenario: usize,
    origin: Instant,
    ws: Ws,
) -> Outcome {
    let steps = &p.scenarios[scenario].steps;
    let after = steps
        .iter()
        .position(|step| matches!(step.kind, StepKind::Connect(_)))
        .map_or(0, |i| i + 1);
    let mut s = Session::new(p, vu, scenario, origin);
    if s.start().await.is_ok() {
        s.ws = Some(ws);
        let _ = s.run_steps(&steps[after..]).await;
    }
    if let Some(ws) = s.ws.take() {
        Box::pin(close_quietly(ws)).await;
    }
    s.finish(origin)
}

impl<'a> Session<'a> {
    /// Session `scenario` of `vu`, counted as started, not yet connected.
    fn new(p: &'a Program, vu: &'a mut Vu, scenario: usize, origin: Instant) -> Session<'a> {
        let sc = &p.scenarios[scenario];
        vu.rec.counters.sessions_started += 1;
        Session {
            p,
            sc,
            token: String::new(),
            marks: vec![None; sc.marks],
            last_send: None,
            first: None,
            note: None,
            unexpected: (0, None),
            origin: Some(origin),
            ws: None,
            timer: Box::pin(tokio::time::sleep_until(origin + IDLE_TIMER)),
            arrived: None,
            target: None,
            started_in: vu.rec.interval_now(),
            held: None,
            vu,
        }
    }

    /// The session begins to hold a connection (once): counted live for its subject and in
    /// flight on this share until it ends, after noting what it met.
    fn arrive(&mut self) {
        if self.arrived.is_none() {
            self.arrived = Some(self.vu.rec.arrive(&self.vu.subject));
        }
    }

    /// Ends the session (its socket already closed): records its length and outcome, and its
    /// primary failure, classified.
    fn finish(mut self, origin: Instant) -> Outcome {
        let end = Instant::now();
        let (p, sc) = (self.p, self.sc);
        let vu = self.vu;
        vu.iteration += 1;
        let failure = self.first.take().map(|first| {
            let (symptom, step, at) = *first;
            let (category, detail) = classify(&symptom, &p.classifiers);
            let key = FailureKey {
                category,
                detail,
                scenario: sc.name.clone(),
                step,
            };
            let sample = match self.note.take() {
                Some(note) => format!("{} ({note})", symptom.sample()),
                None => symptom.sample(),
            };
            (key, at, sample)
        });
        let outcome = match failure {
            None => Outcome::Passed,
            Some(_) => Outcome::Failed,
        };
        // A session that never connected met what there is now, and counts as connected in the
        // interval it started in (never the one it ended in, which depends on how it ended).
        let met = match &self.arrived {
            Some((met, _)) => *met,
            None => Met {
                started: self.started_in,
                ..vu.rec.meet(&vu.subject)
            },
        };
        let ending = Ending {
            subject: &vu.subject,
            target: self.target.as_deref(),
            met,
        };
        vu.rec
            .end_session(&[p.m_session, sc.m_session], end - origin, failure, ending);
        // Its presence ends with it (dropped with `self`).
        outcome
    }

    /// Token and scenario variables for this session (a scenario without `ws_connect` counts
    /// as connected from here).
    async fn start(&mut self) -> Result<(), Fatal> {
        if !self.sc.connects {
            self.arrive();
        }
        if let Some(minter) = &self.p.minter {
            let now = Instant::now();
            let vu = &mut *self.vu;
            let reuse = match (&vu.token, minter.token_per) {
                (Some(t), TokenPer::Vu) => {
                    t.subject_index == vu.subject_index && t.expires > now + minter.lifetime() / 4
                }
                _ => false,
            };
            if !reuse {
                let who = Identity {
                    vu: vu.number,
                    iteration: vu.iteration,
                    subject: &vu.subject,
                    subject_index: vu.subject_index,
                };
                match minter.mint_for(&who, &mut vu.rng, &Vars::default()) {
                    Ok(jwt) => {
                        self.vu.token = Some(Token {
                            jwt,
                            expires: now + minter.lifetime(),
                            subject_index: self.vu.subject_index,
                        })
                    }
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
                .map(|t| t.jwt.clone())
                .unwrap_or_default();
        }
        self.vu.vars.clear();
        for (name, t) in &self.sc.vars {
            let value = self.with_ctx(|ctx, rng| render(t, ctx, rng));
            if let Some(v) = value {
                self.vu.vars.set(name, v);
            }
        }
        Ok(())
    }

    fn fail(&mut self, step: &str, symptom: Symptom) {
        if self.first.is_none() {
            if let (Symptom::Timeout(_), (n @ 1.., first)) = (&symptom, &self.unexpected) {
                let first = first.as_deref().unwrap_or("-");
                self.note = Some(format!(
                    "meanwhile {n} frame{} arrived that it did not wait for, the first: {first}",
                    if *n == 1 { "" } else { "s" }
                ));
            }
            self.first = Some(Box::new((symptom, step.to_owned(), Instant::now())));
        }
    }

    /// Runs `f` with the session's template context and random source.
    fn with_ctx<R>(&mut self, f: impl FnOnce(&Context<'_>, &mut Rng) -> R) -> R {
        let vu = &mut *self.vu;
        let ctx = Context {
            vu: vu.number,
            iteration: vu.iteration,
            subject: &vu.subject,
            subject_index: vu.subject_index,
            scenario: &self.sc.name,
            token: &self.token,
            vars: &vu.vars,
        };
        f(&ctx, &mut vu.rng)
    }

    fn render(&mut self, t: &gauntlet_core::template::Template) -> Option<String> {
        self.with_ctx(|ctx, rng| render(t, ctx, rng))
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
            self.unexpected = (0, None);
            match &step.kind {
                StepKind::Repeat(r) => {
                    stack.push(Level {
                        steps: &r.steps,
                        next: 0,
                        turns_left: r.count,
                        opened_by: Some((step, start)),
                    });
                    continue;
                }
                StepKind::Sleep(pause) => {
                    self.pause(pause).await;
                    continue;
                }
                // Rare, large futures are boxed so an idle session's state stays small.
                StepKind::Connect(c) => Box::pin(self.connect(step, c, start)).await?,
                StepKind::Http(h) => Box::pin(self.http(step, h)).await?,
                StepKind::Close(c) => Box::pin(self.close(step, c)).await?,
                StepKind::Send(send) => self.send(step, send).await?,
                StepKind::Expect(e) => self.expect(step, e, start).await?,
                StepKind::Sequence(q) => Box::pin(self.sequence(step, q, start)).await?,
                StepKind::Ping(ping) => self.ping(step, ping, start).await?,
            }
            self.vu.rec.record(step.metric, start.elapsed());
        }
        Ok(())
    }

    /// Reads frames until one passes `matchers` (all of them, or any one), skipping the others;
    /// records the step's check and returns the frame's text. A timeout, a close or an error
    /// frame the matchers do not expect fails the session.
    async fn wait_for(
        &mut self,
        step: &CompiledStep,
        deadline: Instant,
        matchers: &[CompiledMatcher],
        want: Want,
        awaited: &str,
    ) -> Result<Utf8Bytes, Fatal> {
        loop {
            let text = match self.read(deadline, &step.name).await {
                Ok(Read::Pong) => continue,
                Ok(Read::Text(text)) => text,
                Ok(Read::Timeout) => {
                    self.vu.rec.check(step.check, false);
                    self.fail(
                        &step.name,
                        Symptom::Timeout(format!("{}: {awaited}", step.name)),
                    );
                    return Err(Fatal);
                }
                Err(Fatal) => {
                    self.vu.rec.check(step.check, false);
                    return Err(Fatal);
                }
            };
            let Some(frame) = self.inspect(&text) else {
                self.skipped(&text);
                continue;
            };
            let hit = self.with_ctx(|ctx, rng| match want {
                Want::All => matchers.iter().all(|m| m.matches(&frame, ctx, rng)),
                Want::Any => matchers.iter().any(|m| m.matches(&frame, ctx, rng)),
            });
            if hit {
                self.vu.rec.check(step.check, true);
                drop(frame);
                return Ok(text);
            }
            if let Some(symptom) = error_frame(&frame, &text) {
                self.vu.rec.check(step.check, false);
                self.fail(&step.name, symptom);
                return Err(Fatal);
            }
            self.skipped(&text);
        }
    }

    /// Notes a frame the current step read and could not use.
    fn skipped(&mut self, text: &str) {
        skip(&mut self.unexpected, text);
    }

    /// Reads the next text frame or pong; the end of the connection is recorded as the
    /// session's failure.
    async fn read(&mut self, deadline: Instant, step: &str) -> Result<Read, Fatal> {
        match self.next_frame(deadline).await {
            Ok(read) => Ok(read),
            Err(symptom) => {
                self.fail(step, symptom);
                Err(Fatal)
            }
        }
    }

    /// Reads the next text frame or pong, those a `sleep` held first; `Err` says how the
    /// connection ended.
    async fn next_frame(&mut self, deadline: Instant) -> Result<Read, Symptom> {
        // Not a `match` on `take_held()`: its temporary would live across the read's await,
        // in every waiting session's state.
        if let Some(read) = self.take_held() {
            return read;
        }
        self.read_socket(deadline).await
    }

    /// Reads the next text frame or pong off the socket; `Err` says how the connection ended
    /// (and the socket is dropped).
    async fn read_socket(&mut self, deadline: Instant) -> Result<Read, Symptom> {
        let Some(ws) = self.ws.as_mut() else {
            return Err(Symptom::Protocol("no open WebSocket".into()));
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
                        Message::Ping(_) | Message::Frame(_) | Message::Binary(_) => {
                            if let Message::Binary(b) = &msg {
                                let n = b.len();
                                skip(
                                    &mut self.unexpected,
                                    &format!("<a binary frame of {n} bytes>"),
                                );
                            }
                            // The timer is only polled when the socket has nothing: a flood
                            // of frames no step takes must not hold a wait (or a sleep) past
                            // its deadline.
                            if Instant::now() >= deadline {
                                return Ok(Read::Timeout);
                            }
                            continue;
                        }
                        Message::Close(frame) => {
                            let (code, reason) = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            Symptom::Close { code, reason }
                        }
                    }
                }
                None => Symptom::Reset("connection closed without a close frame".into()),
                Some(Err(
                    e @ (WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
                    | WsError::ConnectionClosed
                    | WsError::AlreadyClosed
                    | WsError::Io(_)),
                )) => Symptom::Reset(e.to_string()),
                Some(Err(e @ WsError::Capacity(_))) => Symptom::TooLarge(format!(
                    "{e} (target.max_message_bytes = {})",
                    self.p.plan.target.max_message_bytes
                )),
                Some(Err(e)) => Symptom::Protocol(e.to_string()),
            };
            self.ws = None;
            return Err(symptom);
        }
    }

    /// Parses a frame and runs the isolation checks on it; `None` if it is not JSON.
    fn inspect<'t>(&mut self, text: &'t str) -> Option<Json<'t>> {
        let frame = Json::parse(text)?;
        for check in &self.p.isolation {
            let Some(found) = text_at(&frame, &check.pointer) else {
                continue;
            };
            let mut want = std::mem::take(&mut self.vu.expected);
            want.clear();
            let rendered =
                self.with_ctx(|ctx, rng| render_into(&check.equals, ctx, rng, &mut want));
            let ok = found == want.as_str();
            // Kept for the next frame unless a long variable made it large.
            if want.capacity() <= KEEP_EXPECTED {
                self.vu.expected = want;
            }
            if !rendered {
                continue;
            }
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

    fn since(&self, since: Option<usize>, fallback: Instant) -> Instant {
        match since {
            Some(m) => self.marks[m].unwrap_or(fallback),
            None => self.last_send.unwrap_or(fallback),
        }
    }

    fn capture(&mut self, step: &CompiledStep, capture: &[(String, String)], frame: &Json<'_>) {
        for (name, pointer) in capture {
            match text_at(frame, pointer) {
                Some(v) => self.vu.vars.set(name, v.into_owned()),
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
}

/// Counts an unusable frame in `unexpected` and quotes the first one.
fn skip((n, first): &mut (u64, Option<String>), text: &str) {
    /// How much of the first unusable frame a timeout's sample quotes.
    const QUOTE: usize = 160;
    *n += 1;
    if first.is_none() {
        let mut end = text.len().min(QUOTE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < text.len() { "…" } else { "" };
        *first = Some(format!("`{}{cut}`", &text[..end]));
    }
}

fn unrendered(what: &str) -> Symptom {
    Symptom::CheckFailed {
        name: format!("render {what}"),
        sample: format!("`{what}` reads a variable no earlier step captured"),
    }
}

fn describe(matchers: &[CompiledMatcher]) -> String {
    matchers
        .iter()
        .map(|m| m.describe())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// An error frame: `type` `error_message`/`error`, or any frame with an `error_code`.
fn error_frame(frame: &Json<'_>, text: &str) -> Option<Symptom> {
    let kind = frame.get("type").and_then(Json::as_str);
    let code = frame.get("error_code").and_then(Json::as_str);
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

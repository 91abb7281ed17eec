//! One WebSocket connection, from the upgrade request to the close: admission (warm-up, token,
//! injected auth rejection), connection faults, the manager factory, the confirmation frame,
//! then the message loop (ping, heartbeat, agent runs queued behind the testbed's capacity,
//! acks, keepalive, size limits).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{
    CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, MissedTickBehavior};

use crate::app::App;
use crate::auth::{self, Identity};
use crate::capacity::{Entry, RunPermit};
use crate::config::RejectionMode;
use crate::factory::ManagerLease;
use crate::faults::{CONNECTION_FAULTS, FaultKind, fires};
use crate::frames::{self, RunIds};
use crate::pipeline::{self, Outgoing, PipelineKey, RunSlot};
use crate::stats::{RejectReason, UserCounters};

/// Agent runs one connection may have in flight. A run holds its slot until its last frame is
/// written; when every slot is taken the connection stops reading new frames (but keeps
/// writing), so a client that floods `start_agent` meets TCP backpressure instead of making the
/// testbed buffer without bound.
const MAX_RUNS_PER_CONNECTION: usize = 16;

/// Frames waiting to be written: room for every in-flight run's frames (at most 7 each: five,
/// a duplicate, a drop), so a run never waits for room while holding its slot.
const OUTBOX_CAPACITY: usize = MAX_RUNS_PER_CONNECTION * 8;

/// Query parameters of the upgrade request.
#[derive(Debug, Default, Deserialize)]
pub struct UpgradeQuery {
    thread_id: Option<String>,
}

/// Who was let in, and which of their connections this is.
#[derive(Debug)]
struct Admitted {
    identity: Identity,
    connection: u64,
    user: Arc<UserCounters>,
}

/// Why an upgrade request is refused, and whose it was when its token was valid.
#[derive(Debug)]
struct Denied {
    reason: RejectReason,
    user: Option<Arc<UserCounters>>,
}

impl From<RejectReason> for Denied {
    fn from(reason: RejectReason) -> Denied {
        Denied { reason, user: None }
    }
}

/// `GET /ws` and `GET /websocket`.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    Query(query): Query<UpgradeQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let status = rejection.status();
            let body = json!({"detail": rejection.body_text(), "error_code": "NOT_A_WEBSOCKET"});
            return (status, axum::Json(body)).into_response();
        }
    };
    app.stats.accepted.fetch_add(1, Ordering::Relaxed);
    app.mark_request();
    let token = auth::find_token(&headers, uri.query());
    let admission = admit(&app, token.as_ref().map(|t| t.jwt.as_str()));
    if let Err(denied) = &admission
        && denied.reason.is_auth()
        && app.config.auth.rejection == RejectionMode::RejectHandshake
    {
        let reason = denied.reason;
        count_refusal(&app, reason, denied.user.as_deref());
        let status =
            StatusCode::from_u16(app.config.auth.handshake_status).unwrap_or(StatusCode::FORBIDDEN);
        let body = json!({"detail": "Authentication failed", "error_code": "AUTH_FAILED", "reason": reason.name()});
        return (status, axum::Json(body)).into_response();
    }
    let conn_no = app.next_connection_id();
    let thread_id = query
        .thread_id
        .unwrap_or_else(|| format!("thread_{conn_no}"));
    let ws_config = &app.config.websocket;
    let mut ws = ws
        .read_buffer_size(ws_config.read_buffer_bytes)
        .write_buffer_size(0)
        .max_message_size(ws_config.max_message_bytes)
        .max_frame_size(ws_config.max_message_bytes);
    if let Some(protocol) = token.and_then(|t| t.subprotocol) {
        ws = ws.protocols([protocol]);
    }
    ws.on_upgrade(move |socket| async move {
        match admission {
            Ok(admitted) => serve_admitted(app, socket, admitted, conn_no, thread_id).await,
            Err(denied) => refuse(&app, socket, denied.reason, denied.user.as_deref()).await,
        }
    })
}

/// Decides, before the upgrade, whether the connection is let in.
fn admit(app: &App, jwt: Option<&str>) -> Result<Admitted, Denied> {
    if app.warming_up() {
        return Err(RejectReason::WarmingUp.into());
    }
    let identity = app.validator.validate(jwt.ok_or(RejectReason::NoToken)?)?;
    let connection = app.factory.next_connection(&identity.sub);
    let user = app.stats.user_connection(&identity.sub);
    let faults = app.faults_in_force();
    if let Some(f) = &faults.auth_reject
        && fires(
            app.config.seed,
            FaultKind::AuthReject,
            f.rate,
            f.users.as_ref(),
            &identity.sub,
            &[connection],
        )
    {
        app.stats.fault(FaultKind::AuthReject);
        return Err(Denied {
            reason: RejectReason::InjectedAuth,
            user: Some(user),
        });
    }
    Ok(Admitted {
        identity,
        connection,
        user,
    })
}

/// What an accepted-then-refused connection is told: an optional error frame, then a close.
fn refusal(reason: RejectReason) -> (Option<String>, u16, &'static str) {
    let auth_failed = |code| {
        let frame = frames::error_message(
            code,
            "Authentication failed: Valid JWT token required for WebSocket connection",
            json!({"reason": reason.name()}),
        );
        (Some(frame), 1008, "SSOT Auth failed")
    };
    match reason {
        RejectReason::NoToken => auth_failed("NO_TOKEN"),
        r if r.is_auth() => auth_failed("AUTH_FAILED"),
        RejectReason::UserContext => (
            Some(frames::error_message(
                "AUTH_REQUIRED",
                "Authentication failed: Valid JWT token required for WebSocket connection",
                json!({"environment": "staging", "error": "user_context must be a UserExecutionContext instance"}),
            )),
            1008,
            "Authentication failed",
        ),
        RejectReason::FactoryInitFailed => (
            Some(frames::error_message(
                "FACTORY_INIT_FAILED",
                "Factory SSOT validation failed",
                json!({}),
            )),
            1011,
            "Factory SSOT validation failed",
        ),
        RejectReason::FactoryCritical => (
            Some(frames::error_message(
                "FACTORY_CRITICAL_FAILURE",
                "Critical factory failure",
                json!({}),
            )),
            1011,
            "Critical factory failure",
        ),
        RejectReason::ServiceNotReady => (
            None,
            1011,
            "Service not ready: agent supervisor not initialized",
        ),
        RejectReason::WarmingUp => (None, 1011, "Service not ready: starting up"),
        _ => (None, 1011, "Internal error"),
    }
}

/// Counts a refused connection, for its user too when its token was valid.
fn count_refusal(app: &App, reason: RejectReason, user: Option<&UserCounters>) {
    app.stats.reject(reason);
    if let Some(user) = user {
        user.rejected();
    }
}

/// Sends the refusal for `reason` and closes; `user` is the connection's when its token was
/// valid.
async fn refuse(
    app: &App,
    mut socket: WebSocket,
    reason: RejectReason,
    user: Option<&UserCounters>,
) {
    count_refusal(app, reason, user);
    let (frame, code, text) = refusal(reason);
    if let Some(frame) = frame
        && send(app, &mut socket, frame).await.is_err()
    {
        return;
    }
    close(app, socket, code, text).await;
}

/// Sends a close frame, then reads until the client answers it (or the send timeout passes), so
/// the close frame is never lost to a TCP reset.
async fn close(app: &App, mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let drain = async { while let Some(Ok(_)) = socket.recv().await {} };
    let _ = tokio::time::timeout(app.config.websocket.send_timeout, drain).await;
}

/// Writes one text frame, giving up after the send timeout (a client that never reads).
async fn send(app: &App, socket: &mut WebSocket, text: String) -> Result<(), ()> {
    match tokio::time::timeout(
        app.config.websocket.send_timeout,
        socket.send(Message::Text(text.into())),
    )
    .await
    {
        Ok(Ok(())) => {
            app.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Ok(Err(_)) => Err(()),
        Err(_) => {
            app.stats.send_timeouts.fetch_add(1, Ordering::Relaxed);
            Err(())
        }
    }
}

async fn serve_admitted(
    app: Arc<App>,
    socket: WebSocket,
    admitted: Admitted,
    conn_no: u64,
    thread_id: String,
) {
    let sub = admitted.identity.sub.as_str();
    let faults = app.faults_in_force();
    for kind in CONNECTION_FAULTS {
        let Some(f) = faults.connection(kind) else {
            continue;
        };
        if fires(
            app.config.seed,
            kind,
            f.rate,
            f.users.as_ref(),
            sub,
            &[admitted.connection],
        ) {
            app.stats.fault(kind);
            let reason = match kind {
                FaultKind::ServiceNotReady => RejectReason::ServiceNotReady,
                FaultKind::UserContext => RejectReason::UserContext,
                FaultKind::FactoryCritical => RejectReason::FactoryCritical,
                FaultKind::FactoryInit => RejectReason::FactoryInitFailed,
                _ => RejectReason::InternalError,
            };
            return refuse(&app, socket, reason, Some(&admitted.user)).await;
        }
    }
    drop(faults);
    let lease = match app.factory.acquire(sub, &thread_id) {
        Ok(lease) => lease,
        Err(_) => {
            return refuse(
                &app,
                socket,
                RejectReason::FactoryInitFailed,
                Some(&admitted.user),
            )
            .await;
        }
    };
    let conn = Connection {
        app: app.clone(),
        socket,
        lease,
        sub: admitted.identity.sub.clone(),
        thread_id,
        conn_id: format!("conn_{conn_no}"),
        user_connection: admitted.connection,
        user: admitted.user,
        pipelines: 0,
        outbox: None,
        run_slots: None,
        waiting_run: None,
    };
    let hello = frames::confirmation(
        app.config.websocket.confirmation,
        &conn.conn_id,
        &conn.sub,
        &conn.thread_id,
        &app.server_id,
    );
    let mut conn = conn;
    if send(&app, &mut conn.socket, hello).await.is_err() {
        return;
    }
    app.stats.established.fetch_add(1, Ordering::Relaxed);
    conn.user.established();
    conn.run().await;
    app.stats.closed.fetch_add(1, Ordering::Relaxed);
}

/// The fields of a client frame the service reads.
#[derive(Debug, Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    thread_id: Option<String>,
}

/// Reads a client frame: a JSON object with a string `type` (serde would also fill the struct
/// from a JSON array, `["ping"]`, which the service refuses).
fn incoming(text: &str) -> Option<Incoming<'_>> {
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// How the message loop ended.
enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// Just drop the socket (peer gone, timeout, or an injected TCP drop).
    Drop,
}

struct Connection {
    app: Arc<App>,
    socket: WebSocket,
    lease: ManagerLease,
    sub: String,
    thread_id: String,
    conn_id: String,
    user_connection: u64,
    /// The user's counters in stats.
    user: Arc<UserCounters>,
    pipelines: u64,
    /// Created with the first agent run, so idle connections stay small.
    outbox: Option<(mpsc::Sender<Outgoing>, mpsc::Receiver<Outgoing>)>,
    /// Slots for in-flight agent runs, created with the outbox.
    run_slots: Option<Arc<Semaphore>>,
    /// A run asked for while every slot was taken (its `thread_id`); reading pauses until a
    /// slot frees.
    waiting_run: Option<Option<String>>,
}

async fn free_slot(slots: Option<&Arc<Semaphore>>) -> OwnedSemaphorePermit {
    match slots {
        Some(slots) => match slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => std::future::pending().await, // the semaphore is never closed
        },
        None => std::future::pending().await,
    }
}

async fn next_outgoing(
    outbox: &mut Option<(mpsc::Sender<Outgoing>, mpsc::Receiver<Outgoing>)>,
) -> Option<Outgoing> {
    match outbox {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    async fn run(mut self) {
        let app = self.app.clone();
        let ws = &app.config.websocket;
        let keepalive_on = !ws.keepalive_interval.is_zero();
        let period = if keepalive_on {
            ws.keepalive_interval
        } else {
            std::time::Duration::from_secs(3600)
        };
        let mut keepalive = tokio::time::interval_at(Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ping_sent: Option<Instant> = None;
        let end = loop {
            tokio::select! {
                () = app.shutdown.cancelled() => break End::Close(1001, "Server shutting down"),
                slot = free_slot(self.run_slots.as_ref()), if self.waiting_run.is_some() => {
                    let thread_id = self.waiting_run.take().flatten();
                    self.start_pipeline(thread_id, slot);
                }
                msg = self.socket.recv(), if self.waiting_run.is_none() => match msg {
                    None => break End::Drop,
                    Some(Err(e)) => match protocol_error(&e) {
                        Some(ProtocolError::TooLarge) => {
                            app.stats.too_large_closes.fetch_add(1, Ordering::Relaxed);
                            break End::Close(1009, "Message too big");
                        }
                        Some(ProtocolError::NotUtf8) => {
                            app.stats.invalid_utf8_closes.fetch_add(1, Ordering::Relaxed);
                            break End::Close(1007, "Invalid frame payload data");
                        }
                        None => break End::Drop,
                    },
                    Some(Ok(Message::Text(text))) => {
                        app.stats.frames_received.fetch_add(1, Ordering::Relaxed);
                        self.lease.activity().touch();
                        if self.on_text(text.as_str()).await.is_err() {
                            break End::Drop;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        app.stats.frames_received.fetch_add(1, Ordering::Relaxed);
                        app.stats.binary_frames.fetch_add(1, Ordering::Relaxed);
                        self.lease.activity().touch();
                        let frame = frames::error_message("FORMAT_ERROR", "Binary frames are not supported; send JSON text frames", json!({}));
                        if send(&app, &mut self.socket, frame).await.is_err() {
                            break End::Drop;
                        }
                    }
                    Some(Ok(Message::Pong(_))) => {
                        app.stats.keepalive_pongs.fetch_add(1, Ordering::Relaxed);
                        ping_sent = None;
                    }
                    Some(Ok(Message::Ping(_) | Message::Close(_))) => {}
                },
                item = next_outgoing(&mut self.outbox) => match item {
                    Some(Outgoing::Event { event, text, completes, slot: _slot }) => {
                        if send(&app, &mut self.socket, text).await.is_err() {
                            break End::Drop;
                        }
                        app.stats.event_sent(event);
                        if completes {
                            app.stats.pipelines_completed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Outgoing::Drop) => {
                        app.stats.pipelines_dropped.fetch_add(1, Ordering::Relaxed);
                        break End::Drop;
                    }
                    None => {}
                },
                _ = keepalive.tick(), if keepalive_on => {
                    if ping_sent.is_some_and(|at| at.elapsed() >= ws.keepalive_timeout) {
                        app.stats.keepalive_timeouts.fetch_add(1, Ordering::Relaxed);
                        break End::Close(1011, "keepalive ping timeout");
                    }
                    if ping_sent.is_none() {
                        ping_sent = Some(Instant::now());
                        let ping = self.socket.send(Message::Ping(Default::default()));
                        if tokio::time::timeout(ws.send_timeout, ping).await.map_or(true, |r| r.is_err()) {
                            break End::Drop;
                        }
                    }
                }
            }
        };
        // Close the outbox so pipeline tasks stop before they wake to write.
        self.outbox = None;
        if let End::Close(code, reason) = end {
            close(&app, self.socket, code, reason).await;
        }
    }

    /// Handles one text frame; `Err` means the client is gone.
    async fn on_text(&mut self, text: &str) -> Result<(), ()> {
        let app = self.app.clone();
        if text.len() > app.config.websocket.max_frame_bytes {
            app.stats.oversize_dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let reply = match incoming(text) {
            None => {
                app.stats.invalid_json.fetch_add(1, Ordering::Relaxed);
                frames::error_message(
                    "FORMAT_ERROR",
                    "Invalid message format: expected a JSON object with a string \"type\"",
                    json!({}),
                )
            }
            Some(msg) => match msg.kind.as_ref() {
                "ping" => {
                    app.stats.pongs.fetch_add(1, Ordering::Relaxed);
                    frames::pong(&self.sub)
                }
                "heartbeat" => frames::heartbeat_ack(&self.sub),
                "user_message" | "message" | "chat" | "chat_message" | "start_agent"
                | "execute_agent" => {
                    let slots = self
                        .run_slots
                        .get_or_insert_with(|| Arc::new(Semaphore::new(MAX_RUNS_PER_CONNECTION)));
                    match slots.clone().try_acquire_owned() {
                        Ok(slot) => self.start_pipeline(msg.thread_id, slot),
                        Err(_) => self.waiting_run = Some(msg.thread_id),
                    }
                    return Ok(());
                }
                other => {
                    app.stats.acks.fetch_add(1, Ordering::Relaxed);
                    frames::ack(other)
                }
            },
        };
        send(&app, &mut self.socket, reply).await
    }

    /// Starts an agent run, or queues it behind the testbed's capacity: numbered (which keys
    /// its fault and delay draws) when it arrives, started when it is admitted.
    fn start_pipeline(&mut self, thread_id: Option<String>, slot: OwnedSemaphorePermit) {
        let number = self.pipelines;
        self.pipelines += 1;
        let ids = Arc::new(RunIds {
            run_id: format!("run_{}_{number}", self.conn_id),
            thread_id: thread_id.unwrap_or_else(|| self.thread_id.clone()),
            request_id: format!("req_{}_{number}", self.conn_id),
            agent_name: self.app.config.pipeline.agent_name.clone(),
        });
        let outbox = self
            .outbox
            .get_or_insert_with(|| mpsc::channel(OUTBOX_CAPACITY))
            .0
            .clone();
        let run = Run {
            app: self.app.clone(),
            sub: self.sub.clone(),
            user_connection: self.user_connection,
            number,
            user: self.user.clone(),
            ids,
            outbox,
            slot,
        };
        match self.app.capacity.enter() {
            Entry::Now(permit) => {
                tokio::spawn(run.start(permit));
            }
            Entry::Queued(queued) => {
                tokio::spawn(async move {
                    let permit = tokio::select! {
                        permit = queued.admitted() => permit,
                        // The connection ended while the run waited: it leaves the queue.
                        () = run.outbox.closed() => return,
                    };
                    run.start(permit).await;
                });
            }
        }
    }
}

/// An agent run that has arrived on a connection: everything it needs to start, owned, so it
/// can wait for capacity in a task of its own.
struct Run {
    app: Arc<App>,
    sub: String,
    user_connection: u64,
    number: u64,
    user: Arc<UserCounters>,
    ids: Arc<RunIds>,
    outbox: mpsc::Sender<Outgoing>,
    /// The connection's slot, held while the run waits too.
    slot: OwnedSemaphorePermit,
}

impl Run {
    /// Counts the run as started, draws its schedule (and faults) now, and returns the task
    /// that plays it.
    fn start(self, capacity: RunPermit) -> impl Future<Output = ()> + Send + 'static {
        let app = self.app;
        app.stats.pipelines_started.fetch_add(1, Ordering::Relaxed);
        self.user.pipeline();
        let key = PipelineKey {
            seed: app.config.seed,
            sub: &self.sub,
            connection: self.user_connection,
            pipeline: self.number,
        };
        let faults = app.faults_in_force();
        let (steps, injected) = pipeline::schedule(&key, &app.config.pipeline.delay, &faults);
        for kind in injected {
            app.stats.fault(kind);
        }
        let shape = app.config.websocket.event_shape;
        let slot = RunSlot {
            connection: self.slot,
            capacity,
        };
        let (ids, outbox) = (self.ids, self.outbox);
        async move {
            if !pipeline::play(steps, shape, ids, outbox, slot).await {
                app.stats.pipelines_aborted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Client mistakes that deserve a close code rather than a silent drop.
enum ProtocolError {
    /// A message over `max_message_bytes` (1009).
    TooLarge,
    /// A text frame that is not UTF-8 (1007).
    NotUtf8,
}

fn protocol_error(error: &axum::Error) -> Option<ProtocolError> {
    use std::error::Error as _;
    use tokio_tungstenite::tungstenite::Error as WsError;
    match error.source().and_then(|e| e.downcast_ref::<WsError>()) {
        Some(WsError::Capacity(_)) => Some(ProtocolError::TooLarge),
        Some(WsError::Utf8(_)) => Some(ProtocolError::NotUtf8),
        _ => None,
    }
}

/// `GET /ws/test`: no auth; confirms the connection, answers pings, and closes when the client
/// does.
pub async fn test_upgrade(
    State(app): State<Arc<App>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return (
                rejection.status(),
                axum::Json(json!({"detail": rejection.body_text()})),
            )
                .into_response();
        }
    };
    ws.read_buffer_size(app.config.websocket.read_buffer_bytes).write_buffer_size(0).on_upgrade(move |mut socket| async move {
        let hello = json!({"type": "connection_established", "data": {"test": true, "connection_ready": true}, "timestamp": frames::timestamp()});
        if send(&app, &mut socket, hello.to_string()).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = socket.recv().await {
            if let Message::Text(text) = msg
                && incoming(text.as_str()).is_some_and(|m| m.kind == "ping")
                && send(&app, &mut socket, frames::pong("test")).await.is_err()
            {
                return;
            }
        }
    })
}

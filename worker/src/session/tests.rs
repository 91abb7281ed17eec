//! The conversation steps against a scripted peer over in-memory channels: no network, paused
//! time where a wait matters. Each test runs a real session (its recorder, checks and
//! classification) on a socket handed to it after the scenario's `ws_connect`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use gauntlet_core::metrics::{FailureKey, FailureStats, Snapshot};
use gauntlet_core::plan::{Overrides, Plan};
use gauntlet_core::words::FailureCategory;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::PollSender;

use super::pause::MAX_HELD_BYTES;
use super::*;
use crate::recorder::Collector;

/// Frames either way a test's script holds at most before one side waits.
const PIPE: usize = 16;

/// The session's end of an in-memory WebSocket: what it sends goes to the [`Peer`], what the
/// peer says it reads.
struct Pipe {
    out: PollSender<Message>,
    incoming: mpsc::Receiver<Result<Message, WsError>>,
}

impl Sink<Message> for Pipe {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        self.out
            .poll_reserve(cx)
            .map_err(|_| WsError::ConnectionClosed)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.out
            .send_item(item)
            .map_err(|_| WsError::ConnectionClosed)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        self.out.close();
        Poll::Ready(Ok(()))
    }
}

impl Stream for Pipe {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

/// The scripted other end: dropping it ends the session's stream (a connection gone without
/// a close frame).
struct Peer {
    says: mpsc::Sender<Result<Message, WsError>>,
    hears: mpsc::Receiver<Message>,
}

impl Peer {
    async fn say(&self, msg: Message) {
        self.says.send(Ok(msg)).await.unwrap();
    }

    async fn say_text(&self, text: &str) {
        self.say(Message::text(text)).await;
    }

    /// The next frame the session sent.
    async fn heard(&mut self) -> Message {
        self.hears.recv().await.unwrap()
    }
}

/// A server's close for a ping left unanswered (uvicorn's 1011).
fn keepalive_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Error,
        reason: "keepalive ping timeout".into(),
    }))
}

fn pipe() -> (Ws, Peer) {
    let (out, hears) = mpsc::channel(PIPE);
    let (says, incoming) = mpsc::channel(PIPE);
    let socket = Pipe {
        out: PollSender::new(out),
        incoming,
    };
    (Box::new(socket), Peer { says, hears })
}

/// A one-scenario plan (`s`) whose steps follow a `ws_connect`, then `extra` tables; no
/// auth, so the VU's subject is `vu-0`.
fn program(steps: &str, extra: &str) -> Program {
    let text = format!(
        r#"name = "unit"
[target]
base_url = "http://127.0.0.1:9"
[load]
vus = 1
iterations = 1
[[scenarios]]
name = "s"
steps = [
  {{ ws_connect = {{}} }},
  {steps}
]
{extra}
"#
    );
    let plan = match Plan::from_text("unit.toml", &text, &Overrides::default()) {
        Ok(p) => p,
        Err(e) => panic!("bad test plan: {e}\n{text}"),
    };
    Program::compile(plan).unwrap()
}

/// Runs VU 0's session of scenario `s` on `ws`; its outcome and everything it recorded.
async fn converse(program: &Program, ws: Ws) -> (Outcome, Snapshot) {
    let collector = Arc::new(Collector::new(
        program.metric_names.clone(),
        program.check_names.clone(),
        Instant::now(),
    ));
    let mut vu = Vu::new(program, 0, collector.recorder(0), 7);
    let outcome = run_session_on(program, &mut vu, 0, Instant::now(), ws).await;
    vu.rec.flush();
    (outcome, collector.take())
}

/// The one failure pattern of a snapshot.
fn only_failure(s: &Snapshot) -> (&FailureKey, &FailureStats) {
    assert_eq!(s.failures.len(), 1, "{:?}", s.failures);
    s.failures.iter().next().unwrap()
}

fn check(s: &Snapshot, name: &str) -> (u64, u64) {
    let c = &s.checks[name];
    (c.run, c.failed)
}

#[tokio::test]
async fn an_expect_skips_what_does_not_match_and_passes_on_what_does() {
    let p = program(
        r#"{ ws_send = { json = { type = "ping" } } },
  { ws_expect = { type = "pong", timeout = "3s" } },"#,
        "",
    );
    let (ws, mut peer) = pipe();
    let script = async {
        let sent = peer.heard().await;
        assert_eq!(sent, Message::text(r#"{"type":"ping"}"#));
        peer.say_text("not json").await;
        peer.say_text(r#"{"type":"other"}"#).await;
        peer.say_text(r#"{"type":"pong"}"#).await;
        // The session, its verdict made, closes politely.
        assert_eq!(peer.heard().await, Message::Close(None));
    };
    let ((outcome, s), ()) = tokio::join!(converse(&p, ws), script);
    assert_eq!(outcome, Outcome::Passed, "{:?}", s.failures);
    assert!(s.failures.is_empty());
    assert_eq!(check(&s, "s/expect pong"), (1, 0));
    assert_eq!(s.counters.sessions_passed, 1);
    assert_eq!(s.counters.frames_sent, 1);
    assert_eq!(s.counters.frames_received, 3);
    assert_eq!(s.histograms["event.s.expect pong"].len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_expect_times_out_among_junk_and_says_what_came_meanwhile() {
    let p = program(r#"{ ws_expect = { type = "pong", timeout = "2s" } },"#, "");
    let (ws, peer) = pipe();
    peer.say_text("junk").await;
    peer.say_text(r#"{"type":"other"}"#).await;
    peer.say(Message::binary(vec![0u8; 5])).await;
    let started = Instant::now();
    // The peer stays connected and silent: only the step's timeout ends the wait.
    let (outcome, s) = converse(&p, ws).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2010),
        "{waited:?}"
    );
    assert_eq!(outcome, Outcome::Failed);
    let (key, stats) = only_failure(&s);
    assert_eq!(key.category, FailureCategory::Timeout);
    assert_eq!(key.step, "expect pong");
    assert_eq!(key.detail, "expect pong: /type == \"pong\"");
    assert_eq!(stats.count, 1);
    assert_eq!(
        stats.samples,
        vec![
            "expect pong: /type == \"pong\" (meanwhile 3 frames arrived that it did not wait for, \
             the first: `junk`)"
        ]
    );
    assert_eq!(check(&s, "s/expect pong"), (1, 1));
    assert_eq!(s.counters.sessions_failed, 1);
    assert_eq!(s.counters.frames_received, 3);
    drop(peer);
}

#[tokio::test]
async fn a_sequence_with_a_duplicate_fails_as_one_and_the_conversation_goes_on() {
    let p = program(
        r#"{ ws_send = { json = { type = "start" } } },
  { ws_expect_sequence = { name = "events", orders = [["a", "b", "c"]], timeout = "5s" } },
  { ws_send = { json = { type = "after" } } },"#,
        "",
    );
    let (ws, mut peer) = pipe();
    let script = async {
        assert_eq!(peer.heard().await, Message::text(r#"{"type":"start"}"#));
        for t in ["a", "b", "b", "c"] {
            peer.say_text(&format!(r#"{{"type":"{t}"}}"#)).await;
        }
        // A wrong conversation on a sound socket: the next step still runs.
        assert_eq!(peer.heard().await, Message::text(r#"{"type":"after"}"#));
        assert_eq!(peer.heard().await, Message::Close(None));
    };
    let ((outcome, s), ()) = tokio::join!(converse(&p, ws), script);
    assert_eq!(outcome, Outcome::Failed);
    let (key, stats) = only_failure(&s);
    assert_eq!(key.category, FailureCategory::DuplicateEvent);
    assert_eq!(key.step, "events");
    assert_eq!(key.detail, "b");
    assert_eq!(stats.count, 1);
    assert_eq!(check(&s, "s/events"), (1, 1));
    assert_eq!(s.counters.frames_sent, 2);
    assert_eq!(s.counters.frames_received, 4);
    // Each expected type's latency is recorded once, the duplicate's included.
    for t in ["a", "b", "c"] {
        assert_eq!(s.histograms[&format!("event.s.{t}")].len(), 1, "{t}");
    }
}

#[tokio::test]
async fn a_frame_with_another_users_id_is_an_isolation_breach() {
    let p = program(
        r#"{ ws_expect = { type = "pong", timeout = "3s" } },"#,
        r#"[[isolation]]
name = "user"
pointer = "/user_id"
equals = "{subject}""#,
    );
    let (ws, peer) = pipe();
    peer.say_text(r#"{"type":"hello","user_id":"vu-0"}"#).await;
    peer.say_text(r#"{"type":"pong","user_id":"vu-1"}"#).await;
    let (outcome, s) = converse(&p, ws).await;
    assert_eq!(outcome, Outcome::Failed);
    let (key, stats) = only_failure(&s);
    assert_eq!(key.category, FailureCategory::IsolationBreach);
    assert_eq!(key.step, "isolation:user");
    assert_eq!(key.detail, "user");
    assert_eq!(
        stats.samples,
        vec![r#"{"type":"pong","user_id":"vu-1"}"#.to_owned()]
    );
    // The own frame passed, the other user's did not; the expectation itself matched.
    assert_eq!(check(&s, "isolation:user"), (2, 1));
    assert_eq!(check(&s, "s/expect pong"), (1, 0));
    drop(peer);
}

#[tokio::test]
async fn a_close_the_peer_answers_ends_the_session_cleanly() {
    let p = program(
        r#"{ ws_close = { code = 1000, reason = "bye", timeout = "3s" } },"#,
        "",
    );
    let (ws, mut peer) = pipe();
    let script = async {
        let expected = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }));
        assert_eq!(peer.heard().await, expected);
        peer.say(expected).await;
        // The reply sent, the connection ends.
        drop(peer.says);
        peer.hears
    };
    let ((outcome, s), mut hears) = tokio::join!(converse(&p, ws), script);
    assert_eq!(outcome, Outcome::Passed, "{:?}", s.failures);
    assert!(s.failures.is_empty());
    // The step reads past the reply to the end of the stream without counting it.
    assert_eq!(s.counters.frames_received, 0);
    // Closed by the step: no second close at the session's end.
    assert_eq!(
        hears.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    );
}

#[tokio::test]
async fn a_server_that_had_closed_with_its_own_code_fails_the_close_step() {
    let p = program(r#"{ ws_close = { timeout = "3s" } },"#, "");
    let (ws, mut peer) = pipe();
    let script = async {
        // The server's close (a keepalive timeout) arrived first; the step's close crosses it.
        peer.say(keepalive_close()).await;
        assert!(matches!(peer.heard().await, Message::Close(Some(_))));
        drop(peer.says);
        peer.hears
    };
    let ((outcome, s), _hears) = tokio::join!(converse(&p, ws), script);
    assert_eq!(outcome, Outcome::Failed);
    let (key, _) = only_failure(&s);
    assert_eq!(key.step, "ws_close");
    assert_eq!(key.category, FailureCategory::InternalError, "{key:?}");
    assert!(key.detail.contains("1011"), "{key:?}");
}

#[tokio::test(start_paused = true)]
async fn a_close_the_peer_ignores_times_out() {
    let p = program(r#"{ ws_close = { timeout = "2s" } },"#, "");
    let (ws, mut peer) = pipe();
    let (outcome, s) = converse(&p, ws).await;
    assert!(matches!(peer.heard().await, Message::Close(Some(_))));
    assert_eq!(outcome, Outcome::Failed);
    let (key, _) = only_failure(&s);
    assert_eq!(key.category, FailureCategory::Timeout);
    assert_eq!(key.step, "ws_close");
    assert_eq!(key.detail, "ws_close: close reply");
    drop(peer);
}

#[tokio::test]
async fn a_ping_is_answered_by_a_pong() {
    let p = program(r#"{ ws_ping = { timeout = "3s" } },"#, "");
    let (ws, mut peer) = pipe();
    let script = async {
        assert!(matches!(peer.heard().await, Message::Ping(_)));
        peer.say_text(r#"{"type":"noise"}"#).await;
        peer.say(Message::Pong(Vec::new().into())).await;
        assert_eq!(peer.heard().await, Message::Close(None));
    };
    let ((outcome, s), ()) = tokio::join!(converse(&p, ws), script);
    assert_eq!(outcome, Outcome::Passed, "{:?}", s.failures);
    assert_eq!(check(&s, "s/ws_ping"), (1, 0));
    assert_eq!(s.counters.frames_sent, 1);
    assert_eq!(s.counters.frames_received, 2);
}

#[tokio::test]
async fn a_peer_gone_without_a_close_frame_is_an_unexpected_close() {
    let p = program(r#"{ ws_expect = { type = "pong", timeout = "3s" } },"#, "");
    let (ws, peer) = pipe();
    drop(peer);
    let (outcome, s) = converse(&p, ws).await;
    assert_eq!(outcome, Outcome::Failed);
    let (key, _) = only_failure(&s);
    assert_eq!(key.category, FailureCategory::UnexpectedClose);
    assert_eq!(key.detail, "1006");
    assert_eq!(check(&s, "s/expect pong"), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn frames_that_arrive_during_a_sleep_are_read_by_the_steps_after_it_in_order() {
    let p = program(
        r#"{ sleep = { duration = "10s" } },
  { ws_expect = { type = "first", timeout = "1s" } },
  { ws_expect = { type = "second", timeout = "1s" } },"#,
        "",
    );
    let (ws, mut peer) = pipe();
    let script = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peer.say_text(r#"{"type":"first"}"#).await;
        peer.say_text(r#"{"type":"second"}"#).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The sleeping session read both off the socket (which answers a server's pings).
        assert_eq!(peer.says.capacity(), PIPE);
        assert_eq!(peer.heard().await, Message::Close(None));
    };
    let ((outcome, s), ()) = tokio::join!(converse(&p, ws), script);
    assert_eq!(outcome, Outcome::Passed, "{:?}", s.failures);
    assert_eq!(check(&s, "s/expect first"), (1, 0));
    assert_eq!(check(&s, "s/expect second"), (1, 0));
    assert_eq!(s.counters.frames_received, 2);
}

#[tokio::test(start_paused = true)]
async fn a_sleep_holds_at_most_its_bound_and_leaves_the_rest_in_the_socket() {
    // Frames of 8 KiB: the pause stops reading once it holds 64 KiB (8 of them).
    let pad = "x".repeat(8 << 10);
    let held = MAX_HELD_BYTES.div_ceil(pad.len() + 30);
    let fillers = held + 3;
    let order: Vec<String> = (0..fillers)
        .map(|i| format!("\"f{i}\""))
        .chain(["\"last\"".to_owned()])
        .collect();
    let p = program(
        &format!(
            r#"{{ sleep = {{ duration = "10s" }} }},
  {{ ws_expect_sequence = {{ name = "in order", orders = [[{}]], timeout = "1s" }} }},"#,
            order.join(", ")
        ),
        "",
    );
    let (ws, mut peer) = pipe();
    let script = async {
        for i in 0..fillers {
            peer.say_text(&format!(r#"{{"type":"f{i}","pad":"{pad}"}}"#))
                .await;
        }
        peer.say_text(r#"{"type":"last"}"#).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            PIPE - peer.says.capacity(),
            4,
            "unread while the session sleeps"
        );
        assert_eq!(peer.heard().await, Message::Close(None));
    };
    let ((outcome, s), ()) = tokio::join!(converse(&p, ws), script);
    // Held frames first, then the socket's, in the order they were sent.
    assert_eq!(outcome, Outcome::Passed, "{:?}", s.failures);
    assert_eq!(check(&s, "s/in order"), (1, 0));
    assert_eq!(s.counters.frames_received, fillers as u64 + 1);
}

/// A server that always has another ping ready (up to `left`), and keeps what the session
/// sends.
struct Flood {
    left: u64,
    sent: Arc<std::sync::Mutex<Vec<Message>>>,
}

impl Sink<Message> for Flood {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.sent.lock().unwrap().push(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
}

impl Stream for Flood {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.left == 0 {
            // Spent: silent from now on (the session's timer wakes it).
            return Poll::Pending;
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Message::Ping(Vec::new().into()))))
    }
}

#[tokio::test]
async fn a_flood_of_pings_does_not_hold_a_sleep_past_its_end() {
    /// Pings the server has ready at most (bounded whether or not the sleep ends).
    const LIMIT: u64 = 1_000_000;
    let p = program(
        r#"{ sleep = { duration = "50ms" } },
  { ws_send = { json = { type = "done" } } },"#,
        "",
    );
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let flood = Flood {
        left: LIMIT,
        sent: sent.clone(),
    };
    let (outcome, s) = converse(&p, Box::new(flood)).await;
    assert_eq!(outcome, Outcome::Passed, "{:?}", s.failures);
    let sent = sent.lock().unwrap();
    assert_eq!(sent[0], Message::text(r#"{"type":"done"}"#));
    // Every ping the sleep read is counted: it ended while more were ready.
    assert!(
        s.counters.frames_received < LIMIT,
        "the sleep read all {LIMIT} pings"
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_close_during_a_sleep_fails_the_send_after_it() {
    let p = program(
        r#"{ sleep = { duration = "10s" } },
  { ws_send = { json = { type = "hello" } } },"#,
        "",
    );
    let (ws, peer) = pipe();
    let script = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peer.say(keepalive_close()).await;
        peer
    };
    let ((outcome, s), mut peer) = tokio::join!(converse(&p, ws), script);
    assert_eq!(outcome, Outcome::Failed);
    let (key, _) = only_failure(&s);
    assert_eq!(key.step, "ws_send");
    assert_eq!(key.category, FailureCategory::InternalError, "{key:?}");
    assert!(key.detail.contains("1011"), "{key:?}");
    assert_eq!(s.counters.frames_sent, 0);
    // Nothing was written to the closed connection.
    assert!(peer.hears.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_server_close_during_a_sleep_fails_the_close_step() {
    let p = program(
        r#"{ sleep = { duration = "10s" } },
  { ws_close = { timeout = "3s" } },"#,
        "",
    );
    let (ws, peer) = pipe();
    let script = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peer.say_text(r#"{"type":"noise"}"#).await;
        peer.say(keepalive_close()).await;
        // The server's stream ends after its close, as a real server's does.
        drop(peer.says);
        peer.hears
    };
    let ((outcome, s), _hears) = tokio::join!(converse(&p, ws), script);
    assert_eq!(outcome, Outcome::Failed);
    let (key, _) = only_failure(&s);
    assert_eq!(key.step, "ws_close");
    assert_eq!(key.category, FailureCategory::InternalError, "{key:?}");
    assert!(key.detail.contains("1011"), "{key:?}");
}

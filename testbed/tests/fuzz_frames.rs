//! Fuzzes the testbed's handling of client frames over real connections (127.0.0.1, port 0):
//! arbitrary text, arbitrary JSON, mutated valid frames, binary frames, oversize frames, and
//! frames that must close the connection (invalid UTF-8, over `max_message_bytes`). Asserts that
//! every frame gets the reply the protocol gives it (`docs/testbed.md`: pong, heartbeat_ack,
//! ack with its type, an agent run of five events in order with the frame's thread_id,
//! FORMAT_ERROR for anything that is not a JSON object with a string `type`, nothing for a text
//! frame over `max_frame_bytes`, a close code for the closers), and that the server lives on:
//! fresh connections get their confirmation, pings their pong, and `/__testbed/stats` answers
//! with counts that match what was sent.
//!
//! Seeds: `fuzz/corpus/frames/`: `*.json` and `*.txt` are sent as text frames (raw bytes:
//! not UTF-8 means close 1007), `*.bin` as binary frames.
//!
//! Bounded: a few connections per run (a new one every `ROTATE` cases, and one per closer),
//! at most 8 frames per case, every wait bounded by `common::LIMIT`.

#![allow(clippy::unwrap_used)]

mod common;

#[path = "../../fuzz/support.rs"]
mod support;

use std::cell::RefCell;

use common::*;
use futures_util::SinkExt;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use support::Outcome;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// Cases sent on one connection before the next one is opened.
const ROTATE: u32 = 128;
/// The testbed's default (`docs/testbed.md`).
const MAX_FRAME_BYTES: usize = 8192;
/// Below the 1 MiB default: a client still writing a refused message when the testbed stops
/// reading it meets a TCP reset that can discard the close frame, and loopback buffers hold
/// 64 KiB whole (as in `protocol.rs`).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const AGENT_TYPES: [&str; 6] = [
    "start_agent",
    "execute_agent",
    "user_message",
    "message",
    "chat",
    "chat_message",
];
const EVENTS: [&str; 5] = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
];

/// One client frame.
#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// What the protocol answers to one frame.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Pong,
    HeartbeatAck,
    Ack(String),
    FormatError,
    /// An agent run; its events carry this thread_id (`None`: the connection's).
    Run(Option<String>),
    /// Silently dropped (over `max_frame_bytes`).
    Nothing,
}

/// The `type` and `thread_id` fields of a JSON object, in order, duplicates kept.
struct Fields(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    // The fields the service reads, whole; the rest only as valid JSON (of any
                    // depth: serde_json's recursion limit is for values it builds).
                    if key == "type" || key == "thread_id" {
                        fields.push((key, map.next_value::<Value>()?));
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The documented rule for a text frame.
fn reply_to(text: &str) -> Reply {
    if text.len() > MAX_FRAME_BYTES {
        return Reply::Nothing;
    }
    let Ok(Fields(fields)) = serde_json::from_str::<Fields>(text) else {
        return Reply::FormatError;
    };
    let named = |name: &str| -> Vec<&Value> {
        fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    };
    let kind = match named("type").as_slice() {
        [Value::String(kind)] => kind.clone(),
        _ => return Reply::FormatError,
    };
    let thread_id = match named("thread_id").as_slice() {
        [] | [Value::Null] => None,
        [Value::String(t)] => Some(t.clone()),
        _ => return Reply::FormatError,
    };
    match kind.as_str() {
        "ping" => Reply::Pong,
        "heartbeat" => Reply::HeartbeatAck,
        k if AGENT_TYPES.contains(&k) => Reply::Run(thread_id),
        _ => Reply::Ack(kind),
    }
}

fn reply_to_frame(frame: &Frame) -> Reply {
    match frame {
        Frame::Text(text) => reply_to(text),
        Frame::Binary(_) => Reply::FormatError,
    }
}

/// One connection and what it is owed.
struct Conn {
    ws: Ws,
    sub: String,
    /// `conn_N`, from the confirmation.
    id: String,
    /// The thread_id of runs whose frame gave none.
    thread_id: String,
    /// Per run (by number): its frame's thread_id and the events seen so far.
    runs: Vec<(Option<String>, usize)>,
}

/// What has been sent, as the stats should count it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counts {
    connections: u64,
    pongs: u64,
    acks: u64,
    invalid_json: u64,
    binary: u64,
    oversize: u64,
    runs: u64,
}

impl Counts {
    fn add(&mut self, frame: &Frame, reply: &Reply) {
        match (frame, reply) {
            (Frame::Binary(_), _) => self.binary += 1,
            (_, Reply::Pong) => self.pongs += 1,
            (_, Reply::Ack(_)) => self.acks += 1,
            (_, Reply::FormatError) => self.invalid_json += 1,
            (_, Reply::Nothing) => self.oversize += 1,
            (_, Reply::Run(_)) => self.runs += 1,
            (_, Reply::HeartbeatAck) => {}
        }
    }
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

async fn open(tb: &gauntlet_testbed::Testbed, n: u64) -> Result<Conn, TestCaseError> {
    let sub = format!("fuzz-{n}");
    let mut ws = connect(tb, &sub).await;
    let hello = match next(&mut ws).await {
        Next::Json(v) => v,
        other => return Err(fail(format!("no confirmation: {other:?}"))),
    };
    prop_assert_eq!(
        &hello["data"]["event"],
        "connection_established",
        "{}",
        hello
    );
    Ok(Conn {
        ws,
        sub,
        id: hello["data"]["connection_id"].as_str().unwrap().to_owned(),
        thread_id: hello["data"]["thread_id"].as_str().unwrap().to_owned(),
        runs: Vec::new(),
    })
}

/// Reads one frame: an agent event is checked and counted against its run (`None`), anything
/// else is returned.
async fn next_frame(conn: &mut Conn) -> Result<Option<Value>, TestCaseError> {
    {
        let v = match next(&mut conn.ws).await {
            Next::Json(v) => v,
            other => return Err(fail(format!("connection ended: {other:?}"))),
        };
        let Some(event) = EVENTS.iter().position(|e| v["type"] == *e) else {
            return Ok(Some(v));
        };
        let run_id = v["run_id"].as_str().unwrap_or_default();
        let number: usize = run_id
            .strip_prefix(&format!("run_{}_", conn.id))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| fail(format!("run_id of another connection: {v}")))?;
        let (thread_id, seen) = conn
            .runs
            .get_mut(number)
            .ok_or_else(|| fail(format!("an event of a run never asked for: {v}")))?;
        prop_assert_eq!(*seen, event, "events out of order: {}", v);
        *seen += 1;
        let want = thread_id.as_deref().unwrap_or(&conn.thread_id);
        prop_assert_eq!(v["thread_id"].as_str(), Some(want), "{}", v);
        prop_assert_eq!(v["user_id"].as_str(), Some(conn.sub.as_str()), "{}", v);
    }
    Ok(None)
}

/// The next frame that is not an agent event.
async fn next_reply(conn: &mut Conn) -> Result<Value, TestCaseError> {
    // Bounded: every run sends five events, and each wait is bounded by `LIMIT`.
    for _ in 0..=conn.runs.len() * EVENTS.len() {
        if let Some(v) = next_frame(conn).await? {
            return Ok(v);
        }
    }
    Err(fail("more agent events than runs asked for".into()))
}

fn check_reply(conn: &Conn, want: &Reply, got: &Value) -> Outcome {
    let kind = got["type"].as_str();
    match want {
        Reply::Pong | Reply::HeartbeatAck => {
            let name = if *want == Reply::Pong {
                "pong"
            } else {
                "heartbeat_ack"
            };
            prop_assert_eq!(kind, Some(name), "{}", got);
            prop_assert_eq!(got["data"]["user_id"].as_str(), Some(conn.sub.as_str()));
        }
        Reply::Ack(t) => {
            prop_assert_eq!(kind, Some("ack"), "{}", got);
            prop_assert_eq!(got["received_type"].as_str(), Some(t.as_str()));
        }
        Reply::FormatError => {
            prop_assert_eq!(kind, Some("error_message"), "{}", got);
            prop_assert_eq!(&got["error_code"], "FORMAT_ERROR");
        }
        Reply::Run(_) | Reply::Nothing => unreachable!("no reply of its own"),
    }
    Ok(())
}

/// Sends `frames` and a closing ping, and checks every reply in order.
async fn exchange(conn: &mut Conn, frames: &[Frame]) -> Outcome {
    let mut owed = Vec::new();
    for frame in frames
        .iter()
        .chain([&Frame::Text(r#"{"type":"ping"}"#.into())])
    {
        let reply = reply_to_frame(frame);
        match &reply {
            Reply::Run(thread_id) => conn.runs.push((thread_id.clone(), 0)),
            Reply::Nothing => {}
            other => owed.push(other.clone()),
        }
        let msg = match frame {
            Frame::Text(t) => Message::Text(t.clone().into()),
            Frame::Binary(b) => Message::Binary(b.clone().into()),
        };
        conn.ws
            .send(msg)
            .await
            .map_err(|e| fail(format!("send: {e}")))?;
    }
    for want in &owed {
        let got = next_reply(conn).await?;
        check_reply(conn, want, &got)?;
    }
    Ok(())
}

/// Reads until every run of `conn` has sent its five events.
async fn finish_runs(conn: &mut Conn) -> Outcome {
    while conn.runs.iter().any(|(_, seen)| *seen < EVENTS.len()) {
        if let Some(got) = next_frame(conn).await? {
            return Err(fail(format!("a frame nobody asked for: {got}")));
        }
    }
    Ok(())
}

/// Everything a fuzz run shares between cases.
struct State {
    tb: gauntlet_testbed::Testbed,
    conn: Option<Conn>,
    opened: u64,
    cases: u32,
    counts: Counts,
}

impl State {
    async fn conn(&mut self) -> Result<&mut Conn, TestCaseError> {
        if self.conn.is_none() {
            self.opened += 1;
            self.conn = Some(open(&self.tb, self.opened).await?);
            self.counts.connections += 1;
        }
        Ok(self.conn.as_mut().unwrap())
    }

    /// Sends one case's frames; the connection is kept only when everything held.
    async fn case(&mut self, frames: &[Frame]) -> Outcome {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                self.conn().await?;
                self.conn.take().unwrap()
            }
        };
        exchange(&mut conn, frames).await?;
        let mut counts = self.counts.clone();
        for f in frames {
            counts.add(f, &reply_to_frame(f));
        }
        counts.pongs += 1;
        self.counts = counts;
        self.cases += 1;
        if self.cases.is_multiple_of(ROTATE) {
            finish_runs(&mut conn).await?;
            let _ = conn.ws.close(None).await;
        } else {
            self.conn = Some(conn);
        }
        Ok(())
    }

    /// A frame that must close the connection with `code`; a fresh connection works after.
    async fn closer(&mut self, frame: Message, code: u16) -> Outcome {
        self.opened += 1;
        let mut conn = open(&self.tb, self.opened).await?;
        self.counts.connections += 1;
        conn.ws
            .send(frame)
            .await
            .map_err(|e| fail(format!("send: {e}")))?;
        match next(&mut conn.ws).await {
            Next::Close(got, _) => prop_assert_eq!(got, code),
            other => return Err(fail(format!("expected close {code}, got {other:?}"))),
        }
        Ok(())
    }

    /// The server lives: a fresh connection is confirmed and answers a ping, and the stats
    /// answer with the counts of everything sent.
    async fn alive(&mut self) -> Outcome {
        if let Some(mut conn) = self.conn.take() {
            finish_runs(&mut conn).await?;
        }
        let frames = [Frame::Text(r#"{"type":"ping"}"#.into())];
        let conn = self.conn().await?;
        exchange(conn, &frames).await?;
        self.counts.pongs += 2;
        let (status, stats) = http(&self.tb, "GET", "/__testbed/stats", &[], "").await;
        prop_assert_eq!(status, 200);
        let f = &stats["frames"];
        let got = Counts {
            connections: stats["connections"]["established"].as_u64().unwrap(),
            pongs: f["pongs"].as_u64().unwrap(),
            acks: f["acks"].as_u64().unwrap(),
            invalid_json: f["invalid_json"].as_u64().unwrap(),
            binary: f["binary"].as_u64().unwrap(),
            oversize: f["oversize_dropped"].as_u64().unwrap(),
            runs: stats["pipelines"]["started"].as_u64().unwrap(),
        };
        prop_assert_eq!(&got, &self.counts, "stats: {}", stats);
        prop_assert_eq!(
            stats["pipelines"]["completed"].as_u64(),
            Some(self.counts.runs)
        );
        Ok(())
    }
}

// ---- frames ---------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec!["ping", "heartbeat", "start_agent", "chat", "x", ""])
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("type|thread_id|[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A frame of the protocol, with every field it reads chosen at random.
fn typed() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        prop::sample::select(
            [
                &[
                    "ping",
                    "heartbeat",
                    "something_new",
                    "agent_started",
                    "PING"
                ],
                &AGENT_TYPES[..]
            ]
            .concat()
        )
        .prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        json_value(),
    ];
    let thread_id = prop::option::of(prop_oneof![
        "thread_[a-z0-9]{0,8}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        json_value(),
    ]);
    let extra = prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..3);
    (kind, thread_id, extra).prop_map(|(kind, thread_id, extra)| {
        let mut frame = serde_json::Map::new();
        frame.insert("type".into(), kind);
        if let Some(t) = thread_id {
            frame.insert("thread_id".into(), t);
        }
        for (k, v) in extra {
            frame.entry(k).or_insert(v);
        }
        Value::Object(frame).to_string()
    })
}

fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = String> {
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<Index>(), any::<u8>()), 1..4),
        any::<Index>(),
    )
        .prop_map(|(mut bytes, flips, cut)| {
            for (at, mask) in flips {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] ^= mask;
                }
            }
            if cut.index(4) == 0 {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

fn frame(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => typed().prop_map(Frame::Text),
        2 => json_value().prop_map(|v| Frame::Text(v.to_string())),
        2 => mutated(seeds).prop_map(Frame::Text),
        1 => any::<String>().prop_map(Frame::Text),
        1 => prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| Frame::Text(String::from_utf8_lossy(&b).into_owned())),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Frame::Binary),
        // Around max_frame_bytes: answered below it, dropped above it.
        1 => (MAX_FRAME_BYTES - 20..MAX_FRAME_BYTES + 20)
            .prop_map(|n| Frame::Text(format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(n - 26)))),
    ]
}

/// A frame that must close the connection: its name, the frame, the close code.
type Closer = (String, Message, u16);

/// The seeds that are answered and the closers among them, by name.
fn seeds() -> (Vec<(String, Frame)>, Vec<Closer>) {
    let mut frames = Vec::new();
    let mut closers = Vec::new();
    for (name, bytes) in support::corpus("frames") {
        if name.ends_with(".bin") {
            frames.push((name, Frame::Binary(bytes)));
            continue;
        }
        match String::from_utf8(bytes) {
            Ok(text) => frames.push((name, Frame::Text(text))),
            Err(e) => {
                let raw = RawFrame::message(e.into_bytes(), OpCode::Data(Data::Text), true);
                closers.push((name, Message::Frame(raw), 1007));
            }
        }
    }
    closers.push((
        "over max_message_bytes".into(),
        Message::Text("x".repeat(MAX_MESSAGE_BYTES + 1).into()),
        1009,
    ));
    (frames, closers)
}

#[test]
fn the_testbed_answers_every_frame_and_lives_on() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (seed_frames, closers) = seeds();
    let state = RefCell::new(State {
        tb: rt.block_on(start({
            let mut c = config();
            c.websocket.max_message_bytes = MAX_MESSAGE_BYTES;
            c
        })),
        conn: None,
        opened: 0,
        cases: 0,
        counts: Counts::default(),
    });
    // Every seed first: one by one, each checked on its own.
    for (name, f) in &seed_frames {
        rt.block_on(state.borrow_mut().case(std::slice::from_ref(f)))
            .unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
    for (name, msg, code) in closers {
        rt.block_on(state.borrow_mut().closer(msg, code))
            .unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
    rt.block_on(state.borrow_mut().alive())
        .unwrap_or_else(|e| panic!("after the seeds: {e}"));

    let texts: Vec<Vec<u8>> = seed_frames
        .iter()
        .filter_map(|(_, f)| match f {
            Frame::Text(t) => Some(t.clone().into_bytes()),
            Frame::Binary(_) => None,
        })
        .collect();
    let mut runner = support::runner(128);
    let strategy = prop::collection::vec(frame(texts), 1..=8);
    support::run(&mut runner, &strategy, |frames| {
        rt.block_on(state.borrow_mut().case(&frames))
    });
    rt.block_on(state.borrow_mut().alive())
        .unwrap_or_else(|e| panic!("after the random frames: {e}"));
    let state = state.into_inner();
    assert!(
        state.opened <= u64::from(support::cases(128) / ROTATE) + 16,
        "{} connections",
        state.opened
    );
    rt.block_on(state.tb.stop()).unwrap();
}

/// The frames of the documented protocol get their documented replies (a fixed check that the
/// model above is the protocol, not a copy of the code).
#[test]
fn documented_frames_get_documented_replies() {
    assert_eq!(reply_to(r#"{"type":"ping"}"#), Reply::Pong);
    assert_eq!(
        reply_to(r#" {"type":"heartbeat","x":[1]}"#),
        Reply::HeartbeatAck
    );
    assert_eq!(
        reply_to(r#"{"type":"start_agent","thread_id":"t1"}"#),
        Reply::Run(Some("t1".into()))
    );
    assert_eq!(reply_to(r#"{"type":"new"}"#), Reply::Ack("new".into()));
    for bad in [
        "{not json",
        "[1,2]",
        r#"["ping"]"#,
        r#"{"type":5}"#,
        r#"{"type":"ping","type":"ping"}"#,
        r#"{"type":"chat","thread_id":7}"#,
        "",
    ] {
        assert_eq!(reply_to(bad), Reply::FormatError, "{bad}");
    }
}

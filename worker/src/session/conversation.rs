//! The conversation steps on an open WebSocket, each handler taking its step's struct:
//! `ws_send`, `ws_expect`, `ws_expect_sequence`, `ws_ping` and `ws_close`.

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{Fatal, Read, Session, Want, describe, error_frame, unrendered};
use crate::classify::Symptom;
use crate::json::Json;
use crate::program::{
    CloseStep, CompiledStep, ExpectStep, Frame, PingStep, SendStep, SequenceStep,
};
use crate::sequence::{Seen, Verdict};

impl Session<'_> {
    pub(super) async fn send(&mut self, step: &CompiledStep, send: &SendStep) -> Result<(), Fatal> {
        let text: Option<Utf8Bytes> = match &send.frame {
            Frame::Json(t) => self.with_ctx(|ctx, rng| t.render_text(ctx, rng)),
            Frame::Text(t) => self.render(t).map(Utf8Bytes::from),
        };
        let Some(text) = text else {
            self.fail(&step.name, unrendered("frame"));
            return Err(Fatal);
        };
        let len = text.len() as u64;
        if let Some(ended) = self.ended_while_paused() {
            self.fail(&step.name, ended);
            return Err(Fatal);
        }
        let Some(ws) = self.ws.as_mut() else {
            self.fail(&step.name, Symptom::Protocol("no open WebSocket".into()));
            return Err(Fatal);
        };
        // The frame is meant to be sent now: latencies since it count from before the write,
        // as a bare client's round trip does.
        let now = Instant::now();
        if let Err(e) = ws.send(Message::Text(text)).await {
            self.ws = None;
            self.fail(&step.name, Symptom::Reset(format!("send failed: {e}")));
            return Err(Fatal);
        }
        self.marks[send.mark] = Some(now);
        self.last_send = Some(now);
        self.vu.rec.counters.frames_sent += 1;
        self.vu.rec.counters.bytes_sent += len;
        Ok(())
    }

    pub(super) async fn expect(
        &mut self,
        step: &CompiledStep,
        e: &ExpectStep,
        start: Instant,
    ) -> Result<(), Fatal> {
        let ExpectStep {
            matchers,
            timeout,
            since,
            capture,
            event_metric,
        } = e;
        let text = self
            .wait_for(
                step,
                start + *timeout,
                matchers,
                Want::All,
                &describe(matchers),
            )
            .await?;
        let from = self.since(*since, start);
        self.vu.rec.record(*event_metric, from.elapsed());
        if !capture.is_empty() {
            // wait_for parsed it: it is JSON.
            if let Some(frame) = Json::parse(&text) {
                self.capture(step, capture, &frame);
            }
        }
        Ok(())
    }

    pub(super) async fn sequence(
        &mut self,
        step: &CompiledStep,
        q: &SequenceStep,
        start: Instant,
    ) -> Result<(), Fatal> {
        let SequenceStep {
            check,
            type_pointer,
            timeout,
            gap_timeout,
            since,
            capture,
            event_metrics,
        } = q;
        let whole = start + *timeout;
        let from = self.since(*since, start);
        let mut received: Vec<usize> = Vec::with_capacity(check.types.len() + 2);
        let mut captured = false;
        let verdict = loop {
            let deadline = match gap_timeout {
                Some(g) => whole.min(Instant::now() + *g),
                None => whole,
            };
            let text = match self.read(deadline, &step.name).await {
                Err(Fatal) => {
                    self.vu.rec.check(step.check, false);
                    return Err(Fatal);
                }
                Ok(Read::Pong) => continue,
                Ok(Read::Timeout) => break check.verdict_on_timeout(&received),
                Ok(Read::Text(text)) => text,
            };
            let Some(frame) = self.inspect(&text) else {
                self.skipped(&text);
                continue;
            };
            let Some(kind) = frame.pointer(type_pointer).and_then(Json::as_str) else {
                if let Some(symptom) = error_frame(&frame, &text) {
                    self.vu.rec.check(step.check, false);
                    self.fail(&step.name, symptom);
                    return Err(Fatal);
                }
                self.skipped(&text);
                continue;
            };
            match check.on_type(kind, &mut received) {
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
                        code: kind.to_owned(),
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

    pub(super) async fn ping(
        &mut self,
        step: &CompiledStep,
        ping: &PingStep,
        start: Instant,
    ) -> Result<(), Fatal> {
        if let Some(ended) = self.ended_while_paused() {
            self.fail(&step.name, ended);
            return Err(Fatal);
        }
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
        let deadline = start + ping.timeout;
        loop {
            match self.read(deadline, &step.name).await? {
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

    pub(super) async fn close(&mut self, step: &CompiledStep, c: &CloseStep) -> Result<(), Fatal> {
        // Frames a pause held go unread, as the frames a close drains do.
        let ended = self.drop_held();
        let Some(mut ws) = self.ws.take() else {
            match ended {
                // The server closed while the session paused: judged as a close that crossed
                // the step's (below).
                Some(Symptom::Close { code, reason }) if code != 1000 && code != c.code => {
                    self.fail(&step.name, Symptom::Close { code, reason });
                }
                Some(Symptom::Close { .. }) | None => {}
                Some(gone) => self.fail(&step.name, gone),
            }
            return Ok(());
        };
        let frame = CloseFrame {
            code: CloseCode::from(c.code),
            reason: c.reason.clone().into(),
        };
        let closed = tokio::time::timeout(c.timeout, async {
            ws.send(Message::Close(Some(frame))).await.ok()?;
            // Drain until the server's reply ends the stream, keeping the first close frame.
            let mut theirs = None;
            while let Some(Ok(m)) = ws.next().await {
                if let (Message::Close(f), None) = (m, &theirs) {
                    theirs = Some(f.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }));
                }
            }
            Some(theirs)
        })
        .await;
        match closed {
            // The server had closed with a code of its own (1011 when a connection idle in a
            // `sleep` left its pings unanswered): the session ended on the server's terms,
            // not a clean close.
            Ok(Some(Some((code, reason)))) if code != 1000 && code != c.code => {
                self.fail(&step.name, Symptom::Close { code, reason });
            }
            Ok(Some(_)) => {}
            _ => self.fail(
                &step.name,
                Symptom::Timeout(format!("{}: close reply", step.name)),
            ),
        }
        Ok(())
    }
}

//! `sleep` (its [`Pause`]): the session waits, and with a WebSocket open it goes on reading,
//! as a real client's socket does, so the server's pings are answered and what arrives is held
//! for the steps after the pause.
//!
//! A server that pings idle connections closes those that leave a ping unanswered (uvicorn:
//! 1011 "keepalive ping timeout"); a session that stopped reading while it slept would be
//! closed by the server for the tool's own silence, and fail. The WebSocket library answers a
//! ping as it reads it, so the pause reads: each frame (and pong) it reads is held, in order,
//! with how the connection ended if it did, and the next steps read the held ones first, as
//! they would have read them from the socket. At most [`MAX_HELD_BYTES`] of text (or
//! [`MAX_HELD_FRAMES`] frames) are held; past that the pause stops reading and the rest waits
//! in the socket, as everything did before.

use std::collections::VecDeque;

use gauntlet_core::plan::Pause;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Read, Session, pause_duration};
use crate::classify::Symptom;

/// Text a pause holds before it stops reading (the frame that crosses it is held too, so at
/// most this plus one `target.max_message_bytes`); each held frame is a copy of its own.
pub const MAX_HELD_BYTES: usize = 64 << 10;
/// Frames (text and pongs) a pause holds before it stops reading.
pub const MAX_HELD_FRAMES: usize = 1024;

/// What pauses read off the open WebSocket and no step has read yet.
#[derive(Debug, Default)]
pub(super) struct Held {
    reads: VecDeque<Read>,
    bytes: usize,
    /// How the connection ended while the session paused: after the held frames, the next
    /// read gets it, and a `ws_send`, `ws_ping` or `ws_close` fails (or ends) on it.
    ended: Option<Symptom>,
}

impl Held {
    fn full(&self) -> bool {
        self.ended.is_some() || self.bytes >= MAX_HELD_BYTES || self.reads.len() >= MAX_HELD_FRAMES
    }
}

impl Session<'_> {
    /// Sleeps for `pause`, reading on if a WebSocket is open (see the module's doc).
    pub(super) async fn pause(&mut self, pause: &Pause) {
        let d = pause_duration(pause, &mut self.vu.rng);
        if d >= std::time::Duration::from_millis(100) {
            // A long pause: hand the buffered samples over and free the buffers.
            self.vu.rec.shrink();
        }
        let until = Instant::now() + d;
        loop {
            if self.ws.is_none() || self.held.as_ref().is_some_and(|h| h.full()) {
                self.timer.as_mut().reset(until);
                self.timer.as_mut().await;
                return;
            }
            match self.read_socket(until).await {
                Ok(Read::Timeout) => return,
                Ok(Read::Text(t)) => {
                    // Copied out: a frame shares its read buffer, which could be a message
                    // of up to `target.max_message_bytes` read just before it.
                    let held = self.held.get_or_insert_with(Box::default);
                    held.bytes += t.len();
                    held.reads
                        .push_back(Read::Text(Utf8Bytes::from(t.as_str().to_owned())));
                }
                Ok(Read::Pong) => {
                    let held = self.held.get_or_insert_with(Box::default);
                    held.reads.push_back(Read::Pong);
                }
                Err(symptom) => self.held.get_or_insert_with(Box::default).ended = Some(symptom),
            }
        }
    }

    /// The oldest read a pause held, or how the connection ended once none is left; `None`
    /// when nothing is held (read the socket).
    pub(super) fn take_held(&mut self) -> Option<Result<Read, Symptom>> {
        let held = self.held.as_mut()?;
        if let Some(read) = held.reads.pop_front() {
            if let Read::Text(t) = &read {
                held.bytes -= t.len();
            }
            return Some(Ok(read));
        }
        let ended = held.ended.take();
        self.held = None;
        ended.map(Err)
    }

    /// How the connection ended while the session paused, if it did (a `ws_send` or `ws_ping`
    /// fails on it; the frames held before it are dropped, as the step does not read them).
    pub(super) fn ended_while_paused(&mut self) -> Option<Symptom> {
        self.held.as_ref()?.ended.as_ref()?;
        self.held.take().and_then(|h| h.ended)
    }

    /// Drops what pauses held (a `ws_close` does not read it); how the connection ended while
    /// the session paused, if it did.
    pub(super) fn drop_held(&mut self) -> Option<Symptom> {
        self.held.take().and_then(|h| h.ended)
    }
}

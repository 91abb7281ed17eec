//! What this worker owes the coordinator, per assignment: its numbered snapshots until each is
//! acknowledged (at most [`UNACKED_LIMIT`]), its live counts while it runs (for heartbeats),
//! and, once it finished, its `Done` until that is acknowledged. Everything goes out at once
//! while a stream is open and again after every reconnect; acknowledgements prune it, so a
//! long-lived worker resends only what the coordinator has not confirmed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use gauntlet_proto::v1::{self, worker_message};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::Progress;

/// Unacknowledged snapshots kept per assignment; beyond this the oldest are dropped (and
/// logged): ten minutes of 1 s snapshots while the coordinator is unreachable.
pub const UNACKED_LIMIT: usize = 600;

/// An assignment: its run and the sequence number its snapshots are numbered after.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShareKey {
    /// The run.
    pub run: String,
    /// The assignment's `first_seq`, which names it.
    pub first_seq: u64,
}

impl ShareKey {
    /// The key of assignment `a`.
    pub fn of(a: &v1::Assignment) -> ShareKey {
        ShareKey {
            run: a.run_id.clone(),
            first_seq: a.first_seq,
        }
    }
}

/// Where an assignment is in its life, as far as the coordinator must hear of it.
#[derive(Debug)]
enum Phase {
    /// Assigned; not running yet (its plan compiling, or the common start not reached).
    Assigned,
    /// Running: its live counts, when the engine began, its offset in the run (ms).
    Running {
        progress: Arc<Progress>,
        began: Instant,
        offset_ms: u64,
    },
    /// Finished: its `Done`, resent after every reconnect until acknowledged.
    Finished(v1::Done),
    /// Finished and its `Done` acknowledged: kept only while snapshots await their answer.
    Acknowledged,
}

#[derive(Debug)]
struct Share {
    unacked: VecDeque<v1::Snapshot>,
    phase: Phase,
}

/// What this worker owes the coordinator, and the open stream's sender, if any.
#[derive(Debug, Default)]
pub struct Outbox {
    shares: BTreeMap<ShareKey, Share>,
    /// The open stream's sender, while connected.
    stream: Option<mpsc::Sender<v1::WorkerMessage>>,
}

fn message(kind: worker_message::Kind) -> v1::WorkerMessage {
    v1::WorkerMessage { kind: Some(kind) }
}

impl Outbox {
    /// Sends `kind` on the open stream, if there is one. A full stream drops it: what must
    /// arrive (snapshots, `Done`) is kept and resent after the next reconnect.
    fn send(&self, kind: worker_message::Kind) {
        if let Some(stream) = &self.stream {
            let _ = stream.try_send(message(kind));
        }
    }

    /// A new assignment: the coordinator will hear of it until its `Done` is acknowledged.
    pub fn assign(&mut self, key: ShareKey) {
        self.shares.entry(key).or_insert(Share {
            unacked: VecDeque::new(),
            phase: Phase::Assigned,
        });
    }

    /// Assignment `key` started its engine at `began`, `offset_ms` into the run.
    pub fn start(
        &mut self,
        key: &ShareKey,
        progress: Arc<Progress>,
        began: Instant,
        offset_ms: u64,
    ) {
        if let Some(share) = self.shares.get_mut(key) {
            share.phase = Phase::Running {
                progress,
                began,
                offset_ms,
            };
        }
    }

    /// A numbered snapshot of `key`: sent now if connected, kept until acknowledged or refused.
    pub fn snapshot(&mut self, key: &ShareKey, wire: v1::Snapshot) {
        self.send(worker_message::Kind::Snapshot(wire.clone()));
        let Some(share) = self.shares.get_mut(key) else {
            return;
        };
        share.unacked.push_back(wire);
        if share.unacked.len() > UNACKED_LIMIT {
            share.unacked.pop_front();
            tracing::warn!(run = %key.run, "unacknowledged snapshot buffer full: the oldest is dropped");
        }
    }

    /// A share leaving early (this worker shuts down): said only to a connected coordinator,
    /// which hands the share over at once; otherwise its `Done` says it later.
    pub fn leaving(&self, leaving: v1::Leaving) {
        self.send(worker_message::Kind::Leaving(leaving));
    }

    /// Assignment `key` finished: its `Done` is sent now if connected, and kept until
    /// acknowledged.
    pub fn finish(&mut self, key: &ShareKey, done: v1::Done) {
        self.send(worker_message::Kind::Done(done.clone()));
        if let Some(share) = self.shares.get_mut(key) {
            share.phase = Phase::Finished(done);
        }
    }

    /// Snapshot `seq` of `run` was acknowledged or refused: it is not resent.
    pub fn forget(&mut self, run: &str, seq: u64) {
        for (key, share) in self.shares.iter_mut() {
            if key.run == run {
                share.unacked.retain(|s| s.seq != seq);
            }
        }
        self.shares
            .retain(|_, s| !(matches!(s.phase, Phase::Acknowledged) && s.unacked.is_empty()));
    }

    /// The `Done` of the assignment of `run` numbered after `first_seq` was acknowledged: it is
    /// not resent, and the assignment is forgotten once its snapshots are answered too. True
    /// when this leaves no assignment of `run` that is not finished and acknowledged (nothing
    /// of the run runs or waits on this worker any more).
    pub fn done_acknowledged(&mut self, run: &str, first_seq: u64) -> bool {
        let key = ShareKey {
            run: run.to_owned(),
            first_seq,
        };
        let Some(share) = self.shares.get_mut(&key) else {
            return false;
        };
        if !matches!(share.phase, Phase::Finished(_)) {
            return false;
        }
        share.phase = Phase::Acknowledged;
        if share.unacked.is_empty() {
            self.shares.remove(&key);
        }
        !self
            .shares
            .iter()
            .any(|(k, s)| k.run == run && !matches!(s.phase, Phase::Acknowledged))
    }

    /// A stream opened: everything not yet acknowledged is resent on it (the snapshots, then
    /// the `Done`s), and what comes next is sent on it at once.
    pub fn attach(&mut self, stream: mpsc::Sender<v1::WorkerMessage>) {
        for share in self.shares.values() {
            for s in &share.unacked {
                let _ = stream.try_send(message(worker_message::Kind::Snapshot(s.clone())));
            }
        }
        for share in self.shares.values() {
            if let Phase::Finished(done) = &share.phase {
                let _ = stream.try_send(message(worker_message::Kind::Done(done.clone())));
            }
        }
        self.stream = Some(stream);
    }

    /// The stream ended: nothing more is written into a connection nobody serves.
    pub fn detach(&mut self) {
        self.stream = None;
    }

    /// Whether snapshots await an answer (the drain reconnects once to deliver them).
    pub fn has_unacked_snapshots(&self) -> bool {
        self.shares.values().any(|s| !s.unacked.is_empty())
    }

    /// A heartbeat with every running share's live counts.
    pub fn heartbeat(&self) -> v1::WorkerMessage {
        let progress = self
            .shares
            .iter()
            .filter_map(|(key, share)| match &share.phase {
                Phase::Running {
                    progress: p,
                    began,
                    offset_ms,
                } => Some(v1::ShareProgress {
                    run_id: key.run.clone(),
                    first_seq: key.first_seq,
                    started: p.started.load(Ordering::Relaxed),
                    active: p.active.load(Ordering::Relaxed),
                    at_ms: offset_ms + began.elapsed().as_millis() as u64,
                    shortest_us: match p.shortest_us.load(Ordering::Relaxed) {
                        u64::MAX => 0,
                        us => us,
                    },
                    dropped: p.dropped.load(Ordering::Relaxed),
                }),
                _ => None,
            })
            .collect();
        message(worker_message::Kind::Heartbeat(v1::Heartbeat { progress }))
    }
}

/// The outbox shared by the connection and the running assignments.
#[derive(Debug, Clone, Default)]
pub struct SharedOutbox(Arc<Mutex<Outbox>>);

impl SharedOutbox {
    /// The outbox, for a short, await-free use.
    pub fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches `stream` until the returned guard is dropped (however the connection ends,
    /// even dropped mid-await).
    pub fn attach(&self, stream: mpsc::Sender<v1::WorkerMessage>) -> Attached {
        self.lock().attach(stream);
        Attached(self.clone())
    }
}

/// Detaches the outbox's stream when dropped.
#[derive(Debug)]
pub struct Attached(SharedOutbox);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.lock().detach();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    fn key(run: &str, first_seq: u64) -> ShareKey {
        ShareKey {
            run: run.into(),
            first_seq,
        }
    }

    fn snapshot(run: &str, seq: u64) -> v1::Snapshot {
        v1::Snapshot {
            run_id: run.into(),
            seq,
            ..v1::Snapshot::default()
        }
    }

    fn done(run: &str, first_seq: u64, last_seq: u64) -> v1::Done {
        v1::Done {
            run_id: run.into(),
            first_seq,
            last_seq,
            ..v1::Done::default()
        }
    }

    /// What a freshly attached stream receives: (kind, run, seq or first_seq) in order.
    fn resent(outbox: &mut Outbox) -> Vec<(&'static str, String, u64)> {
        let (tx, mut rx) = mpsc::channel(1024);
        outbox.attach(tx);
        outbox.detach();
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(match m.kind.unwrap() {
                worker_message::Kind::Snapshot(s) => ("snapshot", s.run_id, s.seq),
                worker_message::Kind::Done(d) => ("done", d.run_id, d.first_seq),
                other => panic!("unexpected {other:?}"),
            });
        }
        out
    }

    #[test]
    fn snapshots_are_resent_until_acknowledged_or_refused() {
        let mut o = Outbox::default();
        o.assign(key("r", 0));
        for seq in 1..=3 {
            o.snapshot(&key("r", 0), snapshot("r", seq));
        }
        assert_eq!(
            resent(&mut o),
            [1, 2, 3].map(|s| ("snapshot", "r".to_owned(), s))
        );
        // Resent again after the next reconnect: nothing was acknowledged.
        assert_eq!(resent(&mut o).len(), 3);
        o.forget("r", 2); // acknowledged
        o.forget("r", 3); // refused
        o.forget("other", 1); // another run's number: not this one
        assert_eq!(resent(&mut o), [("snapshot", "r".to_owned(), 1)]);
        assert!(o.has_unacked_snapshots());
        o.forget("r", 1);
        assert!(!o.has_unacked_snapshots());
    }

    #[test]
    fn at_most_the_limit_of_snapshots_is_kept_the_oldest_dropped() {
        let mut o = Outbox::default();
        o.assign(key("r", 0));
        let n = UNACKED_LIMIT as u64 + 5;
        for seq in 1..=n {
            o.snapshot(&key("r", 0), snapshot("r", seq));
        }
        let kept = resent(&mut o);
        assert_eq!(kept.len(), UNACKED_LIMIT);
        assert_eq!(kept[0].2, 6);
        assert_eq!(kept[UNACKED_LIMIT - 1].2, n);
    }

    #[test]
    fn a_done_is_resent_until_acknowledged_then_forgotten() {
        let mut o = Outbox::default();
        o.assign(key("r", 0));
        o.snapshot(&key("r", 0), snapshot("r", 1));
        o.finish(&key("r", 0), done("r", 0, 1));
        assert_eq!(
            resent(&mut o),
            [("snapshot", "r".to_owned(), 1), ("done", "r".to_owned(), 0)]
        );
        assert_eq!(resent(&mut o).len(), 2, "nothing acknowledged yet");
        assert!(o.done_acknowledged("r", 0), "the run's only share");
        // The Done is not resent; its snapshot still is, until answered.
        assert_eq!(resent(&mut o), [("snapshot", "r".to_owned(), 1)]);
        o.forget("r", 1);
        assert!(resent(&mut o).is_empty());
        assert!(o.shares.is_empty(), "the finished assignment is forgotten");
        // A second acknowledgement of the same Done finds nothing.
        assert!(!o.done_acknowledged("r", 0));
    }

    #[test]
    fn many_finished_assignments_leave_nothing_behind_once_acknowledged() {
        let mut o = Outbox::default();
        for i in 0..1000u64 {
            let k = key(&format!("run-{i}"), 0);
            o.assign(k.clone());
            o.snapshot(&k, snapshot(&k.run, 1));
            o.forget(&k.run, 1);
            o.finish(&k, done(&k.run, 0, 1));
            assert!(o.done_acknowledged(&k.run, 0));
        }
        assert!(o.shares.is_empty());
        assert!(resent(&mut o).is_empty());
    }

    #[test]
    fn a_run_is_over_here_once_all_its_assignments_finished_and_were_acknowledged() {
        let mut o = Outbox::default();
        let (a, b) = (key("r", 0), key("r", 1 << 32));
        o.assign(a.clone());
        o.assign(b.clone());
        o.assign(key("other", 0));
        // Not finished: an acknowledgement of its Done cannot be (and changes nothing).
        assert!(!o.done_acknowledged("r", 0));
        o.finish(&a, done("r", 0, 0));
        assert!(
            !o.done_acknowledged("r", 0),
            "the run's other assignment is still assigned"
        );
        o.finish(&b, done("r", 1 << 32, 1 << 32));
        assert_eq!(
            resent(&mut o),
            [("done", "r".to_owned(), 1 << 32)],
            "only the unacknowledged Done"
        );
        assert!(o.done_acknowledged("r", 1 << 32));
        assert_eq!(o.shares.len(), 1, "only the other run's assignment is left");
    }

    #[test]
    fn while_attached_everything_goes_out_at_once_and_a_full_stream_leaves_it_to_the_resend() {
        let mut o = Outbox::default();
        let k = key("r", 0);
        o.assign(k.clone());
        let (tx, mut rx) = mpsc::channel(2);
        o.attach(tx);
        o.snapshot(&k, snapshot("r", 1));
        o.leaving(v1::Leaving {
            run_id: "r".into(),
            first_seq: 0,
            stopped_at_ms: 5,
            gave_up: false,
        });
        // The stream is full: this one waits for the resend.
        o.snapshot(&k, snapshot("r", 2));
        let kinds: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|m| match m.kind.unwrap() {
                worker_message::Kind::Snapshot(s) => format!("snapshot {}", s.seq),
                worker_message::Kind::Leaving(l) => format!("leaving {}", l.stopped_at_ms),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["snapshot 1", "leaving 5"]);
        o.detach();
        // Detached: a Leaving is not kept, a Done is.
        o.leaving(v1::Leaving::default());
        o.finish(&k, done("r", 0, 2));
        assert_eq!(
            resent(&mut o),
            [
                ("snapshot", "r".to_owned(), 1),
                ("snapshot", "r".to_owned(), 2),
                ("done", "r".to_owned(), 0)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_carries_the_running_shares_only() {
        let mut o = Outbox::default();
        let (waiting, running, finished) = (key("r", 0), key("r", 100), key("s", 0));
        for k in [&waiting, &running, &finished] {
            o.assign(k.clone());
        }
        let progress = Arc::new(Progress::default());
        progress.started.store(7, Ordering::Relaxed);
        progress.active.store(3, Ordering::Relaxed);
        o.start(&running, Arc::clone(&progress), Instant::now(), 2_000);
        o.start(&finished, Arc::default(), Instant::now(), 0);
        o.finish(&finished, done("s", 0, 0));
        tokio::time::advance(Duration::from_millis(250)).await;
        let Some(worker_message::Kind::Heartbeat(beat)) = o.heartbeat().kind else {
            panic!("not a heartbeat");
        };
        assert_eq!(
            beat.progress,
            [v1::ShareProgress {
                run_id: "r".into(),
                first_seq: 100,
                started: 7,
                active: 3,
                at_ms: 2_250,
                shortest_us: 0,
                dropped: 0,
            }]
        );
    }
}

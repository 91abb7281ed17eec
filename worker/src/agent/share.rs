//! One assignment on this worker: its plan read and compiled, the wait for the common start,
//! the engine run on its segment, its numbered snapshots, its `Leaving` when the worker shuts
//! down, and its `Done`, all handed to the [`Outbox`](super::outbox::Outbox).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gauntlet_core::plan::Plan;
use gauntlet_core::segment::ExecutionSegment;
use gauntlet_proto::snapshot_to_proto;
use gauntlet_proto::v1;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use super::outbox::{ShareKey, SharedOutbox};
use crate::access::Access;
use crate::engine::{Delta, Progress, RunConfig};
use crate::program::Program;
use crate::sources::SourceAddresses;

/// Runs assignment `a` with the engine and reports it into `outbox` (already told of it).
/// `stop` ends it (a Stop from the coordinator, or `leaving`); `leaving` is cancelled when
/// this worker shuts down (`shutdown` is cancelled then too) or gives its shares up (cut off
/// from the coordinator past its lease): a share stopped by it is reported as left, and as
/// given up unless the worker is shutting down.
pub async fn run(
    a: v1::Assignment,
    outbox: SharedOutbox,
    stop: CancellationToken,
    (leaving, shutdown): (CancellationToken, CancellationToken),
    access: Access,
    sources: SourceAddresses,
) {
    let key = ShareKey::of(&a);
    let finish = |error: String, last_seq: u64, stopped_at_ms: u64, sessions_started: u64| {
        let done = v1::Done {
            run_id: a.run_id.clone(),
            last_seq,
            error,
            first_seq: a.first_seq,
            left: leaving.is_cancelled(),
            stopped_at_ms,
            sessions_started,
            gave_up: leaving.is_cancelled() && !shutdown.is_cancelled(),
        };
        outbox.lock().finish(&key, done);
    };
    // The coordinator resolved the plan: it is read as it is (a message gRPC has already
    // bounded in size), checked against what this worker allows, and compiled.
    let program = serde_json::from_str::<Plan>(&a.plan_json)
        .map_err(|e| {
            format!(
                "{}: the coordinator sent a plan this worker cannot read: {e}",
                a.plan_file
            )
        })
        .and_then(|plan| {
            Program::compile_for(plan, access, sources).map_err(|e| format!("{}: {e}", a.plan_file))
        });
    let program = match program {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::error!(run = %a.run_id, error = %gauntlet_core::redact::message(&e), "cannot run this assignment");
            finish(e, a.first_seq, 0, 0);
            return;
        }
    };
    let Some(segment) = ExecutionSegment::from_ticks(a.segment_start, a.segment_end) else {
        finish(
            format!(
                "bad segment [{}, {}) (ticks)",
                a.segment_start, a.segment_end
            ),
            a.first_seq,
            0,
            0,
        );
        return;
    };
    // Everyone starts at the same instant.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let wait = Duration::from_millis(a.start_at_unix_ms.saturating_sub(now_ms));
    tokio::select! {
        _ = stop.cancelled() => {
            finish(String::new(), a.first_seq, a.offset_ms.max(1), 0);
            return;
        }
        _ = sleep(wait) => {}
    }
    let config = RunConfig {
        segment,
        interval: Duration::from_millis(a.interval_ms.max(100)),
        seed: a.seed,
        offset: Duration::from_millis(a.offset_ms),
    };
    let (tx, mut rx) = mpsc::channel::<Delta>(16);
    let began = Instant::now();
    let progress = Arc::new(Progress::default());
    outbox
        .lock()
        .start(&key, Arc::clone(&progress), began, a.offset_ms);
    let engine = tokio::spawn(crate::engine::run_with_progress(
        program,
        config,
        stop.clone(),
        tx,
        Arc::clone(&progress),
    ));
    let mut seq = a.first_seq;
    // When the share was told to stop, on the run's clock: the coordinator counts the load
    // delivered up to there.
    let mut stopped_at_ms = 0;
    loop {
        let delta = tokio::select! {
            _ = stop.cancelled(), if stopped_at_ms == 0 => {
                stopped_at_ms = (a.offset_ms + began.elapsed().as_millis() as u64).max(1);
                if leaving.is_cancelled() {
                    // Shutting down: the coordinator hands the share over now, not after the
                    // drain.
                    outbox.lock().leaving(v1::Leaving {
                        run_id: a.run_id.clone(),
                        first_seq: a.first_seq,
                        stopped_at_ms,
                        gave_up: !shutdown.is_cancelled(),
                    });
                }
                continue;
            }
            delta = rx.recv() => delta,
        };
        let Some(delta) = delta else { break };
        seq += 1;
        tracing::debug!(run = %a.run_id, seq, at_ms = delta.at.as_millis() as u64, sessions = delta.snapshot.counters.sessions_started, active = delta.active_vus, "snapshot");
        let wire = snapshot_to_proto(
            &delta.snapshot,
            &a.run_id,
            seq,
            delta.at.as_millis() as u64,
            delta.active_vus,
        );
        outbox.lock().snapshot(&key, wire);
    }
    let _ = engine.await;
    let started = progress.started.load(std::sync::atomic::Ordering::Relaxed);
    finish(String::new(), seq, stopped_at_ms, started);
}

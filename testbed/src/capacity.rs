//! The testbed's capacity (`[pipeline] concurrency = W`): at most W agent runs in progress
//! across the whole testbed, further runs waiting in arrival order before `agent_started`; and
//! its ground truth (the most runs ever in progress at once, who waited and for how long).
//! Imports nothing of the testbed.
//!
//! A run is in progress from the moment it is admitted until its [`RunPermit`] is dropped: when
//! its last frame is written, or it is cut (a TCP drop, its connection closing). The gate is a
//! tokio [`Semaphore`], which is fair: permits go to waiters first come, first served. A run
//! joins the queue the moment it asks ([`Capacity::enter`]), not when its task is first
//! polled, so runs are admitted in the order they arrived.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use serde::{Deserialize, Serialize};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The testbed-wide run limit and its counters.
#[derive(Debug)]
pub struct Capacity {
    /// W; 0: unlimited.
    limit: usize,
    /// `None` when unlimited.
    gate: Option<Arc<Semaphore>>,
    in_progress: AtomicU64,
    max_in_progress: AtomicU64,
    waiting: AtomicU64,
    waited: AtomicU64,
    abandoned: AtomicU64,
    wait_total_us: AtomicU64,
    wait_max_us: AtomicU64,
    runs_ended: AtomicU64,
    busy_total_us: AtomicU64,
}

/// What [`Capacity::enter`] answers.
#[derive(Debug)]
pub enum Entry {
    /// A slot was free: the run is in progress now.
    Now(RunPermit),
    /// Every slot is taken: the run is in the queue, in arrival order.
    Queued(Queued),
}

/// A run in progress; dropping it ends the run and frees its slot for the next in the queue.
#[derive(Debug)]
pub struct RunPermit {
    capacity: Arc<Capacity>,
    since: Instant,
    _slot: Option<OwnedSemaphorePermit>,
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A run waiting for a slot. Dropping it before [`Queued::admitted`] returns (its connection
/// closed) takes it out of the queue without starting it: it never holds a slot.
pub struct Queued {
    capacity: Arc<Capacity>,
    acquire: Acquire,
    since: Instant,
    admitted: bool,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

fn add(counter: &AtomicU64, n: u64) -> u64 {
    counter.fetch_add(n, Ordering::Relaxed) + n
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Capacity {
    /// At most `limit` runs in progress at once; 0: unlimited.
    pub fn new(limit: usize) -> Arc<Capacity> {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        Arc::new(Capacity {
            limit,
            gate: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
            in_progress: AtomicU64::new(0),
            max_in_progress: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            wait_total_us: AtomicU64::new(0),
            wait_max_us: AtomicU64::new(0),
            runs_ended: AtomicU64::new(0),
            busy_total_us: AtomicU64::new(0),
        })
    }

    /// A run asks to start: admitted now if a slot is free (always when unlimited), else queued
    /// behind every run that asked before it.
    pub fn enter(self: &Arc<Self>) -> Entry {
        let Some(gate) = &self.gate else {
            return Entry::Now(self.admit(None));
        };
        // Poll the acquisition once, here, so the run joins the semaphore's queue now. The
        // waiter's real waker is registered when the run's task polls it again; `unconstrained`
        // keeps the task budget from refusing this poll without queueing.
        let mut acquire: Acquire =
            Box::pin(tokio::task::unconstrained(Arc::clone(gate).acquire_owned()));
        match acquire
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            // The semaphore is never closed; should it be, the run goes ahead ungated.
            Poll::Ready(slot) => Entry::Now(self.admit(slot.ok())),
            Poll::Pending => {
                add(&self.waiting, 1);
                add(&self.waited, 1);
                Entry::Queued(Queued {
                    capacity: Arc::clone(self),
                    acquire,
                    since: Instant::now(),
                    admitted: false,
                })
            }
        }
    }

    fn admit(self: &Arc<Self>, slot: Option<OwnedSemaphorePermit>) -> RunPermit {
        let now = add(&self.in_progress, 1);
        self.max_in_progress.fetch_max(now, Ordering::Relaxed);
        RunPermit {
            capacity: Arc::clone(self),
            since: Instant::now(),
            _slot: slot,
        }
    }

    /// A JSON-ready reading.
    pub fn snapshot(&self) -> CapacitySnapshot {
        CapacitySnapshot {
            concurrency: self.limit as u64,
            in_progress: get(&self.in_progress),
            max_in_progress: get(&self.max_in_progress),
            waiting: get(&self.waiting),
            waited: get(&self.waited),
            abandoned: get(&self.abandoned),
            wait_total_us: get(&self.wait_total_us),
            wait_max_us: get(&self.wait_max_us),
            runs_ended: get(&self.runs_ended),
            busy_total_us: get(&self.busy_total_us),
        }
    }
}

impl Queued {
    /// Waits for a slot (cancel-safe: dropping the future leaves the queue).
    pub async fn admitted(mut self) -> RunPermit {
        let slot = self.acquire.as_mut().await.ok();
        self.admitted = true;
        let capacity = &self.capacity;
        capacity.waiting.fetch_sub(1, Ordering::Relaxed);
        let waited = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        add(&capacity.wait_total_us, waited);
        capacity.wait_max_us.fetch_max(waited, Ordering::Relaxed);
        capacity.admit(slot)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.admitted {
            self.capacity.waiting.fetch_sub(1, Ordering::Relaxed);
            add(&self.capacity.abandoned, 1);
        }
    }
}

impl Drop for RunPermit {
    fn drop(&mut self) {
        // Runs before the semaphore permit (a field) is released, so `in_progress` never
        // counts more than the limit.
        self.capacity.in_progress.fetch_sub(1, Ordering::Relaxed);
        let held = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        add(&self.capacity.busy_total_us, held);
        add(&self.capacity.runs_ended, 1);
    }
}

/// `capacity` in `GET /__testbed/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct CapacitySnapshot {
    /// The setting: at most this many runs in progress at once; 0: unlimited.
    pub concurrency: u64,
    /// Runs in progress now.
    pub in_progress: u64,
    /// The most runs ever in progress at once (counted with or without a limit).
    pub max_in_progress: u64,
    /// Runs waiting for a slot now.
    pub waiting: u64,
    /// Runs that found every slot taken and had to wait (those still waiting included).
    pub waited: u64,
    /// Of those, runs whose connection closed while they waited: they never started.
    pub abandoned: u64,
    /// Total wait, in microseconds, of the runs that waited and then started.
    pub wait_total_us: u64,
    /// Longest such wait, in microseconds.
    pub wait_max_us: u64,
    /// Runs admitted that have ended (completed or cut).
    #[serde(default)]
    pub runs_ended: u64,
    /// Their total time in progress, in microseconds: `busy_total_us / runs_ended` is the
    /// mean run length, and `concurrency` over it the testbed's true capacity in runs per
    /// second.
    #[serde(default)]
    pub busy_total_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn now(entry: Entry) -> RunPermit {
        match entry {
            Entry::Now(permit) => permit,
            Entry::Queued(_) => panic!("expected a free slot"),
        }
    }

    fn queued(entry: Entry) -> Queued {
        match entry {
            Entry::Queued(q) => q,
            Entry::Now(_) => panic!("expected to wait"),
        }
    }

    #[test]
    fn unlimited_admits_everyone_and_counts_the_peak() {
        let c = Capacity::new(0);
        let permits: Vec<RunPermit> = (0..50).map(|_| now(c.enter())).collect();
        assert_eq!(c.snapshot().in_progress, 50);
        drop(permits);
        let s = c.snapshot();
        assert_eq!(
            (s.concurrency, s.in_progress, s.max_in_progress, s.waited),
            (0, 0, 50, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_admitted_in_arrival_order_and_their_waits_counted() {
        let c = Capacity::new(2);
        let first = [now(c.enter()), now(c.enter())];
        let waiters: Vec<Queued> = (0..4).map(|_| queued(c.enter())).collect();
        assert_eq!((c.snapshot().waiting, c.snapshot().waited), (4, 4));
        // Each admitted run holds its slot 100 ms; record the order of admission.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Spawned in reverse: admission must follow the order of `enter`, not of first poll.
        for (i, q) in waiters.into_iter().enumerate().rev() {
            let tx = tx.clone();
            tokio::spawn(async move {
                let permit = q.admitted().await;
                tx.send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                drop(permit);
            });
        }
        drop(tx);
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(first);
        let mut order = Vec::new();
        while let Some(i) = rx.recv().await {
            order.push(i);
        }
        assert_eq!(order, [0, 1, 2, 3]);
        let s = c.snapshot();
        assert_eq!((s.max_in_progress, s.in_progress, s.waiting), (2, 0, 0));
        // Two waited 100 ms, two 200 ms.
        assert_eq!((s.wait_total_us, s.wait_max_us), (600_000, 200_000));
        assert_eq!(s.abandoned, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_leaves_never_takes_a_slot() {
        let c = Capacity::new(1);
        let running = now(c.enter());
        let leaving = queued(c.enter());
        let staying = queued(c.enter());
        // Polled once (registered), then dropped: out of the queue.
        let mut admitted = Box::pin(leaving.admitted());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(admitted.as_mut().poll(&mut cx).is_pending());
        drop(admitted);
        let s = c.snapshot();
        assert_eq!((s.waiting, s.waited, s.abandoned), (1, 2, 1));
        drop(running);
        let permit = staying.admitted().await;
        let s = c.snapshot();
        assert_eq!((s.in_progress, s.waiting, s.max_in_progress), (1, 0, 1));
        drop(permit);
        let again = now(c.enter());
        assert_eq!(c.snapshot().in_progress, 1);
        drop(again);
    }
}

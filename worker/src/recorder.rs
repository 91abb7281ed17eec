//! Cheap recording: each VU buffers its samples, check results and counters locally and
//! flushes them into one of a few shards (a short lock) when its buffer fills, when the
//! reporting interval turns over, or when its session ends; the engine takes a
//! [`Snapshot`] delta from the shards every interval. Nothing allocates per sample.
//!
//! It also keeps the share's book for failure attribution: which sessions hold (or are
//! opening) a connection now, per subject, and which subjects, targets and connect intervals
//! it counts by value (at most [`WORKER_SUBJECTS`], [`WORKER_TARGETS`] and [`WORKER_STARTS`]
//! per share; later ones are untracked). A session's end is recorded with its subject, its
//! target, the live and in-flight counts it met when it connected and the interval it
//! connected in, in the same flush as its outcome.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gauntlet_core::attribution::{
    Attribution, MAX_LEVEL, NO_TARGET, SessionTags, WORKER_STARTS, WORKER_SUBJECTS, WORKER_TARGETS,
    value,
};
use gauntlet_core::metrics::{CheckStats, Counters, FailureKey, FailureStats, Snapshot, histogram};
use gauntlet_core::words::FailureCategory;
use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Index of a latency metric in [`Collector`].
pub type MetricId = u32;
/// Index of a named check in [`Collector`].
pub type CheckId = u32;

/// Samples a VU holds before it flushes.
const VU_BUFFER: usize = 32;

#[derive(Debug)]
struct Shard {
    histograms: Vec<Histogram<u64>>,
    counters: Counters,
    checks: Vec<CheckStats>,
    failures: HashMap<FailureKey, FailureStats>,
    attribution: Attribution,
}

/// Who holds a connection now, and what is counted by name.
#[derive(Debug, Default)]
struct Book {
    /// Sessions holding or opening a connection, per subject (no zero entry).
    live: HashMap<String, u64>,
    /// Sessions holding or opening a connection, every subject's.
    in_flight: u64,
    /// Subjects counted by name (at most [`WORKER_SUBJECTS`]).
    subjects: HashSet<String>,
    /// Targets counted by name (at most [`WORKER_TARGETS`]).
    targets: HashSet<String>,
    /// Connect intervals counted by index (at most [`WORKER_STARTS`]).
    starts: HashSet<u64>,
}

/// What a session met when it began to connect: the sessions of its subject already live on
/// this share, and every session in flight on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Met {
    /// Its subject's other sessions holding or opening a connection.
    pub live: u64,
    /// Every other session holding or opening a connection.
    pub in_flight: u64,
    /// The run's interval it began to connect in.
    pub started: u64,
}

/// A session counted as holding (or opening) a connection, until dropped.
#[derive(Debug)]
pub struct Presence {
    collector: Arc<Collector>,
    subject: String,
}

impl Drop for Presence {
    fn drop(&mut self) {
        let mut book = self.collector.book();
        book.in_flight = book.in_flight.saturating_sub(1);
        if let Some(n) = book.live.get_mut(&self.subject) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                book.live.remove(&self.subject);
            }
        }
    }
}

/// The worker-wide sink of every VU's measurements.
#[derive(Debug)]
pub struct Collector {
    metric_names: Vec<String>,
    check_names: Vec<String>,
    shards: Vec<Mutex<Shard>>,
    epoch: AtomicU64,
    started: Instant,
    interval: Duration,
    book: Mutex<Book>,
}

impl Collector {
    /// A collector for these metrics and checks, with the run's clock starting at `started`.
    pub fn new(metric_names: Vec<String>, check_names: Vec<String>, started: Instant) -> Collector {
        // One shard per core: a flush holds its lock for microseconds, and every shard keeps
        // a histogram per metric (tens of KiB each once latencies reach seconds).
        let shard_count = std::thread::available_parallelism().map_or(2, |n| n.get());
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    histograms: metric_names.iter().map(|_| histogram()).collect(),
                    counters: Counters::default(),
                    checks: vec![CheckStats::default(); check_names.len()],
                    failures: HashMap::new(),
                    attribution: Attribution::default(),
                })
            })
            .collect();
        Collector {
            metric_names,
            check_names,
            shards,
            epoch: AtomicU64::new(0),
            started,
            interval: Duration::from_secs(1),
            book: Mutex::new(Book::default()),
        }
    }

    /// The same, for snapshots every `interval` (what connect intervals are counted in; 1 s
    /// unless set).
    pub fn with_interval(mut self, interval: Duration) -> Collector {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The run's interval `now` falls in: `i` from `i x interval` to `(i + 1) x interval`.
    pub fn interval_now(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.started);
        (elapsed.as_nanos() / self.interval.as_nanos()) as u64
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // Every update is a single increment, decrement or insert: a poisoned lock is usable.
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A session of `subject` begins to connect: what it meets, and its presence (counted
    /// live and in flight until dropped).
    pub fn arrive(self: &Arc<Self>, subject: &str) -> (Met, Presence) {
        let started = self.interval_now();
        let mut book = self.book();
        let in_flight = book.in_flight;
        let live = book.live.entry(subject.to_owned()).or_default();
        let met = Met {
            live: *live,
            in_flight,
            started,
        };
        *live += 1;
        book.in_flight += 1;
        drop(book);
        let presence = Presence {
            collector: Arc::clone(self),
            subject: subject.to_owned(),
        };
        (met, presence)
    }

    /// What a session of `subject` would meet now, without counting it.
    pub fn meet(&self, subject: &str) -> Met {
        let started = self.interval_now();
        let book = self.book();
        Met {
            live: book.live.get(subject).copied().unwrap_or(0),
            in_flight: book.in_flight,
            started,
        }
    }

    /// The tags of a session that ended: its subject and target by name while the book has
    /// room for them (a name once counted stays counted), untracked beyond.
    fn tags(&self, subject: &str, target: Option<&str>, met: Met) -> SessionTags {
        let subject = value(subject);
        let target = value(target.unwrap_or(NO_TARGET));
        let mut book = self.book();
        let known = |set: &mut HashSet<String>, v: String, cap: usize| {
            if set.contains(&v) {
                Some(v)
            } else if set.len() < cap {
                set.insert(v.clone());
                Some(v)
            } else {
                None
            }
        };
        let started = if book.starts.contains(&met.started) || book.starts.len() < WORKER_STARTS {
            book.starts.insert(met.started);
            Some(met.started)
        } else {
            None
        };
        SessionTags {
            subject: known(&mut book.subjects, subject, WORKER_SUBJECTS),
            target: known(&mut book.targets, target, WORKER_TARGETS),
            live: met.live.min(MAX_LEVEL),
            in_flight: met.in_flight.min(MAX_LEVEL),
            started,
        }
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock cannot leave it half-written in a way that
        // matters more than losing the run; keep going with what is there.
        self.shards[i % self.shards.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A recorder for one VU.
    pub fn recorder(self: &Arc<Self>, vu: u64) -> VuRecorder {
        VuRecorder {
            collector: Arc::clone(self),
            shard: vu as usize,
            samples: Vec::new(),
            checks: Vec::new(),
            counters: Counters::default(),
            epoch: self.epoch.load(Ordering::Relaxed),
        }
    }

    /// Adds counters directly (scheduler events such as dropped arrivals).
    pub fn add_counters(&self, counters: &Counters) {
        self.shard(0).counters.add(counters);
    }

    /// Everything flushed since the last call, as a delta; asks VUs to flush at their next
    /// sample.
    pub fn take(&self) -> Snapshot {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        let mut snapshot = Snapshot::default();
        for i in 0..self.shards.len() {
            let mut shard = self.shard(i);
            let mut part = Snapshot::default();
            // Added straight into the delta's histograms (no copy of the shard's), then
            // emptied in place for the next interval.
            for (name, h) in self.metric_names.iter().zip(shard.histograms.iter_mut()) {
                if !h.is_empty() {
                    let sum = snapshot
                        .histograms
                        .entry(name.clone())
                        .or_insert_with(histogram);
                    // Auto-resizing histograms of equal precision always add.
                    let _ = sum.add(&*h);
                    h.reset();
                }
            }
            part.counters = std::mem::take(&mut shard.counters);
            for (name, c) in self.check_names.iter().zip(shard.checks.iter_mut()) {
                if c.run > 0 {
                    part.checks.insert(name.clone(), std::mem::take(c));
                }
            }
            part.failures = shard.failures.drain().collect();
            part.attribution = std::mem::take(&mut shard.attribution);
            drop(shard);
            snapshot.merge(&part);
        }
        snapshot
    }

    /// Milliseconds since the run started.
    pub fn elapsed_ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }
}

/// One VU's local buffer.
#[derive(Debug)]
pub struct VuRecorder {
    collector: Arc<Collector>,
    shard: usize,
    samples: Vec<(MetricId, u64)>,
    checks: Vec<(CheckId, bool)>,
    /// Counters since the last flush (add to them freely).
    pub counters: Counters,
    epoch: u64,
}

/// A session's end on its way into the shard: its tags and category (`None`: passed), and its
/// primary failure.
struct Ended {
    tags: SessionTags,
    category: Option<FailureCategory>,
    failure: Option<(FailureKey, FailureStats)>,
}

/// What a session that ended is attributed to.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    /// Its subject.
    pub subject: &'a str,
    /// The address of the connection its steps used last; `None` when it made none.
    pub target: Option<&'a str>,
    /// What it met when it began to connect.
    pub met: Met,
}

impl VuRecorder {
    /// Records a latency.
    pub fn record(&mut self, metric: MetricId, latency: Duration) {
        if self.samples.capacity() == 0 {
            self.samples.reserve_exact(VU_BUFFER);
        }
        let micros = latency.as_micros().clamp(1, u64::MAX as u128) as u64;
        self.samples.push((metric, micros));
        self.maybe_flush();
    }

    /// Records a check result.
    pub fn check(&mut self, check: CheckId, passed: bool) {
        self.counters.checks_run += 1;
        if !passed {
            self.counters.checks_failed += 1;
        }
        if self.checks.capacity() == 0 {
            self.checks.reserve_exact(VU_BUFFER);
        }
        self.checks.push((check, passed));
        self.maybe_flush();
    }

    /// Records the end of a session in one flush: its latency under each of `metrics`, its
    /// outcome counter and, for a failed one, its primary failure (`at` is when it was seen).
    /// Everything a session's end records reaches the same snapshot, so every snapshot holds
    /// exactly as many `session` samples as sessions passed and failed, and as many failure
    /// patterns as sessions failed: the coordinator checks that.
    ///
    /// Its attribution (`ending`) goes in the same flush.
    pub fn end_session(
        &mut self,
        metrics: &[MetricId],
        took: Duration,
        failure: Option<(FailureKey, Instant, String)>,
        ending: Ending<'_>,
    ) {
        let micros = took.as_micros().clamp(1, u64::MAX as u128) as u64;
        self.samples.extend(metrics.iter().map(|m| (*m, micros)));
        let tags = self
            .collector
            .tags(ending.subject, ending.target, ending.met);
        let ended = match failure {
            None => {
                self.counters.sessions_passed += 1;
                Ended {
                    tags,
                    category: None,
                    failure: None,
                }
            }
            Some((key, at, sample)) => {
                self.counters.sessions_failed += 1;
                let one = FailureStats::one(self.collector.elapsed_ms(at), sample);
                Ended {
                    tags,
                    category: Some(key.category.clone()),
                    failure: Some((key, one)),
                }
            }
        };
        self.flush_with(Some(ended));
    }

    /// See [`Collector::arrive`].
    pub fn arrive(&self, subject: &str) -> (Met, Presence) {
        self.collector.arrive(subject)
    }

    /// See [`Collector::meet`].
    pub fn meet(&self, subject: &str) -> Met {
        self.collector.meet(subject)
    }

    /// See [`Collector::interval_now`].
    pub fn interval_now(&self) -> u64 {
        self.collector.interval_now()
    }

    fn maybe_flush(&mut self) {
        let epoch = self.collector.epoch.load(Ordering::Relaxed);
        if self.samples.len() >= VU_BUFFER || self.checks.len() >= VU_BUFFER || epoch != self.epoch
        {
            self.flush();
        }
    }

    /// Moves everything buffered into the shard.
    pub fn flush(&mut self) {
        self.flush_with(None);
    }

    /// Moves everything buffered into the shard, with the end of the session that just ended
    /// (in the same flush as its counts, so each snapshot's figures agree).
    fn flush_with(&mut self, ended: Option<Ended>) {
        self.epoch = self.collector.epoch.load(Ordering::Relaxed);
        if self.samples.is_empty()
            && self.checks.is_empty()
            && self.counters == Counters::default()
            && ended.is_none()
        {
            return;
        }
        let mut shard = self.collector.shard(self.shard);
        let failure = ended.and_then(|e| {
            shard.attribution.record(&e.tags, e.category.as_ref());
            e.failure
        });
        if let Some((key, one)) = failure {
            match shard.failures.get_mut(&key) {
                Some(stats) => stats.add(&one),
                None => {
                    shard.failures.insert(key, one);
                }
            }
        }
        for (metric, micros) in self.samples.drain(..) {
            if let Some(h) = shard.histograms.get_mut(metric as usize) {
                // `record` grows the auto-resizing histogram; `saturating_record` would clamp
                // instead, so it is only the fallback for values beyond any range.
                if h.record(micros).is_err() {
                    h.saturating_record(micros);
                }
            }
        }
        for (check, passed) in self.checks.drain(..) {
            if let Some(c) = shard.checks.get_mut(check as usize) {
                c.run += 1;
                if !passed {
                    c.failed += 1;
                }
            }
        }
        shard.counters.add(&self.counters);
        drop(shard);
        self.counters = Counters::default();
    }

    /// Gives back the buffers' memory (an idle VU between sessions).
    pub fn shrink(&mut self) {
        self.flush();
        self.samples = Vec::new();
        self.checks = Vec::new();
    }
}

impl Drop for VuRecorder {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flushed_samples_reach_the_snapshot_once() {
        let c = Arc::new(Collector::new(
            vec!["a".into(), "b".into()],
            vec!["chk".into()],
            Instant::now(),
        ));
        let mut vus: Vec<VuRecorder> = (0..10).map(|v| c.recorder(v)).collect();
        for (i, r) in vus.iter_mut().enumerate() {
            for j in 0..100u64 {
                r.record((j % 2) as MetricId, Duration::from_micros(100 + j));
            }
            r.check(0, i % 2 == 0);
            r.counters.frames_sent += 3;
        }
        drop(vus);
        let s = c.take();
        assert_eq!(s.histograms["a"].len(), 500);
        assert_eq!(s.histograms["b"].len(), 500);
        assert_eq!(s.histograms["a"].max(), 198, "values are kept, not clamped");
        assert_eq!(s.checks["chk"], CheckStats { run: 10, failed: 5 });
        assert_eq!(s.counters.frames_sent, 30);
        assert_eq!(s.counters.checks_failed, 5);
        let again = c.take();
        assert!(again.histograms.is_empty());
        assert_eq!(again.counters, Counters::default());
    }

    #[tokio::test]
    async fn sessions_are_attributed_with_what_they_met_and_names_are_capped() {
        let c = Arc::new(Collector::new(
            vec!["session".into()],
            vec![],
            Instant::now(),
        ));
        let mut r = c.recorder(0);
        // Two sessions of `a` and one of `b` connected; a third of `a` meets 2 live of its
        // subject and 3 in flight.
        let (first, a1) = r.arrive("a");
        let (_, a2) = r.arrive("a");
        let (_, b1) = r.arrive("b");
        let (met, a3) = r.arrive("a");
        assert_eq!(first, Met::default());
        assert_eq!(
            met,
            Met {
                live: 2,
                in_flight: 3,
                started: 0
            }
        );
        drop((a1, b1));
        assert_eq!((r.meet("a").live, r.meet("a").in_flight), (2, 2));
        let failure = FailureKey {
            category: FailureCategory::FactoryInitFailed,
            detail: String::new(),
            scenario: "s".into(),
            step: "ws_connect".into(),
        };
        r.end_session(
            &[0],
            Duration::from_millis(5),
            Some((failure, Instant::now(), "x".into())),
            Ending {
                subject: "a",
                target: Some("127.0.0.1:1"),
                met,
            },
        );
        drop((a2, a3));
        assert_eq!(r.meet("a"), Met::default(), "every presence ended");
        let s = c.take();
        let fail = FailureCategory::FactoryInitFailed;
        assert_eq!(s.attribution.live.values[&2].failed_with(&fail), 1);
        assert_eq!(s.attribution.in_flight.values[&3].failed_with(&fail), 1);
        assert_eq!(s.attribution.target.values["127.0.0.1:1"].sessions(), 1);
        assert_eq!(s.attribution.started.values[&0].sessions(), 1);
        // Past the caps, names are untracked; a name counted before stays counted.
        // `a`, counted already, and 10,000 others: the last of them is one too many.
        for i in 0..2 * WORKER_SUBJECTS {
            let subject = if i % 2 == 0 {
                "a".to_owned()
            } else {
                format!("u{i}")
            };
            r.end_session(
                &[0],
                Duration::from_millis(1),
                None,
                Ending {
                    subject: &subject,
                    target: None,
                    met: Met::default(),
                },
            );
        }
        let s = c.take();
        let subjects = &s.attribution.subject;
        assert_eq!(subjects.values.len(), WORKER_SUBJECTS);
        assert_eq!(subjects.values["a"].passed, WORKER_SUBJECTS as u64);
        assert_eq!(subjects.untracked.passed, 1);
        assert!(
            !subjects
                .values
                .contains_key(&format!("u{}", 2 * WORKER_SUBJECTS - 1))
        );
        assert_eq!(
            s.attribution.target.values[NO_TARGET].passed,
            2 * WORKER_SUBJECTS as u64,
            "every session is counted"
        );
    }

    #[tokio::test]
    async fn a_new_interval_makes_vus_flush_at_their_next_sample() {
        let c = Arc::new(Collector::new(vec!["a".into()], vec![], Instant::now()));
        let mut r = c.recorder(0);
        r.record(0, Duration::from_micros(5));
        assert!(c.take().histograms.is_empty(), "still buffered");
        r.record(0, Duration::from_micros(6));
        assert_eq!(c.take().histograms["a"].len(), 2);
    }
}

//! Cheap recording: each VU buffers its samples, check results and counters locally and
//! flushes them into one of a few shards (a short lock) when its buffer fills, when the
//! reporting interval turns over, or when its session ends; the engine takes a
//! [`Snapshot`] delta from the shards every interval. Nothing allocates per sample.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gauntlet_core::metrics::{CheckStats, Counters, FailureKey, FailureStats, Snapshot, histogram};
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
}

/// The worker-wide sink of every VU's measurements.
#[derive(Debug)]
pub struct Collector {
    metric_names: Vec<String>,
    check_names: Vec<String>,
    shards: Vec<Mutex<Shard>>,
    epoch: AtomicU64,
    started: Instant,
}

impl Collector {
    /// A collector for these metrics and checks, with the run's clock starting at `started`.
    pub fn new(metric_names: Vec<String>, check_names: Vec<String>, started: Instant) -> Collector {
        let shard_count = std::thread::available_parallelism().map_or(4, |n| n.get() * 2);
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    histograms: metric_names.iter().map(|_| histogram()).collect(),
                    counters: Counters::default(),
                    checks: vec![CheckStats::default(); check_names.len()],
                    failures: HashMap::new(),
                })
            })
            .collect();
        Collector {
            metric_names,
            check_names,
            shards,
            epoch: AtomicU64::new(0),
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
            failure: None,
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
            for (name, h) in self.metric_names.iter().zip(shard.histograms.iter_mut()) {
                if !h.is_empty() {
                    part.histograms.insert(name.clone(), h.clone());
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
    /// The primary failure of the session that just ended, until flushed.
    failure: Option<(FailureKey, FailureStats)>,
    epoch: u64,
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
    pub fn end_session(
        &mut self,
        metrics: &[MetricId],
        took: Duration,
        failure: Option<(FailureKey, Instant, String)>,
    ) {
        let micros = took.as_micros().clamp(1, u64::MAX as u128) as u64;
        self.samples.extend(metrics.iter().map(|m| (*m, micros)));
        match failure {
            None => self.counters.sessions_passed += 1,
            Some((key, at, sample)) => {
                self.counters.sessions_failed += 1;
                let one = FailureStats::one(self.collector.elapsed_ms(at), sample);
                self.failure = Some((key, one));
            }
        }
        self.flush();
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
        self.epoch = self.collector.epoch.load(Ordering::Relaxed);
        if self.samples.is_empty()
            && self.checks.is_empty()
            && self.counters == Counters::default()
            && self.failure.is_none()
        {
            return;
        }
        let mut shard = self.collector.shard(self.shard);
        if let Some((key, one)) = self.failure.take() {
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
    async fn a_new_interval_makes_vus_flush_at_their_next_sample() {
        let c = Arc::new(Collector::new(vec!["a".into()], vec![], Instant::now()));
        let mut r = c.recorder(0);
        r.record(0, Duration::from_micros(5));
        assert!(c.take().histograms.is_empty(), "still buffered");
        r.record(0, Duration::from_micros(6));
        assert_eq!(c.take().histograms["a"].len(), 2);
    }
}

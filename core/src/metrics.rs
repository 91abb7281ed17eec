//! What a run measures: latency histograms by metric name, counters, failure patterns, check
//! results and failure attribution, in one [`Snapshot`] type that merges exactly. A worker's
//! interval deltas, a fleet's total and a report's numbers are all snapshots.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::attribution::Attribution;
use crate::words::FailureCategory;

/// Significant digits of every latency histogram.
pub const SIGFIG: u8 = 3;
/// How many raw samples each failure pattern keeps.
pub const SAMPLES_PER_PATTERN: usize = 3;
/// Longest raw sample kept, in bytes.
pub const SAMPLE_BYTES: usize = 512;
/// Distinct details kept for one category at one step of one scenario; further ones are
/// counted together under [`OTHER_DETAILS`].
pub const MAX_DETAILS: usize = 32;
/// The detail under which failures beyond [`MAX_DETAILS`] at one place are counted.
pub const OTHER_DETAILS: &str = "(other details)";

/// A new, empty latency histogram (microseconds, [`SIGFIG`] digits, growing as needed).
pub fn histogram() -> Histogram<u64> {
    // 3 significant digits is always a valid precision.
    Histogram::new(SIGFIG).unwrap_or_else(|_| unreachable!("sigfig 3 is valid"))
}

/// Event counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sessions that began.
    pub sessions_started: u64,
    /// Sessions that ended with every check passing.
    pub sessions_passed: u64,
    /// Sessions that ended with a failure.
    pub sessions_failed: u64,
    /// Sessions cut off by the end of the run (neither passed nor failed).
    pub sessions_interrupted: u64,
    /// Open model: arrivals that found no free VU.
    pub dropped_arrivals: u64,
    /// WebSocket frames sent.
    pub frames_sent: u64,
    /// WebSocket frames received.
    pub frames_received: u64,
    /// Payload bytes sent (WebSocket frames and HTTP bodies).
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Checks evaluated.
    pub checks_run: u64,
    /// Checks that failed.
    pub checks_failed: u64,
}

impl Counters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        self.sessions_started = self.sessions_started.saturating_add(other.sessions_started);
        self.sessions_passed = self.sessions_passed.saturating_add(other.sessions_passed);
        self.sessions_failed = self.sessions_failed.saturating_add(other.sessions_failed);
        self.sessions_interrupted = self
            .sessions_interrupted
            .saturating_add(other.sessions_interrupted);
        self.dropped_arrivals = self.dropped_arrivals.saturating_add(other.dropped_arrivals);
        self.frames_sent = self.frames_sent.saturating_add(other.frames_sent);
        self.frames_received = self.frames_received.saturating_add(other.frames_received);
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        self.checks_run = self.checks_run.saturating_add(other.checks_run);
        self.checks_failed = self.checks_failed.saturating_add(other.checks_failed);
    }
}

/// Where and what: the key of a failure pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FailureKey {
    /// The category (`factory_init_failed`, or a plan classifier's).
    pub category: FailureCategory,
    /// What distinguishes it inside the category (`403`, `1011`, `agent_completed`...).
    pub detail: String,
    /// Scenario.
    pub scenario: String,
    /// Step.
    pub step: String,
}

/// How often a pattern was seen, when, and what it looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureStats {
    /// Sessions whose primary failure this was.
    pub count: u64,
    /// First time seen, ms since the run started.
    pub first_ms: u64,
    /// Last time seen, ms since the run started.
    pub last_ms: u64,
    /// The first few raw samples (close code + reason, the frame, the response).
    pub samples: Vec<String>,
}

impl FailureStats {
    /// One occurrence at `at_ms`; the raw sample is kept as [`sample`] makes it (credentials
    /// masked, cut).
    pub fn one(at_ms: u64, raw: String) -> FailureStats {
        FailureStats {
            count: 1,
            first_ms: at_ms,
            last_ms: at_ms,
            samples: vec![sample(raw)],
        }
    }

    /// Adds `other` into `self`, keeping the earliest samples (sums saturate: a peer's counts
    /// never wrap the fleet's).
    pub fn add(&mut self, other: &FailureStats) {
        if other.first_ms < self.first_ms {
            let mut samples = other.samples.clone();
            samples.append(&mut self.samples);
            self.samples = samples;
        } else {
            self.samples.extend(other.samples.iter().cloned());
        }
        self.samples.truncate(SAMPLES_PER_PATTERN);
        self.count = self.count.saturating_add(other.count);
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
    }
}

/// Longest failure detail (the part of a failure pattern's key beside category, scenario and
/// step), in bytes: details group failures, so they stay short.
pub const DETAIL_BYTES: usize = 200;

/// Cuts a sample to [`SAMPLE_BYTES`] on a character boundary.
pub fn truncate(sample: String) -> String {
    cut(sample, SAMPLE_BYTES)
}

/// What is kept of a raw failure sample (a frame, a body, a close reason: a target may echo a
/// token back): its credentials masked ([`crate::redact::text`]), then cut to
/// [`SAMPLE_BYTES`]. The text is first cut to four times that, so masking costs little
/// whatever the target sent; a credential that first cut splits lies past what the second
/// keeps (unless masking shortened the text before it by more than 1.5 KiB).
pub fn sample(raw: String) -> String {
    truncate(crate::redact::text(&cut(raw, 4 * SAMPLE_BYTES)))
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Runs and failures of one named check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// Times evaluated.
    pub run: u64,
    /// Times failed.
    pub failed: u64,
}

/// Everything measured over some interval by some set of workers.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Latency histograms (microseconds) by metric name.
    pub histograms: BTreeMap<String, Histogram<u64>>,
    /// Counters.
    pub counters: Counters,
    /// Failure patterns (each failed session counted once, under its primary failure).
    pub failures: BTreeMap<FailureKey, FailureStats>,
    /// Check results by check name (`scenario/step`).
    pub checks: BTreeMap<String, CheckStats>,
    /// Every session that ended, counted by what it had in common with others (its subject,
    /// target, concurrency, connect interval, worker): failure attribution's raw material.
    pub attribution: Attribution,
}

impl Snapshot {
    /// Adds `other` into `self`: histogram counts add bucket by bucket, so percentiles of the
    /// sum equal those of one histogram that saw every sample.
    pub fn merge(&mut self, other: &Snapshot) {
        for (name, h) in &other.histograms {
            let mine = self
                .histograms
                .entry(name.clone())
                .or_insert_with(histogram);
            // Auto-resizing histograms of equal precision always add.
            let _ = mine.add(h);
        }
        self.merge_outcomes(other);
        self.attribution.merge(&other.attribution);
    }

    /// Adds `other`'s counters, failure patterns and checks into `self` (not its histograms
    /// or attribution).
    pub fn merge_outcomes(&mut self, other: &Snapshot) {
        self.counters.add(&other.counters);
        for (key, stats) in &other.failures {
            if let Some(mine) = self.failures.get_mut(key) {
                mine.add(stats);
                continue;
            }
            // A new detail: beyond MAX_DETAILS at one place it joins the others' pattern
            // (details can come from the target, which must not size the report).
            let place = |k: &FailureKey| {
                k.category == key.category && k.scenario == key.scenario && k.step == key.step
            };
            let known = self.failures.keys().filter(|k| place(k)).count();
            let key = if known >= MAX_DETAILS && key.detail != OTHER_DETAILS {
                FailureKey {
                    detail: OTHER_DETAILS.to_owned(),
                    ..key.clone()
                }
            } else {
                key.clone()
            };
            match self.failures.get_mut(&key) {
                Some(mine) => mine.add(stats),
                None => {
                    self.failures.insert(key, stats.clone());
                }
            }
        }
        for (name, c) in &other.checks {
            let mine = self.checks.entry(name.clone()).or_default();
            mine.run = mine.run.saturating_add(c.run);
            mine.failed = mine.failed.saturating_add(c.failed);
        }
    }

    /// Failed sessions by category, most frequent first.
    pub fn failures_by_category(&self) -> Vec<(FailureCategory, u64)> {
        crate::words::tally(self.failures.iter().map(|(k, v)| (&k.category, v.count)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn merged_histograms_equal_one_that_saw_everything() {
        let mut all = histogram();
        let mut parts = [
            Snapshot::default(),
            Snapshot::default(),
            Snapshot::default(),
        ];
        let mut x = 12345u64;
        for i in 0..30_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = 1 + (x >> 40) % 5_000_000;
            all.record(v).unwrap();
            parts[(i % 3) as usize]
                .histograms
                .entry("m".into())
                .or_insert_with(histogram)
                .record(v)
                .unwrap();
        }
        let mut total = Snapshot::default();
        for p in &parts {
            total.merge(p);
        }
        let merged = &total.histograms["m"];
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.value_at_quantile(q),
                all.value_at_quantile(q),
                "q={q}"
            );
        }
        assert_eq!(merged.len(), all.len());
    }

    #[test]
    fn failure_patterns_keep_earliest_samples() {
        let mut a = FailureStats::one(50, "late".into());
        a.add(&FailureStats::one(10, "early".into()));
        a.add(&FailureStats::one(90, "x".into()));
        a.add(&FailureStats::one(95, "y".into()));
        assert_eq!(a.count, 4);
        assert_eq!((a.first_ms, a.last_ms), (10, 95));
        assert_eq!(a.samples, vec!["early", "late", "x"]);
    }

    #[test]
    fn details_beyond_the_bound_are_counted_together() {
        let mut total = Snapshot::default();
        for i in 0..100 {
            let mut one = Snapshot::default();
            one.failures.insert(
                FailureKey {
                    category: "sequence_violation".into(),
                    detail: format!("unexpected `junk-{i}`"),
                    scenario: "s".into(),
                    step: "seq".into(),
                },
                FailureStats::one(i, "x".into()),
            );
            total.merge(&one);
        }
        assert_eq!(total.failures.len(), MAX_DETAILS + 1);
        let other = total
            .failures
            .iter()
            .find(|(k, _)| k.detail == OTHER_DETAILS)
            .unwrap();
        assert_eq!(other.1.count, 100 - MAX_DETAILS as u64);
        let sum: u64 = total.failures.values().map(|f| f.count).sum();
        assert_eq!(sum, 100, "every failure is still counted");
    }

    #[test]
    fn samples_lose_their_credentials_and_stay_short() {
        let raw = format!("HTTP 401 {{\"token\":\"abc\"}} {}", "x".repeat(5000));
        let s = FailureStats::one(1, raw);
        assert!(
            s.samples[0].starts_with("HTTP 401 {\"token\":\"<redacted>\"} xxx"),
            "{}",
            s.samples[0]
        );
        assert_eq!(s.samples[0].len(), SAMPLE_BYTES + '…'.len_utf8());
    }

    #[test]
    fn long_samples_are_cut_on_char_boundaries() {
        let s = truncate("é".repeat(400));
        assert!(s.len() <= SAMPLE_BYTES + '…'.len_utf8());
    }
}

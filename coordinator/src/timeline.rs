//! A run's measurements over time, in memory bounded whatever the run's length: the recent
//! intervals in full (late snapshots still land in them, windowed thresholds read them), older
//! ones folded into the series' points, which double in width when there are too many; and
//! every window of a windowed threshold judged once, as soon as its last interval is final.
//!
//! An interval is *final* once the newest interval anyone reported is [`Timeline::late`]
//! intervals past it: snapshots arrive in order and are resent for at most a heartbeat timeout
//! before their worker is lost, so one that comes later still is an anomaly. It is still
//! merged into the totals and the series, exactly; but the windows it falls in were judged
//! without it, so it is counted ([`Timeline::late_snapshots`]) and every windowed threshold
//! fails rather than pass on figures that missed it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use gauntlet_core::metrics::{Snapshot, histogram};
use gauntlet_core::report::{IntervalReport, ThresholdReport};
use gauntlet_core::sparse::Delta;
use gauntlet_core::thresholds::Threshold;
use hdrhistogram::Histogram;

/// Metrics whose p50/p90/p99/max the series carries.
pub const MAIN_METRICS: [&str; 3] = ["session", "ws.handshake", "ws.confirmation"];
/// At most this many series points: beyond, neighbours merge and every point covers twice as
/// many intervals (a 24-hour run at 1 s intervals: 675 points of 128 s).
pub const MAX_POINTS: usize = 1024;
/// Workers named in a point's `per_worker`; the sessions of any others are summed under
/// [`OTHER_WORKERS`] (a chart of more lines than this says nothing).
pub const MAX_SERIES_WORKERS: usize = 64;
/// Where a point counts the sessions of workers beyond [`MAX_SERIES_WORKERS`].
pub const OTHER_WORKERS: &str = "(other workers)";
/// Significant digits a closed point keeps its histograms at. Its quantiles are taken exactly
/// (3 digits) when it closes; only a point made again from closed ones (a halving, a snapshot
/// later than its interval) has quantiles to 2 digits (within 1 %), which a chart does not
/// show, for a tenth of the memory.
pub const SERIES_DIGITS: u8 = 2;

/// One interval in full, while snapshots may still arrive for it or windows still read it.
#[derive(Debug, Default)]
struct Slot {
    /// Counters, failures, checks and the windowed metrics' histograms.
    window: Snapshot,
    /// Whether its figures went to the series' points already (it is final).
    folded: bool,
    /// The parts only the series reads; emptied when folded.
    part: Part,
}

/// What a stretch of intervals adds to the series.
#[derive(Debug, Default)]
struct Part {
    main: BTreeMap<String, Histogram<u64>>,
    /// Per interval, each worker's VUs in a session at its snapshot (summed when folded).
    active: BTreeMap<String, u64>,
    per_worker: BTreeMap<String, u64>,
}

/// One point of the series: `width` intervals.
#[derive(Debug, Default, Clone)]
struct Point {
    sessions: u64,
    passed: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
    /// The main metrics' histograms: while the point is being filled, as they are; once it is
    /// full, as V2 + deflate bytes (a full point is rarely read again) with their quantiles.
    main: Main,
    /// The most VUs in a session at any of its intervals' ends.
    active_vus: u64,
    per_worker: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
enum Main {
    Open(BTreeMap<String, Histogram<u64>>),
    /// Encoded histograms, and p50, p90, p99 and max of each.
    Closed(BTreeMap<String, (Vec<u8>, [u64; 4])>),
}

impl Default for Main {
    fn default() -> Self {
        Main::Open(BTreeMap::new())
    }
}

impl Point {
    /// Adds the counters and series parts of an interval (or of another point).
    fn add(
        &mut self,
        counters: (u64, u64, u64),
        failures: &BTreeMap<String, u64>,
        main: &BTreeMap<String, Histogram<u64>>,
        active_vus: u64,
        per_worker: &BTreeMap<String, u64>,
    ) {
        self.sessions = self.sessions.saturating_add(counters.0);
        self.passed = self.passed.saturating_add(counters.1);
        self.failed = self.failed.saturating_add(counters.2);
        for (c, n) in failures {
            let mine = self.failures.entry(c.clone()).or_default();
            *mine = mine.saturating_add(*n);
        }
        if !main.is_empty() {
            let hists = self.open();
            for (m, h) in main {
                let _ = hists.entry(m.clone()).or_insert_with(histogram).add(h);
            }
        }
        self.active_vus = self.active_vus.max(active_vus);
        for (w, n) in per_worker {
            add_worker(&mut self.per_worker, w, *n);
        }
    }

    /// Its histograms, to add to (decoded if the point was closed).
    fn open(&mut self) -> &mut BTreeMap<String, Histogram<u64>> {
        if let Main::Closed(_) = &self.main {
            self.main = Main::Open(self.histograms());
        }
        match &mut self.main {
            Main::Open(h) => h,
            Main::Closed(_) => unreachable!("opened above"),
        }
    }

    /// Its histograms (a copy; those of a point closed before are of [`SERIES_DIGITS`]).
    fn histograms(&self) -> BTreeMap<String, Histogram<u64>> {
        match &self.main {
            Main::Open(h) => h.clone(),
            Main::Closed(c) => {
                let mut d = hdrhistogram::serialization::Deserializer::new();
                c.iter()
                    .filter_map(|(m, (b, _))| {
                        let h = gauntlet_core::hdr::decode_digits(&mut d, b, SERIES_DIGITS);
                        Some((m.clone(), h.ok()?))
                    })
                    .collect()
            }
        }
    }

    /// It is full: its quantiles are taken, then its histograms kept encoded at
    /// [`SERIES_DIGITS`] (about a tenth of the bytes), for the rare late snapshot or halving.
    fn close(&mut self) {
        if let Main::Open(hists) = &self.main {
            let closed = hists
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .filter_map(|(m, h)| {
                    let mut coarse = Histogram::<u64>::new(SERIES_DIGITS).ok()?;
                    coarse.add(h).ok()?;
                    Some((
                        m.clone(),
                        (gauntlet_core::hdr::encode(&coarse)?, quantiles(h)),
                    ))
                })
                .collect();
            self.main = Main::Closed(closed);
        }
    }

    /// p50, p90, p99 and max of each main metric.
    fn latency(&self) -> BTreeMap<String, [u64; 4]> {
        match &self.main {
            Main::Open(h) => h
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(m, h)| (m.clone(), quantiles(h)))
                .collect(),
            Main::Closed(c) => c.iter().map(|(m, (_, q))| (m.clone(), *q)).collect(),
        }
    }

    /// Adds `other`, the point after it, into this one.
    fn absorb(&mut self, other: &Point) {
        let main = other.histograms();
        self.add(
            (other.sessions, other.passed, other.failed),
            &other.failures,
            &main,
            other.active_vus,
            &other.per_worker,
        );
    }
}

fn quantiles(h: &Histogram<u64>) -> [u64; 4] {
    [
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.max(),
    ]
}

/// Adds `n` sessions of worker `w` to `map`, which names at most [`MAX_SERIES_WORKERS`].
fn add_worker(map: &mut BTreeMap<String, u64>, w: &str, n: u64) {
    let key = if map.contains_key(w)
        || map.keys().filter(|k| *k != OTHER_WORKERS).count() < MAX_SERIES_WORKERS
    {
        w
    } else {
        OTHER_WORKERS
    };
    let mine = map.entry(key.to_owned()).or_default();
    *mine = mine.saturating_add(n);
}

/// A windowed threshold, judged window by window.
#[derive(Debug)]
struct Windows {
    /// Its index among the run's thresholds.
    index: usize,
    threshold: Threshold,
    /// Its window, in intervals.
    k: u64,
    /// The worst of the windows judged so far, and how many were.
    worst: Option<f64>,
    judged: u64,
}

/// A run's measurements over time.
#[derive(Debug)]
pub struct Timeline {
    interval_ms: u64,
    /// Metrics windowed thresholds read: the only histograms a slot keeps for windows.
    windowed: Vec<String>,
    windows: Vec<Windows>,
    /// Intervals `base .. base + slots.len()`, in full.
    slots: VecDeque<Slot>,
    base: u64,
    /// Intervals before this one are final.
    final_before: u64,
    /// How far behind the newest interval an interval becomes final.
    late: u64,
    /// Points of `width` intervals each: point `p` covers `p * width .. (p + 1) * width`.
    points: Vec<Point>,
    width: u64,
    /// [`MAX_POINTS`], but in tests.
    max_points: usize,
    late_snapshots: u64,
}

impl Timeline {
    /// A timeline of intervals `interval` long, for `thresholds` (the windowed ones are judged
    /// here); an interval is final once snapshots are `late_after` past it.
    pub fn new(interval: Duration, thresholds: &[Threshold], late_after: Duration) -> Timeline {
        let interval_ms = (interval.as_millis() as u64).max(1);
        let interval = Duration::from_millis(interval_ms);
        let windows: Vec<Windows> = thresholds
            .iter()
            .enumerate()
            .filter_map(|(index, t)| {
                let k = t.window_intervals(interval)? as u64;
                Some(Windows {
                    index,
                    threshold: t.clone(),
                    k,
                    worst: None,
                    judged: 0,
                })
            })
            .collect();
        Timeline {
            interval_ms,
            windowed: gauntlet_core::thresholds::windowed_metrics(thresholds),
            windows,
            slots: VecDeque::new(),
            base: 0,
            final_before: 0,
            late: (late_after.as_millis() as u64).div_ceil(interval_ms).max(2),
            points: Vec::new(),
            width: 1,
            max_points: MAX_POINTS,
            late_snapshots: 0,
        }
    }

    /// Intervals an interval stays open to snapshots behind the newest one.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Snapshots that arrived after their interval was final.
    pub fn late_snapshots(&self) -> u64 {
        self.late_snapshots
    }

    /// The intervals reported so far (the newest one's index plus one).
    pub fn len(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Intervals held in full, and series points: what the memory of a run is made of.
    pub fn held(&self) -> (usize, usize) {
        (self.slots.len(), self.points.len())
    }

    /// Files `delta` from `worker`, taken with `active_vus` VUs in a session, under the
    /// interval ending at or after `at_ms`.
    pub fn add(&mut self, worker: &str, at_ms: u64, active_vus: u64, delta: &Delta) {
        let index = at_ms.saturating_sub(1) / self.interval_ms;
        if index < self.final_before {
            let mut part = Part::default();
            for m in MAIN_METRICS {
                if let Some(h) = delta.histograms.get(m) {
                    part.main.insert(m.to_owned(), h.to_histogram());
                }
            }
            part.per_worker
                .insert(worker.to_owned(), delta.rest.counters.sessions_started);
            if !self.windows.is_empty() {
                self.late_snapshots += 1;
            }
            // Its interval's windows are judged; its figures still count in the series.
            let (failures, started, passed, failed) = outcome(&delta.rest);
            self.add_to_point(
                index,
                (started, passed, failed),
                &failures,
                &part.main,
                active_vus,
                &part.per_worker,
            );
            if let Some(slot) = index
                .checked_sub(self.base)
                .and_then(|i| self.slots.get_mut(i as usize))
            {
                delta.merge_windowed_into(&mut slot.window, &self.windowed);
            }
            return;
        }
        while self.len() <= index {
            self.slots.push_back(Slot::default());
        }
        let slot = &mut self.slots[(index - self.base) as usize];
        delta.merge_windowed_into(&mut slot.window, &self.windowed);
        for m in MAIN_METRICS {
            if let Some(h) = delta.histograms.get(m) {
                match slot.part.main.get_mut(m) {
                    Some(mine) => h.add_to(mine),
                    None => {
                        slot.part.main.insert(m.to_owned(), h.to_histogram());
                    }
                }
            }
        }
        slot.part.active.insert(worker.to_owned(), active_vus);
        let n = slot.part.per_worker.entry(worker.to_owned()).or_default();
        *n = n.saturating_add(delta.rest.counters.sessions_started);
        // Intervals `late` or more behind the newest are final.
        self.close_until(self.len().saturating_sub(self.late));
    }

    /// Makes every interval before `until` final: folds it into the series, judges the windows
    /// that end in it, and lets go of what no window will read again.
    fn close_until(&mut self, until: u64) {
        while self.final_before < until {
            let f = self.final_before;
            self.fold(f);
            for i in 0..self.windows.len() {
                let k = self.windows[i].k;
                if f + 1 >= k {
                    let observed = self.observe(i, f + 1 - k, f);
                    let w = &mut self.windows[i];
                    w.worst = w.threshold.worst(w.worst, observed);
                    w.judged += 1;
                }
            }
            self.final_before += 1;
            // Windows ending later need at most the last k - 1 final intervals.
            let keep = self.windows.iter().map(|w| w.k).max().unwrap_or(1) - 1;
            while self.base + keep < self.final_before && !self.slots.is_empty() {
                self.slots.pop_front();
                self.base += 1;
            }
        }
    }

    /// Folds interval `f` (in the slots, not yet folded) into its series point.
    fn fold(&mut self, f: u64) {
        let Some(slot) = f
            .checked_sub(self.base)
            .and_then(|i| self.slots.get_mut(i as usize))
        else {
            return;
        };
        if slot.folded {
            return;
        }
        slot.folded = true;
        let part = std::mem::take(&mut slot.part);
        let (failures, started, passed, failed) = outcome(&slot.window);
        let active: u64 = part.active.values().sum();
        self.add_to_point(
            f,
            (started, passed, failed),
            &failures,
            &part.main,
            active,
            &part.per_worker,
        );
    }

    /// Adds an interval's figures to the series point interval `index` is in, made (and the
    /// points halved) as needed. Only the newest point stays open; the others are encoded.
    fn add_to_point(
        &mut self,
        index: u64,
        counters: (u64, u64, u64),
        failures: &BTreeMap<String, u64>,
        main: &BTreeMap<String, Histogram<u64>>,
        active_vus: u64,
        per_worker: &BTreeMap<String, u64>,
    ) {
        let mut p = (index / self.width) as usize;
        while p >= self.max_points {
            self.halve();
            p = (index / self.width) as usize;
        }
        if self.points.len() <= p {
            if let Some(last) = self.points.last_mut() {
                last.close();
            }
            self.points.resize_with(p + 1, Point::default);
        }
        let last = self.points.len() - 1;
        let point = &mut self.points[p];
        point.add(counters, failures, main, active_vus, per_worker);
        if p < last {
            point.close();
        }
    }

    /// Merges neighbouring points: every point covers twice as many intervals.
    fn halve(&mut self) {
        let old = std::mem::take(&mut self.points);
        let mut points = Vec::with_capacity(old.len().div_ceil(2));
        for pair in old.chunks(2) {
            let mut merged = pair[0].clone();
            if let Some(second) = pair.get(1) {
                merged.absorb(second);
            }
            merged.close();
            points.push(merged);
        }
        self.points = points;
        self.width *= 2;
    }

    /// The windowed threshold `i` observed over intervals `from..=to` (all in the slots).
    fn observe(&self, i: usize, from: u64, to: u64) -> Option<f64> {
        let mut merged = Snapshot::default();
        for x in from..=to {
            if let Some(slot) = x
                .checked_sub(self.base)
                .and_then(|j| self.slots.get(j as usize))
            {
                merged.merge(&slot.window);
            }
        }
        self.windows[i].threshold.observe(&merged)
    }

    /// Every windowed threshold judged over every window so far: the final ones judged as
    /// they closed, the rest now. A run shorter than a window is judged as one window. Returns
    /// (threshold index, report).
    pub fn judge(&self) -> Vec<(usize, ThresholdReport)> {
        let n = self.len();
        self.windows
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut worst = w.worst;
                if n > 0 && n < w.k && w.judged == 0 {
                    worst = self.observe(i, 0, n - 1);
                } else {
                    for end in self.final_before.max(w.k - 1)..n {
                        worst = w.threshold.worst(worst, self.observe(i, end + 1 - w.k, end));
                    }
                }
                let mut report = w.threshold.report(worst);
                if self.late_snapshots > 0 {
                    report.pass = false;
                    report.reason = format!(
                        "{} snapshot(s) arrived more than {} after their interval, when its windows were judged already: the windows cannot be judged",
                        self.late_snapshots,
                        humantime::format_duration(Duration::from_millis(
                            self.late * self.interval_ms
                        ))
                    );
                }
                (w.index, report)
            })
            .collect()
    }

    /// The windowed threshold with index `index` (among the run's thresholds) judged live: the
    /// windows closed so far and the latest complete window (its newest interval may still
    /// get snapshots). `None` if it is not windowed.
    pub fn judge_live(&self, index: usize) -> Option<ThresholdReport> {
        let (i, w) = self
            .windows
            .iter()
            .enumerate()
            .find(|(_, w)| w.index == index)?;
        let n = self.len();
        let mut worst = w.worst;
        if n >= w.k {
            worst = w.threshold.worst(worst, self.observe(i, n - w.k, n - 1));
        } else if n > 0 && n < w.k && w.judged == 0 {
            worst = self.observe(i, 0, n - 1);
        }
        Some(w.threshold.report(worst))
    }

    /// The main metrics' histograms merged over the intervals that began at or after
    /// `from_ms`, among those still held in full (the last [`Timeline::late`] intervals and
    /// more): a recent window, not a long one.
    pub fn main_since(&self, from_ms: u64) -> BTreeMap<String, Histogram<u64>> {
        let first = from_ms.div_ceil(self.interval_ms);
        let mut merged: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
        for (j, slot) in self.slots.iter().enumerate() {
            if self.base + (j as u64) < first || slot.folded {
                continue;
            }
            for (m, h) in &slot.part.main {
                let _ = merged.entry(m.clone()).or_insert_with(histogram).add(h);
            }
        }
        merged
    }

    /// VUs in a session fleet-wide at the newest interval.
    pub fn active_vus(&self) -> u64 {
        match self.slots.back() {
            Some(s) if !s.folded => s.part.active.values().sum(),
            _ => self.points.last().map_or(0, |p| p.active_vus),
        }
    }

    /// The series: one entry per point of `width` intervals, the final intervals from the
    /// points and the open ones merged in.
    pub fn series(&self) -> Vec<IntervalReport> {
        let span = self.width * self.interval_ms;
        let entry = |p: usize, point: &Point| IntervalReport {
            at_ms: (p as u64 + 1) * span,
            sessions: point.sessions,
            passed: point.passed,
            failed: point.failed,
            failures: point.failures.clone(),
            latency: point.latency(),
            active_vus: point.active_vus,
            per_worker: point.per_worker.clone(),
        };
        // Points the open intervals add to, copied (with their histograms) and added to.
        let mut touched: BTreeMap<usize, Point> = BTreeMap::new();
        for (j, slot) in self.slots.iter().enumerate() {
            if slot.folded {
                continue;
            }
            let p = ((self.base + j as u64) / self.width) as usize;
            let point = touched.entry(p).or_insert_with(|| {
                let mut copy = self.points.get(p).cloned().unwrap_or_default();
                copy.open();
                copy
            });
            let (failures, started, passed, failed) = outcome(&slot.window);
            point.add(
                (started, passed, failed),
                &failures,
                &slot.part.main,
                slot.part.active.values().sum(),
                &slot.part.per_worker,
            );
        }
        let len = self
            .points
            .len()
            .max(touched.keys().next_back().map_or(0, |p| p + 1));
        let empty = Point::default();
        (0..len)
            .map(|p| match touched.get(&p) {
                Some(point) => entry(p, point),
                None => entry(p, self.points.get(p).unwrap_or(&empty)),
            })
            .collect()
    }
}

/// Failures by category and the session counters of `s`.
fn outcome(s: &Snapshot) -> (BTreeMap<String, u64>, u64, u64, u64) {
    let failures = s
        .failures_by_category()
        .into_iter()
        .map(|(c, n)| (c.to_string(), n))
        .collect();
    let c = &s.counters;
    (
        failures,
        c.sessions_started,
        c.sessions_passed,
        c.sessions_failed,
    )
}

#[cfg(test)]
mod tests;

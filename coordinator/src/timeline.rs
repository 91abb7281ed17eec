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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
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

/// The main metrics' histograms, in the order of [`MAIN_METRICS`].
type Mains = [Option<Histogram<u64>>; MAIN_METRICS.len()];

/// What a stretch of intervals adds to the series.
#[derive(Debug, Default)]
struct Part {
    main: Mains,
    /// Per interval, each worker's VUs in a session at its snapshot (summed when folded).
    active: BTreeMap<String, u64>,
    per_worker: BTreeMap<String, u64>,
}

/// A name the points share however many of them carry it (a worker's, a failure category).
type Name = Arc<str>;

/// Emptied histograms a [`Store`] keeps for reuse.
const SPARE: usize = 4 * MAIN_METRICS.len();

/// What a timeline's points share: the names they carry, each stored once (of the run's workers
/// and failure categories, so as many as those), and a few emptied histograms. Every interval
/// and every point fills three histograms of tens of KB (a 3-digit histogram's counts up to the
/// longest latency) and lets go of them a few seconds later; freed and allocated again, they
/// left holes the points' small lasting allocations settled in, and the coordinator's memory
/// grew by a few KiB a second (BENCHMARKS.md, "Soak"). Emptied and reused, they do not.
#[derive(Debug, Default)]
struct Store {
    names: BTreeSet<Name>,
    spare: Vec<Histogram<u64>>,
}

impl Store {
    fn name(&mut self, name: &str) -> Name {
        if let Some(n) = self.names.get(name) {
            return n.clone();
        }
        let n: Name = name.into();
        self.names.insert(n.clone());
        n
    }

    /// An empty histogram as [`histogram`] makes it, reused if one was kept.
    fn histogram(&mut self) -> Histogram<u64> {
        self.spare.pop().unwrap_or_else(histogram)
    }

    /// Keeps the histograms of `main` emptied, for [`Store::histogram`] (those
    /// [`histogram`] made: not a closed point's, decoded at [`SERIES_DIGITS`]).
    fn recycle(&mut self, main: &mut Mains) {
        for mut h in main.iter_mut().filter_map(Option::take) {
            if self.spare.len() < SPARE && h.sigfig() == gauntlet_core::metrics::SIGFIG {
                h.reset();
                self.spare.push(h);
            }
        }
    }
}

/// One point of the series: `width` intervals. A thousand of them make a long run's series, so
/// a full one is kept small: names shared, lists exactly as long as they are, its histograms
/// encoded.
#[derive(Debug, Default, Clone)]
struct Point {
    sessions: u64,
    passed: u64,
    failed: u64,
    /// Failures by category, sorted by category.
    failures: Vec<(Name, u64)>,
    main: Main,
    /// The most VUs in a session at any of its intervals' ends.
    active_vus: u64,
    /// Sessions by worker, sorted by worker, at most [`MAX_SERIES_WORKERS`] named.
    per_worker: Vec<(Name, u64)>,
}

/// A point's main metrics' histograms.
#[derive(Debug, Clone)]
enum Main {
    /// While the point is being filled: as they are.
    Open(Box<Mains>),
    /// Once it is full (it is rarely read again): each encoded (V2 + deflate at
    /// [`SERIES_DIGITS`]) with its p50, p90, p99 and max, taken before it was encoded.
    Closed([Option<Encoded>; MAIN_METRICS.len()]),
}

/// A histogram's bytes and its p50, p90, p99 and max.
type Encoded = (Box<[u8]>, [u64; 4]);

impl Default for Main {
    /// No histograms: nothing to encode, and nothing allocated.
    fn default() -> Self {
        Main::Closed(Default::default())
    }
}

impl Point {
    /// Adds the counters and series parts of an interval (or of another point).
    #[allow(clippy::too_many_arguments)]
    fn add<'a>(
        &mut self,
        store: &mut Store,
        counters: (u64, u64, u64),
        failures: impl IntoIterator<Item = (&'a str, u64)>,
        main: &Mains,
        active_vus: u64,
        per_worker: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.sessions = self.sessions.saturating_add(counters.0);
        self.passed = self.passed.saturating_add(counters.1);
        self.failed = self.failed.saturating_add(counters.2);
        for (c, n) in failures {
            add_named(&mut self.failures, store, c, n);
        }
        if main.iter().any(Option::is_some) {
            let hists = self.open();
            for (mine, h) in hists.iter_mut().zip(main) {
                if let Some(h) = h {
                    let _ = mine.get_or_insert_with(|| store.histogram()).add(h);
                }
            }
        }
        self.active_vus = self.active_vus.max(active_vus);
        for (w, n) in per_worker {
            add_worker(&mut self.per_worker, store, w, n);
        }
    }

    /// Its histograms, to add to (decoded if the point was closed).
    fn open(&mut self) -> &mut Mains {
        if let Main::Closed(_) = &self.main {
            self.main = Main::Open(Box::new(self.histograms()));
        }
        match &mut self.main {
            Main::Open(h) => h,
            Main::Closed(_) => unreachable!("opened above"),
        }
    }

    /// Its histograms (a copy; those of a point closed before are of [`SERIES_DIGITS`]).
    fn histograms(&self) -> Mains {
        match &self.main {
            Main::Open(h) => (**h).clone(),
            Main::Closed(c) => {
                let mut d = hdrhistogram::serialization::Deserializer::new();
                c.each_ref().map(|c| {
                    let (b, _) = c.as_ref()?;
                    gauntlet_core::hdr::decode_digits(&mut d, b, SERIES_DIGITS).ok()
                })
            }
        }
    }

    /// It is full: its quantiles are taken, then its histograms kept encoded at
    /// [`SERIES_DIGITS`] (about a tenth of the bytes), for the rare late snapshot or halving.
    fn close(&mut self, store: &mut Store) {
        if let Main::Open(hists) = &mut self.main {
            let closed = hists.each_ref().map(|h| {
                let h = h.as_ref().filter(|h| !h.is_empty())?;
                let mut coarse = Histogram::<u64>::new(SERIES_DIGITS).ok()?;
                coarse.add(h).ok()?;
                let bytes = gauntlet_core::hdr::encode(&coarse)?.into_boxed_slice();
                Some((bytes, quantiles(h)))
            });
            store.recycle(hists);
            self.main = Main::Closed(closed);
        }
        self.failures.shrink_to_fit();
        self.per_worker.shrink_to_fit();
    }

    /// p50, p90, p99 and max of each main metric.
    fn latency(&self) -> BTreeMap<String, [u64; 4]> {
        let q: [Option<[u64; 4]>; MAIN_METRICS.len()] = match &self.main {
            Main::Open(h) => h.each_ref().map(|h| {
                let h = h.as_ref().filter(|h| !h.is_empty())?;
                Some(quantiles(h))
            }),
            Main::Closed(c) => c.each_ref().map(|c| c.as_ref().map(|(_, q)| *q)),
        };
        MAIN_METRICS
            .iter()
            .zip(q)
            .filter_map(|(m, q)| Some(((*m).to_owned(), q?)))
            .collect()
    }

    /// Adds `other`, the point after it, into this one.
    fn absorb(&mut self, store: &mut Store, other: &Point) {
        let main = other.histograms();
        self.add(
            store,
            (other.sessions, other.passed, other.failed),
            other.failures.iter().map(|(c, n)| (&**c, *n)),
            &main,
            other.active_vus,
            other.per_worker.iter().map(|(w, n)| (&**w, *n)),
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

/// Adds `n` to `name`'s count in `list` (sorted by name).
fn add_named(list: &mut Vec<(Name, u64)>, store: &mut Store, name: &str, n: u64) {
    match list.binary_search_by(|(k, _)| (**k).cmp(name)) {
        Ok(i) => list[i].1 = list[i].1.saturating_add(n),
        Err(i) => list.insert(i, (store.name(name), n)),
    }
}

/// Adds `n` sessions of worker `w` to `list`, which names at most [`MAX_SERIES_WORKERS`].
fn add_worker(list: &mut Vec<(Name, u64)>, store: &mut Store, w: &str, n: u64) {
    let named = || list.iter().filter(|(k, _)| &**k != OTHER_WORKERS).count();
    let key = if list.iter().any(|(k, _)| &**k == w) || named() < MAX_SERIES_WORKERS {
        w
    } else {
        OTHER_WORKERS
    };
    add_named(list, store, key, n);
}

/// `list` as a map, for a report.
fn to_map(list: &[(Name, u64)]) -> BTreeMap<String, u64> {
    list.iter().map(|(k, n)| (k.to_string(), *n)).collect()
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
    /// What the points share.
    store: Store,
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
            store: Store::default(),
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
            for (mine, m) in part.main.iter_mut().zip(MAIN_METRICS) {
                *mine = delta.histograms.get(m).map(|h| h.to_histogram());
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
        for (mine, m) in slot.part.main.iter_mut().zip(MAIN_METRICS) {
            if let Some(h) = delta.histograms.get(m) {
                h.add_to(mine.get_or_insert_with(|| self.store.histogram()));
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
        let mut part = std::mem::take(&mut slot.part);
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
        self.store.recycle(&mut part.main);
    }

    /// Adds an interval's figures to the series point interval `index` is in, made (and the
    /// points halved) as needed. Only the newest point stays open; the others are encoded.
    fn add_to_point(
        &mut self,
        index: u64,
        counters: (u64, u64, u64),
        failures: &BTreeMap<String, u64>,
        main: &Mains,
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
                last.close(&mut self.store);
            }
            self.points.resize_with(p + 1, Point::default);
        }
        let last = self.points.len() - 1;
        let point = &mut self.points[p];
        point.add(
            &mut self.store,
            counters,
            failures.iter().map(|(c, n)| (c.as_str(), *n)),
            main,
            active_vus,
            per_worker.iter().map(|(w, n)| (w.as_str(), *n)),
        );
        if p < last {
            point.close(&mut self.store);
        }
    }

    /// Merges neighbouring points: every point covers twice as many intervals. In place: a
    /// second copy of the series would double what it holds for a moment.
    fn halve(&mut self) {
        let n = self.points.len();
        for i in 0..n.div_ceil(2) {
            let mut merged = std::mem::take(&mut self.points[2 * i]);
            if let Some(second) = self.points.get_mut(2 * i + 1) {
                let second = std::mem::take(second);
                merged.absorb(&mut self.store, &second);
            }
            merged.close(&mut self.store);
            self.points[i] = merged;
        }
        self.points.truncate(n.div_ceil(2));
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
            for (m, h) in MAIN_METRICS.iter().zip(&slot.part.main) {
                if let Some(h) = h {
                    let _ = merged
                        .entry((*m).to_owned())
                        .or_insert_with(histogram)
                        .add(h);
                }
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
            failures: to_map(&point.failures),
            latency: point.latency(),
            active_vus: point.active_vus,
            per_worker: to_map(&point.per_worker),
        };
        // Points the open intervals add to, copied (with their histograms) and added to.
        let mut touched: BTreeMap<usize, Point> = BTreeMap::new();
        let mut store = Store::default();
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
                &mut store,
                (started, passed, failed),
                failures.iter().map(|(c, n)| (c.as_str(), *n)),
                &slot.part.main,
                slot.part.active.values().sum(),
                slot.part.per_worker.iter().map(|(w, n)| (w.as_str(), *n)),
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

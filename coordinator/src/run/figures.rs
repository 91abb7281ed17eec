//! What `/metrics` shows of a run: live figures while it runs, the report once finished.

use std::collections::BTreeMap;

use gauntlet_core::prometheus::{self, Buckets, QUANTILES, RECENT_WINDOW_MS};
use gauntlet_core::report::Report;
use gauntlet_core::words::RunPhase;

use super::Run;
use crate::lock;

/// One metric's latency while the run goes: its buckets and its exact quantiles
/// ([`prometheus::QUANTILES`], microseconds).
pub type LiveLatency = (Buckets, [u64; QUANTILES.len()]);

/// What `/metrics` shows of a run still going, read under its lock at once.
#[derive(Debug, Clone)]
pub struct LiveFigures {
    /// Waiting or running.
    pub phase: RunPhase,
    /// Sessions started, passed, failed, interrupted; dropped arrivals; sessions of unknown
    /// outcome (0 until the run ends).
    pub sessions: [u64; 6],
    /// Failed sessions by (scenario, category).
    pub failures: BTreeMap<(String, String), u64>,
    /// Every metric's latency so far, by name.
    pub latency: BTreeMap<String, LiveLatency>,
    /// The main metrics' samples in the recent window (the snapshot intervals that began in
    /// the last [`RECENT_WINDOW_MS`]) and their exact quantiles, microseconds.
    pub recent: BTreeMap<String, (u64, [u64; QUANTILES.len()])>,
    /// Active VUs.
    pub active_vus: u64,
}

/// What `/metrics` shows of a run.
#[derive(Debug, Clone)]
pub enum RunFigures {
    /// Still going: what has been merged so far.
    Live(LiveFigures),
    /// Finished: its report (which keeps every metric's histogram).
    Finished(Box<Report>),
}

impl Run {
    /// The run's figures for `/metrics`. While it goes, each merged histogram is walked once,
    /// under the run's lock.
    pub fn figures(&self) -> RunFigures {
        let state = lock(&self.state);
        if let Some(r) = &state.report {
            return RunFigures::Finished(Box::new(r.clone()));
        }
        let total = state.agg.total();
        let c = &total.counters;
        let mut f = LiveFigures {
            phase: state.phase,
            sessions: [
                c.sessions_started,
                c.sessions_passed,
                c.sessions_failed,
                c.sessions_interrupted,
                c.dropped_arrivals,
                0,
            ],
            failures: BTreeMap::new(),
            latency: BTreeMap::new(),
            recent: BTreeMap::new(),
            active_vus: state.agg.active_vus(),
        };
        for (k, v) in &total.failures {
            *f.failures
                .entry((k.scenario.clone(), k.category.to_string()))
                .or_default() += v.count;
        }
        for (name, h) in total.histograms.iter().filter(|(_, h)| !h.is_empty()) {
            f.latency
                .insert(name.clone(), (Buckets::of(h), prometheus::quantiles(h)));
        }
        let recent = state
            .agg
            .main_since(state.elapsed_ms().saturating_sub(RECENT_WINDOW_MS));
        for (name, h) in recent.histograms.iter().filter(|(_, h)| !h.is_empty()) {
            f.recent
                .insert(name.clone(), (h.len(), prometheus::quantiles(h)));
        }
        RunFigures::Live(f)
    }
}

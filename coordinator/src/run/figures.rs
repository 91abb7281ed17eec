//! What `/metrics` shows of a run: live figures while it runs, the report's once finished.

use std::collections::BTreeMap;

use super::Run;
use crate::aggregator::MAIN_METRICS;
use crate::lock;

/// A Prometheus summary: (count, sum in seconds, [(quantile, seconds)]).
pub type LatencySummary = (u64, f64, Vec<(f64, f64)>);

/// What `/metrics` shows of a run: live figures while it runs, the report's once finished.
#[derive(Debug, Clone, Default)]
pub struct RunFigures {
    /// Sessions started, passed, failed, interrupted; dropped arrivals; sessions of unknown
    /// outcome (0 until the run ends).
    pub sessions: [u64; 6],
    /// Failed sessions by (scenario, category).
    pub failures: BTreeMap<(String, String), u64>,
    /// Main metrics' latency.
    pub latency: BTreeMap<String, LatencySummary>,
    /// Active VUs.
    pub active_vus: u64,
}

impl Run {
    /// The run's figures for `/metrics`.
    pub fn figures(&self) -> RunFigures {
        let state = lock(&self.state);
        let mut f = RunFigures::default();
        if let Some(r) = &state.report {
            let t = &r.totals;
            f.sessions = [
                t.sessions,
                t.passed,
                t.failed,
                t.interrupted,
                t.dropped,
                t.unknown,
            ];
            for x in &r.failures {
                *f.failures
                    .entry((x.scenario.clone(), x.category.to_string()))
                    .or_default() += x.count;
            }
            for m in MAIN_METRICS {
                if let Some(s) = r.metrics.get(m) {
                    let q = vec![
                        (0.5, s.p50_us as f64 / 1e6),
                        (0.9, s.p90_us as f64 / 1e6),
                        (0.99, s.p99_us as f64 / 1e6),
                    ];
                    f.latency
                        .insert(m.to_owned(), (s.count, s.mean_us * s.count as f64 / 1e6, q));
                }
            }
            return f;
        }
        let total = state.agg.total();
        let c = &total.counters;
        f.sessions = [
            c.sessions_started,
            c.sessions_passed,
            c.sessions_failed,
            c.sessions_interrupted,
            c.dropped_arrivals,
            0,
        ];
        for (k, v) in &total.failures {
            *f.failures
                .entry((k.scenario.clone(), k.category.to_string()))
                .or_default() += v.count;
        }
        for m in MAIN_METRICS {
            if let Some(h) = total.histograms.get(m).filter(|h| !h.is_empty()) {
                let q = [0.5, 0.9, 0.99]
                    .map(|q| (q, h.value_at_quantile(q) as f64 / 1e6))
                    .to_vec();
                f.latency
                    .insert(m.to_owned(), (h.len(), h.mean() * h.len() as f64 / 1e6, q));
            }
        }
        f.active_vus = state.agg.active_vus();
        f
    }
}

//! How much of the planned load a run delivered (`delivered`, and each worker's `share`).
//!
//! - Closed model bound by iterations only: sessions started over VUs x iterations.
//! - Otherwise: each share covers the planned load (VU-seconds, or arrivals) of its segment
//!   from where it started (0, or the point it took over from) to where it stopped: the plan's
//!   end, the moment the run was stopped (cancel, abort, deadline), the moment a departing
//!   worker stopped starting sessions, or the last time a lost worker was heard from. Open
//!   model: an arrival dropped for want of a free VU was planned load not sent.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::plan::{Load, Model};
use crate::schedule::Ramp;
use crate::segment::ExecutionSegment;

/// The part of the run one share covered.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The worker that ran it.
    pub worker: String,
    /// Its segment of the load.
    pub segment: ExecutionSegment,
    /// Where in the run's time it started, ms.
    pub from_ms: u64,
    /// Where it stopped covering its load, ms (`u64::MAX`: to the plan's end).
    pub to_ms: u64,
}

/// The load a run delivered, share by share.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// VUs x iterations for a plan bound by iterations only.
    planned_sessions: Option<u64>,
    /// Whether the plan has a time bound with load in it (a ramp whose integral is above 0).
    timed: bool,
    /// Per share: (worker, fraction of the whole plan's load it covered).
    covered: Vec<(String, f64)>,
    /// Open model: the fraction of the plan's arrivals dropped for want of a free VU.
    dropped: f64,
}

impl Delivery {
    /// The delivery of a run of `load` whose shares covered `spans`, with `dropped` arrivals
    /// dropped fleet-wide.
    pub fn of(load: &Load, spans: &[Span], dropped: u64) -> Delivery {
        let ramp = Ramp::of(load);
        let planned = ramp.total();
        let closed = load.model() == Model::Closed;
        let planned_sessions = match (load.iterations(), planned) {
            (Some(n), None) if closed => Some(load.max_vus().saturating_mul(n)),
            _ => None,
        };
        let mut covered = Vec::new();
        let mut dropped_fraction = 0.0;
        let timed = planned.is_some_and(|t| ramp.integral(t) > 0.0);
        if let Some(total) = planned {
            let max_vus = load.max_vus();
            // The whole plan's load: VU-seconds of every VU, or arrivals.
            let whole = if closed {
                ramp.vu_seconds(0, max_vus, Duration::ZERO, total)
            } else {
                ramp.integral(total)
            };
            for span in spans {
                let (from, to) = (
                    Duration::from_millis(span.from_ms).min(total),
                    Duration::from_millis(span.to_ms).min(total),
                );
                let load = if to <= from {
                    0.0
                } else if closed {
                    // Exactly its VUs' planned VU-seconds (VU i runs while the ramp's whole
                    // VUs exceed i): low VU ids carry more of a ramp than a width says.
                    let vus = span.segment.vus(max_vus);
                    ramp.vu_seconds(vus.start, vus.end, from, to)
                } else {
                    // Its arrivals: a low-discrepancy share of the fleet's.
                    span.segment.width() * (ramp.integral(to) - ramp.integral(from))
                };
                let fraction = if whole > 0.0 {
                    (load / whole).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                covered.push((span.worker.clone(), fraction));
            }
            if !closed && whole > 0.0 {
                dropped_fraction = dropped as f64 / whole;
            }
        } else {
            // No time bound: shares are measured by the sessions they started.
            covered = spans.iter().map(|s| (s.worker.clone(), 0.0)).collect();
        }
        Delivery {
            planned_sessions,
            timed,
            covered,
            dropped: dropped_fraction,
        }
    }

    /// The run's `delivered`, `started` being the sessions started fleet-wide.
    pub fn delivered(&self, started: u64) -> f64 {
        match self.planned_sessions {
            Some(p) if p > 0 => (started as f64 / p as f64).min(1.0),
            _ if self.timed => {
                // Shares meet end to end; float sums of their fractions may miss 1 by an ulp.
                let sum: f64 = self.covered.iter().map(|(_, f)| f).sum();
                let sum = if (1.0 - sum).abs() < 1e-9 { 1.0 } else { sum };
                (sum - self.dropped).clamp(0.0, 1.0)
            }
            // Nothing was planned.
            _ => 1.0,
        }
    }

    /// Each worker's part of `delivered`; `sessions` are the sessions each worker started
    /// (what an iterations-only plan's shares are measured by).
    pub fn by_worker(&self, sessions: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        match self.planned_sessions {
            Some(p) if p > 0 => {
                for (worker, _) in &self.covered {
                    let n = sessions.get(worker).copied().unwrap_or(0);
                    out.insert(worker.clone(), n as f64 / p as f64);
                }
            }
            _ => {
                for (worker, f) in &self.covered {
                    *out.entry(worker.clone()).or_default() += f;
                }
            }
        }
        out
    }
}

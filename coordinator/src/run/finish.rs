//! The end of a run: its facts (the thresholds judged on the merged figures, each worker's
//! part and its sessions of unknown outcome, the load delivered) gathered from the shares and
//! the registry, handed to `gauntlet_core::report` to judge and build the report, which is
//! then published, stored in the history, and the merged histograms let go.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use gauntlet_core::report::delivery::Delivery;
use gauntlet_core::report::verdict::{Coverage, Ran, judge};
use gauntlet_core::report::{self, ThresholdReport, WorkerReport, unknown};
use gauntlet_core::schedule::Ramp;
use gauntlet_core::words::{Cause, Judgement, RunPhase, Verdict};
use sha2::{Digest, Sha256};

use super::Run;
use crate::aggregator::Aggregator;
use crate::{Coordinator, lock};

/// Builds the report and publishes it; `early` says how the run ended if it never started.
pub(super) fn finish(coordinator: &Coordinator, run: &Run, early: Option<Judgement>) {
    let mut state = lock(&run.state);
    if let Some(e) = early {
        state.ended_early.get_or_insert(e);
    }
    let ended_ms = state.elapsed_ms();
    let total = state.agg.total().clone();
    let thresholds: Vec<ThresholdReport> = state.agg.judge(&run.thresholds);
    // An abort is told with the whole run's figures, as the threshold table shows them.
    if let Some((expr, at)) = &state.aborted_by
        && let Some(t) = run.thresholds.iter().position(|t| t.expr() == *expr)
    {
        let judged = &thresholds[t];
        let reason = if judged.pass {
            // Failed live (a window, or early figures) and holds over the whole run.
            format!(
                "aborted at {:.1} s: threshold `{expr}` failed when judged live (over the whole run it holds: observed {})",
                *at as f64 / 1000.0,
                judged
                    .observed
                    .map_or("nothing".into(), |v| gauntlet_core::thresholds::show(
                        v,
                        &judged.unit
                    ))
            )
        } else {
            format!(
                "aborted at {:.1} s: threshold `{expr}` failed ({})",
                *at as f64 / 1000.0,
                judged.reason
            )
        };
        state.ended_early = Some(Judgement::new(Verdict::Fail, Cause::Aborted, reason));
    }
    let now = SystemTime::now();
    let tallies = state.agg.workers().clone();
    let fleet_shortest = total
        .histograms
        .get("session")
        .filter(|h| !h.is_empty())
        .map(|h| h.min());
    let beat = coordinator.config.heartbeat_interval.clamp(
        Duration::from_millis(100),
        gauntlet_proto::PROGRESS_INTERVAL,
    );
    let mut workers: BTreeMap<String, WorkerReport> = BTreeMap::new();
    let mut unreported_elsewhere = 0u64;
    let mut missing_from: Vec<String> = Vec::new();
    for share in &state.shares {
        let w = workers.entry(share.worker.clone()).or_insert_with(|| {
            let t = tallies.get(&share.worker).cloned().unwrap_or_default();
            WorkerReport {
                id: share.worker.clone(),
                name: share.name.clone(),
                share: 0.0,
                sessions: t.sessions,
                snapshots: t.snapshots,
                lost_at_ms: None,
                left_at_ms: None,
                in_flight_bound: None,
                handed_to: Vec::new(),
            }
        });
        w.handed_to.extend(share.handed_to.iter().cloned());
        if let Some(at) = share.left_at_ms {
            w.left_at_ms = Some(at);
        }
        // A lost worker may have been heard from since (it came back): its registry record.
        let heard = coordinator
            .registry
            .get(&share.worker)
            .zip(state.started)
            .map(|(w, started)| w.last_seen.saturating_duration_since(started).as_millis() as u64);
        let bound = unknown::unreported(&share.facts(heard), &run.plan.load, fleet_shortest, beat);
        if let Some(at) = share.lost_at_ms {
            w.lost_at_ms = Some(at);
            let b = w.in_flight_bound.get_or_insert(0);
            *b = b.saturating_add(bound);
        } else if bound > 0 {
            // Finished, but its last snapshots never arrived.
            unreported_elsewhere = unreported_elsewhere.saturating_add(bound);
            missing_from.push(share.name.clone());
        }
    }
    missing_from.dedup();
    let spans: Vec<_> = state
        .shares
        .iter()
        .map(|s| s.span(state.stopped_at_ms, ended_ms))
        .collect();
    // Arrivals dropped fleet-wide, from the shares' heartbeats (the merged counters may lag).
    let dropped = state
        .shares
        .iter()
        .fold(0u64, |n, s| n.saturating_add(s.dropped))
        .max(total.counters.dropped_arrivals);
    let delivery = Delivery::of(&run.plan.load, &spans, dropped);
    let sessions: BTreeMap<String, u64> = tallies
        .iter()
        .map(|(w, t)| (w.clone(), t.sessions))
        .collect();
    for (worker, share) in delivery.by_worker(&sessions) {
        if let Some(w) = workers.get_mut(&worker) {
            w.share = share;
        }
    }
    let unknown = workers
        .values()
        .filter_map(|w| w.in_flight_bound)
        .fold(unreported_elsewhere, u64::saturating_add);
    let delivered = delivery.delivered(total.counters.sessions_started);
    let never_evaluated = report::build::never_evaluated(&run.plan, &total);
    let coverage = Coverage {
        never_evaluated: never_evaluated.clone(),
        delivered,
        min_delivered: run.plan.fleet.min_delivered.unwrap_or(1.0),
        unknown,
        max_unknown: run.plan.fleet.max_unknown.unwrap_or(0),
        lost: workers
            .values()
            .filter(|w| w.lost_at_ms.is_some())
            .map(|w| w.name.clone())
            .collect(),
        missing_from,
        dropped: total.counters.dropped_arrivals,
    };
    let share_errors: Vec<String> = state
        .shares
        .iter()
        .filter_map(|s| {
            s.error
                .as_ref()
                .map(|e| format!("{}: {}", s.name, gauntlet_core::redact::message(e)))
        })
        .collect();
    let judgement = judge(
        Ran {
            total: &total,
            ended_early: state.ended_early.as_ref(),
            share_errors: &share_errors,
            has_scenarios: !run.plan.scenarios.is_empty(),
        },
        &thresholds,
        &coverage,
    );
    let verdict = judgement.verdict;
    let plan_hash = hex::encode(Sha256::digest(run.request.plan_toml.as_bytes()));
    let report = report::build::finished(
        report::build::Run {
            id: &run.id,
            plan: &run.plan,
            plan_hash: &plan_hash,
            started: state.started_wall.unwrap_or(now),
            now,
            total: &total,
            interval: run.interval,
        },
        workers.into_values().collect(),
        state.agg.series(),
        report::build::Final {
            thresholds,
            judgement,
            delivered,
            unknown,
            never_evaluated,
            subjects_on_one_share: state.agg.subjects_on_one_share(),
        },
    );
    state.report = Some(report);
    state.phase = RunPhase::Finished;
    drop(state);
    run.publish(Ramp::of(&run.plan.load).total());
    if let (Some(h), Some(report)) = (&coordinator.history, run.report())
        && let Err(e) = lock(h).store(&report, &run.request.plan_toml)
    {
        tracing::error!(run = %run.id, error = %e, "cannot store the run in the history");
    }
    // The report holds what is kept; the merged histograms go (a coordinator lives for many
    // runs). Snapshots arriving later are acknowledged and dropped.
    lock(&run.state).agg = Aggregator::new(run.interval, &[], Duration::ZERO);
    tracing::info!(run = %run.id, ?verdict, "run finished");
}

//! The verdict: from what was measured, how the run ended, the thresholds' judgements and
//! what the run failed to cover (lost load, sessions of unknown outcome, checks that never
//! evaluated), one [`Judgement`] with its cause and reason. The order is documented in
//! `docs/report.md` ("Verdict and exit codes"): an early end, nothing ran, a share that could
//! not run, a target never reached, a threshold without samples (error), a failed threshold (a
//! fail that also names what is missing), incomplete coverage (error), else a pass.

use crate::metrics::Snapshot;
use crate::report::{ThresholdReport, percent};
use crate::words::{Cause, Judgement, Verdict};

/// What the verdict weighs besides the thresholds.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// Required checks that never evaluated in the whole run.
    pub never_evaluated: Vec<String>,
    /// The fraction of the planned load delivered.
    pub delivered: f64,
    /// The smallest fraction the plan accepts (`fleet.min_delivered`, default 1).
    pub min_delivered: f64,
    /// Sessions of unknown outcome (at most this many).
    pub unknown: u64,
    /// How many the plan accepts (`fleet.max_unknown`, default 0).
    pub max_unknown: u64,
    /// Names of the workers that were lost.
    pub lost: Vec<String>,
    /// Workers that finished a share whose last snapshots never arrived.
    pub missing_from: Vec<String>,
    /// Arrivals dropped for want of a free VU.
    pub dropped: u64,
}

/// How the run went, as the verdict needs it.
#[derive(Debug, Clone, Copy)]
pub struct Ran<'a> {
    /// Everything merged.
    pub total: &'a Snapshot,
    /// How the run ended early, if it did (cancelled, aborted, deadline, too few workers...).
    pub ended_early: Option<&'a Judgement>,
    /// Shares that could not run, as `worker: why`.
    pub share_errors: &'a [String],
    /// Whether the plan has any scenario.
    pub has_scenarios: bool,
}

/// Judges a run.
pub fn judge(ran: Ran<'_>, thresholds: &[ThresholdReport], coverage: &Coverage) -> Judgement {
    if let Some(early) = ran.ended_early {
        return early.clone();
    }
    let errors = ran.share_errors;
    let c = &ran.total.counters;
    if c.sessions_passed + c.sessions_failed == 0 {
        let why = if !coverage.lost.is_empty() {
            format!(
                "no session's outcome reached the coordinator: lost workers: {} ({} of the planned load delivered, up to {} sessions of unknown outcome)",
                coverage.lost.join(", "),
                percent(coverage.delivered),
                coverage.unknown
            )
        } else if errors.is_empty() {
            if ran.has_scenarios {
                "no session ran to completion"
            } else {
                "the plan has no scenario"
            }
            .to_owned()
        } else {
            format!("no session ran: {}", errors.join("; "))
        };
        return Judgement::error(Cause::NothingRan, why);
    }
    if !errors.is_empty() {
        return Judgement::error(
            Cause::SharesFailed,
            format!(
                "some workers could not run their share: {}",
                errors.join("; ")
            ),
        );
    }
    if c.sessions_passed == 0
        && ran
            .total
            .failures
            .keys()
            .all(|k| k.category.is_unreachable())
    {
        return Judgement::error(
            Cause::TargetUnreachable,
            "the target was never reached (every session failed to connect)",
        );
    }
    // What makes the run impossible to judge: never a pass. A threshold without samples is
    // an error outright; the rest is an error unless a threshold failed, which is a fail
    // (what was measured failed, whatever is missing) that names them too.
    let mut incomplete = Vec::new();
    let unjudged: Vec<String> = thresholds
        .iter()
        .filter(|t| t.observed.is_none())
        .map(|t| format!("`{}`", t.expr))
        .collect();
    if coverage.delivered + 1e-9 < coverage.min_delivered {
        let lost = if coverage.lost.is_empty() {
            String::new()
        } else {
            format!(" (lost workers: {})", coverage.lost.join(", "))
        };
        let dropped = match coverage.dropped {
            0 => String::new(),
            n => format!(" ({n} arrivals dropped for want of a free VU: raise load.max_vus)"),
        };
        incomplete.push(format!(
            "only {} of the planned load was delivered{lost}{dropped}, below fleet.min_delivered = {}",
            percent(coverage.delivered),
            coverage.min_delivered
        ));
    }
    if coverage.unknown > coverage.max_unknown {
        let mut whose = Vec::new();
        if !coverage.lost.is_empty() {
            whose.push(format!("lost workers: {}", coverage.lost.join(", ")));
        }
        if !coverage.missing_from.is_empty() {
            whose.push(format!(
                "last snapshots never arrived from: {}",
                coverage.missing_from.join(", ")
            ));
        }
        incomplete.push(format!(
            "the outcome of up to {} sessions is unknown ({}), above fleet.max_unknown = {}",
            coverage.unknown,
            whose.join("; "),
            coverage.max_unknown
        ));
    }
    if !coverage.never_evaluated.is_empty() {
        incomplete.push(format!(
            "never evaluated in the whole run: {} (a check that never ran proves nothing; mark it `optional = true` if that is expected)",
            coverage
                .never_evaluated
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let failed: Vec<&ThresholdReport> = thresholds
        .iter()
        .filter(|t| !t.pass && t.observed.is_some())
        .collect();
    if !unjudged.is_empty() {
        incomplete.insert(
            0,
            format!(
                "nothing was measured for {} (a threshold without samples is an error, not a pass)",
                unjudged.join(", ")
            ),
        );
        return Judgement::error(Cause::Unjudged, incomplete.join("; "));
    }
    let also = if incomplete.is_empty() {
        String::new()
    } else {
        format!("; also: {}", incomplete.join("; "))
    };
    if failed.is_empty() && !incomplete.is_empty() {
        return Judgement::error(Cause::Incomplete, incomplete.join("; "));
    }
    if failed.is_empty() {
        let n = thresholds.len();
        let s = if n == 1 { "" } else { "s" };
        Judgement::new(
            Verdict::Pass,
            Cause::Held,
            format!("{n} threshold{s} held over {} sessions", c.sessions_started),
        )
    } else {
        let list: Vec<String> = failed
            .iter()
            .map(|t| format!("`{}` ({})", t.expr, t.reason))
            .collect();
        Judgement::new(
            Verdict::Fail,
            Cause::ThresholdsFailed,
            format!(
                "{} of {} thresholds failed: {}{also}",
                failed.len(),
                thresholds.len(),
                list.join("; ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{FailureKey, FailureStats};

    fn threshold(pass: bool, observed: Option<f64>) -> ThresholdReport {
        ThresholdReport {
            expr: "failed sessions <= 0".into(),
            observed,
            unit: "count".into(),
            pass,
            reason: if pass {
                String::new()
            } else {
                "observed 3, beyond the limit".into()
            },
        }
    }

    fn ran(total: &Snapshot) -> Ran<'_> {
        Ran {
            total,
            ended_early: None,
            share_errors: &[],
            has_scenarios: true,
        }
    }

    fn complete() -> Coverage {
        Coverage {
            delivered: 1.0,
            min_delivered: 1.0,
            ..Coverage::default()
        }
    }

    #[test]
    fn each_cause_has_its_verdict() {
        let mut total = Snapshot::default();
        let nothing = judge(ran(&total), &[threshold(true, Some(0.0))], &complete());
        assert_eq!(
            (nothing.verdict, nothing.cause),
            (Verdict::Error, Cause::NothingRan)
        );

        total.counters.sessions_started = 3;
        total.counters.sessions_failed = 3;
        total.failures.insert(
            FailureKey {
                category: "connect_refused".into(),
                detail: String::new(),
                scenario: "s".into(),
                step: "ws_connect".into(),
            },
            FailureStats::one(1, "refused".into()),
        );
        let unreachable = judge(ran(&total), &[threshold(false, Some(3.0))], &complete());
        assert_eq!(unreachable.cause, Cause::TargetUnreachable);

        total.counters.sessions_passed = 5;
        let failed = judge(ran(&total), &[threshold(false, Some(3.0))], &complete());
        assert_eq!(
            (failed.verdict, failed.cause),
            (Verdict::Fail, Cause::ThresholdsFailed)
        );

        let short = Coverage {
            delivered: 0.5,
            ..complete()
        };
        let incomplete = judge(ran(&total), &[threshold(true, Some(0.0))], &short);
        assert_eq!(
            (incomplete.verdict, incomplete.cause),
            (Verdict::Error, Cause::Incomplete)
        );
        assert!(
            incomplete.reason.contains("only 50.0 %"),
            "{}",
            incomplete.reason
        );
        // A failed threshold stays a fail, naming what is missing too.
        let both = judge(ran(&total), &[threshold(false, Some(3.0))], &short);
        assert_eq!(both.verdict, Verdict::Fail);
        assert!(
            both.reason.contains("; also: only 50.0 %"),
            "{}",
            both.reason
        );

        let unjudged = judge(ran(&total), &[threshold(false, None)], &complete());
        assert_eq!(unjudged.cause, Cause::Unjudged);
        let held = judge(ran(&total), &[threshold(true, Some(0.0))], &complete());
        assert_eq!((held.verdict, held.cause), (Verdict::Pass, Cause::Held));
        assert_eq!(held.reason, "1 threshold held over 3 sessions");
    }
}

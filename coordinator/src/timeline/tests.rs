//! Tests of `timeline`.

#![allow(clippy::unwrap_used)]
use super::*;
use gauntlet_core::metrics::{FailureKey, FailureStats};
use gauntlet_core::thresholds::ThresholdSpec;
use gauntlet_core::words::FailureCategory;

fn threshold(json: serde_json::Value) -> Threshold {
    let spec: ThresholdSpec = serde_json::from_value(json).unwrap();
    spec.check().unwrap();
    spec.resolve().unwrap()
}

/// A pseudo-random snapshot: `n` sessions with latencies from `x`, a few failed.
fn delta(x: &mut u64, n: u64, slow: u64) -> Snapshot {
    let mut s = Snapshot::default();
    let mut h = histogram();
    for _ in 0..n {
        *x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        h.record(1 + (*x >> 40) % 50_000 + slow).unwrap();
    }
    let failed = *x % 3;
    s.histograms.insert("session".into(), h.clone());
    s.histograms.insert("ws.handshake".into(), h);
    s.counters.sessions_started = n;
    s.counters.sessions_failed = failed.min(n);
    s.counters.sessions_passed = n - failed.min(n);
    if failed > 0 {
        s.failures.insert(
            FailureKey {
                category: FailureCategory::Timeout,
                detail: String::new(),
                scenario: "s".into(),
                step: "x".into(),
            },
            FailureStats {
                count: failed.min(n),
                ..FailureStats::one(0, String::new())
            },
        );
    }
    s
}

fn thresholds() -> Vec<Threshold> {
    vec![
        threshold(serde_json::json!({"metric": "session", "stat": "p99", "below": "60ms"})),
        threshold(
            serde_json::json!({"metric": "session", "stat": "p99", "below": "60ms", "window": "5s"}),
        ),
        threshold(serde_json::json!({"failures": "*", "rate_below": 0.4, "window": "3s"})),
        threshold(serde_json::json!({"failures": "timeout", "at_most": 2, "window": "40s"})),
    ]
}

/// The windows judged as they close (intervals final 8 behind the newest; one of three
/// workers reporting 5 intervals late, within that) equal every window judged at the end
/// over the whole list of intervals, as `Threshold::judge` does.
#[test]
fn windows_judged_as_they_close_equal_windows_judged_at_the_end() {
    for intervals in [2u64, 30, 200] {
        let ts = thresholds();
        let mut tl = Timeline::new(Duration::from_secs(1), &ts, Duration::from_secs(8));
        let mut x = intervals;
        // deltas[i][w]: worker w's delta of interval i; a slow stretch in the middle.
        let deltas: Vec<Vec<Snapshot>> = (0..intervals)
            .map(|i| {
                let slow = if (intervals / 2..intervals / 2 + 3).contains(&i) {
                    40_000
                } else {
                    0
                };
                (0..3u64).map(|w| delta(&mut x, 20 + w, slow)).collect()
            })
            .collect();
        let file = |tl: &mut Timeline, i: u64, w: usize| {
            tl.add(
                &format!("w{w}"),
                (i + 1) * 1000,
                1,
                &Delta::of(&deltas[i as usize][w]),
            );
        };
        for i in 0..intervals + 5 {
            if i < intervals {
                file(&mut tl, i, 0);
                file(&mut tl, i, 1);
            }
            if let Some(late) = i.checked_sub(5).filter(|l| *l < intervals) {
                file(&mut tl, late, 2);
            }
        }
        let all: Vec<Snapshot> = deltas
            .iter()
            .map(|ds| {
                let mut s = Snapshot::default();
                ds.iter().for_each(|d| s.merge(d));
                s
            })
            .collect();
        let mut total = Snapshot::default();
        all.iter().for_each(|s| total.merge(s));
        let judged: Vec<ThresholdReport> = tl.judge().into_iter().map(|(_, r)| r).collect();
        let expected: Vec<ThresholdReport> = ts
            .iter()
            .filter(|t| t.window.is_some())
            .map(|t| t.judge(&total, &all, Duration::from_secs(1)))
            .collect();
        assert_eq!(judged.len(), 3);
        for (j, e) in judged.iter().zip(&expected) {
            assert_eq!(j.observed, e.observed, "{intervals} intervals: {}", e.expr);
            assert_eq!(j.pass, e.pass, "{intervals} intervals: {}", e.expr);
        }
        assert_eq!(tl.late_snapshots(), 0);
        let series = tl.series();
        assert_eq!(series.len() as u64, intervals);
        let sessions: u64 = series.iter().map(|p| p.sessions).sum();
        assert_eq!(sessions, total.counters.sessions_started);
        // A point of one interval, closed or open, has its interval's exact quantiles.
        for (point, interval) in series.iter().zip(&all) {
            assert_eq!(
                point.latency["session"],
                quantiles(&interval.histograms["session"])
            );
        }
    }
}

/// 6,000 intervals from 70 workers with at most 16 points (as a day of 1 s intervals is
/// with 1,024): the timeline holds at most `late` + the longest window intervals in full
/// and at most 16 points, and the series still adds up after halving nine times (sessions
/// exactly; per point, latency within 1 % of one histogram of the point's samples).
#[test]
fn a_long_run_is_held_in_bounded_memory_and_its_series_is_exact() {
    let ts = thresholds()[..3].to_vec();
    let mut tl = Timeline::new(Duration::from_secs(1), &ts, Duration::from_secs(20));
    tl.max_points = 16;
    let intervals = 6_000u64;
    let mut x = 1u64;
    let mut sessions = 0u64;
    let mut most_held = (0, 0);
    let width = 512; // 6,000 intervals in at most 16 points: 375 -> 512
    // The samples of the series' 7th point, recorded as they are filed.
    let mut point_7 = histogram();
    for i in 0..intervals {
        let w = i % 70;
        let d = delta(&mut x, 2, 0);
        sessions += 2;
        if i / width == 7 {
            point_7.add(&d.histograms["session"]).unwrap();
        }
        tl.add(&format!("w{w}"), (i + 1) * 1000, 2, &Delta::of(&d));
        let held = tl.held();
        most_held = (most_held.0.max(held.0), most_held.1.max(held.1));
    }
    assert_eq!(tl.late(), 20);
    // 20 intervals open to snapshots, and the 4 before them a 5 s window reads.
    assert!(most_held.0 <= 20 + 5, "{most_held:?}");
    assert!(most_held.1 <= 16, "{most_held:?}");
    let series = tl.series();
    assert_eq!(series.len() as u64, intervals.div_ceil(width));
    assert_eq!(series[0].at_ms, width * 1000);
    assert_eq!(series.iter().map(|p| p.sessions).sum::<u64>(), sessions);
    assert_eq!(
        tl.points[7].histograms()[0].as_ref().map(|h| h.len()),
        Some(point_7.len())
    );
    // Made again from closed points: to 2 significant digits, within 1 %.
    for (got, exact) in series[7].latency["session"].iter().zip(quantiles(&point_7)) {
        assert!(got.abs_diff(exact) * 100 <= exact, "{got} vs {exact}");
    }
    // 70 workers: 64 by name and the others' sessions together.
    assert_eq!(series[7].per_worker.len(), MAX_SERIES_WORKERS + 1);
    assert_eq!(
        series[7].per_worker.values().sum::<u64>(),
        series[7].sessions
    );
    assert_eq!(series[7].active_vus, 2);
}

/// A snapshot for an interval whose windows were judged still counts in the series, and
/// every windowed threshold then fails saying why instead of passing without it.
#[test]
fn a_snapshot_later_than_its_windows_fails_them_and_still_counts() {
    let ts = thresholds();
    let mut tl = Timeline::new(Duration::from_secs(1), &ts, Duration::from_secs(5));
    let mut x = 3u64;
    for i in 0..30u64 {
        tl.add("w1", (i + 1) * 1000, 1, &Delta::of(&delta(&mut x, 10, 0)));
    }
    assert!(
        tl.judge()
            .iter()
            .all(|(_, r)| !r.reason.contains("arrived"))
    );
    tl.add("w2", 3000, 1, &Delta::of(&delta(&mut x, 10, 0)));
    assert_eq!(tl.late_snapshots(), 1);
    for (_, r) in tl.judge() {
        assert!(!r.pass);
        assert!(
            r.reason
                .starts_with("1 snapshot(s) arrived more than 5s after their interval"),
            "{}",
            r.reason
        );
    }
    assert_eq!(tl.series()[2].sessions, 20);
}

/// Snapshots late for a closed point, without end (a worker replaying old intervals): each
/// opens the point, adds to it and closes it again (encoding it anew). After 3,000 the point
/// still holds every session, and its latency to 2 significant digits.
#[test]
fn a_point_reopened_by_late_snapshots_stays_exact() {
    let mut tl = Timeline::new(Duration::from_secs(1), &[], Duration::from_secs(5));
    let mut x = 5u64;
    let mut point_3 = histogram();
    let mut sessions_3 = 0;
    for i in 0..100u64 {
        let d = delta(&mut x, 50, 0);
        if i == 3 {
            point_3.add(&d.histograms["session"]).unwrap();
            sessions_3 += 50;
        }
        tl.add("w1", (i + 1) * 1000, 1, &Delta::of(&d));
    }
    for _ in 0..3_000 {
        let d = delta(&mut x, 50, 0);
        point_3.add(&d.histograms["session"]).unwrap();
        sessions_3 += 50;
        tl.add("w2", 4000, 1, &Delta::of(&d));
        assert!(matches!(tl.points[3].main, Main::Closed(_)));
    }
    assert_eq!(tl.late_snapshots(), 0, "no windowed thresholds to fail");
    let series = tl.series();
    assert_eq!(series[3].sessions, sessions_3);
    assert_eq!(series[3].per_worker.len(), 2);
    for (got, exact) in series[3].latency["session"].iter().zip(quantiles(&point_3)) {
        assert!(got.abs_diff(exact) * 100 <= exact, "{got} vs {exact}");
    }
    assert_eq!(series[4].sessions, 50);
}

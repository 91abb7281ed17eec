//! Coordinator benchmark: the memory of one run's timeline over the run's length. A
//! [`Timeline`] takes the snapshots of `BENCH_WORKERS` workers (default 2) for
//! `BENCH_INTERVALS` 1-second intervals (default 6,000: 100 minutes), each with the three
//! series metrics' histograms (1,200 samples each, spread over 0.2-50 ms), and the process's
//! RSS is read from /proc at set points: how much the series' points cost, and that the memory
//! stops growing once the series holds its most points (`MAX_POINTS`) and they widen. Run:
//! `cargo bench -p gauntlet-coordinator --bench timeline`.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::Duration;

use gauntlet_bench::env_or;
use gauntlet_coordinator::timeline::{MAX_POINTS, Timeline};
use gauntlet_core::metrics::{Snapshot, histogram};
use gauntlet_core::sparse::Delta;

/// Samples per histogram per worker per interval.
const SAMPLES: u64 = 1_200;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// One worker's snapshot of an interval: `SAMPLES` sessions, their latencies in the three
/// series metrics.
fn snapshot(x: &mut u64) -> Snapshot {
    let mut s = Snapshot::default();
    let mut h = histogram();
    for _ in 0..SAMPLES {
        *x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        h.record(200 + (*x >> 40) % 50_000).unwrap();
    }
    for m in ["session", "ws.handshake", "ws.confirmation"] {
        s.histograms.insert(m.into(), h.clone());
    }
    s.counters.sessions_started = SAMPLES;
    s.counters.sessions_passed = SAMPLES;
    s
}

fn main() {
    let workers = env_or("BENCH_WORKERS", 2);
    let intervals = env_or("BENCH_INTERVALS", 6_000);
    let names: Vec<String> = (0..workers).map(|w| format!("worker-{w}")).collect();
    let mut tl = Timeline::new(Duration::from_secs(1), &[], Duration::from_secs(20));
    let mut x = 1u64;
    let marks = [
        60u64, 120, 300, 600, 900, 1_000, 1_100, 1_500, 2_000, 2_100, 3_000, 4_000, 4_200, 6_000,
        12_000, 24_000, 48_000, 86_400,
    ];
    println!(
        "timeline benchmark: {workers} workers, {intervals} intervals of 1 s, 3 series metrics of {SAMPLES} samples per worker and interval; at most {MAX_POINTS} points\n"
    );
    println!("| intervals | series points | intervals per point | RSS (MiB) |");
    println!("|---:|---:|---:|---:|");
    for i in 1..=intervals {
        for w in &names {
            let d = Delta::of(&snapshot(&mut x));
            tl.add(w, i * 1000, 100, &d);
        }
        if marks.contains(&i) || i == intervals {
            // Read before anything else is allocated: the series as a report (which the
            // coordinator makes for a report or the live page, and drops) would count too.
            let rss = rss_kib();
            let (slots, points) = tl.held();
            let per = (i - slots as u64)
                .div_ceil(points.max(1) as u64)
                .next_power_of_two();
            println!("| {i} | {points} | {per} | {:.1} |", rss as f64 / 1024.0);
        }
    }
    let series = tl.series();
    assert!(series.len() <= MAX_POINTS, "{} points", series.len());
    // The series holds every session of the intervals it folded (all but the last few, still
    // open to snapshots), exactly.
    let per_interval = workers * SAMPLES;
    let sessions: u64 = series.iter().map(|p| p.sessions).sum();
    assert_eq!(sessions % per_interval, 0, "{sessions}");
    let folded = sessions / per_interval;
    assert!(
        folded + tl.late() + 1 >= intervals && folded <= intervals,
        "{folded} of {intervals} intervals in the series"
    );
}

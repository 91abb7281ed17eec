//! Tests of `intake`.

#![allow(clippy::unwrap_used)]
use super::*;
use gauntlet_core::attribution::SessionTags;
use gauntlet_core::metrics::{FailureKey, FailureStats, Snapshot, histogram};
use gauntlet_core::plan::Overrides;

fn plan(load: &str) -> Plan {
    let text = format!(
        "name = \"p\"\n[target]\nbase_url = \"http://127.0.0.1:1\"\n[load]\n{load}\n[[scenarios]]\nname = \"s\"\nsteps = [ {{ sleep = {{ duration = \"100ms\" }} }} ]\n"
    );
    Plan::from_text("p.toml", &text, &Overrides::default()).unwrap()
}

/// A snapshot of `n` sessions passed, each lasting `us`.
fn passed(n: u64, us: u64) -> Snapshot {
    let mut s = Snapshot::default();
    let mut h = histogram();
    h.record_n(us, n).unwrap();
    s.histograms.insert("session".into(), h.clone());
    s.histograms.insert("session.s".into(), h);
    s.counters.sessions_started = n;
    s.counters.sessions_passed = n;
    s.attribution.carried(
        &SessionTags {
            subject: Some("vu-0".into()),
            target: Some("127.0.0.1:1".into()),
            live: 0,
            in_flight: 1,
            started: Some(0),
        },
        &Outcomes {
            passed: n,
            ..Outcomes::default()
        },
    );
    s
}

fn share() -> ShareView {
    ShareView {
        segment: ExecutionSegment::WHOLE,
        first_seq: 0,
        offset_ms: 0,
        tally: ShareTally::default(),
    }
}

#[test]
fn histogram_names_are_checked_before_anything_is_decoded() {
    let p = plan("vus = 10\nduration = \"10s\"");
    let intake = Intake::new(&p, Duration::from_secs(1), Duration::from_secs(60));
    intake
        .check_histogram_names(["session", "session.s", "step.s.sleep"])
        .unwrap();
    let r = intake.check_histogram_names(["session", "x"]).unwrap_err();
    assert_eq!(r.reason, Reason::UnknownName, "{}", r.detail);
    // The same metric twice (a peer packing one snapshot with copies to decode).
    let r = intake
        .check_histogram_names(["session", "session.s", "session"])
        .unwrap_err();
    assert_eq!(r.reason, Reason::Inconsistent, "{}", r.detail);
    assert!(r.detail.contains("`session` twice"), "{}", r.detail);
}

#[test]
fn a_real_snapshot_is_admitted_and_forged_ones_are_refused() {
    let p = plan("vus = 10\nduration = \"10s\"");
    let intake = Intake::new(&p, Duration::from_secs(1), Duration::from_secs(60));
    let at = Duration::from_secs(2);
    // 10 VUs, 2 s: 150 sessions of 100 ms fit.
    let t = intake
        .admit(&share(), 1, &Delta::of(&passed(150, 100_000)), at)
        .unwrap();
    assert_eq!((t.started, t.finished, t.merged), (150, 150, 1));
    let refuse = |delta: &Snapshot| {
        intake
            .admit(&share(), 1, &Delta::of(delta), at)
            .unwrap_err()
    };
    // A trillion sessions, each a microsecond: more than 10 VUs can run in 12 s.
    let r = refuse(&passed(1_000_000_000_000, 1));
    assert_eq!(r.reason, Reason::Implausible, "{}", r.detail);
    // Counters without the samples that go with them.
    let mut forged = Snapshot::default();
    forged.counters.sessions_started = 5;
    forged.counters.sessions_passed = 5;
    assert_eq!(refuse(&forged).reason, Reason::Inconsistent);
    // A day-long latency 2 s into a run.
    assert_eq!(
        refuse(&passed(1, 86_400_000_000)).reason,
        Reason::Implausible
    );
    // Names the plan does not have.
    let mut odd = passed(1, 1000);
    odd.histograms.insert("x".repeat(10_000), histogram());
    let r = refuse(&odd);
    assert_eq!(r.reason, Reason::UnknownName);
    assert!(r.detail.len() < 200, "{}", r.detail);
    let mut odd = passed(1, 1000);
    odd.counters.sessions_passed = 0;
    odd.counters.sessions_failed = 1;
    odd.failures.insert(
        FailureKey {
            category: "made_up".into(),
            detail: String::new(),
            scenario: "s".into(),
            step: "sleep".into(),
        },
        FailureStats::one(10, "x".into()),
    );
    assert_eq!(refuse(&odd).reason, Reason::UnknownName);
    // Sequence numbers and times outside the run.
    let s = share();
    assert_eq!(
        intake.check_envelope(&s, 0, 1000).unwrap_err().reason,
        Reason::OutOfWindow
    );
    assert_eq!(
        intake.check_envelope(&s, 1 << 31, 1000).unwrap_err().reason,
        Reason::OutOfWindow
    );
    assert_eq!(
        intake
            .check_envelope(&s, 3, 1_000_000_000_000)
            .unwrap_err()
            .reason,
        Reason::AfterTheRun
    );
    intake.check_envelope(&s, 3, 3000).unwrap();
}

#[test]
fn attribution_must_count_every_session_once_and_name_only_the_plans_categories() {
    let p = plan("vus = 10\nduration = \"10s\"");
    let intake = Intake::new(&p, Duration::from_secs(1), Duration::from_secs(60));
    let at = Duration::from_secs(2);
    let refuse = |delta: &Snapshot| {
        intake
            .admit(&share(), 1, &Delta::of(delta), at)
            .unwrap_err()
    };
    // A real one: 3 passed, 1 failed, each table agreeing.
    let mut real = passed(4, 1000);
    real.counters.sessions_passed = 3;
    real.counters.sessions_failed = 1;
    let key = FailureKey {
        category: FailureCategory::Timeout,
        detail: String::new(),
        scenario: "s".into(),
        step: "sleep".into(),
    };
    real.failures.insert(key, FailureStats::one(10, "x".into()));
    let mut a = gauntlet_core::attribution::Attribution::default();
    let tags = |live| SessionTags {
        subject: Some("u".into()),
        target: None,
        live,
        in_flight: live,
        started: Some(1),
    };
    for i in 0..3 {
        a.record(&tags(i), None);
    }
    a.record(&tags(3), Some(&FailureCategory::Timeout));
    real.attribution = a;
    intake.admit(&share(), 1, &Delta::of(&real), at).unwrap();

    // A session missing from one table, or filed under another outcome.
    let mut forged = real.clone();
    forged.attribution.target.untracked.passed = 2;
    let r = refuse(&forged);
    assert_eq!(r.reason, Reason::Inconsistent);
    assert!(
        r.detail.contains("the target table counts 2 passed"),
        "{}",
        r.detail
    );
    let mut forged = real.clone();
    let o = forged.attribution.subject.values.get_mut("u").unwrap();
    o.failed.clear();
    o.failed.insert(FailureCategory::FactoryInitFailed, 1);
    assert_eq!(refuse(&forged).reason, Reason::Inconsistent);
    // Counts that would wrap.
    let mut forged = real.clone();
    forged.attribution.live.values.get_mut(&0).unwrap().passed = u64::MAX;
    let r = refuse(&forged);
    assert!(r.detail.contains("overflow"), "{}", r.detail);
    // A category the plan does not have.
    let mut forged = real.clone();
    forged
        .attribution
        .in_flight
        .values
        .get_mut(&3)
        .unwrap()
        .failed
        .insert("made_up".into(), 1);
    assert_eq!(refuse(&forged).reason, Reason::UnknownName);
    // More sessions in flight than the share has VUs.
    let mut forged = real.clone();
    let o = forged.attribution.in_flight.values.remove(&3).unwrap();
    forged.attribution.in_flight.values.insert(10, o);
    let r = refuse(&forged);
    assert_eq!(r.reason, Reason::Implausible);
    assert!(
        r.detail.contains("met 10 other sessions in flight"),
        "{}",
        r.detail
    );
    // The dimensions only the coordinator fills.
    let mut forged = real.clone();
    forged.attribution.worker.add(
        Some(&"someone".to_owned()),
        &Outcomes {
            passed: 3,
            ..Outcomes::default()
        },
        10,
    );
    assert_eq!(refuse(&forged).reason, Reason::Inconsistent);
}

#[test]
fn iterations_and_arrivals_bound_the_sessions_a_share_starts() {
    let p = plan("vus = 4\niterations = 5");
    let intake = Intake::new(&p, Duration::from_secs(1), Duration::from_secs(3600));
    let at = Duration::from_secs(60);
    let half = ShareView {
        segment: ExecutionSegment::split(&[1, 1])[0].1,
        ..share()
    };
    intake
        .admit(&half, 1, &Delta::of(&passed(10, 1000)), at)
        .unwrap();
    let r = intake
        .admit(&half, 1, &Delta::of(&passed(11, 1000)), at)
        .unwrap_err();
    assert_eq!(r.reason, Reason::Implausible);
    assert!(r.detail.contains("2 VUs of 5 iterations"), "{}", r.detail);

    let p = plan("model = \"open\"\nrate = 100\nmax_vus = 50\nduration = \"10s\"");
    let intake = Intake::new(&p, Duration::from_secs(1), Duration::from_secs(60));
    // 1 s in, with 10 s of clock slack: all 1,000 arrivals may be due, half of them this
    // share's.
    let at = Duration::from_secs(1);
    intake
        .admit(&half, 1, &Delta::of(&passed(540, 1000)), at)
        .unwrap();
    let r = intake
        .admit(&half, 1, &Delta::of(&passed(600, 1000)), at)
        .unwrap_err();
    assert_eq!(r.reason, Reason::Implausible, "{}", r.detail);
}

#[test]
fn snapshots_out_of_order_do_not_look_implausible() {
    let p = plan("vus = 2\nduration = \"10s\"");
    let intake = Intake::new(&p, Duration::from_secs(1), Duration::from_secs(60));
    // Snapshot 2 holds the ends of sessions whose starts are in snapshot 1, which comes
    // later.
    let mut ends = passed(2, 100_000);
    ends.counters.sessions_started = 0;
    let t = intake
        .admit(&share(), 2, &Delta::of(&ends), Duration::from_secs(2))
        .unwrap();
    assert_eq!(t.gaps(), 1);
    let mut starts = Snapshot::default();
    starts.counters.sessions_started = 2;
    let s = ShareView {
        tally: t,
        ..share()
    };
    let t = intake
        .admit(&s, 1, &Delta::of(&starts), Duration::from_secs(2))
        .unwrap();
    assert_eq!((t.gaps(), t.started, t.finished), (0, 2, 2));
}

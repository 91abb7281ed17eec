//! Failure attribution end to end: runs on an in-process coordinator with one and two
//! in-process workers against an embedded testbed whose faults are known, and the findings
//! the report states against that ground truth: faults keyed on subjects give `subjects` with
//! exactly the subjects the selector picks; the per-user manager limit gives
//! `subject_concurrency` at exactly the limit; a time-switched fault gives `window`; load
//! beyond the testbed's capacity gives `load`; an evenly spread fault gives `spread` and
//! nothing else; a fault on one of two targets (a plan aimed at two testbeds) gives `target`
//! naming exactly that testbed. Two workers give the same findings as one.
//!
//! The runs take real time (a few seconds each) and go one at a time, so that they do not
//! slow each other down.

// The findings of each run are printed (`--nocapture` shows what the report says).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use gauntlet_core::report::Report;
use gauntlet_core::report::findings::{Finding, Kind, LoadMeasure, Pattern};
use gauntlet_testbed::TestbedConfig;
use gauntlet_testbed::delay::Delay;
use gauntlet_testbed::stats::StatsSnapshot;
use std::time::Duration;

mod common;

/// One run at a time in this file.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECRET: &str = "findings";

fn testbed(faults: serde_json::Value) -> TestbedConfig {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(gauntlet_testbed::config::Secret(SECRET.as_bytes().to_vec()));
    config.pipeline.delay = Delay::ZERO;
    config.websocket.max_managers_per_user = 1000;
    config.faults = serde_json::from_value(faults).unwrap();
    config
}

/// A plan against `target`: each session connects as `user-<subject_index>`, runs one agent
/// pipeline (every event expected within `timeout`) and closes.
fn plan(target: &str, auth: &str, load: &str, timeout: &str) -> String {
    let secret =
        std::env::temp_dir().join(format!("gauntlet-findings-{}.secret", std::process::id()));
    std::fs::write(&secret, SECRET).unwrap();
    format!(
        r#"name = "findings"
[target]
base_url = "{target}"
[auth]
secret_file = "{secret}"
subject = "user-{{subject_index}}"
claims = {{ iss = "netra-auth-service", token_type = "access" }}
{auth}
[load]
{load}
[[scenarios]]
name = "agent"
steps = [
  {{ ws_connect = {{ confirmation = [{{ pointer = "/data/event", equals = "connection_established" }}] }} }},
  {{ ws_send = {{ json = {{ type = "start_agent", payload = {{ user_request = "go" }} }} }} }},
  {{ ws_expect_sequence = {{ orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], ignore = ["pong", "ack"], timeout = "{timeout}" }} }},
  {{ ws_close = {{}} }},
]
"#,
        secret = secret.display()
    )
}

/// Runs `plan` (with `{target}` for the testbed's URL) on `workers` workers against a testbed
/// with `config`; returns the report and the testbed's ground truth.
async fn run(
    config: TestbedConfig,
    plan: impl Fn(&str) -> String,
    workers: u32,
) -> (Report, StatsSnapshot) {
    let tb = gauntlet_testbed::Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (url, stop) = common::coordinator().await;
    let fleet: Vec<_> = (0..workers)
        .map(|i| common::worker(&url, &format!("w{i}")))
        .collect();
    let report = common::run(&url, plan(&tb.http_url()), workers).await;
    let truth = tb.stats();
    for (_, w) in fleet {
        w.cancel();
    }
    stop.cancel();
    tb.stop().await.unwrap();
    assert_eq!(
        report.workers.len(),
        workers as usize,
        "{}",
        report.verdict_reason
    );
    for f in &report.findings {
        eprintln!("{workers} worker(s): {} (chance {:.1e})", f.text, f.chance);
    }
    (report, truth)
}

fn kind(f: &Finding) -> &'static str {
    match f.kind {
        Kind::Subjects { .. } => "subjects",
        Kind::SubjectConcurrency { .. } => "subject_concurrency",
        Kind::Worker { .. } => "worker",
        Kind::Target { .. } => "target",
        Kind::Window { .. } => "window",
        Kind::Load { .. } => "load",
        Kind::Spread { .. } => "spread",
    }
}

/// `(category, kind)` of every finding.
fn found(r: &Report) -> Vec<(String, &'static str)> {
    r.findings
        .iter()
        .map(|f| (f.category.to_string(), kind(f)))
        .collect()
}

/// The findings of category `c`.
fn of<'a>(r: &'a Report, c: &str) -> Vec<&'a Finding> {
    r.findings.iter().filter(|f| f.category == c).collect()
}

/// 200 arrivals (400/s for 0.5 s) on 10 subjects, `user-0` to `user-9`: 20 sessions each. Every
/// arrival may be in flight at once (1,400 VUs: a seventh each on 7 workers) and each event has
/// 5 s, so a busy machine neither drops arrivals nor times sessions out: the only failures are
/// the testbed's faults, whose ground truth the findings must match exactly.
fn two_hundred(target: &str) -> String {
    plan(
        target,
        "subject_pool = 10",
        "model = \"open\"\nrate = 400\nduration = \"500ms\"\nmax_vus = 1400\ngraceful_stop = \"5s\"",
        "5s",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_keyed_on_subjects_are_found_on_exactly_those_subjects() {
    let _one = ONE_AT_A_TIME.lock().await;
    let faults = serde_json::json!({
        "factory_init": { "rate": 1.0, "users": { "suffix_mod": 4, "suffix_rem": [0] } },
    });
    let mut first: Option<Vec<Finding>> = None;
    for workers in [1, 2] {
        let (r, truth) = run(testbed(faults.clone()), two_hundred, workers).await;
        let what = format!("{workers} workers");
        assert_eq!(r.totals.sessions, 200, "{what}");
        // The selector's subjects among the pool, as the testbed saw them refused.
        let refused: Vec<&String> = truth
            .users
            .iter()
            .filter(|(_, u)| u.rejected > 0)
            .map(|(s, _)| s)
            .collect();
        assert_eq!(refused, ["user-0", "user-4", "user-8"], "{what}");
        assert_eq!(
            found(&r),
            [("factory_init_failed".to_owned(), "subjects")],
            "{what}: {:#?}",
            r.findings
        );
        let f = &r.findings[0];
        assert_eq!(
            f.kind,
            Kind::Subjects {
                subjects: vec!["user-0".into(), "user-4".into(), "user-8".into()],
                subject_count: 3,
                subject_sessions: 60,
                other_subjects: 7,
                other_sessions: 140,
                pattern: Some(Pattern::Remainder {
                    prefix: "user-".into(),
                    modulus: 4,
                    remainders: vec![0],
                }),
            },
            "{what}"
        );
        assert_eq!(f.failed, truth.faults["factory_init"], "{what}");
        assert!(f.text.contains("user-0, user-4, user-8"), "{}", f.text);
        // The report's attribution: the three subjects first, each with its 20 failures.
        let top = &r.attribution.subject.top;
        assert_eq!(r.attribution.subject.distinct, 10);
        assert_eq!(top[0].failed["factory_init_failed"], 20);
        assert_eq!(top[3].failed.len(), 0);
        match &first {
            None => first = Some(r.findings.clone()),
            Some(one) => assert_eq!(&r.findings, one, "{what} vs 1 worker"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evenly_spread_fault_is_said_to_be_spread_and_nothing_else() {
    let _one = ONE_AT_A_TIME.lock().await;
    let faults = serde_json::json!({
        "factory_init": { "rate": 0.2 },
        "missing_event": { "rate": 0.2 },
    });
    let mut first: Option<Vec<Finding>> = None;
    for workers in [1, 2] {
        let (r, truth) = run(testbed(faults.clone()), two_hundred, workers).await;
        let what = format!("{workers} workers");
        assert_eq!(r.totals.sessions, 200, "{what}");
        for (category, fault) in [
            ("factory_init_failed", "factory_init"),
            ("missing_event", "missing_event"),
        ] {
            let f = of(&r, category);
            assert_eq!(f.len(), 1, "{what}: {category}: {:#?}", r.findings);
            assert_eq!(kind(f[0]), "spread", "{what}: {:#?}", f[0]);
            assert_eq!(f[0].failed, truth.faults[fault], "{what}");
            assert!(
                f[0].text.contains("spread evenly (random)"),
                "{}",
                f[0].text
            );
        }
        // No other kind of finding about anything.
        assert!(
            r.findings.iter().all(|f| kind(f) == "spread"),
            "{what}: {:#?}",
            r.findings
        );
        // The same failures (drawn per user and connection) with one or two workers.
        let two: Vec<(String, u64, String)> = r
            .findings
            .iter()
            .filter(|f| ["factory_init_failed", "missing_event"].contains(&f.category.as_str()))
            .map(|f| (f.category.to_string(), f.failed, kind(f).to_owned()))
            .collect();
        match &first {
            None => {
                first = Some(r.findings.clone());
            }
            Some(one) => {
                let one: Vec<(String, u64, String)> = one
                    .iter()
                    .filter(|f| {
                        ["factory_init_failed", "missing_event"].contains(&f.category.as_str())
                    })
                    .map(|f| (f.category.to_string(), f.failed, kind(f).to_owned()))
                    .collect();
                assert_eq!(two, one, "{what} vs 1 worker");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_user_limit_is_found_at_exactly_the_limit() {
    let _one = ONE_AT_A_TIME.lock().await;
    // At most 2 managers per user; a run lasts 5 x 140 ms = 700 ms. Two subjects, arriving in
    // turn 10 times a second: each subject connects every 200 ms, so its third and fourth
    // sessions find its first two still connected and are refused, then two pass, and so on.
    let mut config = testbed(serde_json::json!({}));
    config.websocket.max_managers_per_user = 2;
    config.pipeline.delay = Delay::Fixed {
        value: Duration::from_millis(140),
    };
    let load =
        "model = \"open\"\nrate = 10\nduration = \"4s\"\nmax_vus = 20\ngraceful_stop = \"5s\"";
    let mut first: Option<Vec<Finding>> = None;
    for workers in [1, 2] {
        let (r, truth) = run(
            config.clone(),
            |t| plan(t, "subject_pool = 2", load, "5s"),
            workers,
        )
        .await;
        let what = format!("{workers} workers");
        assert_eq!(r.totals.sessions, 40, "{what}");
        let limit = truth.managers.limit_rejections;
        assert!(
            limit > 0 && truth.faults.values().all(|n| *n == 0),
            "{what}: {truth:?}"
        );
        assert_eq!(
            found(&r),
            [("factory_init_failed".to_owned(), "subject_concurrency")],
            "{what}: {:#?}",
            r.findings
        );
        let f = &r.findings[0];
        let Kind::SubjectConcurrency {
            min_live,
            max_ok_live,
            sessions_below,
            subjects_on_one_worker,
        } = f.kind
        else {
            unreachable!()
        };
        // Found at exactly the testbed's limit, with every refusal the testbed made.
        assert_eq!((min_live, max_ok_live), (2, 1), "{what}: {}", f.text);
        assert_eq!(f.failed, limit, "{what}");
        assert_eq!(sessions_below, 40 - limit, "{what}");
        assert!(
            f.text.contains("a per-user limit of 2 concurrent sessions"),
            "{}",
            f.text
        );
        // Subjects are partitioned over two workers of equal capacity here (open model: the
        // even arrivals, hence the even subjects, are one worker's), so the live counts are the
        // subjects' whole counts, the same with one worker or two, and the report knows it.
        assert!(subjects_on_one_worker, "{what}");
        match &first {
            None => first = Some(r.findings.clone()),
            Some(one) => assert_eq!(&r.findings, one, "{what} vs 1 worker"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_switched_fault_is_found_in_its_window() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Every connection fails from 1 s to 2 s after the run's first one.
    let faults = serde_json::json!({
        "factory_init": { "rate": 1.0, "from_s": 1.0, "until_s": 2.0 },
    });
    let load =
        "model = \"open\"\nrate = 40\nduration = \"4s\"\nmax_vus = 40\ngraceful_stop = \"5s\"";
    for workers in [1, 2] {
        let (r, truth) = run(
            testbed(faults.clone()),
            |t| plan(t, "subject_pool = 10", load, "2s"),
            workers,
        )
        .await;
        let what = format!("{workers} workers");
        assert_eq!(r.totals.sessions, 160, "{what}");
        assert_eq!(
            found(&r),
            [("factory_init_failed".to_owned(), "window")],
            "{what}: {:#?}",
            r.findings
        );
        let f = &r.findings[0];
        let Kind::Window {
            t1_ms,
            t2_ms,
            sessions_inside,
            sessions_outside,
            ..
        } = f.kind
        else {
            unreachable!()
        };
        assert_eq!(f.failed, truth.faults["factory_init"], "{what}");
        assert!(f.failed > 0 && sessions_outside > 0, "{what}: {}", f.text);
        assert_eq!(sessions_inside + sessions_outside, 160, "{what}");
        // The fault cannot fire before 1 s into the run: the run started before the testbed's
        // first connection, which starts its clock.
        assert!(t1_ms >= 1000 && t2_ms >= t1_ms, "{what}: {}", f.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_beyond_the_testbeds_capacity_is_found() {
    let _one = ONE_AT_A_TIME.lock().await;
    // At most 2 runs in progress, each 5 x 20 ms = 100 ms: 20 runs/s. The testbed only makes
    // runs wait, it fails none; sessions fail when their wait passes the 300 ms the sequence
    // is given. 2 VUs for 3 s (within capacity), then 12 (far beyond) for 3 s.
    let mut config = testbed(serde_json::json!({}));
    config.pipeline.concurrency = 2;
    config.pipeline.delay = Delay::Fixed {
        value: Duration::from_millis(20),
    };
    // Snapshots every 100 ms: the fleet's sessions in flight are judged per interval, so the
    // run needs enough intervals to tell load from chance.
    let load = "vus = 2\nstages = [{ duration = \"3s\", target = 2 }, { duration = \"100ms\", target = 12 }, { duration = \"3s\", target = 12 }]\ngraceful_stop = \"5s\"\n[fleet]\ninterval = \"100ms\"";
    for workers in [1, 2] {
        let (r, truth) = run(config.clone(), |t| plan(t, "", load, "300ms"), workers).await;
        let what = format!("{workers} workers");
        assert!(truth.capacity.waited > 0, "{what}: {:?}", truth.capacity);
        let timeouts = r
            .failures_by_category()
            .into_iter()
            .find(|(c, _)| *c == "timeout")
            .map_or(0, |(_, n)| n);
        assert!(timeouts > 0, "{what}: {:?}", r.failures);
        let loads: Vec<&Finding> = of(&r, "timeout")
            .into_iter()
            .filter(|f| kind(f) == "load")
            .collect();
        assert_eq!(loads.len(), 1, "{what}: {:#?}", r.findings);
        let f = loads[0];
        let Kind::Load {
            measure,
            min_in_flight,
            sessions_below,
            sessions_at_or_above,
            ..
        } = &f.kind
        else {
            unreachable!()
        };
        // Counted across the fleet per interval: the same measure with one worker or two.
        assert_eq!(*measure, LoadMeasure::Fleet, "{what}: {}", f.text);
        assert_eq!(f.failed, timeouts, "{what}");
        assert_eq!(
            sessions_below + sessions_at_or_above,
            r.totals.passed + r.totals.failed
        );
        // A run waits only when the testbed's 2 slots are taken: the fleet had more sessions
        // in flight than that.
        assert!(*min_in_flight > 2, "{what}: {}", f.text);
        assert!(
            !of(&r, "timeout")
                .iter()
                .any(|f| ["spread", "subjects", "subject_concurrency"].contains(&kind(f))),
            "{what}: {:#?}",
            r.findings
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_on_one_of_two_targets_is_found_on_exactly_that_target() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Two testbeds as two targets of one plan (`base_url` a list): VU i goes to testbed i % 2.
    // Only the second fails every connection. Five subjects (VU i is subject i % 5): each
    // subject's VUs go to both testbeds, so no subject separates the failures; and each
    // worker's VUs (a contiguous range) too, so no worker does either: only the target. (An
    // open-model plan would not do with two workers: its arrivals are cut between them by
    // parity, so one worker would run exactly the second testbed's sessions.)
    let faulty = serde_json::json!({ "factory_init": { "rate": 1.0 } });
    let mut first: Option<Vec<Finding>> = None;
    for workers in [1, 2] {
        let good = gauntlet_testbed::Testbed::start(
            testbed(serde_json::json!({})),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let bad = gauntlet_testbed::Testbed::start(
            testbed(faulty.clone()),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let targets = format!("[\"{}\", \"{}\"]", good.http_url(), bad.http_url());
        let (url, stop) = common::coordinator().await;
        let fleet: Vec<_> = (0..workers)
            .map(|i| common::worker(&url, &format!("w{i}")))
            .collect();
        let text = plan(
            "TARGETS",
            "subject_pool = 5",
            "vus = 20\niterations = 10",
            "2s",
        )
        .replace("\"TARGETS\"", &targets);
        let r = common::run(&url, text, workers).await;
        let (good_truth, bad_truth) = (good.stats(), bad.stats());
        let bad_addr = bad.addr().to_string();
        for (_, w) in fleet {
            w.cancel();
        }
        stop.cancel();
        good.stop().await.unwrap();
        bad.stop().await.unwrap();
        let what = format!("{workers} workers");
        for f in &r.findings {
            eprintln!("{what}: {} (chance {:.1e})", f.text, f.chance);
        }
        assert_eq!(r.workers.len(), workers as usize, "{}", r.verdict_reason);
        assert_eq!(r.totals.sessions, 200, "{what}");
        // Ground truth: the first testbed failed nothing, the second every connection.
        assert_eq!(good_truth.connections.established, 100, "{what}");
        assert_eq!(good_truth.connections.rejected_total, 0, "{what}");
        assert_eq!(bad_truth.faults["factory_init"], 100, "{what}");
        assert_eq!(bad_truth.connections.established, 0, "{what}");
        assert_eq!(
            found(&r),
            [("factory_init_failed".to_owned(), "target")],
            "{what}: {:#?}",
            r.findings
        );
        let f = &r.findings[0];
        assert_eq!(
            f.kind,
            Kind::Target {
                target: bad_addr.clone(),
                target_sessions: 100,
                other_targets: 1,
                other_sessions: 100,
            },
            "{what}: {}",
            f.text
        );
        assert_eq!(f.failed, bad_truth.faults["factory_init"], "{what}");
        assert!(f.text.contains(&bad_addr), "{}", f.text);
        // Each subject failed at the bad target and passed at the good one.
        assert_eq!(r.attribution.subject.distinct, 5, "{what}");
        match &first {
            None => first = Some(r.findings.clone()),
            // The ports differ between the two rounds: compare what the findings say apart
            // from the address.
            Some(one) => {
                let strip = |v: &[Finding]| -> Vec<(String, u64, &'static str)> {
                    v.iter()
                        .map(|f| (f.category.to_string(), f.failed, kind(f)))
                        .collect()
                };
                assert_eq!(strip(&r.findings), strip(one), "{what} vs 1 worker");
            }
        }
    }
}

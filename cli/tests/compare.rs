//! `gauntlet compare` on real runs: two runs of the same clean plan against a testbed with
//! fixed event gaps show no significant change on any metric; the same plan against a testbed
//! whose gaps are twice as long is flagged as significantly worse on every event metric; one
//! whose sessions stall one time in five is flagged as changed in the tail alone; run
//! ids and report.json paths mix; `--json` carries a `significant` flag per metric and
//! category; `--fail-on-regression` exits 1 only on a regression; files and ids that name no
//! report exit 2 naming them, a report with a broken histogram exits 3 naming the metric, and
//! a report without histograms is never claimed to have changed.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gauntlet_testbed::config::Secret;
use gauntlet_testbed::delay::Delay;
use gauntlet_testbed::{Testbed, TestbedConfig};
use serde_json::Value;

const SECRET: &str = "compare-test-secret";

/// 200 sessions at 40 a second: arrivals are spread out, so no session waits for another's
/// handshake and the latencies are the testbed's gaps, not a burst's queue.
const PLAN: &str = r#"
name = "compare-probe"
[auth]
secret_env = "JWT_SECRET_KEY"
subject = "cmp-user-{subject_index}"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
model = "open"
rate = 40
max_vus = 40
duration = "5s"
[[scenarios]]
name = "agent"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { mark = "request", json = { type = "start_agent" } } },
  { ws_expect_sequence = { since = "request", orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], ignore = ["ack"] } },
  { ws_close = {} },
]
"#;

const EVENTS: [&str; 5] = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
];

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gauntlet-compare-{}-{name}", std::process::id()))
}

fn gauntlet(db: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(args)
        .env("JWT_SECRET_KEY", SECRET)
        .env("GAUNTLET_LOG", "warn")
        .env("GAUNTLET_HISTORY", db)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn testbed(gap: Duration) -> Testbed {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    config.pipeline.delay = Delay::Fixed { value: gap };
    Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Runs the plan against `target` into `out` (stored in the history unless `no_history`) and
/// returns the run id.
fn run(db: &Path, plan: &Path, target: &str, out: &Path, no_history: bool) -> String {
    let mut args = vec![
        "run",
        plan.to_str().unwrap(),
        "--target",
        target,
        "--out",
        out.to_str().unwrap(),
    ];
    if no_history {
        args.push("--no-history");
    }
    let (code, stdout, stderr) = gauntlet(db, &args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["totals"]["sessions"], 200, "{stdout}");
    assert_eq!(report["totals"]["passed"], 200, "{stdout}");
    report["run_id"].as_str().unwrap().to_owned()
}

fn compare_json(db: &Path, before: &str, after: &str) -> Value {
    let (code, stdout, stderr) = gauntlet(db, &["compare", before, after, "--json"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn latency<'a>(c: &'a Value, metric: &str) -> &'a Value {
    c["latency"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["metric"] == metric)
        .unwrap_or_else(|| panic!("no metric {metric} in {c:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_plan_is_no_change_and_doubled_event_gaps_are_flagged_on_every_event_metric() {
    let normal = testbed(Duration::from_millis(20)).await;
    let slow = testbed(Duration::from_millis(40)).await;
    let db = tmp("runs.db");
    let plan = tmp("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let (a, b, c) = (tmp("a"), tmp("b"), tmp("c"));
    let (normal_url, slow_url) = (normal.http_url(), slow.http_url());
    // The first run is stored in the history; the others are only files.
    let first = tokio::task::block_in_place(|| run(&db, &plan, &normal_url, &a, false));
    let second = tokio::task::block_in_place(|| run(&db, &plan, &normal_url, &b, true));
    let third = tokio::task::block_in_place(|| run(&db, &plan, &slow_url, &c, true));
    let b_json = b.join("report.json");
    let (b_file, c_dir) = (b_json.to_str().unwrap(), c.to_str().unwrap());

    // Same plan, same testbed: a run id against a report.json, nothing changed.
    let same = tokio::task::block_in_place(|| compare_json(&db, &first, b_file));
    assert_eq!(same["before_run"], first.as_str());
    let metrics = same["latency"].as_array().unwrap();
    // session, session.agent, ws.handshake, ws.confirmation, four steps, five events.
    assert_eq!(metrics.len(), 13, "{same:#}");
    for l in metrics {
        assert_eq!(l["significant"], false, "{l:#}");
        assert_eq!(l["status"], "within_noise", "{l:#}");
        assert!(
            l["verdict"]
                .as_str()
                .unwrap()
                .starts_with("no significant change (within noise"),
            "{l:#}"
        );
    }
    for event in EVENTS {
        let l = latency(&same, &format!("event.agent.{event}"));
        assert_eq!((&l["n_before"], &l["n_after"]), (&200.into(), &200.into()));
    }
    assert_eq!(same["failed_sessions"]["significant"], false);
    assert_eq!(same["failed_sessions"]["n_before"], 200);
    assert_eq!(same["regressions"], serde_json::json!([]));
    let (code, _, _) = tokio::task::block_in_place(|| {
        gauntlet(&db, &["compare", &first, b_file, "--fail-on-regression"])
    });
    assert_eq!(code, 0, "nothing got worse");

    // Twice the gap before each event: every event metric is significantly worse, by about
    // +100 % (the k-th event comes after k gaps: 20k ms more, on top of the connection).
    let doubled = tokio::task::block_in_place(|| compare_json(&db, b_file, c_dir));
    let regressions: Vec<&str> = doubled["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for event in EVENTS {
        let metric = format!("event.agent.{event}");
        let l = latency(&doubled, &metric);
        assert_eq!(l["significant"], true, "{l:#}");
        assert_eq!(l["status"], "changed", "{l:#}");
        assert_eq!(l["direction"], "worse", "{l:#}");
        assert_eq!(l["effect"], "large", "{l:#}");
        let change = l["relative_change"].as_f64().unwrap();
        assert!((0.5..1.2).contains(&change), "{l:#}");
        assert!(l["p_value"].as_f64().unwrap() < 0.01, "{l:#}");
        assert!(regressions.contains(&metric.as_str()), "{regressions:?}");
    }
    assert_eq!(doubled["failed_sessions"]["significant"], false);
    let (code, human, _) = tokio::task::block_in_place(|| {
        gauntlet(&db, &["compare", b_file, c_dir, "--fail-on-regression"])
    });
    assert_eq!(code, 1, "{human}");
    assert!(
        human.starts_with(&format!(
            "before: run `{second}` ({b_file})\nafter:  run `{third}` ({})\n",
            c.join("report.json").display()
        )),
        "{human}"
    );
    assert!(
        human.contains("| `event.agent.agent_completed` | 200 / 200 |"),
        "{human}"
    );
    assert!(human.contains("| changed (p < 0.0001, +"), "{human}");
    assert!(
        human.contains("Significantly worse: ") && human.contains("`event.agent.agent_started`"),
        "{human}"
    );
    // Faster is no regression.
    let (code, _, _) = tokio::task::block_in_place(|| {
        gauntlet(&db, &["compare", c_dir, b_file, "--fail-on-regression"])
    });
    assert_eq!(code, 0);

    // One session in five stalls a second before its first event: the medians hold, the
    // tails grow eight-fold. Each metric after the stall is changed in the tail; the
    // connection's metrics, before it, are not.
    let spiky = {
        let mut config = TestbedConfig::default();
        config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
        config.pipeline.delay = Delay::Fixed {
            value: Duration::from_millis(20),
        };
        config.faults = serde_json::from_value(serde_json::json!({
            "latency_spike": { "rate": 0.2, "extra": "1s" },
        }))
        .unwrap();
        Testbed::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
    };
    let d = tmp("d");
    let spiky_url = spiky.http_url();
    tokio::task::block_in_place(|| run(&db, &plan, &spiky_url, &d, true));
    let stalled = spiky.stats().faults["latency_spike"];
    assert!((20..=60).contains(&stalled), "{stalled}");
    let tail = tokio::task::block_in_place(|| compare_json(&db, b_file, d.to_str().unwrap()));
    for metric in [
        "session",
        "event.agent.agent_started",
        "event.agent.agent_completed",
    ] {
        let l = latency(&tail, metric);
        assert_eq!(l["significant"], true, "{l:#}");
        assert_eq!(l["direction"], "worse", "{l:#}");
        assert_eq!(l["tail_change"]["quantile"], "p95", "{l:#}");
        assert!(
            l["verdict"]
                .as_str()
                .unwrap()
                .starts_with("changed in the tail (p95 +"),
            "{l:#}"
        );
        assert!(l["relative_change"].as_f64().unwrap().abs() < 0.10, "{l:#}");
    }
    for metric in ["ws.handshake", "ws.confirmation"] {
        assert_eq!(latency(&tail, metric)["significant"], false, "{tail:#}");
    }
    let (code, _, _) = tokio::task::block_in_place(|| {
        gauntlet(
            &db,
            &[
                "compare",
                b_file,
                d.to_str().unwrap(),
                "--fail-on-regression",
            ],
        )
    });
    assert_eq!(code, 1, "a stalled tail is a regression");

    // A report.json written before reports carried histograms: nothing can be claimed.
    let mut old: Value = serde_json::from_str(&std::fs::read_to_string(&b_json).unwrap()).unwrap();
    for m in old["metrics"].as_object_mut().unwrap().values_mut() {
        m.as_object_mut().unwrap().remove("histogram");
    }
    let old_file = tmp("old.json");
    std::fs::write(&old_file, old.to_string()).unwrap();
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        gauntlet(
            &db,
            &[
                "compare",
                old_file.to_str().unwrap(),
                c_dir,
                "--json",
                "--fail-on-regression",
            ],
        )
    });
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let cannot: Value = serde_json::from_str(&stdout).unwrap();
    for l in cannot["latency"].as_array().unwrap() {
        assert_eq!(l["status"], "cannot_test", "{l:#}");
        assert_eq!(l["significant"], false, "{l:#}");
        assert_eq!(
            l["verdict"],
            "cannot test (the earlier report.json has no histogram)"
        );
    }

    // More metrics than any run has: not a report gauntlet wrote.
    let mut many = old.clone();
    let one = many["metrics"]["session"].clone();
    let metrics = many["metrics"].as_object_mut().unwrap();
    for i in 0..4_097 {
        metrics.insert(format!("m{i}"), one.clone());
    }
    let many_file = tmp("many.json");
    std::fs::write(&many_file, many.to_string()).unwrap();
    let (code, _, stderr) = tokio::task::block_in_place(|| {
        gauntlet(&db, &["compare", many_file.to_str().unwrap(), c_dir])
    });
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("4110 metrics (a run has at most 4096)"),
        "{stderr}"
    );

    // A histogram that is not one: exit 3, naming the run and the metric.
    let mut broken = old.clone();
    broken["metrics"]["ws.handshake"]["histogram"] = "HISTogram==".into();
    let broken_file = tmp("broken.json");
    std::fs::write(&broken_file, broken.to_string()).unwrap();
    let (code, _, stderr) = tokio::task::block_in_place(|| {
        gauntlet(&db, &["compare", broken_file.to_str().unwrap(), c_dir])
    });
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("metric `ws.handshake`: its histogram cannot be decoded"),
        "{stderr}"
    );
}

#[test]
fn arguments_that_name_no_report_exit_2_naming_them() {
    let db = tmp("usage.db");
    let missing = tmp("missing/report.json");
    let (code, _, stderr) = gauntlet(&db, &["compare", missing.to_str().unwrap(), "run-x"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("no such file: {}", missing.display())),
        "{stderr}"
    );
    // A run id, and no history at all: said so, and no database is created.
    let notes = tmp("notes.txt");
    std::fs::write(&notes, "not json").unwrap();
    let (code, _, stderr) = gauntlet(&db, &["compare", notes.to_str().unwrap(), "run-x"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is not a gauntlet report.json",
            notes.display()
        )),
        "{stderr}"
    );
    let empty = tmp("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, stderr) = gauntlet(&db, &["compare", empty.to_str().unwrap(), "run-x"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("is a folder without a report.json"),
        "{stderr}"
    );
    let (code, _, stderr) = gauntlet(&db, &["compare", "run-a", "run-b"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`run-a` is no file, so it names a run in the history")
            && stderr.contains(&format!("no history database at {}", db.display())),
        "{stderr}"
    );
    assert!(!db.exists(), "comparing never creates a history");
    let (code, _, stderr) = gauntlet(&db, &["compare", "run-a", "run-b", "--min-change=-3"]);
    assert_eq!(code, 2, "{stderr}");
}

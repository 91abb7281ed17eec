//! `gauntlet capacity`: against a testbed whose true limit is known (`[pipeline] concurrency
//! = W` with fixed event gaps: W over the mean run length the testbed measured, agent runs per
//! second), the limit found is
//! within 10 % of it on 1 and on 3 workers, capacity.json says what broke it, and a range whose
//! lowest step already breaks exits 1.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gauntlet_testbed::config::Secret;
use gauntlet_testbed::delay::Delay;
use gauntlet_testbed::{Testbed, TestbedConfig};

const SECRET: &str = "capacity-test-secret";
/// At most this many agent runs at once in the testbed.
const W: usize = 5;
/// The gap before each of the five events: a run lasts 5 x GAP (and a little more), so the
/// testbed holds about 48 runs per second: light enough for a debug build on a busy 2-core
/// machine, where the client's own slowness must not be what the search finds.
const GAP: Duration = Duration::from_millis(20);

/// The searches run one at a time: two at once would compete for the same cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PLAN: &str = r#"
name = "capacity-probe"
[auth]
secret_env = "JWT_SECRET_KEY"
subject = "cap-user-{subject_index}"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
model = "open"
rate = 40
max_vus = 30
duration = "4s"
graceful_stop = "10s"
[fleet]
interval = "500ms"
[[scenarios]]
name = "agent"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "start_agent", payload = { user_request = "capacity" } } } },
  { ws_expect_sequence = { orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], timeout = "20s" } },
  { ws_close = {} },
]
"#;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gauntlet-capacity-{}-{name}", std::process::id()))
}

fn gauntlet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(args)
        .env("JWT_SECRET_KEY", SECRET)
        .env("GAUNTLET_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn testbed() -> Testbed {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    config.pipeline.concurrency = W;
    config.pipeline.delay = Delay::Fixed { value: GAP };
    Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Runs a search on `workers` workers and checks the limit against the truth.
async fn finds_the_limit(workers: &str) {
    let _one = ONE_AT_A_TIME.lock().await;
    let tb = testbed().await;
    let plan = tmp(&format!("plan-{workers}.toml"));
    std::fs::write(&plan, PLAN).unwrap();
    let out = tmp(&format!("out-{workers}"));
    let target = tb.http_url();
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        gauntlet(&[
            "capacity",
            plan.to_str().unwrap(),
            "--target",
            &target,
            "--workers",
            workers,
            "--from",
            "20",
            "--to",
            "160",
            "--step-duration",
            "4s",
            "--min-samples",
            "50",
            "--max-steps",
            "12",
            "--no-history",
            "--out",
            out.to_str().unwrap(),
        ])
    });
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("capacity.json")).unwrap()).unwrap();
    // The truth, from the testbed's own count: W slots, each busy for the mean run length
    // (5 x GAP plus timer granularity and frame writes).
    let cap = tb.stats().capacity;
    assert_eq!(cap.max_in_progress, W as u64);
    let run_s = cap.busy_total_us as f64 / cap.runs_ended as f64 / 1e6;
    assert!(run_s >= 5.0 * GAP.as_secs_f64(), "{run_s}");
    let truth = W as f64 / run_s;
    let held = c["held"]["load"].as_f64().unwrap();
    let broke = c["broke"]["load"].as_f64().unwrap();
    assert!(
        (held - truth).abs() <= 0.1 * truth,
        "held {held} vs a true limit of {truth:.1}: {stdout}\n{stderr}"
    );
    assert!(
        broke > held && broke <= 1.15 * truth,
        "broke {broke} (truth {truth:.1})"
    );
    eprintln!("{workers} worker(s): held {held}, broke {broke}, true limit {truth:.1} runs/s");
    // What broke it: the queue in front of the W slots grew through the step.
    let why = c["broke"]["why"].to_string();
    assert!(why.contains("kept growing"), "{why}");
    assert_eq!(c["unit"], "sessions/s");
    // Every step of the search ran on all the workers and left its own report.
    let steps = c["steps"].as_array().unwrap();
    assert!(steps.len() >= 4 && steps.len() <= 12, "{}", steps.len());
    for s in steps {
        let dir = std::fs::read_dir(out.join("steps"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{:02}-", s["index"].as_u64().unwrap()))
            })
            .unwrap();
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(r["run_id"], s["run_id"]);
        assert_eq!(r["workers"].as_array().unwrap().len().to_string(), workers);
        assert!(
            r["overrides"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o.as_str().unwrap().starts_with("--rate ")),
            "{}",
            r["overrides"]
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## What broke it at"), "{md}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Session latency against load"), "{html}");
    assert!(stdout.contains("the target held"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_the_testbeds_limit_on_one_worker() {
    finds_the_limit("1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_the_testbeds_limit_on_three_workers() {
    finds_the_limit("3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_whose_lowest_step_breaks_exits_1_and_bad_knobs_exit_2() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tb = testbed().await;
    let plan = tmp("plan-low.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let out = tmp("out-low");
    let target = tb.http_url();
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        gauntlet(&[
            "capacity",
            plan.to_str().unwrap(),
            "--target",
            &target,
            "--from",
            "100",
            "--to",
            "200",
            "--step-duration",
            "3s",
            "--no-history",
            "--out",
            out.to_str().unwrap(),
        ])
    });
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("even the lowest load tried, 100 sessions/s, did not hold"));
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("capacity.json")).unwrap()).unwrap();
    assert!(c["held"].is_null());
    assert_eq!(c["steps"].as_array().unwrap().len(), 1);
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains("failures=\"1\""), "{junit}");

    let (code, _, stderr) = tokio::task::block_in_place(|| {
        gauntlet(&[
            "capacity",
            plan.to_str().unwrap(),
            "--target",
            &target,
            "--from",
            "200",
            "--to",
            "100",
            "--no-history",
        ])
    });
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("the range is empty"), "{stderr}");
}

/// A closed-model plan, one subject per VU (`cap-user-<vu>`), against a testbed on which only
/// the first five users are provisioned (every connection of `cap-user-5` and above is refused
/// with 1011): the limit is exactly 5 VUs, and what broke it is said by the broke step's own
/// finding, naming the subject.
const CLOSED_PLAN: &str = r#"
name = "capacity-users"
[auth]
secret_env = "JWT_SECRET_KEY"
subject = "cap-user-{subject_index}"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
model = "closed"
vus = 2
duration = "3s"
graceful_stop = "10s"
[fleet]
interval = "500ms"
[[scenarios]]
name = "agent"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "start_agent", payload = { user_request = "capacity" } } } },
  { ws_expect_sequence = { orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], timeout = "20s" } },
  { ws_close = {} },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_model_search_finds_the_limit_in_vus_and_says_why_from_its_findings() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    config.pipeline.delay = Delay::Fixed { value: GAP };
    config.faults = serde_json::from_value(serde_json::json!({
        "factory_init": { "rate": 1.0, "users": { "suffix_min": 5 } },
    }))
    .unwrap();
    let tb = Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let plan = tmp("plan-closed.toml");
    std::fs::write(&plan, CLOSED_PLAN).unwrap();
    let out = tmp("out-closed");
    let target = tb.http_url();
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        gauntlet(&[
            "capacity",
            plan.to_str().unwrap(),
            "--target",
            &target,
            "--from",
            "1",
            "--to",
            "16",
            "--step-duration",
            "3s",
            "--min-samples",
            "20",
            "--no-history",
            "--out",
            out.to_str().unwrap(),
        ])
    });
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("capacity.json")).unwrap()).unwrap();
    assert_eq!(c["unit"], "VUs");
    assert_eq!(c["held"]["load"], 5.0, "{stdout}");
    assert_eq!(c["broke"]["load"], 6.0, "{stdout}");
    // Every step's load is a whole number of VUs, and each step's run had exactly that many.
    for s in c["steps"].as_array().unwrap() {
        assert_eq!(s["load"].as_f64().unwrap().fract(), 0.0, "{s}");
    }
    // What broke it: the refusals, and the finding that names the one subject that failed.
    let broke = &c["broke"];
    assert_eq!(broke["failures"][0][0], "factory_init_failed", "{broke}");
    assert_eq!(broke["findings"].as_array().unwrap().len(), 1, "{broke}");
    let finding = broke["findings"][0].as_str().unwrap();
    assert!(
        finding.contains("cap-user-5") && !finding.contains("cap-user-4"),
        "{finding}"
    );
    assert!(
        stdout.contains("the target held 5 VUs and broke at 6 VUs") && stdout.contains(finding),
        "{stdout}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("- finding: "), "{md}");
}

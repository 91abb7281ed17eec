//! The fleet in separate processes: a coordinator, three workers and `gauntlet run` as child
//! processes of this test, the testbed in it. The report's counts equal the testbed's ground
//! truth; a worker killed with SIGKILL mid-run is reported lost, its share is reassigned, and
//! the totals differ from the ground truth by no more than the bound the report states.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gauntlet_testbed::config::Secret;
use gauntlet_testbed::{Testbed, TestbedConfig};
use serde_json::Value;

const SECRET: &str = "fleet-test-secret";

/// A child process killed (by its PID, SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gauntlet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gauntlet"));
    c.env("JWT_SECRET_KEY", SECRET)
        .env("GAUNTLET_LOG", "warn")
        .env(
            "GAUNTLET_HISTORY",
            std::env::temp_dir().join(format!("gauntlet-fleet-{}.db", std::process::id())),
        );
    c
}

/// Starts a coordinator on a free port; returns it and its URL.
fn coordinator() -> (Proc, String) {
    let mut child = gauntlet()
        .args([
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-timeout",
            "2s",
        ])
        .env("GAUNTLET_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(addr) = line.strip_prefix("coordinator listening on ") {
            break addr.trim().to_owned();
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), format!("http://{addr}"))
}

fn worker(url: &str, name: &str) -> Proc {
    worker_with_secret(url, name, SECRET)
}

/// A worker process whose operator gave it `secret` as the plans' JWT key.
fn worker_with_secret(url: &str, name: &str, secret: &str) -> Proc {
    Proc(
        gauntlet()
            .env("JWT_SECRET_KEY", secret)
            .args([
                "worker",
                "--coordinator",
                url,
                "--name",
                name,
                "--drain",
                "2s",
                "--plan-env",
                "JWT_SECRET_KEY",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn plan_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gauntlet-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(url: &str, plan: &std::path::Path, target: &str, out: &str) -> Child {
    run_on(url, plan, target, out, 3)
}

fn run_on(url: &str, plan: &std::path::Path, target: &str, out: &str, workers: u32) -> Child {
    gauntlet()
        .args([
            "run",
            plan.to_str().unwrap(),
            "--coordinator",
            url,
            "--min-workers",
            &workers.to_string(),
            "--target",
            target,
            "--out",
            out,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn report(out: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(PathBuf::from(out).join("report.json")).unwrap())
        .unwrap()
}

async fn testbed(faults: Value) -> Testbed {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    config.pipeline.delay = gauntlet_testbed::delay::Delay::ZERO;
    config.faults = serde_json::from_value(faults).unwrap();
    Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

const AGENT_PLAN: &str = r#"
name = "fleet-agent"
[auth]
secret_env = "JWT_SECRET_KEY"
subject = "fleet-user-{subject_index}"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
vus = 60
iterations = 2
[[scenarios]]
name = "agent-run"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "start_agent", payload = { user_request = "go" } } } },
  { ws_expect_sequence = { orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], ignore = ["pong", "ack"], timeout = "10s" } },
  { ws_close = {} },
]
[[isolation]]
pointer = "/user_id"
equals = "{subject}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_report_exactly_what_the_testbed_saw() {
    let tb = testbed(serde_json::json!({
        "factory_init": { "rate": 0.1, "users": { "suffix_mod": 3, "suffix_rem": [0] } },
        "missing_event": { "rate": 0.2, "users": { "suffix_mod": 3, "suffix_rem": [1] } },
        "isolation_breach": { "rate": 0.2, "users": { "suffix_mod": 3, "suffix_rem": [2] } },
    }))
    .await;
    let (_coordinator, url) = coordinator();
    let _workers: Vec<Proc> = (1..=3).map(|i| worker(&url, &format!("w{i}"))).collect();
    let plan = plan_file("agent.toml", AGENT_PLAN);
    let out = std::env::temp_dir().join(format!("gauntlet-fleet-{}-exact", std::process::id()));
    let out = out.to_str().unwrap().to_owned();
    let target = tb.http_url();
    let child = tokio::task::spawn_blocking(move || {
        run(&url, &plan, &target, &out)
            .wait_with_output()
            .map(|o| (o, out))
    })
    .await
    .unwrap()
    .unwrap();
    let (output, out) = child;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "faults fail the implicit threshold\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = report(&out);
    let truth = tb.stats();
    assert_eq!(r["totals"]["sessions"], 120);
    assert_eq!(
        r["totals"]["sessions"], truth.connections.accepted,
        "{stdout}"
    );
    let by_category = |c: &str| -> u64 {
        r["failures"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["category"] == c)
            .map(|f| f["count"].as_u64().unwrap())
            .sum()
    };
    for (knob, category) in [
        ("factory_init", "factory_init_failed"),
        ("missing_event", "missing_event"),
        ("isolation_breach", "isolation_breach"),
    ] {
        assert!(truth.faults[knob] > 0, "{knob} never fired");
        assert_eq!(
            by_category(category),
            truth.faults[knob],
            "{knob}\n{stdout}"
        );
    }
    let workers = r["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3);
    let shares: f64 = workers.iter().map(|w| w["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9);
    assert!(
        workers
            .iter()
            .all(|w| w["sessions"].as_u64().unwrap() == 40),
        "{workers:?}"
    );
    assert_eq!(r["verdict"], "fail");
}

const SOAK_PLAN: &str = r#"
name = "fleet-soak"
[auth]
secret_env = "JWT_SECRET_KEY"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
vus = 30
duration = "8s"
graceful_stop = "2s"
[[scenarios]]
name = "ping"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "ping" } } },
  { ws_expect = { type = "pong" } },
  { sleep = { duration = "100ms" } },
  { ws_close = {} },
]
[fleet]
on_worker_loss = "reassign"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_is_reported_lost_and_its_share_reassigned() {
    kill_one_of_three(600).await;
}

/// The stated bound on a killed worker's unreported sessions holds, and is tight, whenever the
/// kill falls: early, mid-run, late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lost_worker_bound_is_sound_and_tight_at_any_moment() {
    for after in [150, 1100, 1700] {
        let (gap, bound) = kill_one_of_three(after).await;
        assert!(
            bound <= 3 * gap + 30,
            "killed after {after} connections: bound {bound} is loose for a gap of {gap}"
        );
    }
}

/// Runs the soak plan on three worker processes, SIGKILLs one once the testbed has seen
/// `after` connections, checks the report, and returns (sessions the testbed saw that have no
/// outcome in the report, the stated bound on them).
#[allow(clippy::print_stderr)]
async fn kill_one_of_three(after: u64) -> (u64, u64) {
    let tb = testbed(serde_json::json!({})).await;
    let (_coordinator, url) = coordinator();
    let mut workers: Vec<Proc> = (1..=3).map(|i| worker(&url, &format!("w{i}"))).collect();
    let plan = plan_file("soak.toml", SOAK_PLAN);
    let out = std::env::temp_dir().join(format!(
        "gauntlet-fleet-{}-kill-{after}",
        std::process::id()
    ));
    let out = out.to_str().unwrap().to_owned();
    let run_child = Proc(run(&url, &plan, &tb.http_url(), &out));
    // Mid-run: once the fleet has established `after` sessions.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tb.stats().connections.established < after {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never got going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let victim = workers.remove(0);
    drop(victim); // SIGKILL, by PID
    let mut run_child = run_child;
    let status = tokio::task::spawn_blocking(move || run_child.0.wait())
        .await
        .unwrap()
        .unwrap();
    let r = report(&out);
    assert!(status.code().is_some(), "the run ended on its own");
    let workers_r = r["workers"].as_array().unwrap();
    let lost: Vec<&Value> = workers_r
        .iter()
        .filter(|w| !w["lost_at_ms"].is_null())
        .collect();
    assert_eq!(lost.len(), 1, "{workers_r:?}");
    assert_eq!(lost[0]["name"], "w1");
    // The survivors took the lost third over from its loss on: every worker's share is what
    // it delivered, and they add up to `delivered`, which misses the stretch between the
    // kill and its detection.
    let delivered = r["delivered"].as_f64().unwrap();
    let shares: f64 = workers_r.iter().map(|w| w["share"].as_f64().unwrap()).sum();
    assert!(
        (shares - delivered).abs() < 1e-6,
        "shares {shares} vs delivered {delivered}: {workers_r:?}"
    );
    let survivors: f64 = workers_r
        .iter()
        .filter(|w| w["lost_at_ms"].is_null())
        .map(|w| w["share"].as_f64().unwrap())
        .sum();
    assert!(
        survivors >= 2.0 / 3.0 - 1e-9 && delivered < 1.0 && delivered > 0.8,
        "survivors' shares {survivors}, delivered {delivered}: {workers_r:?}"
    );
    // Sessions the killed worker started after its last merged snapshot reached the testbed
    // but not the report; the report bounds how many.
    let bound = lost[0]["in_flight_bound"].as_u64().unwrap();
    let reported = r["totals"]["sessions"].as_u64().unwrap();
    let t = &r["totals"];
    let outcomes = ["passed", "failed", "interrupted"]
        .iter()
        .map(|k| t[k].as_u64().unwrap())
        .sum::<u64>();
    let accepted = tb.stats().connections.accepted;
    eprintln!(
        "killed worker after {after}: testbed accepted {accepted}, report {reported} started, {outcomes} with an outcome, stated bound {bound}"
    );
    // Every session the testbed saw without an outcome in the report is within the bound.
    assert!(
        accepted - outcomes <= bound,
        "{} sessions without an outcome > bound {bound}",
        accepted - outcomes
    );
    assert!(
        accepted >= reported,
        "the report counts more than happened: {reported} > {accepted}"
    );
    assert!(
        accepted - reported <= bound,
        "missing {} > bound {bound}",
        accepted - reported
    );
    // Lost load and sessions of unknown outcome are never a pass.
    assert_eq!(r["totals"]["unknown"].as_u64().unwrap(), bound);
    assert_eq!(r["verdict"], "error", "{}", r["verdict_reason"]);
    let reason = r["verdict_reason"].as_str().unwrap();
    assert!(
        reason.contains("of the planned load was delivered (lost workers: w1)")
            && reason.contains("the outcome of up to"),
        "{reason}"
    );
    assert_eq!(status.code(), Some(3), "{reason}");
    (accepted - outcomes, bound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_with_sigterm_drains_reports_everything_and_hands_its_share_over() {
    let tb = testbed(serde_json::json!({})).await;
    let (_coordinator, url) = coordinator();
    let leaving = worker(&url, "leaving");
    let _staying = worker(&url, "staying");
    let plan = plan_file("drain.toml", SOAK_PLAN);
    let out = std::env::temp_dir().join(format!("gauntlet-fleet-{}-drain", std::process::id()));
    let out = out.to_str().unwrap().to_owned();
    let mut run_child = Proc(run_on(&url, &plan, &tb.http_url(), &out, 2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tb.stats().connections.established < 600 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never got going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGTERM to the worker process we started, by its PID.
    let pid = nix::unistd::Pid::from_raw(leaving.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || run_child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.code().is_some());
    let r = report(&out);
    let workers = r["workers"].as_array().unwrap();
    let left: Vec<&Value> = workers
        .iter()
        .filter(|w| !w["left_at_ms"].is_null())
        .collect();
    assert_eq!(left.len(), 1, "{workers:?}");
    assert_eq!(left[0]["name"], "leaving");
    assert!(
        workers.iter().all(|w| w["lost_at_ms"].is_null()),
        "a drained worker is not lost: {workers:?}"
    );
    // The rest of the leaver's share went to the other worker, from the moment it stopped
    // starting sessions: nothing of the plan was left out.
    let shares: Vec<f64> = workers
        .iter()
        .map(|w| w["share"].as_f64().unwrap())
        .collect();
    assert!(
        (shares.iter().sum::<f64>() - 1.0).abs() < 1e-6 && shares.iter().all(|s| *s > 0.0),
        "{workers:?}"
    );
    assert_eq!(r["delivered"], 1.0, "{workers:?}");
    // It drained and flushed: nothing it ran is missing from the report.
    assert_eq!(
        r["totals"]["sessions"],
        tb.stats().connections.accepted,
        "{}",
        r["totals"]
    );
    assert_eq!(r["totals"]["failed"], 0);
}

/// Waits until the testbed has established `n` connections (the run is under way).
async fn until_established(tb: &Testbed, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tb.stats().connections.established < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for a child process to exit, off the runtime.
async fn exit_code(child: Proc) -> Option<i32> {
    let mut child = child;
    tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap()
        .code()
}

fn signal(child: &Proc, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// 10 VUs x 10 iterations of a session that lasts about half a second.
const ITERATIONS_PLAN: &str = r#"
name = "fleet-iterations"
[auth]
secret_env = "JWT_SECRET_KEY"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
vus = 10
iterations = 10
[[scenarios]]
name = "ping"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "ping" } } },
  { ws_expect = { type = "pong" } },
  { sleep = { duration = "400ms" } },
  { ws_close = {} },
]
"#;

/// Lost load never passes: with its only worker killed (SIGKILL) mid-run, `gauntlet run`
/// exits 3 and the verdict names the lost worker, the load delivered and the sessions whose
/// outcome is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_only_worker_is_exit_3_naming_it() {
    let tb = testbed(serde_json::json!({})).await;
    let (_coordinator, url) = coordinator();
    let only = worker(&url, "only");
    let plan = plan_file("iterations.toml", ITERATIONS_PLAN);
    let out = std::env::temp_dir().join(format!("gauntlet-fleet-{}-only", std::process::id()));
    let out = out.to_str().unwrap().to_owned();
    let run_child = Proc(run_on(&url, &plan, &tb.http_url(), &out, 1));
    // About 2.5 s in (past its first snapshots): 50 of the 100 sessions.
    until_established(&tb, 50).await;
    drop(only); // SIGKILL, by PID
    let code = exit_code(run_child).await;
    let r = report(&out);
    let reason = r["verdict_reason"].as_str().unwrap();
    assert_eq!(code, Some(3), "{reason}");
    assert_eq!(r["verdict"], "error");
    let delivered = r["delivered"].as_f64().unwrap();
    assert!(delivered < 0.8, "delivered {delivered}");
    assert!(
        reason.contains("of the planned load was delivered (lost workers: only)")
            && reason.contains("the outcome of up to"),
        "{reason}"
    );
    let unknown = r["totals"]["unknown"].as_u64().unwrap();
    let reported =
        r["totals"]["passed"].as_u64().unwrap() + r["totals"]["failed"].as_u64().unwrap();
    let accepted = tb.stats().connections.accepted;
    assert!(
        unknown > 0 && accepted - reported <= unknown,
        "{accepted} {reported} {unknown}"
    );
}

/// Ctrl-C (SIGINT to `gauntlet run`) a quarter into an 8 s run: the run is cancelled, its
/// report says what was delivered, and it exits 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_reports_the_load_delivered_and_exits_3() {
    let tb = testbed(serde_json::json!({})).await;
    let plan = plan_file("ctrl-c.toml", SOAK_PLAN);
    let out = std::env::temp_dir().join(format!("gauntlet-fleet-{}-ctrl-c", std::process::id()));
    let out = out.to_str().unwrap().to_owned();
    let run_child = Proc(
        gauntlet()
            .args(["run", plan.to_str().unwrap(), "--workers", "1", "--target"])
            .arg(tb.http_url())
            .args(["--out", &out, "--no-history"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The 30 VUs run about 8 sessions a second each: ~2.5 s in.
    until_established(&tb, 600).await;
    signal(&run_child, nix::sys::signal::Signal::SIGINT);
    let code = exit_code(run_child).await;
    let r = report(&out);
    assert_eq!(code, Some(3), "{}", r["verdict_reason"]);
    assert_eq!(r["verdict_reason"], "the run was cancelled");
    let delivered = r["delivered"].as_f64().unwrap();
    assert!(delivered > 0.15 && delivered < 0.6, "delivered {delivered}");
}

/// A worker frozen (SIGSTOP) past the loss timeout and then resumed: its share went to the
/// others, but sessions it ran may have no outcome in the report: the run is no pass, and the
/// report's unknown count bounds what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_leaves_sessions_of_unknown_outcome_and_the_run_is_no_pass() {
    let tb = testbed(serde_json::json!({})).await;
    let (_coordinator, url) = coordinator();
    let workers: Vec<Proc> = (1..=3).map(|i| worker(&url, &format!("w{i}"))).collect();
    let plan = plan_file("frozen.toml", SOAK_PLAN);
    let out = std::env::temp_dir().join(format!("gauntlet-fleet-{}-frozen", std::process::id()));
    let out = out.to_str().unwrap().to_owned();
    let run_child = Proc(run(&url, &plan, &tb.http_url(), &out));
    until_established(&tb, 600).await;
    signal(&workers[0], nix::sys::signal::Signal::SIGSTOP);
    // Past the coordinator's 2 s heartbeat timeout: declared lost, its share reassigned.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&workers[0], nix::sys::signal::Signal::SIGCONT);
    let code = exit_code(run_child).await;
    let r = report(&out);
    let reason = r["verdict_reason"].as_str().unwrap();
    assert_eq!(code, Some(3), "{reason}");
    let lost: Vec<&Value> = r["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| !w["lost_at_ms"].is_null())
        .collect();
    assert_eq!(lost.len(), 1, "{}", r["workers"]);
    assert_eq!(lost[0]["name"], "w1");
    let t = &r["totals"];
    let outcomes = t["passed"].as_u64().unwrap()
        + t["failed"].as_u64().unwrap()
        + t["interrupted"].as_u64().unwrap();
    let unknown = t["unknown"].as_u64().unwrap();
    let accepted = tb.stats().connections.accepted;
    assert!(
        accepted.saturating_sub(outcomes) <= unknown,
        "the testbed saw {accepted} sessions, the report has {outcomes} outcomes, and says at most {unknown} are unknown"
    );
    assert!(reason.contains("(lost workers: w1)"), "{reason}");
}

/// Secure by default: a coordinator reachable beyond loopback needs both credentials (or says
/// `--insecure`), and they must differ.
#[test]
fn a_coordinator_beyond_loopback_without_tokens_refuses_to_start() {
    let coordinator = |extra: &[&str]| {
        gauntlet()
            .env_remove("GAUNTLET_TOKEN")
            .env_remove("GAUNTLET_SUBMIT_TOKEN")
            .args(["coordinator", "--listen", "0.0.0.0:0"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = coordinator(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without --token and --submit-token"),
        "{stderr}"
    );
    let out = coordinator(&["--token", "w"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("without --submit-token"), "{stderr}");
    let out = coordinator(&["--token", "same", "--submit-token", "same"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("are the same"), "{stderr}");
    // Its HTTP port beyond loopback shows every run: not without a token either.
    let out = gauntlet()
        .env_remove("GAUNTLET_TOKEN")
        .env_remove("GAUNTLET_SUBMIT_TOKEN")
        .args([
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to serve HTTP on 0.0.0.0:0 without a token"),
        "{stderr}"
    );
    // --insecure starts it anyway.
    let mut child = Proc(
        gauntlet()
            .env_remove("GAUNTLET_TOKEN")
            .env_remove("GAUNTLET_SUBMIT_TOKEN")
            .args(["coordinator", "--listen", "0.0.0.0:0", "--insecure"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("coordinator listening on 0.0.0.0:"),
        "{first}"
    );
}

/// A worker that cannot speak to its coordinator (here a TLS URL for a plain-gRPC
/// coordinator) says so at warn level, naming the URL and the cause, while it retries.
#[test]
fn a_worker_that_cannot_reach_its_coordinator_says_why() {
    let (_c, url) = coordinator();
    let tls_url = url.replace("http://", "https://");
    let mut child = gauntlet()
        .args(["worker", "--coordinator", &tls_url, "--name", "lost"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _child = Proc(child);
    // The first failed attempt is told at once (the worker keeps retrying after it).
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("cannot reach the coordinator"))
        .expect("the worker says it cannot reach the coordinator");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&tls_url), "{line}");
    assert!(line.contains("error="), "{line}");
}

/// 12 VUs x 8 iterations of a session that lasts about half a second: about 4 s of load.
const FREEZE_PLAN: &str = r#"
name = "fleet-freeze"
[auth]
secret_env = "JWT_SECRET_KEY"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
vus = 12
iterations = 8
[[scenarios]]
name = "ping"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "ping" } } },
  { ws_expect = { type = "pong", timeout = "30s" } },
  { sleep = { duration = "500ms" } },
  { ws_close = {} },
]
"#;

/// The whole fleet falls silent at once (every worker process stopped with SIGSTOP for 2.5
/// heartbeat timeouts, as a starved or paused fleet is): the coordinator suspects its own side
/// or the network first and backs off instead of declaring them all lost, so once they resume
/// the run completes with every planned session counted and nobody lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_frozen_past_the_heartbeat_timeout_is_waited_for_not_declared_lost() {
    let tb = testbed(serde_json::json!({})).await;
    let (_coordinator, url) = coordinator();
    let workers: Vec<Proc> = (1..=3).map(|i| worker(&url, &format!("w{i}"))).collect();
    let plan = plan_file("freeze-fleet.toml", FREEZE_PLAN);
    let out = std::env::temp_dir().join(format!(
        "gauntlet-fleet-{}-freeze-fleet",
        std::process::id()
    ));
    let out = out.to_str().unwrap().to_owned();
    let run_child = Proc(run(&url, &plan, &tb.http_url(), &out));
    until_established(&tb, 6).await;
    for w in &workers {
        signal(w, nix::sys::signal::Signal::SIGSTOP);
    }
    // The coordinator's heartbeat timeout is 2 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for w in &workers {
        signal(w, nix::sys::signal::Signal::SIGCONT);
    }
    let code = exit_code(run_child).await;
    let r = report(&out);
    let reason = r["verdict_reason"].as_str().unwrap();
    assert_eq!(code, Some(0), "{reason}");
    let lost = r["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| !w["lost_at_ms"].is_null())
        .count();
    assert_eq!(lost, 0, "{}", r["workers"]);
    assert_eq!(r["totals"]["sessions"], 96);
    assert_eq!(r["totals"]["passed"], 96);
    assert_eq!(tb.stats().connections.accepted, 96);
}

/// The coordinator itself stopped (SIGSTOP) for longer than its heartbeat timeout: it does not
/// take its own absence for the workers' silence (nobody is lost), and the run client, whose
/// progress stream may break meanwhile, watches the run again and gets its report. With one
/// worker (no fleet-wide silence to suspect) and with three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_frozen_past_the_heartbeat_timeout_loses_nobody_and_its_client_resumes() {
    frozen_coordinator(1).await;
    frozen_coordinator(3).await;
}

async fn frozen_coordinator(workers: u32) {
    let tb = testbed(serde_json::json!({})).await;
    let (coordinator, url) = coordinator();
    let _workers: Vec<Proc> = (1..=workers)
        .map(|i| worker(&url, &format!("w{i}")))
        .collect();
    let plan = plan_file("freeze-coordinator.toml", FREEZE_PLAN);
    let out = std::env::temp_dir().join(format!(
        "gauntlet-fleet-{}-freeze-coordinator-{workers}",
        std::process::id()
    ));
    let out = out.to_str().unwrap().to_owned();
    let run_child = Proc(run_on(&url, &plan, &tb.http_url(), &out, workers));
    until_established(&tb, 6).await;
    signal(&coordinator, nix::sys::signal::Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    signal(&coordinator, nix::sys::signal::Signal::SIGCONT);
    let code = exit_code(run_child).await;
    let r = report(&out);
    let reason = r["verdict_reason"].as_str().unwrap();
    assert_eq!(code, Some(0), "{workers} workers: {reason}");
    let lost = r["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| !w["lost_at_ms"].is_null())
        .count();
    assert_eq!(lost, 0, "{}", r["workers"]);
    assert_eq!(r["totals"]["sessions"], 96);
    assert_eq!(tb.stats().connections.accepted, 96);
}

/// 180 arrivals (60 a second for 3 s) on a pool of 10 subjects: every subject's sessions are
/// spread over every worker, so only the worker can tell failures apart.
const ARRIVALS_PLAN: &str = r#"
name = "fleet-arrivals"
[auth]
secret_env = "JWT_SECRET_KEY"
subject = "arrival-user-{subject_index}"
subject_pool = 10
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
model = "open"
rate = 60
duration = "3s"
max_vus = 200
[[scenarios]]
name = "ping"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "ping" } } },
  { ws_expect = { type = "pong" } },
  { ws_close = {} },
]
"#;

/// One worker of three was given the wrong JWT key by its operator (the "JWT secret mismatch"
/// users find by hand): every session it ran is refused by the target and no other is, and
/// the report's finding says so, naming that worker, with exactly its figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_the_wrong_key_is_named_by_the_findings() {
    let tb = testbed(serde_json::json!({})).await;
    let (_coordinator, url) = coordinator();
    let _good: Vec<Proc> = (1..=2).map(|i| worker(&url, &format!("w{i}"))).collect();
    let _bad = worker_with_secret(&url, "w3", "not-the-testbeds-key");
    let plan = plan_file("wrong-key.toml", ARRIVALS_PLAN);
    let out = std::env::temp_dir().join(format!("gauntlet-fleet-{}-wrong-key", std::process::id()));
    let out = out.to_str().unwrap().to_owned();
    let code = exit_code(Proc(run(&url, &plan, &tb.http_url(), &out))).await;
    let r = report(&out);
    assert_eq!(code, Some(1), "{}", r["verdict_reason"]);
    assert_eq!(r["totals"]["sessions"], 180);
    let w3 = r["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "w3")
        .unwrap();
    let failed = r["totals"]["failed"].as_u64().unwrap();
    assert_eq!(
        failed,
        w3["sessions"].as_u64().unwrap(),
        "only w3's sessions failed"
    );
    let findings = r["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f["kind"], "worker", "{f:#?}");
    assert_eq!(f["name"], "w3", "{f:#?}");
    assert_eq!(f["worker"], w3["id"], "{f:#?}");
    assert_eq!(f["failed"].as_u64().unwrap(), failed);
    assert_eq!(f["worker_sessions"], w3["sessions"]);
    assert_eq!(f["other_workers"], 2);
    assert_eq!(f["other_sessions"].as_u64().unwrap(), 180 - failed);
    assert!(f["text"].as_str().unwrap().contains("w3"), "{}", f["text"]);
}

/// `gauntlet worker --local-addresses`: a worker process (here on one runtime thread,
/// `GAUNTLET_WORKER_THREADS=1`) binds its connections to each address in turn, and the testbed
/// sees them arrive from both; an address that is not this machine's is a startup error (exit
/// 2) naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_two_local_addresses_connects_from_both() {
    let out = gauntlet()
        .args(["worker", "--local-addresses", "127.0.0.2,203.0.113.7"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--local-addresses: 203.0.113.7 cannot be a source address"),
        "{stderr}"
    );

    let tb = testbed(serde_json::json!({})).await;
    let (_c, url) = coordinator();
    let _w = Proc(
        gauntlet()
            .args([
                "worker",
                "--coordinator",
                &url,
                "--name",
                "sourced",
                "--plan-env",
                "JWT_SECRET_KEY",
            ])
            .env("GAUNTLET_LOCAL_ADDRESSES", "127.0.0.2,127.0.0.3")
            // And on one runtime thread.
            .env("GAUNTLET_WORKER_THREADS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let plan = plan_file(
        "sources.toml",
        &AGENT_PLAN.replace("vus = 60\niterations = 2", "vus = 10\niterations = 1"),
    );
    let out = format!(
        "{}/sources-out",
        std::env::temp_dir()
            .join(format!("gauntlet-fleet-{}", std::process::id()))
            .display()
    );
    let child = run_on(&url, &plan, &tb.http_url(), &out, 1);
    let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(report(&out)["totals"]["passed"], 10);
    // VU i connected from address i % 2.
    assert_eq!(
        tb.stats().peers,
        std::collections::BTreeMap::from([
            ("127.0.0.2".to_owned(), 5),
            ("127.0.0.3".to_owned(), 5)
        ])
    );
    tb.stop().await.unwrap();
}

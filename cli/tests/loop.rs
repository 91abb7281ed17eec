//! `gauntlet loop`: cycles until the goal is reached, with a command between cycles; a loop
//! whose cycle runs nothing stops at once and says why.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use gauntlet_testbed::config::Secret;
use gauntlet_testbed::{Testbed, TestbedConfig};

const SECRET: &str = "loop-test-secret";

const PLAN: &str = r#"
name = "loop-probe"
[auth]
secret_env = "JWT_SECRET_KEY"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
vus = 20
iterations = 2
[[scenarios]]
name = "ping"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "ping" } } },
  { ws_expect = { type = "pong" } },
]
"#;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gauntlet-loop-{}-{name}", std::process::id()))
}

fn gauntlet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(args)
        .env("JWT_SECRET_KEY", SECRET)
        .env("GAUNTLET_LOG", "warn")
        .env("GAUNTLET_HISTORY", tmp("history.db"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_stops_once_the_between_command_switched_the_faults_off() {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    config.faults =
        serde_json::from_value(serde_json::json!({ "factory_init": { "rate": 0.5 } })).unwrap();
    let tb = Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let plan = tmp("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    // The fix between cycles: switch the faults off (with gauntlet itself, no curl needed).
    let fix = format!(
        "{} probe --method PUT --body '{{}}' {}/__testbed/faults",
        env!("CARGO_BIN_EXE_gauntlet"),
        tb.http_url()
    );
    let out = tmp("out");
    let target = tb.http_url();
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        gauntlet(&[
            "loop",
            plan.to_str().unwrap(),
            "--target",
            &target,
            "--until-passes",
            "40",
            "--max-cycles",
            "4",
            "--between",
            &fix,
            "--out",
            out.to_str().unwrap(),
        ])
    });
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("goal reached in cycle 2"), "{stdout}");
    assert!(stdout.contains("| 1 | fail |"), "{stdout}");
    assert!(stdout.contains("| 2 | pass | 40 | 40 | - |"), "{stdout}");
    assert!(stdout.contains("between: exit 0"), "{stdout}");
    let md = std::fs::read_to_string(out.join("cycle-2/report.md")).unwrap();
    assert!(
        md.contains("- Resolved categories: `factory_init_failed`"),
        "{md}"
    );
}

#[test]
fn a_loop_whose_cycle_runs_nothing_stops_with_the_reason() {
    let plan = tmp("plan-nothing.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let out = tmp("out-nothing");
    let (code, stdout, _) = gauntlet(&[
        "loop",
        plan.to_str().unwrap(),
        "--target",
        "http://127.0.0.1:9",
        "--until-passes",
        "1",
        "--max-cycles",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("STOPPED: cycle 1 ran nothing"), "{stdout}");
    assert!(stdout.contains("the target was never reached"), "{stdout}");
    assert!(!stdout.contains("| 2 |"), "no second cycle: {stdout}");
}

#[test]
fn a_loops_default_folder_names_the_plan_in_its_safe_form() {
    let cwd = tmp("cwd");
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(&cwd).unwrap();
    let plan = cwd.join("plan.toml");
    std::fs::write(
        &plan,
        PLAN.replace("name = \"loop-probe\"", "name = \"loop probe / ü\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(["loop", "plan.toml", "--target", "http://127.0.0.1:9"])
        .args(["--until-passes", "1", "--max-cycles", "1"])
        .current_dir(&cwd)
        .env("JWT_SECRET_KEY", SECRET)
        .env("GAUNTLET_LOG", "warn")
        .env("GAUNTLET_HISTORY", tmp("history-safe.db"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let report = cwd.join("gauntlet-runs/loop-loop_probe___u00fc/cycle-1/report.json");
    assert!(report.is_file(), "{}: {stdout}", report.display());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(
        json["plan"]["name"], "loop probe / ü",
        "the report keeps the human name"
    );
    std::fs::remove_dir_all(&cwd).unwrap();
}

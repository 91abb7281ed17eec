//! Run history through the binary: runs are stored, listed, shown, re-rendered and compared;
//! the second run's report.md shows the progress since the first; a corrupt database is a
//! clear warning and never costs a run its report files.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use gauntlet_testbed::config::Secret;
use gauntlet_testbed::{Testbed, TestbedConfig};

const SECRET: &str = "history-test-secret";

const PLAN: &str = r#"
name = "history-probe"
[auth]
secret_env = "JWT_SECRET_KEY"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
vus = 20
iterations = 1
[[scenarios]]
name = "agent"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "start_agent" } } },
  { ws_expect_sequence = { orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], ignore = ["ack"] } },
]
"#;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gauntlet-history-{}-{name}", std::process::id()))
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

fn run_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_stored_compared_and_shown() {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    config.pipeline.delay = gauntlet_testbed::delay::Delay::ZERO;
    let tb = Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let db = tmp("runs.db");
    let plan = tmp("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let target = tb.http_url();
    let cycle = |faults: serde_json::Value, out: &str| {
        tb.set_faults(serde_json::from_value(faults).unwrap());
        let out = tmp(out);
        let (code, stdout, stderr) = gauntlet(
            &db,
            &[
                "run",
                plan.to_str().unwrap(),
                "--target",
                &target,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 1, "{stdout}\n{stderr}");
        (run_id(&stdout), out)
    };
    let (first, _) = tokio::task::block_in_place(|| {
        cycle(serde_json::json!({ "factory_init": { "rate": 0.5 } }), "a")
    });
    let (second, out) = tokio::task::block_in_place(|| {
        cycle(serde_json::json!({ "missing_event": { "rate": 0.5 } }), "b")
    });

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Progress vs previous cycle"), "{md}");
    assert!(
        md.contains("- Resolved categories: `factory_init_failed`"),
        "{md}"
    );
    assert!(md.contains("- New categories: `missing_event`"), "{md}");

    let (code, listed, _) =
        tokio::task::block_in_place(|| gauntlet(&db, &["history", "--plan", "history-probe"]));
    assert_eq!(code, 0);
    assert!(
        listed.contains(&first) && listed.contains(&second),
        "{listed}"
    );

    let (code, compared, _) =
        tokio::task::block_in_place(|| gauntlet(&db, &["compare", &first, &second]));
    assert_eq!(code, 0, "{compared}");
    assert!(
        compared.contains("- Resolved categories: `factory_init_failed`"),
        "{compared}"
    );
    assert!(
        compared.contains("- New categories: `missing_event`"),
        "{compared}"
    );

    // A run id the history does not hold is a usage error naming it.
    let (code, _, stderr) =
        tokio::task::block_in_place(|| gauntlet(&db, &["compare", &first, "run-that-never-was"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`run-that-never-was` is neither a file nor a run in the history"),
        "{stderr}"
    );

    let (code, shown, _) = tokio::task::block_in_place(|| gauntlet(&db, &["show", &first]));
    assert_eq!(code, 0);
    assert!(shown.contains("factory_init_failed"), "{shown}");

    let again = tmp("again");
    let (code, _, _) = tokio::task::block_in_place(|| {
        gauntlet(&db, &["report", &first, "--out", again.to_str().unwrap()])
    });
    assert_eq!(code, 0);
    for file in ["report.json", "report.md", "junit.xml"] {
        assert!(again.join(file).exists(), "{file}");
    }
    let (code, _, stderr) =
        tokio::task::block_in_place(|| gauntlet(&db, &["show", "run-that-never-was"]));
    // An unknown run id is a usage error, as in `compare` (it was 3 before).
    assert_eq!(code, 2);
    assert!(stderr.contains("no run `run-that-never-was`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_history_never_costs_a_run_its_report() {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    config.pipeline.delay = gauntlet_testbed::delay::Delay::ZERO;
    let tb = Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let db = tmp("corrupt.db");
    std::fs::write(&db, vec![b'x'; 4096]).unwrap();
    let plan = tmp("plan2.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let out = tmp("corrupt-out");
    let target = tb.http_url();
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        gauntlet(
            &db,
            &[
                "run",
                plan.to_str().unwrap(),
                "--target",
                &target,
                "--out",
                out.to_str().unwrap(),
            ],
        )
    });
    assert_eq!(
        code, 0,
        "the verdict decides the exit code\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("was not stored in the history") && stderr.contains("not a database"),
        "{stderr}"
    );
    assert!(out.join("report.json").exists() && out.join("report.md").exists());
}

/// Reading commands on a database path that does not exist say so (exit 2) and create
/// nothing.
#[test]
fn reading_a_history_that_does_not_exist_says_so_and_creates_nothing() {
    let db = tmp("never-created.db");
    let _ = std::fs::remove_file(&db);
    for args in [
        vec!["history"],
        vec!["show", "run-1"],
        vec!["report", "run-1", "--out", "/tmp/never"],
        vec!["compare", "run-1", "run-2"],
    ] {
        let (code, _, stderr) = gauntlet(&db, &args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("no history database at") && stderr.contains("never-created.db"),
            "{args:?}: {stderr}"
        );
        assert!(!db.exists(), "{args:?} created {}", db.display());
    }
}

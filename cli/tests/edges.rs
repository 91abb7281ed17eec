//! The command line at its edges, as a new user meets them: variables as manifests write
//! them, exit codes and messages for what is not there, files named on the command line.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

/// Runs the binary with `env` set (and nothing inherited that would change it); returns the
/// exit code, stdout and stderr.
fn gauntlet(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gauntlet"));
    command
        .args(args)
        .env_remove("GAUNTLET_LOG_JSON")
        .env_remove("GAUNTLET_MIN_WORKERS")
        .env("GAUNTLET_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gauntlet-edges-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn plan(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plans")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn boolean_variables_take_1_and_0() {
    for value in ["1", "0", "yes", "no", "true", "false"] {
        let (code, _, stderr) = gauntlet(&["schema"], &[("GAUNTLET_LOG_JSON", value)]);
        assert_eq!(code, 0, "GAUNTLET_LOG_JSON={value}: {stderr}");
    }
    let (code, _, stderr) = gauntlet(&["schema"], &[("GAUNTLET_LOG_JSON", "maybe")]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn run_reads_min_workers_from_its_variable() {
    let (code, _, stderr) = gauntlet(
        &["run", &plan("health.toml")],
        &[("GAUNTLET_MIN_WORKERS", "three")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--min-workers"), "{stderr}");
}

/// An unknown run id is a usage error (2) naming it and the database, in `show`, `report` and
/// `compare` alike; `report` writes into gauntlet-runs/<run id>/ by default, as `run` does; a
/// `history --plan` that matches nothing says it is the plan that has no runs.
#[test]
fn unknown_runs_exit_2_and_report_has_a_default_folder() {
    let dir = scratch("history");
    let db = dir.join("h.db");
    let db_env = [("GAUNTLET_HISTORY", db.to_str().unwrap())];
    let out = dir.join("run");
    // Port 9 on loopback: nothing listens, so the run ends at once (exit 3) and is stored.
    let (code, _, stderr) = gauntlet(
        &[
            "run",
            &plan("health.toml"),
            "--target",
            "http://127.0.0.1:9",
            "--out",
            out.to_str().unwrap(),
        ],
        &db_env,
    );
    assert_eq!(code, 3, "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let id = report["run_id"].as_str().unwrap().to_owned();
    for args in [
        vec!["show", "run-nope"],
        vec!["show", "run-nope", "--plan"],
        vec!["show", "run-nope", "--json"],
        vec!["report", "run-nope"],
        vec!["compare", "run-nope", &id],
    ] {
        let (code, _, stderr) = gauntlet(&args, &db_env);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("`run-nope`") && stderr.contains(db.to_str().unwrap()),
            "{args:?}: {stderr}"
        );
    }
    // `report RUN` without --out: gauntlet-runs/<run id>/ under the current directory.
    let cwd = dir.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(["report", &id])
        .env("GAUNTLET_HISTORY", &db)
        .current_dir(&cwd)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    let folder = cwd.join("gauntlet-runs").join(&id);
    assert!(folder.join("report.json").exists(), "{stdout}");
    assert!(stdout.contains(&format!("gauntlet-runs/{id}/")), "{stdout}");
    // A plan with no runs, in a database with runs.
    let (code, stdout, stderr) = gauntlet(&["history", "--plan", "nope"], &db_env);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("no runs of plan `nope` in {}", db.display())
    );
    let (_, stdout, _) = gauntlet(&["history", "--plan", "health"], &db_env);
    assert!(stdout.contains(&id), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

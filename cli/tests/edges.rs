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
    let plan = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plans/health.toml");
    let (code, _, stderr) = gauntlet(
        &["run", plan.to_str().unwrap()],
        &[("GAUNTLET_MIN_WORKERS", "three")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--min-workers"), "{stderr}");
}

//! A closed stdout (`gauntlet demo | head -2`, `gauntlet run PLAN | true`) never panics and
//! never changes the exit code: the report files are still written, the run still stored.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs the binary with stdout a pipe whose reading end is closed before it writes anything
/// (or, with `open`, read to the end); returns the exit code and stderr.
fn gauntlet(args: &[&str], history: &Path, open: bool) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(args)
        .env("GAUNTLET_HISTORY", history)
        .env("GAUNTLET_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    if open {
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    } else {
        drop(stdout);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gauntlet-closed-stdout-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_demo_exits_as_it_does_with_stdout_open() {
    let dir = scratch("demo");
    let history = dir.join("history.db");
    let mut codes = Vec::new();
    for open in [true, false] {
        let out = dir.join(format!("open-{open}"));
        let (code, stderr) = gauntlet(
            &["demo", "--users", "8", "--out", out.to_str().unwrap()],
            &history,
            open,
        );
        assert!(!stderr.contains("panicked"), "open {open}: {stderr}");
        assert!(
            out.join("report.json").exists(),
            "open {open}: no report\n{stderr}"
        );
        codes.push(code);
    }
    assert_eq!(codes, [0, 0], "the demo exits 0 when its counts match");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_and_the_history_exit_with_their_own_code() {
    let dir = scratch("run");
    let history = dir.join("history.db");
    let plan = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plans/health.toml");
    let out = dir.join("run");
    // Port 9 on loopback: nothing listens, so the verdict is error (3) at once.
    let (code, stderr) = gauntlet(
        &[
            "run",
            plan.to_str().unwrap(),
            "--target",
            "http://127.0.0.1:9",
            "--out",
            out.to_str().unwrap(),
        ],
        &history,
        false,
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.join("report.json").exists(), "{stderr}");
    assert!(out.join("report.md").exists(), "{stderr}");
    // Stored: `history` lists it (to a closed stdout too).
    let (code, stderr) = gauntlet(&["history"], &history, false);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let listed = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .arg("history")
        .env("GAUNTLET_HISTORY", &history)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("health"), "{listed}");
    let (code, stderr) = gauntlet(&["validate", plan.to_str().unwrap()], &history, false);
    assert_eq!(code, 0, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

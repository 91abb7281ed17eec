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

#[test]
fn worker_threads_are_one_to_1024() {
    for bad in ["0", "1025", "many"] {
        let (code, _, stderr) = gauntlet(&["worker", "--threads", bad], &[]);
        assert_eq!(code, 2, "--threads {bad}: {stderr}");
        assert!(stderr.contains("--threads"), "{stderr}");
    }
    let (code, _, stderr) = gauntlet(&["worker"], &[("GAUNTLET_WORKER_THREADS", "0")]);
    assert_eq!(code, 2, "{stderr}");
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

/// `init -` writes the starter on stdout (no file named `-`); a FILE in folders that do not
/// exist yet gets them.
#[test]
fn init_writes_to_stdout_or_into_new_folders() {
    let dir = scratch("init");
    let out = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(["init", "-", "--from", "http"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.starts_with("#:schema "), "{stdout}");
    assert!(stdout.contains("name = \"health\""), "{stdout}");
    assert!(!dir.join("-").exists(), "init - wrote a file named `-`");
    let file = dir.join("new/folders/plan.toml");
    let (code, stdout, stderr) = gauntlet(&["init", file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(file.exists(), "{stdout}");
    let (code, _, stderr) = gauntlet(&["validate", file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A plan file that is not there: exit 2, the OS's words once.
#[test]
fn a_missing_plan_is_told_once() {
    for command in ["validate", "run"] {
        let (code, _, stderr) = gauntlet(&[command, "no-such-plan.toml"], &[]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("no-such-plan.toml"), "{stderr}");
        assert_eq!(
            stderr.matches("No such file or directory").count(),
            1,
            "{command}: {stderr}"
        );
    }
}

/// `validate` counts in words that agree with their numbers.
#[test]
fn validate_says_one_vu_one_session_one_subject() {
    let dir = scratch("plural");
    let file = dir.join("one.toml");
    std::fs::write(
        &file,
        "name = \"one\"\n[target]\nbase_url = \"http://127.0.0.1:1\"\n[auth]\nsecret_env = \"JWT_SECRET_KEY\"\nsubject = \"u-{subject_index}\"\nsubject_pool = 1\n[load]\nvus = 1\niterations = 1\n[[scenarios]]\nname = \"s\"\nsteps = [{ ws_connect = {} }]\n",
    )
    .unwrap();
    let (code, stdout, stderr) = gauntlet(&["validate", file.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "load:       closed model, 1 VU x 1 session = 1 session\n",
        "subjects:   `u-{subject_index}`, a pool of 1 subject shared by the VUs\n",
        "scenario:   `s`, weight 1 (100 % of sessions), 1 step: ws_connect\n",
    ] {
        assert!(stdout.contains(line), "no `{line}` in\n{stdout}");
    }
    let (code, stdout, _) = gauntlet(
        &[
            "validate",
            file.to_str().unwrap(),
            "--vus",
            "1",
            "--duration",
            "10s",
        ],
        &[],
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("closed model, 1 VU for 10s\n"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `--out` that cannot be written: the run is still judged and its summary printed, exit 3
/// naming the folder; docker-compose advice only inside a container.
#[test]
fn an_unwritable_out_names_the_folder_and_advises_for_where_it_runs() {
    let dir = scratch("unwritable");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = file.join("run");
    let (code, stdout, stderr) = gauntlet(
        &[
            "run",
            &plan("health.toml"),
            "--target",
            "http://127.0.0.1:9",
            "--out",
            out.to_str().unwrap(),
            "--no-history",
        ],
        &[],
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.contains("sessions:"), "{stdout}");
    assert!(
        stderr.contains(&format!("could not be written into {}", out.display())),
        "{stderr}"
    );
    let in_container = std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists();
    assert_eq!(stderr.contains("docker-compose"), in_container, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `init --from` completes the starters' names.
#[test]
fn init_from_completes_the_starters() {
    let (code, stdout, stderr) = gauntlet(&["completions", "bash"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "compgen -W \"agent-pipeline connect-ping http message-flow concurrent staging-suite\""
        ),
        "{stdout}"
    );
}

/// The man page's NAME line says the name once, and every page it refers to can be made.
#[test]
fn the_man_pages_it_refers_to_exist() {
    let (code, page, stderr) = gauntlet(&["man"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let name = page
        .lines()
        .skip_while(|l| *l != ".SH NAME")
        .nth(1)
        .unwrap();
    assert!(name.starts_with("gauntlet \\- "), "{name}");
    assert!(!name.contains("gauntlet:"), "{name}");
    let mut referred = 0;
    for line in page.lines() {
        let Some(sub) = line
            .strip_prefix("gauntlet\\-")
            .and_then(|l| l.strip_suffix("(1)"))
        else {
            continue;
        };
        referred += 1;
        let (code, subpage, stderr) = gauntlet(&["man", sub], &[]);
        assert_eq!(code, 0, "gauntlet man {sub}: {stderr}");
        assert!(
            subpage.contains(&format!(".TH gauntlet-{sub} 1")),
            "gauntlet man {sub}:\n{}",
            &subpage[..200.min(subpage.len())]
        );
    }
    assert!(referred >= 10, "{referred} pages referred to:\n{page}");
    let (code, _, stderr) = gauntlet(&["man", "nope"], &[]);
    assert_eq!(code, 2, "{stderr}");
}

//! The example plans, run by the real binary against an in-process testbed with its
//! defaults: each prints a summary and exits 0, except the shared-subjects probe, which must
//! show factory-init failures and exit 1. Bad plans exit 2 with `file:line:col: field`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use gauntlet_testbed::config::Secret;
use gauntlet_testbed::{Testbed, TestbedConfig};

const SECRET: &str = "cli-plans-test-secret";

fn plans_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plans")
}

/// Runs the binary; `run` writes its report under the system temp dir, never in the repo.
fn gauntlet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(args)
        .env(
            "GAUNTLET_OUT",
            std::env::temp_dir().join(format!("gauntlet-cli-test-{}", std::process::id())),
        )
        .env(
            "GAUNTLET_HISTORY",
            std::env::temp_dir().join(format!("gauntlet-cli-test-{}.db", std::process::id())),
        )
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_plan_runs_against_the_testbed_defaults() {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    let tb = Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let target = tb.http_url();
    let mut names: Vec<String> = std::fs::read_dir(plans_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        let path = plans_dir().join(&name);
        let path = path.to_str().unwrap().to_owned();
        let target = target.clone();
        let (code, stdout, stderr) =
            tokio::task::spawn_blocking(move || gauntlet(&["run", &path, "--target", &target]))
                .await
                .unwrap();
        assert!(
            stdout.contains("sessions:"),
            "{name}: no summary\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("latency (ms)"),
            "{name}: no latency table\n{stdout}"
        );
        if name == "per-user-limit-shared.toml" {
            assert_eq!(code, 1, "{name}\n{stdout}\n{stderr}");
            assert!(stdout.contains("factory_init_failed"), "{name}\n{stdout}");
        } else {
            assert_eq!(code, 0, "{name}\n{stdout}\n{stderr}");
            assert!(stdout.contains(" 0 failed"), "{name}\n{stdout}");
        }
    }
    tb.stop().await.unwrap();
}

#[test]
fn a_bad_plan_exits_2_and_points_at_the_field() {
    let dir = std::env::temp_dir().join(format!("gauntlet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\n[target]\nbase_url = \"http://127.0.0.1:1\"\n[load]\nvus = 1\niterations = 1\n[[scenarios]]\nname = \"s\"\nsteps = [\n  { ws_connect = {} },\n  { ws_expect = { type = \"pong\", timeout = \"soon\" } },\n]\n",
    )
    .unwrap();
    let path = bad.to_str().unwrap();
    for command in ["validate", "run"] {
        let (code, _, stderr) = gauntlet(&[command, path]);
        assert_eq!(code, 2, "{command}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{path}:11:44: scenarios[0].steps[1].ws_expect.timeout"
            )),
            "{command}: {stderr}"
        );
    }
    let (code, stdout, _) = gauntlet(&[
        "validate",
        plans_dir().join("agent-pipeline.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(stdout.contains(": ok: plan `agent-pipeline`"), "{stdout}");
}

#[test]
fn an_unknown_template_variable_exits_2_naming_it_and_the_known_ones() {
    // The scenario defines `{thread}`; the isolation check reads `{thread_id}`, which would
    // never render, so the check would silently never run.
    let dir = std::env::temp_dir().join(format!("gauntlet-cli-vars-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("typo.toml");
    std::fs::write(
        &plan,
        r#"name = "typo"
[target]
base_url = "http://127.0.0.1:1"
[load]
vus = 1
iterations = 1
[[scenarios]]
name = "agent-run"
vars = { thread = "thread-{vu}-{iteration}" }
steps = [
  { ws_connect = { query = { thread_id = "{thread}" } } },
  { ws_close = {} },
]
[[isolation]]
pointer = "/thread_id"
equals = "{thread_id}"
"#,
    )
    .unwrap();
    let path = plan.to_str().unwrap();
    for command in ["validate", "run"] {
        let (code, stdout, stderr) = gauntlet(&[command, path]);
        assert_eq!(code, 2, "{command}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!(
                "{path}:16:10: isolation[0].equals: unknown template variable `thread_id` \
                 (known here: vu, iteration, subject, subject_index, scenario, uuid, now, \
                 now_ms, token, thread)"
            )),
            "{command}: {stderr}"
        );
        assert!(!stdout.contains("ok"), "{command}: {stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_where_nothing_can_connect_is_an_error_not_a_pass() {
    // Port 9 on loopback: nothing listens, every connection is refused.
    let (code, stdout, _) = gauntlet(&[
        "run",
        plans_dir().join("connect-ping.toml").to_str().unwrap(),
        "--target",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stdout.contains("connect_refused"), "{stdout}");
    assert!(
        stdout.contains("verdict: error: the target was never reached"),
        "{stdout}"
    );
}

/// `--vus 3 --iterations 4` replace the plan's load (20 VUs x 5): exactly 12 sessions, the
/// overrides listed in the summary and in report.json; a `--stage` without a target number is
/// a usage error naming the flag's form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_flags_replace_the_plans_load_and_the_report_says_so() {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    let tb = Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let target = tb.http_url();
    let path = plans_dir().join("agent-pipeline.toml");
    let path = path.to_str().unwrap().to_owned();
    let out = std::env::temp_dir().join(format!("gauntlet-cli-overrides-{}", std::process::id()));
    let out_arg = out.to_str().unwrap().to_owned();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        gauntlet(&[
            "run",
            &path,
            "--target",
            &target,
            "--vus",
            "3",
            "--iterations",
            "4",
            "--no-history",
            "--out",
            &out_arg,
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("sessions: 12 started, 12 passed"),
        "{stdout}"
    );
    let flags = format!("--target {}", tb.http_url());
    assert!(
        stdout.contains(&format!("overrides: {flags} --vus 3 --iterations 4")),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["overrides"],
        serde_json::json!([flags, "--vus 3", "--iterations 4"])
    );
    assert_eq!(tb.stats().pipelines.completed, 12);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains(&format!(
            "Overridden on the command line: `{flags}`, `--vus 3`, `--iterations 4`."
        )),
        "{md}"
    );

    let plan = plans_dir().join("agent-pipeline.toml");
    let (code, _, stderr) = gauntlet(&["run", plan.to_str().unwrap(), "--stage", "30s"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("DURATION:TARGET"), "{stderr}");
    tb.stop().await.unwrap();
}

/// `-e/--var NAME=VALUE` replaces a scenario variable for the run on every worker (the fleet
/// resolves the plan with it), the report lists it (a secret-looking name's value masked), and
/// a name no scenario declares exits 2 naming the declared ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn var_flags_replace_scenario_variables_on_the_fleet() {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    let tb = Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("gauntlet-cli-vars-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("vars.toml");
    std::fs::write(
        &plan,
        "name = \"vars\"\n[load]\nvus = 2\niterations = 3\n[[scenarios]]\nname = \"probe\"\n\
         vars = { probe = \"/health\", api_token = \"none\" }\n\
         steps = [ { http = { path = \"{probe}\", expect_status = [200] } } ]\n",
    )
    .unwrap();
    let target = tb.http_url();
    let run = |extra: &'static [&'static str], out: &str| {
        let (plan, target, out) = (
            plan.to_str().unwrap().to_owned(),
            target.clone(),
            dir.join(out),
        );
        tokio::task::block_in_place(move || {
            let mut args = vec![
                "run",
                &plan,
                "--target",
                &target,
                "--workers",
                "2",
                "--no-history",
                "--out",
                out.to_str().unwrap(),
            ];
            args.extend_from_slice(extra);
            let (code, stdout, stderr) = gauntlet(&args);
            (code, stdout, stderr, out)
        })
    };
    // As written: every session asks /health and passes.
    let (code, stdout, stderr, _) = run(&[], "as-written");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("sessions: 6 started, 6 passed"), "{stdout}");
    // `-e probe=/nowhere`: every session of both workers asks a path that is not there.
    let (code, stdout, stderr, out) = run(
        &["-e", "probe=/nowhere", "--var", "api_token=s3cr3t"],
        "overridden",
    );
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("sessions: 6 started, 0 passed, 6 failed"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let overrides: Vec<&str> = report["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert_eq!(
        overrides[1..],
        ["--var api_token=<redacted>", "--var probe=/nowhere"],
        "{overrides:?}"
    );
    assert!(
        !std::fs::read_to_string(out.join("report.json"))
            .unwrap()
            .contains("s3cr3t")
    );
    // A name no scenario declares, and a flag without `=`: exit 2, before anything runs.
    let (code, _, stderr, _) = run(&["-e", "prob=/health"], "typo");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "--var prob: no scenario declares a variable `prob` in its `vars` (declared: api_token, probe)"
        ),
        "{stderr}"
    );
    let (code, _, stderr, _) = run(&["--var", "probe"], "no-equals");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`probe`: write NAME=VALUE"), "{stderr}");
    tb.stop().await.unwrap();
}

/// `gauntlet init` writes each starter; each validates as written and is byte for byte the
/// example plan the test above runs against the testbed, after a comment header naming the
/// plan's schema; an existing file is kept unless
/// `--force`, and an unknown starter names the known ones.
#[test]
fn init_writes_starters_that_validate() {
    let dir = std::env::temp_dir().join(format!("gauntlet-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, example) in [
        ("agent-pipeline", "agent-pipeline.toml"),
        ("connect-ping", "connect-ping.toml"),
        ("http", "health.toml"),
        ("message-flow", "message-flow.toml"),
        ("concurrent", "concurrent-7.toml"),
        ("staging-suite", "staging-suite.toml"),
    ] {
        let file = dir.join(format!("{name}.toml"));
        let _ = std::fs::remove_file(&file);
        let f = file.to_str().unwrap();
        let (code, stdout, stderr) = gauntlet(&["init", f, "--from", name]);
        assert_eq!(code, 0, "{name}: {stderr}");
        assert!(stdout.contains("gauntlet run"), "{stdout}");
        // The example plan, after the comment lines naming the schema for editors.
        let written = std::fs::read_to_string(&file).unwrap();
        let example = std::fs::read_to_string(plans_dir().join(example)).unwrap();
        let header = written
            .strip_suffix(example.as_str())
            .unwrap_or_else(|| panic!("{name}: not the example plan after a header:\n{written}"));
        assert!(
            header.starts_with("#:schema ") && header.lines().all(|l| l.starts_with('#')),
            "{name}: {header}"
        );
        let (code, stdout, stderr) = gauntlet(&["validate", f]);
        assert_eq!(code, 0, "{name}: {stdout}{stderr}");
        let (code, _, stderr) = gauntlet(&["init", f, "--from", name]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("--force"), "{stderr}");
        let (code, _, stderr) = gauntlet(&["init", f, "--from", name, "--force"]);
        assert_eq!(code, 0, "{stderr}");
    }
    let (code, _, stderr) = gauntlet(&["init", "x.toml", "--from", "grpc"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("known: agent-pipeline, connect-ping, http"),
        "{stderr}"
    );
}

/// `validate` says what would run; a step with two kinds, an unknown kind or none is refused
/// at its line naming the kinds.
#[test]
fn validate_says_what_would_run_and_names_step_kinds() {
    let (code, stdout, stderr) = gauntlet(&[
        "validate",
        plans_dir().join("staging-suite.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "load:       closed model, 30 VUs x 4 sessions = 120 sessions",
        "scenario:   `agent-run`, weight 2 (50 % of sessions), 4 steps: ws_connect, ws_send, ws_expect_sequence, ws_close",
        "threshold:  p99(session.agent-run) < 5s",
        "subjects:   `suite-user-{subject_index}`, one subject per VU",
    ] {
        assert!(stdout.contains(line), "no `{line}` in\n{stdout}");
    }
    let dir = std::env::temp_dir().join(format!("gauntlet-kinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (step, message) in [
        (
            "{ ws_connect = {}, ws_send = { json = {} } }",
            "this one has `ws_connect` and `ws_send`",
        ),
        (
            "{ ws_frobnicate = {} }",
            "unknown step kind `ws_frobnicate`",
        ),
        ("{ }", "a step needs a kind"),
    ] {
        let file = dir.join("p.toml");
        std::fs::write(
            &file,
            format!(
                "name = \"x\"\n[target]\nbase_url = \"http://127.0.0.1:1\"\n[load]\nvus = 1\niterations = 1\n[[scenarios]]\nname = \"s\"\nsteps = [\n  {step},\n]\n"
            ),
        )
        .unwrap();
        let (code, _, stderr) = gauntlet(&["validate", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains("p.toml:10:3: scenarios[0].steps[0]: ") && stderr.contains(message),
            "{stderr}"
        );
        assert!(
            stderr.contains("ws_connect, ws_send, ws_expect, ws_expect_sequence"),
            "{stderr}"
        );
    }
}

/// A value the command line gave is blamed on its flag, never on the plan file's line whose
/// value it replaced; flags of the two load models together are refused as such; a load that
/// would start no session does not validate.
#[test]
fn flag_errors_name_the_flag_and_loads_that_run_nothing_are_refused() {
    let plan = plans_dir().join("agent-pipeline.toml");
    let plan = plan.to_str().unwrap();
    for (flags, wanted) in [
        (
            &["--vus", "0"][..],
            "as the command line set it (--vus 0): load.vus: no VU would ever run",
        ),
        (
            &["--iterations", "0"][..],
            "as the command line set it (--iterations 0): load.iterations: must be at least 1",
        ),
        (
            &["--target", "notaurl"][..],
            "as the command line set it (--target notaurl): target.base_url: `notaurl` must start with http:// or https://",
        ),
        (
            &["--rate", "10"][..],
            "as the command line set it (--rate 10): load.max_vus: the open model needs max_vus of at least 1",
        ),
        (
            &["--vus", "2", "--rate", "5"][..],
            "the command line: --vus 2 and --rate 5 cannot go together",
        ),
        (
            &["--duration", "0s"][..],
            "(--duration 0s): load.duration: must be above 0",
        ),
        (
            &["--stage", "0s:0"][..],
            "(--stage 0s:0): load.stages: the stages last 0s in all: no session would start",
        ),
        (
            &["--rate", "0", "--max-vus", "5", "--duration", "1s"][..],
            "(--rate 0): load.rate: schedules 0.00 arrivals in all: no session would start",
        ),
    ] {
        let mut args = vec!["validate", plan];
        args.extend_from_slice(flags);
        let (code, _, stderr) = gauntlet(&args);
        assert_eq!(code, 2, "{flags:?}: {stderr}");
        assert!(
            stderr.contains(wanted),
            "{flags:?}: no `{wanted}` in\n{stderr}"
        );
        assert!(
            !stderr.contains("agent-pipeline.toml:"),
            "{flags:?}: a flag's error blamed on a line of the plan:\n{stderr}"
        );
    }
}

//! Redaction through the binary: a plan whose target carries `user:pass@`, an `access_key`
//! query and `Api-Key`, `X-Auth`, `Ocp-Apim-Subscription-Key`, cookie and session headers,
//! validated and run against an in-process testbed with `--log trace`: no secret value and no
//! minted JWT appears in stdout, stderr, report.json / .md / .html, junit.xml, the history
//! database or `gauntlet show --json`, and what was masked is still there as `<redacted>`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use gauntlet_testbed::config::Secret;
use gauntlet_testbed::{Testbed, TestbedConfig};

const SIGNING_SECRET: &str = "redaction-test-signing-secret";

/// Every credential the plan carries, each a distinctive string.
const SECRETS: [&str; 8] = [
    "alice",
    "pw-userinfo-5b1e",
    "accesskey-2c6f",
    "apikey-9f3c",
    "xauth-7d21",
    "ocp-4a8e",
    "cookie-8b0d",
    "session-1e9a",
];

/// The plan: the target's URL has user-info; the upgrade carries the secret query and
/// headers and the VU's JWT (header placement); the session sends its own token as a frame
/// type, which the testbed echoes back in an `ack` the next step does not wait for, so the
/// failure sample quotes the token.
fn plan(http_url: &str) -> String {
    let host = http_url.trim_start_matches("http://");
    format!(
        r#"
name = "redaction-probe"
[target]
base_url = "http://alice:pw-userinfo-5b1e@{host}"
headers = {{ "Api-Key" = "apikey-9f3c", "X-Auth" = "xauth-7d21", "Ocp-Apim-Subscription-Key" = "ocp-4a8e", Cookie = "sid=cookie-8b0d", "X-Session-Id" = "session-1e9a", "X-Stage" = "eu" }}
[auth]
secret_env = "JWT_SECRET_KEY"
claims = {{ iss = "netra-auth-service", token_type = "access" }}
[load]
vus = 2
iterations = 1
[[scenarios]]
name = "s"
steps = [
  {{ http = {{ path = "/api/health?access_key=accesskey-2c6f" }} }},
  {{ ws_connect = {{ query = {{ access_key = "accesskey-2c6f" }}, confirmation = [{{ pointer = "/data/event", equals = "connection_established" }}] }} }},
  {{ ws_send = {{ json = {{ type = "{{token}}" }} }} }},
  {{ ws_expect = {{ type = "never", timeout = "300ms" }} }},
]
"#
    )
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gauntlet-redaction-{}-{name}", std::process::id()))
}

fn gauntlet(db: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(args)
        .env("JWT_SECRET_KEY", SIGNING_SECRET)
        .env("GAUNTLET_HISTORY", db)
        .env_remove("GAUNTLET_LOG")
        .env_remove("GAUNTLET_LOG_JSON")
        .env_remove("GAUNTLET_TARGET")
        .env_remove("GAUNTLET_WS_TARGET")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// No credential of the plan, no JWT (raw or base64) and not the signing secret in `text`.
fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS
        .iter()
        .copied()
        .chain(["eyJ", "ZXlK", SIGNING_SECRET])
    {
        let at = text.find(secret);
        assert!(
            at.is_none(),
            "{what} shows `{secret}`: …{}…",
            at.map(|i| &text[i.saturating_sub(200)..(i + 200).min(text.len())])
                .unwrap_or_default()
        );
    }
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
async fn no_credential_reaches_output_reports_history_or_trace_logs() {
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SIGNING_SECRET.as_bytes().to_vec()));
    config.pipeline.delay = gauntlet_testbed::delay::Delay::ZERO;
    let tb = Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let host = tb.http_url().trim_start_matches("http://").to_owned();
    let plan_path = tmp("plan.toml");
    std::fs::write(&plan_path, plan(&tb.http_url())).unwrap();
    let plan_arg = plan_path.to_str().unwrap();
    let db = tmp("history.db");
    let _ = std::fs::remove_file(&db);

    // validate: the target as it prints it.
    let (code, stdout, stderr) =
        tokio::task::block_in_place(|| gauntlet(&db, &["validate", plan_arg, "--log", "trace"]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "target:     http://<redacted>@{host} (WebSocket ws://<redacted>@{host}/ws)"
        )),
        "{stdout}"
    );
    assert_clean("validate stdout", &stdout);
    assert_clean("validate stderr", &stderr);

    // run, logging everything.
    let out = tmp("out");
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        gauntlet(
            &db,
            &[
                "run",
                plan_arg,
                "--out",
                out.to_str().unwrap(),
                "--log",
                "trace",
            ],
        )
    });
    assert_eq!(
        code, 1,
        "the expectation fails by design\n{stdout}\n{stderr}"
    );
    assert_clean("run stdout", &stdout);
    assert_clean("run stderr", &stderr);
    assert!(
        stderr.contains(&format!(
            "running plan `redaction-probe` against http://<redacted>@{host} (ws://<redacted>@{host}/ws)"
        )),
        "{stderr}"
    );
    // The upgrade request was logged (the worker, trace) with every credential masked, and
    // what is no credential kept.
    for header in [
        "GET /ws?access_key=<redacted> HTTP/1.1",
        "authorization: <redacted>",
        "api-key: <redacted>",
        "x-auth: <redacted>",
        "ocp-apim-subscription-key: <redacted>",
        "cookie: <redacted>",
        "x-session-id: <redacted>",
        "x-stage: eu",
    ] {
        assert!(stderr.contains(header), "{header} not logged:\n{stderr}");
    }
    // The http step's name (in metrics and checks) masks its query.
    assert!(
        stdout.contains("s/GET /api/health?access_key=<redacted>"),
        "{stdout}"
    );

    for file in ["report.json", "report.md", "report.html", "junit.xml"] {
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        assert_clean(file, &text);
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let failure = &report["failures"][0];
    assert_eq!(failure["category"], "timeout", "{report}");
    assert_eq!(failure["count"], 2, "{report}");
    let sample = failure["samples"][0].as_str().unwrap();
    assert!(
        sample.contains(r#"the first: `{"received_type":"<redacted>"#),
        "the echoed token is masked in the sample: {sample}"
    );

    // The history: the database's bytes (plan and report), and the stored report.
    let id = run_id(&stdout);
    let stored = std::fs::read(&db).unwrap();
    assert_clean("history database", &String::from_utf8_lossy(&stored));
    assert!(
        String::from_utf8_lossy(&stored).contains("base_url = \"http://<redacted>@"),
        "the stored plan is there, masked"
    );
    let (code, shown, stderr) =
        tokio::task::block_in_place(|| gauntlet(&db, &["show", &id, "--json"]));
    assert_eq!(code, 0, "{stderr}");
    assert_clean("show --json", &shown);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["run_id"], id.as_str());

    // JSON log lines: masked too, and still JSON.
    let (code, stdout, stderr) = tokio::task::block_in_place(|| {
        gauntlet(
            &db,
            &[
                "run",
                plan_arg,
                "--out",
                tmp("out-json").to_str().unwrap(),
                "--no-history",
                "--log",
                "trace",
                "--log-json",
            ],
        )
    });
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert_clean("run stderr (JSON logs)", &stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON after masking ({e}): {l}"))
        })
        .collect();
    assert!(events.len() > 100, "trace logs are many: {}", events.len());
    let request = events
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str())
        .find(|m| m.starts_with("Request: "))
        .unwrap_or_else(|| panic!("the upgrade request is logged:\n{stderr}"));
    for header in [
        r"\r\nauthorization: <redacted>\r\n",
        r"\r\napi-key: <redacted>\r\n",
        r"\r\nx-auth: <redacted>\r\n",
    ] {
        assert!(request.contains(header), "{header} in {request}");
    }

    for p in [plan_path, db] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_dir_all(tmp("out-json"));
}

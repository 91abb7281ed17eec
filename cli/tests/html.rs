//! report.html in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`) renders the report of a run against the testbed; the charts are there and drawn,
//! and a screenshot is kept as an artifact (`target/test-artifacts/report.png`).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::Command;

use gauntlet_testbed::config::Secret;
use gauntlet_testbed::{Testbed, TestbedConfig};

const SECRET: &str = "html-test-secret";

const PLAN: &str = r#"
name = "html-probe"
[auth]
secret_env = "JWT_SECRET_KEY"
claims = { iss = "netra-auth-service", token_type = "access" }
[load]
vus = 8
duration = "3s"
graceful_stop = "2s"
[[scenarios]]
name = "agent"
steps = [
  { ws_connect = { confirmation = [{ pointer = "/data/event", equals = "connection_established" }] } },
  { ws_send = { json = { type = "start_agent" } } },
  { ws_expect_sequence = { orders = [["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]], ignore = ["ack"] } },
]
[fleet]
interval = "250ms"
"#;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_html_renders_with_non_blank_charts() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("GAUNTLET_REQUIRE_CHROMIUM").is_none(),
            "GAUNTLET_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!("SKIPPED: no chromium on this machine (.ci/run installs Debian's `chromium`)");
        return;
    };
    let mut config = TestbedConfig::default();
    config.auth.secret = Some(Secret(SECRET.as_bytes().to_vec()));
    config.faults =
        serde_json::from_value(serde_json::json!({ "missing_event": { "rate": 0.1 } })).unwrap();
    let tb = Testbed::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("gauntlet-html-{}", std::process::id()));
    let plan = dir.join("plan.toml");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&plan, PLAN).unwrap();
    let out = dir.join("out");
    let target = tb.http_url();
    let status = tokio::task::block_in_place(|| {
        Command::new(env!("CARGO_BIN_EXE_gauntlet"))
            .args([
                "run",
                plan.to_str().unwrap(),
                "--target",
                &target,
                "--workers",
                "2",
                "--out",
                out.to_str().unwrap(),
                "--no-history",
            ])
            .env("JWT_SECRET_KEY", SECRET)
            .env("GAUNTLET_LOG", "warn")
            .output()
            .unwrap()
    });
    assert!(
        status.status.code().is_some_and(|c| c <= 1),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let html = out.join("report.html");
    let page = std::fs::read_to_string(&html).unwrap();
    // The right numbers: the injected missing events, in report.json, report.md and report.html.
    let injected = tb.stats().faults["missing_event"];
    assert!(injected > 0);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let sessions = json["totals"]["sessions"].as_u64().unwrap();
    assert_eq!(json["failures"][0]["category"], "missing_event");
    assert_eq!(json["failures"][0]["count"], injected);
    assert_eq!(json["totals"]["failed"], injected);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains(&format!(
            "| `missing_event` | `tool_completed` | `agent/ws_expect_sequence` | {injected} |"
        )),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "| `agent` | {sessions} | {} | {injected} |",
            sessions - injected
        )),
        "{md}"
    );
    assert!(
        page.contains(&format!("<td class=\"num\">{injected}</td>")),
        "html failure count"
    );
    assert!(
        !page.contains("<script") && !page.contains("http://") && !page.contains("https://"),
        "self-contained"
    );

    let url = format!("file://{}", html.display());
    let chrome = |args: &[&str]| {
        let mut all = vec![
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ];
        all.extend_from_slice(args);
        all.push(&url);
        Command::new(browser).args(&all).output().unwrap()
    };
    // The DOM Chromium built: every chart is there and drawn.
    let dom = tokio::task::block_in_place(|| chrome(&["--dump-dom"]));
    let dom = String::from_utf8_lossy(&dom.stdout);
    let charts = dom.matches("<svg class=\"chart\"").count();
    assert!(charts >= 6, "{charts} charts");
    assert!(!dom.contains("no data"), "an empty chart");
    let drawn = dom
        .split("<polyline")
        .skip(1)
        .filter(|p| {
            p.split("points=\"")
                .nth(1)
                .is_some_and(|pts| pts.split('"').next().unwrap_or("").split(' ').count() >= 5)
        })
        .count();
    assert!(drawn >= 10, "{drawn} lines with at least 5 points");

    // A screenshot, kept, and not blank.
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    let result = tokio::task::block_in_place(|| chrome(&[&arg, "--window-size=1100,2400"]));
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> = bytes.chunks(step).collect();
    assert!(
        colours.len() > 32,
        "{} distinct colours: blank?",
        colours.len()
    );
    eprintln!(
        "screenshot: {} ({}x{}, {} colours)",
        shot.display(),
        info.width,
        info.height,
        colours.len()
    );
}

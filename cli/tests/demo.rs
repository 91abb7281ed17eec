//! The README's first command: `gauntlet demo` runs the example agent-pipeline plan on an
//! in-process coordinator and two workers against the embedded testbed, finds every injected
//! fault under the right category, and writes its report.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn the_demo_finds_every_injected_fault() {
    let out = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(["demo", "--users", "40"])
        .env("GAUNTLET_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("demo ok: every injected fault was found and classified"),
        "{stdout}"
    );
    assert!(stdout.contains("\nfailures:\n"), "{stdout}");
    assert!(stdout.contains("workers:\n  local-"), "{stdout}");
    assert!(
        stdout.contains("verdict: fail"),
        "the injected faults fail the plan's threshold: {stdout}"
    );
    let report = stdout
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .expect("the demo names its report");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let dir = std::path::Path::new(report).parent().unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("# gauntlet run") && md.contains("## Failure patterns"),
        "{md}"
    );
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&junit).unwrap();
    let failures: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .map(|n| {
            format!(
                "{} {}",
                n.attribute("type").unwrap_or(""),
                n.attribute("message").unwrap_or("")
            )
        })
        .collect();
    for category in [
        "factory_init_failed",
        "missing_event",
        "duplicate_event",
        "isolation_breach",
    ] {
        assert!(
            failures.iter().any(|f| f.contains(category)),
            "{category} missing from junit.xml: {failures:?}"
        );
    }
    assert_eq!(json["totals"]["sessions"], 80);
    assert!(!stdout.contains("!="), "{stdout}");
}

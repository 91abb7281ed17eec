//! The README's first command: `gauntlet demo` runs the example agent-pipeline plan against
//! the embedded testbed and finds every injected fault under the right category.

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
    assert!(stdout.contains("failures by category:"), "{stdout}");
    assert!(!stdout.contains("!="), "{stdout}");
}

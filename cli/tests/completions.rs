//! `gauntlet completions SHELL` and `gauntlet man` print scripts and a page generated from the
//! command line itself: every shell's script names the subcommands and their flags (fish writes them without dashes), and an
//! unknown shell is a usage error.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn gauntlet(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shell_gets_a_script_naming_the_commands_and_flags() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let (code, stdout, stderr) = gauntlet(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        for word in ["capacity", "validate", "step-duration", "plan-env"] {
            assert!(stdout.contains(word), "{shell}: no `{word}`");
        }
    }
    let (code, _, stderr) = gauntlet(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("tcsh"), "{stderr}");
}

#[test]
fn the_man_page_is_roff_listing_the_subcommands() {
    let (code, stdout, stderr) = gauntlet(&["man"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(".TH gauntlet 1"), "{stdout}");
    assert!(stdout.contains("capacity"), "{stdout}");
}

//! What an editor needs from plans: every plan in `plans/` and every starter `gauntlet init`
//! writes is TOML 1.0 (what taplo and Even Better TOML read: no newline inside an inline
//! table), checked by a strict TOML 1.0 parser (Python's `tomllib`); `gauntlet schema` prints
//! the schemas `docs/` holds; and a starter's first line is the `#:schema` directive.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

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

fn example_plans() -> Vec<PathBuf> {
    let mut plans: Vec<PathBuf> = std::fs::read_dir(repo().join("plans"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    plans.sort();
    assert!(plans.len() >= 7, "{plans:?}");
    plans
}

/// The line of every newline inside an inline table (`{ ... }`), strings and comments
/// skipped: TOML 1.0 allows none there, even inside an array the table holds, as taplo reads
/// it ("newline is not allowed in an inline table").
fn newlines_in_inline_tables(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut open: Vec<char> = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '"' | '\'' => {
                // Multi-line strings do not occur in plans; a basic or literal one ends on
                // its line.
                let mut escaped = false;
                for s in chars.by_ref() {
                    if s == c && !escaped {
                        break;
                    }
                    escaped = c == '"' && s == '\\' && !escaped;
                }
            }
            '{' | '[' => open.push(c),
            '}' | ']' => {
                open.pop();
            }
            '\n' => {
                if open.contains(&'{') {
                    found.push(line);
                }
                line += 1;
            }
            _ => {}
        }
    }
    found
}

/// Parses `file` with Python's `tomllib` (TOML 1.0); `None` when no such Python is here.
fn tomllib(file: &Path) -> Option<Result<(), String>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import tomllib,sys; tomllib.load(open(sys.argv[1],'rb'))",
        ])
        .arg(file)
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'tomllib'") {
        return None;
    }
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(stderr.into_owned())
    })
}

/// Every example plan, and every starter as `gauntlet init` writes it.
fn plans_and_starters(dir: &Path) -> Vec<PathBuf> {
    let (code, list, stderr) = gauntlet(&["init", "--list"]);
    assert_eq!(code, 0, "{stderr}");
    let mut files = example_plans();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let file = dir.join(format!("{name}.toml"));
        let (code, _, stderr) = gauntlet(&["init", "--from", name, file.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {stderr}");
        files.push(file);
    }
    assert!(files.len() >= 13, "{files:?}");
    files
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gauntlet-editor-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_plan_and_starter_is_toml_1_0() {
    let dir = scratch("toml");
    let files = plans_and_starters(&dir);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let lines = newlines_in_inline_tables(&text);
        assert!(
            lines.is_empty(),
            "{}: a newline inside an inline table at line(s) {lines:?} (not TOML 1.0)",
            file.display()
        );
    }
    let mut parsed = 0;
    for file in &files {
        match tomllib(file) {
            None => {
                eprintln!("skipped the TOML 1.0 parser: no python3 with tomllib (3.11+) here");
                break;
            }
            Some(Err(e)) => panic!("{}: not TOML 1.0: {e}", file.display()),
            Some(Ok(())) => parsed += 1,
        }
    }
    assert!(parsed == 0 || parsed == files.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_scanner_finds_what_toml_1_0_refuses() {
    let multi = "a = { b = 1,\n c = 2 }\nd = [\n  { e = \"{\" },\n]\n";
    assert_eq!(newlines_in_inline_tables(multi), [1]);
    let nested = "steps = [\n  { x = { y = [\n 1 ] } },\n]\n# {\n";
    assert_eq!(newlines_in_inline_tables(nested), [2]);
}

#[test]
fn schema_prints_the_schemas_docs_hold() {
    for (which, file) in [
        (&["schema"][..], "plan.schema.json"),
        (&["schema", "plan"][..], "plan.schema.json"),
        (&["schema", "report"][..], "report.schema.json"),
        (&["schema", "compare"][..], "compare.schema.json"),
    ] {
        let (code, stdout, stderr) = gauntlet(which);
        assert_eq!(code, 0, "{which:?}: {stderr}");
        let doc = std::fs::read_to_string(repo().join("docs").join(file)).unwrap();
        assert!(stdout == doc, "{which:?} differs from docs/{file}");
    }
    let (code, _, stderr) = gauntlet(&["schema", "plans"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn a_starter_names_its_schema_on_its_first_line_and_says_how_to_write_it() {
    let dir = scratch("init");
    let file = dir.join("plan.toml");
    let (code, stdout, stderr) = gauntlet(&["init", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().next(), Some("#:schema ./plan.schema.json"));
    assert!(
        text.contains("gauntlet schema plan > plan.schema.json"),
        "{text}"
    );
    let schema = dir.join("plan.schema.json");
    assert!(
        stdout.contains(&format!("gauntlet schema plan > {}", schema.display())),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

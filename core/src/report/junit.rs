//! `junit.xml`: one test case per scenario and check, and one per threshold, so CI systems
//! show gauntlet's results natively; failures carry their category, the findings about it
//! (why those sessions failed) and a raw sample.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Report;

/// Escapes text for XML attributes and content.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

struct Case {
    name: String,
    failure: Option<(String, String, String)>,
    /// Shown as the case's output (a passing case's figures).
    note: Option<String>,
}

/// Renders `junit.xml`.
pub fn render(r: &Report) -> String {
    // Suites: one per scenario (its checks), "isolation" and "thresholds".
    let mut suites: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    for (check, [run, failed]) in &r.checks {
        let (suite, step) = match check.split_once('/') {
            Some((scenario, step)) if !check.starts_with("isolation:") => {
                (scenario.to_owned(), step.to_owned())
            }
            _ => ("isolation".to_owned(), check.clone()),
        };
        let never = r.never_evaluated.contains(check).then(|| {
            (
                "never_evaluated".to_owned(),
                "never evaluated in the whole run (0 evaluations): the verdict is an error"
                    .to_owned(),
                String::new(),
            )
        });
        let failure = never.or_else(|| {
            (*failed > 0).then(|| {
                let patterns: Vec<_> = r
                    .failures
                    .iter()
                    .filter(|f| f.step == step && (f.scenario == suite || suite == "isolation"))
                    .collect();
                let categories: Vec<String> = patterns
                    .iter()
                    .map(|f| format!("{} x{}", f.category, f.count))
                    .collect();
                let kind = patterns
                    .first()
                    .map_or("check_failed".to_owned(), |f| f.category.to_string());
                let message = format!("{failed} of {run} failed; {}", categories.join(", "));
                // Why they failed, when the report found it, then a raw sample of each.
                let found = r
                    .findings
                    .iter()
                    .filter(|f| patterns.iter().any(|p| p.category == f.category))
                    .map(|f| format!("finding: {}", f.text));
                let sample = found
                    .chain(patterns.iter().filter_map(|f| f.samples.first()).cloned())
                    .collect::<Vec<_>>()
                    .join("\n");
                (kind, message, sample)
            })
        });
        suites.entry(suite).or_default().push(Case {
            name: step,
            failure,
            note: Some(format!("evaluated {run}, failed {failed}")),
        });
    }
    let thresholds = r
        .thresholds
        .iter()
        .map(|t| Case {
            name: t.expr.clone(),
            failure: (!t.pass).then(|| ("threshold".to_owned(), t.reason.clone(), String::new())),
            note: None,
        })
        .collect();
    suites.insert("thresholds".into(), thresholds);
    if !r.classifiers.is_empty() {
        // A classifier that matched nothing is shown, not failed: its failure did not happen.
        let cases = r
            .classifiers
            .iter()
            .map(|(category, n)| Case {
                name: category.clone(),
                failure: None,
                note: Some(format!("matched {n} failed sessions")),
            })
            .collect();
        suites.insert("classifiers".into(), cases);
    }
    let total: usize = suites.values().map(Vec::len).sum();
    let failures: usize = suites
        .values()
        .flatten()
        .filter(|c| c.failure.is_some())
        .count();
    let mut out = String::new();
    let _ = writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(
        out,
        "<testsuites name=\"gauntlet {}\" tests=\"{total}\" failures=\"{failures}\" time=\"{:.3}\">",
        esc(&r.plan.name),
        r.duration_s
    );
    for (suite, cases) in &suites {
        let failed = cases.iter().filter(|c| c.failure.is_some()).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}/{}\" tests=\"{}\" failures=\"{failed}\">",
            esc(&r.plan.name),
            esc(suite),
            cases.len()
        );
        for c in cases {
            let classname = format!("{}.{}", r.plan.name, suite);
            match &c.failure {
                None => match &c.note {
                    None => {
                        let _ = writeln!(
                            out,
                            "    <testcase classname=\"{}\" name=\"{}\"/>",
                            esc(&classname),
                            esc(&c.name)
                        );
                    }
                    Some(note) => {
                        let _ = writeln!(
                            out,
                            "    <testcase classname=\"{}\" name=\"{}\"><system-out>{}</system-out></testcase>",
                            esc(&classname),
                            esc(&c.name),
                            esc(note)
                        );
                    }
                },
                Some((kind, message, sample)) => {
                    let _ = writeln!(
                        out,
                        "    <testcase classname=\"{}\" name=\"{}\">",
                        esc(&classname),
                        esc(&c.name)
                    );
                    let _ = writeln!(
                        out,
                        "      <failure type=\"{}\" message=\"{}\">{}</failure>",
                        esc(kind),
                        esc(message),
                        esc(sample)
                    );
                    let _ = writeln!(out, "    </testcase>");
                }
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    let _ = writeln!(out, "</testsuites>");
    out
}

//! `report.md`: the report for a person: the verdict and why, a table per scenario, failure
//! patterns, findings (why sessions failed), thresholds, workers, progress against the
//! previous run, and every latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Report;
use crate::compare::Comparison;

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Escapes a cell of a Markdown table (pipes and newlines), cut to `max` characters.
fn cell(text: &str, max: usize) -> String {
    let mut s: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        s.push('…');
    }
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// Text from a target or a peer as a code span in a table cell, cut to `max` characters: it
/// shows as written and can neither end the span (the fence is longer than any run of
/// backticks inside) nor make links, images or HTML.
pub fn code(text: &str, max: usize) -> String {
    let text = cell(text, max);
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    // A span that starts or ends with a backtick needs a space inside its fence.
    if text.starts_with('`') || text.ends_with('`') {
        format!("{fence} {text} {fence}")
    } else {
        format!("{fence}{text}{fence}")
    }
}

/// Prose that may carry a peer's words (a verdict reason naming a worker's error): the
/// characters that would make links, images, HTML or emphasis are escaped; backticks stay, so
/// the reason's own code spans still show.
pub fn prose(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' | '>' | '[' | ']' | '!' | '*' | '_' | '\\' | '|' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Sessions, passed and failed per scenario: finished sessions from `session.<scenario>`,
/// failures from the failure patterns.
pub fn scenario_table(r: &Report) -> BTreeMap<String, (u64, u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for (name, m) in &r.metrics {
        if let Some(scenario) = name.strip_prefix("session.") {
            out.entry(scenario.to_owned()).or_default().0 = m.count;
        }
    }
    for f in &r.failures {
        out.entry(f.scenario.clone()).or_default().2 += f.count;
    }
    for v in out.values_mut() {
        v.1 = v.0.saturating_sub(v.2);
    }
    out
}

/// Renders `report.md`; `previous` adds "progress vs previous cycle".
pub fn render(r: &Report, previous: Option<&Comparison>) -> String {
    let mut out = String::new();
    let t = &r.totals;
    let finished = t.passed + t.failed;
    let rate = if finished > 0 {
        100.0 * t.passed as f64 / finished as f64
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "# gauntlet run `{}`: {}\n",
        r.run_id,
        r.verdict.as_str().to_uppercase()
    );
    let _ = writeln!(
        out,
        "**Verdict: {}.** {}\n",
        r.verdict.as_str(),
        prose(&r.verdict_reason)
    );
    let _ = writeln!(
        out,
        "| plan | started | duration | sessions | passed | failed | interrupted | pass rate | load delivered |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| `{}` | {} | {:.1} s | {} | {} | {} | {} | {rate:.1} % | {} |\n",
        r.plan.name,
        r.started_at,
        r.duration_s,
        t.sessions,
        t.passed,
        t.failed,
        t.interrupted,
        super::percent(r.delivered)
    );
    if !r.overrides.is_empty() {
        let flags: Vec<String> = r.overrides.iter().map(|o| code(o, 200)).collect();
        let _ = writeln!(
            out,
            "Overridden on the command line: {}.\n",
            flags.join(", ")
        );
    }
    if t.unknown > 0 {
        let _ = writeln!(
            out,
            "Sessions of unknown outcome (ran on lost workers, never reported): up to **{}**.\n",
            t.unknown
        );
    }
    if t.dropped > 0 {
        let _ = writeln!(out, "Dropped arrivals (no free VU): **{}**.\n", t.dropped);
    }

    let _ = writeln!(out, "## Scenarios\n");
    let _ = writeln!(
        out,
        "| scenario | sessions | passed | failed | session p50 | session p99 |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for (scenario, (sessions, passed, failed)) in scenario_table(r) {
        let m = r.metrics.get(&format!("session.{scenario}"));
        let (p50, p99) = m.map_or(("-".into(), "-".into()), |m| (ms(m.p50_us), ms(m.p99_us)));
        let _ = writeln!(
            out,
            "| `{scenario}` | {sessions} | {passed} | {failed} | {p50} | {p99} |"
        );
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Failure patterns\n");
    if r.failures.is_empty() {
        let _ = writeln!(out, "No session failed.\n");
    } else {
        let _ = writeln!(
            out,
            "| category | detail | where | sessions | first seen | last seen | sample |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---:|---|");
        for f in &r.failures {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} |",
                f.category,
                if f.detail.is_empty() {
                    String::new()
                } else {
                    code(&f.detail, 60)
                },
                code(&format!("{}/{}", f.scenario, f.step), 120),
                f.count,
                secs(f.first_seen_ms),
                secs(f.last_seen_ms),
                code(f.samples.first().map(String::as_str).unwrap_or("-"), 160)
            );
        }
        let _ = writeln!(out);
    }

    if !r.findings.is_empty() {
        let _ = writeln!(out, "## Findings\n");
        for f in &r.findings {
            let _ = writeln!(out, "- {}", prose(&f.text));
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## Checks\n");
    if r.checks.is_empty() {
        let _ = writeln!(out, "The plan declares no check.\n");
    } else {
        let _ = writeln!(out, "| check | evaluated | failed | note |");
        let _ = writeln!(out, "|---|---:|---:|---|");
        for (name, [run, failed]) in &r.checks {
            let note = if r.never_evaluated.contains(name) {
                "**never evaluated**"
            } else if *run == 0 {
                "not evaluated (optional or a step that checks nothing)"
            } else {
                ""
            };
            let _ = writeln!(out, "| {} | {run} | {failed} | {note} |", code(name, 120));
        }
        let _ = writeln!(out);
    }
    if !r.classifiers.is_empty() {
        let _ = writeln!(out, "## Classifiers\n");
        let _ = writeln!(out, "| category | failed sessions matched |");
        let _ = writeln!(out, "|---|---:|");
        for (category, n) in &r.classifiers {
            let note = if *n == 0 { " (matched nothing)" } else { "" };
            let _ = writeln!(out, "| `{category}` | {n}{note} |");
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## Thresholds\n");
    let _ = writeln!(out, "| threshold | observed | result |");
    let _ = writeln!(out, "|---|---:|---|");
    for th in &r.thresholds {
        let observed = match th.observed {
            None => "no samples".to_owned(),
            Some(v) => super::show(v, &th.unit),
        };
        let result = if th.pass { "pass" } else { "**FAIL**" };
        let _ = writeln!(out, "| `{}` | {observed} | {result} |", th.expr);
    }
    let _ = writeln!(out);

    if !r.workers.is_empty() {
        let _ = writeln!(out, "## Workers\n");
        let _ = writeln!(out, "| worker | share | sessions | status |");
        let _ = writeln!(out, "|---|---:|---:|---|");
        for w in &r.workers {
            let _ = writeln!(
                out,
                "| {} ({}) | {:.1} % | {} | {} |",
                prose(&w.name),
                code(&w.id, 80),
                100.0 * w.share,
                w.sessions,
                prose(&w.status())
            );
        }
        let _ = writeln!(out);
    }

    if let Some(c) = previous {
        let _ = writeln!(out, "## Progress vs previous cycle\n");
        out.push_str(&c.to_markdown());
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## Latency\n");
    let _ = writeln!(out, "| metric | count | p50 | p90 | p99 | p99.9 | max |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, m) in &r.metrics {
        // A name that needs quoting is followed by the form `/metrics` and file names use.
        let safe = if m.safe_name.is_empty() || m.safe_name == *name {
            String::new()
        } else {
            format!(" (safe: `{}`)", m.safe_name)
        };
        let _ = writeln!(
            out,
            "| {}{safe} | {} | {} | {} | {} | {} | {} |",
            code(name, 200),
            m.count,
            ms(m.p50_us),
            ms(m.p90_us),
            ms(m.p99_us),
            ms(m.p999_us),
            ms(m.max_us)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_stays_inside_its_code_span() {
        assert_eq!(code("plain", 10), "`plain`");
        assert_eq!(code("a`b", 10), "``a`b``");
        assert_eq!(code("`x``", 10), "``` `x`` ```");
        assert_eq!(code("a|b\nc", 10), "`a\\|b c`");
        let hostile = "x` ![t](http://evil/p.png) <img src=x> `y";
        let c = code(hostile, 200);
        assert!(c.starts_with("``") && c.ends_with("``"), "{c}");
        assert_eq!(
            prose("worker <b>![x](http://e)</b>"),
            "worker \\<b\\>\\!\\[x\\](http://e)\\</b\\>"
        );
    }
}

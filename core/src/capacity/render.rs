//! The capacity search's files: `capacity.json` (the [`Capacity`] as data), `report.md` and
//! `report.html` (the answer, what broke it, the step table and the charts of latency
//! percentiles, failure rate and sessions in flight against load) and `junit.xml` (one test
//! case per step, failed when it did not hold).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Capacity, Outcome, Step, num, step_dir};
use crate::report::html::{STYLE, Series, esc, line_chart};
use crate::report::markdown::{code, prose};

/// Writes capacity.json, report.md, report.html and junit.xml into `dir`; returns the path of
/// report.md.
pub fn write(dir: &Path, c: &Capacity) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(c).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("capacity.json"), json + "\n")?;
    std::fs::write(dir.join("report.html"), html(c))?;
    std::fs::write(dir.join("junit.xml"), junit(c))?;
    let md = dir.join("report.md");
    std::fs::write(&md, markdown(c))?;
    Ok(md)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1} ms"))
}

fn pct(v: f64) -> String {
    format!("{:.2} %", 100.0 * v)
}

fn categories(s: &Step) -> String {
    s.failures
        .iter()
        .take(3)
        .map(|(c, n)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The steps sorted by load, for the charts.
fn by_load(c: &Capacity) -> Vec<&Step> {
    let mut v: Vec<&Step> = c.steps.iter().collect();
    v.sort_by(|a, b| a.load.total_cmp(&b.load).then(a.index.cmp(&b.index)));
    v
}

/// The charts: latency percentiles, failure rate and sessions in flight against load.
pub fn charts(c: &Capacity) -> Vec<String> {
    let steps = by_load(c);
    let x = format!("load ({})", c.unit);
    let line = |name: &str, f: &dyn Fn(&Step) -> Option<f64>| Series {
        name: name.into(),
        points: steps
            .iter()
            .filter_map(|s| f(s).map(|y| (s.load, y)))
            .collect(),
    };
    vec![
        line_chart(
            "Session latency against load",
            &x,
            "ms",
            &[
                line("p50", &|s| s.p50_ms),
                line("p95", &|s| s.p95_ms),
                line("p99", &|s| s.p99_ms),
            ],
            false,
        ),
        line_chart(
            "Failed sessions against load",
            &x,
            "% of finished sessions",
            &[line("failure rate", &|s| Some(100.0 * s.failure_rate))],
            false,
        ),
        line_chart(
            "Sessions in flight against load",
            &x,
            "sessions",
            &[
                line("at the step's start", &|s| Some(s.in_flight.0)),
                line("at its end", &|s| Some(s.in_flight.1)),
            ],
            false,
        ),
    ]
}

/// report.md of a capacity search.
pub fn markdown(c: &Capacity) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# gauntlet capacity of `{}`\n",
        c.plan.replace('`', "'")
    );
    let _ = writeln!(out, "**{}.**\n", capitalised(&c.answer));
    let _ = writeln!(
        out,
        "Searched {} to {} {} in {} steps; stopped because {}.\n",
        num(c.from),
        num(c.to),
        c.unit,
        c.steps.len(),
        c.stopped
    );
    if let Some(b) = &c.broke {
        let _ = writeln!(out, "## What broke it at {} {}\n", num(b.load), c.unit);
        for w in &b.why {
            let _ = writeln!(out, "- {}", prose(w));
        }
        if !b.failures.is_empty() {
            let _ = writeln!(
                out,
                "- failed sessions by category: {}",
                b.failures
                    .iter()
                    .map(|(c, n)| format!("{} {n}", code(c, 80)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for f in &b.findings {
            let _ = writeln!(out, "- finding: {}", prose(f));
        }
        let _ = writeln!(
            out,
            "\nIts run's own report: [{dir}/report.md]({dir}/report.md) (run `{}`).\n",
            b.run_id,
            dir = step_dir(b.index, b.load)
        );
    }
    let _ = writeln!(out, "## Steps\n");
    let _ = writeln!(
        out,
        "| # | load ({}) | result | sessions | failed | failure rate | throughput (/s) | p50 | p95 | p99 | in flight (start -> end) | why | run |",
        c.unit
    );
    let _ = writeln!(
        out,
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for s in &c.steps {
        let result = if s.retest {
            format!("{} (re-test)", s.outcome.as_str())
        } else {
            s.outcome.as_str().to_owned()
        };
        let mut why = s.why.join("; ");
        let cats = categories(s);
        if !cats.is_empty() {
            why = format!("{why} [{cats}]");
        }
        let _ = writeln!(
            out,
            "| {} | {} | {result} | {} | {} | {} | {:.1} | {} | {} | {} | {:.1} -> {:.1} | {} | `{}` |",
            s.index,
            num(s.load),
            s.sessions,
            s.failed,
            pct(s.failure_rate),
            s.throughput,
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            s.in_flight.0,
            s.in_flight.1,
            prose(&why),
            s.run_id
        );
    }
    let _ = writeln!(
        out,
        "\nThe charts (latency, failure rate and sessions in flight against load) are in report.html."
    );
    out
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// report.html of a capacity search: one self-contained page.
pub fn html(c: &Capacity) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gauntlet capacity of {}</title><style>{STYLE}</style></head><body>",
        esc(&c.plan)
    );
    let _ = write!(
        out,
        "<h1>gauntlet capacity of <code>{}</code></h1><p><strong>{}.</strong></p><p>Searched {} to {} {} in {} steps; stopped because {}.</p>",
        esc(&c.plan),
        esc(&capitalised(&c.answer)),
        num(c.from),
        num(c.to),
        esc(&c.unit),
        c.steps.len(),
        esc(&c.stopped)
    );
    out.push_str("<h2>Charts</h2>");
    for chart in charts(c) {
        out.push_str(&chart);
    }
    if let Some(b) = &c.broke {
        let _ = write!(
            out,
            "<h2>What broke it at {} {}</h2><ul>",
            num(b.load),
            esc(&c.unit)
        );
        for w in &b.why {
            let _ = write!(out, "<li>{}</li>", esc(w));
        }
        if !b.failures.is_empty() {
            let _ = write!(
                out,
                "<li>failed sessions by category: {}</li>",
                esc(&categories(b))
            );
        }
        for f in &b.findings {
            let _ = write!(out, "<li>finding: {}</li>", esc(f));
        }
        out.push_str("</ul>");
    }
    let _ = write!(
        out,
        "<h2>Steps</h2><table><tr><th>#</th><th>load ({})</th><th>result</th><th>sessions</th><th>failed</th><th>failure rate</th><th>throughput (/s)</th><th>p50</th><th>p95</th><th>p99</th><th>in flight</th><th>why</th><th>run</th></tr>",
        esc(&c.unit)
    );
    for s in &c.steps {
        let class = match s.outcome {
            Outcome::Held => "pass",
            Outcome::Broke => "fail",
            Outcome::Inconclusive => "error",
        };
        let _ = write!(
            out,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"{class}\">{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1} &rarr; {:.1}</td><td>{}</td><td><code>{}</code></td></tr>",
            s.index,
            num(s.load),
            s.outcome.as_str(),
            if s.retest { " (re-test)" } else { "" },
            s.sessions,
            s.failed,
            pct(s.failure_rate),
            s.throughput,
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.p99_ms),
            s.in_flight.0,
            s.in_flight.1,
            esc(&s.why.join("; ")),
            esc(&s.run_id)
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

/// junit.xml: one test case per step, failed when it did not hold.
pub fn junit(c: &Capacity) -> String {
    let failures = c
        .steps
        .iter()
        .filter(|s| s.outcome != Outcome::Held)
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"gauntlet capacity {}\" tests=\"{}\" failures=\"{failures}\">",
        esc(&c.plan),
        c.steps.len()
    );
    for s in &c.steps {
        let _ = write!(
            out,
            "  <testcase classname=\"capacity\" name=\"step {} at {} {}{}\">",
            s.index,
            num(s.load),
            esc(&c.unit),
            if s.retest { " (re-test)" } else { "" }
        );
        if s.outcome != Outcome::Held {
            let _ = write!(
                out,
                "<failure message=\"{}\">{}</failure>",
                esc(s.outcome.as_str()),
                esc(&s.why.join("; "))
            );
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("</testsuite>\n");
    out
}

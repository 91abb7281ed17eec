//! `report.html`: one self-contained page (inline CSS and SVG, no script, no font or network
//! fetch) with the Markdown report's content and charts: sessions and failures per second by
//! category, the load (sessions in flight) over time, latency percentiles over time per main
//! metric, the latency distribution (a
//! percentile spectrum on a log scale) and each worker's throughput. The live page on the
//! coordinator reuses [`charts`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{IntervalReport, Report};
use crate::compare::Comparison;

/// Chart colours (colour-blind friendly, Okabe-Ito).
const COLOURS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
];

/// Escapes text for HTML, in text and in quoted attributes alike (`& < > " ' /`).
pub fn esc(s: &str) -> String {
    html_escape::encode_safe(s).into_owned()
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend.
    pub name: String,
    /// Points `(x, y)`.
    pub points: Vec<(f64, f64)>,
}

/// A line chart as an SVG element. `log_x` plots x on a log scale (for percentile spectra,
/// where x is `1 / (1 - percentile)`).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> String {
    const W: f64 = 720.0;
    const H: f64 = 260.0;
    const L: f64 = 64.0;
    const R: f64 = 160.0;
    const T: f64 = 28.0;
    const B: f64 = 40.0;
    let fx = |x: f64| if log_x { x.max(1.0).log10() } else { x };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(x, y)| (fx(*x), *y)))
        .collect();
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let _ = write!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>"
    );
    let _ = write!(
        out,
        "<text x=\"{L}\" y=\"18\" class=\"title\">{}</text>",
        esc(title)
    );
    if all.is_empty() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" class=\"empty\">no data</text></svg>",
            W / 2.0 - 30.0,
            H / 2.0
        );
        return out;
    }
    let (mut x0, mut x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    // The y axis from 0 to the first 1-2-5 tick at or above the largest value.
    let y_max = all.iter().fold(0.0f64, |m, (_, y)| m.max(*y));
    let y_ticks = ticks(0.0, if y_max > 0.0 { y_max } else { 1.0 });
    let y1 = y_ticks.last().copied().unwrap_or(1.0).max(1e-9);
    if x1 <= x0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let px = |x: f64| L + (fx(x) - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - y / y1 * (H - T - B);
    // Axes and grid.
    let _ = write!(
        out,
        "<line x1=\"{L}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"axis\"/>",
        H - B,
        W - R,
        H - B
    );
    let _ = write!(
        out,
        "<line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{}\" class=\"axis\"/>",
        H - B
    );
    for &y in &y_ticks {
        let _ = write!(
            out,
            "<line x1=\"{L}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text>",
            W - R,
            L - 6.0,
            py(y) + 4.0,
            short(y),
            py = py(y)
        );
    }
    if log_x {
        for (label, x) in [
            ("0%", 1.0),
            ("90%", 10.0),
            ("99%", 100.0),
            ("99.9%", 1000.0),
            ("99.99%", 10000.0),
            ("99.999%", 100000.0),
        ] {
            if fx(x) >= x0 - 1e-9 && fx(x) <= x1 + 1e-9 {
                let _ = write!(
                    out,
                    "<text x=\"{:.1}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">{label}</text>",
                    px(x),
                    H - B + 16.0
                );
            }
        }
    } else {
        for x in ticks(x0, x1)
            .into_iter()
            .filter(|x| *x >= x0 - 1e-9 && *x <= x1 + 1e-9)
        {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
                px(x),
                H - B + 16.0,
                short(x)
            );
        }
    }
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{}\" class=\"label\" text-anchor=\"middle\">{}</text>",
        (L + W - R) / 2.0,
        H - 6.0,
        esc(x_label)
    );
    let _ = write!(
        out,
        "<text x=\"14\" y=\"{}\" class=\"label\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>",
        H / 2.0,
        H / 2.0,
        esc(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        // A dash pattern per line as well as a colour: lines that coincide stay apart.
        let dash = DASHES[i % DASHES.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        if points.len() == 1 {
            let (x, y) = s.points[0];
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
                px(x),
                py(y)
            );
        } else {
            let _ = write!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\" points=\"{}\"/>",
                points.join(" ")
            );
        }
        let ly = T + 14.0 + i as f64 * 16.0;
        let _ = write!(
            out,
            "<line x1=\"{}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"3\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{:.1}\" class=\"legend\">{}</text>",
            W - R + 8.0,
            ly - 4.0,
            W - R + 30.0,
            ly - 4.0,
            W - R + 34.0,
            ly,
            esc(&s.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// Dash patterns of the lines, by series (solid first).
const DASHES: [&str; 4] = ["none", "7 3", "2 3", "9 3 2 3"];

/// Ticks on 1-2-5 values (1, 2, 5, 10, 20...) covering `[lo, hi]` in about five steps: the
/// first at or below `lo`, the last at or above `hi`.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    (0..=((last - first) as usize).min(50))
        .map(|k| {
            let v = (first + k as f64) * step;
            // 0.30000000000000004 -> 0.3
            (v / step).round() * step
        })
        .collect()
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 || v == 0.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        // 2.5, 0.05: as many decimals as the value needs, at most 3.
        let text = format!("{v:.3}");
        text.trim_end_matches('0').to_owned()
    }
}

/// `value` per second of each interval, at the interval's end. The run ended inside its last
/// interval: that point is at the run's end and its rate over the interval's real length, so a
/// chart does not end in a false cliff.
fn per_second(r: &Report, value: &dyn Fn(&IntervalReport) -> u64) -> Vec<(f64, f64)> {
    let full_ms = r.intervals.first().map_or(1000, |i| i.at_ms.max(1));
    let end_ms = if r.duration_s > 0.0 {
        (r.duration_s * 1000.0) as u64
    } else {
        u64::MAX
    };
    let mut prev = 0u64;
    r.intervals
        .iter()
        .map(|i| {
            let end = i.at_ms.min(end_ms).max(prev);
            // Less than a tenth of an interval: too short to scale honestly, drawn as whole.
            let (at, length) = if end - prev >= full_ms / 10 && end - prev > 0 {
                (end, end - prev)
            } else {
                (i.at_ms, full_ms)
            };
            prev = i.at_ms;
            (at as f64 / 1000.0, value(i) as f64 * 1000.0 / length as f64)
        })
        .collect()
}

/// The report's charts, each an SVG element.
pub fn charts(r: &Report) -> Vec<String> {
    let per_second = |value: &dyn Fn(&IntervalReport) -> u64| per_second(r, value);
    let t = |at_ms: u64| at_ms as f64 / 1000.0;
    let mut out = Vec::new();
    // Sessions and failures per second, failures by category.
    let mut rate = vec![Series {
        name: "sessions/s".into(),
        points: per_second(&|i| i.sessions),
    }];
    let categories: std::collections::BTreeSet<&String> =
        r.intervals.iter().flat_map(|i| i.failures.keys()).collect();
    for c in categories {
        rate.push(Series {
            name: format!("{c}/s"),
            points: per_second(&|i| i.failures.get(c).copied().unwrap_or(0)),
        });
    }
    out.push(line_chart(
        "Sessions and failures per second",
        "seconds into the run",
        "per second",
        &rate,
        false,
    ));
    // The load itself, next to the latency it produced: VUs in a session at each interval's
    // end (in the open model, the sessions in flight).
    out.push(line_chart(
        "Load: sessions in flight (VUs in a session)",
        "seconds into the run",
        "sessions",
        &[Series {
            name: "in flight".into(),
            points: r
                .intervals
                .iter()
                .map(|i| (t(i.at_ms), i.active_vus as f64))
                .collect(),
        }],
        false,
    ));
    // Latency percentiles over time, per main metric.
    let metrics: std::collections::BTreeSet<&String> =
        r.intervals.iter().flat_map(|i| i.latency.keys()).collect();
    for m in metrics {
        let series: Vec<Series> = ["p50", "p90", "p99", "max"]
            .iter()
            .enumerate()
            .map(|(k, name)| Series {
                name: (*name).into(),
                points: r
                    .intervals
                    .iter()
                    .filter_map(|i| i.latency.get(m).map(|l| (t(i.at_ms), l[k] as f64 / 1000.0)))
                    .collect(),
            })
            .collect();
        out.push(line_chart(
            &format!("{m}: latency over time"),
            "seconds into the run",
            "ms",
            &series,
            false,
        ));
    }
    // Latency distribution: percentile spectrum on a log scale.
    let spectrum: Vec<Series> = ["session", "ws.handshake", "ws.confirmation"]
        .iter()
        .filter_map(|m| {
            let metric = r.metrics.get(*m)?;
            Some(Series {
                name: (*m).into(),
                points: metric
                    .spectrum
                    .iter()
                    .filter(|(p, _)| *p < 100.0)
                    .map(|(p, v)| (1.0 / (1.0 - p / 100.0), *v as f64 / 1000.0))
                    .collect(),
            })
        })
        .collect();
    out.push(line_chart(
        "Latency distribution (percentile spectrum)",
        "percentile",
        "ms",
        &spectrum,
        true,
    ));
    // Per-worker throughput.
    let workers: std::collections::BTreeSet<&String> = r
        .intervals
        .iter()
        .flat_map(|i| i.per_worker.keys())
        .collect();
    let names: BTreeMap<&str, &str> = r
        .workers
        .iter()
        .map(|w| (w.id.as_str(), w.name.as_str()))
        .collect();
    let per_worker: Vec<Series> = workers
        .iter()
        .map(|w| Series {
            name: names
                .get(w.as_str())
                .map_or((*w).clone(), |n| (*n).to_owned()),
            points: per_second(&|i| i.per_worker.get(*w).copied().unwrap_or(0)),
        })
        .collect();
    out.push(line_chart(
        "Sessions per second by worker",
        "seconds into the run",
        "sessions/s",
        &per_worker,
        false,
    ));
    out
}

/// The page's style sheet.
pub const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1a1a1a;max-width:1100px}\
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f4f4f4}.num{text-align:right}.pass{color:#1b7f3b;font-weight:bold}.fail{color:#b00020;font-weight:bold}.error{color:#8a4b00;font-weight:bold}\
code{font-size:12px;word-break:break-all}.chart{display:block;margin:12px 0;border:1px solid #eee}\
.chart .title{font-size:14px;font-weight:bold}.chart .tick{font-size:10px;fill:#555}.chart .label{font-size:11px;fill:#333}\
.chart .legend{font-size:11px}.chart .axis{stroke:#333;stroke-width:1}.chart .grid{stroke:#eee;stroke-width:1}.chart .empty{fill:#999}";

/// Renders `report.html`.
pub fn render(r: &Report, previous: Option<&Comparison>) -> String {
    let mut out = String::new();
    let verdict = r.verdict.as_str();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gauntlet run {} ({verdict})</title><style>{STYLE}</style></head><body>",
        esc(&r.run_id)
    );
    let _ = write!(
        out,
        "<h1>gauntlet run <code>{}</code>: <span class=\"{verdict}\">{}</span></h1>",
        esc(&r.run_id),
        verdict.to_uppercase()
    );
    let _ = write!(
        out,
        "<p><b>Verdict: {verdict}.</b> {}</p>",
        esc(&r.verdict_reason)
    );
    let t = &r.totals;
    let finished = t.passed + t.failed;
    let rate = if finished > 0 {
        100.0 * t.passed as f64 / finished as f64
    } else {
        0.0
    };
    let _ = write!(
        out,
        "<table><tr><th>plan</th><th>started</th><th>duration</th><th>sessions</th><th>passed</th><th>failed</th><th>interrupted</th><th>dropped</th><th>unknown</th><th>pass rate</th><th>load delivered</th></tr>\
         <tr><td><code>{}</code></td><td>{}</td><td class=\"num\">{:.1} s</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{rate:.1} %</td><td class=\"num\">{}</td></tr></table>",
        esc(&r.plan.name),
        esc(&r.started_at),
        r.duration_s,
        t.sessions,
        t.passed,
        t.failed,
        t.interrupted,
        t.dropped,
        t.unknown,
        super::percent(r.delivered)
    );
    if !r.overrides.is_empty() {
        let flags: Vec<String> = r
            .overrides
            .iter()
            .map(|o| format!("<code>{}</code>", esc(o)))
            .collect();
        let _ = write!(
            out,
            "<p>Overridden on the command line: {}.</p>",
            flags.join(", ")
        );
    }
    out.push_str("<h2>Charts</h2>");
    for chart in charts(r) {
        out.push_str(&chart);
    }
    out.push_str("<h2>Scenarios</h2><table><tr><th>scenario</th><th>sessions</th><th>passed</th><th>failed</th><th>session p50</th><th>session p99</th></tr>");
    for (scenario, (sessions, passed, failed)) in super::markdown::scenario_table(r) {
        let m = r.metrics.get(&format!("session.{scenario}"));
        let (p50, p99) = m.map_or(("-".into(), "-".into()), |m| (ms(m.p50_us), ms(m.p99_us)));
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td class=\"num\">{sessions}</td><td class=\"num\">{passed}</td><td class=\"num\">{failed}</td><td class=\"num\">{p50}</td><td class=\"num\">{p99}</td></tr>",
            esc(&scenario)
        );
    }
    out.push_str("</table><h2>Failure patterns</h2>");
    if r.failures.is_empty() {
        out.push_str("<p>No session failed.</p>");
    } else {
        out.push_str("<table><tr><th>category</th><th>detail</th><th>where</th><th>sessions</th><th>first seen</th><th>last seen</th><th>sample</th></tr>");
        for f in &r.failures {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td><code>{}/{}</code></td><td class=\"num\">{}</td><td class=\"num\">{:.1} s</td><td class=\"num\">{:.1} s</td><td><code>{}</code></td></tr>",
                esc(f.category.as_str()),
                esc(&f.detail),
                esc(&f.scenario),
                esc(&f.step),
                f.count,
                f.first_seen_ms as f64 / 1000.0,
                f.last_seen_ms as f64 / 1000.0,
                esc(f.samples.first().map(String::as_str).unwrap_or("-"))
            );
        }
        out.push_str("</table>");
    }
    if !r.findings.is_empty() {
        out.push_str("<h2>Findings</h2><ul>");
        for f in &r.findings {
            let _ = write!(out, "<li>{}</li>", esc(&f.text));
        }
        out.push_str("</ul>");
    }
    if !r.checks.is_empty() {
        out.push_str(
            "<h2>Checks</h2><table><tr><th>check</th><th>evaluated</th><th>failed</th><th>note</th></tr>",
        );
        for (name, [run, failed]) in &r.checks {
            let (class, note) = if r.never_evaluated.contains(name) {
                ("fail", "never evaluated")
            } else {
                ("", "")
            };
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td class=\"num\">{run}</td><td class=\"num\">{failed}</td><td class=\"{class}\">{note}</td></tr>",
                esc(name)
            );
        }
        out.push_str("</table>");
    }
    if !r.classifiers.is_empty() {
        out.push_str(
            "<h2>Classifiers</h2><table><tr><th>category</th><th>failed sessions matched</th></tr>",
        );
        for (category, n) in &r.classifiers {
            let note = if *n == 0 { " (matched nothing)" } else { "" };
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td class=\"num\">{n}{note}</td></tr>",
                esc(category)
            );
        }
        out.push_str("</table>");
    }
    out.push_str(
        "<h2>Thresholds</h2><table><tr><th>threshold</th><th>observed</th><th>result</th></tr>",
    );
    for th in &r.thresholds {
        let observed = match th.observed {
            None => "no samples".to_owned(),
            Some(v) => super::show(v, &th.unit),
        };
        let (class, word) = if th.pass {
            ("pass", "pass")
        } else {
            ("fail", "FAIL")
        };
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td class=\"num\">{observed}</td><td class=\"{class}\">{word}</td></tr>",
            esc(&th.expr)
        );
    }
    out.push_str("</table>");
    if !r.workers.is_empty() {
        out.push_str("<h2>Workers</h2><table><tr><th>worker</th><th>share</th><th>sessions</th><th>status</th></tr>");
        for w in &r.workers {
            let status = w.status();
            let _ = write!(
                out,
                "<tr><td>{} (<code>{}</code>)</td><td class=\"num\">{:.1} %</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&w.name),
                esc(&w.id),
                100.0 * w.share,
                w.sessions,
                esc(&status)
            );
        }
        out.push_str("</table>");
    }
    if let Some(c) = previous {
        out.push_str("<h2>Progress vs previous cycle</h2><pre>");
        out.push_str(&esc(&c.to_markdown()));
        out.push_str("</pre>");
    }
    out.push_str("<h2>Latency</h2><table><tr><th>metric</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for (name, m) in &r.metrics {
        // A name that needs quoting is followed by the form `/metrics` and file names use.
        let safe = if m.safe_name.is_empty() || m.safe_name == *name {
            String::new()
        } else {
            format!(" <small>(safe: <code>{}</code>)</small>", esc(&m.safe_name))
        };
        let _ = write!(
            out,
            "<tr><td><code>{}</code>{safe}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(name),
            m.count,
            ms(m.p50_us),
            ms(m.p90_us),
            ms(m.p99_us),
            ms(m.p999_us),
            ms(m.max_us)
        );
    }
    out.push_str("</table></body></html>\n");
    out
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

#[cfg(test)]
mod chart_tests {
    use super::*;

    #[test]
    fn ticks_are_1_2_5_values_covering_the_range() {
        assert_eq!(
            ticks(0.0, 1.0),
            [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(ticks(0.0, 550.0), [0.0, 200.0, 400.0, 600.0]);
        assert_eq!(ticks(50.0, 200.0), [50.0, 100.0, 150.0, 200.0]);
        assert_eq!(ticks(55.0, 190.0), [50.0, 100.0, 150.0, 200.0]);
        assert_eq!(ticks(0.0, 7.0), [0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(3.0, 3.0), [3.0]);
        assert_eq!(short(0.5), "0.5");
        assert_eq!(short(2.0), "2");
        assert_eq!(short(1500.0), "1.5k");
    }

    #[test]
    fn the_last_partial_interval_is_scaled_to_its_length() {
        let interval = |at_ms: u64, sessions: u64| IntervalReport {
            at_ms,
            sessions,
            passed: sessions,
            failed: 0,
            failures: BTreeMap::new(),
            latency: BTreeMap::new(),
            active_vus: 0,
            per_worker: BTreeMap::new(),
        };
        let mut r: Report = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "run_id": "r", "plan": {"name": "p", "hash": ""},
            "started_at": "", "ended_at": "", "duration_s": 2.5, "verdict": "pass",
            "verdict_reason": "", "delivered": 1.0,
            "totals": {"sessions": 0, "passed": 0, "failed": 0, "interrupted": 0, "dropped": 0,
                       "unknown": 0, "frames_sent": 0, "frames_received": 0, "checks_run": 0,
                       "checks_failed": 0},
            "failures": [], "metrics": {}, "checks": {}, "thresholds": [], "workers": [],
            "intervals": []
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        r.intervals = vec![interval(1000, 100), interval(2000, 100), interval(3000, 50)];
        // 50 sessions in the last half second: 100/s at 2.5 s, not 50/s at 3 s.
        assert_eq!(
            per_second(&r, &|i| i.sessions),
            [(1.0, 100.0), (2.0, 100.0), (2.5, 100.0)]
        );
        // A sliver (20 ms) is drawn as a whole interval rather than blown up 50 times.
        r.duration_s = 2.02;
        assert_eq!(per_second(&r, &|i| i.sessions)[2], (3.0, 50.0));
    }
}

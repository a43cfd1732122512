//! A run as one self-contained HTML page (`testbed run --report DIR`): the
//! scenario, how the cluster came up, its picture before the steps and after
//! them, and each step with what it did, what was expected and seen, snapshot
//! diffs, and a trace's every hop with its path drawn on the picture. No file or
//! network access: styles, pictures and the small script are in the page, so a
//! CI run's report can be opened anywhere.

use std::fmt::Write;

use super::{Report, StepReport};
use crate::graph::svg::escape;

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #212529; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
.verdict { font-weight: bold; padding: .1em .5em; border-radius: 4px; color: #fff; }
.verdict.pass { background: #2b7a0b; } .verdict.fail { background: #c92a2a; }
.meta { color: #495057; }
.step { border-left: 5px solid #2b7a0b; margin: 1em 0; padding: .3em 1em; background: #f8f9fa; }
.step.fail { border-color: #c92a2a; background: #fff5f5; }
.step h3 { margin: .2em 0; font-size: 1em; }
.step .at { color: #868e96; font-weight: normal; font-size: .9em; }
pre { background: #fff; border: 1px solid #dee2e6; padding: .5em; overflow-x: auto; font-size: .85em; }
pre.error { border-color: #c92a2a; }
.del { color: #c92a2a; } .add { color: #2b7a0b; }
table.mismatch td { vertical-align: top; padding: .2em .6em; }
figure { margin: .5em 0; overflow-x: auto; }
.toolbar button { margin-right: .5em; }
"#;

const SCRIPT: &str = r#"
function setAll(open) {
  document.querySelectorAll('details').forEach(function (d) { d.open = open; });
}
document.getElementById('expand').addEventListener('click', function () { setAll(true); });
document.getElementById('collapse').addEventListener('click', function () { setAll(false); });
"#;

/// The page of `report`.
pub fn page(report: &Report) -> String {
    let passed = report.passed();
    let (class, verdict) = if passed {
        ("pass", "passed")
    } else {
        ("fail", "FAILED")
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>testbed run: {name}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>scenario {name} <span class=\"verdict {class}\">{verdict}</span></h1>\n<p class=\"meta\">{file} · {steps} steps run{not_run} · {took:.1} s</p>\n",
        name = escape(&report.scenario),
        file = escape(&report.file.display().to_string()),
        steps = report.steps.len(),
        not_run = if report.not_run > 0 { format!(", {} not run", report.not_run) } else { String::new() },
        took = report.took.as_secs_f64(),
    );
    if !report.description.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", escape(report.description.trim()));
    }
    out += "<p class=\"toolbar\"><button id=\"expand\">expand all</button><button id=\"collapse\">collapse all</button></p>\n";
    let _ = writeln!(
        out,
        "<details><summary>setup ({} lines)</summary><pre>{}</pre></details>",
        report.setup.len(),
        escape(&report.setup.join("\n"))
    );
    if let Some(e) = &report.setup_error {
        let _ = writeln!(out, "<pre class=\"error\">{}</pre>", escape(e));
    }
    figure(
        &mut out,
        "the cluster before the steps",
        report.before.as_deref(),
        true,
    );
    out += "<h2>steps</h2>\n";
    for s in &report.steps {
        step(&mut out, s);
    }
    if report.not_run > 0 {
        let _ = writeln!(
            out,
            "<p class=\"meta\">{} steps not run after the failure.</p>",
            report.not_run
        );
    }
    figure(
        &mut out,
        "the cluster after the steps",
        report.after.as_deref(),
        false,
    );
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    out
}

fn figure(out: &mut String, caption: &str, svg: Option<&str>, open: bool) {
    let Some(svg) = svg else { return };
    let _ = writeln!(
        out,
        "<details{}><summary>{caption}</summary><figure>{svg}</figure></details>",
        if open { " open" } else { "" }
    );
}

fn step(out: &mut String, s: &StepReport) {
    let class = if s.passed() { "step" } else { "step fail" };
    let mark = if s.passed() { "✓" } else { "✗" };
    let _ = writeln!(
        out,
        "<section class=\"{class}\" id=\"step-{n}\">\n<h3>{mark} {n}. {title} <span class=\"at\">{at} · {ms:.0} ms</span></h3>",
        n = s.number,
        title = escape(&s.title),
        at = escape(&s.at),
        ms = s.took.as_secs_f64() * 1e3,
    );
    if !s.lines.is_empty() {
        let _ = writeln!(out, "<pre>{}</pre>", escape(&s.lines.join("\n")));
    }
    if !s.mismatches.is_empty() {
        *out += "<table class=\"mismatch\"><tr><th>expected</th><th></th><th>seen</th></tr>\n";
        for m in &s.mismatches {
            let _ = writeln!(
                out,
                "<tr><td><b>{}</b>: {}</td><td>≠</td><td><pre>{}</pre></td></tr>",
                escape(&m.what),
                escape(&m.expected),
                escape(&m.seen)
            );
        }
        *out += "</table>\n";
    }
    if let Some(e) = &s.error {
        let _ = writeln!(out, "<pre class=\"error\">{}</pre>", diff_lines(e));
    }
    if !s.warnings.is_empty() {
        let _ = writeln!(
            out,
            "<p>Warning events in the cluster (latest last):</p><pre class=\"error\">{}</pre>",
            escape(&s.warnings.join("\n"))
        );
    }
    if let Some(d) = &s.detail {
        let _ = writeln!(
            out,
            "<details><summary>in full</summary><pre>{}</pre></details>",
            escape(d)
        );
    }
    figure(out, "the path on the cluster", s.figure.as_deref(), false);
    *out += "</section>\n";
}

/// Text with a diff's `- ` and `+ ` lines coloured.
fn diff_lines(text: &str) -> String {
    text.lines()
        .map(|l| {
            let e = escape(l);
            if l.starts_with("- ") {
                format!("<span class=\"del\">{e}</span>")
            } else if l.starts_with("+ ") {
                format!("<span class=\"add\">{e}</span>")
            } else {
                e
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::scenario::steps::Mismatch;

    fn report() -> Report {
        let ok = StepReport {
            number: 1,
            at: "s.yaml:3:5".into(),
            title: "trace client -> web/TCP".into(),
            lines: vec!["reached default/web-b".into()],
            mismatches: vec![],
            error: None,
            took: Duration::from_millis(300),
            detail: Some("trace default/client -> web:80/TCP\n 1. <pod>".into()),
            figure: Some("<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>".into()),
            warnings: Vec::new(),
        };
        let bad = StepReport {
            number: 2,
            title: "snapshot x".into(),
            lines: vec![],
            mismatches: vec![Mismatch {
                what: "backends".into(),
                expected: "[a]".into(),
                seen: "[b & c]".into(),
            }],
            error: Some("snapshot differs\n  same\n- old\n+ new".into()),
            detail: None,
            figure: None,
            warnings: vec!["BackOff pod/web: Back-off restarting failed container".into()],
            ..ok.clone()
        };
        Report {
            scenario: "s".into(),
            description: "a <scenario>".into(),
            file: PathBuf::from("s.yaml"),
            setup: vec!["testbed s: 2 nodes".into()],
            setup_error: None,
            steps: vec![ok, bad],
            not_run: 3,
            took: Duration::from_secs(2),
            before: Some(
                "<svg xmlns=\"http://www.w3.org/2000/svg\"><text>before</text></svg>".into(),
            ),
            after: None,
        }
    }

    #[test]
    fn a_failed_run_shows_each_step_its_mismatch_and_diff_escaped() {
        let html = page(&report());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<span class=\"verdict fail\">FAILED</span>"));
        assert!(html.contains("2 steps run, 3 not run"));
        assert!(html.contains("a &lt;scenario&gt;"));
        assert!(html.contains("<section class=\"step\" id=\"step-1\">"));
        assert!(html.contains("<section class=\"step fail\" id=\"step-2\">"));
        assert!(html.contains("<pre>[b &amp; c]</pre>"));
        assert!(html.contains("<span class=\"del\">- old</span>\n<span class=\"add\">+ new</span>"));
        assert!(html.contains(" 1. &lt;pod&gt;"));
        assert!(html.contains("<text>before</text>"));
        assert!(html.contains("BackOff pod/web: Back-off restarting failed container"));
        assert_eq!(html.matches("Warning events in the cluster").count(), 1);
        let text = report().steps[1].failure().expect("a failure");
        assert!(text.ends_with(
            "warning events in the cluster (latest last):\n    BackOff pod/web: Back-off restarting failed container"
        ));
        assert_eq!(report().steps[0].failure(), None);
        // Nothing is fetched: no src= or href= to anything.
        assert!(!html.contains("src=") && !html.contains("href="));
    }
}

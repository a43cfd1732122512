//! `testbed run --report DIR`: the page of a run loads in a real browser (Debian's
//! chromium, headless) without a console error and shows every step. Needs root
//! (to run the scenario) and chromium (`scripts/setup` installs it; in CI a
//! missing one fails the test instead of skipping it).

mod common;

use std::path::Path;
use std::process::Command;

use common::{repo, testbed_bin};

/// The browser, if there is one.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Loads `page` in headless chromium: the DOM it built and what its console said.
fn load(browser: &str, page: &Path, profile: &Path) -> (String, Vec<String>) {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{browser}: {}", common::stderr(&out));
    let console = common::stderr(&out)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8(out.stdout).unwrap(), console)
}

#[test]
fn the_report_of_a_run_loads_in_chromium_without_errors_and_shows_the_steps() {
    if !common::root() {
        return;
    }
    let Some(browser) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!(
                "chromium is not installed (scripts/setup installs it: apt-get install chromium)"
            );
        }
        eprintln!("skipped: no chromium (apt-get install chromium)");
        return;
    };
    let name = common::unique_name("report");
    let dir = std::env::temp_dir().join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    let scenario = repo().join("scenarios/trace.yaml");
    let run = testbed_bin()
        .current_dir(repo())
        .args(["run", "--name", &name, "--report"])
        .arg(&dir)
        .arg(&scenario)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{stdout}\n{}", common::stderr(&run));
    let page = dir.join("trace.html");
    assert!(
        stdout.contains(&format!("report: {}", page.display())),
        "{stdout}"
    );

    let profile = dir.join("profile");
    let (dom, console) = load(browser, &page, &profile);
    assert!(
        console.is_empty(),
        "the page logged to the console: {console:?}"
    );
    assert!(dom.contains("<span class=\"verdict pass\">passed</span>"));
    let steps = dom.matches("<section class=\"step\"").count();
    assert_eq!(
        steps, 10,
        "the page shows {steps} steps, the scenario has 10"
    );
    assert!(dom.contains("trace client -&gt; web/TCP"));
    assert!(
        dom.contains("across the underlay to node-2"),
        "a trace in full is on the page"
    );
    assert!(
        dom.matches("<svg").count() >= 3,
        "pictures before, after and of a trace"
    );

    // The check sees an error when there is one: the same load of a broken page.
    let broken = dir.join("broken.html");
    std::fs::write(
        &broken,
        "<!DOCTYPE html><p>x</p><script>noSuchFunction();</script>",
    )
    .unwrap();
    let (_, console) = load(browser, &broken, &profile);
    assert!(
        console.iter().any(|l| l.contains("noSuchFunction")),
        "a script error was not seen: {console:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

//! `testbed run`, `testbed validate` and `testbed schema`: scenarios from the command
//! line, with a report a person reads step by step.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::run::snapshots::Files;
use crate::run::{self, Event, Options};

/// Where a scenario's snapshots live: `snapshots/` beside its directory
/// (`scenarios/x.yaml` → `snapshots/`).
pub fn default_snapshots(file: &Path) -> PathBuf {
    let Ok(full) = file.canonicalize() else {
        return PathBuf::from("snapshots");
    };
    let dir = full
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("snapshots"))
        .unwrap_or_else(|| PathBuf::from("snapshots"));
    // Shown relative to here when it can be.
    match std::env::current_dir() {
        Ok(cwd) => dir.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or(dir),
        Err(_) => dir,
    }
}

fn print_event(e: Event<'_>) {
    let r = match e {
        Event::Setup(l) => {
            println!("  {l}");
            return;
        }
        Event::Step(r) => r,
    };
    let mark = if r.passed() { "✓" } else { "✗" };
    println!(
        "{mark} {:>2} {}  {} ({:.0} ms)",
        r.number,
        r.at,
        r.title,
        r.took.as_secs_f64() * 1e3
    );
    for l in &r.lines {
        println!("        {l}");
    }
    if let Some(e) = &r.error {
        for l in e.lines() {
            println!("      ! {l}");
        }
    }
    for m in &r.mismatches {
        println!("      ! {}:", m.what);
        println!("      !   expected: {}", m.expected);
        println!("      !   seen:     {}", m.seen);
    }
}

pub(super) fn run(
    files: &[PathBuf],
    accept: bool,
    snapshots: Option<PathBuf>,
    name: Option<String>,
) -> Result<ExitCode> {
    if name.is_some() && files.len() > 1 {
        bail!("--name names one testbed: give one scenario file");
    }
    // Everything is checked before anything is built.
    let mut scenarios = Vec::new();
    let mut bad = 0;
    for f in files {
        match crate::scenario::validate::load(f) {
            Ok(s) => scenarios.push((f.clone(), s)),
            Err(e) => {
                eprintln!("{e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        bail!(
            "{bad} of {} scenario files are invalid; nothing was run",
            files.len()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the runtime")?;
    let exe = std::env::current_exe().context("find this program")?;
    let mut failed = Vec::new();
    for (file, s) in &scenarios {
        println!("scenario {} ({})", s.name, file.display());
        for l in s.description.lines() {
            println!("  {l}");
        }
        let mut snaps = Files {
            dir: snapshots.clone().unwrap_or_else(|| default_snapshots(file)),
            accept,
        };
        let opts = Options {
            exe: exe.clone(),
            name: name.clone(),
        };
        let report = rt.block_on(run::run(file, s, &opts, &mut snaps, &mut print_event));
        if let Some(e) = &report.setup_error {
            println!("✗ {}: {e}", file.display());
        }
        let steps = report.steps.len();
        if report.passed() {
            println!(
                "passed: {} ({steps} steps in {:.1} s)\n",
                s.name,
                report.took.as_secs_f64()
            );
        } else {
            let not_run = if report.not_run > 0 {
                format!(", {} steps not run", report.not_run)
            } else {
                String::new()
            };
            println!("FAILED: {}{not_run}\n", s.name);
            failed.push(report);
        }
    }
    if !failed.is_empty() {
        eprintln!("failures:");
        for r in &failed {
            eprintln!("{}", r.failures());
        }
        bail!("{} of {} scenarios failed", failed.len(), scenarios.len());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn validate(files: &[PathBuf]) -> Result<ExitCode> {
    let mut bad = 0;
    for f in files {
        match crate::scenario::validate::load(f) {
            Ok(s) => println!(
                "{}: ok ({} nodes, {} pods, {} objects, {} steps)",
                f.display(),
                s.cluster.nodes.len(),
                s.pods.len(),
                s.objects.len(),
                s.steps.len()
            ),
            Err(e) => {
                eprintln!("{e}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} scenario files are invalid", files.len());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn schema() -> Result<ExitCode> {
    let schema = schemars::schema_for!(crate::scenario::ScenarioFile);
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}

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
    if !r.warnings.is_empty() {
        println!("      ! warning events in the cluster (latest last):");
        for w in &r.warnings {
            println!("      !   {w}");
        }
    }
}

/// How `testbed run` runs its scenarios.
#[derive(clap::Args)]
pub(super) struct RunArgs {
    /// Scenario files
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Write new and changed snapshots instead of failing on them
    #[arg(long)]
    accept: bool,
    /// The snapshot directory (default: snapshots/ beside the scenario's directory)
    #[arg(long)]
    snapshots: Option<PathBuf>,
    /// Name of the testbed (default: the scenario's name)
    #[arg(long)]
    name: Option<String>,
    /// Write a self-contained HTML page of each run into this directory
    /// (DIR/<scenario>.html): its steps, expectations, diffs, traces and the
    /// cluster's picture before and after
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
}

pub(super) fn run(args: RunArgs) -> Result<ExitCode> {
    let files = &args.files;
    if args.name.is_some() && files.len() > 1 {
        bail!("--name names one testbed: give one scenario file");
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make the report directory {}", dir.display()))?;
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
    // A signal interrupts the run: the testbed comes down before the program ends.
    let (tell, interrupt) = tokio::sync::watch::channel(None);
    let mut signals = rt.block_on(async { super::daemon::Signals::new() })?;
    rt.spawn(async move {
        let why = signals.recv().await;
        let _ = tell.send(Some(why));
    });
    let mut failed = Vec::new();
    for (file, s) in &scenarios {
        if let Some(why) = *interrupt.borrow() {
            bail!("interrupted by {why}: {} was not run", file.display());
        }
        let report = run_one(&rt, &args, &exe, file, s, &interrupt)?;
        if !report.passed() {
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

/// Runs one scenario, telling its steps as they end, and writes its page.
fn run_one(
    rt: &tokio::runtime::Runtime,
    args: &RunArgs,
    exe: &Path,
    file: &Path,
    s: &crate::scenario::Scenario,
    interrupt: &tokio::sync::watch::Receiver<Option<&'static str>>,
) -> Result<run::Report> {
    println!("scenario {} ({})", s.name, file.display());
    for l in s.description.lines() {
        println!("  {l}");
    }
    let mut snaps = Files {
        dir: args
            .snapshots
            .clone()
            .unwrap_or_else(|| default_snapshots(file)),
        accept: args.accept,
    };
    let opts = Options {
        exe: exe.to_path_buf(),
        name: args.name.clone(),
        interrupt: Some(interrupt.clone()),
    };
    let report = rt.block_on(run::run(file, s, &opts, &mut snaps, &mut print_event));
    if let Some(dir) = &args.report {
        let page = dir.join(format!("{}.html", s.name));
        std::fs::write(&page, run::html::page(&report))
            .with_context(|| format!("cannot write {}", page.display()))?;
        println!("report: {}", page.display());
    }
    if let Some(e) = &report.setup_error {
        println!("✗ {}: {e}", file.display());
    }
    if report.passed() {
        println!(
            "passed: {} ({} steps in {:.1} s)\n",
            s.name,
            report.steps.len(),
            report.took.as_secs_f64()
        );
    } else {
        let not_run = if report.not_run > 0 {
            format!(", {} steps not run", report.not_run)
        } else {
            String::new()
        };
        println!("FAILED: {}{not_run}\n", s.name);
    }
    Ok(report)
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

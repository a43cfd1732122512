//! The scenario runner: builds the scenario's cluster in this process, applies its
//! objects, replays its steps against the same API server the CLI talks to, probes
//! from inside pods, checks each step's expectations and snapshots, and tears it all
//! down. Each step's report says what happened, what was expected and what was seen,
//! at the step's file:line.

pub mod html;
pub mod snapshots;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::server::Api;
use crate::cluster::{self, Cluster, StartError};
use crate::control::ControlPlane;
use crate::kernel::links::{Links, Netlink};
use crate::kubelet::faults::Faults;
use crate::plan::Plan;
use crate::scenario::steps::{Context, Mismatch, Seen, Step};
use crate::scenario::Scenario;
use snapshots::Snapshots;

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `testbed` program: kubelets run container commands through it, and `exec`
    /// steps too.
    pub exe: PathBuf,
    /// The testbed's name (default: the scenario's).
    pub name: Option<String>,
    /// Becomes the name of a signal that interrupts the run (`testbed run` watches
    /// SIGINT, SIGTERM and SIGHUP): the bring-up stops, or the step under way and the
    /// rest are not run, and the testbed is taken down, its faults with it.
    pub interrupt: Option<tokio::sync::watch::Receiver<Option<&'static str>>>,
}

/// When `interrupt` says a signal came: its name (never, without one).
async fn interrupted(
    interrupt: Option<tokio::sync::watch::Receiver<Option<&'static str>>>,
) -> &'static str {
    let Some(mut rx) = interrupt else {
        return std::future::pending().await;
    };
    let why = match rx.wait_for(Option::is_some).await {
        Ok(why) => why.unwrap_or("a signal"),
        Err(_) => return std::future::pending().await,
    };
    why
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// 1-based.
    pub number: usize,
    /// `scenarios/x.yaml:12:5`.
    pub at: String,
    pub title: String,
    /// What happened.
    pub lines: Vec<String>,
    pub mismatches: Vec<Mismatch>,
    /// The step could not do what it says.
    pub error: Option<String>,
    pub took: Duration,
    /// What it saw in full, and a picture, for a report.
    pub detail: Option<String>,
    pub figure: Option<String>,
    /// The cluster's latest Warning events, kept when the step fails: what
    /// `kubectl get events` would show someone finding out why.
    pub warnings: Vec<String>,
}

impl StepReport {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.mismatches.is_empty()
    }

    /// The failure as a user reads it: where, which step, expected and seen.
    pub fn failure(&self) -> Option<String> {
        if self.passed() {
            return None;
        }
        let mut out = format!("{}: step {} ({}) failed", self.at, self.number, self.title);
        if let Some(e) = &self.error {
            out += &format!(":\n  {}", e.replace('\n', "\n  "));
        }
        for m in &self.mismatches {
            out += &format!(
                "\n  {}:\n    expected: {}\n    seen:     {}",
                m.what,
                m.expected,
                m.seen.replace('\n', "\n              ")
            );
        }
        if !self.warnings.is_empty() {
            out += "\n  warning events in the cluster (latest last):";
            for w in &self.warnings {
                out += &format!("\n    {w}");
            }
        }
        Some(out)
    }
}

/// How many of the cluster's Warning events a failed step shows.
const WARNINGS_SHOWN: usize = 8;

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub file: PathBuf,
    /// How the cluster came up (or why it did not).
    pub setup: Vec<String>,
    pub setup_error: Option<String>,
    pub steps: Vec<StepReport>,
    /// Steps left after a failure.
    pub not_run: usize,
    pub took: Duration,
    /// The cluster's picture (SVG) once it is up, and after the last step run.
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.setup_error.is_none() && self.steps.iter().all(StepReport::passed)
    }

    /// Every failure, as the user reads them.
    pub fn failures(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        if let Some(e) = &self.setup_error {
            out.push(format!("{}: {e}", self.file.display()));
        }
        out.extend(self.steps.iter().filter_map(StepReport::failure));
        out.join("\n")
    }
}

/// What a run tells as it goes.
pub enum Event<'a> {
    /// A line about the cluster coming up and the scenario's objects.
    Setup(&'a str),
    /// A step ended.
    Step(&'a StepReport),
}

/// Runs `scenario` (read from `file`), telling `progress` of the setup and of each
/// step as it ends.
pub async fn run(
    file: &Path,
    scenario: &Scenario,
    opts: &Options,
    snapshots: &mut dyn Snapshots,
    progress: &mut (dyn FnMut(Event<'_>) + Send),
) -> Report {
    let start = Instant::now();
    let mut report = Report {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        file: file.to_path_buf(),
        setup: Vec::new(),
        setup_error: None,
        steps: Vec::new(),
        not_run: 0,
        took: Duration::ZERO,
        before: None,
        after: None,
    };
    let name = opts.name.clone().unwrap_or_else(|| scenario.name.clone());
    let started = Cluster::start(
        &name,
        scenario,
        cluster::Options {
            exe: opts.exe.clone(),
            file: Some(file),
            serve_api: true,
            progress: &|_| {},
        },
        interrupted(opts.interrupt.clone()),
    )
    .await;
    let cluster = match started {
        Ok(c) => c,
        Err(failure) => {
            report.setup_error = Some(setup_error(&failure.error));
            report.setup = failure.setup;
            for l in &report.setup {
                progress(Event::Setup(l));
            }
            report.took = start.elapsed();
            return report;
        }
    };
    report.setup = cluster.setup.clone();
    let mut runner = Runner {
        file,
        scenario,
        plan: cluster.plan().clone(),
        name: name.clone(),
        exe: opts.exe.clone(),
        cp: cluster.control().clone(),
        links: Box::new(Netlink),
        snapshots,
        background: Default::default(),
    };
    for l in &report.setup {
        progress(Event::Setup(l));
    }
    report.before = Some(runner.picture());
    runner.steps(opts, progress, &mut report).await;
    report.after = Some(runner.picture());
    cluster.shutdown().await;
    report.took = start.elapsed();
    report
}

/// Why the cluster did not come up, in words.
fn setup_error(e: &StartError) -> String {
    match e {
        StartError::Topology(e) => format!("cannot build the cluster: {e}"),
        StartError::ControlPlane(e) => {
            format!(
                "cannot start the control plane: {}",
                crate::errors::chain(e)
            )
        }
        e => e.to_string(),
    }
}

/// The cluster a scenario's steps run against.
struct Runner<'a> {
    file: &'a Path,
    scenario: &'a Scenario,
    plan: crate::plan::Plan,
    name: String,
    exe: PathBuf,
    cp: Arc<ControlPlane>,
    links: Box<dyn Links>,
    snapshots: &'a mut dyn Snapshots,
    /// Traffic across steps, and when each step ran.
    background: crate::scenario::steps::Background,
}

impl Runner<'_> {
    /// Runs the scenario's steps until one fails or a signal comes.
    async fn steps(
        &mut self,
        opts: &Options,
        progress: &mut (dyn FnMut(Event<'_>) + Send),
        report: &mut Report,
    ) {
        let scenario = self.scenario;
        let stop = interrupted(opts.interrupt.clone());
        tokio::pin!(stop);
        for (i, step) in scenario.steps.iter().enumerate() {
            let began = Instant::now();
            let done = tokio::select! {
                r = self.step(step) => Ok(r),
                why = &mut stop => Err(why),
            };
            let r = done.unwrap_or_else(|why| self.interrupted(step, why, began.elapsed()));
            progress(Event::Step(&r));
            let failed = !r.passed();
            report.steps.push(r);
            if failed {
                report.not_run = scenario.steps.len() - i - 1;
                break;
            }
        }
    }

    /// The report of `step`, cut short by signal `why`.
    fn interrupted(&self, step: &Step, why: &str, took: Duration) -> StepReport {
        let at = match step.pos {
            Some(p) => format!("{}:{}:{}", self.file.display(), p.line, p.col),
            None => self.file.display().to_string(),
        };
        StepReport {
            number: step.index + 1,
            at,
            title: step.action.title(),
            lines: Vec::new(),
            mismatches: Vec::new(),
            error: Some(format!(
                "interrupted by {why}: the steps after it are not run, and testbed {} is taken down",
                self.name
            )),
            took,
            detail: None,
            figure: None,
            warnings: Vec::new(),
        }
    }

    async fn step(&mut self, step: &Step) -> StepReport {
        let start = Instant::now();
        let at = match step.pos {
            Some(p) => format!("{}:{}:{}", self.file.display(), p.line, p.col),
            None => self.file.display().to_string(),
        };
        let mut title = step.action.title();
        if let (Some(n), false) = (&step.name, step.snapshot_name().is_some()) {
            title = format!("{n}: {title}");
        }
        let (seen, error) = match self.act(step).await {
            Ok(seen) => (seen, None),
            Err(e) => (Seen::default(), Some(e)),
        };
        self.background
            .steps
            .push(crate::scenario::steps::StepMark {
                number: step.index + 1,
                name: step.name.clone(),
                title: step.action.title(),
                start,
                end: Instant::now(),
            });
        let mut report = StepReport {
            number: step.index + 1,
            at,
            title,
            lines: seen.lines,
            mismatches: seen.mismatches,
            error,
            took: start.elapsed(),
            detail: seen.detail,
            figure: seen.figure,
            warnings: Vec::new(),
        };
        if !report.passed() {
            report.warnings = crate::api::events::warnings(&self.cp.store, WARNINGS_SHOWN);
        }
        report
    }

    /// The cluster's picture now (SVG).
    fn picture(&self) -> String {
        let world = crate::trace::World::from_store(self.plan.clone(), &self.cp.store);
        crate::graph::svg::render(&crate::graph::Picture::of(&world), &[])
    }

    async fn act(&mut self, step: &Step) -> Result<Seen, String> {
        if step.action.probes() && !step.immediately {
            // Probes see every change made before them: the records and rules are
            // given the moment they take (milliseconds), so runs repeat exactly.
            let rev = *self.cp.store.subscribe().borrow();
            if !self.cp.wait_synced(rev, Duration::from_secs(10)).await {
                return Err("the DNS and the nodes' rules did not catch up in 10 s".into());
            }
        }
        step.action.run(self, &step.expect).await
    }
}

#[async_trait::async_trait(?Send)]
impl Context for Runner<'_> {
    fn api(&self) -> &Api {
        &self.cp.api
    }

    fn plan(&self) -> &Plan {
        &self.plan
    }

    fn faults(&self) -> &Faults {
        &self.cp.faults
    }

    fn links(&self) -> &dyn Links {
        &*self.links
    }

    fn file(&self) -> &Path {
        self.file
    }

    fn scenario(&self) -> &str {
        &self.scenario.name
    }

    fn testbed(&self) -> &str {
        &self.name
    }

    fn exe(&self) -> &Path {
        &self.exe
    }

    async fn wait_synced(&self, rev: u64, timeout: Duration) -> bool {
        self.cp.wait_synced(rev, timeout).await
    }

    fn behind(&self, rev: u64) -> String {
        self.cp.behind(rev)
    }

    fn background(&mut self) -> &mut crate::scenario::steps::Background {
        &mut self.background
    }

    fn snapshot(&mut self, full: &str, description: &str, content: &str) -> Result<String, String> {
        let source = self.file.display().to_string();
        match self.snapshots.check(full, description, &source, content) {
            snapshots::Outcome::Matched => Ok(format!("{full}: as stored")),
            snapshots::Outcome::Written(p) => Ok(format!("{full}: written to {}", p.display())),
            snapshots::Outcome::New(p) => Err(format!(
                "snapshot {full} is new: review {} (or run with --accept)\n{}",
                p.display(),
                content.trim_end()
            )),
            snapshots::Outcome::Changed { diff, pending } => Err(format!(
                "snapshot {full} differs from the stored one (- stored, + seen); the new one is in {}\n{}",
                pending.display(),
                diff.trim_end()
            )),
        }
    }
}

//! What a step may do to the cluster it runs against: the [`Context`] the runner
//! gives it (a real cluster), or a test (an API server in memory and fakes).

use std::path::Path;
use std::time::{Duration, Instant};

use super::expect::Mismatch;
use crate::api::server::Api;
use crate::api::Store;
use crate::kernel::links::Links;
use crate::kubelet::faults::Faults;
use crate::plan::Plan;

/// The cluster a step runs against.
#[async_trait::async_trait(?Send)]
pub trait Context {
    /// The API server (its store is the cluster's).
    fn api(&self) -> &Api;
    /// The cluster's address plan: its nodes, their namespaces and links.
    fn plan(&self) -> &Plan;
    /// The faults the kubelets obey.
    fn faults(&self) -> &Faults;
    /// Links set up and down in the testbed's namespaces.
    fn links(&self) -> &dyn Links;
    /// The scenario file.
    fn file(&self) -> &Path;
    /// The scenario's name (snapshots are named after it).
    fn scenario(&self) -> &str;
    /// The testbed's name (its namespaces are named after it).
    fn testbed(&self) -> &str;
    /// The `testbed` program, which `exec` steps run.
    fn exe(&self) -> &Path;
    /// Waits until the DNS and every node's rules have acted on every change up to
    /// store revision `rev`, or `timeout`: whether they have.
    async fn wait_synced(&self, rev: u64, timeout: Duration) -> bool;
    /// Who has not caught up with `rev`, in a few words.
    fn behind(&self, rev: u64) -> String;
    /// Checks `content` against the stored snapshot `name` (`<scenario>@<step>`),
    /// described as `description`: the line to report, or why it failed.
    fn snapshot(&mut self, name: &str, description: &str, content: &str) -> Result<String, String>;
    /// What runs across steps (traffic), and when each step ran.
    fn background(&mut self) -> &mut Background;

    fn store(&self) -> &Store {
        &self.api().store
    }
}

/// What runs across steps, and when each step ran: a `stop` step's report places
/// the steps in its traffic's timeline.
#[derive(Debug, Default)]
pub struct Background {
    /// Traffic under way, by its step's name: how it is sent, and its records.
    pub traffic: std::collections::HashMap<String, (String, crate::probe::traffic::Running)>,
    /// Every step run so far.
    pub steps: Vec<StepMark>,
}

/// When a step ran.
#[derive(Debug, Clone)]
pub struct StepMark {
    /// 1-based.
    pub number: usize,
    pub name: Option<String>,
    pub title: String,
    pub start: Instant,
    pub end: Instant,
}

/// What a step's action saw, with its expectations compared.
#[derive(Debug, Default)]
pub struct Seen {
    pub lines: Vec<String>,
    pub mismatches: Vec<Mismatch>,
    /// More than a line can hold, for a report: a trace's every hop, a snapshot's
    /// content.
    pub detail: Option<String>,
    /// A picture for a report (SVG): a trace's path over the cluster.
    pub figure: Option<String>,
}

impl Seen {
    /// One line, nothing expected.
    pub fn line(s: String) -> Seen {
        Seen {
            lines: vec![s],
            ..Default::default()
        }
    }
}

/// How long a fault step waits for the cluster to see it.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Waits until `done` holds for the store, then for every node's rules: how fault
/// steps wait for the cluster to see the fault.
pub async fn settle(
    cx: &dyn Context,
    what: &str,
    done: impl Fn(&dyn Context) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    let mut revision = cx.store().subscribe();
    while !done(cx) {
        if Instant::now() >= deadline {
            return Err(format!("{what} did not happen within {SETTLE:?}"));
        }
        super::next_revision(&mut revision, deadline).await;
    }
    let rev = *cx.store().subscribe().borrow();
    if !cx.wait_synced(rev, SETTLE).await {
        return Err(format!("{what}, but the nodes' rules did not sync"));
    }
    Ok(())
}

//! A testbed's life: claim the name, build, and tear down on every way out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::clean;
use crate::netns;
use crate::plan::Plan;
use crate::scenario::{self, Scenario};
use crate::state::{self, Record};
use crate::topology::{self, BuildTimes, TopologyError};

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("the scenario is invalid:\n{}", .0.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<scenario::Problem>),
    #[error("{0}")]
    Tools(String),
    #[error("testbed name {name:?} {why}")]
    BadName { name: String, why: String },
    #[error("a testbed named {name} is already running (pid {pid}); stop it with `testbed down {name}` or pick another --name")]
    Running { name: String, pid: u32 },
    #[error("the name {name} is in use by network namespaces no testbed made ({}); remove them or pick another --name", .netns.join(", "))]
    Foreign { name: String, netns: Vec<String> },
    #[error("claim the testbed name {name} in {}", state::STATE_DIR)]
    State {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("build testbed {name}")]
    Build {
        name: String,
        #[source]
        source: Box<TopologyError>,
    },
}

/// A running testbed. Dropping it tears everything down (also while unwinding a panic).
pub struct Testbed {
    record: Record,
    /// Dropped after the teardown (fields drop after `drop`): the name is ours until
    /// everything is gone.
    _claim: state::Claim,
    torn_down: bool,
    pub times: BuildTimes,
}

/// What a teardown did.
#[derive(Debug, Clone)]
pub struct Teardown {
    pub namespaces: usize,
    pub took: Duration,
}

impl Testbed {
    /// Checks `scenario`, claims `name` and builds the cluster. On any failure nothing
    /// is left behind.
    pub async fn up(
        name: &str,
        scenario: &Scenario,
        source: Option<PathBuf>,
    ) -> Result<Testbed, UpError> {
        Self::up_with_progress(name, scenario, source, &|_| {}).await
    }

    /// [`Testbed::up`], telling `progress` how many pods are ready as they become so.
    pub async fn up_with_progress(
        name: &str,
        scenario: &Scenario,
        source: Option<PathBuf>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Testbed, UpError> {
        check_name(name)?;
        let problems = scenario::check(scenario);
        if !problems.is_empty() {
            return Err(UpError::Invalid(problems));
        }
        crate::tools::check_needed().map_err(UpError::Tools)?;
        raise_descriptor_limit();
        let plan = scenario.plan(name);
        let record = Record::for_this_process(plan, source);
        let claim = claim(&record)?;
        netns::open_gate(name);
        let mut tb = Testbed {
            record,
            _claim: claim,
            torn_down: false,
            times: BuildTimes::default(),
        };
        // From here on, dropping `tb` (an error below, or a panic) removes what was made.
        tb.times = topology::build(tb.plan(), &state::dir(name).join("etc"), progress)
            .await
            .map_err(|source| UpError::Build {
                name: name.into(),
                source: Box::new(source),
            })?;
        Ok(tb)
    }

    pub fn plan(&self) -> &Plan {
        &self.record.plan
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// The uid that may use the testbed besides root.
    pub fn owner_uid(&self) -> u32 {
        self.record.owner_uid
    }

    /// Removes every namespace, link and file of the testbed, then its record.
    pub fn down(mut self) -> Teardown {
        self.teardown()
    }

    fn teardown(&mut self) -> Teardown {
        let start = Instant::now();
        self.torn_down = true;
        let namespaces = clean::remove_testbed(&self.record.name);
        Teardown {
            namespaces,
            took: start.elapsed(),
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if !self.torn_down {
            self.teardown();
        }
    }
}

/// The descriptors a testbed's process may hold: every pod's namespace and netlink
/// socket, its servers' sockets, API and DNS clients. Far more than the usual 1,024
/// or 20,000; the API server and the DNS bound their connections well below it, so
/// there is always a reserve.
pub const DESCRIPTORS: u64 = 1 << 20;

/// Raises this process's descriptor limit towards [`DESCRIPTORS`] (root may raise the
/// hard limit too, up to the kernel's `fs.nr_open`).
pub fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(DESCRIPTORS);
    let want = DESCRIPTORS.min(nr_open);
    if soft >= want {
        return;
    }
    if hard < want && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return;
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
}

/// Checks that `name` can name a testbed (it is part of every namespace's name).
pub fn check_name(name: &str) -> Result<(), UpError> {
    state::check_name(name).map_err(|why| UpError::BadName {
        name: name.into(),
        why,
    })
}

/// The process of the running testbed `name`, if one runs.
pub fn running(name: &str) -> Option<u32> {
    Record::load(name).ok().filter(|r| r.alive()).map(|r| r.pid)
}

/// Claims the record's name for this process. Under the names lock: a running
/// testbed keeps its name; a dead one's leftovers are removed first; namespaces of
/// that name that no testbed recorded are not ours, so the name can't be had.
fn claim(record: &Record) -> Result<state::Claim, UpError> {
    let name = record.name.as_str();
    let state_error = |source| UpError::State {
        name: name.into(),
        source,
    };
    let names = state::lock_names().map_err(state_error)?;
    if let Some(pid) = running(name) {
        return Err(UpError::Running {
            name: name.into(),
            pid,
        });
    }
    if std::fs::symlink_metadata(state::dir(name)).is_ok() {
        // A dead testbed's (or an unreadable record): its namespaces are its own.
        clean::remove_testbed(name);
    } else {
        let foreign = clean::namespaces_of(name);
        if !foreign.is_empty() {
            return Err(UpError::Foreign {
                name: name.into(),
                netns: foreign,
            });
        }
    }
    record.create(&names).map_err(state_error)
}

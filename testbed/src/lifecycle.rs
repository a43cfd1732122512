//! A testbed's life: claim the name, build, and tear down on every way out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::clean;
use crate::names;
use crate::netns;
use crate::plan::Plan;
use crate::scenario::{self, Scenario};
use crate::state::{self, Record};
use crate::topology::{self, BuildTimes, TopologyError};

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("the scenario is invalid:\n{}", .0.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<scenario::Problem>),
    #[error("testbed name {name:?} {why}")]
    BadName { name: String, why: String },
    #[error("a testbed named {name} is already running (pid {pid}); stop it with `testbed down {name}` or pick another --name")]
    Running { name: String, pid: u32 },
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
        claim(name)?;
        netns::open_gate(name);
        let plan = Plan::new(name, scenario);
        let record = Record::for_this_process(plan, source);
        record.create().map_err(|source| UpError::State {
            name: name.into(),
            source,
        })?;
        let mut tb = Testbed {
            record,
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

/// Checks that `name` can name a testbed (it is part of every namespace's name).
pub fn check_name(name: &str) -> Result<(), UpError> {
    names::check_dns1123_label(name, names::TESTBED_NAME_MAX).map_err(|why| UpError::BadName {
        name: name.into(),
        why,
    })
}

/// The process of the running testbed `name`, if one runs.
pub fn running(name: &str) -> Option<u32> {
    Record::load(name).ok().filter(|r| r.alive()).map(|r| r.pid)
}

/// Makes sure `name` is free: a running testbed keeps it, a dead one's leftovers are
/// removed first.
fn claim(name: &str) -> Result<(), UpError> {
    if let Some(pid) = running(name) {
        return Err(UpError::Running {
            name: name.into(),
            pid,
        });
    }
    clean::remove_testbed(name);
    Ok(())
}

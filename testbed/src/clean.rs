//! `testbed clean`: removes what killed testbeds left, and only that.
//!
//! A testbed is dead when its record names a process that is gone. Its namespaces are
//! found through the plan in its record and, for anything made outside the plan, by its
//! prefix (`tb.<name>` and `tb.<name>.*`). Live testbeds are never touched.

use crate::names;
use crate::netns;
use crate::state::{self, Record};
use crate::topology;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    pub name: String,
    pub namespaces: usize,
}

/// Cleans every dead testbed; returns what was removed.
pub fn clean_dead() -> Vec<Cleaned> {
    state::remove_dead_asides();
    state::names()
        .into_iter()
        .filter(|name| !Record::load(name).is_ok_and(|r| r.alive()))
        .map(|name| clean_one(&name))
        .collect()
}

/// Removes everything of testbed `name`, whose process must be gone.
pub fn clean_one(name: &str) -> Cleaned {
    let mut namespaces = 0;
    if let Ok(record) = Record::load(name) {
        namespaces += topology::teardown(&record.plan);
    }
    namespaces += sweep_prefix(name);
    state::remove(name);
    Cleaned {
        name: name.into(),
        namespaces,
    }
}

/// Removes the namespaces and `/etc/netns` entries named for testbed `name`.
pub fn sweep_prefix(name: &str) -> usize {
    let mut removed = 0;
    for ns in netns::list() {
        if names::netns_belongs_to(&ns, name) && netns::remove(&ns) {
            removed += 1;
        }
    }
    for ns in netns::list_etc() {
        if names::netns_belongs_to(&ns, name) {
            netns::remove_etc(&ns);
        }
    }
    removed
}

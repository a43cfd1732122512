//! Removing a testbed: at `testbed down`, on any exit of the testbed's process, and
//! by `testbed clean` for the ones whose process was killed.
//!
//! Everything a testbed makes carries its name: namespaces `tb.<name>` and
//! `tb.<name>.*` with their `/etc/netns` entries, and the record `/run/testbed/<name>`.
//! Removal goes by those names, so it finds what a killed process left as well as what
//! a plan lists, and never touches another testbed's or anything else.

use crate::names;
use crate::netns;
use crate::state::{self, Record};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    pub name: String,
    pub namespaces: usize,
}

/// Cleans every testbed whose process is gone; returns what was removed.
pub fn clean_dead() -> Vec<Cleaned> {
    state::remove_dead_asides();
    // Testbeds with a record, and namespaces whose record is gone already (a process
    // killed in the middle of its teardown).
    let mut all: std::collections::BTreeSet<String> = state::names().into_iter().collect();
    for ns in netns::list().into_iter().chain(netns::list_etc()) {
        if let Some(name) = names::testbed_of_netns(&ns) {
            all.insert(name.to_string());
        }
    }
    all.into_iter()
        .filter(|name| !Record::load(name).is_ok_and(|r| r.alive()))
        .map(|name| Cleaned {
            namespaces: remove_testbed(&name),
            name,
        })
        .collect()
}

/// Removes every namespace, `/etc/netns` entry and the record of testbed `name`.
/// Returns how many namespaces there were. Its process must be gone or be the caller.
pub fn remove_testbed(name: &str) -> usize {
    // Namespaces the kubelet is making now finish first; no new ones start.
    netns::close_gate(name);
    let mine: Vec<String> = netns::list()
        .into_iter()
        .filter(|ns| names::netns_belongs_to(ns, name))
        .collect();
    let removed = netns::remove_all(&mine);
    for entry in netns::list_etc() {
        if names::netns_belongs_to(&entry, name) {
            netns::remove_etc(&entry);
        }
    }
    state::remove(name);
    removed
}

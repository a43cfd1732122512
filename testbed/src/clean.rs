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
/// Namespaces named like a testbed's but with no record are not a testbed's (a
/// record is made before the first namespace and removed after the last): they are
/// left alone; [`foreign`] lists them.
pub fn clean_dead() -> Vec<Cleaned> {
    let Ok(_names) = state::lock_names() else {
        return Vec::new();
    };
    state::remove_dead_asides();
    state::names()
        .into_iter()
        .filter(|name| !Record::load(name).is_ok_and(|r| r.alive()))
        .map(|name| Cleaned {
            namespaces: remove_testbed(&name),
            name,
        })
        .collect()
}

/// Namespaces and `/etc/netns` entries named `tb.*` that no recorded testbed owns.
pub fn foreign() -> Vec<String> {
    let recorded = state::names();
    let mut v: Vec<String> = netns::list()
        .into_iter()
        .chain(netns::list_etc())
        .chain(netns::list_uts())
        .filter(|ns| {
            names::testbed_of_netns(ns).is_some()
                && !recorded.iter().any(|r| names::netns_belongs_to(ns, r))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The namespaces and `/etc/netns` entries of testbed `name`.
pub fn namespaces_of(name: &str) -> Vec<String> {
    let mut v: Vec<String> = netns::list()
        .into_iter()
        .chain(netns::list_etc())
        .chain(netns::list_uts())
        .filter(|ns| names::netns_belongs_to(ns, name))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Removes every namespace, `/etc/netns` entry and the record of testbed `name`.
/// Returns how many namespaces there were. Its process must be gone or be the caller.
/// A name that is not a testbed's removes nothing.
pub fn remove_testbed(name: &str) -> usize {
    if state::check_name(name).is_err() {
        return 0;
    }
    // Namespaces the kubelet is making now finish first; no new ones start.
    netns::close_gate(name);
    let mut mine: Vec<String> = netns::list()
        .into_iter()
        .chain(netns::list_uts())
        .filter(|ns| names::netns_belongs_to(ns, name))
        .collect();
    mine.sort();
    mine.dedup();
    let removed = netns::remove_all(&mine);
    for entry in netns::list_etc() {
        if names::netns_belongs_to(&entry, name) {
            netns::remove_etc(&entry);
        }
    }
    state::remove(name);
    removed
}

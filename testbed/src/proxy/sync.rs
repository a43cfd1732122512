//! What one sync writes: kube-proxy's partial-sync idea. The proxier remembers what the
//! kernel holds; a sync re-renders only the service ports that changed, writes only
//! the chains whose rules changed, and deletes chains nothing uses any more. The first
//! sync, and the one after a failed restore, write everything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::render::{self, Config, ServicePort, ServiceRules};

type Key = (String, &'static str);

/// The state of one node's kube-proxy tables, as last committed.
#[derive(Debug)]
pub struct Proxier {
    cfg: Config,
    rendered: BTreeMap<Key, Arc<(ServicePort, ServiceRules)>>,
    nat_services: Vec<String>,
    filter_services: Vec<String>,
    /// Whether the kernel is known to hold what `rendered` says.
    in_sync: bool,
    /// Whether the jumps from the built-in chains are in place (they are written once).
    jumps: bool,
}

/// One sync, ready to hand to `iptables-restore --noflush`.
#[derive(Debug)]
pub struct Update {
    /// The restore input; empty when nothing changed.
    pub text: String,
    pub full: bool,
    /// Service ports re-rendered, chains written, chains deleted.
    pub services_changed: usize,
    pub chains_written: usize,
    pub chains_deleted: usize,
    rendered: BTreeMap<Key, Arc<(ServicePort, ServiceRules)>>,
    nat_services: Vec<String>,
    filter_services: Vec<String>,
}

impl Proxier {
    pub fn new(cfg: Config) -> Self {
        Proxier {
            cfg,
            rendered: BTreeMap::new(),
            nat_services: Vec::new(),
            filter_services: Vec::new(),
            in_sync: false,
            jumps: false,
        }
    }

    /// The restore text that takes the node from what it holds to `ports`.
    pub fn prepare(&self, ports: &[ServicePort]) -> Update {
        let full = !self.in_sync;
        let mut rendered = BTreeMap::new();
        let mut changed: Vec<Key> = Vec::new();
        for sp in ports {
            let key = (sp.port_name_string(), sp.protocol.lower());
            let entry = match self.rendered.get(&key) {
                Some(old) if old.0 == *sp => old.clone(),
                _ => {
                    changed.push(key.clone());
                    Arc::new((sp.clone(), render::service_rules(&self.cfg, sp)))
                }
            };
            rendered.insert(key, entry);
        }
        let nat_services: Vec<String> = rendered
            .values()
            .flat_map(|e| e.1.nat_services.iter().cloned())
            .chain([render::NODEPORTS_JUMP.to_string()])
            .collect();
        let filter_services: Vec<String> = rendered
            .values()
            .flat_map(|e| e.1.filter_services.iter().cloned())
            .collect();

        // Chains that were written before and are not wanted now.
        let mut stale = BTreeSet::new();
        for (key, old) in &self.rendered {
            let keep: BTreeSet<&str> = match rendered.get(key) {
                Some(new) if Arc::ptr_eq(new, old) => continue,
                Some(new) => new.1.chains.iter().map(|c| c.name.as_str()).collect(),
                None => BTreeSet::new(),
            };
            for c in &old.1.chains {
                if !keep.contains(c.name.as_str()) {
                    stale.insert(c.name.clone());
                }
            }
        }

        let mut out = String::new();
        let mut chains_written = 0;
        // filter
        let filter_changed = full || filter_services != self.filter_services;
        if filter_changed {
            out.push_str("*filter\n");
            if full {
                for c in render::FILTER_CHAINS {
                    decl(&mut out, c);
                }
                chains_written += render::FILTER_CHAINS.len();
                lines(&mut out, &render::filter_fixed_rules());
                for (table, rule) in render::builtin_jumps() {
                    if table == "filter" && !self.jumps {
                        line(&mut out, rule);
                    }
                }
                lines(&mut out, &filter_services);
            } else if !edit_in_place(&mut out, &self.filter_services, &filter_services, false) {
                decl(&mut out, "KUBE-SERVICES");
                chains_written += 1;
                lines(&mut out, &filter_services);
            }
            out.push_str("COMMIT\n");
        }
        // nat
        let services_changed = full || nat_services != self.nat_services;
        let to_write: Vec<&render::Chain> = if full {
            rendered.values().flat_map(|e| e.1.chains.iter()).collect()
        } else {
            let mut v = Vec::new();
            for key in &changed {
                let new = &rendered[key];
                let old = self.rendered.get(key);
                for c in &new.1.chains {
                    let same = old.is_some_and(|o| o.1.chains.iter().any(|oc| oc == c));
                    if !same {
                        v.push(c);
                    }
                }
            }
            v
        };
        if services_changed || !to_write.is_empty() || !stale.is_empty() {
            out.push_str("*nat\n");
            if full {
                for c in render::NAT_CHAINS {
                    decl(&mut out, c);
                }
                chains_written += render::NAT_CHAINS.len();
            }
            // A few Services more or less: their jumps are inserted and deleted in
            // place. Rewriting the whole chain costs a rule per Service in the kernel
            // (a second with iptables-nft and 10,000 Services).
            let rewrite = full
                || (services_changed && !edit_possible(&self.nat_services, &nat_services, true));
            if rewrite && !full {
                decl(&mut out, "KUBE-SERVICES");
                chains_written += 1;
            }
            for c in &to_write {
                decl(&mut out, &c.name);
            }
            for c in &stale {
                decl(&mut out, c);
            }
            chains_written += to_write.len();
            if full {
                lines(&mut out, &render::nat_fixed_rules());
                for (table, rule) in render::builtin_jumps() {
                    if table == "nat" && !self.jumps {
                        line(&mut out, rule);
                    }
                }
            }
            if rewrite {
                lines(&mut out, &nat_services);
            } else if services_changed {
                edit_in_place(&mut out, &self.nat_services, &nat_services, true);
            }
            for c in &to_write {
                lines(&mut out, &c.rules);
            }
            for c in &stale {
                out.push_str("-X ");
                out.push_str(c);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        Update {
            text: out,
            full,
            services_changed: changed.len(),
            chains_written,
            chains_deleted: stale.len(),
            rendered,
            nat_services,
            filter_services,
        }
    }

    /// The kernel took `update`.
    pub fn commit(&mut self, update: Update) {
        self.rendered = update.rendered;
        self.nat_services = update.nat_services;
        self.filter_services = update.filter_services;
        self.in_sync = true;
        self.jumps = true;
    }

    /// The kernel refused an update: the next sync writes everything.
    pub fn failed(&mut self) {
        self.in_sync = false;
    }

    /// Takes the jumps from the built-in chains as written already (by another
    /// proxier of the same node): a benchmark's full sync then writes what a resync
    /// of kube-proxy writes.
    pub fn assume_jumps(&mut self) {
        self.jumps = true;
    }

    /// Whether the first (full) sync has been committed.
    pub fn in_sync(&self) -> bool {
        self.in_sync
    }
}

fn decl(out: &mut String, chain: &str) {
    out.push(':');
    out.push_str(chain);
    out.push_str(" - [0:0]\n");
}

fn line(out: &mut String, l: &str) {
    out.push_str(l);
    out.push('\n');
}

fn lines(out: &mut String, ls: &[String]) {
    for l in ls {
        line(out, l);
    }
}

/// Most changes to `KUBE-SERVICES` edited in place, rather than the chain rewritten.
const MAX_EDITS: usize = 64;

/// Whether `old` becomes `new` by at most [`MAX_EDITS`] insertions and deletions
/// (the order of `KUBE-SERVICES`' rules does not matter, but the last one's does).
fn edit_possible(old: &[String], new: &[String], keep_last: bool) -> bool {
    let (o, n): (BTreeSet<&String>, BTreeSet<&String>) =
        (old.iter().collect(), new.iter().collect());
    o.len() == old.len()
        && n.len() == new.len()
        && o.symmetric_difference(&n).count() <= MAX_EDITS
        && (!keep_last || old.last() == new.last())
}

/// Writes `-D`/`-I` lines that turn chain `old` into `new` in the kernel, if
/// [`edit_possible`]; returns whether it did. New rules go first in the chain, so the
/// last rule stays last.
fn edit_in_place(out: &mut String, old: &[String], new: &[String], keep_last: bool) -> bool {
    if !edit_possible(old, new, keep_last) || old.is_empty() {
        return false;
    }
    let (o, n): (BTreeSet<&String>, BTreeSet<&String>) =
        (old.iter().collect(), new.iter().collect());
    for gone in o.difference(&n) {
        if let Some(rest) = gone.strip_prefix("-A ") {
            out.push_str("-D ");
            out.push_str(rest);
            out.push('\n');
        }
    }
    for added in n.difference(&o) {
        if let Some((chain, spec)) = added.strip_prefix("-A ").and_then(|r| r.split_once(' ')) {
            out.push_str(&format!("-I {chain} 1 {spec}\n"));
        }
    }
    true
}

//! What one sync writes: kube-proxy's partial-sync idea. The proxier remembers what the
//! kernel holds; a sync re-renders only the service ports that changed, writes only
//! the chains whose rules changed, and deletes chains nothing uses any more. The first
//! sync, and the one after a failed restore, write everything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::fixed;
use super::render::{self, Config, ServicePort, ServiceRules, Table};

/// A service port's identity: kube-proxy's `ServicePortName` and protocol.
pub use super::tracker::PortKey as Key;

type Entry = Arc<(ServicePort, ServiceRules)>;

/// An update that declares more chains than this starts its nat part with `-Z`.
/// iptables-nft 1.8.9 keeps the names of the chains a restore names in a sorted
/// linked list (`cache_chain_list_insert`), which is quadratic: 70 s for the 40,000
/// chains of 10,000 Services. A command without a chain makes it fetch every chain
/// instead, and `-Z` (zero the counters) is the harmless one: about 1 s at 10,000
/// Services, against 3 s of list walking for 1,500 Services' chains.
const ZERO_ABOVE_CHAINS: usize = 6000;

/// The state of one node's kube-proxy tables, as last committed.
#[derive(Debug)]
pub struct Proxier {
    cfg: Config,
    rendered: BTreeMap<Key, Entry>,
    /// Whether the kernel is known to hold what `rendered` says.
    in_sync: bool,
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
    /// The service ports that changed: their new rules, or `None` when gone.
    delta: BTreeMap<Key, Option<Entry>>,
}

/// The chain of a `-A CHAIN ...` line.
fn in_chain(l: &str) -> &str {
    l.split(' ').nth(1).unwrap_or_default()
}

/// Lines of one table's shared chains going and coming, by chain.
struct SharedEdits<'a> {
    chains: BTreeMap<&'a str, (BTreeSet<&'a String>, BTreeSet<&'a String>)>,
}

impl<'a> SharedEdits<'a> {
    fn new(table: Table, old: &[&'a Entry], new: &[&'a Entry]) -> Self {
        let mut by_chain: BTreeMap<&str, (BTreeSet<&String>, BTreeSet<&String>)> = BTreeMap::new();
        for e in old {
            for l in e.1.shared_in(table) {
                by_chain.entry(in_chain(l)).or_default().0.insert(l);
            }
        }
        for e in new {
            for l in e.1.shared_in(table) {
                by_chain.entry(in_chain(l)).or_default().1.insert(l);
            }
        }
        let chains = by_chain
            .into_iter()
            .map(|(c, (old, new))| {
                let gone = old.difference(&new).copied().collect();
                let added = new.difference(&old).copied().collect();
                (c, (gone, added))
            })
            .filter(|(_, (g, a)): &(_, (BTreeSet<_>, BTreeSet<_>))| !g.is_empty() || !a.is_empty())
            .collect();
        SharedEdits { chains }
    }

    fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// The chains with too many edits to make in place: rewritten whole.
    fn rewrite(&self) -> Vec<&'a str> {
        self.chains
            .iter()
            .filter(|(_, (g, a))| g.len() + a.len() > MAX_EDITS)
            .map(|(c, _)| *c)
            .collect()
    }

    /// `-D` and `-I` lines of the chains not in `rewritten`; new rules go first, so
    /// the last rule of `KUBE-SERVICES` stays last.
    fn write_in_place(&self, rewritten: &[&str], out: &mut String) {
        for (chain, (gone, added)) in &self.chains {
            if rewritten.contains(chain) {
                continue;
            }
            for g in gone {
                if let Some(rest) = g.strip_prefix("-A ") {
                    out.push_str("-D ");
                    out.push_str(rest);
                    out.push('\n');
                }
            }
            for a in added {
                if let Some((chain, spec)) = a.strip_prefix("-A ").and_then(|r| r.split_once(' ')) {
                    out.push_str(&format!("-I {chain} 1 {spec}\n"));
                }
            }
        }
    }
}

impl Proxier {
    pub fn new(cfg: Config) -> Self {
        Proxier {
            cfg,
            rendered: BTreeMap::new(),
            in_sync: false,
        }
    }

    /// The key of a service port.
    pub fn key(sp: &ServicePort) -> Key {
        super::tracker::port_key(sp)
    }

    /// The restore text that takes the node from what it holds to `ports`, all of
    /// the node's service ports.
    pub fn prepare(&self, ports: &[ServicePort]) -> Update {
        let keys: BTreeSet<Key> = ports.iter().map(Self::key).collect();
        let removed = self
            .rendered
            .keys()
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        self.prepare_changes(ports.to_vec(), removed)
    }

    /// The restore text for a change of some service ports: `upserts` are their
    /// state now (unchanged ones are skipped), `removed` the keys of those gone.
    /// Its cost is in the size of the change, not of the node's tables.
    // Long because it follows kube-proxy's syncProxyRules (chains kept, written, deleted;
    // the full-sync fallback) in upstream's order, which is how it is checked.
    pub fn prepare_changes(&self, upserts: Vec<ServicePort>, removed: Vec<Key>) -> Update {
        let full = !self.in_sync;
        let mut delta: BTreeMap<Key, Option<Entry>> = BTreeMap::new();
        for key in removed {
            if self.rendered.contains_key(&key) {
                delta.insert(key, None);
            }
        }
        for sp in upserts {
            let key = Self::key(&sp);
            if self.rendered.get(&key).is_some_and(|old| old.0 == sp) {
                continue;
            }
            let rules = render::service_rules(&self.cfg, &sp);
            delta.insert(key, Some(Arc::new((sp, rules))));
        }
        let mut update = Update {
            text: String::new(),
            full,
            services_changed: delta.len(),
            chains_written: 0,
            chains_deleted: 0,
            delta: BTreeMap::new(),
        };
        if !full && delta.is_empty() {
            return update;
        }
        let old = |k: &Key| self.rendered.get(k);

        // Chains that were written before and are not wanted now.
        let mut stale = BTreeSet::new();
        for (key, entry) in &delta {
            let Some(old) = old(key) else { continue };
            let keep: BTreeSet<&str> = entry
                .iter()
                .flat_map(|e| e.1.chains.iter().map(|c| c.name.as_str()))
                .collect();
            for c in &old.1.chains {
                if !keep.contains(c.name.as_str()) {
                    stale.insert(c.name.clone());
                }
            }
        }
        // Every service port after the change, in order (for full syncs and rewrites).
        let merged = || -> Vec<Entry> {
            let mut all: BTreeMap<&Key, &Entry> = self.rendered.iter().collect();
            for (k, e) in &delta {
                match e {
                    Some(e) => all.insert(k, e),
                    None => all.remove(k),
                };
            }
            all.into_values().cloned().collect()
        };
        let all = if full { merged() } else { Vec::new() };

        let mut out = String::new();
        let mut chains_written = 0;
        // Each table's shared chains: the lines of the service ports that changed.
        for table in [Table::Filter, Table::Nat] {
            let olds: Vec<&Entry> = delta.keys().filter_map(old).collect();
            let news: Vec<&Entry> = delta.values().flatten().collect();
            let edits = SharedEdits::new(table, &olds, &news);
            let to_write: Vec<&render::Chain> = if table == Table::Filter {
                Vec::new()
            } else if full {
                all.iter().flat_map(|e| e.1.chains.iter()).collect()
            } else {
                let mut v = Vec::new();
                for (key, entry) in &delta {
                    let Some(entry) = entry else { continue };
                    let old = old(key);
                    for c in &entry.1.chains {
                        if !old.is_some_and(|o| o.1.chains.iter().any(|oc| oc == c)) {
                            v.push(c);
                        }
                    }
                }
                v
            };
            let stale = if table == Table::Nat {
                &stale
            } else {
                &BTreeSet::new()
            };
            if !full && edits.is_empty() && to_write.is_empty() && stale.is_empty() {
                continue;
            }
            out.push_str(&format!("*{}\n", table.name()));
            if table == Table::Nat && to_write.len() + stale.len() > ZERO_ABOVE_CHAINS {
                out.push_str("-Z\n");
            }
            let fixed_chains: &[&str] = match table {
                Table::Filter => &fixed::FILTER_CHAINS,
                Table::Nat => &fixed::NAT_CHAINS,
            };
            // A few Services more or less: their lines are inserted and deleted in
            // place. Rewriting a whole chain costs a rule per Service in the kernel
            // (a second with iptables-nft and 10,000 Services).
            let rewrite: Vec<&str> = if full {
                fixed_chains.to_vec()
            } else {
                edits.rewrite()
            };
            for c in &rewrite {
                decl(&mut out, c);
            }
            if full {
                decl(&mut out, fixed::CANARY);
            }
            chains_written += rewrite.len() + to_write.len();
            for c in &to_write {
                decl(&mut out, &c.name);
            }
            for c in stale {
                decl(&mut out, c);
            }
            if full {
                lines(
                    &mut out,
                    &match table {
                        Table::Filter => fixed::filter_fixed_rules(&self.cfg),
                        Table::Nat => fixed::nat_fixed_rules(),
                    },
                );
            }
            let merged_all;
            let entries: &[Entry] = if full {
                &all
            } else if rewrite.is_empty() {
                &[]
            } else {
                merged_all = merged();
                &merged_all
            };
            for chain in &rewrite {
                for e in entries {
                    for l in e.1.shared_in(table).filter(|l| in_chain(l) == *chain) {
                        line(&mut out, l);
                    }
                }
                if table == Table::Nat && *chain == "KUBE-SERVICES" {
                    line(&mut out, fixed::nodeports_jump(&self.cfg));
                }
            }
            edits.write_in_place(&rewrite, &mut out);
            for c in &to_write {
                lines(&mut out, &c.rules);
            }
            for c in stale {
                out.push_str("-X ");
                out.push_str(c);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        if full {
            out.push_str(&format!("*mangle\n:{} - [0:0]\nCOMMIT\n", fixed::CANARY));
        }
        update.text = out;
        update.chains_written = chains_written;
        update.chains_deleted = stale.len();
        update.delta = delta;
        update
    }

    /// The kernel took `update`.
    pub fn commit(&mut self, update: Update) {
        for (key, entry) in update.delta {
            match entry {
                Some(e) => self.rendered.insert(key, e),
                None => self.rendered.remove(&key),
            };
        }
        self.in_sync = true;
    }

    /// The kernel refused an update: the next sync writes everything.
    pub fn failed(&mut self) {
        self.in_sync = false;
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

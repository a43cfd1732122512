//! What one nftables sync writes, as one `nft -f` transaction. A full sync replaces
//! the whole table atomically (`add table`, `delete table`, then everything); a
//! partial one, as upstream's, touches only the service ports that changed: their
//! chains rewritten (added and flushed), their map elements deleted and added one by
//! one, the chains they no longer use flushed at once and deleted at a later sync
//! (upstream waits a second, for kernels before 6.2 that see a chain as referenced a
//! moment after its map element went), their affinity sets deleted at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::render::{self, affinity_set_line, Element, ServiceObjects, TABLE};
use crate::proxy::render::{Config, ServicePort};
use crate::proxy::tracker::{port_key, PortKey};

type Entry = Arc<(ServicePort, ServiceObjects)>;

/// How long a flushed chain waits before it is deleted (upstream: one second).
pub const STALE_AFTER: Duration = Duration::from_secs(1);

/// How many service ports a cold full sync (or a big change) writes per
/// transaction. Part of the kernel's cost of a transaction grows with its square
/// (each anonymous set, one per service chain's `numgen` map, walks the
/// transaction's list when it is bound and looked up): one transaction of 10,000
/// Services took 60 s on a 2-core machine. Sent as raw netlink batches
/// (`scripts/nft-floor`), 10,000 Services took 11.0 s in chunks of 2,000, 9.4 s in
/// chunks of 1,000, 9.5 s of 500 and 9.6 s of 250: smaller chunks shorten the walks
/// of the transaction, and each commit validates the whole table once more. The
/// rest grows with the table (each new anonymous set walks the table's sets).
pub const CHUNK: usize = 1000;

/// The state of one node's table, as last committed.
#[derive(Debug)]
pub struct Proxier {
    cfg: Config,
    applied: BTreeMap<PortKey, Entry>,
    in_sync: bool,
    /// Chains flushed and no longer used, and since when.
    stale: BTreeMap<String, Instant>,
    stale_after: Duration,
    /// The node has no table (a new node, or one found flushed): a full sync of
    /// more than `chunk` service ports goes in chunks.
    table_absent: bool,
    chunk: usize,
}

/// One sync, ready for `nft -f -`.
#[derive(Debug, Default)]
pub struct Update {
    /// The transactions, each applied alone, in order; none when there is nothing
    /// to do. One, but for a cold full sync or a change of many service ports:
    /// those go in chunks of [`CHUNK`] after a first transaction.
    pub transactions: Vec<String>,
    pub full: bool,
    delta: BTreeMap<PortKey, Option<Entry>>,
    /// Chains this sync leaves stale, and stale chains it deletes (or uses again).
    newly_stale: Vec<String>,
    unstaled: Vec<String>,
}

impl Update {
    /// Adds a transaction, unless it is empty.
    fn push(&mut self, text: String) {
        if !text.is_empty() {
            self.transactions.push(text);
        }
    }

    /// The update's one transaction ("" for none); panics when there are more.
    #[cfg(test)]
    pub fn one(&self) -> &str {
        assert!(
            self.transactions.len() <= 1,
            "{} transactions",
            self.transactions.len()
        );
        self.transactions.first().map_or("", String::as_str)
    }
}

/// The lines of a transaction, by the phase they must come in (a chain exists before
/// a rule or an element sends to it, a set before a rule uses it, an element goes
/// before its key is given to another, a set is deleted once no rule uses it).
#[derive(Default)]
struct Phases {
    delete_chains: Vec<String>,
    add_chains: Vec<String>,
    add_sets: Vec<String>,
    delete_elements: Vec<String>,
    flush_chains: Vec<String>,
    rules: Vec<String>,
    add_elements: Vec<String>,
    delete_sets: Vec<String>,
}

impl Phases {
    fn text(self) -> String {
        let all = [
            self.delete_chains,
            self.add_chains,
            self.add_sets,
            self.delete_elements,
            self.flush_chains,
            self.rules,
            self.add_elements,
            self.delete_sets,
        ];
        let mut out = String::new();
        for line in all.iter().flatten() {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// The lines that add one service port's chains, rules, sets and elements.
fn add_service(entry: &Entry, p: &mut Phases) {
    let o = &entry.1;
    for c in &o.chains {
        p.add_chains.push(format!("add chain {TABLE} {}", c.name));
        p.rules.extend(
            c.rules
                .iter()
                .map(|r| format!("add rule {TABLE} {} {r}", c.name)),
        );
    }
    p.add_sets.extend(
        o.affinity_sets
            .iter()
            .map(|(n, s)| affinity_set_line(n, *s)),
    );
    p.add_elements
        .extend(o.elements.iter().map(Element::add_line));
}

fn elements_by_key(o: Option<&Entry>) -> BTreeMap<(&'static str, &str), &Element> {
    o.map(|e| {
        e.1.elements
            .iter()
            .map(|el| ((el.container, el.key.as_str()), el))
            .collect()
    })
    .unwrap_or_default()
}

impl Proxier {
    pub fn new(cfg: Config) -> Self {
        Proxier {
            cfg,
            applied: BTreeMap::new(),
            in_sync: false,
            stale: BTreeMap::new(),
            stale_after: STALE_AFTER,
            table_absent: true,
            chunk: CHUNK,
        }
    }

    /// A cold full sync writes `chunk` service ports per transaction (tests: small).
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// The node's table is gone: the next full sync may go in chunks.
    pub fn table_gone(&mut self) {
        self.table_absent = true;
        self.in_sync = false;
    }

    /// Stale chains are deleted at the first sync after `after` (tests: zero).
    pub fn with_stale_after(mut self, after: Duration) -> Self {
        self.stale_after = after;
        self
    }

    pub fn in_sync(&self) -> bool {
        self.in_sync
    }

    /// Whether stale chains are due to be deleted: a sync is due with no change.
    pub fn stale_due(&self) -> bool {
        self.stale.values().any(|t| t.elapsed() >= self.stale_after)
    }

    /// The whole table for `ports`, replacing whatever the node holds, in one
    /// transaction (upstream's full sync).
    pub fn full_in_one(&self, ports: &[ServicePort]) -> Update {
        let (mut u, mut p) = self.full_start(ports);
        for entry in u.delta.values().flatten() {
            add_service(entry, &mut p);
        }
        u.push(p.text());
        u
    }

    /// A full sync as [`full_in_one`](Self::full_in_one), but when the node has no
    /// table and there are more than the chunk's service ports, in several
    /// transactions: the table and its base first, then the service ports in
    /// chunks. Atomic per chunk only: for a moment the table holds some Services
    /// and not others, which a table that is not there yet can afford; a table that
    /// is there is replaced at once.
    pub fn full_sync(&self, ports: &[ServicePort]) -> Update {
        if !self.table_absent || ports.len() <= self.chunk {
            return self.full_in_one(ports);
        }
        let (mut u, p) = self.full_start(ports);
        u.push(p.text());
        let entries: Vec<&Entry> = u.delta.values().flatten().collect();
        let chunks: Vec<String> = entries
            .chunks(self.chunk)
            .map(|chunk| {
                let mut p = Phases::default();
                chunk.iter().for_each(|e| add_service(e, &mut p));
                p.text()
            })
            .collect();
        chunks.into_iter().for_each(|t| u.push(t));
        u
    }

    /// A full sync's delta and its first lines: the table replaced, its base.
    fn full_start(&self, ports: &[ServicePort]) -> (Update, Phases) {
        let base = render::base(&self.cfg);
        let mut delta = BTreeMap::new();
        for sp in ports {
            let objects = render::service_objects(&self.cfg, sp);
            delta.insert(port_key(sp), Some(Arc::new((sp.clone(), objects))));
        }
        for key in self.applied.keys() {
            delta.entry(key.clone()).or_insert(None);
        }
        let mut p = Phases {
            add_chains: vec![
                format!("add table {TABLE}"),
                format!("delete table {TABLE}"),
            ],
            ..Phases::default()
        };
        p.add_chains.extend(base.chains);
        p.add_sets.extend(base.containers);
        p.rules.extend(base.rules);
        let u = Update {
            full: true,
            delta,
            unstaled: self.stale.keys().cloned().collect(),
            ..Update::default()
        };
        (u, p)
    }

    /// The transaction for a change of some service ports: `upserts` as they are now
    /// (unchanged ones are skipped), `removed` the keys of those gone; plus the
    /// deletion of chains stale long enough. Its size is the change's, not the table's.
    /// A change of more than a chunk of ports goes in several transactions, as a
    /// cold full sync does, each port's own edits in one.
    pub fn partial(&self, upserts: Vec<ServicePort>, removed: Vec<PortKey>) -> Update {
        let mut delta: BTreeMap<PortKey, Option<Entry>> = BTreeMap::new();
        for key in removed {
            if self.applied.contains_key(&key) {
                delta.insert(key, None);
            }
        }
        for sp in upserts {
            let key = port_key(&sp);
            if self.applied.get(&key).is_some_and(|e| e.0 == sp) {
                continue;
            }
            let objects = render::service_objects(&self.cfg, &sp);
            delta.insert(key, Some(Arc::new((sp, objects))));
        }
        let mut u = Update::default();
        let mut used: BTreeSet<&str> = BTreeSet::new();
        let entries: Vec<_> = delta.iter().collect();
        let mut groups: Vec<Phases> = Vec::new();
        for chunk in entries.chunks(self.chunk) {
            let mut p = Phases::default();
            for (key, new) in chunk {
                let old = self.applied.get(*key);
                self.service_edits(old, new.as_ref(), &mut p, &mut u.newly_stale);
                if let Some(n) = new {
                    used.extend(n.1.chains.iter().map(|c| c.name.as_str()));
                }
            }
            groups.push(p);
        }
        // More than a chunk of changes (a big apply): the element deletions and the
        // stale chains first, alone (a key may move to a port of another chunk),
        // then a transaction per chunk.
        let mut first = match groups.len() {
            0 | 1 => groups.pop().unwrap_or_default(),
            _ => Phases::default(),
        };
        for p in &mut groups {
            first.delete_elements.append(&mut p.delete_elements);
        }
        for (chain, since) in &self.stale {
            if used.contains(chain.as_str()) {
                u.unstaled.push(chain.clone());
            } else if since.elapsed() >= self.stale_after {
                first
                    .delete_chains
                    .push(format!("delete chain {TABLE} {chain}"));
                u.unstaled.push(chain.clone());
            }
        }
        u.push(first.text());
        groups.into_iter().for_each(|g| u.push(g.text()));
        u.delta = delta;
        u
    }

    /// The edits that take one service port from `old` to `new`.
    fn service_edits(
        &self,
        old: Option<&Entry>,
        new: Option<&Entry>,
        p: &mut Phases,
        newly_stale: &mut Vec<String>,
    ) {
        let old_chains: BTreeMap<&str, &Vec<String>> = old
            .map(|o| {
                o.1.chains
                    .iter()
                    .map(|c| (c.name.as_str(), &c.rules))
                    .collect()
            })
            .unwrap_or_default();
        let new_chains: BTreeMap<&str, &Vec<String>> = new
            .map(|n| {
                n.1.chains
                    .iter()
                    .map(|c| (c.name.as_str(), &c.rules))
                    .collect()
            })
            .unwrap_or_default();
        for (name, rules) in &new_chains {
            if old_chains.get(name) == Some(rules) {
                continue;
            }
            p.add_chains.push(format!("add chain {TABLE} {name}"));
            p.flush_chains.push(format!("flush chain {TABLE} {name}"));
            p.rules
                .extend(rules.iter().map(|r| format!("add rule {TABLE} {name} {r}")));
        }
        for name in old_chains.keys().filter(|n| !new_chains.contains_key(*n)) {
            p.flush_chains.push(format!("flush chain {TABLE} {name}"));
            newly_stale.push(name.to_string());
        }
        let sets = |e: Option<&Entry>| -> BTreeMap<String, u32> {
            e.map(|e| e.1.affinity_sets.iter().cloned().collect())
                .unwrap_or_default()
        };
        let (old_sets, new_sets) = (sets(old), sets(new));
        for (name, seconds) in &new_sets {
            if old_sets.get(name) != Some(seconds) {
                p.add_sets.push(affinity_set_line(name, *seconds));
            }
        }
        for name in old_sets.keys().filter(|n| !new_sets.contains_key(*n)) {
            p.delete_sets.push(format!("delete set {TABLE} {name}"));
        }
        let (old_el, new_el) = (elements_by_key(old), elements_by_key(new));
        for (key, el) in &old_el {
            if new_el.get(key) != Some(el) {
                p.delete_elements.push(el.delete_line());
            }
        }
        for (key, el) in &new_el {
            if old_el.get(key) != Some(el) {
                p.add_elements.push(el.add_line());
            }
        }
    }

    /// The node took `update`.
    pub fn commit(&mut self, update: Update) {
        if update.full {
            self.stale.clear();
        }
        for (key, entry) in update.delta {
            match entry {
                Some(e) => self.applied.insert(key, e),
                None => self.applied.remove(&key),
            };
        }
        for chain in update.unstaled {
            self.stale.remove(&chain);
        }
        let now = Instant::now();
        for chain in update.newly_stale {
            self.stale.insert(chain, now);
        }
        self.in_sync = true;
        self.table_absent = false;
    }

    /// The chains flushed and waiting to be deleted.
    pub fn stale_chains(&self) -> impl Iterator<Item = &str> {
        self.stale.keys().map(String::as_str)
    }

    /// Makes the stale chains look old enough to be deleted (upstream's test
    /// helper `ageStaleChains`).
    #[cfg(test)]
    pub fn age_stale_chains(&mut self) {
        let then = Instant::now() - self.stale_after * 2;
        self.stale.values_mut().for_each(|t| *t = then);
    }

    /// The node refused an update: what it holds is unknown, the next sync is full.
    pub fn failed(&mut self) {
        self.in_sync = false;
    }
}

//! A model of a node's iptables for tests without root: it takes `iptables-restore
//! --noflush` input as the kernel does (a chain line creates or flushes the chain,
//! `-A` appends, `-I CHAIN N` inserts, `-D` deletes the first equal rule, `-X` deletes
//! an empty chain nothing jumps to, `-Z` zeroes counters, each table is applied at
//! its `COMMIT` or not at all), so that a sequence of partial syncs can be compared
//! with one full sync, as kube-proxy's tests do with their fake iptables.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::kernel::exec::{Call, CommandError, Recorder};

const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

type Table = BTreeMap<String, Vec<String>>;

/// Tables -> chains -> rules (each rule as its text after the chain name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    tables: BTreeMap<String, Table>,
}

impl Model {
    /// Applies restore input with `--noflush` semantics. On an error, the table being
    /// restored is left as it was (tables committed before it stay committed).
    // Long because it is iptables-restore's line grammar, one arm per line kind, as the
    // real parser is.
    pub fn restore(&mut self, text: &str) -> Result<(), String> {
        let mut open: Option<(String, Table)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let err = |m: String| format!("line {}: {m}", i + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if open.is_some() {
                    return Err(err(format!(
                        "*{name} before the COMMIT of the table before"
                    )));
                }
                let mut table = self.tables.get(name).cloned().unwrap_or_default();
                for b in BUILTIN {
                    table.entry(b.to_string()).or_default();
                }
                open = Some((name.to_string(), table));
                continue;
            }
            let Some((_, table)) = open.as_mut() else {
                return Err(err(format!("{line:?} before any *table line")));
            };
            if line == "COMMIT" {
                let (name, table) = open.take().expect("open table");
                self.tables.insert(name, table);
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let chain = decl.split_whitespace().next().unwrap_or_default();
                // New, or flushed (a built-in chain only gets its policy).
                let rules = table.entry(chain.to_string()).or_default();
                if !BUILTIN.contains(&chain) {
                    rules.clear();
                }
                continue;
            }
            let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            let spec = spec.split_whitespace().collect::<Vec<_>>().join(" ");
            match op {
                "-Z" => {}
                "-A" => table
                    .get_mut(chain)
                    .ok_or_else(|| err(format!("-A to chain {chain}, which does not exist")))?
                    .push(spec),
                "-I" => {
                    let (n, spec) = spec.split_once(' ').unwrap_or((&spec, ""));
                    let n: usize = n
                        .parse()
                        .map_err(|_| err(format!("-I {chain} needs a rule number")))?;
                    let rules = table
                        .get_mut(chain)
                        .ok_or_else(|| err(format!("-I to chain {chain}, which does not exist")))?;
                    if n == 0 || n > rules.len() + 1 {
                        return Err(err(format!("-I {chain} {n}: index of insertion too big")));
                    }
                    rules.insert(n - 1, spec.to_string());
                }
                "-D" => {
                    let rules = table
                        .get_mut(chain)
                        .ok_or_else(|| err(format!("-D in chain {chain}, which does not exist")))?;
                    let at = rules.iter().position(|r| *r == spec).ok_or_else(|| {
                        err(format!("-D {chain} {spec}: no such rule (Bad rule)"))
                    })?;
                    rules.remove(at);
                }
                "-X" => {
                    let jump = [format!("-j {chain}"), format!("-g {chain}")];
                    let jumps_here = |r: &String| {
                        jump.iter()
                            .any(|j| r.ends_with(j.as_str()) || r.contains(&format!("{j} ")))
                    };
                    let used = table
                        .iter()
                        .any(|(c, rules)| c != chain && rules.iter().any(jumps_here));
                    match table.get(chain) {
                        None => return Err(err(format!("-X {chain}: no such chain"))),
                        Some(r) if !r.is_empty() => {
                            return Err(err(format!("-X {chain}: the chain is not empty")))
                        }
                        Some(_) if used => {
                            return Err(err(format!("-X {chain}: a rule still jumps to it")))
                        }
                        Some(_) => {
                            table.remove(chain);
                        }
                    }
                }
                _ => return Err(err(format!("{line:?} is not a rule line this model takes"))),
            }
        }
        match open {
            Some((name, _)) => Err(format!("*{name} has no COMMIT")),
            None => Ok(()),
        }
    }

    /// The rules of `table`'s `chain`, if it exists.
    pub fn chain(&self, table: &str, chain: &str) -> Option<&[String]> {
        self.tables.get(table)?.get(chain).map(Vec::as_slice)
    }

    /// The model with what order does not decide put in one order: the rules of the
    /// `KUBE-SERVICES` chains (each matches its own ClusterIP and port, so their order
    /// does not change where a packet goes) sorted, all but the last, which must stay
    /// last (the jump to `KUBE-NODEPORTS`). Empty built-in chains are left out.
    pub fn canonical(&self) -> Model {
        let mut out = self.clone();
        for table in out.tables.values_mut() {
            table.retain(|c, rules| !(BUILTIN.contains(&c.as_str()) && rules.is_empty()));
            if let Some(rules) = table.get_mut("KUBE-SERVICES") {
                let last = if rules.iter().any(|r| r.contains("KUBE-NODEPORTS")) {
                    rules.pop()
                } else {
                    None
                };
                rules.sort();
                rules.extend(last);
            }
        }
        out.tables.retain(|_, t| !t.is_empty());
        out
    }

    /// What [`fixed::check_script`](super::fixed::check_script) prints on a node
    /// holding this model.
    pub fn check_output(&self) -> String {
        let mut out = String::new();
        for t in super::fixed::CANARY_TABLES {
            if self.chain(t, super::fixed::CANARY).is_none() {
                out += &format!("no-canary {t}\n");
            }
        }
        for t in ["filter", "nat"] {
            out += &format!("*{t}\n");
            for chain in BUILTIN {
                for r in self.chain(t, chain).unwrap_or_default() {
                    out += &format!("-A {chain} {r}\n");
                }
            }
        }
        out
    }

    /// Removes a table, as `iptables -F` and `-X` of everything in it would.
    pub fn flush(&mut self, table: &str) {
        self.tables.remove(table);
    }

    /// Deletes the first rule of `chain` equal to `rule` (as `iptables -D`).
    pub fn delete(&mut self, table: &str, chain: &str, rule: &str) -> bool {
        let Some(rules) = self.tables.get_mut(table).and_then(|t| t.get_mut(chain)) else {
            return false;
        };
        match rules.iter().position(|r| r == rule) {
            Some(i) => {
                rules.remove(i);
                true
            }
            None => false,
        }
    }

    /// The tables as `iptables-save` prints them (for the tracer).
    pub fn save(&self) -> String {
        let mut out = String::new();
        for (name, table) in &self.tables {
            out += &format!("*{name}\n");
            for chain in table.keys() {
                let policy = if BUILTIN.contains(&chain.as_str()) {
                    "ACCEPT"
                } else {
                    "-"
                };
                out += &format!(":{chain} {policy} [0:0]\n");
            }
            for (chain, rules) in table {
                for r in rules {
                    out += &format!("-A {chain} {r}\n");
                }
            }
            out += "COMMIT\n";
        }
        out
    }
}

/// A [`Recorder`] that applies every `iptables-restore` it is given to `model`
/// (refusing what the model refuses), answers kube-proxy's check from it, and
/// answers every other command with success.
pub fn node(model: Arc<Mutex<Model>>) -> Recorder {
    Recorder::answering(move |call: &Call| {
        if call.program == "sh" {
            return Ok(model.lock().expect("model lock").check_output());
        }
        if call.program != "iptables-restore" {
            return Ok(String::new());
        }
        let text = call.stdin.as_deref().unwrap_or_default();
        model
            .lock()
            .expect("model lock")
            .restore(text)
            .map(|_| String::new())
            .map_err(|stderr| CommandError::Failed {
                program: call.program.clone(),
                args: call.args.join(" "),
                status: "exit status: 1".into(),
                stderr,
            })
    })
}

//! A model of the table `ip kube-proxy` as the kernel holds it: it takes the same
//! transactions `nft -f` takes (the commands kube-proxy's backend writes: add, flush
//! and delete of the table, chains, rules, sets, maps and elements), refuses what
//! nft would refuse (a rule in a missing chain, a chain deleted while something
//! jumps to it, an element deleted that is not there), and lists the table the way
//! upstream's `knftables.Fake.Dump` does, so a golden can be compared and a packet
//! traced without a kernel.

use std::collections::BTreeMap;

use super::render::TABLE;

/// A map or a set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    /// `set` or `map`.
    pub kind: String,
    /// What is between the braces of its `add`.
    pub spec: String,
    /// Key -> the rest of the element (` comment "..."` and ` : verdict`).
    pub elements: BTreeMap<String, Element>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub comment: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainState {
    pub spec: Option<String>,
    pub rules: Vec<String>,
}

/// The table, or nothing when it does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub exists: bool,
    pub comment: Option<String>,
    pub chains: BTreeMap<String, ChainState>,
    pub containers: BTreeMap<String, Container>,
}

/// Splits `NAME { SPEC }` (the braces optional).
fn name_and_spec(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once(" { ") {
        Some((name, spec)) => (name, Some(spec.trim_end_matches('}').trim_end())),
        None => (rest.trim(), None),
    }
}

/// An element's `KEY [comment "C"] [: VALUE]`.
fn parse_element(inner: &str) -> (String, Element) {
    if let Some((key, after)) = inner.split_once(" comment \"") {
        let (comment, rest) = after.split_once('"').unwrap_or((after, ""));
        let value = rest.trim().strip_prefix(": ").map(String::from);
        let e = Element {
            comment: Some(comment.to_string()),
            value,
        };
        return (key.to_string(), e);
    }
    match inner.split_once(" : ") {
        Some((key, value)) => (
            key.to_string(),
            Element {
                comment: None,
                value: Some(value.to_string()),
            },
        ),
        None => (inner.to_string(), Element::default()),
    }
}

/// The chains a rule or verdict sends to (`jump X`, `goto X`, and the `goto`s of
/// a verdict map).
pub fn targets(text: &str) -> impl Iterator<Item = &str> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    for w in words.windows(2) {
        if w[0] == "jump" || w[0] == "goto" {
            out.push(w[1]);
        }
    }
    out.into_iter()
}

impl Table {
    /// Applies a transaction, all of it or (on the first error) none of it.
    pub fn apply(&mut self, tx: &str) -> Result<(), String> {
        let mut next = self.clone();
        for (n, line) in tx.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            next.command(line)
                .map_err(|e| format!("line {}: {e}: {line}", n + 1))?;
        }
        *self = next;
        Ok(())
    }

    fn command(&mut self, line: &str) -> Result<(), String> {
        let mut words = line.splitn(3, ' ');
        let (verb, what) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let rest = words.next().unwrap_or("");
        let rest = rest
            .strip_prefix(TABLE)
            .ok_or_else(|| format!("not the table {TABLE}"))?
            .trim_start();
        if what == "table" {
            return self.table(verb, rest);
        }
        if !self.exists {
            return Err("No such file or directory (no table)".into());
        }
        match what {
            "chain" => self.chain(verb, rest),
            "rule" => {
                let (chain, rule) = rest.split_once(' ').ok_or("a rule without text")?;
                if verb != "add" {
                    return Err(format!("cannot {verb} a rule"));
                }
                for t in targets(rule) {
                    if !self.chains.contains_key(t) {
                        return Err(format!("No such file or directory (chain {t})"));
                    }
                }
                let c = self
                    .chains
                    .get_mut(chain)
                    .ok_or("No such file or directory")?;
                c.rules.push(rule.to_string());
                Ok(())
            }
            "set" | "map" => self.container(verb, what, rest),
            "element" => self.element(verb, rest),
            other => Err(format!("unknown object {other}")),
        }
    }

    fn table(&mut self, verb: &str, rest: &str) -> Result<(), String> {
        match verb {
            "add" => {
                if !self.exists {
                    *self = Table::default();
                    self.exists = true;
                }
                if let (_, Some(spec)) = name_and_spec(&format!("x {rest}")) {
                    let c = spec.trim_start_matches("comment \"");
                    self.comment = Some(c.split('"').next().unwrap_or("").to_string());
                }
                Ok(())
            }
            "delete" if self.exists => {
                *self = Table::default();
                Ok(())
            }
            "flush" => {
                self.chains.values_mut().for_each(|c| c.rules.clear());
                Ok(())
            }
            _ => Err("No such file or directory (table)".into()),
        }
    }

    fn chain(&mut self, verb: &str, rest: &str) -> Result<(), String> {
        let (name, spec) = name_and_spec(rest);
        match verb {
            "add" => {
                let c = self.chains.entry(name.to_string()).or_default();
                if spec.is_some() {
                    c.spec = spec.map(String::from);
                }
                Ok(())
            }
            "flush" => {
                let c = self
                    .chains
                    .get_mut(name)
                    .ok_or("No such file or directory")?;
                c.rules.clear();
                Ok(())
            }
            "delete" => {
                if !self
                    .chains
                    .get(name)
                    .ok_or("No such file or directory")?
                    .rules
                    .is_empty()
                {
                    return Err("Device or resource busy (the chain has rules)".into());
                }
                if self.referenced(name) {
                    return Err("Device or resource busy (the chain is jumped to)".into());
                }
                self.chains.remove(name);
                Ok(())
            }
            _ => Err(format!("cannot {verb} a chain")),
        }
    }

    /// Whether a rule or a map's verdict sends to `chain`.
    fn referenced(&self, chain: &str) -> bool {
        let in_rules = self
            .chains
            .values()
            .flat_map(|c| c.rules.iter())
            .any(|r| targets(r).any(|t| t == chain));
        let in_maps = self
            .containers
            .values()
            .flat_map(|c| c.elements.values())
            .filter_map(|e| e.value.as_deref())
            .any(|v| targets(v).any(|t| t == chain));
        in_rules || in_maps
    }

    fn container(&mut self, verb: &str, kind: &str, rest: &str) -> Result<(), String> {
        let (name, spec) = name_and_spec(rest);
        match verb {
            "add" => {
                let c = self.containers.entry(name.to_string()).or_default();
                c.kind = kind.to_string();
                if let Some(spec) = spec {
                    c.spec = spec.to_string();
                }
                Ok(())
            }
            "flush" => {
                let c = self
                    .containers
                    .get_mut(name)
                    .ok_or("No such file or directory")?;
                c.elements.clear();
                Ok(())
            }
            "delete" => {
                let used =
                    self.chains.values().flat_map(|c| c.rules.iter()).any(|r| {
                        r.contains(&format!("@{name} ")) || r.ends_with(&format!("@{name}"))
                    });
                if used {
                    return Err("Device or resource busy (a rule uses the set)".into());
                }
                self.containers
                    .remove(name)
                    .map(|_| ())
                    .ok_or_else(|| "No such file or directory".into())
            }
            _ => Err(format!("cannot {verb} a {kind}")),
        }
    }

    fn element(&mut self, verb: &str, rest: &str) -> Result<(), String> {
        let (name, inner) = rest.split_once(" { ").ok_or("an element without braces")?;
        let inner = inner.trim_end_matches('}').trim();
        let (key, element) = parse_element(inner);
        if let Some(v) = &element.value {
            for t in targets(v) {
                if !self.chains.contains_key(t) {
                    return Err(format!("No such file or directory (chain {t})"));
                }
            }
        }
        let c = self
            .containers
            .get_mut(name)
            .ok_or("No such file or directory")?;
        match verb {
            "add" => match c.elements.get(&key) {
                Some(old) if old.value != element.value => Err("File exists".into()),
                Some(_) => Ok(()),
                None => {
                    c.elements.insert(key, element);
                    Ok(())
                }
            },
            "delete" => c
                .elements
                .remove(&key)
                .map(|_| ())
                .ok_or_else(|| "No such file or directory (element)".into()),
            _ => Err(format!("cannot {verb} an element")),
        }
    }

    /// The table as `add` commands, as upstream's `knftables.Fake.Dump` lists it.
    pub fn dump(&self) -> String {
        if !self.exists {
            return String::new();
        }
        let mut out = match &self.comment {
            Some(c) => format!("add table {TABLE} {{ comment \"{c}\" ; }}\n"),
            None => format!("add table {TABLE}\n"),
        };
        for (name, c) in &self.chains {
            match &c.spec {
                Some(spec) => out += &format!("add chain {TABLE} {name} {{ {spec} }}\n"),
                None => out += &format!("add chain {TABLE} {name}\n"),
            }
        }
        for (name, c) in &self.containers {
            out += &format!("add {} {TABLE} {name} {{ {} }}\n", c.kind, c.spec);
        }
        for (name, c) in &self.chains {
            for r in &c.rules {
                out += &format!("add rule {TABLE} {name} {r}\n");
            }
        }
        for (name, c) in &self.containers {
            for (key, e) in &c.elements {
                out += &super::render::element_line(
                    name,
                    key,
                    e.comment.as_deref(),
                    e.value.as_deref(),
                );
                out.push('\n');
            }
        }
        out
    }
}

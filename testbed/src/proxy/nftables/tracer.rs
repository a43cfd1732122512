//! Follows a new connection through the table `ip kube-proxy` as [`state::Table`]
//! holds it, the way upstream's `nftablesTracer` (`helpers_test.go`) does: the
//! pre-DNAT filter chain, `nat-prerouting` (its DNAT changes the destination the
//! later chains see), then `filter-forward` and `filter-input`. Every random pick is
//! followed, so the output lists every endpoint the packet can reach, or `DROP` /
//! `REJECT`. It knows the statements kube-proxy writes and fails on any other.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::render::MARK_MASQ;
use super::state::Table;

/// Where a packet went: its outputs (endpoints or a verdict), whether it was marked
/// for masquerading, and the rules it matched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trace {
    pub outputs: Vec<String>,
    pub masq: bool,
    pub matches: Vec<String>,
}

impl Trace {
    /// The outputs as upstream's packet-flow tests write them: `a, b` or `DROP`.
    pub fn output(&self) -> String {
        self.outputs.join(", ")
    }
}

struct Tracer<'a> {
    table: &'a Table,
    node_ips: BTreeSet<Ipv4Addr>,
    src: Ipv4Addr,
    proto: &'a str,
    dst: Ipv4Addr,
    port: u16,
    out: Trace,
    depth: usize,
}

/// An address or a CIDR matches `ip`.
fn matches_addr(ip: Ipv4Addr, text: &str) -> Result<bool, String> {
    if text.contains('/') {
        let net: Ipv4Net = text.parse().map_err(|_| format!("bad CIDR {text}"))?;
        Ok(net.contains(&ip))
    } else {
        let a: Ipv4Addr = text.parse().map_err(|_| format!("bad address {text}"))?;
        Ok(a == ip)
    }
}

/// `{ a , b }`: whether `ip` is in the anonymous set, and the rest of the rule.
fn in_anonymous_set(ip: Ipv4Addr, rest: &str) -> Result<(bool, &str), String> {
    let inner = rest.strip_prefix("{ ").ok_or("expected {")?;
    let (set, after) = inner.split_once(" }").ok_or("expected }")?;
    let mut any = false;
    for a in set.split(',') {
        any |= matches_addr(ip, a.trim())?;
    }
    Ok((any, after))
}

/// Takes the word after `prefix` off `rule`.
fn word_after<'r>(rule: &'r str, prefix: &str) -> Option<(&'r str, &'r str)> {
    let rest = rule.strip_prefix(prefix)?;
    Some(rest.split_once(' ').unwrap_or((rest, "")))
}

/// What one statement did: go on with the rest of the rule, stop the rule (no
/// match), or end the chain (`true`: a final verdict was reached).
enum Step<'r> {
    Next(&'r str),
    NoMatch,
    Return(bool),
}

impl Tracer<'_> {
    fn key_in(&self, set: &str, key: &str) -> Result<Option<Option<String>>, String> {
        let c = self
            .table
            .containers
            .get(set)
            .ok_or_else(|| format!("no set or map {set}"))?;
        Ok(c.elements.get(key).map(|e| e.value.clone()))
    }

    fn dest_key(&self) -> String {
        format!("{} . {} . {}", self.dst, self.proto, self.port)
    }

    fn port_key(&self) -> String {
        format!("{} . {}", self.proto, self.port)
    }

    /// Runs a chain: whether a final verdict was reached in it.
    fn chain(&mut self, name: &str) -> Result<bool, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(format!("jumps nest too deep at {name}"));
        }
        let chain = self
            .table
            .chains
            .get(name)
            .ok_or_else(|| format!("unknown chain {name}"))?;
        for rule in &chain.rules {
            if let Some(done) = self.rule(rule)? {
                self.depth -= 1;
                return Ok(done);
            }
        }
        self.depth -= 1;
        Ok(false)
    }

    /// Runs a rule: `None` to go on with the chain, `Some(final)` to leave it.
    fn rule(&mut self, text: &str) -> Result<Option<bool>, String> {
        let mut rule = match text.find(" comment \"") {
            Some(i) => &text[..i],
            None => text,
        };
        rule = rule
            .strip_prefix("ct state new")
            .unwrap_or(rule)
            .trim_start();
        while !rule.is_empty() {
            match self.statement(rule, text)? {
                Step::Next(rest) => rule = rest.trim_start(),
                Step::NoMatch => return Ok(None),
                Step::Return(done) => return Ok(Some(done)),
            }
        }
        Ok(None)
    }

    /// A verdict (`goto X`, `jump X`, `drop`, `reject`) reached by a rule or a map.
    fn verdict<'r>(&mut self, verdict: &'r str, text: &str) -> Result<Step<'r>, String> {
        let (word, rest) = verdict.split_once(' ').unwrap_or((verdict, ""));
        match word {
            "drop" | "reject" => {
                self.out.matches.push(text.to_string());
                self.out.outputs.push(word.to_uppercase());
                Ok(Step::Return(true))
            }
            "return" => Ok(Step::Return(false)),
            "jump" | "goto" => {
                let (target, after) = rest.split_once(' ').unwrap_or((rest, ""));
                self.out.matches.push(text.to_string());
                if target == MARK_MASQ {
                    self.out.masq = true;
                    return Ok(Step::Next(after));
                }
                if self.chain(target)? {
                    return Ok(Step::Return(true));
                }
                if word == "goto" {
                    return Ok(Step::Return(false));
                }
                Ok(Step::Next(after))
            }
            other => Err(format!("unknown verdict {other:?} in {text:?}")),
        }
    }

    /// One statement of a rule, as upstream's tracer has one regular expression per
    /// kind of statement kube-proxy writes.
    fn statement<'r>(&mut self, rule: &'r str, text: &str) -> Result<Step<'r>, String> {
        let looked_up = |found: bool, rest: &'r str| {
            if found {
                Step::Next(rest)
            } else {
                Step::NoMatch
            }
        };
        if let Some(rest) = rule.strip_prefix("ip daddr . meta l4proto . th dport vmap @") {
            let value = self.key_in(rest.trim(), &self.dest_key())?;
            return match value.flatten() {
                Some(v) => self.verdict_owned(v, text),
                None => Ok(Step::NoMatch),
            };
        }
        if let Some(rest) = rule.strip_prefix("meta l4proto . th dport vmap @") {
            let value = self.key_in(rest.trim(), &self.port_key())?;
            return match value.flatten() {
                Some(v) => self.verdict_owned(v, text),
                None => Ok(Step::NoMatch),
            };
        }
        if let Some((set, rest)) = word_after(rule, "ip daddr @") {
            let found = self.key_in(set, &self.dst.to_string())?.is_some();
            return Ok(looked_up(found, rest));
        }
        if let Some((set, rest)) = word_after(rule, "ip saddr @") {
            // An affinity set: no client is remembered in a trace.
            let found = self.key_in(set, &self.src.to_string())?.is_some();
            return Ok(looked_up(found, rest));
        }
        if let Some(step) = self.address(rule)? {
            return Ok(step);
        }
        if let Some(rest) = rule.strip_prefix("numgen random mod ") {
            let picks = rest
                .split_once("vmap { ")
                .map(|(_, p)| p)
                .ok_or("bad numgen")?;
            let picks = picks.trim_end().trim_end_matches('}');
            for pick in picks.split(" , ") {
                let target = pick.split(" : goto ").nth(1).ok_or("bad numgen pick")?;
                self.out.matches.push(text.to_string());
                self.chain(target.trim())?;
            }
            return Ok(Step::Return(true));
        }
        if let Some(rest) = rule.strip_prefix("meta l4proto ") {
            let (proto, rest) = rest.split_once(' ').ok_or("bad dnat")?;
            if let Some(to) = rest.strip_prefix("dnat to ") {
                if proto != self.proto {
                    return Ok(Step::NoMatch);
                }
                self.out.matches.push(text.to_string());
                self.out.outputs.push(to.trim().to_string());
                return Ok(Step::Return(true));
            }
        }
        if rule.starts_with("update @") {
            // Remembers the client for affinity: no effect on this packet.
            let after = rule.split_once(" }").map(|(_, r)| r).unwrap_or("");
            return Ok(Step::Next(after));
        }
        self.verdict(rule, text)
    }

    /// A match on the source or destination address: a literal, a CIDR, an
    /// anonymous set, or the node's own addresses.
    fn address<'r>(&self, rule: &'r str) -> Result<Option<Step<'r>>, String> {
        let looked_up = |found: bool, rest: &'r str| {
            if found {
                Step::Next(rest)
            } else {
                Step::NoMatch
            }
        };
        for (prefix, ip) in [("ip daddr ", self.dst), ("ip saddr ", self.src)] {
            if let Some(rest) = rule.strip_prefix(prefix) {
                let (negate, rest) = match rest.strip_prefix("!= ") {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                let (hit, rest) = if rest.starts_with('{') {
                    in_anonymous_set(ip, rest)?
                } else {
                    let (a, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                    (matches_addr(ip, a)?, rest)
                };
                return Ok(Some(looked_up(hit != negate, rest)));
            }
        }
        for (prefix, ip) in [
            ("fib saddr type local", self.src),
            ("fib daddr type local", self.dst),
        ] {
            if let Some(rest) = rule.strip_prefix(prefix) {
                return Ok(Some(looked_up(self.node_ips.contains(&ip), rest)));
            }
        }
        Ok(None)
    }

    fn verdict_owned<'r>(&mut self, v: String, text: &str) -> Result<Step<'r>, String> {
        match self.verdict(&v, text)? {
            Step::Return(done) => Ok(Step::Return(done)),
            Step::NoMatch => Ok(Step::NoMatch),
            // A verdict map's verdict ends the rule.
            Step::Next(_) => Ok(Step::Return(false)),
        }
    }
}

/// Traces a new connection from `src` to `dst:port` over `proto` (`tcp`, `udp`,
/// `sctp`) through `table`, with `node_ips` the node's own addresses.
pub fn trace(
    table: &Table,
    node_ips: &[Ipv4Addr],
    src: Ipv4Addr,
    proto: &str,
    dst: Ipv4Addr,
    port: u16,
) -> Result<Trace, String> {
    let mut t = Tracer {
        table,
        node_ips: node_ips.iter().copied().collect(),
        src,
        proto,
        dst,
        port,
        out: Trace::default(),
        depth: 0,
    };
    if t.chain("filter-prerouting-pre-dnat")? {
        return Ok(t.out);
    }
    t.chain("nat-prerouting")?;
    if let Some(first) = t.out.outputs.first() {
        if let Some((ip, _)) = first.split_once(':') {
            t.dst = ip
                .parse()
                .map_err(|_| format!("bad DNAT address {first}"))?;
        }
    }
    if t.chain("filter-forward")? {
        return Ok(t.out);
    }
    t.chain("filter-input")?;
    Ok(t.out)
}

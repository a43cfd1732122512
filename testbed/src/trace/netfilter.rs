//! A node's part of a trace in words: the chains and rules the first packet passed
//! there, the DNAT it got and why that endpoint, whether it was marked for
//! masquerade, and the conntrack entry that remembers the rewrite.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::events::{Pass, Step};
use super::monitor::TABLE;
use super::world::{key, World};
use super::Hop;

/// The steps of `passes` outside our own trace table, in order.
pub fn steps(passes: &[Pass]) -> Vec<&Step> {
    passes
        .iter()
        .filter(|p| p.table != TABLE)
        .flat_map(|p| p.steps.iter())
        .collect()
}

/// The DNAT a step made: the rewritten destination and the step.
pub fn dnat<'a>(steps: &[&'a Step]) -> Option<(SocketAddrV4, &'a Step)> {
    steps
        .iter()
        .find_map(|s| {
            let to = s.rule.split("dnat to ").nth(1)?.split_whitespace().next()?;
            // nft prints `dnat ip to A:P` in the nftables mode's maps too.
            Some((to.parse().ok()?, *s))
        })
        .or_else(|| {
            steps.iter().find_map(|s| {
                let to = s
                    .rule
                    .split("dnat ip to ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?;
                Some((to.parse().ok()?, *s))
            })
        })
}

/// One step as a line: `nat KUBE-SERVICES: ip daddr 10.96.0.2 tcp dport 80 -> jump KUBE-SVC-X`.
fn step_line(s: &Step) -> String {
    let verdict = if s.verdict.is_empty() {
        "matched"
    } else {
        &s.verdict
    };
    if s.rule.is_empty() {
        format!("{} {}: policy {verdict}", s.table, s.chain)
    } else {
        let rule = s.rule.strip_suffix(verdict).unwrap_or(&s.rule).trim_end();
        if rule.is_empty() {
            format!("{} {}: -> {verdict}", s.table, s.chain)
        } else {
            format!("{} {}: {rule} -> {verdict}", s.table, s.chain)
        }
    }
}

/// The packet as the first pass saw it: `10.244.1.2:20417 -> 10.96.0.2:80 tcp syn, in cbr0`.
fn packet_line(p: &Pass) -> String {
    let k = &p.packet;
    let addr = |a: Option<Ipv4Addr>, port: Option<u16>| match (a, port) {
        (Some(a), Some(p)) => format!("{a}:{p}"),
        (Some(a), None) => a.to_string(),
        _ => "?".into(),
    };
    let mut s = format!(
        "packet {} -> {} {}",
        addr(k.saddr, k.sport),
        addr(k.daddr, k.dport),
        k.protocol.as_deref().unwrap_or("ip")
    );
    if let Some(f) = &k.flags {
        s += &format!(" [{f}]");
    }
    if let Some(i) = &k.iif {
        s += &format!(", in by {i}");
    }
    s
}

/// The hop of node `node` for the first packet's `passes`.
pub fn node_hop(world: &World, node: &str, passes: &[Pass], rules: Option<&str>) -> Hop {
    let mut hop = Hop::new(format!("node {node}"), "netfilter, first packet");
    if let Some(first) = passes.iter().find(|p| p.table != TABLE) {
        hop.line(packet_line(first));
    }
    let steps = steps(passes);
    for s in &steps {
        hop.line(step_line(s));
    }
    let stopped = steps
        .iter()
        .any(|s| s.verdict == "drop" || s.rule.ends_with("reject"));
    if let Some(out) = passes.iter().rev().find_map(|p| p.packet.oif.clone()) {
        if !stopped {
            hop.line(format!("leaves by {out}"));
        }
    }
    if let Some((to, by)) = dnat(&steps) {
        let who = world
            .pod_at(*to.ip())
            .map(|p| format!(" (pod {})", key(&p.metadata)))
            .unwrap_or_default();
        hop.line(format!("DNAT to {to}{who} by {} {}", by.table, by.chain));
        if let Some(rules) = rules {
            for l in why_endpoint(&steps, by, rules) {
                hop.line(l);
            }
        }
    }
    let m = masquerade(&steps);
    if (rules.is_some() && !stopped) || m.starts_with("masquerade: yes") {
        hop.line(m);
    }
    hop
}

/// Why the packet went to that endpoint: the rules of the chain that chose it
/// (its probabilities, affinity), as the node has them.
fn why_endpoint(steps: &[&Step], by: &Step, rules: &str) -> Vec<String> {
    // The chain that jumped to the DNAT's chain picked the endpoint.
    let picker = steps
        .iter()
        .find(|s| s.verdict.ends_with(&format!(" {}", by.chain)))
        .map(|s| s.chain.clone());
    let Some(picker) = picker else {
        return Vec::new();
    };
    let prefix = format!("-A {picker} ");
    let lines: Vec<String> = rules
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|l| format!("  {l}"))
        .collect();
    if lines.is_empty() {
        // nftables mode: the picking rule is in the trace already.
        return vec![format!("{picker} picked it (the rule above)")];
    }
    let mut out = vec![format!("{picker} picks among its rules, in order:")];
    out.extend(lines);
    out
}

/// Whether a rule marked the packet for masquerade, in words.
fn masquerade(steps: &[&Step]) -> String {
    let marked = steps.iter().find(|s| {
        s.verdict.contains("KUBE-MARK-MASQ")
            || s.verdict.contains("mark-for-masquerade")
            || s.rule.contains("mark set mark or 0x4000")
    });
    let done = steps
        .iter()
        .any(|s| s.verdict.contains("masquerade") && !s.verdict.contains("mark-for"))
        || steps
            .iter()
            .any(|s| s.rule.ends_with("masquerade") || s.rule.contains("masquerade fully-random"));
    match (marked, done) {
        (Some(s), _) => format!(
            "masquerade: yes, marked by {} {}{}",
            s.table,
            s.chain,
            if done { ", source rewritten in POSTROUTING" } else { "" }
        ),
        (None, true) => "masquerade: yes".into(),
        (None, false) => {
            "masquerade: no (no rule marked it 0x4000: a pod reaching a Service keeps its own address)".into()
        }
    }
}

/// The Service's side of the choice: its endpoint set and the policies that narrow
/// it, as the API has them.
pub fn service_lines(world: &World, svc: &k8s_openapi::api::core::v1::Service) -> Vec<String> {
    let spec = svc.spec.clone().unwrap_or_default();
    let eps = world.endpoints(svc);
    let set: Vec<String> = eps
        .iter()
        .filter(|e| e.ready)
        .map(|e| format!("{} on {}", e.ip, e.node.as_deref().unwrap_or("?")))
        .collect();
    let mut out = vec![format!(
        "Service {}: {} ready endpoints of {} ({})",
        key(&svc.metadata),
        set.len(),
        eps.len(),
        set.join(", ")
    )];
    if spec.session_affinity.as_deref() == Some("ClientIP") {
        let secs = spec
            .session_affinity_config
            .and_then(|c| c.client_ip)
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(10800);
        out.push(format!(
            "sessionAffinity ClientIP: a client keeps its endpoint for {secs} s (the `recent` match or the affinity set)"
        ));
    }
    if spec.internal_traffic_policy.as_deref() == Some("Local") {
        out.push(
            "internalTrafficPolicy Local: only endpoints on the client's node are picked".into(),
        );
    }
    if spec.external_traffic_policy.as_deref() == Some("Local") {
        out.push("externalTrafficPolicy Local: traffic from outside goes only to endpoints on the node it arrived at".into());
    }
    out
}

/// A conntrack entry: `(original, reply, state)` as `A:P -> B:Q`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conntrack {
    pub original: (SocketAddrV4, SocketAddrV4),
    pub reply: (SocketAddrV4, SocketAddrV4),
    pub state: String,
    pub flags: Vec<String>,
}

/// The first entry `conntrack -L` printed.
pub fn conntrack(text: &str) -> Option<Conntrack> {
    let line = text.lines().find(|l| l.contains("src="))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let get = |k: &str| -> Vec<&str> { words.iter().filter_map(|w| w.strip_prefix(k)).collect() };
    let (src, dst, sport, dport) = (get("src="), get("dst="), get("sport="), get("dport="));
    let addr = |i: usize, a: &[&str], p: &[&str]| -> Option<SocketAddrV4> {
        Some(SocketAddrV4::new(
            a.get(i)?.parse().ok()?,
            p.get(i)?.parse().ok()?,
        ))
    };
    let state = words
        .iter()
        .find(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_') && w.len() > 3)
        .map(|s| s.to_string())
        .unwrap_or_default();
    Some(Conntrack {
        original: (addr(0, &src, &sport)?, addr(0, &dst, &dport)?),
        reply: (addr(1, &src, &sport)?, addr(1, &dst, &dport)?),
        state,
        flags: words
            .iter()
            .filter(|w| w.starts_with('['))
            .map(|w| w.trim_matches(['[', ']']).to_string())
            .collect(),
    })
}

/// The conntrack hop: the entry's two directions, and what they say.
pub fn conntrack_hop(node: &str, text: &str) -> Option<Hop> {
    let c = conntrack(text)?;
    let mut hop = Hop::new(format!("node {node}"), "conntrack entry");
    hop.line(format!("original {} -> {}", c.original.0, c.original.1));
    hop.line(format!("reply    {} -> {}", c.reply.0, c.reply.1));
    if !c.state.is_empty() || !c.flags.is_empty() {
        hop.varying(
            format!("state {} {}", c.state, c.flags.join(" "))
                .trim_end()
                .to_string(),
        );
    }
    if c.flags.iter().any(|f| f == "UNREPLIED") {
        hop.line("UNREPLIED: no packet ever came back");
    }
    if c.reply.0 != c.original.1 {
        hop.line(format!(
            "replies from {} are rewritten back to come from {} (un-DNAT)",
            c.reply.0, c.original.1
        ));
    }
    if c.reply.1 != c.original.0 {
        hop.line(format!(
            "the endpoint answers {}: the source was masqueraded",
            c.reply.1
        ));
    }
    Some(hop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_conntrack_entry() {
        let c = conntrack("tcp      6 119 TIME_WAIT src=10.244.1.2 dst=10.96.0.2 sport=20417 dport=80 src=10.244.2.2 dst=10.244.1.2 sport=8080 dport=20417 [ASSURED] mark=0 use=1\n").unwrap();
        assert_eq!(c.original.1.to_string(), "10.96.0.2:80");
        assert_eq!(c.reply.0.to_string(), "10.244.2.2:8080");
        assert_eq!(c.state, "TIME_WAIT");
        assert_eq!(c.flags, ["ASSURED"]);
        assert!(conntrack("conntrack v1.4.7: 0 flow entries").is_none());
    }

    #[test]
    fn a_step_reads_as_its_rule_and_verdict() {
        let s = Step {
            table: "nat".into(),
            chain: "KUBE-SERVICES".into(),
            rule: "ip daddr 10.96.0.2 tcp dport 80 jump KUBE-SVC-X".into(),
            verdict: "jump KUBE-SVC-X".into(),
        };
        assert_eq!(
            step_line(&s),
            "nat KUBE-SERVICES: ip daddr 10.96.0.2 tcp dport 80 -> jump KUBE-SVC-X"
        );
        let d = Step {
            rule: "meta l4proto tcp dnat to 10.244.2.2:8080".into(),
            verdict: "accept".into(),
            ..s.clone()
        };
        let all = [&s, &d];
        assert_eq!(dnat(&all).unwrap().0.to_string(), "10.244.2.2:8080");
        let why = why_endpoint(
            &all,
            &Step {
                chain: "KUBE-SEP-A".into(),
                ..d.clone()
            },
            "",
        );
        assert!(why.is_empty(), "nothing jumped to KUBE-SEP-A: {why:?}");
        assert!(masquerade(&all).starts_with("masquerade: no"));
    }
}

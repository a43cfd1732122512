//! Where and why a traced connection failed, in words, with the rule or the state
//! that decided it: a REJECT or DROP of kube-proxy (and what of the Service made
//! it: no endpoints, none ready, none local), an endpoint that refused, a packet
//! last seen leaving a node, a link that is down.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;

use super::events::{Pass, Step};
use super::gather::Evidence;
use super::netfilter;
use super::world::{key, World};
use crate::probe::connect::Outcome;

/// Where it failed (`node node-1`) and why, first line the gist.
pub fn failure(
    world: &World,
    ev: &Evidence,
    seen: &[(String, Vec<Pass>)],
    outcome: &Outcome,
) -> (String, Vec<String>) {
    // The rule that stopped the packet, and the one that sent it there.
    let verdict = |word: &str| -> Option<(String, Step, Option<Step>)> {
        seen.iter().find_map(|(node, passes)| {
            let steps = netfilter::steps(passes);
            let at = steps
                .iter()
                .position(|s| s.rule.ends_with(word) || s.verdict == word)?;
            let from = at
                .checked_sub(1)
                .map(|i| steps[i])
                .filter(|p| p.verdict.ends_with(&format!(" {}", steps[at].chain)));
            Some((node.clone(), steps[at].clone(), from.cloned()))
        })
    };
    let service = ev.destination.and_then(|d| match d.ip() {
        IpAddr::V4(ip) => world.service_at(ip),
        IpAddr::V6(_) => None,
    });
    let mut why = Vec::new();
    let at = match outcome {
        Outcome::Refused | Outcome::Timeout => {
            let stopped = verdict("reject").or_else(|| verdict("drop"));
            if let Some((node, step, from)) = stopped {
                let what = if step.verdict.contains("reject") || step.rule.ends_with("reject") {
                    "rejected"
                } else {
                    "dropped"
                };
                why.push(format!(
                    "{what} by {} {}: {}",
                    step.table, step.chain, step.rule
                ));
                if let Some(f) = from {
                    why.push(format!("sent there by {} {}: {}", f.table, f.chain, f.rule));
                }
                why.extend(
                    service
                        .map(|s| service_state(world, s, &ev.links))
                        .unwrap_or_default(),
                );
                format!("node {node}")
            } else if matches!(outcome, Outcome::Refused) {
                refused(world, ev, &mut why)
            } else {
                lost(world, ev, seen, &mut why)
            }
        }
        Outcome::Unreachable if !seen.is_empty() => {
            let at = lost(world, ev, seen, &mut why);
            why[0] = why[0].replace("no answer;", "host unreachable;");
            if let Some(n) = ev.neighbour.as_deref().filter(|n| n.contains("FAILED")) {
                why.insert(1, format!("the next hop never answered ARP: ip neigh: {n}"));
            }
            at
        }
        Outcome::Unreachable => {
            why.push(format!("no route: {}", ev.pod_route));
            "the pod".to_string()
        }
        Outcome::Reset | Outcome::NoName(_) | Outcome::Failed(_) => {
            let (at, what) = plain(outcome);
            why.push(what);
            at.to_string()
        }
        Outcome::Answered(_) => unreachable!("failure() of a connection that was answered"),
    };
    (at, why)
}

/// Where a failure the kernel's trace cannot place happened, and what it was.
fn plain(outcome: &Outcome) -> (&'static str, String) {
    match outcome {
        Outcome::Reset => (
            "the connection",
            "the connection was made, then reset before an answer came".into(),
        ),
        Outcome::NoName(rcode) => ("the resolver", format!("the name did not resolve: {rcode}")),
        other => ("the connection", other.error().unwrap_or_default()),
    }
}

/// An endpoint that answered with a reset: nothing listens there.
fn refused(world: &World, ev: &Evidence, why: &mut Vec<String>) -> String {
    let backend = super::explain::backend(world, ev);
    let port = netfilter::conntrack(&ev.conntrack)
        .map(|c| c.reply.0.port())
        .or(ev.destination.map(|d| d.port()))
        .unwrap_or(0);
    match backend.and_then(|b| world.pod_at(b)) {
        Some(p) => {
            why.push(format!(
                "pod {} refused the connection: nothing listens on port {port} there",
                key(&p.metadata)
            ));
            format!("pod {}", key(&p.metadata))
        }
        None => {
            let to = backend.map(|b| SocketAddr::from((b, port)).to_string());
            why.push(format!(
                "{} refused the connection: nothing listens there",
                to.unwrap_or_default()
            ));
            "the destination".to_string()
        }
    }
}

/// A packet that got no answer and met no rule that stopped it: where it was
/// last seen, which nodes never saw it, and the links that are down.
fn lost(
    world: &World,
    ev: &Evidence,
    seen: &[(String, Vec<Pass>)],
    why: &mut Vec<String>,
) -> String {
    let at = match seen.last() {
        Some((node, passes)) => {
            let out = passes.iter().rev().find_map(|p| p.packet.oif.clone());
            why.push(format!(
                "no answer; the first packet was last seen in node {node}{}",
                out.map(|o| format!(", leaving by {o}")).unwrap_or_default()
            ));
            format!("node {node}")
        }
        None => {
            why.push("no answer, and no node saw the packet".into());
            "the pod".to_string()
        }
    };
    let saw: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    let never: Vec<&str> = ev
        .printed
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !saw.contains(n))
        .collect();
    if let (Some(b), false) = (super::explain::backend(world, ev), never.is_empty()) {
        if let Some(n) = world
            .node_of_pod_ip(b)
            .filter(|n| never.contains(&n.name.as_str()))
        {
            why.push(format!("node {} (where {b} lives) never saw it", n.name));
        }
    }
    for (what, up) in &ev.links {
        if !up {
            why.push(format!("{what} is down"));
        }
    }
    at
}

/// Why a Service's traffic was stopped: its endpoints and their state, and where
/// the not-ready ones run.
pub fn service_state(world: &World, svc: &Service, links: &[(String, bool)]) -> Vec<String> {
    let name = key(&svc.metadata);
    let eps = world.endpoints(svc);
    let spec = svc.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    if eps.is_empty() {
        let sel = spec
            .selector
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        out.push(format!(
            "Service {name} has no endpoints: its selector {sel:?} matches no pod with an address"
        ));
        return out;
    }
    let ready = eps.iter().filter(|e| e.ready).count();
    if ready == 0 {
        out.push(format!(
            "Service {name} has no ready endpoint ({} not ready):",
            eps.len()
        ));
    } else {
        out.push(format!(
            "Service {name} has {ready} ready endpoints of {}:",
            eps.len()
        ));
    }
    for e in &eps {
        let node = e.node.as_deref().unwrap_or("?");
        let down: Vec<&str> = links
            .iter()
            .filter(|(what, up)| !up && what.starts_with(&format!("{node}'s ")))
            .map(|(what, _)| what.as_str())
            .collect();
        let state = if e.ready {
            "ready"
        } else if e.terminating {
            "terminating"
        } else {
            "not ready"
        };
        let down = if down.is_empty() {
            String::new()
        } else {
            format!(" (node {node} is down: {} down)", down.join(", "))
        };
        out.push(format!(
            "  {} {} on {node}: {state}{down}",
            e.ip,
            e.pod.as_deref().unwrap_or("(no pod)"),
        ));
    }
    if spec.internal_traffic_policy.as_deref() == Some("Local") {
        out.push(
            "internalTrafficPolicy Local: only endpoints on the client's node are used".into(),
        );
    }
    out
}

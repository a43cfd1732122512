//! The evidence of a trace in words, hop by hop: the resolution, the pod's route,
//! each node that saw the first packet, the conntrack entry, the way to the
//! backend, and the answer, or where and why the connection failed.

use std::net::{Ipv4Addr, SocketAddr};

use super::events::{self, Pass};
use super::gather::{Evidence, Request, Source};
use super::netfilter::{self, conntrack};
use super::world::{key, World};
use super::{Hop, Trace};
use crate::probe::connect::Outcome;

/// The backend the connection went to: the conntrack reply's source, else the
/// DNAT seen in a node, else the destination itself when it is no Service's.
pub fn backend(world: &World, ev: &Evidence) -> Option<Ipv4Addr> {
    if let Some(c) = conntrack(&ev.conntrack) {
        return Some(*c.reply.0.ip());
    }
    let src = first_source(ev)?;
    for (_, text) in &ev.printed {
        let passes = events::first_packet(&events::passes(text), src, ev.sport);
        if let Some((to, _)) = netfilter::dnat(&netfilter::steps(&passes)) {
            return Some(*to.ip());
        }
    }
    match ev.destination? {
        SocketAddr::V4(v) if world.service_at(*v.ip()).is_none() => Some(*v.ip()),
        _ => None,
    }
}

/// The traced pod's address, as the first monitor saw it.
fn first_source(ev: &Evidence) -> Option<Ipv4Addr> {
    let (_, text) = ev.printed.first()?;
    events::passes(text)
        .iter()
        .find(|p| p.packet.sport == Some(ev.sport))
        .and_then(|p| p.packet.saddr)
}

/// The trace of `ev`.
pub fn explain(world: &World, src: &Source, req: &Request, ev: &Evidence) -> Trace {
    let proto = if req.udp { "UDP" } else { "TCP" };
    let target = match ev.destination {
        Some(d) if !req.target.contains(':') => format!("{}:{}/{proto}", req.target, d.port()),
        _ => format!("{}/{proto}", req.target),
    };
    let mut t = Trace {
        from: format!("{} ({} on {})", src.pod, src.ip, src.node),
        target,
        ok: false,
        answered: None,
        error: None,
        result: String::new(),
        hops: Vec::new(),
        path: vec![format!("pod/{}", src.pod), format!("node/{}", src.node)],
        sport: ev.sport,
    };
    if ev.asked.is_some() || ev.from_hosts.is_some() {
        t.hops.push(resolution(world, src, ev));
    }
    if let Some(why) = &ev.no_connection {
        t.result = format!("no connection: {why}");
        return t;
    }
    if !ev.pod_route.is_empty() {
        t.hops.push(pod_route(world, src, ev));
    }
    let mut after_first = Vec::new();
    after_first.extend(netfilter::conntrack_hop(&src.node, &ev.conntrack));
    after_first.extend(node_route(world, src, ev));
    let seen = nodes_seen(world, src, ev, &mut t, after_first);
    finish(world, src, ev, &seen, &mut t);
    t
}

/// The hops of every node that saw the first packet, the pod's node first and
/// `after_first` right after its hop: which nodes saw it.
fn nodes_seen(
    world: &World,
    src: &Source,
    ev: &Evidence,
    t: &mut Trace,
    mut after_first: Vec<Hop>,
) -> Vec<(String, Vec<Pass>)> {
    let node_ip = world.plan.node(&src.node).map(|n| n.ip);
    let mut seen = Vec::new();
    for (i, (node, text)) in ev.printed.iter().enumerate() {
        let all = events::passes(text);
        let mut passes = events::first_packet(&all, src.ip, ev.sport);
        if passes.is_empty() {
            // Masqueraded on the way: the node's address, maybe the same port.
            if let Some(ip) = node_ip {
                passes = events::first_packet(&all, ip, ev.sport);
            }
        }
        if passes.is_empty() {
            if i == 0 {
                let mut h = Hop::new(format!("node {node}"), "netfilter");
                h.line("the packet never reached the node's netfilter");
                t.hops.push(h);
            }
            continue;
        }
        let rules = (i == 0).then_some(ev.rules.as_str());
        let mut hop = netfilter::node_hop(world, node, &passes, rules);
        push_once(&mut t.path, format!("node/{node}"));
        if netfilter::dnat(&netfilter::steps(&passes)).is_some() {
            if let Some(s) = ev.destination.and_then(|d| match d {
                SocketAddr::V4(v) => world.service_at(*v.ip()),
                SocketAddr::V6(_) => None,
            }) {
                push_once(&mut t.path, format!("service/{}", key(&s.metadata)));
                for l in netfilter::service_lines(world, s) {
                    hop.line(l);
                }
            }
        }
        t.hops.push(hop);
        if i == 0 {
            t.hops.append(&mut after_first);
        }
        seen.push((node.clone(), passes));
    }
    t.hops.append(&mut after_first);
    seen
}

fn push_once(path: &mut Vec<String>, s: String) {
    if path.last() != Some(&s) {
        path.push(s);
    }
}

/// The resolution hop: the resolv.conf, each name tried, the answer, the DNAT of
/// the question in the pod's node.
fn resolution(world: &World, src: &Source, ev: &Evidence) -> Hop {
    let (name, answer) = match (&ev.asked, ev.from_hosts) {
        (_, Some(ip)) => {
            let mut h = Hop::new(format!("pod {}", src.pod), "resolve the name");
            h.line(format!(
                "/etc/hosts has it: {ip} (files before dns, as libc)"
            ));
            return h;
        }
        (Some((n, a)), None) => (n, a),
        (None, None) => unreachable!("resolution() is called only with a name"),
    };
    let mut h = Hop::new(format!("pod {}", src.pod), format!("resolve {name}"));
    if let Some(r) = &ev.resolv {
        let ns: Vec<String> = r.nameservers.iter().map(|i| i.to_string()).collect();
        h.line(format!(
            "resolv.conf: nameserver {}; search {}; ndots {}",
            ns.join(" "),
            r.search.join(" "),
            r.ndots
        ));
    }
    let a = match answer {
        Ok(a) => a,
        Err(e) => {
            h.line(format!("no answer: {e}"));
            return h;
        }
    };
    for tried in &a.tried {
        h.line(format!("asked {tried}"));
    }
    h.line(format!("over UDP to {}", a.server));
    if let SocketAddr::V4(server) = a.server {
        if let Some(l) = dns_dnat(world, src, ev, *server.ip()) {
            h.varying(l);
        }
    }
    for r in &a.records {
        h.line(format!("answer: {r}"));
    }
    for ip in a.data.iter().filter_map(|d| d.parse::<Ipv4Addr>().ok()) {
        if let Some(s) = world.service_at(ip) {
            h.line(format!(
                "{ip} is the ClusterIP of Service {}: its A record in the cluster DNS",
                key(&s.metadata)
            ));
        } else if let Some(p) = world.pod_at(ip) {
            h.line(format!(
                "{ip} is pod {}'s address: a headless Service's record names its pods",
                key(&p.metadata)
            ));
        }
    }
    for r in a.records.iter().filter(|r| r.contains(" CNAME ")) {
        let target = r.split_whitespace().last().unwrap_or_default();
        h.line(format!(
            "{} is an alias: the client must resolve {target} next",
            a.name
        ));
        if let Some(s) = world.services.iter().find(|s| {
            s.spec.as_ref().and_then(|sp| sp.external_name.as_deref())
                == Some(target.trim_end_matches('.'))
        }) {
            h.line(format!(
                "Service {} is type ExternalName: no ClusterIP, no endpoints, no rules in any node, only this CNAME",
                key(&s.metadata)
            ));
        }
    }
    if a.data.is_empty() {
        h.line(format!("{}: no address for any name tried", a.rcode));
    }
    h
}

/// How the pod's node rewrote the DNS question, in a line.
fn dns_dnat(world: &World, src: &Source, ev: &Evidence, server: Ipv4Addr) -> Option<String> {
    let (node, text) = ev.printed.first()?;
    let passes = events::first_to(&events::passes(text), src.ip, server, 53);
    let steps = netfilter::steps(&passes);
    let (to, by) = netfilter::dnat(&steps)?;
    let who = world
        .pod_at(*to.ip())
        .map(|p| format!(" (pod {})", key(&p.metadata)))
        .unwrap_or_default();
    Some(format!(
        "{node} DNATed the question to {to}{who} by {} {}",
        by.table, by.chain
    ))
}

/// The pod's route to the destination, in words.
fn pod_route(world: &World, src: &Source, ev: &Evidence) -> Hop {
    let mut h = Hop::new(format!("pod {}", src.pod), "route");
    let route = tidy_route(&ev.pod_route);
    h.line(format!("ip route get: {route}"));
    let node = world.plan.node(&src.node);
    let via: Option<Ipv4Addr> = word_after(&route, "via").and_then(|v| v.parse().ok());
    match (via, node) {
        (Some(gw), Some(n)) if gw == n.bridge_ip => h.line(format!(
            "no route of its own for it: the default route sends it to {gw}, cbr0 of {}",
            n.name
        )),
        (None, Some(n)) if !route.starts_with("error") => h.line(format!(
            "on the pod's own subnet: straight over cbr0 of {}",
            n.name
        )),
        _ => {}
    }
    h
}

/// The pod's node's route to the backend: bridged, or across the underlay.
fn node_route(world: &World, src: &Source, ev: &Evidence) -> Option<Hop> {
    let (backend, route) = ev.node_route.as_ref()?;
    let mut h = Hop::new(format!("node {}", src.node), format!("route to {backend}"));
    let route = tidy_route(route);
    h.line(format!("ip route get: {route}"));
    let via: Option<Ipv4Addr> = word_after(&route, "via").and_then(|v| v.parse().ok());
    let dev = word_after(&route, "dev").unwrap_or_default();
    if let Some(n) = via.and_then(|v| world.node_at(v)) {
        h.line(format!(
            "across the underlay to {} ({}) by {dev}",
            n.name, n.ip
        ));
    } else if dev == "cbr0" {
        h.line(format!("bridged on {}'s cbr0 to the pod's veth", src.node));
    } else if route.contains("local") {
        h.line("to this node itself");
    }
    Some(h)
}

fn word_after<'a>(s: &'a str, w: &str) -> Option<&'a str> {
    let mut it = s.split_whitespace();
    it.by_ref().find(|x| *x == w)?;
    it.next()
}

/// `ip -o route get` without its `uid N` and cache notes.
fn tidy_route(r: &str) -> String {
    let words: Vec<&str> = r.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "uid" => i += 2,
            "\\" | "cache" => i += 1,
            w => {
                out.push(w);
                i += 1;
            }
        }
    }
    out.join(" ")
}

/// The answer, or where and why it failed: the last hop and the result.
fn finish(world: &World, src: &Source, ev: &Evidence, seen: &[(String, Vec<Pass>)], t: &mut Trace) {
    let Some(outcome) = &ev.outcome else { return };
    let to = ev.destination.map(|d| d.to_string()).unwrap_or_default();
    let backend = backend(world, ev);
    let backend_pod = backend
        .and_then(|b| world.pod_at(b))
        .map(|p| key(&p.metadata));
    match outcome {
        Outcome::Answered(text) => {
            let mut h = Hop::new(
                backend_pod
                    .as_deref()
                    .map(|p| format!("pod {p}"))
                    .unwrap_or(to.clone()),
                "answered",
            );
            match text.parse::<SocketAddr>() {
                Ok(saw) => {
                    h.line(format!("it saw the client as {saw}"));
                    if saw.ip() == std::net::IpAddr::V4(src.ip) {
                        h.line("the client's own address: not masqueraded");
                    } else {
                        h.line(format!(
                            "not the client's address ({}): masqueraded",
                            src.ip
                        ));
                    }
                }
                Err(_) => h.line(format!("it said {text:?}")),
            }
            if let Some(p) = &backend_pod {
                if let Some(n) = world.pod(p).and_then(super::world::pod_node) {
                    push_once(&mut t.path, format!("node/{n}"));
                }
                push_once(&mut t.path, format!("pod/{p}"));
            }
            t.hops.push(h);
            t.ok = true;
            t.answered = backend_pod.clone();
            t.result = format!(
                "reached {}",
                backend_pod.unwrap_or_else(|| backend.map(|b| b.to_string()).unwrap_or(to))
            );
        }
        failed => {
            let (at, why) = super::explain_failure::failure(world, ev, seen, failed);
            let mut h = Hop::new(at.clone(), "failed");
            for l in &why {
                h.line(l.clone());
            }
            t.hops.push(h);
            t.error = failed.error();
            t.result = format!(
                "{} at {at}: {}",
                failed.error().unwrap_or_default(),
                why.first().cloned().unwrap_or_default()
            );
        }
    }
}

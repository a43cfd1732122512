//! The views a `snapshot` step pins, as text that is the same on every run and every
//! machine: sorted, with no counters, times, serials or MACs.

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};

use crate::probe::connect::Outcome;
use crate::probe::dns::Answer;
use crate::scenario::steps::{Connect, DnsQuery};

/// Every Service: type, ClusterIP, ports and selector.
pub fn services(list: &[Service]) -> String {
    let mut rows: Vec<String> = list
        .iter()
        .map(|s| {
            let meta = &s.metadata;
            let spec = s.spec.clone().unwrap_or_default();
            let ports: Vec<String> = spec
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    let target = p
                        .target_port
                        .as_ref()
                        .map(|t| match t {
                            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => {
                                i.to_string()
                            }
                            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                                s,
                            ) => s.clone(),
                        })
                        .unwrap_or_else(|| p.port.to_string());
                    format!(
                        "{}{}/{}->{target}",
                        p.name.as_ref().map(|n| format!("{n}:")).unwrap_or_default(),
                        p.port,
                        p.protocol.as_deref().unwrap_or("TCP"),
                    )
                })
                .collect();
            let selector: Vec<String> = spec
                .selector
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut row = format!(
                "{}/{} {} clusterIP={}",
                meta.namespace.as_deref().unwrap_or("default"),
                meta.name.as_deref().unwrap_or_default(),
                spec.type_.as_deref().unwrap_or("ClusterIP"),
                spec.cluster_ip.as_deref().unwrap_or("<none>"),
            );
            if !ports.is_empty() {
                row += &format!(" ports=[{}]", ports.join(", "));
            }
            if !selector.is_empty() {
                row += &format!(" selector={}", selector.join(","));
            }
            if let Some(ext) = &spec.external_name {
                row += &format!(" externalName={ext}");
            }
            if let Some(aff) = spec.session_affinity.as_deref().filter(|a| *a != "None") {
                row += &format!(" sessionAffinity={aff}");
            }
            row
        })
        .collect();
    rows.sort();
    rows.join("\n") + "\n"
}

fn address(a: &EndpointAddress) -> String {
    let pod = a
        .target_ref
        .as_ref()
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| "-".into());
    let node = a.node_name.as_deref().unwrap_or("-");
    format!("{} pod={pod} node={node}", a.ip)
}

fn by_ip(mut v: Vec<String>) -> Vec<String> {
    v.sort_by_key(|s| {
        s.split_whitespace()
            .next()
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
            .map(u32::from)
            .unwrap_or(0)
    });
    v
}

/// A Service's Endpoints: ports, then ready and not-ready addresses with their pods.
pub fn endpoints(service: &str, ep: Option<&Endpoints>) -> String {
    let mut out = format!("endpoints {service}\n");
    let Some(ep) = ep else {
        out += "  (no Endpoints object)\n";
        return out;
    };
    let subsets = ep.subsets.clone().unwrap_or_default();
    if subsets.is_empty() {
        out += "  (no addresses)\n";
    }
    for s in subsets {
        let mut ports: Vec<String> = s
            .ports
            .iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}{}/{}",
                    p.name.as_ref().map(|n| format!("{n}:")).unwrap_or_default(),
                    p.port,
                    p.protocol.as_deref().unwrap_or("TCP")
                )
            })
            .collect();
        ports.sort();
        out += &format!("  ports: {}\n", ports.join(", "));
        for (title, list) in [
            ("ready", &s.addresses),
            ("notReady", &s.not_ready_addresses),
        ] {
            let rows = by_ip(list.iter().flatten().map(address).collect());
            if !rows.is_empty() {
                out += &format!("  {title}:\n");
                for r in rows {
                    out += &format!("    {r}\n");
                }
            }
        }
    }
    out
}

/// A DNS question and its answer; the SOA serial (a time) is shown as `SERIAL`.
pub fn dns(q: &DnsQuery, a: &Answer) -> String {
    let mut out = format!(
        "question: {} {} from {} ({})\n",
        q.name,
        q.rtype,
        q.from,
        if q.tcp { "TCP" } else { "UDP" }
    );
    out += "tried:\n";
    for t in &a.tried {
        out += &format!("  {t}\n");
    }
    out += &format!("answered: {} {} flags: {}\n", a.name, a.rcode, a.flags);
    let mut answers = a.records.clone();
    answers.sort();
    if !answers.is_empty() {
        out += "answer:\n";
        for r in answers {
            out += &format!("  {r}\n");
        }
    }
    if !a.authority.is_empty() {
        out += "authority:\n";
        for r in &a.authority {
            out += &format!("  {}\n", redact_serial(r));
        }
    }
    out
}

/// `... SOA ns. host. 1732500000 7200 ...` → `... SOA ns. host. SERIAL 7200 ...`.
fn redact_serial(record: &str) -> String {
    let words: Vec<&str> = record.split(' ').collect();
    match words.iter().position(|w| *w == "SOA") {
        Some(i) if words.len() > i + 3 => {
            let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
            w[i + 3] = "SERIAL".into();
            w.join(" ")
        }
        _ => record.to_string(),
    }
}

/// A node's table from `iptables-save -t nat` (or `filter`): chains sorted by name,
/// each with its rules in order; no counters, no comments with times. The rules of
/// the chains every Service writes into (KUBE-SERVICES, KUBE-NODEPORTS,
/// KUBE-EXTERNAL-SERVICES, KUBE-PROXY-FIREWALL) are sorted (their order follows the
/// history of changes), the nodeports jump last.
pub fn table(save: &str) -> String {
    let mut chains: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in save.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            chains.entry(name.to_string()).or_default();
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            chains.entry(chain).or_default().push(line.to_string());
        }
    }
    let mut out = String::new();
    for (chain, mut rules) in chains {
        const SHARED: [&str; 4] = [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-PROXY-FIREWALL",
        ];
        if SHARED.contains(&chain.as_str()) {
            rules.sort_by_key(|r| (r.contains("KUBE-NODEPORTS"), r.clone()));
        }
        out += &format!(":{chain}\n");
        for r in rules {
            out += &format!("{r}\n");
        }
    }
    out
}

/// A node's table `ip kube-proxy` from `nft list table`: its sets and maps, then its
/// chains, each by name (the listing follows the order of creation, which follows
/// the history of syncs); a set's elements sorted, one per line (none of a set the
/// rules fill); each chain's rules in their order.
pub fn nftables(listing: &str) -> String {
    let mut blocks: std::collections::BTreeMap<(u8, String), Vec<String>> = Default::default();
    let mut current: Option<(u8, String)> = None;
    let mut elements: Option<String> = None;
    for line in listing.lines().map(str::trim) {
        if let Some(acc) = &mut elements {
            acc.push_str(line);
        } else if let Some(rest) = line.strip_prefix("elements = ") {
            elements = Some(rest.to_string());
        } else if line == "}" {
            current = None;
            continue;
        } else if let Some(head) = line.strip_suffix(" {") {
            let mut words = head.split_whitespace();
            let kind = match words.next() {
                Some("set") => 0,
                Some("map") => 1,
                Some("chain") => 2,
                _ => continue,
            };
            let key = (kind, head.to_string());
            blocks.entry(key.clone()).or_default();
            current = Some(key);
            continue;
        } else if !line.is_empty() {
            if let Some(k) = &current {
                blocks.get_mut(k).expect("opened").push(line.to_string());
            }
            continue;
        }
        let Some(acc) = elements.take_if(|a| a.ends_with('}')) else {
            continue;
        };
        let inner = acc.trim_start_matches('{').trim_end_matches('}');
        let mut items: Vec<String> = inner
            .split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        items.sort();
        if let Some(k) = &current {
            let b = blocks.get_mut(k).expect("opened");
            // A dynamic set's elements are clients the rules remembered, in the set
            // of the endpoint a random pick chose: not shown.
            if !b.iter().any(|l| l.starts_with("flags dynamic")) {
                b.extend(items.into_iter().map(|e| format!("element {e}")));
            }
        }
    }
    let mut out = String::from("table ip kube-proxy\n");
    for ((_, head), lines) in blocks {
        out += &format!("{head}\n");
        for l in lines {
            out += &format!("  {l}\n");
        }
    }
    out
}

/// A pod's routes and resolv.conf.
pub fn pod(name: &str, routes: &str, resolv: &str) -> String {
    format!(
        "pod {name}\nroutes:\n{}resolv.conf:\n{}",
        indent(routes),
        indent(resolv)
    )
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {}\n", l.trim_end()))
        .collect()
}

/// Which pods answered a series of connections (a set: load balancing is random),
/// and the kinds of failure seen.
pub fn backends(c: &Connect, target: &str, outcomes: &[Outcome]) -> String {
    let (backends, errors) = super::expect::tally(outcomes);
    let mut out = format!(
        "{} connections from {} to {} ({target}:{}/{})\n",
        c.times,
        c.from,
        c.to,
        c.port,
        if c.udp { "UDP" } else { "TCP" }
    );
    out += "answered by:\n";
    for b in backends.keys() {
        out += &format!("  {b}\n");
    }
    if !errors.is_empty() {
        out += "failures:\n";
        for e in errors.keys() {
            out += &format!("  {e}\n");
        }
    }
    out
}

/// Each node's STATUS and taints, as `kubectl get nodes` and `kubectl describe
/// node` show them, then the pods bound to it with their STATUS, by name.
pub fn nodes(nodes: &[crate::api::Object], pods: &[crate::api::Object]) -> String {
    use crate::api::labels::{node_status_column, pod_status_column};
    use crate::api::Object;
    let mut out = String::new();
    for o in nodes {
        let Object::Node(n) = o else { continue };
        let name = n.metadata.name.as_deref().unwrap_or_default();
        let taints: Vec<String> = n
            .spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        let taints = if taints.is_empty() {
            "<none>".to_string()
        } else {
            taints.join(",")
        };
        out += &format!("{name} {} taints={taints}\n", node_status_column(n));
        let mut rows: Vec<String> = pods
            .iter()
            .filter_map(|o| match o {
                Object::Pod(p)
                    if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name) =>
                {
                    let (status, ready) = pod_status_column(p);
                    let total = p.spec.as_ref().map_or(0, |s| s.containers.len());
                    Some(format!(
                        "  {}/{} {ready}/{total} {status}",
                        p.metadata.namespace.as_deref().unwrap_or("default"),
                        p.metadata.name.as_deref().unwrap_or_default()
                    ))
                }
                _ => None,
            })
            .collect();
        rows.sort();
        for r in rows {
            out += &r;
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_drops_counters_and_sorts_chains() {
        let save = "# Generated by iptables-save v1.8.9 on Tue\n*nat\n:PREROUTING ACCEPT [12:720]\n:KUBE-SVC-B - [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n-A KUBE-SERVICES -d 10.96.0.2/32 -j KUBE-SVC-B\n-A KUBE-SERVICES -d 10.96.0.10/32 -j KUBE-SVC-A\n-A KUBE-SVC-B -m statistic --mode random --probability 0.5 -j KUBE-SEP-1\n-A KUBE-SVC-B -j KUBE-SEP-2\nCOMMIT\n# Completed on Tue\n";
        assert_eq!(
            table(save),
            ":KUBE-SERVICES\n-A KUBE-SERVICES -d 10.96.0.10/32 -j KUBE-SVC-A\n-A KUBE-SERVICES -d 10.96.0.2/32 -j KUBE-SVC-B\n-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n:KUBE-SVC-B\n-A KUBE-SVC-B -m statistic --mode random --probability 0.5 -j KUBE-SEP-1\n-A KUBE-SVC-B -j KUBE-SEP-2\n:PREROUTING\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
        );
    }

    #[test]
    fn nftables_sorts_blocks_and_elements_but_not_dynamic_ones() {
        let listing = "table ip kube-proxy {\n\tcomment \"rules for kube-proxy\"\n\tset b {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.9, 10.0.0.1,\n\t\t\t     10.0.0.5 }\n\t}\n\n\tchain z {\n\t\tjump a\n\t\tdrop\n\t}\n\n\tset a {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\telements = { 10.244.1.2 timeout 3h expires 2h59m58s }\n\t}\n}\n";
        assert_eq!(
            nftables(listing),
            "table ip kube-proxy\nset a\n  type ipv4_addr\n  flags dynamic,timeout\nset b\n  type ipv4_addr\n  element 10.0.0.1\n  element 10.0.0.5\n  element 10.0.0.9\nchain z\n  jump a\n  drop\n"
        );
    }

    #[test]
    fn the_soa_serial_is_redacted() {
        assert_eq!(
            redact_serial("cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. 1764000000 7200 1800 86400 5"),
            "cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5"
        );
    }
}

//! The kernel changes that make a fault: nf_tables tables that drop, qdiscs that
//! shape or delay. Each names what removes it again.

use super::{Effect, Fault, PodEnd, Resolved, UnderlayEnd};
use crate::names::ETH0;

/// One change in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A table written with `nft -f` (its text), removed by `nft delete table FAMILY NAME`.
    Table {
        netns: String,
        family: &'static str,
        name: String,
        text: String,
    },
    /// A root qdisc (`tc qdisc add dev DEV root ARGS...`), removed by `tc qdisc del dev DEV root`.
    Qdisc {
        netns: String,
        dev: String,
        args: Vec<String>,
    },
}

impl Change {
    pub fn netns(&self) -> &str {
        match self {
            Change::Table { netns, .. } | Change::Qdisc { netns, .. } => netns,
        }
    }

    /// The command that makes it, as a user would type it in the namespace.
    pub fn command(&self) -> String {
        match self {
            Change::Table { family, name, .. } => format!("nft add table {family} {name} ..."),
            Change::Qdisc { dev, args, .. } => {
                format!("tc qdisc add dev {dev} root {}", args.join(" "))
            }
        }
    }
}

/// What drops a packet the fault touches: every one (a partition: ARP too), or one
/// IPv4 packet in so many. ARP is spared by loss: a lost ARP exchange stalls every
/// packet to that neighbour for a second or more, and the loss would no longer be
/// the chance asked for.
fn drop_verdict(percent: u8) -> String {
    if percent >= 100 {
        "counter drop".into()
    } else {
        format!("numgen random mod 100 < {percent} counter drop")
    }
}

/// On the underlay's bridge, loss is of IPv4 frames only (see [`drop_verdict`]).
fn on_bridge(percent: u8, verdict: &str) -> String {
    if percent >= 100 {
        verdict.to_string()
    } else {
        format!("ether type ip {verdict}")
    }
}

/// `{ "a", "b" }`, or `"a"` for one.
fn set<T: std::fmt::Display>(items: &[T], quote: bool) -> String {
    let each: Vec<String> = items
        .iter()
        .map(|i| {
            if quote {
                format!("\"{i}\"")
            } else {
                i.to_string()
            }
        })
        .collect();
    if each.len() == 1 {
        each[0].clone()
    } else {
        format!("{{ {} }}", each.join(", "))
    }
}

/// A table of `family` whose chains (name, hook, priority, rule) drop.
fn table(
    netns: &str,
    family: &'static str,
    name: &str,
    chains: &[(&str, &str, i32, String)],
) -> Change {
    let mut text = format!("table {family} {name} {{\n");
    for (chain, hook, prio, rule) in chains {
        text += &format!(
            "  chain {chain} {{\n    type filter hook {hook} priority {prio}; policy accept;\n    {rule}\n  }}\n"
        );
    }
    text += "}\n";
    Change::Table {
        netns: netns.into(),
        family,
        name: name.into(),
        text,
    }
}

/// A qdisc at both ends of a link: (namespace, device) pairs.
fn qdiscs(ends: [(&str, &str); 2], args: Vec<String>) -> Vec<Change> {
    ends.iter()
        .map(|(netns, dev)| Change::Qdisc {
            netns: netns.to_string(),
            dev: dev.to_string(),
            args: args.clone(),
        })
        .collect()
}

/// `tbf` at `bits` a second: a burst of 20 ms of traffic (at least two full frames),
/// and packets queued at most 100 ms.
fn tbf(bits: u64) -> Vec<String> {
    let burst = (bits / 8 / 50).max(3028);
    [
        "tbf",
        "rate",
        &format!("{bits}bit"),
        "burst",
        &burst.to_string(),
        "latency",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn netem(delay: &str, jitter: Option<&str>) -> Vec<String> {
    let mut a = vec!["netem".to_string(), "delay".into(), delay.into()];
    a.extend(jitter.map(String::from));
    a
}

/// The changes that make `fault` on the ends `resolved`, with the underlay bridge in
/// namespace `fabric`; or why it cannot be made (a rate or a delay between sets).
pub fn changes(fault: &Fault, resolved: &Resolved, fabric: &str) -> Result<Vec<Change>, String> {
    let name = fault.table();
    let shape = |ends: [(&str, &str); 2]| match &fault.effect {
        Effect::Rate { bits, .. } => Some(qdiscs(ends, tbf(*bits))),
        Effect::Delay { delay, jitter } => Some(qdiscs(ends, netem(delay, jitter.as_deref()))),
        Effect::Loss(_) => None,
    };
    let (loss, bridged) = match &fault.effect {
        Effect::Loss(p) => (drop_verdict(*p), on_bridge(*p, &drop_verdict(*p))),
        _ => (String::new(), String::new()),
    };
    Ok(match resolved {
        Resolved::UnderlayLink(UnderlayEnd { port, netns }) => {
            match shape([(fabric, port), (netns, ETH0)]) {
                Some(q) => q,
                None => vec![table(
                    fabric,
                    "bridge",
                    &name,
                    &[
                        (
                            "inbound",
                            "prerouting",
                            -300,
                            format!("iifname \"{port}\" {bridged}"),
                        ),
                        (
                            "outbound",
                            "postrouting",
                            300,
                            format!("oifname \"{port}\" {bridged}"),
                        ),
                    ],
                )],
            }
        }
        Resolved::PodLink(PodEnd {
            netns,
            node_netns,
            host_veth,
            ..
        }) => match shape([(netns, ETH0), (node_netns, host_veth)]) {
            Some(q) => q,
            None => vec![table(
                netns,
                "ip",
                &name,
                &[
                    (
                        "inbound",
                        "prerouting",
                        -300,
                        format!("iifname \"{ETH0}\" {loss}"),
                    ),
                    (
                        "outbound",
                        "postrouting",
                        300,
                        format!("oifname \"{ETH0}\" {loss}"),
                    ),
                ],
            )],
        },
        Resolved::UnderlayBetween(..) if !loss.is_empty() => {
            between(&name, resolved, fabric, &bridged)
        }
        _ if !loss.is_empty() => between(&name, resolved, fabric, &loss),
        _ => {
            return Err("a rate limit or a delay is on one link (`link:`), not between sets".into())
        }
    })
}

/// Drops between two sets: on the underlay where its bridge forwards from one side to
/// the other; for pods, in each pod of the second side, for packets from or to the first.
fn between(name: &str, resolved: &Resolved, fabric: &str, loss: &str) -> Vec<Change> {
    match resolved {
        Resolved::UnderlayBetween(a, b) => {
            let ports = |s: &[UnderlayEnd]| {
                set(&s.iter().map(|e| e.port.clone()).collect::<Vec<_>>(), true)
            };
            let (a, b) = (ports(a), ports(b));
            vec![table(
                fabric,
                "bridge",
                name,
                &[(
                    "across",
                    "forward",
                    -300,
                    format!("iifname {a} oifname {b} {loss}\n    iifname {b} oifname {a} {loss}"),
                )],
            )]
        }
        Resolved::PodsBetween(a, b) => {
            let ips = set(&a.iter().map(|p| p.ip).collect::<Vec<_>>(), false);
            b.iter()
                .map(|pod| {
                    table(
                        &pod.netns,
                        "ip",
                        name,
                        &[
                            (
                                "inbound",
                                "prerouting",
                                -300,
                                format!("ip saddr {ips} {loss}"),
                            ),
                            (
                                "outbound",
                                "postrouting",
                                300,
                                format!("ip daddr {ips} {loss}"),
                            ),
                        ],
                    )
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

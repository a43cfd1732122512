//! Network faults a scenario declares, made of real kernel parts: packet loss and
//! partitions as nf_tables drops (`numgen random`, as this kernel has no netem), rate
//! limits as `tbf` qdiscs, delay and jitter as `netem` where the kernel has it. Each
//! lives in a namespace of the testbed (the underlay's, a node's, a pod's), so it
//! goes when the testbed goes; its undo removes exactly what it added.
//!
//! This module is pure: what a fault is, and the changes that make it
//! ([`changes`]); [`apply`] makes them in the namespaces.

pub mod apply;
mod netem;
mod rules;

use std::net::Ipv4Addr;

pub use netem::netem_missing;
pub use rules::{changes, Change};

/// What a fault does to the packets it touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Each packet is dropped with this chance (percent, 1-100), each way; 100 is a
    /// partition.
    Loss(u8),
    /// At most this many bits a second each way (`tc`'s notation: `1mbit`).
    Rate { bits: u64, text: String },
    /// Each packet held this long, give or take `jitter` (`tc netem`'s notation).
    Delay {
        delay: String,
        jitter: Option<String>,
    },
}

/// One end of a fault, as written: a pod (`web-1`, `ns/web-1`, `app=web` for every
/// such pod) or a machine on the underlay (`node/node-1`, `host/outside`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Underlay(String),
    Pod(String),
}

impl End {
    pub fn parse(text: &str) -> End {
        if text.starts_with("node/") || text.starts_with("host/") {
            End::Underlay(text.to_string())
        } else {
            End::Pod(text.to_string())
        }
    }
}

/// Where a fault is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything through one link, each way.
    Link(End),
    /// Everything between one side and the other, each way.
    Between(Vec<End>, Vec<End>),
}

/// A fault: its id (the nf_tables table `testbed-fault-<id>`), what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub id: String,
    pub effect: Effect,
    pub scope: Scope,
}

impl Fault {
    /// The table it adds, in each namespace it touches.
    pub fn table(&self) -> String {
        format!("testbed-fault-{}", self.id)
    }

    /// `30% loss` / `a partition` / `a rate limit of 1mbit`.
    pub fn describe(&self) -> String {
        let what = match &self.effect {
            Effect::Loss(100) => "a partition".to_string(),
            Effect::Loss(p) => format!("{p}% packet loss"),
            Effect::Rate { text, .. } => format!("a rate limit of {text}"),
            Effect::Delay {
                delay,
                jitter: Some(j),
            } => format!("a delay of {delay} ± {j}"),
            Effect::Delay { delay, .. } => format!("a delay of {delay}"),
        };
        let name = |e: &End| match e {
            End::Underlay(t) | End::Pod(t) => t.clone(),
        };
        let side = |s: &[End]| s.iter().map(name).collect::<Vec<_>>().join(", ");
        match &self.scope {
            Scope::Link(e) => format!("{what} on the link of {}", name(e)),
            Scope::Between(a, b) => format!("{what} between [{}] and [{}]", side(a), side(b)),
        }
    }
}

/// `30%` or `30` (percent, 1-100).
pub fn parse_percent(text: &str) -> Result<u8, String> {
    let t = text.trim().trim_end_matches('%').trim();
    match t.parse::<f64>() {
        Ok(p) if (1.0..=100.0).contains(&p) && p.fract() == 0.0 => Ok(p as u8),
        _ => Err(format!(
            "{text:?} is not a whole percentage from 1% to 100%"
        )),
    }
}

/// `1mbit`, `500kbit`, `2gbit`, `64000bit` (bits a second, as `tc` writes them):
/// the bits a second, from 8kbit to 10gbit.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let bad =
        || format!("{text:?} is not a rate like 1mbit, 500kbit or 2gbit (from 8kbit to 10gbit)");
    let (num, mult) = [
        ("gbit", 1_000_000_000u64),
        ("mbit", 1_000_000),
        ("kbit", 1000),
        ("bit", 1),
    ]
    .iter()
    .find_map(|(unit, m)| t.strip_suffix(unit).map(|n| (n, *m)))
    .ok_or_else(bad)?;
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let bits = (n * mult as f64) as u64;
    if !(8_000..=10_000_000_000).contains(&bits) {
        return Err(bad());
    }
    Ok(bits)
}

/// A pod end as it is now: its namespace, address, and its veth on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEnd {
    pub netns: String,
    pub ip: Ipv4Addr,
    pub node_netns: String,
    pub host_veth: String,
}

/// A machine on the underlay: its port on the bridge, and its own namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderlayEnd {
    pub port: String,
    pub netns: String,
}

/// A fault's ends found in the running testbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    UnderlayLink(UnderlayEnd),
    PodLink(PodEnd),
    UnderlayBetween(Vec<UnderlayEnd>, Vec<UnderlayEnd>),
    PodsBetween(Vec<PodEnd>, Vec<PodEnd>),
}

#[cfg(test)]
mod tests;

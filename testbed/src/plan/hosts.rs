//! Hosts outside the cluster: the underlay router every testbed has, the ones a
//! scenario declares, and the load balancer's pool on their network.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::Plan;

/// The host outside the cluster every testbed has: the underlay's namespace, which
/// holds the nodes' gateway address on the node network (172.18.0.1), as the machine
/// of a kind user sits on kind's bridge. `host/outside` in `testbed exec` and in a
/// scenario's `exec` steps; NodePorts and external addresses are reached from it the
/// way users reach them. A scenario may declare more (`cluster.hosts`).
pub const OUTSIDE_HOST: &str = "outside";

/// The load balancer's addresses when a scenario names none: the 200th to the 250th
/// of the node network (172.18.0.200-172.18.0.250), as a kind user gives MetalLB
/// part of kind's Docker network.
pub fn default_load_balancer_pool(network: Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(network.network());
    (Ipv4Addr::from(base + 200), Ipv4Addr::from(base + 250))
}

/// A host outside the cluster: a namespace with an address on the node network, as
/// a machine on kind's Docker network; it reaches NodePorts, external IPs and load
/// balancer addresses the way users do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// Its port on the underlay bridge, in the fabric namespace.
    pub fabric_port: String,
}

impl Plan {
    /// A host outside the cluster by name: `outside` (the underlay router) or one the
    /// scenario declares; its namespace.
    pub fn host_netns(&self, name: &str) -> Option<&str> {
        if name == OUTSIDE_HOST {
            return Some(&self.fabric.netns);
        }
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.netns.as_str())
    }

    /// The names `host/NAME` takes, `outside` first.
    pub fn host_names(&self) -> Vec<&str> {
        std::iter::once(OUTSIDE_HOST)
            .chain(self.hosts.iter().map(|h| h.name.as_str()))
            .collect()
    }
}

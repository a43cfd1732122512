//! How one node's kube-proxy is set up: the flags upstream's proxier takes that
//! change the rules it writes, and what it found on the node.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// How the whole node is set up: kube-proxy's flags and what it found on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--cluster-cidr`: traffic to a ClusterIP from outside it is masqueraded, and
    /// pods' traffic to external addresses short-circuits a Local policy.
    pub cluster_cidr: Option<Ipv4Net>,
    /// The node's address: a load balancer's source ranges that hold it also let
    /// the node reach its own load balancer addresses.
    pub node_ip: Option<Ipv4Addr>,
    /// Whether kube-proxy's nfacct counters exist (`ct_state_invalid_dropped_pkts`,
    /// `localhost_nps_accepted_pkts`): upstream then counts in two rules.
    pub nfacct: bool,
    /// `--masquerade-all`: every packet to a ClusterIP is masqueraded.
    pub masquerade_all: bool,
    /// `--iptables-localhost-nodeports` (upstream's default, true): node ports answer
    /// on 127.0.0.1 too, guarded by `KUBE-FIREWALL`.
    pub localhost_node_ports: bool,
    /// The Service CIDR: in nftables mode, traffic to an address in it that no
    /// Service has is dropped.
    pub service_cidr: Option<Ipv4Net>,
    /// `--nodeport-addresses` in nftables mode: the addresses node ports answer on
    /// (upstream's default there is the node's primary address); none for every
    /// local address but loopback.
    pub node_port_addresses: Vec<Ipv4Addr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_cidr: None,
            node_ip: None,
            nfacct: false,
            masquerade_all: false,
            localhost_node_ports: true,
            service_cidr: None,
            node_port_addresses: Vec::new(),
        }
    }
}

//! The privileged boundary: what the control plane does to the kernel, behind traits
//! with a real implementation and a recording fake, so that the logic on top of
//! them runs in tests without root. Commands in a node's namespace ([`exec`]: a
//! kube-proxy backend's `iptables-restore`, `conntrack`) and links set up or down
//! ([`links`]: fault steps), and nf_tables transactions written over netlink
//! ([`nft`]). The kubelet's pods run behind their own seam,
//! [`crate::kubelet::runtime`], which uses the topology's netlink requests.

pub mod exec;
pub mod links;
pub mod nft;

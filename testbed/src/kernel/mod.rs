//! The privileged boundary: what the control plane does to the kernel, behind traits
//! with a real implementation and a recording fake, so that the logic on top of
//! them (a node's kube-proxy) runs in tests without root.

pub mod exec;

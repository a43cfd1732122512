//! Probes a scenario runs from inside a pod's namespace, as the pod's own programs
//! would: DNS questions through its resolv.conf ([`dns`]) and connections that learn
//! which pod answered ([`connect`]).

pub mod connect;
pub mod dns;
pub mod traffic;

//! kube-proxy in iptables mode: rules rendered as text from Services and their
//! endpoints ([`render`]), written per node with partial syncs ([`sync`]), and a tracer
//! that follows a packet through them without a kernel ([`tracer`]).

pub mod hash;
pub mod node;
pub mod render;
pub mod sync;
pub mod tracer;

#[cfg(test)]
mod tests;

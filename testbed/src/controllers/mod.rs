//! The control plane's controllers: each watches the store and writes what follows
//! from it.

pub mod deployment;
pub mod endpoints;
pub mod loadbalancer;
pub mod node_lifecycle;
pub mod pod_rank;
pub mod replicaset;
pub mod rollout;
pub mod rollout_status;

#[cfg(test)]
mod endpoints_tests;
#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod tests;

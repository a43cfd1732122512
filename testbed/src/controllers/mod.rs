//! The control plane's controllers: each watches the store and writes what follows
//! from it.

pub mod deployment;
pub mod endpoints;
pub mod loadbalancer;

#[cfg(test)]
mod endpoints_tests;
#[cfg(test)]
mod tests;

//! Probes a scenario runs from inside a pod's namespace, as the pod's own programs
//! would: DNS questions through its resolv.conf ([`dns`]) and connections that learn
//! which pod answered ([`connect`]).

pub mod connect;
pub mod dns;

use std::io;

/// Runs `f` inside the namespace `netns` (to make a socket there), or here for `None`.
pub(crate) fn in_netns<T: Send>(
    netns: Option<&str>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    match netns {
        Some(name) => crate::netns::run_in(name, f),
        None => f(),
    }
}

//! Setting a link up or down in one of the testbed's namespaces (a fault step cuts
//! a pod's veth or a node's port on the underlay): the [`Links`] trait, the real
//! [`Netlink`] (rtnetlink, as `ip -n NETNS link set dev LINK up|down`), and a
//! [`Recorder`] that keeps what it was asked.

use std::sync::{Arc, Mutex};

use rtnetlink::LinkUnspec;

use crate::netns;

/// Why a link could not be set.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot open netlink in namespace {netns}")]
    Open {
        netns: String,
        #[source]
        source: netns::NetnsError,
    },
    #[error("cannot set link {link} {state} in namespace {netns}")]
    Set {
        netns: String,
        link: String,
        state: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
}

/// Sets links up and down.
#[async_trait::async_trait]
pub trait Links: Send + Sync {
    /// `ip -n NETNS link set dev LINK up|down`.
    async fn set_up(&self, netns: &str, link: &str, up: bool) -> Result<(), LinkError>;
}

/// The real one: a netlink socket opened in the namespace for each request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Netlink;

#[async_trait::async_trait]
impl Links for Netlink {
    async fn set_up(&self, netns_name: &str, link: &str, up: bool) -> Result<(), LinkError> {
        let rt = tokio::runtime::Handle::current();
        let name = netns_name.to_string();
        let nl = tokio::task::spawn_blocking(move || netns::open_netlink(&name, &rt))
            .await
            .expect("the netlink thread does not panic")
            .map_err(|source| LinkError::Open {
                netns: netns_name.into(),
                source,
            })?;
        let state = if up { "up" } else { "down" };
        let msg = LinkUnspec::new_with_name(link);
        let msg = if up { msg.up() } else { msg.down() };
        nl.link()
            .set(msg.build())
            .execute()
            .await
            .map_err(|source| LinkError::Set {
                netns: netns_name.into(),
                link: link.into(),
                state,
                source,
            })
    }
}

/// A fake that records `(netns, link, up)` for every request and succeeds.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    calls: Arc<Mutex<Vec<(String, String, bool)>>>,
}

impl Recorder {
    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<(String, String, bool)> {
        self.calls.lock().expect("calls lock").clone()
    }
}

#[async_trait::async_trait]
impl Links for Recorder {
    async fn set_up(&self, netns: &str, link: &str, up: bool) -> Result<(), LinkError> {
        self.calls
            .lock()
            .expect("calls lock")
            .push((netns.into(), link.into(), up));
        Ok(())
    }
}

//! The fault steps: a pod killed, its readiness failing or recovering, a node down
//! or up, a link cut or restored. Links are set down and up for real (through
//! [`crate::kernel::links`], in the testbed's own namespaces); what the kubelets report goes through
//! [`crate::kubelet::faults`]. Each step waits until the cluster has seen the change:
//! the pods' status, the endpoints, and every node's rules.

use std::time::{Duration, Instant};

use super::Runner;
use crate::api::labels::pod_ready;
use crate::api::{Key, Kind, Object};

/// Whose link a `link` step cuts.
pub(super) enum LinkOf {
    /// The pod's veth, at its node's end.
    Pod((String, String)),
    /// The node's port on the underlay.
    Node(String),
}

const SETTLE: Duration = Duration::from_secs(30);

impl Runner<'_> {
    fn pod_object(&self, key: &(String, String)) -> Option<k8s_openapi::api::core::v1::Pod> {
        match self.cp.store.get(&Key::new(Kind::Pod, &key.0, &key.1)) {
            Some(Object::Pod(p)) => Some(p),
            _ => None,
        }
    }

    /// Waits until `done` holds for the store, then for every node's rules.
    async fn settle(&self, what: &str, done: impl Fn(&Self) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE;
        let mut revision = self.cp.store.subscribe();
        while !done(self) {
            if Instant::now() >= deadline {
                return Err(format!("{what} did not happen within {SETTLE:?}"));
            }
            super::next_revision(&mut revision, deadline).await;
        }
        let rev = *self.cp.store.subscribe().borrow();
        if !self.cp.wait_synced(rev, SETTLE).await {
            return Err(format!("{what}, but the nodes' rules did not sync"));
        }
        Ok(())
    }

    pub(super) async fn kill(&self, key: &(String, String)) -> Result<String, String> {
        self.cp.faults.update(|s| {
            s.killed.insert(key.clone());
        });
        let (ns, name) = key;
        self.settle(&format!("pod {ns}/{name} stopping"), |r| {
            r.pod_object(key)
                .is_none_or(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Failed"))
        })
        .await?;
        Ok(format!(
            "pod {ns}/{name} killed: phase Failed, out of every Service's endpoints"
        ))
    }

    pub(super) async fn readiness(
        &self,
        key: &(String, String),
        ready: bool,
    ) -> Result<String, String> {
        self.cp.faults.update(|s| {
            if ready {
                s.unready.remove(key);
            } else {
                s.unready.insert(key.clone());
            }
        });
        let (ns, name) = key;
        let state = if ready { "ready" } else { "not ready" };
        self.settle(&format!("pod {ns}/{name} becoming {state}"), |r| {
            r.pod_object(key).is_some_and(|p| pod_ready(&p) == ready)
        })
        .await?;
        Ok(format!("pod {ns}/{name} is {state}"))
    }

    /// `ip -n NETNS link set dev LINK up|down`, through the kernel seam.
    async fn set_link(&self, netns_name: &str, link: &str, up: bool) -> Result<(), String> {
        self.links
            .set_up(netns_name, link, up)
            .await
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
    }

    fn pods_of_node(&self, node: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
        self.cp
            .store
            .list(Kind::Pod, None)
            .into_iter()
            .filter_map(|o| match o {
                Object::Pod(p)
                    if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node) =>
                {
                    Some(p)
                }
                _ => None,
            })
            .collect()
    }

    pub(super) async fn node(&self, name: &str, up: bool) -> Result<String, String> {
        let node = self.plan.node(name).ok_or_else(|| {
            let known: Vec<&str> = self.plan.nodes.iter().map(|n| n.name.as_str()).collect();
            format!("there is no node {name:?} (nodes: {})", known.join(", "))
        })?;
        // Its port on the underlay (the node's eth0 loses its carrier) and its cbr0.
        self.set_link(&self.plan.fabric.netns, &node.fabric_port, up)
            .await?;
        self.set_link(&node.netns, "cbr0", up).await?;
        self.cp.faults.update(|s| {
            if up {
                s.nodes_down.remove(name);
            } else {
                s.nodes_down.insert(name.to_string());
            }
        });
        let killed = self.cp.faults.get().killed;
        let settled = |r: &Self| {
            r.pods_of_node(name).iter().all(|p| {
                let key = (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                );
                killed.contains(&key) || pod_ready(p) == up
            })
        };
        let pods = self.pods_of_node(name).len();
        if up {
            self.settle(&format!("node {name}'s pods becoming ready"), settled)
                .await?;
            Ok(format!(
                "node {name} is up: its links are up, its {pods} pods ready"
            ))
        } else {
            self.settle(&format!("node {name}'s pods becoming not ready"), settled)
                .await?;
            Ok(format!(
                "node {name} is down: its underlay port and cbr0 are down, its {pods} pods not ready"
            ))
        }
    }

    pub(super) async fn link(&self, of: &LinkOf, up: bool) -> Result<String, String> {
        let state = if up { "restored" } else { "cut" };
        match of {
            LinkOf::Node(name) => {
                let node = self
                    .plan
                    .node(name)
                    .ok_or_else(|| format!("there is no node {name:?}"))?;
                self.set_link(&self.plan.fabric.netns, &node.fabric_port, up)
                    .await?;
                Ok(format!(
                    "node {name}'s underlay link {state} ({} in {})",
                    node.fabric_port, self.plan.fabric.netns
                ))
            }
            LinkOf::Pod((ns, name)) => {
                let pod = self
                    .pod_object(&(ns.clone(), name.clone()))
                    .ok_or_else(|| format!("there is no pod {ns}/{name}"))?;
                let node = pod
                    .spec
                    .and_then(|s| s.node_name)
                    .and_then(|n| self.plan.node(&n).cloned())
                    .ok_or_else(|| format!("pod {ns}/{name} is on no node"))?;
                let veth = crate::names::pod_host_veth(ns, name);
                self.set_link(&node.netns, &veth, up).await?;
                Ok(format!(
                    "pod {ns}/{name}'s link {state} ({veth} on {}'s cbr0)",
                    node.name
                ))
            }
        }
    }
}

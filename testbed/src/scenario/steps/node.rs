//! `node`: take a node down, make its kubelet silent, or bring it up. Down: its
//! port on the underlay and its cbr0 go down for real, and its pods are marked not
//! ready at once (the node lifecycle controller's part, played without its grace
//! period). Silent: its kubelet loses the API server (it stops renewing its Lease
//! and reporting; its pods keep running and serving), and the node lifecycle
//! controller does the rest after its grace period: the node NotReady, its pods
//! not ready, evicted when their tolerations run out. Up undoes either.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::context::settle;
use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};
use crate::api::labels::{node_status_column, pod_ready};
use crate::api::{Key, Kind, Object};

pub const KIND: StepKind = StepKind {
    key: "node",
    about: "Take a node down (its links; its pods not ready), make its kubelet silent, or bring it up.",
    schema: schema_of::<NodeFile>,
    expects: &[],
    parse,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeFile {
    pub name: String,
    /// `down`, `silent` or `up`.
    pub state: String,
}

#[derive(Debug)]
struct Node {
    name: String,
    up: bool,
    /// Silent rather than down: the links stay up.
    silent: bool,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let n: NodeFile = cx.value(value, at.path)?;
    let silent = n.state == "silent";
    if !matches!(n.state.as_str(), "up" | "down" | "silent") {
        cx.fail(&at.key("state"), format!("{:?} is not up, down or silent", n.state));
        return None;
    }
    Some(Box::new(Node {
        up: silent || n.state == "up",
        silent,
        name: n.name,
    }))
}

/// The pods the store has on `node`.
fn pods_of_node(cx: &dyn Context, node: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
    cx.store()
        .list(Kind::Pod, None)
        .into_iter()
        .filter_map(|o| match o {
            Object::Pod(p) if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node) => {
                Some(p)
            }
            _ => None,
        })
        .collect()
}

#[async_trait::async_trait(?Send)]
impl Action for Node {
    fn title(&self) -> String {
        if self.silent {
            return format!("make node {}'s kubelet silent", self.name);
        }
        format!(
            "take node {} {}",
            self.name,
            if self.up { "up" } else { "down" }
        )
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        vec![("node", &self.name)]
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        let (name, up) = (self.name.as_str(), self.up);
        let plan = cx.plan();
        let node = plan.node(name).ok_or_else(|| {
            let known: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
            format!("there is no node {name:?} (nodes: {})", known.join(", "))
        })?;
        if self.silent {
            cx.faults().update(|s| {
                s.silent.insert(name.to_string());
            });
            return Ok(Seen::line(format!(
                "node {name}'s kubelet is silent: no Lease renewals, no status; its {} pods run on",
                pods_of_node(cx, name).len()
            )));
        }
        // Its port on the underlay (the node's eth0 loses its carrier) and its cbr0.
        for (netns, link) in [(&plan.fabric.netns, &*node.fabric_port), (&node.netns, "cbr0")] {
            cx.links()
                .set_up(netns, link, up)
                .await
                .map_err(|e| crate::errors::chain(&e))?;
        }
        cx.faults().update(|s| {
            if up {
                s.nodes_down.remove(name);
                s.silent.remove(name);
            } else {
                s.nodes_down.insert(name.to_string());
            }
        });
        // Pods that ended for good (killed, restartPolicy Never) are not ready again,
        // nor are pods on their way out (evicted while the node was silent); the
        // node is Ready again once its kubelet has reported.
        let settled = |cx: &dyn Context| {
            let node_ready = match cx.store().get(&Key::new(Kind::Node, "", name)) {
                Some(Object::Node(n)) => node_status_column(&n) == "Ready",
                _ => true,
            };
            (node_ready || !up)
                && pods_of_node(cx, name).iter().all(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    matches!(phase, Some("Failed" | "Succeeded"))
                        || p.metadata.deletion_timestamp.is_some()
                        || pod_ready(p) == up
                })
        };
        let pods = pods_of_node(cx, name)
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        if up {
            settle(cx, &format!("node {name}'s pods becoming ready"), settled).await?;
            Ok(Seen::line(format!(
                "node {name} is up: its links are up, its {pods} pods ready"
            )))
        } else {
            settle(cx, &format!("node {name}'s pods becoming not ready"), settled).await?;
            Ok(Seen::line(format!(
                "node {name} is down: its underlay port and cbr0 are down, its {pods} pods not ready"
            )))
        }
    }
}

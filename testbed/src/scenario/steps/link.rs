//! `link`: cut or restore a link for real: a pod's veth (at its node's end, on the
//! node's cbr0) or a node's port on the underlay.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::exec::pod_or_node;
use super::probes::{pod, pod_object};
use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};

pub const KIND: StepKind = StepKind {
    key: "link",
    about: "Cut or restore a pod's or a node's link.",
    schema: schema_of::<LinkFile>,
    expects: &[],
    parse,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkFile {
    /// A pod (its eth0) or `node/NAME` (its underlay link).
    pub of: String,
    /// `down` or `up`.
    pub state: String,
}

#[derive(Debug)]
struct Link {
    of: String,
    up: bool,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let l: LinkFile = cx.value(value, at.path)?;
    Some(Box::new(Link {
        up: cx.state(&at.key("state"), &l.state),
        of: l.of,
    }))
}

#[async_trait::async_trait(?Send)]
impl Action for Link {
    fn title(&self) -> String {
        format!(
            "{} the link of {}",
            if self.up { "restore" } else { "cut" },
            self.of
        )
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        vec![pod_or_node(&self.of)]
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        let state = if self.up { "restored" } else { "cut" };
        let plan = cx.plan();
        let (netns, link, line) = match self.of.strip_prefix("node/") {
            Some(name) => {
                let node = plan
                    .node(name)
                    .ok_or_else(|| format!("there is no node {name:?}"))?;
                let line = format!(
                    "node {name}'s underlay link {state} ({} in {})",
                    node.fabric_port, plan.fabric.netns
                );
                (plan.fabric.netns.clone(), node.fabric_port.clone(), line)
            }
            None => {
                let ((ns, name), _) = pod(cx, &self.of)?;
                let p = pod_object(cx, &(ns.clone(), name.clone()))
                    .ok_or_else(|| format!("there is no pod {ns}/{name}"))?;
                let node = p
                    .spec
                    .and_then(|s| s.node_name)
                    .and_then(|n| plan.node(&n).cloned())
                    .ok_or_else(|| format!("pod {ns}/{name} is on no node"))?;
                let veth = crate::names::pod_host_veth(&ns, &name);
                let line = format!(
                    "pod {ns}/{name}'s link {state} ({veth} on {}'s cbr0)",
                    node.name
                );
                (node.netns, veth, line)
            }
        };
        cx.links()
            .set_up(&netns, &link, self.up)
            .await
            .map_err(|e| crate::errors::chain(&e))?;
        Ok(Seen::line(line))
    }
}

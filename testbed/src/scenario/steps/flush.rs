//! `flush`: flush a node's netfilter tables (`nft flush ruleset` in its namespace),
//! as a firewall reload or an admin's mistake does. Everything kube-proxy wrote goes,
//! its canary chains with it; its next periodic sync notices and restores the rules.
//! The step waits until it has.

use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{probes, schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};

pub const KIND: StepKind = StepKind {
    key: "flush",
    about: "Flush a node's netfilter tables; kube-proxy finds its canary chains gone and restores its rules.",
    schema: schema_of::<FlushFile>,
    expects: &[],
    parse,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlushFile {
    /// The node.
    pub node: String,
}

#[derive(Debug)]
struct Flush {
    node: String,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let f: FlushFile = cx.value(value, at.path)?;
    Some(Box::new(Flush { node: f.node }))
}

/// How long kube-proxy may take to restore the rules: a few sync periods.
const RESTORED_WITHIN: Duration = Duration::from_secs(15);

#[async_trait::async_trait(?Send)]
impl Action for Flush {
    fn title(&self) -> String {
        format!("flush the netfilter tables of node {}", self.node)
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        vec![("node", &self.node)]
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        let target = format!("node/{}", self.node);
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let (code, _, err) =
            probes::exec(cx, &target, &argv(&["nft", "flush", "ruleset"])).await?;
        if code != 0 {
            return Err(format!("nft flush ruleset in node {}: {err}", self.node));
        }
        // Restored: the canary is back and PREROUTING leads to KUBE-SERVICES.
        let check = argv(&[
            "sh",
            "-c",
            "iptables -w -t mangle -S KUBE-PROXY-CANARY >/dev/null && iptables -w -t nat -S PREROUTING | grep -q -- '-j KUBE-SERVICES'",
        ]);
        let start = Instant::now();
        loop {
            let (code, _, _) = probes::exec(cx, &target, &check).await?;
            if code == 0 {
                break;
            }
            if start.elapsed() > RESTORED_WITHIN {
                return Err(format!(
                    "node {}'s kube-proxy did not restore its rules within {} s",
                    self.node,
                    RESTORED_WITHIN.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Seen::line(format!(
            "node {}'s tables flushed; its kube-proxy found its canary chains gone and restored its rules",
            self.node
        )))
    }
}

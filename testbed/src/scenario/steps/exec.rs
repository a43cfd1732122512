//! `exec`: run a command in a pod or a node, as `testbed exec` (and `kubectl exec`).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{expect, schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};

pub const KIND: StepKind = StepKind {
    key: "exec",
    about: "Run a command in a pod or a node.",
    schema: schema_of::<ExecFile>,
    expects: &["exitCode", "stdout", "contains"],
    parse,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecFile {
    /// A pod (`client-1`, `NAMESPACE/NAME`) or a node (`node/node-1`).
    #[serde(rename = "in")]
    pub target: String,
    /// The command: a list of arguments, or a string run by `sh -c`.
    pub command: CommandFile,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandFile {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Debug)]
struct Exec {
    target: String,
    argv: Vec<String>,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let e: ExecFile = cx.value(value, at.path)?;
    let argv = match e.command {
        CommandFile::Shell(s) => vec!["sh".into(), "-c".into(), s],
        CommandFile::Argv(v) if v.is_empty() => {
            cx.fail(&at.key("command"), "the command is empty");
            v
        }
        CommandFile::Argv(v) => v,
    };
    Some(Box::new(Exec {
        target: e.target,
        argv,
    }))
}

/// What a pod, node or host target is: `node/NAME` is a node, `host/NAME` a host
/// outside the cluster.
pub(super) fn pod_or_node(t: &str) -> (&'static str, &str) {
    let what = if t.starts_with("node/") {
        "node"
    } else if t.starts_with("host/") {
        "host"
    } else {
        "pod"
    };
    (what, t)
}

#[async_trait::async_trait(?Send)]
impl Action for Exec {
    fn title(&self) -> String {
        format!("exec in {}: {}", self.target, self.argv.join(" "))
    }

    fn probes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        vec![pod_or_node(&self.target)]
    }

    async fn run(&self, cx: &mut dyn Context, e: &Expect) -> Result<Seen, String> {
        let (code, stdout, stderr) = super::probes::exec(cx, &self.target, &self.argv).await?;
        let mut out = vec![format!("exit code {code}")];
        out.extend(stdout.lines().map(|l| format!("| {l}")));
        out.extend(stderr.lines().map(|l| format!("! {l}")));
        Ok(Seen {
            lines: out,
            mismatches: expect::exec(e, code, &stdout),
            ..Default::default()
        })
    }
}

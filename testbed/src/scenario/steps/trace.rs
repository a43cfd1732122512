//! `trace`: follow one real connection from a pod hop by hop (see [`crate::trace`]).
//! A named trace step pins the parts of the trace that do not change from run to
//! run (hops, chains, the endpoint set; no ports, counters or times) as a snapshot.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::expect::{list, Mismatch};
use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};
use crate::trace::{Request, World};

pub const KIND: StepKind = StepKind {
    key: "trace",
    about: "Follow one connection from a pod hop by hop; a named step pins it as a snapshot.",
    schema: schema_of::<TraceFile>,
    expects: &["backends", "error", "contains"],
    parse,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TraceFile {
    /// The pod that connects.
    pub from: String,
    /// A name, a ClusterIP, a pod IP or a node address, with `:PORT` or without (the
    /// Service's first port).
    pub to: String,
    /// TCP (the default) or UDP.
    pub protocol: Option<String>,
    /// How long the connection waits for an answer: `2s` by default.
    pub timeout: Option<String>,
}

#[derive(Debug)]
struct Trace {
    req: Request,
    name: Option<String>,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let t: TraceFile = cx.value(value, at.path)?;
    if let Err(e) = crate::trace::gather::split_target(&t.to) {
        cx.fail(&at.key("to"), e);
    }
    Some(Box::new(Trace {
        req: Request {
            udp: cx.protocol(&at.key("protocol"), t.protocol.as_deref()),
            timeout: cx.duration(&at.key("timeout"), t.timeout.as_deref(), Duration::from_secs(2)),
            from: t.from,
            target: t.to,
        },
        name: at.name.map(str::to_string),
    }))
}

/// What a trace saw against what the step expects.
fn compare(e: &Expect, t: &crate::trace::Trace) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mismatch = |what: &str, expected: String, seen: String| Mismatch {
        what: what.into(),
        expected,
        seen,
    };
    if let Some(want) = &e.backends {
        let seen: Vec<String> = t
            .answered
            .iter()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect();
        let mut w = want.clone();
        w.sort();
        if w != seen {
            out.push(mismatch("backends", list(want), list(&seen)));
        }
    }
    if let Some(want) = &e.error {
        if t.error.as_deref() != Some(want.as_str()) {
            let seen = t.error.clone().unwrap_or_else(|| t.result.clone());
            out.push(mismatch("error", want.clone(), seen));
        }
    }
    if let Some(want) = &e.contains {
        let text = t.text();
        if !text.contains(want.as_str()) {
            out.push(mismatch("contains", format!("{want:?}"), text));
        }
    }
    out
}

#[async_trait::async_trait(?Send)]
impl Action for Trace {
    fn title(&self) -> String {
        format!(
            "trace {} -> {}/{}",
            self.req.from,
            self.req.target,
            if self.req.udp { "UDP" } else { "TCP" }
        )
    }

    fn probes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        vec![("pod", &self.req.from)]
    }

    fn snapshot_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    async fn run(&self, cx: &mut dyn Context, e: &Expect) -> Result<Seen, String> {
        let world = World::from_store(cx.plan().clone(), cx.store());
        let t = crate::trace::trace(&world, &self.req).await?;
        let picture = crate::graph::Picture::of(&world);
        let mut lines = vec![t.result.clone()];
        if let Some(name) = &self.name {
            let full = format!("{}@{name}", cx.scenario());
            let description = format!("{}: {}", cx.scenario(), self.title());
            lines.push(cx.snapshot(&full, &description, &t.stable_text())?);
        }
        Ok(Seen {
            lines,
            mismatches: compare(e, &t),
            detail: Some(t.text()),
            figure: Some(crate::graph::svg::render(&picture, &t.path)),
        })
    }
}

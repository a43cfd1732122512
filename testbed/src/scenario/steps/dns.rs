//! `dns`: ask a DNS question from a pod, through its resolv.conf (its search path and
//! ndots, as its resolver would).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{expect, schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};
use crate::probe::dns::Answer;

pub const KIND: StepKind = StepKind {
    key: "dns",
    about: "Ask a DNS question from a pod, through its resolv.conf.",
    schema: schema_of::<DnsFile>,
    expects: &["rcode", "answers", "answered"],
    parse,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DnsFile {
    /// The pod that asks (`client-1` or `NAMESPACE/NAME`).
    pub from: String,
    /// The name, tried through the pod's search path as its resolver does (ndots).
    pub name: String,
    /// A, AAAA, SRV, PTR, TXT, CNAME, SOA, NS; A by default.
    #[serde(rename = "type")]
    pub rtype: Option<String>,
    /// Ask over TCP instead of UDP.
    pub tcp: Option<bool>,
}

/// A question from a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsQuery {
    pub from: String,
    pub name: String,
    pub rtype: hickory_proto::rr::RecordType,
    pub tcp: bool,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let d: DnsFile = cx.value(value, at.path)?;
    Some(Box::new(DnsQuery {
        rtype: cx.rtype(&at.key("type"), d.rtype.as_deref()),
        from: d.from,
        name: d.name,
        tcp: d.tcp.unwrap_or(false),
    }))
}

#[async_trait::async_trait(?Send)]
impl Action for DnsQuery {
    fn title(&self) -> String {
        format!(
            "dns {} {} from {}{}",
            self.rtype,
            self.name,
            self.from,
            if self.tcp { " over TCP" } else { "" }
        )
    }

    fn probes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        vec![("pod", &self.from)]
    }

    async fn run(&self, cx: &mut dyn Context, e: &Expect) -> Result<Seen, String> {
        let a = super::probes::dns(cx, self).await?;
        Ok(Seen {
            lines: lines(&a),
            mismatches: expect::dns(e, &a),
            ..Default::default()
        })
    }
}

fn lines(a: &Answer) -> Vec<String> {
    let mut out = vec![format!(
        "{} {} from {} ({})",
        a.name,
        a.rcode,
        a.server,
        if a.data.is_empty() {
            "no answer".to_string()
        } else {
            a.data.join(", ")
        }
    )];
    if a.tried.len() > 1 {
        out.push(format!("tried {}", a.tried.join(", ")));
    }
    out
}

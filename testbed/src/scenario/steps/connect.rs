//! `connect`: connect from a pod to a name or an address, several times, and see
//! which pods answer.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{expect, schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};

pub const KIND: StepKind = StepKind {
    key: "connect",
    about: "Connect from a pod to a name or address, several times, and see which pods answer.",
    schema: schema_of::<ConnectFile>,
    expects: &["backends", "backendCount", "ok", "error"],
    parse,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectFile {
    /// The pod that connects.
    pub from: String,
    /// A name (resolved through the pod's resolv.conf) or an IPv4 address.
    pub to: String,
    pub port: u16,
    /// TCP (the default) or UDP.
    pub protocol: Option<String>,
    /// How many connections, each from a new source port; 1 by default.
    pub times: Option<u32>,
    /// How long each waits for an answer: `1s` by default.
    pub timeout: Option<String>,
    /// Every connection from this source port (to show conntrack at work), instead of a new one each time.
    pub source_port: Option<u16>,
}

/// Connections from a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    pub from: String,
    pub to: String,
    pub port: u16,
    pub udp: bool,
    pub times: u32,
    pub timeout: Duration,
    pub source_port: Option<u16>,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let c: ConnectFile = cx.value(value, at.path)?;
    Some(Box::new(checked(cx, at.path, c, 1)))
}

/// Checks connections as written at `path`, `default_times` of them unless told.
pub(super) fn checked(cx: &mut Ctx, path: &str, c: ConnectFile, default_times: u32) -> Connect {
    let at = |key: &str| crate::yaml::child_key(path, key);
    let times = c.times.unwrap_or(default_times);
    if times == 0 || times > 1000 {
        cx.fail(&at("times"), format!("{times} is not between 1 and 1000"));
    }
    if c.port == 0 {
        cx.fail(&at("port"), "port 0 cannot be connected to");
    }
    Connect {
        udp: cx.protocol(&at("protocol"), c.protocol.as_deref()),
        timeout: cx.duration(&at("timeout"), c.timeout.as_deref(), Duration::from_secs(1)),
        from: c.from,
        to: c.to,
        port: c.port,
        times,
        source_port: c.source_port,
    }
}

impl Connect {
    /// `connect client:4000 -> web:80/TCP x10`.
    pub fn describe(&self) -> String {
        let from = match self.source_port {
            Some(p) => format!("{}:{p}", self.from),
            None => self.from.clone(),
        };
        format!(
            "connect {from} -> {}:{}/{} x{}",
            self.to,
            self.port,
            if self.udp { "UDP" } else { "TCP" },
            self.times
        )
    }
}

#[async_trait::async_trait(?Send)]
impl Action for Connect {
    fn title(&self) -> String {
        self.describe()
    }

    fn probes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        vec![("pod", &self.from)]
    }

    async fn run(&self, cx: &mut dyn Context, e: &Expect) -> Result<Seen, String> {
        let (target, outcomes) = super::probes::connect(cx, self).await?;
        let (b, errs) = expect::tally(&outcomes);
        Ok(Seen {
            lines: vec![format!(
                "{} to {target}: {}",
                self.times,
                expect::describe(&b, &errs)
            )],
            mismatches: expect::connect(e, &outcomes),
            ..Default::default()
        })
    }
}

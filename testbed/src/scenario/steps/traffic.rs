//! `traffic`: start traffic from a pod that runs across the steps after it, until a
//! `stop` step names it and reports it interval by interval: how many requests were
//! answered and by which pods, and how many failed and how (refused, reset, timeout,
//! nxdomain). It shows what a change does *while* it happens.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::probes::{pod, pod_etc};
use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};
use crate::probe::dns::{hosts_lookup, Resolv};
use crate::probe::traffic::{self, Spec, Target};

pub const KIND: StepKind = StepKind {
    key: "traffic",
    about: "Start traffic from a pod, at a rate, that runs across the later steps until a `stop` step reports it.",
    schema: schema_of::<TrafficFile>,
    expects: &[],
    parse,
};

/// The most requests a second a traffic step sends.
pub const MAX_RATE: u32 = 200;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficFile {
    /// The pod that sends.
    pub from: String,
    /// A name (resolved through the pod's resolv.conf for every new connection) or an
    /// IPv4 address.
    pub to: String,
    pub port: u16,
    /// TCP (the default) or UDP.
    pub protocol: Option<String>,
    /// Requests a second: 10 by default, at most 200.
    pub rate: Option<u32>,
    /// How long each request waits for its answer: `1s` by default.
    pub timeout: Option<String>,
    /// Every request over one long HTTP/1.1 connection (TCP), opened again after a
    /// failure, instead of a new connection each.
    pub long: Option<bool>,
    /// The width of the report's rows: `1s` by default.
    pub interval: Option<String>,
}

#[derive(Debug)]
struct Traffic {
    id: String,
    from: String,
    to: String,
    port: u16,
    udp: bool,
    rate: u32,
    timeout: Duration,
    long: bool,
}

/// How a `stop` step reports a traffic: its row width and how long its requests wait.
#[derive(Debug, Clone)]
pub struct Declared {
    pub id: String,
    pub interval: Duration,
    pub timeout: Duration,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let t: TrafficFile = cx.value(value, at.path)?;
    let Some(id) = at.name.map(String::from) else {
        cx.fail(at.path, "a traffic step needs a `name`, for the `stop` step that reports it");
        return None;
    };
    let rate = t.rate.unwrap_or(10);
    if rate == 0 || rate > MAX_RATE {
        cx.fail(&at.key("rate"), format!("{rate} is not between 1 and {MAX_RATE} requests a second"));
    }
    if t.port == 0 {
        cx.fail(&at.key("port"), "port 0 cannot be connected to");
    }
    let udp = cx.protocol(&at.key("protocol"), t.protocol.as_deref());
    let long = t.long.unwrap_or(false);
    if long && udp {
        cx.fail(&at.key("long"), "one long connection is TCP; UDP has none");
    }
    let timeout = cx.duration(&at.key("timeout"), t.timeout.as_deref(), Duration::from_secs(1));
    let interval = cx.duration(&at.key("interval"), t.interval.as_deref(), Duration::from_secs(1));
    if interval < Duration::from_millis(100) {
        cx.fail(&at.key("interval"), "an interval is at least 100ms");
    }
    cx.declare_traffic(Declared {
        id: id.clone(),
        interval,
        timeout,
    });
    Some(Box::new(Traffic {
        id,
        from: t.from,
        to: t.to,
        port: t.port,
        udp,
        rate,
        timeout,
        long,
    }))
}

impl Traffic {
    fn describe(&self) -> String {
        format!(
            "{} -> {}:{}/{} at {}/s{}",
            self.from,
            self.to,
            self.port,
            if self.udp { "UDP" } else { "TCP" },
            self.rate,
            if self.long { " over one connection" } else { ", a new connection each" }
        )
    }
}

#[async_trait::async_trait(?Send)]
impl Action for Traffic {
    fn title(&self) -> String {
        format!("start traffic {}", self.describe())
    }

    fn probes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        vec![("pod", &self.from)]
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        let (_, netns) = pod(cx, &self.from)?;
        let hosts = pod_etc(&netns, "hosts").unwrap_or_default();
        let target = match self.to.parse().ok().or_else(|| hosts_lookup(&hosts, &self.to)) {
            Some(ip) => Target::Address((ip, self.port).into()),
            None => Target::Name {
                name: self.to.clone(),
                port: self.port,
                resolv: Resolv::parse(&pod_etc(&netns, "resolv.conf")?),
            },
        };
        let running = traffic::start(Spec {
            netns,
            target,
            udp: self.udp,
            rate: self.rate,
            timeout: self.timeout,
            long: self.long,
        });
        cx.background()
            .traffic
            .insert(self.id.clone(), (self.describe(), running));
        Ok(Seen::line(format!("traffic {} started: {}", self.id, self.describe())))
    }
}

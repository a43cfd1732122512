//! `fault`: break the network on purpose, for real: packet loss or a partition on a
//! link or between two sets of nodes or pods (nf_tables drops), a rate limit or a
//! delay on a link (qdiscs). A `heal` step naming it undoes it; the testbed's end
//! removes whatever is left, with the namespaces it lives in.

use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::probes::{pod, pod_object};
use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};
use crate::api::Kind;
use crate::impair::{self, Change, Effect, End, Fault, PodEnd, Resolved, Scope, UnderlayEnd};

pub const KIND: StepKind = StepKind {
    key: "fault",
    about: "Break the network: loss, a partition, a rate limit or a delay, on a link or between two sets of nodes or pods, until a `heal` step.",
    schema: schema_of::<FaultFile>,
    expects: &[],
    parse,
};

/// A percentage: `30%` or `30`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Percent {
    Number(f64),
    Text(String),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultFile {
    /// One link: a pod's (its eth0 and its veth on the node's cbr0), or `node/NAME` or
    /// `host/NAME` (its port on the underlay bridge).
    pub link: Option<String>,
    /// Two sides, each a list of `node/NAME` and `host/NAME`, or of pods (a name,
    /// `NS/NAME`, or a selector `app=web` for every such pod): what goes between them
    /// is hit, each way.
    pub between: Option<Vec<Vec<String>>>,
    /// Each packet is dropped with this chance, each way (`30%`).
    pub loss: Option<Percent>,
    /// Every packet is dropped, each way: `partition: true` is `loss: 100%`.
    pub partition: Option<bool>,
    /// A link's rate each way (`1mbit`, `500kbit`): a tbf qdisc at both of its ends.
    pub rate: Option<String>,
    /// A link's delay each way (`100ms`): needs the netem qdisc in the kernel.
    pub delay: Option<String>,
    /// With `delay`: give or take this much (`10ms`).
    pub jitter: Option<String>,
}

/// A fault as declared, and what its step changed (for its `heal`).
#[derive(Debug)]
pub struct Declared {
    pub fault: Fault,
    pub applied: Mutex<Vec<Change>>,
}

#[derive(Debug)]
struct FaultStep(Arc<Declared>);

/// A fault's id: its step's name, or `stepN`.
pub(super) fn id(at: &At) -> String {
    at.name
        .map(String::from)
        .unwrap_or_else(|| format!("step{}", at.index + 1))
}

fn effect(cx: &mut Ctx, at: &At, f: &FaultFile) -> Option<Effect> {
    let mut effects = Vec::new();
    if let Some(p) = &f.loss {
        let text = match p {
            Percent::Number(n) => n.to_string(),
            Percent::Text(t) => t.clone(),
        };
        match impair::parse_percent(&text) {
            Ok(p) => effects.push(Effect::Loss(p)),
            Err(e) => cx.fail(&at.key("loss"), e),
        }
    }
    if f.partition == Some(true) {
        effects.push(Effect::Loss(100));
    }
    if let Some(r) = &f.rate {
        match impair::parse_rate(r) {
            Ok(bits) => effects.push(Effect::Rate {
                bits,
                text: r.clone(),
            }),
            Err(e) => cx.fail(&at.key("rate"), e),
        }
    }
    if let Some(d) = &f.delay {
        let ms = |cx: &mut Ctx, key: &str, t: &str| match super::parse_duration(t) {
            Ok(d) => Some(format!("{}ms", d.as_millis())),
            Err(e) => {
                cx.fail(&at.key(key), e);
                None
            }
        };
        let delay = ms(cx, "delay", d)?;
        let jitter = match &f.jitter {
            Some(j) => Some(ms(cx, "jitter", j)?),
            None => None,
        };
        match impair::netem_missing() {
            Some(why) => cx.fail(&at.key("delay"), why),
            None => effects.push(Effect::Delay { delay, jitter }),
        }
    } else if f.jitter.is_some() {
        cx.fail(&at.key("jitter"), "jitter goes with a delay");
    }
    if effects.len() != 1 {
        if effects.len() > 1 {
            cx.fail(
                at.path,
                "a fault does one thing (loss, partition, rate or delay); make them separate steps",
            );
        } else if f.loss.is_none() && f.rate.is_none() && f.delay.is_none() {
            cx.fail(at.path, "a fault needs one of loss, partition: true, rate, delay");
        }
        return None;
    }
    effects.pop()
}

fn scope(cx: &mut Ctx, at: &At, f: &FaultFile) -> Option<Scope> {
    match (&f.link, &f.between) {
        (Some(l), None) => Some(Scope::Link(End::parse(l))),
        (None, Some(sides)) => {
            let ends = |s: &Vec<String>| s.iter().map(|t| End::parse(t)).collect::<Vec<_>>();
            if sides.len() != 2 || sides.iter().any(Vec::is_empty) {
                cx.fail(&at.key("between"), "between takes two sides, each a list of one or more");
                return None;
            }
            let (a, b) = (ends(&sides[0]), ends(&sides[1]));
            let kinds: Vec<bool> = a.iter().chain(&b).map(|e| matches!(e, End::Pod(_))).collect();
            if kinds.iter().any(|k| *k != kinds[0]) {
                cx.fail(
                    &at.key("between"),
                    "both sides are nodes and hosts, or both are pods, not a mix",
                );
                return None;
            }
            if let Some(e) = a.iter().find(|e| b.contains(e)) {
                cx.fail(&at.key("between"), format!("{e:?} is on both sides"));
                return None;
            }
            Some(Scope::Between(a, b))
        }
        _ => {
            cx.fail(at.path, "a fault is on one `link` or `between` two sides (one of them)");
            None
        }
    }
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let f: FaultFile = cx.value(value, at.path)?;
    let effect = effect(cx, at, &f)?;
    let scope = scope(cx, at, &f)?;
    if !matches!(effect, Effect::Loss(_)) && !matches!(scope, Scope::Link(_)) {
        cx.fail(at.path, "a rate limit or a delay is on one `link`, not between sets");
        return None;
    }
    let declared = Arc::new(Declared {
        fault: Fault {
            id: id(at),
            effect,
            scope,
        },
        applied: Mutex::new(Vec::new()),
    });
    if let Err(why) = cx.declare_fault(declared.clone()) {
        cx.fail(at.path, why);
        return None;
    }
    Some(Box::new(FaultStep(declared)))
}

/// A pod reference as a pod end: every pod a selector matches, or the one named.
fn pod_ends(cx: &dyn Context, r: &str) -> Result<Vec<PodEnd>, String> {
    let refs: Vec<String> = match r.split_once('/').map_or(r, |(_, rest)| rest).contains('=') {
        false => vec![r.to_string()],
        true => {
            let (ns, sel) = r.split_once('/').unwrap_or(("default", r));
            let want: Vec<(&str, &str)> = sel.split(',').filter_map(|kv| kv.split_once('=')).collect();
            let mut names: Vec<String> = cx
                .store()
                .list(Kind::Pod, Some(ns))
                .into_iter()
                .filter(|o| {
                    let labels = o.meta().labels.clone().unwrap_or_default();
                    want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|o| format!("{ns}/{}", o.name()))
                .collect();
            names.sort();
            if names.is_empty() {
                return Err(format!("no pod in namespace {ns} has the labels {sel}"));
            }
            names
        }
    };
    refs.iter()
        .map(|r| {
            let ((ns, name), netns) = pod(cx, r)?;
            let p = pod_object(cx, &(ns.clone(), name.clone()))
                .ok_or_else(|| format!("there is no pod {ns}/{name}"))?;
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok())
                .ok_or_else(|| format!("pod {ns}/{name} has no address yet"))?;
            let node = p
                .spec
                .and_then(|s| s.node_name)
                .and_then(|n| cx.plan().node(&n).cloned())
                .ok_or_else(|| format!("pod {ns}/{name} is on no node"))?;
            Ok(PodEnd {
                netns,
                ip,
                node_netns: node.netns,
                host_veth: crate::names::pod_host_veth(&ns, &name),
            })
        })
        .collect()
}

fn underlay_end(cx: &dyn Context, t: &str) -> Result<UnderlayEnd, String> {
    let plan = cx.plan();
    if let Some(n) = t.strip_prefix("node/") {
        let node = plan.node(n).ok_or_else(|| format!("there is no node {n:?}"))?;
        return Ok(UnderlayEnd {
            port: node.fabric_port.clone(),
            netns: node.netns.clone(),
        });
    }
    let h = t.strip_prefix("host/").unwrap_or(t);
    let host = plan
        .hosts
        .iter()
        .find(|x| x.name == h)
        .ok_or_else(|| format!("there is no host {h:?}"))?;
    Ok(UnderlayEnd {
        port: host.fabric_port.clone(),
        netns: host.netns.clone(),
    })
}

/// The fault's ends in the running testbed.
pub(super) fn resolve(cx: &dyn Context, scope: &Scope) -> Result<Resolved, String> {
    let pods = |side: &[End]| -> Result<Vec<PodEnd>, String> {
        let mut out = Vec::new();
        for e in side {
            if let End::Pod(r) = e {
                out.extend(pod_ends(cx, r)?);
            }
        }
        Ok(out)
    };
    let under = |side: &[End]| -> Result<Vec<UnderlayEnd>, String> {
        side.iter()
            .map(|e| match e {
                End::Underlay(t) | End::Pod(t) => underlay_end(cx, t),
            })
            .collect()
    };
    Ok(match scope {
        Scope::Link(End::Underlay(t)) => Resolved::UnderlayLink(underlay_end(cx, t)?),
        Scope::Link(End::Pod(r)) => {
            let ((ns, name), _) = pod(cx, r)?;
            let one = pod_ends(cx, &format!("{ns}/{name}"))?;
            Resolved::PodLink(one.into_iter().next().expect("one pod"))
        }
        Scope::Between(a, b) if matches!(a[0], End::Pod(_)) => Resolved::PodsBetween(pods(a)?, pods(b)?),
        Scope::Between(a, b) => Resolved::UnderlayBetween(under(a)?, under(b)?),
    })
}

/// The ends a fault names that validation can look for before the cluster is built.
pub(super) fn named_targets(scope: &Scope) -> Vec<(&'static str, &str)> {
    let all: Vec<&End> = match scope {
        Scope::Link(e) => vec![e],
        Scope::Between(a, b) => a.iter().chain(b).collect(),
    };
    all.into_iter()
        .filter_map(|e| match e {
            End::Underlay(t) => Some(super::exec::pod_or_node(t)),
            End::Pod(t) if !t.contains('=') => Some(("pod", t.as_str())),
            End::Pod(_) => None,
        })
        .collect()
}

#[async_trait::async_trait(?Send)]
impl Action for FaultStep {
    fn title(&self) -> String {
        format!("fault: {}", self.0.fault.describe())
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        named_targets(&self.0.fault.scope)
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        let fault = &self.0.fault;
        let resolved = resolve(cx, &fault.scope)?;
        let changes = impair::changes(fault, &resolved, &cx.plan().fabric.netns)?;
        impair::apply::apply(&changes).await?;
        let mut lines = vec![format!("{} in force", fault.describe())];
        lines.extend(changes.iter().map(|c| format!("  {}: {}", c.netns(), c.command())));
        *self.0.applied.lock().expect("fault lock") = changes;
        Ok(Seen {
            lines,
            ..Default::default()
        })
    }
}

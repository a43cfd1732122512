//! `snapshot`: pin a view of the cluster as an insta snapshot: the Services, a
//! Service's endpoints, a DNS answer, a node's nat or filter table, a pod's routes and
//! resolv.conf, or which pods answer a connection.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::connect::{self, ConnectFile};
use super::{
    ns_name, probes, schema_of, views, Action, At, Connect, Context, Ctx, DnsQuery, Expect, Seen,
    StepKind,
};
use crate::api::{Key, Kind, Object};

pub const KIND: StepKind = StepKind {
    key: "snapshot",
    about: "Pin a view of the cluster as an insta snapshot.",
    schema: schema_of::<SnapshotFile>,
    expects: &[],
    parse,
};

/// A view: `services`, `endpoints` (of `service`), `dns` (a question), `nat` and
/// `filter` (a node's iptables table), `nftables` (a node's table `ip kube-proxy`),
/// `pod` (routes and resolv.conf), `backends` (who answers), `nodes` (each node's
/// STATUS and taints, and its pods' STATUS).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SnapshotFile {
    pub view: String,
    /// `endpoints`: the Service (`web` or `NAMESPACE/web`).
    pub service: Option<String>,
    /// `nat`, `filter`, `nftables`: the node.
    pub node: Option<String>,
    /// `pod`: the pod.
    pub pod: Option<String>,
    /// `dns`, `backends`: the pod that asks or connects.
    pub from: Option<String>,
    /// `dns`: the name.
    pub name: Option<String>,
    /// `dns`: the type.
    #[serde(rename = "type")]
    pub rtype: Option<String>,
    /// `backends`: the name or address.
    pub to: Option<String>,
    /// `backends`: the port.
    pub port: Option<u16>,
    /// `backends`: TCP or UDP.
    pub protocol: Option<String>,
    /// `backends`: how many connections (20 by default).
    pub times: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum View {
    Services,
    Nodes,
    Endpoints((String, String)),
    Dns(DnsQuery),
    Nat(String),
    Filter(String),
    Nftables(String),
    Pod(String),
    Backends(Connect),
}

#[derive(Debug)]
struct Snapshot {
    name: String,
    view: View,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let s: SnapshotFile = cx.value(value, at.path)?;
    let view = view(cx, at.path, s)?;
    let name = at
        .name
        .map(String::from)
        .unwrap_or_else(|| format!("{:02}-{}", at.index + 1, view.kind()));
    Some(Box::new(Snapshot { name, view }))
}

fn view(cx: &mut Ctx, path: &str, s: SnapshotFile) -> Option<View> {
    let at = |key: &str| crate::yaml::child_key(path, key);
    let need = |cx: &mut Ctx, what: &str, v: &Option<String>| -> String {
        match v {
            Some(v) => v.clone(),
            None => {
                cx.fail(path, format!("the {} view needs {what}", s.view));
                String::new()
            }
        }
    };
    let (view, allowed): (View, &[&str]) = match s.view.as_str() {
        "services" => (View::Services, &[]),
        "nodes" => (View::Nodes, &[]),
        "endpoints" => (
            View::Endpoints(ns_name(&need(cx, "service", &s.service))),
            &["service"],
        ),
        "nat" => (View::Nat(need(cx, "node", &s.node)), &["node"]),
        "filter" => (View::Filter(need(cx, "node", &s.node)), &["node"]),
        "nftables" => (View::Nftables(need(cx, "node", &s.node)), &["node"]),
        "pod" => (View::Pod(need(cx, "pod", &s.pod)), &["pod"]),
        "dns" => (
            View::Dns(DnsQuery {
                from: need(cx, "from", &s.from),
                name: need(cx, "name", &s.name),
                rtype: cx.rtype(&at("type"), s.rtype.as_deref()),
                tcp: false,
            }),
            &["from", "name", "type"],
        ),
        "backends" => {
            let port = s.port.unwrap_or_else(|| {
                cx.fail(path, "the backends view needs port");
                0
            });
            let c = ConnectFile {
                from: need(cx, "from", &s.from),
                to: need(cx, "to", &s.to),
                port,
                protocol: s.protocol.clone(),
                times: s.times,
                timeout: None,
                source_port: None,
            };
            (
                View::Backends(connect::checked(cx, path, c, 20)),
                &["from", "to", "port", "protocol", "times"],
            )
        }
        other => {
            cx.fail(
                &at("view"),
                format!("{other:?} is not a view: services, endpoints, dns, nat, filter, nftables, pod, backends, nodes"),
            );
            return None;
        }
    };
    let given = [
        ("service", s.service.is_some()),
        ("node", s.node.is_some()),
        ("pod", s.pod.is_some()),
        ("from", s.from.is_some()),
        ("name", s.name.is_some()),
        ("type", s.rtype.is_some()),
        ("to", s.to.is_some()),
        ("port", s.port.is_some()),
        ("protocol", s.protocol.is_some()),
        ("times", s.times.is_some()),
    ];
    for (key, present) in given {
        if present && !allowed.contains(&key) {
            cx.fail(&at(key), format!("the {} view does not take {key}", s.view));
        }
    }
    Some(view)
}

impl View {
    fn kind(&self) -> &'static str {
        match self {
            View::Services => "services",
            View::Nodes => "nodes",
            View::Endpoints(_) => "endpoints",
            View::Dns(_) => "dns",
            View::Nat(_) => "nat",
            View::Filter(_) => "filter",
            View::Nftables(_) => "nftables",
            View::Pod(_) => "pod",
            View::Backends(_) => "backends",
        }
    }

    /// The view as text, the same on every run.
    async fn take(&self, cx: &dyn Context) -> Result<String, String> {
        match self {
            View::Services => {
                let list: Vec<_> = cx
                    .store()
                    .list(Kind::Service, None)
                    .into_iter()
                    .filter_map(|o| match o {
                        Object::Service(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                Ok(views::services(&list))
            }
            View::Nodes => Ok(views::nodes(
                &cx.store().list(Kind::Node, None),
                &cx.store().list(Kind::Pod, None),
            )),
            View::Endpoints((ns, name)) => {
                let ep = match cx.store().get(&Key::new(Kind::Endpoints, ns, name)) {
                    Some(Object::Endpoints(e)) => Some(e),
                    _ => None,
                };
                Ok(views::endpoints(&format!("{ns}/{name}"), ep.as_ref()))
            }
            View::Dns(q) => Ok(views::dns(q, &probes::dns(cx, q).await?)),
            View::Nat(node) | View::Filter(node) => {
                let table = self.kind();
                let argv = ["iptables-save".into(), "-t".into(), table.into()];
                let (code, out, err) = probes::exec(cx, &format!("node/{node}"), &argv).await?;
                if code != 0 {
                    return Err(format!("iptables-save -t {table} in node {node}: {err}"));
                }
                Ok(views::table(&out))
            }
            View::Nftables(node) => {
                let argv = ["nft", "list", "table", "ip", "kube-proxy"].map(String::from);
                let (code, out, err) = probes::exec(cx, &format!("node/{node}"), &argv).await?;
                if code != 0 {
                    return Err(format!("nft list table ip kube-proxy in node {node}: {err}"));
                }
                Ok(views::nftables(&out))
            }
            View::Pod(pod) => {
                let ((ns, name), netns_name) = probes::pod(cx, pod)?;
                let argv = ["ip".into(), "route".into()];
                let (_, routes, _) = probes::exec(cx, &format!("{ns}/{name}"), &argv).await?;
                let resolv = probes::pod_etc(&netns_name, "resolv.conf").unwrap_or_default();
                Ok(views::pod(&format!("{ns}/{name}"), &routes, &resolv))
            }
            View::Backends(c) => {
                let (target, outcomes) = probes::connect(cx, c).await?;
                Ok(views::backends(c, &target, &outcomes))
            }
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Action for Snapshot {
    fn title(&self) -> String {
        let what = match &self.view {
            View::Services => "services".to_string(),
            View::Nodes => "nodes and their pods".to_string(),
            View::Endpoints((ns, n)) => format!("endpoints {ns}/{n}"),
            View::Dns(q) => format!("dns {} {} from {}", q.rtype, q.name, q.from),
            View::Nat(n) => format!("nat table of {n}"),
            View::Filter(n) => format!("filter table of {n}"),
            View::Nftables(n) => format!("nftables table ip kube-proxy of {n}"),
            View::Pod(p) => format!("routes and resolv.conf of {p}"),
            View::Backends(c) => format!("backends of {}", c.describe()),
        };
        format!("snapshot {}: {what}", self.name)
    }

    fn probes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        match &self.view {
            View::Dns(q) => vec![("pod", &q.from)],
            View::Backends(c) => vec![("pod", &c.from)],
            View::Pod(p) => vec![("pod", p)],
            View::Nat(n) | View::Filter(n) | View::Nftables(n) => vec![("node", n)],
            _ => Vec::new(),
        }
    }

    fn snapshot_name(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        let content = self.view.take(cx).await?;
        let full = format!("{}@{}", cx.scenario(), self.name);
        let description = format!("{}: {}", cx.scenario(), self.title());
        let line = cx.snapshot(&full, &description, &content)?;
        Ok(Seen {
            detail: Some(content),
            ..Seen::line(line)
        })
    }
}

//! The steps of a scenario: what the file says ([`StepFile`], which is also the JSON
//! Schema editors see) and what the runner executes ([`Step`]), checked whole, each
//! problem at its line.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::objects::{self, Manifest};
use super::{from_value, Located};
use crate::api::Kind;
use crate::yaml::{child_key, Pos, Spans};

/// One step as written. Exactly one action key (`apply`, `delete`, `scale`, `wait`,
/// `dns`, `connect`, `exec`, `snapshot`, `kill`, `readiness`, `node`, `link`), with an
/// optional `name` and, for `dns`, `connect` and `exec`, an optional `expect`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StepFile {
    /// Names the step in reports, and its snapshot (`snapshots/<scenario>@<name>.snap`).
    pub name: Option<String>,
    /// Create or update objects: a file of manifests beside the scenario, or manifests inline.
    pub apply: Option<ManifestsFile>,
    /// Delete an object: `service/web`, `pod/client-1`, `deployment/kube-system/coredns`.
    pub delete: Option<String>,
    /// Set a Deployment's replicas.
    pub scale: Option<ScaleFile>,
    /// Wait until a condition holds.
    pub wait: Option<WaitFile>,
    /// Ask a DNS question from a pod, through its resolv.conf.
    pub dns: Option<DnsFile>,
    /// Connect from a pod to a name or address, several times, and see which pods answer.
    pub connect: Option<ConnectFile>,
    /// Run a command in a pod or a node.
    pub exec: Option<ExecFile>,
    /// Pin a view of the cluster as an insta snapshot.
    pub snapshot: Option<SnapshotFile>,
    /// Kill a pod's processes: it stops serving and leaves its Service's endpoints.
    pub kill: Option<String>,
    /// Make a pod's readiness fail (`ready: false`) or recover (`ready: true`).
    pub readiness: Option<ReadinessFile>,
    /// Take a node down or bring it up (its links; its pods become not ready).
    pub node: Option<NodeFile>,
    /// Cut or restore a pod's or a node's link.
    pub link: Option<LinkFile>,
    /// What the step must see.
    pub expect: Option<Expect>,
}

/// Manifests: a file path (relative to the scenario), `{file: PATH}`, one manifest, or a list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ManifestsFile {
    /// A file of manifests beside the scenario (several YAML documents allowed).
    File(String),
    /// Manifests written inline (or `{file: PATH}` entries).
    List(Vec<Value>),
    /// One manifest written inline, or `{file: PATH}`.
    One(serde_json::Map<String, Value>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleFile {
    /// `web` or `NAMESPACE/web`.
    pub deployment: String,
    pub replicas: i32,
}

/// Exactly one condition, and a timeout.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaitFile {
    /// A Service (`web` or `NAMESPACE/web`) whose endpoints have `ready` ready addresses.
    pub endpoints: Option<String>,
    /// A pod (`client-1`, `NAMESPACE/NAME` or a selector `app=web` for all of them) that is Ready (or not, with `ready: false`).
    pub pod: Option<String>,
    /// With `endpoints`: the number of ready addresses. With `pod`: true or false.
    pub ready: Option<Value>,
    /// With `endpoints`: the number of not-ready addresses, too.
    pub not_ready: Option<u32>,
    /// Every node's kube-proxy has synced the latest changes.
    pub synced: Option<bool>,
    /// A Deployment (`web` or `NAMESPACE/web`) whose pods are all of its current template, as many as it wants, and Ready.
    pub rollout: Option<String>,
    /// A name that resolves from `from` (through its resolv.conf).
    pub resolves: Option<String>,
    /// With `resolves`: the pod that asks.
    pub from: Option<String>,
    /// How long to wait: `30s` (the default), `500ms`, `2m`.
    pub timeout: Option<String>,
}

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

/// A view: `services`, `endpoints` (of `service`), `dns` (a question), `nat` (a
/// node's nat table), `pod` (routes and resolv.conf), `backends` (who answers).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SnapshotFile {
    pub view: String,
    /// `endpoints`: the Service (`web` or `NAMESPACE/web`).
    pub service: Option<String>,
    /// `nat`: the node.
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

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReadinessFile {
    pub pod: String,
    pub ready: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeFile {
    pub name: String,
    /// `down` or `up`.
    pub state: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkFile {
    /// A pod (its eth0) or `node/NAME` (its underlay link).
    pub of: String,
    /// `down` or `up`.
    pub state: String,
}

/// What a `dns`, `connect` or `exec` step must see (all optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// dns: NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...
    pub rcode: Option<String>,
    /// dns: the answer records' data, in any order (`10.96.0.2`, `0 100 80 web.default.svc.cluster.local.`).
    pub answers: Option<Vec<String>>,
    /// dns: the name that was answered, after the search path (`web.default.svc.cluster.local.`).
    pub answered: Option<String>,
    /// connect: exactly these pods answered (names; any order).
    pub backends: Option<Vec<String>>,
    /// connect: this many different pods answered.
    pub backend_count: Option<u32>,
    /// connect: this many connections got an answer.
    pub ok: Option<u32>,
    /// connect: every connection failed this way: `refused`, `timeout`, `unreachable`.
    pub error: Option<String>,
    /// exec: the exit code.
    pub exit_code: Option<i32>,
    /// exec: the whole standard output (trailing newlines aside).
    pub stdout: Option<String>,
    /// exec: text the standard output contains.
    pub contains: Option<String>,
}

/// A checked step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// 0-based.
    pub index: usize,
    pub pos: Option<Pos>,
    pub name: Option<String>,
    pub action: Action,
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Apply(Vec<Manifest>),
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
    },
    Scale {
        namespace: String,
        name: String,
        replicas: i32,
    },
    Wait {
        until: Until,
        timeout: Duration,
    },
    Dns(DnsQuery),
    Connect(Connect),
    Exec {
        target: String,
        argv: Vec<String>,
    },
    Snapshot {
        name: String,
        view: View,
    },
    Kill(String),
    Readiness {
        pod: String,
        ready: bool,
    },
    Node {
        name: String,
        up: bool,
    },
    Link {
        of: String,
        up: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Until {
    Endpoints {
        service: (String, String),
        ready: u32,
        not_ready: Option<u32>,
    },
    Pod {
        pod: String,
        ready: bool,
    },
    Synced,
    Rollout((String, String)),
    Resolves {
        name: String,
        from: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsQuery {
    pub from: String,
    pub name: String,
    pub rtype: hickory_proto::rr::RecordType,
    pub tcp: bool,
}

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

#[derive(Debug, Clone, PartialEq)]
pub enum View {
    Services,
    Endpoints((String, String)),
    Dns(DnsQuery),
    Nat(String),
    Pod(String),
    Backends(Connect),
}

const ACTIONS: &str =
    "apply, delete, scale, wait, dns, connect, exec, snapshot, kill, readiness, node, link";

/// `30s`, `500ms`, `2m`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{text:?} is not a duration like 30s, 500ms or 2m")),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{text:?} is out of range (at most an hour)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `web` → (`default`, `web`); `kube-system/kube-dns` → (`kube-system`, `kube-dns`).
pub fn ns_name(text: &str) -> (String, String) {
    match text.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => ("default".to_string(), text.to_string()),
    }
}

struct Ctx<'a> {
    spans: &'a Arc<Spans>,
    dir: &'a Path,
    problems: Vec<Located>,
}

impl Ctx<'_> {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Located {
            file: None,
            pos: self.spans.find(path),
            message: format!("{path}: {}", message.into()),
        });
    }

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        match text.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.fail(path, e);
                default
            }
        }
    }

    fn protocol(&mut self, path: &str, text: Option<&str>) -> bool {
        match text.map(str::to_ascii_uppercase).as_deref() {
            None | Some("TCP") => false,
            Some("UDP") => true,
            Some(other) => {
                self.fail(path, format!("{other:?} is not TCP or UDP"));
                false
            }
        }
    }

    fn rtype(&mut self, path: &str, text: Option<&str>) -> hickory_proto::rr::RecordType {
        use hickory_proto::rr::RecordType;
        let t = text.unwrap_or("A").to_ascii_uppercase();
        match t.parse::<RecordType>() {
            Ok(r) if !matches!(r, RecordType::Unknown(_)) => r,
            _ => {
                self.fail(
                    path,
                    format!("{t:?} is not a DNS record type like A, SRV or PTR"),
                );
                RecordType::A
            }
        }
    }

    fn state(&mut self, path: &str, text: &str) -> bool {
        match text {
            "up" => true,
            "down" => false,
            other => {
                self.fail(path, format!("{other:?} is not up or down"));
                true
            }
        }
    }
}

/// Checks the steps at `steps` of a scenario in `dir` (for relative manifest files).
pub(super) fn steps_from(
    raw: Vec<Value>,
    spans: &Arc<Spans>,
    dir: &Path,
) -> Result<Vec<Step>, Vec<Located>> {
    let mut cx = Ctx {
        spans,
        dir,
        problems: Vec::new(),
    };
    let mut out = Vec::new();
    let mut names = std::collections::HashMap::new();
    for (i, value) in raw.into_iter().enumerate() {
        let path = format!("steps[{i}]");
        let file: StepFile = match from_value(value, spans, &path) {
            Ok(f) => f,
            Err(p) => {
                cx.problems.push(p);
                continue;
            }
        };
        if let Some(step) = step_from(&mut cx, i, &path, file) {
            if let Some(name) = step.snapshot_name() {
                if let Some(first) = names.insert(name.to_string(), i) {
                    cx.fail(
                        &path,
                        format!("the snapshot name {name:?} is taken by step {}", first + 1),
                    );
                }
            }
            out.push(step);
        }
    }
    if cx.problems.is_empty() {
        Ok(out)
    } else {
        Err(cx.problems)
    }
}

impl Step {
    pub fn snapshot_name(&self) -> Option<&str> {
        match &self.action {
            Action::Snapshot { name, .. } => Some(name),
            _ => None,
        }
    }
}

fn step_from(cx: &mut Ctx, index: usize, path: &str, mut f: StepFile) -> Option<Step> {
    let at = |key: &str| child_key(path, key);
    let expect_file = f.expect.take();
    let step_name = f.name.clone();
    let present: Vec<&str> = [
        ("apply", f.apply.is_some()),
        ("delete", f.delete.is_some()),
        ("scale", f.scale.is_some()),
        ("wait", f.wait.is_some()),
        ("dns", f.dns.is_some()),
        ("connect", f.connect.is_some()),
        ("exec", f.exec.is_some()),
        ("snapshot", f.snapshot.is_some()),
        ("kill", f.kill.is_some()),
        ("readiness", f.readiness.is_some()),
        ("node", f.node.is_some()),
        ("link", f.link.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, p)| p.then_some(k))
    .collect();
    match present.len() {
        0 => {
            cx.fail(path, format!("a step needs one action: {ACTIONS}"));
            return None;
        }
        1 => {}
        _ => {
            cx.fail(
                path,
                format!(
                    "a step has one action, this one has {}; make them separate steps",
                    present.join(", ")
                ),
            );
            return None;
        }
    }
    let kind = present[0];
    if let Some(name) = &f.name {
        if let Err(why) = crate::names::check_dns1123_label(name, 63) {
            cx.fail(&at("name"), format!("step name {name:?} {why}"));
        }
    }
    let before = cx.problems.len();
    let action = match f {
        StepFile { apply: Some(m), .. } => Action::Apply(manifests(cx, &at("apply"), m)),
        StepFile {
            delete: Some(d), ..
        } => {
            let parts: Vec<&str> = d.split('/').collect();
            let (kind, namespace, name) = match parts.as_slice() {
                [k, n] => (*k, "default", *n),
                [k, ns, n] => (*k, *ns, *n),
                _ => ("", "", ""),
            };
            match Kind::parse(kind).filter(|k| k.user_writable()) {
                Some(k) if !name.is_empty() => Action::Delete {
                    kind: k,
                    namespace: namespace.into(),
                    name: name.into(),
                },
                _ => {
                    cx.fail(
                        &at("delete"),
                        format!("{d:?} is not KIND/NAME or KIND/NAMESPACE/NAME of a pod, service or deployment"),
                    );
                    return None;
                }
            }
        }
        StepFile { scale: Some(s), .. } => {
            if s.replicas < 0 {
                cx.fail(&at("scale.replicas"), "must not be negative");
            }
            let (namespace, name) = ns_name(&s.deployment);
            Action::Scale {
                namespace,
                name,
                replicas: s.replicas,
            }
        }
        StepFile { wait: Some(w), .. } => wait(cx, &at("wait"), w)?,
        StepFile { dns: Some(d), .. } => Action::Dns(DnsQuery {
            rtype: cx.rtype(&at("dns.type"), d.rtype.as_deref()),
            from: d.from,
            name: d.name,
            tcp: d.tcp.unwrap_or(false),
        }),
        StepFile {
            connect: Some(c), ..
        } => Action::Connect(connect(cx, &at("connect"), c, 1)),
        StepFile { exec: Some(e), .. } => Action::Exec {
            target: e.target,
            argv: match e.command {
                CommandFile::Shell(s) => vec!["sh".into(), "-c".into(), s],
                CommandFile::Argv(v) if v.is_empty() => {
                    cx.fail(&at("exec.command"), "the command is empty");
                    v
                }
                CommandFile::Argv(v) => v,
            },
        },
        StepFile {
            snapshot: Some(s), ..
        } => {
            let view = view(cx, &at("snapshot"), s)?;
            let name = step_name
                .clone()
                .unwrap_or_else(|| format!("{:02}-{}", index + 1, view_kind(&view)));
            Action::Snapshot { name, view }
        }
        StepFile { kill: Some(k), .. } => Action::Kill(k),
        StepFile {
            readiness: Some(r), ..
        } => Action::Readiness {
            pod: r.pod,
            ready: r.ready,
        },
        StepFile { node: Some(n), .. } => Action::Node {
            up: cx.state(&at("node.state"), &n.state),
            name: n.name,
        },
        StepFile { link: Some(l), .. } => Action::Link {
            up: cx.state(&at("link.state"), &l.state),
            of: l.of,
        },
        _ => unreachable!("one action is present"),
    };
    let expect = expect(cx, path, kind, expect_file);
    if cx.problems.len() > before {
        return None;
    }
    Some(Step {
        index,
        pos: cx.spans.find(path),
        name: step_name,
        action,
        expect,
    })
}

fn view_kind(v: &View) -> &'static str {
    match v {
        View::Services => "services",
        View::Endpoints(_) => "endpoints",
        View::Dns(_) => "dns",
        View::Nat(_) => "nat",
        View::Pod(_) => "pod",
        View::Backends(_) => "backends",
    }
}

fn manifests(cx: &mut Ctx, path: &str, m: ManifestsFile) -> Vec<Manifest> {
    let entries: Vec<(Value, String)> = match m {
        ManifestsFile::File(f) => vec![(Value::String(f), path.to_string())],
        ManifestsFile::One(map) => vec![(Value::Object(map), path.to_string())],
        ManifestsFile::List(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v, format!("{path}[{i}]")))
            .collect(),
    };
    let mut out = Vec::new();
    for (value, at) in entries {
        match objects::entry(value, cx.spans, &at, cx.dir) {
            Ok(mut ms) => out.append(&mut ms),
            Err(mut p) => cx.problems.append(&mut p),
        }
    }
    out
}

fn wait(cx: &mut Ctx, path: &str, w: WaitFile) -> Option<Action> {
    let at = |key: &str| child_key(path, key);
    let timeout = cx.duration(
        &at("timeout"),
        w.timeout.as_deref(),
        Duration::from_secs(30),
    );
    let conditions = [
        w.endpoints.is_some(),
        w.pod.is_some(),
        w.synced.is_some(),
        w.resolves.is_some(),
        w.rollout.is_some(),
    ]
    .iter()
    .filter(|p| **p)
    .count();
    if conditions != 1 {
        cx.fail(
            path,
            "a wait has one condition: endpoints (with ready), pod, rollout, synced or resolves (with from)",
        );
        return None;
    }
    let until = if let Some(svc) = w.endpoints {
        let ready = match &w.ready {
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0) as u32,
            _ => {
                cx.fail(
                    &at("ready"),
                    "endpoints needs ready: N, the number of ready addresses",
                );
                0
            }
        };
        Until::Endpoints {
            service: ns_name(&svc),
            ready,
            not_ready: w.not_ready,
        }
    } else if let Some(pod) = w.pod {
        let ready = match &w.ready {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                cx.fail(&at("ready"), "with pod, ready is true or false");
                true
            }
        };
        Until::Pod { pod, ready }
    } else if let Some(d) = w.rollout {
        Until::Rollout(ns_name(&d))
    } else if let Some(name) = w.resolves {
        let Some(from) = w.from else {
            cx.fail(path, "resolves needs from: the pod that asks");
            return None;
        };
        Until::Resolves { name, from }
    } else {
        if w.synced != Some(true) {
            cx.fail(&at("synced"), "only synced: true is a condition");
        }
        Until::Synced
    };
    Some(Action::Wait { until, timeout })
}

fn connect(cx: &mut Ctx, path: &str, c: ConnectFile, default_times: u32) -> Connect {
    let at = |key: &str| child_key(path, key);
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

fn view(cx: &mut Ctx, path: &str, s: SnapshotFile) -> Option<View> {
    let at = |key: &str| child_key(path, key);
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
        "endpoints" => (
            View::Endpoints(ns_name(&need(cx, "service", &s.service))),
            &["service"],
        ),
        "nat" => (View::Nat(need(cx, "node", &s.node)), &["node"]),
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
                View::Backends(connect(cx, path, c, 20)),
                &["from", "to", "port", "protocol", "times"],
            )
        }
        other => {
            cx.fail(
                &at("view"),
                format!("{other:?} is not a view: services, endpoints, dns, nat, pod, backends"),
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

fn expect(cx: &mut Ctx, path: &str, kind: &str, e: Option<Expect>) -> Expect {
    let Some(e) = e else {
        return Expect::default();
    };
    let at = |key: &str| format!("{path}.expect.{key}");
    let keys: [(&str, bool, &str); 10] = [
        ("rcode", e.rcode.is_some(), "dns"),
        ("answers", e.answers.is_some(), "dns"),
        ("answered", e.answered.is_some(), "dns"),
        ("backends", e.backends.is_some(), "connect"),
        ("backendCount", e.backend_count.is_some(), "connect"),
        ("ok", e.ok.is_some(), "connect"),
        ("error", e.error.is_some(), "connect"),
        ("exitCode", e.exit_code.is_some(), "exec"),
        ("stdout", e.stdout.is_some(), "exec"),
        ("contains", e.contains.is_some(), "exec"),
    ];
    for (key, present, owner) in keys {
        if present && owner != kind {
            cx.fail(
                &at(key),
                format!("{key} is expected of {owner} steps, and this is a {kind} step"),
            );
        }
    }
    if let Some(rcode) = &e.rcode {
        if crate::probe::dns::rcode_from_name(rcode).is_none() {
            cx.fail(
                &at("rcode"),
                format!("{rcode:?} is not an rcode like NOERROR, NXDOMAIN, SERVFAIL, REFUSED"),
            );
        }
    }
    if let Some(err) = &e.error {
        if !["refused", "timeout", "unreachable"].contains(&err.as_str()) {
            cx.fail(
                &at("error"),
                format!("{err:?} is not refused, timeout or unreachable"),
            );
        }
    }
    Expect {
        rcode: e.rcode.map(|r| r.to_ascii_uppercase()),
        ..e
    }
}

//! `wait`: wait until a condition holds (endpoints, a pod's readiness, a rollout, a
//! name that resolves, every node's rules in sync), then until every node's rules
//! have caught up with it.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{ns_name, schema_of, Action, At, Context, Ctx, DnsQuery, Expect, Seen, StepKind};
use crate::api::{Key, Kind, Object};

pub const KIND: StepKind = StepKind {
    key: "wait",
    about: "Wait until a condition holds.",
    schema: schema_of::<WaitFile>,
    expects: &[],
    parse,
};

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
    /// With `pod`: its STATUS as `kubectl get pods` shows it (`Running`,
    /// `CrashLoopBackOff`, `Error`, `Completed`) instead of its readiness. With
    /// `node`: its STATUS (`Ready`, `NotReady`).
    pub status: Option<String>,
    /// With `pod`: at least this many RESTARTS.
    pub restarts: Option<u32>,
    /// With `endpoints`: the number of not-ready addresses, too.
    pub not_ready: Option<u32>,
    /// Every node's kube-proxy has synced the latest changes.
    pub synced: Option<bool>,
    /// A Deployment (`web` or `NAMESPACE/web`) whose pods are all of its current template, as many as it wants, and Ready.
    pub rollout: Option<String>,
    /// A node whose STATUS is `status` (`Ready`, `NotReady`), as `kubectl get nodes` shows it.
    pub node: Option<String>,
    /// A name that resolves from `from` (through its resolv.conf).
    pub resolves: Option<String>,
    /// With `resolves`: the pod that asks.
    pub from: Option<String>,
    /// How long to wait: `30s` (the default), `500ms`, `2m`.
    pub timeout: Option<String>,
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
    PodStatus {
        pod: String,
        status: Option<String>,
        restarts: u32,
    },
    Synced,
    Node {
        name: String,
        status: String,
    },
    Rollout((String, String)),
    Resolves {
        name: String,
        from: String,
    },
}

#[derive(Debug)]
struct Wait {
    until: Until,
    timeout: Duration,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let mut w: WaitFile = cx.value(value, at.path)?;
    let path = at.path;
    let timeout = cx.duration(
        &at.key("timeout"),
        w.timeout.as_deref(),
        Duration::from_secs(30),
    );
    let conditions = [
        w.endpoints.is_some(),
        w.pod.is_some(),
        w.synced.is_some(),
        w.resolves.is_some(),
        w.rollout.is_some(),
        w.node.is_some(),
    ]
    .iter()
    .filter(|p| **p)
    .count();
    if conditions != 1 {
        cx.fail(
            path,
            "a wait has one condition: endpoints (with ready), pod, node (with status), rollout, synced or resolves (with from)",
        );
        return None;
    }
    let until = if let Some(svc) = w.endpoints {
        let ready = match &w.ready {
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0) as u32,
            _ => {
                cx.fail(
                    &at.key("ready"),
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
    } else if let Some(until) = pod_or_node(cx, at, &mut w).ok()? {
        until
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
            cx.fail(&at.key("synced"), "only synced: true is a condition");
        }
        Until::Synced
    };
    Some(Box::new(Wait { until, timeout }))
}

/// The pod or node condition of a wait, if it has one; `Err` when it is wrong.
fn pod_or_node(cx: &mut Ctx, at: &At, w: &mut WaitFile) -> Result<Option<Until>, ()> {
    if let Some(pod) = w.pod.take() {
        if w.status.is_some() || w.restarts.is_some() {
            if w.ready.is_some() {
                cx.fail(&at.key("ready"), "with status or restarts, ready is not given");
            }
            return Ok(Some(Until::PodStatus {
                pod,
                status: w.status.take(),
                restarts: w.restarts.unwrap_or(0),
            }));
        }
        let ready = match &w.ready {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                cx.fail(&at.key("ready"), "with pod, ready is true or false");
                true
            }
        };
        return Ok(Some(Until::Pod { pod, ready }));
    }
    let Some(name) = w.node.take() else {
        return Ok(None);
    };
    let Some(status) = w.status.take() else {
        cx.fail(at.path, "node needs status: Ready or NotReady, as kubectl get nodes shows it");
        return Err(());
    };
    Ok(Some(Until::Node { name, status }))
}

/// `5s`, or `500ms` below a whole second.
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[async_trait::async_trait(?Send)]
impl Action for Wait {
    fn title(&self) -> String {
        let what = match &self.until {
            Until::Endpoints {
                service: (ns, n),
                ready,
                not_ready,
            } => match not_ready {
                Some(nr) => format!("endpoints {ns}/{n}: {ready} ready, {nr} not ready"),
                None => format!("endpoints {ns}/{n}: {ready} ready"),
            },
            Until::PodStatus {
                pod,
                status,
                restarts,
            } => {
                let status = status.as_deref().map(|s| format!(" {s}")).unwrap_or_default();
                format!("pod {pod}{status}, at least {restarts} restarts")
            }
            Until::Pod { pod, ready } => {
                format!("pod {pod} {}", if *ready { "ready" } else { "not ready" })
            }
            Until::Synced => "every node's rules in sync".into(),
            Until::Node { name, status } => format!("node {name} {status}"),
            Until::Rollout((ns, n)) => format!("deployment {ns}/{n} to roll out"),
            Until::Resolves { name, from } => format!("{name} to resolve from {from}"),
        };
        format!("wait for {what} (timeout {})", secs(self.timeout))
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        match &self.until {
            Until::Pod { pod, .. } | Until::PodStatus { pod, .. } | Until::Resolves { from: pod, .. } => vec![("pod", pod)],
            Until::Node { name, .. } => vec![("node", name)],
            _ => Vec::new(),
        }
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        wait(cx, &self.until, self.timeout).await.map(Seen::line)
    }
}

async fn wait(cx: &dyn Context, until: &Until, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let start = Instant::now();
    let mut revision = cx.store().subscribe();
    loop {
        // Looked at once the cluster has caught up with the store as it is now (a
        // second at most), so a DNS answer or a rule reflects the same writes as
        // the objects.
        let rev = *revision.borrow_and_update();
        let left = deadline.saturating_duration_since(Instant::now());
        cx.wait_synced(rev, left.min(Duration::from_secs(1))).await;
        let (done, status) = check(cx, until).await;
        if done {
            // The rules follow: wait for every node's kube-proxy to catch up.
            let rev = *cx.store().subscribe().borrow();
            let left = deadline.saturating_duration_since(Instant::now());
            if !cx.wait_synced(rev, left.max(Duration::from_secs(1))).await {
                return Err(format!(
                    "{status}, but the DNS and the nodes' rules did not catch up with revision {rev} ({} behind)",
                    cx.behind(rev)
                ));
            }
            return Ok(format!(
                "{status} after {:.1} s",
                start.elapsed().as_secs_f64()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?}: {status}"));
        }
        super::next_revision(&mut revision, deadline).await;
    }
}

/// Whether `until` holds now, and what was seen.
async fn check(cx: &dyn Context, until: &Until) -> (bool, String) {
    match until {
        Until::Endpoints {
            service: (ns, name),
            ready,
            not_ready,
        } => {
            let key = Key::new(Kind::Endpoints, ns, name);
            let (r, n) = match cx.store().get(&key) {
                Some(Object::Endpoints(e)) => {
                    let subsets = e.subsets.unwrap_or_default();
                    let count = |f: fn(&k8s_openapi::api::core::v1::EndpointSubset) -> usize| {
                        subsets.iter().map(f).sum::<usize>()
                    };
                    (
                        count(|s| s.addresses.as_ref().map_or(0, Vec::len)),
                        count(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len)),
                    )
                }
                _ => (0, 0),
            };
            let done = r == *ready as usize && not_ready.is_none_or(|n2| n == n2 as usize);
            (
                done,
                format!("endpoints {ns}/{name} have {r} ready and {n} not-ready addresses"),
            )
        }
        Until::Pod { pod, ready } => {
            let (ns, name) = ns_name(pod);
            let Some(Object::Pod(p)) = cx.store().get(&Key::new(Kind::Pod, &ns, &name)) else {
                return (false, format!("pod {ns}/{name} does not exist"));
            };
            let is = crate::api::labels::pod_ready(&p);
            (
                is == *ready,
                format!(
                    "pod {ns}/{name} is {}",
                    if is { "ready" } else { "not ready" }
                ),
            )
        }
        Until::PodStatus {
            pod,
            status,
            restarts,
        } => pod_status(cx, pod, status.as_deref(), *restarts),
        Until::Synced => (true, "every node's rules are in sync".into()),
        Until::Node { name, status } => {
            let Some(Object::Node(n)) = cx.store().get(&Key::new(Kind::Node, "", name)) else {
                return (false, format!("node {name} does not exist"));
            };
            let is = crate::api::labels::node_status_column(&n);
            (is == *status, format!("node {name} is {is}"))
        }
        Until::Rollout((ns, name)) => rollout(cx, ns, name),
        Until::Resolves { name, from } => {
            let q = DnsQuery {
                from: from.clone(),
                name: name.clone(),
                rtype: RecordType::A,
                tcp: false,
            };
            match super::probes::dns(cx, &q).await {
                Ok(a) if a.rcode == "NOERROR" && !a.data.is_empty() => (
                    true,
                    format!("{name} resolves from {from} to {}", a.data.join(", ")),
                ),
                Ok(a) => (false, format!("{name} from {from}: {}", a.rcode)),
                Err(e) => (false, format!("{name} from {from}: {e}")),
            }
        }
    }
}

/// Whether the pod shows `status` (if given) and at least `restarts` RESTARTS.
fn pod_status(cx: &dyn Context, pod: &str, status: Option<&str>, restarts: u32) -> (bool, String) {
    let (ns, name) = ns_name(pod);
    let Some(Object::Pod(p)) = cx.store().get(&Key::new(Kind::Pod, &ns, &name)) else {
        return (false, format!("pod {ns}/{name} does not exist"));
    };
    let (is, _) = crate::api::labels::pod_status_column(&p);
    let count: i32 = p
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum();
    (
        status.is_none_or(|s| s == is) && count >= restarts as i32,
        format!("pod {ns}/{name} is {is}, RESTARTS {count}"),
    )
}

/// Whether a Deployment has rolled out, in `kubectl rollout status`'s words
/// (kubectl's `DeploymentStatusViewer`), and none of its pods is still terminating
/// (kubectl does not wait for those; a scenario's next step may).
fn rollout(cx: &dyn Context, ns: &str, name: &str) -> (bool, String) {
    let Some(Object::Deployment(d)) = cx.store().get(&Key::new(Kind::Deployment, ns, name))
    else {
        return (false, format!("deployment {ns}/{name} does not exist"));
    };
    let (done, said) = crate::controllers::rollout::status(&d);
    let terminating = cx
        .store()
        .list(Kind::Pod, Some(ns))
        .into_iter()
        .filter(|o| match o {
            Object::Pod(p) => {
                crate::controllers::deployment::owned_by(p, name)
                    && p.metadata.deletion_timestamp.is_some()
            }
            _ => false,
        })
        .count();
    if done && terminating > 0 {
        return (false, format!("{said}; {terminating} of its pods still terminating"));
    }
    (done, said)
}


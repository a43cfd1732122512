//! What several kinds of step do: find a pod, ask DNS from it, connect from it, run
//! a command in it. Probes run from inside the pod's namespace, as its processes would.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::Pod;

use super::{Connect, Context, DnsQuery};
use crate::api::{Key, Kind, Object};
use crate::probe::connect::Outcome;
use crate::probe::dns::{Answer, Resolv};
use crate::{names, netns};

/// `(namespace, name)`.
pub type PodKey = (String, String);

/// A pod reference (`client-1`, `NAMESPACE/NAME`, or a selector `app=web` for the
/// first such pod by name) to its key and network namespace.
pub fn pod(cx: &dyn Context, r: &str) -> Result<(PodKey, String), String> {
    let (ns, rest) = match r.split_once('/') {
        Some((ns, rest)) => (ns.to_string(), rest.to_string()),
        None => ("default".to_string(), r.to_string()),
    };
    let name = if rest.contains('=') {
        let want: Vec<(&str, &str)> = rest
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let mut pods: Vec<String> = cx
            .store()
            .list(Kind::Pod, Some(&ns))
            .into_iter()
            .filter(|o| {
                let labels = o.meta().labels.clone().unwrap_or_default();
                want.iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|o| o.name().to_string())
            .collect();
        pods.sort();
        pods.into_iter()
            .next()
            .ok_or_else(|| format!("no pod in namespace {ns} has the labels {rest}"))?
    } else {
        rest
    };
    let netns_name = names::pod_netns(cx.testbed(), &ns, &name);
    if !netns::netns_path(&netns_name).exists() {
        return Err(format!("pod {ns}/{name} is not running"));
    }
    Ok(((ns, name), netns_name))
}

/// The pod as the store has it.
pub fn pod_object(cx: &dyn Context, key: &PodKey) -> Option<Pod> {
    match cx.store().get(&Key::new(Kind::Pod, &key.0, &key.1)) {
        Some(Object::Pod(p)) => Some(p),
        _ => None,
    }
}

pub use crate::probe::dns::pod_etc;

/// Asks `q` from its pod, through the pod's resolv.conf.
pub async fn dns(cx: &dyn Context, q: &DnsQuery) -> Result<Answer, String> {
    let (_, netns_name) = pod(cx, &q.from)?;
    let text = pod_etc(&netns_name, "resolv.conf")?;
    let resolv = Resolv::parse(&text);
    crate::probe::dns::resolve(Some(&netns_name), &resolv, &q.name, q.rtype, q.tcp).await
}

/// Connects as `c` says: the address connected to, and each connection's outcome.
pub async fn connect(cx: &dyn Context, c: &Connect) -> Result<(String, Vec<Outcome>), String> {
    let (_, netns_name) = pod(cx, &c.from)?;
    // As libc does (hosts: files dns): the pod's /etc/hosts first, then DNS.
    let hosts = pod_etc(&netns_name, "hosts").unwrap_or_default();
    let from_hosts = crate::probe::dns::hosts_lookup(&hosts, &c.to);
    let ip: Ipv4Addr = match c.to.parse().ok().or(from_hosts) {
        Some(ip) => ip,
        None => {
            let q = DnsQuery {
                from: c.from.clone(),
                name: c.to.clone(),
                rtype: RecordType::A,
                tcp: false,
            };
            let a = dns(cx, &q).await?;
            a.data
                .iter()
                .find_map(|d| d.parse().ok())
                .ok_or_else(|| format!("{} does not resolve from {}: {}", c.to, c.from, a.rcode))?
        }
    };
    let to = SocketAddr::from((ip, c.port));
    let mut outcomes = Vec::new();
    for _ in 0..c.times {
        outcomes.push(
            crate::probe::connect::once(Some(&netns_name), to, c.udp, c.timeout, c.source_port)
                .await,
        );
    }
    Ok((to.to_string(), outcomes))
}

/// Runs `argv` in a pod, `node/NAME` or `host/outside` through `testbed exec`: exit code, stdout, stderr.
pub async fn exec(
    cx: &dyn Context,
    target: &str,
    argv: &[String],
) -> Result<(i32, String, String), String> {
    let target = match target
        .strip_prefix("node/")
        .or(target.strip_prefix("host/"))
    {
        Some(_) => target.to_string(),
        None => {
            let ((ns, name), _) = pod(cx, target)?;
            format!("{ns}/{name}")
        }
    };
    let run = tokio::process::Command::new(cx.exe())
        .args(["exec", "-t", cx.testbed(), &target, "--"])
        .args(argv)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| format!("{argv:?} in {target} ran for more than 60 s"))?
        .map_err(|e| format!("cannot run {}: {e}", cx.exe().display()))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Waits for the store's next revision, or until `deadline`. Also wakes after a
/// second at most: a condition outside the store (a DNS answer from a pod, which
/// also needs the pod's network) is looked at again even if nothing is written.
pub async fn next_revision(revision: &mut tokio::sync::watch::Receiver<u64>, deadline: Instant) {
    let at = deadline.min(Instant::now() + Duration::from_secs(1));
    let _ = tokio::time::timeout_at(at.into(), revision.changed()).await;
}

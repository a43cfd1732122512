//! kube-proxy on one node: watches Services and EndpointSlices, turns them into
//! [`ServicePort`]s, and applies each sync with one `iptables-restore --noflush` run
//! inside the node's namespace. UDP endpoints that go away have their conntrack
//! entries deleted, as kube-proxy does, or replies would keep going to a dead pod.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::render::{Config, Protocol, ServicePort};
use super::sync::Proxier;
use crate::api::{EventType, Object, Store};
use crate::controllers::endpoints::SERVICE_NAME_LABEL;
use crate::netns;

/// What a node's kube-proxy last did.
#[derive(Debug, Clone, Default)]
pub struct SyncState {
    /// The store revision the node's rules reflect.
    pub revision: u64,
    pub syncs: u64,
    pub last_took: Duration,
    /// Of `last_took`: the time in `iptables-restore`.
    pub last_restore: Duration,
    pub last_error: Option<String>,
    pub service_ports: usize,
}

/// The service ports of one Service, from its EndpointSlices. Headless and
/// ExternalName Services have none: kube-proxy leaves them to DNS.
pub fn service_ports(svc: &Service, slices: &[&EndpointSlice]) -> Vec<ServicePort> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let Some(cluster_ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    else {
        return Vec::new();
    };
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(crate::api::admission::DEFAULT_AFFINITY_SECONDS) as u32
    });
    let ns = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                _ => return None,
            };
            let port_name = p.name.clone().unwrap_or_default();
            let mut endpoints = Vec::new();
            for s in slices {
                let Some(sp) = s.ports.iter().flatten().find(|sp| {
                    sp.name.as_deref().unwrap_or_default() == port_name
                        && sp.protocol.as_deref().unwrap_or("TCP") == protocol.to_string()
                }) else {
                    continue;
                };
                let Some(port) = sp.port.and_then(|n| u16::try_from(n).ok()) else {
                    continue;
                };
                for ep in &s.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    for a in &ep.addresses {
                        if let Ok(ip) = a.parse() {
                            endpoints.push(SocketAddrV4::new(ip, port));
                        }
                    }
                }
            }
            Some(ServicePort {
                namespace: ns.clone(),
                name: name.clone(),
                port_name,
                protocol,
                cluster_ip,
                port: u16::try_from(p.port).ok()?,
                affinity_seconds: affinity,
                endpoints,
            })
        })
        .collect()
}

/// Runs `program args` inside the namespace mounted at `ns`, feeding it `stdin`.
/// `nsenter --net` enters it: a command without a `pre_exec` hook is started with
/// posix_spawn, so this process (large with many Services) is not forked.
pub async fn run_in_netns(
    ns: &Path,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.display()))
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| format!("write to {program}: {e}"))?;
        drop(pipe);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("wait for {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

type SvcKey = (String, String);

/// Runs one node's kube-proxy until the store's watch ends, reporting on `state`.
pub async fn run(
    store: Arc<Store>,
    node: String,
    node_netns: String,
    cfg: Config,
    state: watch::Sender<SyncState>,
) {
    let ns: PathBuf = netns::netns_path(&node_netns);
    if let Err(e) = std::fs::metadata(&ns) {
        state.send_modify(|s| s.last_error = Some(format!("the namespace of {node}: {e}")));
        return;
    }
    let (initial, mut events) = store.watch(None, None);
    let mut services: HashMap<SvcKey, Service> = HashMap::new();
    let mut slices: HashMap<SvcKey, BTreeMap<String, EndpointSlice>> = HashMap::new();
    let mut ports: BTreeMap<SvcKey, Vec<ServicePort>> = BTreeMap::new();
    let mut dirty: BTreeSet<SvcKey> = BTreeSet::new();
    let mut proxier = Proxier::new(cfg);
    let mut revision = store.subscribe();

    let take = |obj: Object,
                deleted: bool,
                services: &mut HashMap<SvcKey, Service>,
                slices: &mut HashMap<SvcKey, BTreeMap<String, EndpointSlice>>,
                dirty: &mut BTreeSet<SvcKey>| {
        let ns = obj.namespace().to_string();
        let name = obj.name().to_string();
        match obj {
            Object::Service(s) => {
                let key = (ns, name);
                dirty.insert(key.clone());
                if deleted {
                    services.remove(&key);
                } else {
                    services.insert(key, s);
                }
            }
            Object::EndpointSlice(s) => {
                let Some(svc) = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .cloned()
                else {
                    return;
                };
                let key = (ns, svc);
                dirty.insert(key.clone());
                let of = slices.entry(key).or_default();
                if deleted {
                    of.remove(&name);
                } else {
                    of.insert(name, s);
                }
            }
            _ => {}
        }
    };
    for obj in initial {
        take(obj, false, &mut services, &mut slices, &mut dirty);
    }
    loop {
        // The revision first: every write up to it has its events queued already.
        let seen = *revision.borrow_and_update();
        while let Ok(ev) = events.try_recv() {
            let deleted = ev.kind == EventType::Deleted;
            take(ev.object, deleted, &mut services, &mut slices, &mut dirty);
        }
        let dirty_was_empty = dirty.is_empty();
        let mut gone_udp: Vec<(Ipv4Addr, SocketAddrV4)> = Vec::new();
        let (mut upserts, mut removed) = (Vec::new(), Vec::new());
        for key in std::mem::take(&mut dirty) {
            let new = match services.get(&key) {
                Some(svc) => {
                    let of: Vec<&EndpointSlice> = slices
                        .get(&key)
                        .into_iter()
                        .flat_map(|m| m.values())
                        .collect();
                    service_ports(svc, &of)
                }
                None => Vec::new(),
            };
            if let Some(old) = ports.get(&key) {
                for o in old.iter().filter(|o| o.protocol == Protocol::Udp) {
                    let still: Vec<&SocketAddrV4> = new
                        .iter()
                        .filter(|n| n.protocol == Protocol::Udp && n.cluster_ip == o.cluster_ip)
                        .flat_map(|n| &n.endpoints)
                        .collect();
                    gone_udp.extend(
                        o.endpoints
                            .iter()
                            .filter(|e| !still.contains(e))
                            .map(|e| (o.cluster_ip, *e)),
                    );
                }
            }
            let keys: Vec<_> = new.iter().map(Proxier::key).collect();
            for old in ports.get(&key).into_iter().flatten() {
                let k = Proxier::key(old);
                if !keys.contains(&k) {
                    removed.push(k);
                }
            }
            upserts.extend(new.iter().cloned());
            if new.is_empty() {
                ports.remove(&key);
            } else {
                ports.insert(key, new);
            }
        }
        let changes = Changes {
            upserts,
            removed,
            gone_udp,
            service_ports: ports.values().map(Vec::len).sum(),
        };
        if dirty_was_empty && proxier.in_sync() {
            // A write that touched no Service or slice: the rules are current.
            state.send_modify(|s| s.revision = seen);
        } else if !sync(&node, &ns, &mut proxier, &ports, changes, seen, &state).await {
            // Try again soon with a full sync, as kube-proxy does.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => {
                    let deleted = ev.kind == EventType::Deleted;
                    take(ev.object, deleted, &mut services, &mut slices, &mut dirty);
                }
                None => return,
            },
            // Writes that are not Services or slices still move the revision this
            // node is in sync with.
            changed = revision.changed() => if changed.is_err() { return },
        }
    }
}

/// What changed since the last sync.
struct Changes {
    /// The service ports of the Services that changed, as they are now.
    upserts: Vec<ServicePort>,
    /// Service ports that are gone.
    removed: Vec<super::sync::Key>,
    /// UDP endpoints that are gone, with their ClusterIP.
    gone_udp: Vec<(Ipv4Addr, SocketAddrV4)>,
    /// How many service ports the node has now.
    service_ports: usize,
}

/// One sync of the node's rules, from `changes` or (when the proxier is not in
/// sync) from all of `ports`; false when the restore failed.
async fn sync(
    node: &str,
    ns: &Path,
    proxier: &mut Proxier,
    ports: &BTreeMap<SvcKey, Vec<ServicePort>>,
    changes: Changes,
    seen: u64,
    state: &watch::Sender<SyncState>,
) -> bool {
    let start = Instant::now();
    let update = if proxier.in_sync() {
        proxier.prepare_changes(changes.upserts, changes.removed)
    } else {
        // The first sync, or one after a failure: everything, from the whole state.
        let all: Vec<ServicePort> = ports.values().flatten().cloned().collect();
        proxier.prepare(&all)
    };
    let mut error = None;
    let mut restore = Duration::ZERO;
    if !update.text.is_empty() {
        let t = Instant::now();
        match run_in_netns(
            ns,
            "iptables-restore",
            &["-w", "--noflush"],
            Some(&update.text),
        )
        .await
        {
            Ok(_) => {
                restore = t.elapsed();
                proxier.commit(update)
            }
            Err(e) => {
                tracing::error!(node, "kube-proxy sync failed: {e}");
                error = Some(e);
                proxier.failed();
            }
        }
    }
    for (cip, ep) in changes.gone_udp {
        // `conntrack -D` exits 1 when there was nothing to delete.
        let _ = run_in_netns(
            ns,
            "conntrack",
            &[
                "-D",
                "-p",
                "udp",
                "--orig-dst",
                &cip.to_string(),
                "--dst-nat",
                &ep.ip().to_string(),
            ],
            None,
        )
        .await;
    }
    let took = start.elapsed();
    let n = changes.service_ports;
    state.send_modify(|s| {
        if error.is_none() {
            s.revision = seen;
        }
        s.syncs += 1;
        s.last_took = took;
        s.last_restore = restore;
        s.last_error = error.clone();
        s.service_ports = n;
    });
    error.is_none()
}

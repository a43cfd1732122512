//! Doing the real thing from inside the pod while the nodes trace it, and taking
//! the kernel's evidence right after: the pod's route, its node's conntrack entry,
//! the node's route to the backend, the links' states, kube-proxy's rules for the
//! Service. What is gathered is [`Evidence`]; [`super::explain`] puts it in words.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::kernel::exec::{NodeExec, Nsenter};
use crate::probe::connect::{self, Outcome};
use crate::probe::dns::{self, Answer, Resolv};

use super::monitor::{Printed, Tracing};
use super::world::{key, pod_ip, pod_node, World};

/// What to trace.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POD` or `NAMESPACE/POD`.
    pub from: String,
    /// A name, a ClusterIP, a pod IP or a node address, with `:PORT` or without.
    pub target: String,
    pub udp: bool,
    /// How long the connection waits for an answer.
    pub timeout: Duration,
}

/// Where the traced pod is.
#[derive(Debug, Clone)]
pub struct Source {
    pub pod: String,
    pub ip: Ipv4Addr,
    pub node: String,
    pub netns: String,
}

/// What the kernel and the servers showed.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub resolv: Option<Resolv>,
    pub resolv_text: String,
    /// The name asked and the answer (or why none came), when the target is a name.
    pub asked: Option<(String, Result<Answer, String>)>,
    /// The address from the pod's /etc/hosts, when it had one.
    pub from_hosts: Option<Ipv4Addr>,
    pub destination: Option<SocketAddr>,
    /// Why no connection was made, when none was.
    pub no_connection: Option<String>,
    /// `ip route get` in the pod.
    pub pod_route: String,
    pub sport: u16,
    pub outcome: Option<Outcome>,
    /// What each node's monitor printed, the traced pod's node first.
    pub printed: Vec<(String, String)>,
    /// The conntrack entry in the pod's node.
    pub conntrack: String,
    /// `ip route get BACKEND` in the pod's node, and the backend.
    pub node_route: Option<(Ipv4Addr, String)>,
    /// The pod's node's neighbour entry for the next hop to the backend.
    pub neighbour: Option<String>,
    /// `(what, up)` for each node's underlay port and cbr0, and the pods' veths.
    pub links: Vec<(String, bool)>,
    /// kube-proxy's rules in the pod's node (`iptables-save -t nat`, or the
    /// nftables table), for the Service's chain.
    pub rules: String,
}

/// The pod to trace from.
pub fn source(world: &World, from: &str) -> Result<Source, String> {
    let pod = world
        .pod(from)
        .ok_or_else(|| format!("there is no pod {from:?} (`testbed get pods` lists them)"))?;
    let k = key(&pod.metadata);
    let ip = pod_ip(pod).ok_or_else(|| format!("pod {k} has no address yet"))?;
    let node = pod_node(pod).ok_or_else(|| format!("pod {k} is on no node"))?;
    let (ns, name) = k.split_once('/').expect("a key has a slash");
    let netns = crate::names::pod_netns(&world.plan.testbed, ns, name);
    if !crate::netns::netns_path(&netns).exists() {
        return Err(format!("pod {k} is not running"));
    }
    Ok(Source {
        pod: k.clone(),
        ip,
        node: node.to_string(),
        netns,
    })
}

/// `web:80` to `("web", Some(80))`; a port is a number from 1 to 65535.
pub fn split_target(target: &str) -> Result<(String, Option<u16>), String> {
    match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok((host.to_string(), Some(p))),
            _ => Err(format!("{port:?} in {target:?} is not a port (1 to 65535)")),
        },
        _ if target.is_empty() => Err("the target is empty".into()),
        _ => Ok((target.to_string(), None)),
    }
}

/// Runs the trace: the kernel's evidence of it.
pub async fn gather(world: &World, src: &Source, req: &Request) -> Result<Evidence, String> {
    let (host, port) = split_target(&req.target)?;
    let plan = &world.plan;
    let mut nodes: Vec<(String, String)> = plan
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.netns.clone()))
        .collect();
    nodes.sort_by_key(|(n, _)| *n != src.node);
    let node_ip = plan.node(&src.node).map(|n| n.ip);
    let sources: Vec<Ipv4Addr> = std::iter::once(src.ip).chain(node_ip).collect();
    let tracing = Tracing::start(&nodes, &sources).await?;
    let mut ev = Evidence {
        sport: pick_port(),
        ..Default::default()
    };
    probe(world, src, req, &host, port, &mut ev).await;
    let Printed { nodes: printed } = tracing.finish().await?;
    ev.printed = printed;
    after(world, src, req, &mut ev).await;
    Ok(ev)
}

/// The DNS question (when the target is a name) and the connection.
async fn probe(
    world: &World,
    src: &Source,
    req: &Request,
    host: &str,
    port: Option<u16>,
    ev: &mut Evidence,
) {
    let etc = |f: &str| dns::pod_etc(&src.netns, f);
    ev.resolv_text = etc("resolv.conf").unwrap_or_default();
    let resolv = Resolv::parse(&ev.resolv_text);
    ev.resolv = Some(resolv.clone());
    let ip = match host.parse::<Ipv4Addr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            ev.from_hosts = dns::hosts_lookup(&etc("hosts").unwrap_or_default(), host);
            match ev.from_hosts {
                Some(ip) => Some(ip),
                None => {
                    let rtype = hickory_proto::rr::RecordType::A;
                    let a = dns::resolve(Some(&src.netns), &resolv, host, rtype, false).await;
                    let ip = a
                        .as_ref()
                        .ok()
                        .and_then(|a| a.data.iter().find_map(|d| d.parse().ok()));
                    ev.asked = Some((host.to_string(), a));
                    ip
                }
            }
        }
    };
    let Some(ip) = ip else {
        ev.no_connection = Some(unresolved(host, ev.asked.as_ref().map(|(_, a)| a)));
        return;
    };
    let port = port.or_else(|| {
        let svc = world.service_at(ip)?;
        svc.spec
            .as_ref()?
            .ports
            .as_ref()?
            .first()
            .map(|p| p.port as u16)
    });
    let Some(port) = port else {
        ev.no_connection = Some(format!(
            "{ip} is not a Service's ClusterIP, so it has no port to default to: name one ({host}:PORT)"
        ));
        return;
    };
    let to = SocketAddr::from((ip, port));
    ev.destination = Some(to);
    ev.pod_route = route_get(&src.netns, ip).await;
    let netns = Some(src.netns.as_str());
    ev.outcome =
        Some(connect::ask(netns, to, req.udp, req.timeout, Some(ev.sport), "clientip").await);
}

/// Why `host` gave no address, in a few words.
fn unresolved(host: &str, answer: Option<&Result<Answer, String>>) -> String {
    match answer {
        Some(Ok(a)) => {
            let cname = a.records.iter().find(|r| r.contains(" CNAME "));
            match cname.and_then(|r| r.split_whitespace().last()) {
                Some(alias) => format!(
                    "{host} is only an alias (CNAME) for {alias}, which has no address here"
                ),
                None => {
                    let rcodes: Vec<&str> = a
                        .tried
                        .iter()
                        .filter_map(|t| t.split_whitespace().nth(1))
                        .collect();
                    format!(
                        "{host} does not resolve ({} for the names tried)",
                        rcodes.join(", ")
                    )
                }
            }
        }
        Some(Err(e)) => format!("{host} does not resolve: {e}"),
        None => format!("{host} has no address"),
    }
}

/// The evidence taken once the connection is over.
async fn after(world: &World, src: &Source, req: &Request, ev: &mut Evidence) {
    let plan = &world.plan;
    let Some(node) = plan.node(&src.node) else {
        return;
    };
    let exec = Nsenter {
        netns: crate::netns::netns_path(&node.netns),
    };
    if ev.destination.is_some() {
        let proto = if req.udp { "udp" } else { "tcp" };
        let sport = ev.sport.to_string();
        let src_ip = src.ip.to_string();
        let args = ["-L", "-p", proto, "-s", &src_ip, "--sport", &sport];
        ev.conntrack = exec.run("conntrack", &args, None).await.unwrap_or_default();
    }
    let backend = super::explain::backend(world, ev);
    if let Some(b) = backend {
        let route = route_get(&node.netns, b).await;
        let via = route.split_whitespace().skip_while(|w| *w != "via").nth(1);
        if let Some(via) = via.map(str::to_string) {
            let neigh = exec.run("ip", &["neigh", "show", &via], None).await;
            ev.neighbour = neigh.ok().map(|n| n.trim().to_string());
        }
        ev.node_route = Some((b, route));
    }
    let rules = match node.proxy_mode {
        crate::proxy::Mode::Nftables => {
            exec.run("nft", &["list", "table", "ip", "kube-proxy"], None)
        }
        _ => exec.run("iptables-save", &["-t", "nat"], None),
    };
    ev.rules = rules.await.unwrap_or_default();
    for n in &plan.nodes {
        let port = link_up(&plan.fabric.netns, &n.fabric_port).await;
        ev.links.push((format!("{}'s underlay port", n.name), port));
        let bridge = link_up(&n.netns, "cbr0").await;
        ev.links.push((format!("{}'s cbr0", n.name), bridge));
    }
    let mut pods = vec![src.pod.clone()];
    pods.extend(
        backend
            .and_then(|b| world.pod_at(b))
            .map(|p| key(&p.metadata)),
    );
    for p in pods {
        let (ns, name) = p.split_once('/').expect("a key has a slash");
        let pod = world.pod(&p);
        if let Some(n) = pod.and_then(pod_node).and_then(|n| plan.node(n)) {
            let veth = crate::names::pod_host_veth(ns, name);
            ev.links.push((
                format!("pod {p}'s veth on cbr0"),
                link_up(&n.netns, &veth).await,
            ));
        }
    }
}

/// `ip route get IP` in `netns`, on one line (or why it failed).
async fn route_get(netns: &str, ip: Ipv4Addr) -> String {
    let exec = Nsenter {
        netns: crate::netns::netns_path(netns),
    };
    match exec
        .run("ip", &["-o", "route", "get", &ip.to_string()], None)
        .await
    {
        Ok(out) => out.split_whitespace().collect::<Vec<_>>().join(" "),
        Err(e) => format!("error: {e}"),
    }
}

/// Whether link `dev` in `netns` is set up (its `UP` flag).
async fn link_up(netns: &str, dev: &str) -> bool {
    let exec = Nsenter {
        netns: crate::netns::netns_path(netns),
    };
    match exec
        .run("ip", &["-o", "link", "show", "dev", dev], None)
        .await
    {
        Ok(out) => out
            .split_once('<')
            .and_then(|(_, r)| r.split_once('>'))
            .is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP")),
        Err(_) => false,
    }
}

/// A source port outside the kernel's ephemeral range (32768-60999), so that no
/// other socket of the pod has it.
fn pick_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    20000 + (nanos % 10000) as u16
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_target_is_a_host_and_maybe_a_port() {
        use super::split_target;
        assert_eq!(split_target("web").unwrap(), ("web".into(), None));
        assert_eq!(
            split_target("10.96.0.2:80").unwrap(),
            ("10.96.0.2".into(), Some(80))
        );
        assert!(split_target("web:0").unwrap_err().contains("not a port"));
        assert!(split_target("web:http").unwrap_err().contains("not a port"));
        assert!(split_target("").is_err());
    }
}

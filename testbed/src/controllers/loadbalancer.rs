//! A load balancer for `type: LoadBalancer` Services, as cloud-provider-kind or
//! MetalLB's layer 2 mode gives one to a kind cluster: an address from the testbed's
//! pool (`cluster.loadBalancerPool`; addresses 200 to 250 of the node network,
//! 172.18.0.200-172.18.0.250, by default), written to `status.loadBalancer.ingress`,
//! and announced on the node network: every namespace outside the cluster (the
//! underlay's router `host/outside` and the scenario's hosts) routes it to a node,
//! the first node for `externalTrafficPolicy: Cluster`, the first node with a ready
//! endpoint for `Local` (as MetalLB announces only from such a node). The nodes'
//! kube-proxies then capture it. Services with a `loadBalancerClass` are another
//! controller's, and are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};
use tokio::sync::watch;

use crate::api::service_slices::ServiceSlices;
use crate::api::{Event, Key, Kind, Object, Store};
use crate::informer::Reconcile;
use crate::kernel::exec::{CommandError, NodeExec};

type NsName = (String, String);

/// Which address each Service has and where it is routed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub addresses: BTreeMap<NsName, Ipv4Addr>,
    /// Address -> the node address it is routed through.
    pub routes: BTreeMap<Ipv4Addr, Ipv4Addr>,
}

/// The addresses and routes for `services` (LoadBalancers first get the address they
/// had in `before`, then `spec.loadBalancerIP` when it is in the pool and free, then
/// the lowest free one), given which nodes (by address, in order) have ready
/// endpoints of each Service.
pub fn plan(
    pool: &[Ipv4Addr],
    nodes: &[(String, Ipv4Addr)],
    services: &BTreeMap<NsName, Service>,
    ready_on: &BTreeMap<NsName, BTreeSet<String>>,
    before: &Plan,
) -> Plan {
    let mut out = Plan::default();
    let wanted: Vec<(&NsName, &Service)> = services.iter().filter(|(_, s)| is_ours(s)).collect();
    let mut taken: BTreeSet<Ipv4Addr> = BTreeSet::new();
    // Those that had one keep it.
    for (key, _) in &wanted {
        if let Some(ip) = before.addresses.get(*key) {
            taken.insert(*ip);
            out.addresses.insert((*key).clone(), *ip);
        }
    }
    for (key, svc) in &wanted {
        if out.addresses.contains_key(*key) {
            continue;
        }
        let asked = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| pool.contains(ip) && !taken.contains(ip));
        let Some(ip) = asked.or_else(|| pool.iter().find(|ip| !taken.contains(ip)).copied()) else {
            continue;
        };
        taken.insert(ip);
        out.addresses.insert((*key).clone(), ip);
    }
    for (key, svc) in &wanted {
        let Some(ip) = out.addresses.get(*key) else {
            continue;
        };
        let local = svc
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local");
        let via = if local {
            let on = ready_on.get(*key);
            nodes
                .iter()
                .find(|(n, _)| on.is_some_and(|o| o.contains(n)))
        } else {
            nodes.first()
        };
        if let Some((_, node_ip)) = via {
            out.routes.insert(*ip, *node_ip);
        }
    }
    out
}

/// A LoadBalancer this controller serves (no `loadBalancerClass`).
fn is_ours(s: &Service) -> bool {
    s.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

fn ingress_of(s: &Service) -> Option<Vec<LoadBalancerIngress>> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
}

/// The controller: its caches, what it has given, and the routers it announces on.
pub struct LoadBalancers<E> {
    store: Arc<Store>,
    pool: Vec<Ipv4Addr>,
    nodes: Vec<(String, Ipv4Addr)>,
    routers: Vec<E>,
    /// The routes each router is known to have (address -> node), one per router:
    /// a route is recorded only once `ip route` took it, so a failed one is retried.
    routed: Vec<BTreeMap<Ipv4Addr, Ipv4Addr>>,
    cache: ServiceSlices,
    given: Plan,
}

impl<E: NodeExec> LoadBalancers<E> {
    pub fn new(
        store: Arc<Store>,
        pool: Vec<Ipv4Addr>,
        nodes: Vec<(String, Ipv4Addr)>,
        routers: Vec<E>,
    ) -> Self {
        LoadBalancers {
            store,
            pool,
            nodes,
            routed: vec![BTreeMap::new(); routers.len()],
            routers,
            cache: ServiceSlices::default(),
            given: Plan::default(),
        }
    }

    fn ready_on(&self) -> BTreeMap<NsName, BTreeSet<String>> {
        let mut out: BTreeMap<NsName, BTreeSet<String>> = BTreeMap::new();
        for (key, slice) in self.cache.slices() {
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if let (true, Some(n)) = (ready, &ep.node_name) {
                    out.entry(key.clone()).or_default().insert(n.clone());
                }
            }
        }
        out
    }

    /// Writes each Service's ingress as the plan says (or none).
    fn write_status(&self, next: &Plan) {
        let mut writes = Vec::new();
        for (key, svc) in self.cache.services() {
            let want = next.addresses.get(key).map(|ip| {
                vec![LoadBalancerIngress {
                    ip: Some(ip.to_string()),
                    ip_mode: Some("VIP".into()),
                    ..Default::default()
                }]
            });
            let have = ingress_of(svc).filter(|v| !v.is_empty());
            // Another controller's (a class), or nothing to change.
            let classed = svc
                .spec
                .as_ref()
                .is_some_and(|s| s.load_balancer_class.is_some());
            if classed || have == want {
                continue;
            }
            writes.push((key.clone(), want));
        }
        if writes.is_empty() {
            return;
        }
        self.store.write(|tx| {
            for ((ns, name), want) in writes {
                let k = Key::new(Kind::Service, &ns, &name);
                if let Some(Object::Service(mut s)) = tx.get(&k).cloned() {
                    let status = s.status.get_or_insert_with(ServiceStatus::default);
                    status.load_balancer = Some(LoadBalancerStatus { ingress: want });
                    tx.put(Object::Service(s));
                }
            }
        });
    }

    /// Puts every router's routes to the load balancer addresses as the plan says:
    /// false when one could not be put (or taken away), to be tried again.
    async fn route(&mut self, next: &Plan) -> bool {
        let mut ok = true;
        for (router, routed) in self.routers.iter().zip(self.routed.iter_mut()) {
            for (ip, via) in &next.routes {
                if routed.get(ip) == Some(via) {
                    continue;
                }
                let (to, gw) = (format!("{ip}/32"), via.to_string());
                match router
                    .run("ip", &["route", "replace", &to, "via", &gw], None)
                    .await
                {
                    Ok(_) => {
                        routed.insert(*ip, *via);
                    }
                    Err(e) => {
                        tracing::warn!("load balancer route {to} via {gw}: {e}");
                        ok = false;
                    }
                }
            }
            let gone: Vec<Ipv4Addr> = routed
                .keys()
                .filter(|ip| !next.routes.contains_key(ip))
                .copied()
                .collect();
            for ip in gone {
                let to = format!("{ip}/32");
                match router.run("ip", &["route", "del", &to], None).await {
                    Ok(_) => {
                        routed.remove(&ip);
                    }
                    // Already gone ("No such process"): nothing left to take away.
                    Err(CommandError::Failed { stderr, .. })
                        if stderr.contains("No such process") =>
                    {
                        routed.remove(&ip);
                    }
                    Err(e) => {
                        tracing::warn!("load balancer route {to} removal: {e}");
                        ok = false;
                    }
                }
            }
        }
        ok
    }
}

#[async_trait::async_trait]
impl<E: NodeExec> Reconcile for LoadBalancers<E> {
    type Key = ();

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Service, Kind::EndpointSlice]
    }

    fn observe(&mut self, event: Event, dirty: &mut BTreeSet<()>) {
        if self.cache.observe(event, false).is_some() {
            dirty.insert(());
        }
    }

    async fn reconcile(&mut self, _: BTreeSet<()>, _: u64) -> Result<(), BTreeSet<()>> {
        let next = plan(
            &self.pool,
            &self.nodes,
            self.cache.services(),
            &self.ready_on(),
            &self.given,
        );
        self.write_status(&next);
        let routed = self.route(&next).await;
        self.given = next;
        if routed {
            Ok(())
        } else {
            Err(BTreeSet::from([()]))
        }
    }
}

/// Runs the load balancer of a testbed whose namespaces outside the cluster are
/// `routers`.
pub async fn run<E: NodeExec + 'static>(
    store: Arc<Store>,
    pool: Vec<Ipv4Addr>,
    nodes: Vec<(String, Ipv4Addr)>,
    routers: Vec<E>,
    synced: &watch::Sender<u64>,
) {
    let controller = LoadBalancers::new(store.clone(), pool, nodes, routers);
    crate::informer::run(store, controller, synced).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ty: &str, policy: Option<&str>) -> (NsName, Service) {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": ty, "externalTrafficPolicy": policy, "ports": [{"port": 80}]},
        }))
        .unwrap();
        (("default".into(), name.into()), s)
    }

    #[test]
    fn addresses_come_from_the_pool_stay_put_and_are_routed_by_policy() {
        let cluster = crate::plan::Plan::new("t", &crate::plan::ClusterSpec::with_nodes(2), &[]);
        let pool = cluster.load_balancer_addresses();
        assert_eq!(pool.len(), 51);
        assert_eq!(pool[0].to_string(), "172.18.0.200");
        let nodes = vec![
            ("node-1".to_string(), "172.18.0.2".parse().unwrap()),
            ("node-2".to_string(), "172.18.0.3".parse().unwrap()),
        ];
        let services = BTreeMap::from([
            svc("a", "LoadBalancer", Some("Cluster")),
            svc("b", "LoadBalancer", Some("Local")),
            svc("c", "NodePort", None),
        ]);
        let ready = BTreeMap::from([(
            ("default".to_string(), "b".to_string()),
            BTreeSet::from(["node-2".to_string()]),
        )]);
        let p = plan(&pool, &nodes, &services, &ready, &Plan::default());
        let ip = |s: &str| {
            p.addresses
                .get(&("default".to_string(), s.to_string()))
                .map(|i| i.to_string())
        };
        assert_eq!(ip("a").as_deref(), Some("172.18.0.200"));
        assert_eq!(ip("b").as_deref(), Some("172.18.0.201"));
        assert_eq!(ip("c"), None);
        // Cluster: the first node; Local: the node with the endpoint.
        assert_eq!(
            p.routes[&"172.18.0.200".parse().unwrap()].to_string(),
            "172.18.0.2"
        );
        assert_eq!(
            p.routes[&"172.18.0.201".parse().unwrap()].to_string(),
            "172.18.0.3"
        );
        // a goes: b keeps its address; a new one takes the lowest free.
        let mut fewer = services.clone();
        fewer.remove(&("default".to_string(), "a".to_string()));
        fewer.extend([svc("d", "LoadBalancer", None)]);
        let q = plan(&pool, &nodes, &fewer, &BTreeMap::new(), &p);
        let ip = |s: &str| {
            q.addresses
                .get(&("default".to_string(), s.to_string()))
                .map(|i| i.to_string())
        };
        assert_eq!(ip("b").as_deref(), Some("172.18.0.201"));
        assert_eq!(ip("d").as_deref(), Some("172.18.0.200"));
        // No ready endpoint anywhere: a Local one is not routed.
        assert!(!q.routes.contains_key(&"172.18.0.201".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_route_a_router_refused_is_put_again_at_the_next_try() {
        use crate::kernel::exec::Recorder;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let tries = Arc::new(AtomicUsize::new(0));
        let counted = tries.clone();
        // The first `ip route replace` fails, as when the namespace is not ready yet.
        let router = Recorder::answering(move |c| {
            if c.args[1] == "replace" && counted.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(CommandError::Failed {
                    program: "ip".into(),
                    args: c.args.join(" "),
                    status: "exit status: 2".into(),
                    stderr: "Error: Nexthop has invalid gateway.".into(),
                });
            }
            Ok(String::new())
        });
        let mut lb = LoadBalancers::new(
            Arc::new(Store::default()),
            vec![],
            vec![],
            vec![router.clone()],
        );
        let mut next = Plan::default();
        next.routes.insert(
            "172.18.0.200".parse().unwrap(),
            "172.18.0.2".parse().unwrap(),
        );
        assert!(!lb.route(&next).await);
        assert!(lb.route(&next).await);
        // Put once it was taken, then left alone.
        assert!(lb.route(&next).await);
        let replaced = |r: &Recorder| r.calls().iter().filter(|c| c.args[1] == "replace").count();
        assert_eq!(replaced(&router), 2);
        // The address goes: its route is taken away, once.
        assert!(lb.route(&Plan::default()).await);
        assert!(lb.route(&Plan::default()).await);
        let deleted: Vec<String> = router
            .calls()
            .iter()
            .filter(|c| c.args[1] == "del")
            .map(|c| c.args.join(" "))
            .collect();
        assert_eq!(deleted, ["route del 172.18.0.200/32"]);
    }
}

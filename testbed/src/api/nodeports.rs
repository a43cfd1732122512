//! Node port allocation, as the API server's registry does it for `type: NodePort`
//! and `LoadBalancer` Services (unless `allocateLoadBalancerNodePorts: false`): a
//! requested port is honoured when it is in 30000-32767 and free, a port the Service
//! had is kept on update when the new spec leaves it out (matched by port name, as
//! upstream's `patchAllocatedValues`), and the others get the lowest free port
//! (upstream picks at random; here runs repeat). A Service that no longer needs them
//! gives them back, and so does a deleted one.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;

/// `--service-node-port-range`'s default.
pub const RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Which Service (namespace, name) holds each node port.
#[derive(Debug, Clone, Default)]
pub struct NodePorts {
    used: BTreeMap<u16, (String, String)>,
}

/// A problem with one field: its path and message.
pub type FieldProblem = (String, String);

/// Whether a Service of this spec has node ports.
pub fn needs_node_ports(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else {
        return false;
    };
    match spec.type_.as_deref() {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec.allocate_load_balancer_node_ports != Some(false),
        _ => false,
    }
}

impl NodePorts {
    fn owner_of(&self, port: u16) -> Option<&(String, String)> {
        self.used.get(&port)
    }

    /// Gives `svc`'s ports their node ports (see the module), in `svc` itself.
    // Long because it is the registry's three passes over the ports (patched from the
    // old spec, requested, allocated), each a few lines.
    pub fn assign(
        &mut self,
        svc: &mut Service,
        old: Option<&Service>,
        owner: (&str, &str),
    ) -> Result<(), Vec<FieldProblem>> {
        let owner = (owner.0.to_string(), owner.1.to_string());
        let needs = needs_node_ports(svc);
        let ty = svc
            .spec
            .as_ref()
            .and_then(|s| s.type_.clone())
            .unwrap_or_else(|| "ClusterIP".into());
        let spec = svc.spec.get_or_insert_with(Default::default);
        let ports = spec.ports.get_or_insert_with(Vec::new);
        let mut problems = Vec::new();
        // A LoadBalancer without allocated node ports may still name its own.
        if !needs && ty != "LoadBalancer" {
            for (i, p) in ports.iter().enumerate() {
                if p.node_port.is_some_and(|n| n != 0) {
                    problems.push((
                        format!("spec.ports[{i}].nodePort"),
                        format!("Forbidden: may not be used when `type` is '{ty}'"),
                    ));
                }
            }
            if problems.is_empty() {
                self.keep_only(&owner, &BTreeSet::new());
            }
            return if problems.is_empty() {
                Ok(())
            } else {
                Err(problems)
            };
        }
        // What the old spec had, by port name, for ports the new one leaves out.
        let old_ports: BTreeMap<String, i32> = old
            .filter(|o| needs && needs_node_ports(o))
            .and_then(|o| o.spec.as_ref()?.ports.clone())
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.node_port?)))
            .collect();
        let given: BTreeSet<i32> = ports.iter().filter_map(|p| p.node_port).collect();
        for p in ports.iter_mut().filter(|p| p.node_port.unwrap_or(0) == 0) {
            let name = p.name.clone().unwrap_or_default();
            if let Some(n) = old_ports.get(&name).filter(|n| !given.contains(n)) {
                p.node_port = Some(*n);
            }
        }
        let mut mine: BTreeSet<u16> = BTreeSet::new();
        let mut seen: BTreeSet<(i32, String)> = BTreeSet::new();
        for (i, p) in ports.iter().enumerate() {
            let Some(n) = p.node_port.filter(|n| *n != 0) else {
                continue;
            };
            let at = format!("spec.ports[{i}].nodePort");
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let port = u16::try_from(n).ok().filter(|n| RANGE.contains(n));
            let Some(port) = port else {
                problems.push((at, format!("Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}", RANGE.start(), RANGE.end())));
                continue;
            };
            if !seen.insert((n, proto)) {
                problems.push((at, format!("Duplicate value: {n}")));
            } else if self.owner_of(port).is_some_and(|o| *o != owner) {
                problems.push((
                    at,
                    format!("Invalid value: {n}: provided port is already allocated"),
                ));
            }
            mine.insert(port);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let hc = self.health_check_port(spec, old, &owner, &mut mine, ty == "LoadBalancer")?;
        let ports = spec.ports.get_or_insert_with(Vec::new);
        let missing = ports.iter_mut().filter(|p| p.node_port.unwrap_or(0) == 0);
        for p in missing.filter(|_| needs) {
            p.node_port = Some(self.take_lowest_free(&mut mine, &owner, "spec.ports")?);
        }
        if let Some(true) = hc {
            let at = "spec.healthCheckNodePort";
            spec.health_check_node_port = Some(self.take_lowest_free(&mut mine, &owner, at)?);
        }
        self.keep_only(&owner, &mine);
        Ok(())
    }

    /// The lowest port of the range that neither `mine` nor another Service holds,
    /// now in `mine`; or the registry's "range is full" at `at`.
    fn take_lowest_free(
        &self,
        mine: &mut BTreeSet<u16>,
        owner: &(String, String),
        at: &str,
    ) -> Result<i32, Vec<FieldProblem>> {
        let free = RANGE
            .clone()
            .find(|n| !mine.contains(n) && self.owner_of(*n).is_none_or(|o| o == owner));
        let Some(n) = free else {
            return Err(vec![(
                at.into(),
                "Internal error: failed to allocate a nodePort: range is full".into(),
            )]);
        };
        mine.insert(n);
        Ok(i32::from(n))
    }

    /// Upstream's health check node port: a LoadBalancer with a Local external
    /// policy has one, the one asked for or the one it had, else (`Some(true)`) one
    /// to allocate after its node ports; any other Service may not set it.
    fn health_check_port(
        &self,
        spec: &mut k8s_openapi::api::core::v1::ServiceSpec,
        old: Option<&Service>,
        owner: &(String, String),
        mine: &mut BTreeSet<u16>,
        load_balancer: bool,
    ) -> Result<Option<bool>, Vec<FieldProblem>> {
        let at = "spec.healthCheckNodePort".to_string();
        let needs = load_balancer && spec.external_traffic_policy.as_deref() == Some("Local");
        let asked = spec.health_check_node_port.filter(|n| *n != 0);
        if !needs {
            return match asked {
                Some(n) => Err(vec![(at, format!("Invalid value: {n}: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))]),
                None => Ok(None),
            };
        }
        let had = old
            .and_then(|o| o.spec.as_ref()?.health_check_node_port)
            .filter(|n| *n != 0);
        let Some(n) = asked.or(had) else {
            return Ok(Some(true));
        };
        let port = u16::try_from(n).ok().filter(|n| RANGE.contains(n));
        let Some(port) = port else {
            return Err(vec![(at, format!("Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}", RANGE.start(), RANGE.end()))]);
        };
        if mine.contains(&port) || self.owner_of(port).is_some_and(|o| o != owner) {
            return Err(vec![(
                at,
                format!("Invalid value: {n}: provided port is already allocated"),
            )]);
        }
        mine.insert(port);
        spec.health_check_node_port = Some(n);
        Ok(Some(false))
    }

    /// Gives `owner` exactly `ports`.
    fn keep_only(&mut self, owner: &(String, String), ports: &BTreeSet<u16>) {
        self.used.retain(|n, o| o != owner || ports.contains(n));
        for n in ports {
            self.used.insert(*n, owner.clone());
        }
    }

    /// Gives back every node port of `owner` (a deleted Service).
    pub fn release(&mut self, owner: (&str, &str)) {
        self.used
            .retain(|_, o| (o.0.as_str(), o.1.as_str()) != owner);
    }

    /// Whether `port` is held now.
    pub fn in_use(&self, port: u16) -> bool {
        self.used.contains_key(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ty: &str, ports: &[(&str, Option<i32>)]) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": ty, "ports": ports.iter().map(|(name, np)| {
                serde_json::json!({"name": name, "port": 80, "protocol": "TCP", "nodePort": np})
            }).collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn node_ports(s: &Service) -> Vec<i32> {
        s.spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.node_port)
            .collect()
    }

    const WEB: (&str, &str) = ("default", "web");
    const OTHER: (&str, &str) = ("default", "other");

    #[test]
    fn lowest_free_requested_kept_and_refused_as_the_registry_says() {
        let mut np = NodePorts::default();
        let mut a = svc("NodePort", &[("http", None), ("https", Some(30443))]);
        np.assign(&mut a, None, WEB).unwrap();
        assert_eq!(node_ports(&a), [30000, 30443]);
        // Re-applied without node ports: the same ones, by port name.
        let mut again = svc("NodePort", &[("https", None), ("http", None)]);
        np.assign(&mut again, Some(&a), WEB).unwrap();
        assert_eq!(node_ports(&again), [30443, 30000]);
        // Another Service asking for a held port, or one out of range.
        let mut b = svc("NodePort", &[("x", Some(30443)), ("y", Some(80))]);
        let e = np.assign(&mut b, None, OTHER).unwrap_err();
        assert_eq!(
            e[0],
            (
                "spec.ports[0].nodePort".into(),
                "Invalid value: 30443: provided port is already allocated".into()
            )
        );
        assert_eq!(e[1].1, "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767");
        // The next free one goes to it.
        let mut c = svc("LoadBalancer", &[("x", None)]);
        np.assign(&mut c, None, OTHER).unwrap();
        assert_eq!(node_ports(&c), [30001]);
    }

    #[test]
    fn a_service_that_stops_needing_them_gives_them_back() {
        let mut np = NodePorts::default();
        let mut a = svc("NodePort", &[("http", Some(30080))]);
        np.assign(&mut a, None, WEB).unwrap();
        assert!(np.in_use(30080));
        let mut cluster_ip = svc("ClusterIP", &[("http", None)]);
        np.assign(&mut cluster_ip, Some(&a), WEB).unwrap();
        assert!(!np.in_use(30080));
        // A ClusterIP Service may not name one.
        let mut bad = svc("ClusterIP", &[("http", Some(30080))]);
        let e = np.assign(&mut bad, None, WEB).unwrap_err();
        assert_eq!(
            e[0].1,
            "Forbidden: may not be used when `type` is 'ClusterIP'"
        );
        // LoadBalancer without node ports: none given.
        let mut lb: Service = svc("LoadBalancer", &[("http", None)]);
        lb.spec.as_mut().unwrap().allocate_load_balancer_node_ports = Some(false);
        np.assign(&mut lb, None, WEB).unwrap();
        assert!(node_ports(&lb).is_empty());
        np.assign(&mut a, None, WEB).unwrap();
        np.release(WEB);
        assert!(!np.in_use(30080));
    }

    #[test]
    fn a_local_load_balancer_gets_a_health_check_port_and_others_may_not_set_one() {
        let mut np = NodePorts::default();
        let mut lb = svc("LoadBalancer", &[("http", None)]);
        let spec = lb.spec.as_mut().unwrap();
        spec.external_traffic_policy = Some("Local".into());
        np.assign(&mut lb, None, WEB).unwrap();
        assert_eq!(node_ports(&lb), [30000]);
        let hc = |s: &Service| s.spec.as_ref().unwrap().health_check_node_port;
        assert_eq!(hc(&lb), Some(30001));
        assert!(np.in_use(30001));
        // Kept on update, as the node ports are.
        let mut again = lb.clone();
        again.spec.as_mut().unwrap().health_check_node_port = None;
        np.assign(&mut again, Some(&lb), WEB).unwrap();
        assert_eq!(hc(&again), Some(30001));
        // Cluster policy: it may not be set, and the port goes back.
        let mut cluster = again.clone();
        cluster.spec.as_mut().unwrap().external_traffic_policy = Some("Cluster".into());
        let e = np
            .assign(&mut cluster.clone(), Some(&again), WEB)
            .unwrap_err();
        assert_eq!(e[0].0, "spec.healthCheckNodePort");
        assert!(e[0].1.contains("may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"), "{e:?}");
        cluster.spec.as_mut().unwrap().health_check_node_port = None;
        np.assign(&mut cluster, Some(&again), WEB).unwrap();
        assert!(!np.in_use(30001));
        // Another Service may not take a held one.
        let mut other = svc("LoadBalancer", &[("http", None)]);
        let spec = other.spec.as_mut().unwrap();
        spec.external_traffic_policy = Some("Local".into());
        spec.health_check_node_port = Some(30000);
        let e = np.assign(&mut other, None, OTHER).unwrap_err();
        assert!(e[0].1.contains("already allocated"), "{e:?}");
    }
}

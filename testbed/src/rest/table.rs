//! `meta.k8s.io/v1` Tables: the columns kubectl prints for each kind, filled as the
//! API server's printers fill them (pkg/printers/internalversion/printers.go), so
//! `kubectl get pods -o wide` reads as it does against a real cluster.

use serde_json::{json, Value};

use crate::api::{Kind, Object};

/// An empty object of `kind` (for checks that need one).
pub fn blank(kind: Kind) -> Object {
    match kind {
        Kind::Pod => Object::Pod(Default::default()),
        Kind::Service => Object::Service(Default::default()),
        Kind::Endpoints => Object::Endpoints(Default::default()),
        Kind::EndpointSlice => Object::EndpointSlice(Default::default()),
        Kind::Deployment => Object::Deployment(Default::default()),
        Kind::ReplicaSet => Object::ReplicaSet(Default::default()),
        Kind::Event => Object::Event(Default::default()),
        Kind::Node => Object::Node(Default::default()),
        Kind::Lease => Object::Lease(Default::default()),
    }
}

/// `(name, type, priority, description)`: priority 1 shows only with `-o wide`.
type Column = (&'static str, &'static str, u8, &'static str);

const NAME: Column = (
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Column = (
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

fn columns(kind: Kind) -> Vec<Column> {
    match kind {
        Kind::Pod => vec![
            NAME,
            ("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            ("Status", "string", 0, "The aggregate status of the containers in this pod."),
            ("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE,
            ("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            ("Node", "string", 1, "NodeName is a request to schedule this pod onto a specific node."),
            ("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
            ("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        Kind::Service => vec![
            NAME,
            ("Type", "string", 0, "type determines how the Service is exposed."),
            ("Cluster-IP", "string", 0, "clusterIP is the IP address of the service and is usually assigned randomly."),
            ("External-IP", "string", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            ("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
            AGE,
            ("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector."),
        ],
        Kind::Endpoints => vec![
            NAME,
            ("Endpoints", "string", 0, "Endpoints is the list of endpoints in the endpoints object."),
            AGE,
        ],
        Kind::EndpointSlice => vec![
            NAME,
            ("AddressType", "string", 0, "addressType specifies the type of address carried by this EndpointSlice."),
            ("Ports", "string", 0, "ports specifies the list of network ports exposed by each endpoint in this slice."),
            ("Endpoints", "string", 0, "endpoints is a list of unique endpoints in this slice."),
            AGE,
        ],
        Kind::Deployment => vec![
            NAME,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            ("Up-to-date", "string", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            ("Available", "string", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            AGE,
            ("Containers", "string", 1, "Names of each container in the template."),
            ("Images", "string", 1, "Images referenced by each container in the template."),
            ("Selector", "string", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
        ],
        Kind::ReplicaSet => vec![
            NAME,
            ("Desired", "integer", 0, "Number of desired pods. This is a pointer to distinguish between explicit zero and not specified. Defaults to 1."),
            ("Current", "integer", 0, "Replicas is the most recently observed number of replicas."),
            ("Ready", "integer", 0, "The number of ready replicas for this replica set."),
            AGE,
            ("Containers", "string", 1, "Names of each container in the template."),
            ("Images", "string", 1, "Images referenced by each container in the template."),
            ("Selector", "string", 1, "Selector is a label query over pods that should match the replica count."),
        ],
        Kind::Event => vec![
            ("Last Seen", "string", 0, "The time at which the most recent occurrence of this event was recorded."),
            ("Type", "string", 0, "Type of this event (Normal, Warning), new types could be added in the future."),
            ("Reason", "string", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
            ("Object", "string", 0, "The object that this event is about."),
            ("Subobject", "string", 1, "The subobject that this event is about."),
            ("Source", "string", 1, "The component reporting this event."),
            ("Message", "string", 0, "A human-readable description of the status of this operation."),
            ("First Seen", "string", 1, "The time at which the event was first recorded."),
            ("Count", "string", 1, "The number of times this event has occurred."),
            ("Name", "string", 1, "Name must be unique within a namespace."),
        ],
        Kind::Node | Kind::Lease => node_and_lease_columns(kind),
    }
}

/// The columns of a Node and of a Lease.
fn node_and_lease_columns(kind: Kind) -> Vec<Column> {
    match kind {
        Kind::Node => vec![
            NAME,
            ("Status", "string", 0, "The status of the node"),
            ("Roles", "string", 0, "The roles of the node"),
            AGE,
            ("Version", "string", 0, "Kubelet Version reported by the node."),
            ("Internal-IP", "string", 1, "List of addresses reachable to the node."),
            ("External-IP", "string", 1, "List of addresses reachable to the node."),
            ("OS-Image", "string", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            ("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            ("Container-Runtime", "string", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ],
        Kind::Lease => vec![
            NAME,
            ("Holder", "string", 0, "holderIdentity contains the identity of the holder of a current lease."),
            AGE,
        ],
        _ => Vec::new(),
    }
}

/// How much of each object a row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

/// A Table of `objects` (all of one kind).
pub fn table(kind: Kind, objects: &[Object], resource_version: &str, include: Include) -> Value {
    let defs: Vec<Value> = columns(kind)
        .into_iter()
        .map(|(name, ty, priority, description)| {
            json!({
                "name": name,
                "type": ty,
                "format": if name == "Name" { "name" } else { "" },
                "description": description,
                "priority": priority,
            })
        })
        .collect();
    let now = now_secs();
    let rows: Vec<Value> = objects.iter().map(|o| row(o, now, include)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": resource_version },
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn row(o: &Object, now: i64, include: Include) -> Value {
    let mut r = json!({ "cells": cells(o, now) });
    match include {
        Include::None => {}
        Include::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o.meta(),
            })
        }
        Include::Object => r["object"] = o.to_value(),
    }
    r
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn age(o: &Object, now: i64) -> String {
    match &o.meta().creation_timestamp {
        Some(t) => human_duration(now - t.0.as_second()),
        None => "<unknown>".into(),
    }
}

/// apimachinery's `duration.HumanDuration`: `45s`, `2m5s`, `12m`, `3h20m`, `5d`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let secs = secs.max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    let y = d / 365;
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        match secs % 60 {
            0 => format!("{m}m"),
            s => format!("{m}m{s}s"),
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            mm => format!("{h}h{mm}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        match h % 24 {
            0 => format!("{d}d"),
            hh => format!("{d}d{hh}h"),
        }
    } else if y < 2 {
        format!("{d}d")
    } else if y < 8 {
        match d % 365 {
            0 => format!("{y}y"),
            dd => format!("{y}y{dd}d"),
        }
    } else {
        format!("{y}y")
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

fn selector_text(sel: Option<&std::collections::BTreeMap<String, String>>) -> String {
    or_none(
        sel.into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// A list of at most 3 things, then ` + N more...`, as the printers shorten them.
fn at_most_three(items: Vec<String>, empty: &str) -> String {
    if items.is_empty() {
        return empty.into();
    }
    let more = items.len().saturating_sub(3);
    let mut s = items.into_iter().take(3).collect::<Vec<_>>().join(",");
    if more > 0 {
        s += &format!(" + {more} more...");
    }
    s
}

// Long because it is one printer per kind, each a few lines, as upstream's printers.go.
fn cells(o: &Object, now: i64) -> Vec<Value> {
    let name = json!(o.name());
    let age = json!(age(o, now));
    match o {
        Object::Pod(p) => {
            let spec = p.spec.clone().unwrap_or_default();
            let status = p.status.clone().unwrap_or_default();
            let total = spec.containers.len();
            let (reason, ready) = crate::api::labels::pod_status_column(p);
            let statuses = status.container_statuses.iter().flatten();
            let count: i32 = statuses.clone().map(|c| c.restart_count).sum();
            // As printPod: "3 (25s ago)", from the last container's end.
            let last = statuses
                .filter_map(|c| {
                    c.last_state
                        .as_ref()?
                        .terminated
                        .as_ref()?
                        .finished_at
                        .clone()
                })
                .map(|t| t.0.as_second())
                .max();
            let restarts = match last {
                Some(t) if count > 0 => format!("{count} ({} ago)", human_duration(now - t)),
                _ => count.to_string(),
            };
            let gates = spec.readiness_gates.as_ref().map_or(0, Vec::len);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(reason),
                json!(restarts),
                age,
                json!(status.pod_ip.clone().unwrap_or_else(|| "<none>".into())),
                json!(spec.node_name.clone().unwrap_or_else(|| "<none>".into())),
                json!(status
                    .nominated_node_name
                    .clone()
                    .unwrap_or_else(|| "<none>".into())),
                json!(if gates == 0 {
                    "<none>".to_string()
                } else {
                    format!("0/{gates}")
                }),
            ]
        }
        Object::Service(s) => {
            let spec = s.spec.clone().unwrap_or_default();
            let ty = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
            let external = match ty.as_str() {
                "ExternalName" => spec.external_name.clone().unwrap_or_default(),
                "LoadBalancer" => {
                    let ingress: Vec<String> = s
                        .status
                        .as_ref()
                        .and_then(|st| st.load_balancer.as_ref())
                        .and_then(|lb| lb.ingress.as_ref())
                        .into_iter()
                        .flatten()
                        .filter_map(|i| i.ip.clone().or(i.hostname.clone()))
                        .chain(spec.external_ips.clone().into_iter().flatten())
                        .collect();
                    if ingress.is_empty() {
                        "<pending>".into()
                    } else {
                        ingress.join(",")
                    }
                }
                _ => or_none(spec.external_ips.clone().unwrap_or_default().join(",")),
            };
            let ports: Vec<String> = spec
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                    match p.node_port {
                        Some(np) if np > 0 => format!("{}:{np}/{proto}", p.port),
                        _ => format!("{}/{proto}", p.port),
                    }
                })
                .collect();
            vec![
                name,
                json!(ty),
                json!(spec.cluster_ip.clone().unwrap_or_else(|| "<none>".into())),
                json!(external),
                json!(or_none(ports.join(","))),
                age,
                json!(selector_text(spec.selector.as_ref())),
            ]
        }
        Object::Endpoints(e) => {
            let mut items = Vec::new();
            for ss in e.subsets.iter().flatten() {
                for port in ss.ports.clone().unwrap_or_default() {
                    for a in ss.addresses.iter().flatten() {
                        items.push(format!("{}:{}", a.ip, port.port));
                    }
                }
                if ss.ports.as_ref().is_none_or(|p| p.is_empty()) {
                    items.extend(ss.addresses.iter().flatten().map(|a| a.ip.clone()));
                }
            }
            vec![name, json!(at_most_three(items, "<none>")), age]
        }
        Object::EndpointSlice(s) => {
            let ports: Vec<String> = s
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.port.map(|p| p.to_string()))
                .collect();
            let addrs: Vec<String> = s
                .endpoints
                .iter()
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            vec![
                name,
                json!(s.address_type),
                json!(at_most_three(ports, "<unset>")),
                json!(at_most_three(addrs, "<unset>")),
                age,
            ]
        }
        Object::Node(n) => node_cells(n, name, age),
        Object::Lease(l) => {
            let holder = l.spec.as_ref().and_then(|s| s.holder_identity.clone());
            vec![name, json!(holder.unwrap_or_default()), age]
        }
        Object::Event(e) => {
            let since = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                t.map_or("<unknown>".to_string(), |t| {
                    human_duration(now - t.0.as_second())
                })
            };
            let last = e
                .last_timestamp
                .as_ref()
                .or(e.metadata.creation_timestamp.as_ref());
            let first = e
                .first_timestamp
                .as_ref()
                .or(e.metadata.creation_timestamp.as_ref());
            let src = e.source.clone().unwrap_or_default();
            let source = match (src.component, src.host) {
                (Some(c), Some(h)) => format!("{c}, {h}"),
                (Some(c), None) => c,
                _ => String::new(),
            };
            let obj = &e.involved_object;
            vec![
                json!(since(last)),
                json!(e.type_.clone().unwrap_or_default()),
                json!(e.reason.clone().unwrap_or_default()),
                json!(format!(
                    "{}/{}",
                    obj.kind.as_deref().unwrap_or_default().to_ascii_lowercase(),
                    obj.name.as_deref().unwrap_or_default()
                )),
                json!(obj.field_path.clone().unwrap_or_default()),
                json!(source),
                json!(e.message.clone().unwrap_or_default()),
                json!(since(first)),
                json!(e.count.unwrap_or(1)),
                name,
            ]
        }
        Object::Deployment(d) => {
            let spec = d.spec.clone().unwrap_or_default();
            let status = d.status.clone().unwrap_or_default();
            let (names, images) = containers_and_images(&spec.template);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    status.ready_replicas.unwrap_or(0),
                    spec.replicas.unwrap_or(1)
                )),
                json!(status.updated_replicas.unwrap_or(0)),
                json!(status.available_replicas.unwrap_or(0)),
                age,
                json!(names),
                json!(images),
                json!(selector_text(spec.selector.match_labels.as_ref())),
            ]
        }
        Object::ReplicaSet(rs) => {
            let spec = rs.spec.clone().unwrap_or_default();
            let status = rs.status.clone().unwrap_or_default();
            let template = spec.template.clone().unwrap_or_default();
            let (names, images) = containers_and_images(&template);
            vec![
                name,
                json!(spec.replicas.unwrap_or(1)),
                json!(status.replicas),
                json!(status.ready_replicas.unwrap_or(0)),
                age,
                json!(names),
                json!(images),
                json!(selector_text(spec.selector.match_labels.as_ref())),
            ]
        }
    }
}

/// A node's row, as printNode: Ready or NotReady (Unknown with no Ready
/// condition), the roles its `node-role.kubernetes.io/` labels name.
fn node_cells(n: &k8s_openapi::api::core::v1::Node, name: Value, age: Value) -> Vec<Value> {
    let status = n.status.clone().unwrap_or_default();
    let state = crate::api::labels::node_status_column(n);
    let mut roles: Vec<&str> = n
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    roles.sort_unstable();
    let address = |type_: &str| {
        let a = status.addresses.iter().flatten().find(|a| a.type_ == type_);
        a.map_or("<none>".to_string(), |a| a.address.clone())
    };
    let info = status.node_info.clone().unwrap_or_default();
    vec![
        name,
        json!(state),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        age,
        json!(info.kubelet_version),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info.os_image),
        json!(info.kernel_version),
        json!(info.container_runtime_version),
    ]
}

/// A template's container names and images, comma-joined, as the wide columns show.
fn containers_and_images(
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> (String, String) {
    let containers = template.spec.clone().unwrap_or_default().containers;
    let names: Vec<String> = containers.iter().map(|c| c.name.clone()).collect();
    let images: Vec<String> = containers
        .iter()
        .map(|c| c.image.clone().unwrap_or_default())
        .collect();
    (names.join(","), images.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (0, "0s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 20 * 60, "3h20m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn a_service_row_has_kubectls_columns() {
        let s: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "selector": {"app": "web"},
                     "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]},
        }))
        .unwrap();
        let t = table(Kind::Service, &[Object::Service(s)], "7", Include::None);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web",
                "ClusterIP",
                "10.96.0.20",
                "<none>",
                "80/TCP,53/UDP",
                "<unknown>",
                "app=web"
            ])
        );
        assert_eq!(t["columnDefinitions"][6]["priority"], 1);
    }
}

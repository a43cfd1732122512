//! The resources this API serves, as discovery lists them: each kind's group,
//! version, names, verbs and subresources, and the discovery documents made from them
//! (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`).

use serde_json::{json, Value};

use crate::api::Kind;

/// One resource of the API.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    pub kind: Kind,
    pub kind_name: &'static str,
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    /// In the `all` category (`kubectl get all`).
    pub in_all: bool,
    pub verbs: &'static [&'static str],
    pub subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
}

const WRITE: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS: (&str, &str, &[&str]) = ("status", "", &["get", "patch", "update"]);

pub const RESOURCES: &[Resource] = &[
    Resource {
        kind: Kind::Pod,
        kind_name: "Pod",
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        in_all: true,
        verbs: WRITE,
        subresources: &[
            STATUS,
            ("exec", "PodExecOptions", &["create", "get"]),
            ("log", "Pod", &["get"]),
        ],
    },
    Resource {
        kind: Kind::Service,
        kind_name: "Service",
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        in_all: true,
        verbs: WRITE,
        subresources: &[STATUS],
    },
    Resource {
        kind: Kind::Endpoints,
        kind_name: "Endpoints",
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        in_all: false,
        verbs: &["get", "list", "watch"],
        subresources: &[],
    },
    Resource {
        kind: Kind::Event,
        kind_name: "Event",
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        in_all: false,
        verbs: WRITE,
        subresources: &[],
    },
    Resource {
        kind: Kind::Node,
        kind_name: "Node",
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        in_all: false,
        verbs: &["get", "list", "watch"],
        subresources: &[],
    },
    Resource {
        kind: Kind::EndpointSlice,
        kind_name: "EndpointSlice",
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        short_names: &[],
        in_all: false,
        verbs: &["get", "list", "watch"],
        subresources: &[],
    },
    Resource {
        kind: Kind::Deployment,
        kind_name: "Deployment",
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        in_all: true,
        verbs: WRITE,
        subresources: &[STATUS, ("scale", "Scale", &["get", "patch", "update"])],
    },
    Resource {
        kind: Kind::ReplicaSet,
        kind_name: "ReplicaSet",
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        in_all: true,
        verbs: &["get", "list", "watch"],
        subresources: &[],
    },
    Resource {
        kind: Kind::Lease,
        kind_name: "Lease",
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        in_all: false,
        verbs: &["get", "list", "watch"],
        subresources: &[],
    },
];

impl Resource {
    pub fn of(kind: Kind) -> &'static Resource {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .expect("every kind is served")
    }

    /// The resource `plural` of `group`/`version`.
    pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// `v1`, `apps/v1`.
    pub fn group_version(&self) -> String {
        group_version(self.group, self.version)
    }

    pub fn writable(&self) -> bool {
        self.verbs.contains(&"create")
    }
}

pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The groups other than the core one, in discovery's order.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// `/api`: the core group's versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            { "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }
        ],
    })
}

fn group_doc(group: &str) -> Value {
    let version = RESOURCES
        .iter()
        .find(|r| r.group == group)
        .map_or("v1", |r| r.version);
    let gv = json!({ "groupVersion": group_version(group, version), "version": version });
    json!({
        "name": group,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `/apis`: the named groups.
pub fn api_group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group_doc).collect::<Vec<_>>(),
    })
}

/// `/apis/<group>`.
pub fn api_group(group: &str) -> Option<Value> {
    groups().contains(&group).then(|| {
        let mut doc = group_doc(group);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

/// `/api/v1`, `/apis/<group>/<version>`: the resources of one group version, with
/// their subresources.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut doc = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.kind.namespaced(),
            "kind": r.kind_name,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            doc["shortNames"] = json!(r.short_names);
        }
        if r.in_all {
            doc["categories"] = json!(["all"]);
        }
        resources.push(doc);
        for (sub, kind, verbs) in r.subresources {
            let mut doc = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.kind.namespaced(),
                "kind": if kind.is_empty() { r.kind_name } else { kind },
                "verbs": verbs,
            });
            if *sub == "scale" {
                doc["group"] = json!("autoscaling");
                doc["version"] = json!("v1");
            }
            resources.push(doc);
        }
    }
    (!resources.is_empty()).then(|| {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version(group, version),
            "resources": resources,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_served_once() {
        for k in Kind::ALL {
            assert_eq!(RESOURCES.iter().filter(|r| r.kind == k).count(), 1, "{k}");
        }
        assert_eq!(
            groups(),
            vec!["discovery.k8s.io", "apps", "coordination.k8s.io"]
        );
    }

    #[test]
    fn the_core_group_lists_pods_with_their_subresources() {
        let doc = api_resource_list("", "v1").unwrap();
        let names: Vec<&str> = doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods/exec"), "{names:?}");
        assert!(names.contains(&"services"), "{names:?}");
        assert!(api_resource_list("apps", "v2").is_none());
    }
}

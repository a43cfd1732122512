//! The OpenAPI v3 documents kubectl reads before it writes (`apply` validates and
//! computes patches from them, `explain` prints them): one per group version, with
//! the schemas of Kubernetes' own types (k8s-openapi's, with upstream's names and
//! descriptions), the strategic-merge-patch keys of their lists, and the paths and
//! operations this server has (the `fieldValidation` parameter on them tells kubectl
//! that this server validates fields itself).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::resources::{Resource, RESOURCES};
use crate::api::Kind;

/// How a list field merges under a strategic merge patch, as upstream's Go types
/// tag them (`patchStrategy`, `patchMergeKey`): `(schema, field, strategy, key)`.
/// A list not here is replaced whole.
pub const PATCH_META: &[(&str, &str, &str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        "uid",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        "containerPort",
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        "containerPort",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "merge,retainKeys",
        "name",
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        "",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        "type",
    ),
];

/// Every schema this server's types use, by upstream's name, with their patch keys.
pub fn schemas() -> &'static Map<String, Value> {
    static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut generator = SchemaSettings::openapi3().into_generator();
        generator.subschema_for::<Pod>();
        generator.subschema_for::<Service>();
        generator.subschema_for::<Endpoints>();
        generator.subschema_for::<EndpointSlice>();
        generator.subschema_for::<Deployment>();
        generator.subschema_for::<ReplicaSet>();
        generator.subschema_for::<Event>();
        generator.subschema_for::<Node>();
        generator.subschema_for::<Lease>();
        let mut defs = generator.take_definitions(true);
        for (schema, field, strategy, key) in PATCH_META {
            if let Some(p) = defs
                .get_mut(*schema)
                .and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
            {
                p["x-kubernetes-patch-strategy"] = json!(strategy);
                if !key.is_empty() {
                    p["x-kubernetes-patch-merge-key"] = json!(key);
                }
            }
        }
        defs.insert(
            PATCH_SCHEMA.into(),
            json!({
                "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
                "type": "object",
            }),
        );
        for r in RESOURCES {
            if let Some(s) = defs.get_mut(&schema_name(r.kind)) {
                s["x-kubernetes-group-version-kind"] = json!([gvk(r)]);
            }
        }
        defs
    })
}

/// The schema's name of a kind's type (`io.k8s.api.core.v1.Service`).
pub fn schema_name(kind: Kind) -> String {
    use schemars::JsonSchema;
    match kind {
        Kind::Pod => Pod::schema_name(),
        Kind::Service => Service::schema_name(),
        Kind::Endpoints => Endpoints::schema_name(),
        Kind::EndpointSlice => EndpointSlice::schema_name(),
        Kind::Deployment => Deployment::schema_name(),
        Kind::ReplicaSet => ReplicaSet::schema_name(),
        Kind::Event => Event::schema_name(),
        Kind::Node => Node::schema_name(),
        Kind::Lease => Lease::schema_name(),
    }
    .into_owned()
}

fn gvk(r: &Resource) -> Value {
    json!({ "group": r.group, "version": r.version, "kind": r.kind_name })
}

/// `api/v1`, `apis/apps/v1`: a group version's place under `/openapi/v3/`.
fn doc_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

struct Doc {
    body: Vec<u8>,
    hash: String,
}

fn docs() -> &'static BTreeMap<String, Doc> {
    static DOCS: OnceLock<BTreeMap<String, Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut out = BTreeMap::new();
        let mut gvs: Vec<(&str, &str)> = RESOURCES.iter().map(|r| (r.group, r.version)).collect();
        gvs.dedup();
        for (group, version) in gvs {
            let body = serde_json::to_vec(&group_version_doc(group, version))
                .expect("documents serialize");
            let hash = data_encoding::HEXUPPER.encode(&Sha256::digest(&body));
            out.insert(doc_path(group, version), Doc { body, hash });
        }
        out
    })
}

/// `/openapi/v3`: where each group version's document is.
pub fn root() -> Value {
    let paths: Map<String, Value> = docs()
        .iter()
        .map(|(path, d)| {
            (
                path.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={}", d.hash) }),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// `/openapi/v3/<path>`: one group version's document.
pub fn document(path: &str) -> Option<&'static [u8]> {
    docs().get(path).map(|d| d.body.as_slice())
}

fn param(name: &str, place: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": place,
        "description": description,
        "required": place == "path",
        "schema": { "type": "string", "uniqueItems": true },
    })
}

/// The body types a PATCH takes: kubectl computes a strategic merge patch from the
/// schemas only when the operation lists it.
const PATCH_TYPES: [&str; 3] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
const PATCH_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

fn operation(r: &Resource, id: &str, action: &str, schema: &str, write: bool) -> Value {
    let mut params = Vec::new();
    if write {
        params.push(param(
            "dryRun",
            "query",
            "When present, indicates that modifications should not be persisted.",
        ));
        params.push(param(
            "fieldManager",
            "query",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ));
        params.push(param(
            "fieldValidation",
            "query",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict.",
        ));
    }
    let mut op = json!({
        "description": format!("{action} {}", r.kind_name),
        "operationId": id,
        "parameters": params,
        "responses": {
            "200": {
                "description": "OK",
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } },
            }
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    });
    let body = match action {
        "patch" => Some((PATCH_TYPES.to_vec(), PATCH_SCHEMA.to_string())),
        "put" | "post" => Some((vec!["*/*"], schema.to_string())),
        _ => None,
    };
    if let Some((types, schema)) = body {
        let content: Map<String, Value> = types
            .into_iter()
            .map(|t| {
                (
                    t.to_string(),
                    json!({ "schema": { "$ref": format!("#/components/schemas/{schema}") } }),
                )
            })
            .collect();
        op["requestBody"] = json!({ "content": content, "required": true });
    }
    op
}

fn group_version_doc(group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let schema = schema_name(r.kind);
        let id = |verb: &str| format!("{verb}{}", r.kind_name);
        let ns = param("namespace", "path", "object name and auth scope");
        let name = param("name", "path", "name of the object");
        let (scope, item_params, params) = if r.kind.namespaced() {
            (
                "/namespaces/{namespace}",
                json!([name, ns.clone()]),
                json!([ns]),
            )
        } else {
            ("", json!([name]), json!([]))
        };
        let mut item = json!({
            "get": operation(r, &id("read"), "get", &schema, false),
            "parameters": item_params,
        });
        let mut collection = json!({
            "get": operation(r, &id("list"), "list", &schema, false),
            "parameters": params,
        });
        if r.writable() {
            item["put"] = operation(r, &id("replace"), "put", &schema, true);
            item["patch"] = operation(r, &id("patch"), "patch", &schema, true);
            item["delete"] = operation(r, &id("delete"), "delete", &schema, false);
            collection["post"] = operation(r, &id("create"), "post", &schema, true);
        }
        paths.insert(format!("{base}{scope}/{}/{{name}}", r.plural), item);
        paths.insert(format!("{base}{scope}/{}", r.plural), collection);
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.33.0" },
        "paths": paths,
        "components": { "schemas": schemas() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ports_merge_by_port_and_the_service_says_its_kind() {
        let s = schemas();
        let spec = &s["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(spec["x-kubernetes-patch-merge-key"], "port", "{spec}");
        assert_eq!(spec["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(
            s["io.k8s.api.core.v1.Service"]["x-kubernetes-group-version-kind"][0]["kind"],
            "Service"
        );
        // Every patch key names a field the schema has.
        for (schema, field, _, _) in PATCH_META {
            assert!(
                s.get(*schema)
                    .and_then(|d| d.pointer(&format!("/properties/{field}")))
                    .is_some(),
                "{schema}.{field}"
            );
        }
    }

    #[test]
    fn the_root_points_at_each_group_versions_document() {
        let root = root();
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        let doc: Value = serde_json::from_slice(document("apis/apps/v1").unwrap()).unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        assert!(patch["requestBody"]["content"]
            .get("application/strategic-merge-patch+json")
            .is_some());
    }
}

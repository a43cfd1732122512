//! Pods of a scenario, written as Kubernetes Pod manifests.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::{Located, PodDecl};
use crate::manifest::decode_strict;
use crate::names;
use crate::yaml::{child_key, Spans};

/// Turns the manifest at `path` into the pod's declaration.
pub(super) fn decl_from_manifest(
    value: Value,
    spans: &Spans,
    path: &str,
) -> Result<PodDecl, Vec<Located>> {
    let at = |field: &str, message: String| Located {
        file: None,
        pos: spans.find(&child_key(path, field)),
        message: format!("{}: {message}", child_key(path, field)),
    };
    let mut problems = Vec::new();
    if !value.is_object() {
        return Err(vec![Located {
            file: None,
            pos: spans.find(path),
            message: format!("{path}: expected a Pod manifest (a map)"),
        }]);
    }
    match value.get("apiVersion") {
        Some(Value::String(v)) if v == "v1" => {}
        Some(other) => problems.push(at("apiVersion", format!("expected v1, found {other}"))),
        None => problems.push(at("apiVersion", "missing: a Pod has apiVersion: v1".into())),
    }
    match value.get("kind") {
        Some(Value::String(k)) if k == "Pod" => {}
        Some(other) => problems.push(at("kind", format!("expected Pod, found {other}"))),
        None => problems.push(at("kind", "missing: expected kind: Pod".into())),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let pod: Pod = decode_strict(value, spans, path)?;
    let meta = pod.metadata;
    let name = match meta.name {
        Some(n) => n,
        None => return Err(vec![at("metadata", "metadata.name is required".into())]),
    };
    if let Err(why) = names::check_dns1123_label(&name, 63) {
        problems.push(at("metadata.name", format!("pod name {name:?} {why}")));
    }
    if pod.spec.is_none() {
        problems.push(Located {
            pos: spans.find(path),
            ..at(
                "spec",
                "missing: a Pod needs a spec with at least one container (Kubernetes: Required value)"
                    .into(),
            )
        });
    }
    let namespace = meta.namespace.unwrap_or_else(|| "default".into());
    if let Err(why) = names::check_dns1123_label(&namespace, 63) {
        problems.push(at(
            "metadata.namespace",
            format!("namespace {namespace:?} {why}"),
        ));
    }
    let labels = meta.labels.unwrap_or_default();
    for (k, v) in &labels {
        if let Err(why) = names::check_label(k, v) {
            problems.push(at(&format!("metadata.labels.{k}"), why));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(PodDecl {
        namespace,
        name,
        labels,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        spec: pod.spec,
    })
}

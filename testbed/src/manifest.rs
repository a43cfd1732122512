//! Strict decoding of Kubernetes manifests.
//!
//! The `k8s-openapi` types skip fields they don't know, so a typo such as
//! `metadata.lables` would be silently lost. Like `kubectl apply` with strict field
//! validation, a manifest is decoded, encoded again, and every key of the input that
//! did not survive the round trip is reported as an unknown field, at its line.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use crate::api::Kind;
use crate::yaml::{self, from_value, Located, Spans};

/// `Service web`: how problems name a manifest.
pub fn label(value: &Value) -> String {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{kind} {name}")
}

/// Checks a manifest (found at `base` of a document with `spans`) the way `kubectl
/// apply` does before it sends anything: a kind the testbed serves, the right
/// apiVersion, and no field its Kubernetes type lacks.
pub fn check(value: &Value, spans: &Spans, base: &str) -> Vec<Located> {
    let at = |field: &str, message: String| Located {
        file: None,
        pos: spans.find(&yaml::child_key(base, field)),
        message: format!("{}: {message}", label(value)),
    };
    if !value.is_object() {
        return vec![Located {
            file: None,
            pos: spans.find(base),
            message: "expected a Kubernetes manifest (a map with apiVersion, kind, metadata)"
                .into(),
        }];
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let checked = match Kind::parse(kind).filter(|_| !kind.is_empty()) {
        Some(k @ (Kind::Pod | Kind::Service | Kind::Deployment)) => {
            let version = value
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if version != k.api_version() {
                return vec![at(
                    "apiVersion",
                    format!("{k} is served as {}, not {version:?}", k.api_version()),
                )];
            }
            match k {
                Kind::Pod => decode_strict::<Pod>(value.clone(), spans, base).map(|_| ()),
                Kind::Service => decode_strict::<Service>(value.clone(), spans, base).map(|_| ()),
                _ => decode_strict::<Deployment>(value.clone(), spans, base).map(|_| ()),
            }
        }
        Some(k) => {
            return vec![at(
                "kind",
                format!("{k} objects are written by the control plane, not applied"),
            )]
        }
        None => {
            return vec![at(
                "kind",
                format!("kind {kind:?} is not one the testbed knows (Pod, Service, Deployment)"),
            )]
        }
    };
    match checked {
        Ok(()) => Vec::new(),
        Err(located) => located
            .into_iter()
            .map(|l| Located {
                message: format!("{}: {}", label(value), l.message),
                ..l
            })
            .collect(),
    }
}

/// Decodes `value` (found at `path` of a document with `spans`) as a `T`, rejecting
/// fields `T` does not have.
pub fn decode_strict<T>(value: Value, spans: &Spans, path: &str) -> Result<T, Vec<Located>>
where
    T: DeserializeOwned + Serialize,
{
    let typed: T = from_value(value.clone(), spans, path).map_err(|p| vec![p])?;
    let back = serde_json::to_value(&typed).unwrap_or(Value::Null);
    let mut unknown = Vec::new();
    unknown_fields(&value, &back, path, &mut unknown);
    if unknown.is_empty() {
        return Ok(typed);
    }
    Err(unknown
        .into_iter()
        .map(|p| Located {
            file: None,
            pos: spans.key(&p),
            message: format!("{p}: unknown field"),
        })
        .collect())
}

/// Paths present in `input` but absent from `decoded`. Null inputs are skipped: an
/// optional field set to null decodes to "absent".
fn unknown_fields(input: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
    match (input, decoded) {
        (Value::Object(i), Value::Object(d)) => {
            for (k, v) in i {
                let p = yaml::child_key(path, k);
                match d.get(k) {
                    Some(dv) => unknown_fields(v, dv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(d)) => {
            for (n, (iv, dv)) in i.iter().zip(d).enumerate() {
                unknown_fields(iv, dv, &yaml::child_index(path, n), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn typos_are_unknown_fields_at_their_line() {
        let src = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  lables: {x: y}\nspec:\n  containers:\n  - name: c\n    imagee: busybox\n";
        let (v, spans) = yaml::load(src).unwrap();
        let errs = decode_strict::<Pod>(v, &spans, "").unwrap_err();
        let msgs: Vec<_> = errs
            .iter()
            .map(|e| (e.pos.unwrap().line, e.message.clone()))
            .collect();
        assert_eq!(
            msgs,
            vec![
                (5, "metadata.lables: unknown field".to_string()),
                (9, "spec.containers[0].imagee: unknown field".to_string()),
            ]
        );
    }

    #[test]
    fn known_fields_and_nulls_pass() {
        let src = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels: {}\n  annotations: null\nspec:\n  nodeName: node-1\n  volumes: []\n  containers:\n  - name: c\n    env: []\n    resources: {}\n    ports: [{containerPort: 80}]\n";
        let (v, spans) = yaml::load(src).unwrap();
        let pod = decode_strict::<Pod>(v, &spans, "").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("a"));
    }
}

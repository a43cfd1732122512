//! Patches as the API server applies them: a strategic merge patch (lists merged by
//! their merge key, `$patch: delete|replace`, `$retainKeys`, `$setElementOrder/...`,
//! `$deleteFromPrimitiveList/...`, as upstream's strategicpatch package does, with the
//! keys from the OpenAPI schemas), a JSON merge patch (RFC 7386) and a JSON patch
//! (RFC 6902).

use serde_json::{Map, Value};

use super::schema;

/// The patch types of `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Strategic,
    Merge,
    Json,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            _ => None,
        }
    }
}

/// `doc` patched by `patch` of `ty`; `schema_name` types a strategic merge patch.
pub fn apply(
    doc: &Value,
    patch: &Value,
    ty: PatchType,
    schema_name: &str,
) -> Result<Value, String> {
    let mut out = doc.clone();
    match ty {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err("a merge patch must be a JSON object".into());
            }
            json_patch::merge(&mut out, patch);
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| format!("the JSON patch is not a list of operations: {e}"))?;
            json_patch::patch(&mut out, &ops).map_err(|e| e.to_string())?;
        }
        PatchType::Strategic => {
            let (Value::Object(o), Value::Object(p)) = (&mut out, patch) else {
                return Err("a strategic merge patch must be a JSON object".into());
            };
            let s = super::openapi::schemas().get(schema_name);
            if merge_map(o, p, s)? == Outcome::Delete {
                return Err("a strategic merge patch may not delete the whole object".into());
            }
        }
    }
    Ok(out)
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Keep,
    Delete,
}

fn directive(p: &Map<String, Value>) -> Option<&str> {
    p.get("$patch").and_then(Value::as_str)
}

/// Merges patch map `p` into `o`, typed by schema `s`.
// Long because it is upstream's mergeMap: the directives, then one arm per pair of
// original and patch value types, then the element orders; split, each part would
// need the whole map again.
fn merge_map(
    o: &mut Map<String, Value>,
    p: &Map<String, Value>,
    s: Option<&Value>,
) -> Result<Outcome, String> {
    match directive(p) {
        Some("delete") => return Ok(Outcome::Delete),
        Some("replace") => {
            *o = Map::new();
            let mut rest = p.clone();
            rest.remove("$patch");
            return merge_map(o, &rest, s);
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch directive $patch: {other:?}")),
    }
    if let Some(keep) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep
            .as_array()
            .ok_or("$retainKeys must be a list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        o.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders = Vec::new();
    for (k, pv) in p {
        if let Some(f) = k.strip_prefix("$setElementOrder/") {
            orders.push((f, pv));
            continue;
        }
        if let Some(f) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let doomed = pv
                .as_array()
                .ok_or("$deleteFromPrimitiveList takes a list")?;
            if let Some(Value::Array(list)) = o.get_mut(f) {
                list.retain(|v| !doomed.contains(v));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let fs = schema::field(s, k);
        if pv.is_null() {
            o.remove(k);
            continue;
        }
        match (o.get_mut(k), pv) {
            (Some(Value::Object(om)), Value::Object(pm)) => {
                if merge_map(om, pm, fs)? == Outcome::Delete {
                    o.remove(k);
                }
            }
            (Some(Value::Array(ol)), Value::Array(pl)) => {
                let props = s
                    .map(schema::resolve)
                    .and_then(|s| s.pointer(&format!("/properties/{k}")));
                let (strategy, key) = schema::patch_meta(props);
                if strategy.split(',').any(|x| x == "merge") {
                    merge_list(ol, pl, key, schema::items(fs))?;
                } else {
                    *ol = clean_list(pl, schema::items(fs))?;
                }
            }
            (_, Value::Object(pm)) => {
                let mut fresh = Map::new();
                if merge_map(&mut fresh, pm, fs)? == Outcome::Keep {
                    o.insert(k.clone(), Value::Object(fresh));
                } else {
                    o.remove(k);
                }
            }
            (_, Value::Array(pl)) => {
                o.insert(k.clone(), Value::Array(clean_list(pl, schema::items(fs))?));
            }
            (_, v) => {
                o.insert(k.clone(), v.clone());
            }
        }
    }
    for (f, order) in orders {
        let props = s
            .map(schema::resolve)
            .and_then(|s| s.pointer(&format!("/properties/{f}")));
        let (_, key) = schema::patch_meta(props);
        if let (Some(Value::Array(list)), Some(order)) = (o.get_mut(f), order.as_array()) {
            reorder(list, order, key);
        }
    }
    Ok(Outcome::Keep)
}

/// A list from a patch with its directives taken out (a new list has nothing to
/// merge with).
fn clean_list(pl: &[Value], items: Option<&Value>) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for v in pl {
        match v {
            Value::Object(m) if directive(m).is_some() && m.len() == 1 => {}
            Value::Object(m) => {
                let mut fresh = Map::new();
                if merge_map(&mut fresh, m, items)? == Outcome::Keep {
                    out.push(Value::Object(fresh));
                }
            }
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

fn merge_list(
    ol: &mut Vec<Value>,
    pl: &[Value],
    key: &str,
    items: Option<&Value>,
) -> Result<(), String> {
    if pl
        .iter()
        .any(|v| v.as_object().and_then(directive) == Some("replace"))
    {
        *ol = clean_list(pl, items)?;
        return Ok(());
    }
    if key.is_empty() {
        // A list of scalars: the union, in order.
        for v in pl {
            if !ol.contains(v) {
                ol.push(v.clone());
            }
        }
        return Ok(());
    }
    for pv in pl {
        let Value::Object(pm) = pv else {
            return Err(format!("a list merged by {key:?} holds maps, not {pv}"));
        };
        let Some(kv) = pm.get(key) else {
            return Err(format!(
                "an element of a list merged by {key:?} has no {key:?}"
            ));
        };
        let at = ol.iter().position(|o| o.get(key) == Some(kv));
        if directive(pm) == Some("delete") {
            ol.retain(|o| o.get(key) != Some(kv));
            continue;
        }
        match at {
            Some(i) => {
                if let Value::Object(om) = &mut ol[i] {
                    if merge_map(om, pm, items)? == Outcome::Delete {
                        ol.remove(i);
                    }
                }
            }
            None => {
                let mut fresh = Map::new();
                if merge_map(&mut fresh, pm, items)? == Outcome::Keep {
                    ol.push(Value::Object(fresh));
                }
            }
        }
    }
    Ok(())
}

/// Puts `list` in the order `$setElementOrder` gives; elements it does not name keep
/// their order, after those it does.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: &str) {
    let id = |v: &Value| -> Value {
        if key.is_empty() {
            v.clone()
        } else {
            v.get(key).cloned().unwrap_or(Value::Null)
        }
    };
    let wanted: Vec<Value> = order.iter().map(id).collect();
    let mut named: Vec<(usize, Value)> = Vec::new();
    let mut rest = Vec::new();
    for v in list.drain(..) {
        match wanted.iter().position(|w| *w == id(&v)) {
            Some(i) => named.push((i, v)),
            None => rest.push(v),
        }
    }
    named.sort_by_key(|(i, _)| *i);
    list.extend(named.into_iter().map(|(_, v)| v));
    list.extend(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SVC: &str = "io.k8s.api.core.v1.Service";
    const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";

    fn smp(doc: Value, patch: Value, schema: &str) -> Value {
        apply(&doc, &patch, PatchType::Strategic, schema).unwrap()
    }

    #[test]
    fn service_ports_merge_by_port_and_a_deleted_one_goes() {
        // What kubectl apply sends when a port is removed from the manifest.
        let doc = json!({"spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443},
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}],
            "ports": [{"$patch": "delete", "port": 443}, {"port": 80, "targetPort": 9090}],
        }});
        assert_eq!(
            smp(doc, patch, SVC),
            json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9090}]}})
        );
    }

    #[test]
    fn a_merge_patch_replaces_the_list_a_strategic_one_merges() {
        let doc = json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}});
        let patch = json!({"spec": {"ports": [{"port": 82}]}});
        assert_eq!(
            apply(&doc, &patch, PatchType::Merge, SVC).unwrap(),
            json!({"spec": {"ports": [{"port": 82}]}})
        );
        assert_eq!(
            smp(doc, patch, SVC),
            json!({"spec": {"ports": [{"port": 80}, {"port": 81}, {"port": 82}]}})
        );
    }

    #[test]
    fn containers_merge_by_name_env_by_name_and_a_null_removes() {
        let doc = json!({"spec": {"template": {"metadata": {"labels": {"app": "web", "v": "1"}},
            "spec": {"containers": [{"name": "web", "image": "a",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}}});
        let patch = json!({"spec": {"template": {"metadata": {"labels": {"v": null}},
            "spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "3"}]}]}}}});
        assert_eq!(
            smp(doc, patch, DEPLOY),
            json!({"spec": {"template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "a",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]}]}}}})
        );
    }

    #[test]
    fn retain_keys_and_replace_directives() {
        let doc = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
        assert_eq!(
            smp(doc, patch, DEPLOY),
            json!({"spec": {"strategy": {"type": "Recreate"}}})
        );
        let doc = json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}});
        let patch = json!({"spec": {"ports": [{"$patch": "replace"}, {"port": 90}]}});
        assert_eq!(
            smp(doc, patch, SVC),
            json!({"spec": {"ports": [{"port": 90}]}})
        );
    }

    #[test]
    fn finalizers_are_a_set_and_delete_from_primitive_list_removes() {
        let doc = json!({"metadata": {"finalizers": ["a", "b"]}});
        let patch = json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(
            smp(doc, patch, SVC),
            json!({"metadata": {"finalizers": ["b", "c"]}})
        );
    }

    #[test]
    fn a_json_patch_applies_its_operations_and_fails_on_a_bad_path() {
        let doc = json!({"spec": {"replicas": 1}});
        let p = json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]);
        assert_eq!(
            apply(&doc, &p, PatchType::Json, DEPLOY).unwrap(),
            json!({"spec": {"replicas": 3}})
        );
        let bad = json!([{"op": "remove", "path": "/spec/nope"}]);
        assert!(apply(&doc, &bad, PatchType::Json, DEPLOY).is_err());
    }
}

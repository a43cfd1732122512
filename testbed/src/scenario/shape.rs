//! Maps where the scenario's schema wants maps. serde's derived structs also accept a
//! list of their fields in order (`cluster: [2]` would read as `nodes: 2`), which no
//! reader of the file would guess: a list is refused wherever the schema allows only
//! a map, before the file is deserialized.

use std::sync::OnceLock;

use serde_json::Value;

use crate::yaml;

/// The first place in `value` holding a list where the scenario schema wants a map:
/// its path, as the spans know it.
pub fn list_for_map(value: &Value) -> Option<String> {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(|| {
        serde_json::to_value(schemars::schema_for!(super::ScenarioFile)).expect("schema")
    });
    walk(value, schema, schema, "")
}

/// The branches a schema node stands for: itself, or its `anyOf`/`oneOf`, with `$ref`s
/// resolved against the root's `$defs`.
fn branches<'a>(node: &'a Value, root: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
    if depth > 32 {
        return;
    }
    if let Some(name) = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        if let Some(def) = root.get("$defs").and_then(|d| d.get(name)) {
            return branches(def, root, out, depth + 1);
        }
    }
    let alts = node
        .get("anyOf")
        .or_else(|| node.get("oneOf"))
        .and_then(Value::as_array);
    match alts {
        Some(alts) => alts.iter().for_each(|a| branches(a, root, out, depth + 1)),
        None => out.push(node),
    }
}

/// Whether a branch lets a value of JSON type `ty` through (no `type`: anything).
fn allows(branch: &Value, ty: &str) -> bool {
    match branch.get("type") {
        None => branch.is_object() || branch.as_bool() == Some(true),
        Some(Value::String(t)) => t == ty,
        Some(Value::Array(ts)) => ts.iter().any(|t| t.as_str() == Some(ty)),
        Some(_) => true,
    }
}

fn walk(value: &Value, node: &Value, root: &Value, path: &str) -> Option<String> {
    let mut bs = Vec::new();
    branches(node, root, &mut bs, 0);
    match value {
        Value::Array(items) => {
            let Some(b) = bs.iter().find(|b| allows(b, "array")) else {
                return bs
                    .iter()
                    .any(|b| allows(b, "object"))
                    .then(|| path.to_string());
            };
            let item = b.get("items")?;
            items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, item, root, &yaml::child_index(path, i)))
        }
        Value::Object(map) => {
            let b = bs.iter().find(|b| allows(b, "object"))?;
            map.iter().find_map(|(k, v)| {
                let sub = b
                    .get("properties")
                    .and_then(|p| p.get(k))
                    .or_else(|| b.get("additionalProperties").filter(|a| a.is_object()))?;
                walk(v, sub, root, &yaml::child_key(path, k))
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_where_a_map_belongs_is_found_with_its_path() {
        assert_eq!(list_for_map(&json!(["a", "b"])), Some(String::new()));
        assert_eq!(
            list_for_map(&json!({"name": "x", "cluster": [2]})),
            Some("cluster".into())
        );
        assert_eq!(
            list_for_map(&json!({"name": "x", "cluster": {"dns": ["a"]}})),
            Some("cluster.dns".into())
        );
        assert_eq!(
            list_for_map(&json!({"name": "x", "steps": [{"dns": ["c", "k"]}]})),
            Some("steps[0].dns".into())
        );
    }

    #[test]
    fn lists_the_schema_allows_pass() {
        let ok = json!({
            "name": "x",
            "cluster": {"nodes": ["a", "b"], "dns": {"upstream": ["1.1.1.1"]}},
            "pods": [{"metadata": {"name": "p"}, "spec": {"containers": []}}],
            "objects": [[{"kind": "Service"}]],
            "steps": [
                {"exec": {"in": "p", "command": ["true"]}},
                {"exec": {"in": "p", "command": "true"}},
                {"apply": [{"kind": "Service"}]},
            ],
        });
        assert_eq!(list_for_map(&ok), None);
    }
}

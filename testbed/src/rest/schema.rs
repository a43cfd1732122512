//! Walking the OpenAPI schemas: a field's schema, a list's items, a field's patch
//! strategy and merge key; and the strict check of a request's fields against them
//! (`fieldValidation=Strict`: an unknown field is an error, as the API server's
//! strict decoding makes it).

use serde_json::{Map, Value};

use super::openapi::schemas;

/// The named schema a `$ref` (or `allOf: [{$ref}]`) points at, or the schema itself.
pub fn resolve(s: &Value) -> &Value {
    let r = s
        .get("$ref")
        .or_else(|| s.pointer("/allOf/0/$ref"))
        .and_then(Value::as_str);
    match r.and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => schemas().get(name).unwrap_or(s),
        None => s,
    }
}

/// The schema of `field` in object schema `s`.
pub fn field<'a>(s: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    let s = resolve(s?);
    s.get("properties")
        .and_then(|p| p.get(name))
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
        .map(resolve)
}

/// The schema of a list's items.
pub fn items(s: Option<&Value>) -> Option<&Value> {
    resolve(s?).get("items").map(resolve)
}

/// How a list merges: its strategy (`merge`, `retainKeys`, both, or none) and key.
pub fn patch_meta(s: Option<&Value>) -> (&str, &str) {
    let Some(s) = s else { return ("", "") };
    let get = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("");
    (
        get("x-kubernetes-patch-strategy"),
        get("x-kubernetes-patch-merge-key"),
    )
}

/// Every field of `v` its schema `s` does not have, as `spec.ports[0].nam`.
pub fn unknown_fields(v: &Value, s: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(v, resolve(s), "", &mut out);
    out
}

fn walk(v: &Value, s: &Value, at: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        Value::Object(m) => walk_map(m, s, at, &join, out),
        Value::Array(items) => {
            if let Some(is) = s.get("items").map(resolve) {
                for (i, item) in items.iter().enumerate() {
                    walk(item, is, &format!("{at}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn walk_map(
    m: &Map<String, Value>,
    s: &Value,
    at: &str,
    join: &dyn Fn(&str) -> String,
    out: &mut Vec<String>,
) {
    let props = s.get("properties").and_then(Value::as_object);
    let extra = s.get("additionalProperties").filter(|a| a.is_object());
    if props.is_none() && extra.is_none() {
        // A free-form object (or a type the schemas do not describe).
        return;
    }
    for (k, child) in m {
        match (props.and_then(|p| p.get(k)), extra) {
            (Some(cs), _) => walk(child, resolve(cs), &join(k), out),
            (None, Some(es)) => walk(child, resolve(es), &format!("{at}[{k}]"), out),
            (None, None) => out.push(join(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unknown_field_is_named_by_its_path() {
        let svc = &schemas()["io.k8s.api.core.v1.Service"];
        let v = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "x", "labels": {"a": "b"}},
            "spec": {"ports": [{"port": 80, "nam": "http"}], "selectr": {}},
        });
        assert_eq!(
            unknown_fields(&v, svc),
            vec!["spec.ports[0].nam".to_string(), "spec.selectr".to_string()]
        );
        let ok = json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}});
        assert!(unknown_fields(&ok, svc).is_empty());
    }
}

//! The verbs that write: create (POST), replace (PUT), patch (strategic merge, JSON
//! merge, JSON patch), delete (one object or a collection), and the `status` and
//! `scale` subresources; each through the API server's one admission path.

use http::{HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use super::handler::{json_response, list_kind, ns, selectors, target, Query, ResourcePath};
use super::patch::{self, PatchType};
use super::status::{self, Refusal, Target};
use super::{Body, Door};
use crate::api::server::Expect;
use crate::api::{Key, Kind, Object};

/// Endpoints and EndpointSlices are the endpoints controller's: clients read them.
fn writable(t: &ResourcePath) -> Result<(), Refusal> {
    if t.res.writable() {
        return Ok(());
    }
    Err(status::method_not_allowed(format!(
        "{} are kept by the endpoints controller from the Services' selectors; this server does not take them from clients (change or delete the Service)",
        t.res.plural
    )))
}

/// A 6-character suffix for `generateName`, from the letters Kubernetes uses.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id()) << 32;
    (0..5)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ALPHABET[(seed % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// Decodes a request's object for `t`: its kind and version as the path says, its
/// namespace the path's, its fields checked as `fieldValidation` asks.
fn decode_object(
    t: &ResourcePath,
    q: &Query,
    mut body: Value,
    warnings: &mut Vec<String>,
) -> Result<Object, Refusal> {
    let want_gv = t.res.group_version();
    let gv = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if !gv.is_empty() && gv != want_gv {
        return Err(status::bad_request(format!(
            "the API version in the data ({gv}) does not match the expected API version ({want_gv})"
        )));
    }
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != t.res.kind_name {
        return Err(status::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            t.res.kind_name
        )));
    }
    if !body.is_object() {
        return Err(status::bad_request("the request body is not an object"));
    }
    body["apiVersion"] = json!(want_gv);
    body["kind"] = json!(t.res.kind_name);
    let schema = &super::openapi::schemas()[&super::openapi::schema_name(t.res.kind)];
    let unknown = super::schema::unknown_fields(&body, schema);
    if !unknown.is_empty() {
        let text = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        match q.get("fieldValidation").unwrap_or("Warn") {
            "Strict" => {
                return Err(status::bad_request(format!(
                    "{} in version {want_gv:?} cannot be handled as a {}: strict decoding error: {text}",
                    t.res.kind_name, t.res.kind_name
                )))
            }
            "Ignore" => {}
            _ => warnings.extend(unknown.iter().map(|f| format!("unknown field {f:?}"))),
        }
    }
    let mut o = Object::from_value(t.res.kind, body).map_err(|e| {
        status::bad_request(format!(
            "{} in version {want_gv:?} cannot be handled as a {}: {e}",
            t.res.kind_name, t.res.kind_name
        ))
    })?;
    let path_ns = ns(t).to_string();
    let meta = o.meta_mut();
    match meta.namespace.as_deref() {
        None | Some("") => meta.namespace = Some(path_ns),
        Some(n) if n != path_ns => return Err(status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        Some(_) => {}
    }
    if meta.name.as_deref().is_none_or(str::is_empty) {
        if let Some(prefix) = meta.generate_name.clone().filter(|g| !g.is_empty()) {
            meta.name = Some(format!("{prefix}{}", random_suffix()));
        }
    }
    Ok(o)
}

fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {w:?}")) {
            r.headers_mut().append("Warning", v);
        }
    }
    r
}

/// Whether a write is a dry run: `?dryRun=All` (the one value upstream takes).
pub(super) fn dry_run(q: &Query) -> Result<bool, Refusal> {
    match q.get("dryRun") {
        None => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(status::bad_request(format!(
            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
        ))),
    }
}

/// Writes one object through the API server with `expect` (or tries it, for a dry
/// run); the object as stored, or the refusal as a Status. The fields it accepts
/// without acting on them are added to `warnings`.
fn write_one(
    door: &Door,
    t: &ResourcePath,
    o: Object,
    expect: Expect,
    dry: bool,
    warnings: &mut Vec<String>,
) -> Result<Object, Refusal> {
    let name = o.name().to_string();
    let result = if dry {
        door.api.try_write(vec![o], &[expect])
    } else {
        door.api.write(vec![o], &[expect])
    };
    match result {
        Ok(mut applied) => {
            let applied = applied.remove(0);
            warnings.extend(
                applied
                    .ignored
                    .iter()
                    .map(|f| format!("{f} is accepted but not emulated (ignored)")),
            );
            Ok(applied.stored.expect("a write returns what it stored"))
        }
        Err(problems) => Err(status::from_problems(&target(t, &name), &problems)),
    }
}

pub(super) fn create(
    door: &Door,
    t: &ResourcePath,
    q: &Query,
    body: Value,
) -> Result<Response<Body>, Refusal> {
    writable(t)?;
    let dry = dry_run(q)?;
    let mut warnings = Vec::new();
    let o = decode_object(t, q, body, &mut warnings)?;
    let stored = write_one(door, t, o, Expect::Absent, dry, &mut warnings)?;
    Ok(with_warnings(
        json_response(StatusCode::CREATED, &stored.to_value()),
        &warnings,
    ))
}

pub(super) fn replace(
    door: &Door,
    t: &ResourcePath,
    q: &Query,
    name: &str,
    body: Value,
) -> Result<Response<Body>, Refusal> {
    writable(t)?;
    let dry = dry_run(q)?;
    let mut warnings = Vec::new();
    let o = decode_object(t, q, body, &mut warnings)?;
    if o.name() != name {
        return Err(status::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            o.name()
        )));
    }
    let rv = o.meta().resource_version.clone();
    let stored = write_one(
        door,
        t,
        o,
        Expect::Present {
            resource_version: rv,
        },
        dry,
        &mut warnings,
    )?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &stored.to_value()),
        &warnings,
    ))
}

/// A Deployment's `autoscaling/v1` Scale.
pub(super) fn scale_of(o: &Object) -> Value {
    let Object::Deployment(d) = o else {
        return Value::Null;
    };
    let m = &d.metadata;
    let spec = d.spec.clone().unwrap_or_default();
    let selector = spec
        .selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.name, "namespace": m.namespace, "uid": m.uid,
            "resourceVersion": m.resource_version, "creationTimestamp": m.creation_timestamp,
        },
        "spec": { "replicas": spec.replicas.unwrap_or(1) },
        "status": {
            "replicas": d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            "selector": selector,
        },
    })
}

fn set_scale(
    door: &Door,
    t: &ResourcePath,
    name: &str,
    scale: &Value,
) -> Result<Response<Body>, Refusal> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| status::bad_request("a Scale needs spec.replicas"))?;
    let replicas = i32::try_from(replicas)
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            status::from_problems(
                &Target {
                    kind: "Scale",
                    ..target(t, name)
                },
                &[crate::api::server::ObjectProblem {
                    index: None,
                    object: String::new(),
                    path: "spec.replicas".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                    reason: Default::default(),
                }],
            )
        })?;
    match door.api.scale(ns(t), name, replicas) {
        Ok(a) => Ok(json_response(
            StatusCode::OK,
            &scale_of(a.stored.as_ref().expect("stored")),
        )),
        Err(p) => Err(status::from_problems(&target(t, name), &p)),
    }
}

pub(super) fn put_subresource(
    door: &Door,
    t: &ResourcePath,
    name: &str,
    sub: &str,
    body: Value,
) -> Result<Response<Body>, Refusal> {
    match sub {
        "scale" if t.res.kind == Kind::Deployment => set_scale(door, t, name, &body),
        "status" if t.res.writable() => {
            let mut warnings = Vec::new();
            let q = Query::parse(None);
            let o = decode_object(t, &q, body, &mut warnings)?;
            let rv = o.meta().resource_version.clone();
            write_status(door, t, name, o, rv)
        }
        _ => Err(status::no_such_path()),
    }
}

/// Replaces an object's status (the status subresource): nothing else of it changes.
fn write_status(
    door: &Door,
    t: &ResourcePath,
    name: &str,
    new: Object,
    rv: Option<String>,
) -> Result<Response<Body>, Refusal> {
    let key = Key::new(t.res.kind, ns(t), name);
    let tgt = target(t, name);
    let stored = door.api.store.write(|tx| {
        let old = tx.get(&key).cloned().ok_or_else(|| status::not_found(&tgt))?;
        if rv.as_deref().is_some_and(|rv| !rv.is_empty())
            && old.meta().resource_version != rv
        {
            return Err(status::conflict(
                &tgt,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let merged = match (old, new) {
            (Object::Pod(mut o), Object::Pod(n)) => {
                o.status = n.status;
                Object::Pod(o)
            }
            (Object::Service(mut o), Object::Service(n)) => {
                o.status = n.status;
                Object::Service(o)
            }
            (Object::Deployment(mut o), Object::Deployment(n)) => {
                o.status = n.status;
                Object::Deployment(o)
            }
            (o, _) => o,
        };
        Ok(tx.put(merged))
    })?;
    Ok(json_response(StatusCode::OK, &stored.to_value()))
}

pub(super) fn patch_object(
    door: &Door,
    t: &ResourcePath,
    q: &Query,
    name: &str,
    sub: Option<&str>,
    body: Value,
    ty: PatchType,
) -> Result<Response<Body>, Refusal> {
    let key = Key::new(t.res.kind, ns(t), name);
    let schema = super::openapi::schema_name(t.res.kind);
    let dry = dry_run(q)?;
    if dry && sub.is_some() {
        return Err(status::bad_request(
            "dryRun is not supported on the status and scale subresources: nothing was changed",
        ));
    }
    // A patch without a resource version applies to the object as it is; if it
    // changed meanwhile, the patch is applied again to the new one (as upstream).
    for _ in 0..5 {
        let current = door
            .api
            .store
            .get(&key)
            .ok_or_else(|| status::not_found(&target(t, name)))?;
        if sub == Some("scale") {
            if t.res.kind != Kind::Deployment {
                return Err(status::no_such_path());
            }
            let scale =
                patch::apply(&scale_of(&current), &body, ty, "").map_err(status::bad_request)?;
            return set_scale(door, t, name, &scale);
        }
        let patched =
            patch::apply(&current.to_value(), &body, ty, &schema).map_err(status::bad_request)?;
        let pinned = patched
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        let current_rv = current.meta().resource_version.clone();
        let explicit = pinned.is_some() && pinned != current_rv;
        let mut warnings = Vec::new();
        let o = decode_object(t, q, patched, &mut warnings)?;
        if o.name() != name {
            return Err(status::bad_request(
                "a patch may not change the object's name",
            ));
        }
        let rv = if explicit { pinned } else { current_rv };
        let result = if sub == Some("status") {
            write_status(door, t, name, o, rv)
        } else {
            writable(t)?;
            write_one(
                door,
                t,
                o,
                Expect::Present {
                    resource_version: rv,
                },
                dry,
                &mut warnings,
            )
            .map(|s| json_response(StatusCode::OK, &s.to_value()))
        };
        match result {
            Err(r) if r.body["reason"] == "Conflict" && !explicit => continue,
            other => return other.map(|r| with_warnings(r, &warnings)),
        }
    }
    Err(status::conflict(
        &target(t, name),
        "the object kept changing while the patch was applied; try again",
    ))
}

/// The options of a delete this server does not carry out as asked, as warnings.
fn delete_warnings(opts: &Value, q: &Query) -> Vec<String> {
    let mut w = Vec::new();
    let policy = opts
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(q.get("propagationPolicy"));
    match policy {
        Some("Orphan") => w.push(
            "propagationPolicy Orphan is ignored: a Deployment's pods are deleted with it (in the background)".to_string(),
        ),
        Some("Foreground") => w.push(
            "propagationPolicy Foreground is carried out in the background: the object is gone at once, its pods soon after".to_string(),
        ),
        _ => {}
    }
    w
}

/// The delete's `gracePeriodSeconds`, from its options or its query.
fn grace(opts: &Value, q: &Query) -> Option<i64> {
    opts.get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or(q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()))
}

pub(super) fn delete(
    door: &Door,
    t: &ResourcePath,
    name: &str,
    opts: &Value,
    q: &Query,
) -> Result<Response<Body>, Refusal> {
    writable(t)?;
    let key = Key::new(t.res.kind, ns(t), name);
    if let Some(pre) = opts.get("preconditions") {
        let now = door
            .api
            .store
            .get(&key)
            .ok_or_else(|| status::not_found(&target(t, name)))?;
        let m = now.meta();
        let uid_ok = pre
            .get("uid")
            .and_then(Value::as_str)
            .is_none_or(|u| Some(u) == m.uid.as_deref());
        let rv_ok = pre
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_none_or(|r| Some(r) == m.resource_version.as_deref());
        if !uid_ok || !rv_ok {
            return Err(status::conflict(
                &target(t, name),
                "the precondition of the delete does not hold (uid or resourceVersion)",
            ));
        }
    }
    let gone = door
        .api
        .delete_with(&key, grace(opts, q))
        .map_err(|p| status::from_problems(&target(t, name), &[p]))?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &gone.to_value()),
        &delete_warnings(opts, q),
    ))
}

pub(super) fn delete_collection(
    door: &Door,
    t: &ResourcePath,
    q: &Query,
) -> Result<Response<Body>, Refusal> {
    writable(t)?;
    let (labels, fields) = selectors(t, q)?;
    let (items, _) = door.api.store.list_at(t.res.kind, t.namespace.as_deref());
    let mut gone = Vec::new();
    for o in items
        .iter()
        .filter(|o| labels.matches(o.meta().labels.as_ref()) && fields.matches(o))
    {
        if let Ok(g) = door.api.delete(&o.key()) {
            gone.push(g.to_value());
        }
    }
    let rv = *door.api.store.subscribe().borrow();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": list_kind(t.res),
            "apiVersion": t.res.group_version(),
            "metadata": { "resourceVersion": rv.to_string() },
            "items": gone,
        }),
    ))
}

//! One request: who may make it, which path it names, and the verb on it (discovery,
//! OpenAPI, get/list/watch, create, update, patch, delete, the scale and status
//! subresources), answered as the API server answers.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use serde_json::{json, Value};

use super::patch::PatchType;
use super::resources::{self, Resource};
use super::select::{Fields, Labels};
use super::status::{self, Refusal, Target};
use super::table::{self, Include};
use super::{limits, write, Body, Door, User};
use crate::api::{Key, Kind, Object};

/// The query string as a map (the last value of a repeated key wins).
pub struct Query(BTreeMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut m = BTreeMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(decode(k, true), decode(v, true));
        }
        Query(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// Percent-decoding of one query component (with `+` as a space) or path segment.
pub fn decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn full(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

pub fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    full(
        code,
        "application/json",
        serde_json::to_vec(v).expect("values serialize"),
    )
}

fn refused(r: Refusal) -> Response<Body> {
    json_response(r.code, &r.body)
}

/// Entry point for one request.
pub async fn handle(
    door: Arc<Door>,
    user: User,
    peer: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let user = door.authenticate(&user, req.headers());
    if user == User::Anonymous {
        door.log_refusal(&format!(
            "api: refused {} {} from {peer}: no client certificate or token this testbed issued (401 Unauthorized)",
            req.method(),
            req.uri().path()
        ));
        return refused(status::unauthorized());
    }
    match route(&door, &user, req).await {
        Ok(r) => r,
        Err(r) => refused(r),
    }
}

/// What a path under `/api` or `/apis/<g>/<v>` names.
pub struct ResourcePath {
    pub res: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

fn parse_resource(group: &str, version: &str, rest: &[&str]) -> Option<ResourcePath> {
    let segment = |s: &str| decode(s, false);
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(segment(ns)), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(segment(n)), None),
        [p, n, s] => (*p, Some(segment(n)), Some(s.to_string())),
        _ => return None,
    };
    let res = Resource::find(group, version, plural)?;
    // A kind with no namespace (a Node) is asked for outside any, and is kept in "".
    let namespace = match (res.kind.namespaced(), namespace) {
        (true, None) if name.is_some() => return None,
        (true, namespace) => namespace,
        (false, None) => Some(String::new()),
        (false, Some(_)) => return None,
    };
    Some(ResourcePath {
        res,
        namespace,
        name,
        sub,
    })
}

async fn route(
    door: &Arc<Door>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, Refusal> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get = req.method() == Method::GET;
    let ok = |v: Value| Ok(json_response(StatusCode::OK, &v));
    match segs.as_slice() {
        ["version"] if get => ok(version()),
        ["healthz" | "livez" | "readyz"] if get => {
            Ok(full(StatusCode::OK, "text/plain; charset=utf-8", "ok"))
        }
        ["api"] if get => ok(resources::api_versions(
            door.address.trim_start_matches("https://"),
        )),
        ["apis"] if get => ok(resources::api_group_list()),
        ["apis", g] if get => resources::api_group(g).map_or(Err(status::no_such_path()), ok),
        ["api", v] if get => {
            resources::api_resource_list("", v).map_or(Err(status::no_such_path()), ok)
        }
        ["apis", g, v] if get => {
            resources::api_resource_list(g, v).map_or(Err(status::no_such_path()), ok)
        }
        ["openapi", "v3"] if get => ok(super::openapi::root()),
        // The testbed's own: each node's kube-proxy, for `testbed get nodes`.
        ["testbed", "v1", "nodes"] if get && *user == User::Admin => {
            ok(serde_json::to_value((door.nodes)()).expect("node states serialize"))
        }
        ["openapi", "v3", rest @ ..] if get => super::openapi::document(&rest.join("/"))
            .map(|d| full(StatusCode::OK, "application/json", Bytes::from_static(d)))
            .ok_or_else(status::no_such_path),
        ["api", v, rest @ ..] => match parse_resource("", v, rest) {
            Some(t) => resource(door, user, req, t).await,
            None => Err(status::no_such_path()),
        },
        ["apis", g, v, rest @ ..] => match parse_resource(g, v, rest) {
            Some(t) => resource(door, user, req, t).await,
            None => Err(status::no_such_path()),
        },
        _ => Err(status::no_such_path()),
    }
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": format!("v1.33.0-testbed.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// How the client wants objects: as they are, or as a Table.
fn wants_table(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| a.split(',').next())
        .is_some_and(|first| first.contains("as=Table"))
}

async fn body_json(req: Request<Incoming>) -> Result<(Value, String), Refusal> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let bytes = Limited::new(req.into_body(), limits::BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            status::too_large(format!(
                "the request body is larger than {} MiB, the most this server reads: {e}",
                limits::BODY_BYTES >> 20
            ))
        })?
        .to_bytes();
    let v = serde_json::from_slice(&bytes)
        .map_err(|e| status::bad_request(format!("the request body is not JSON: {e}")))?;
    Ok((v, ct))
}

pub(super) fn target<'a>(t: &'a ResourcePath, name: &'a str) -> Target<'a> {
    Target {
        plural: t.res.plural,
        group: t.res.group,
        kind: t.res.kind_name,
        name,
    }
}

// Long because it is the verb dispatch: one arm per verb and subresource.
async fn resource(
    door: &Arc<Door>,
    user: &User,
    req: Request<Incoming>,
    t: ResourcePath,
) -> Result<Response<Body>, Refusal> {
    let q = Query::parse(req.uri().query());
    let method = req.method().clone();
    if let Err(r) = super::authz::check(user, super::authz::verb(&method, &t, &q), &t) {
        door.log_refusal(&format!(
            "api: refused {method} {}: {}",
            req.uri().path(),
            r.body["message"].as_str().unwrap_or("forbidden")
        ));
        return Err(r);
    }
    let table_out = wants_table(&req);
    match (&method, t.name.as_deref(), t.sub.as_deref()) {
        (&Method::GET, None, None) if q.flag("watch") => {
            super::watch::watch(door, &t, &q, table_out)
        }
        (&Method::GET, None, None) => list(door, &t, &q, table_out),
        (&Method::GET, Some(name), None | Some("status")) => {
            let key = Key::new(
                t.res.kind,
                t.namespace.as_deref().unwrap_or("default"),
                name,
            );
            let o = door
                .api
                .store
                .get(&key)
                .ok_or_else(|| status::not_found(&target(&t, name)))?;
            if table_out {
                let rv = o.meta().resource_version.clone().unwrap_or_default();
                let v = table::table(t.res.kind, &[o], &rv, include(&q));
                return Ok(json_response(StatusCode::OK, &v));
            }
            Ok(json_response(StatusCode::OK, &o.to_value()))
        }
        (&Method::GET, Some(name), Some("scale")) if t.res.kind == Kind::Deployment => {
            let key = Key::new(t.res.kind, ns(&t), name);
            let o = door
                .api
                .store
                .get(&key)
                .ok_or_else(|| status::not_found(&target(&t, name)))?;
            Ok(json_response(StatusCode::OK, &write::scale_of(&o)))
        }
        (&Method::GET, Some(name), Some("log")) if t.res.kind == Kind::Pod => {
            super::logs::log(door, &t, name, &q)
        }
        (&Method::GET | &Method::POST, Some(name), Some("exec")) if t.res.kind == Kind::Pod => {
            let name = name.to_string();
            super::exec::exec(door, req, &t, &name)
        }
        (&Method::POST, None, None) => {
            let (body, _) = body_json(req).await?;
            write::create(door, &t, &q, body)
        }
        (&Method::PUT, Some(name), None) => {
            let (body, _) = body_json(req).await?;
            let name = name.to_string();
            write::replace(door, &t, &q, &name, body)
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status") | Some("scale"))) => {
            let (body, ct) = body_json(req).await?;
            let ty = PatchType::from_content_type(&ct)
                .ok_or_else(|| status::unsupported_media_type(&ct))?;
            let name = name.to_string();
            let sub = sub.map(str::to_string);
            write::patch_object(door, &t, &q, &name, sub.as_deref(), body, ty)
        }
        (&Method::PUT, Some(name), Some(sub @ ("status" | "scale"))) => {
            no_dry_run(&q)?;
            let (body, _) = body_json(req).await?;
            let (name, sub) = (name.to_string(), sub.to_string());
            write::put_subresource(door, &t, &name, &sub, body)
        }
        (&Method::DELETE, Some(name), None) => {
            no_dry_run(&q)?;
            let name = name.to_string();
            let (opts, _) = if req.headers().contains_key(header::CONTENT_LENGTH)
                || req.headers().contains_key(header::TRANSFER_ENCODING)
            {
                body_json(req).await.unwrap_or((Value::Null, String::new()))
            } else {
                (Value::Null, String::new())
            };
            write::delete(door, &t, &name, &opts, &q)
        }
        (&Method::DELETE, None, None) => {
            no_dry_run(&q)?;
            write::delete_collection(door, &t, &q)
        }
        _ => Err(status::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {method} {}{}",
            t.res.plural,
            t.sub
                .as_deref()
                .map(|s| format!("/{s}"))
                .unwrap_or_default()
        ))),
    }
}

pub(super) fn ns(t: &ResourcePath) -> &str {
    t.namespace.as_deref().unwrap_or("default")
}

pub fn include(q: &Query) -> Include {
    match q.get("includeObject") {
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        _ => Include::Metadata,
    }
}

/// `?dryRun=All` where this server does not carry it out (deletes, subresource
/// writes) is refused rather than written for real.
fn no_dry_run(q: &Query) -> Result<(), Refusal> {
    match q.get("dryRun") {
        None => Ok(()),
        Some(_) => Err(status::bad_request(
            "dryRun is carried out on create, update and patch only: nothing was changed (use kubectl's --dry-run=client)",
        )),
    }
}

/// The selectors of a list or watch.
pub fn selectors(t: &ResourcePath, q: &Query) -> Result<(Labels, Fields), Refusal> {
    let labels = Labels::parse(q.get("labelSelector").unwrap_or(""))
        .map_err(|e| status::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = Fields::parse(q.get("fieldSelector").unwrap_or(""), t.res.kind)
        .map_err(status::bad_request)?;
    Ok((labels, fields))
}

pub fn list_kind(r: &Resource) -> String {
    format!("{}List", r.kind_name)
}

fn list(
    door: &Door,
    t: &ResourcePath,
    q: &Query,
    table_out: bool,
) -> Result<Response<Body>, Refusal> {
    let (labels, fields) = selectors(t, q)?;
    let (items, rv) = door.api.store.list_at(t.res.kind, t.namespace.as_deref());
    let mut items: Vec<Object> = items
        .into_iter()
        .filter(|o| labels.matches(o.meta().labels.as_ref()) && fields.matches(o))
        .collect();
    // Pages: `continue` is the last key sent; the next page starts after it.
    if let Some(token) = q.get("continue") {
        let after = data_encoding::BASE64URL_NOPAD
            .decode(token.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| status::bad_request("continue key is not valid"))?;
        let (ans, aname) = after.split_once('/').unwrap_or(("", &after));
        items.retain(|o| (o.namespace(), o.name()) > (ans, aname));
    }
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if let Some(limit) = q.get("limit").and_then(|l| l.parse::<usize>().ok()) {
        if limit > 0 && items.len() > limit {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let last = items.last().expect("limit > 0");
            let token = format!("{}/{}", last.namespace(), last.name());
            meta["continue"] = json!(data_encoding::BASE64URL_NOPAD.encode(token.as_bytes()));
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    if table_out {
        let mut v = table::table(t.res.kind, &items, &rv.to_string(), include(q));
        v["metadata"] = meta;
        return Ok(json_response(StatusCode::OK, &v));
    }
    let v = json!({
        "kind": list_kind(t.res),
        "apiVersion": t.res.group_version(),
        "metadata": meta,
        "items": items.iter().map(Object::to_value).collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_percent_decoded() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1&x"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("x"), None);
        assert_eq!(decode("100%", true), "100%");
        assert_eq!(decode("%zz", true), "%zz");
        assert_eq!(decode("a+b%2Bc", false), "a+b+c", "a path keeps its +");
        let t = parse_resource("", "v1", &["namespaces", "a%2Fb", "pods", "..%2Fx"]).unwrap();
        assert_eq!(
            (t.namespace.as_deref(), t.name.as_deref()),
            (Some("a/b"), Some("../x"))
        );
    }

    #[test]
    fn paths_name_resources_namespaces_names_and_subresources() {
        let t = parse_resource(
            "apps",
            "v1",
            &["namespaces", "default", "deployments", "web", "scale"],
        )
        .unwrap();
        assert_eq!(t.res.kind, Kind::Deployment);
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.sub.as_deref(), Some("scale"));
        let all = parse_resource("", "v1", &["pods"]).unwrap();
        assert!(all.namespace.is_none() && all.name.is_none());
        assert!(parse_resource("", "v1", &["pods", "web"]).is_none());
        assert!(parse_resource("", "v1", &["namespaces", "default", "nodes"]).is_none());
        let node = parse_resource("", "v1", &["nodes", "node-1"]).unwrap();
        assert_eq!(
            (node.namespace.as_deref(), node.name.as_deref()),
            (Some(""), Some("node-1"))
        );
    }
}

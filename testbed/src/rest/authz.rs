//! Who may do what, as a cluster's authorizers decide it: the owner's certificate
//! (`system:masters`) may do everything; a pod's ServiceAccount may read, as if every
//! ServiceAccount were bound to the `view` ClusterRole (get, list and watch of
//! every kind this API serves, and pods' logs; not `pods/exec`, no writes).
//! Discovery, `/version` and `/openapi` are open to every authenticated caller.
//! A refusal says what RBAC says: `services is forbidden: User "..." cannot create
//! resource "services" in API group "" in the namespace "default"`.

use http::Method;
use serde_json::json;

use super::handler::{Query, ResourcePath};
use super::status::{self, Refusal};
use super::User;

/// The verb a request is, as the API server's request-info resolver names it.
pub fn verb(method: &Method, t: &ResourcePath, q: &Query) -> &'static str {
    let named = t.name.is_some();
    match *method {
        _ if t.sub.as_deref() == Some("exec") => "create",
        Method::GET | Method::HEAD if !named && q.flag("watch") => "watch",
        Method::GET | Method::HEAD if !named => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// Whether `user` may do `verb` on `t`.
pub fn check(user: &User, verb: &str, t: &ResourcePath) -> Result<(), Refusal> {
    let subject = match user {
        User::Admin => return Ok(()),
        User::Anonymous => return Err(status::unauthorized()),
        User::ServiceAccount(s) => s,
    };
    let reads = matches!(verb, "get" | "list" | "watch");
    if reads && t.sub.as_deref() != Some("exec") {
        return Ok(());
    }
    let resource = match &t.sub {
        Some(sub) => format!("{}/{sub}", t.res.plural),
        None => t.res.plural.to_string(),
    };
    let what = match &t.name {
        Some(name) => format!("{} {name:?}", qualified(t.res.plural, t.res.group)),
        None => qualified(t.res.plural, t.res.group),
    };
    let scope = match &t.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".into(),
    };
    let mut r = status::forbidden(format!(
        "{what} is forbidden: User {:?} cannot {verb} resource {resource:?} in API group {:?} {scope}",
        subject.user(),
        t.res.group,
    ));
    let mut details = json!({ "kind": t.res.plural });
    if let Some(name) = &t.name {
        details["name"] = json!(name);
    }
    if !t.res.group.is_empty() {
        details["group"] = json!(t.res.group);
    }
    r.body["details"] = details;
    Err(r)
}

fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

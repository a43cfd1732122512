//! Errors as the API server sends them: a `Status` object with `reason`, `code`,
//! `details` (the object's kind and name, and each field's cause), which kubectl turns
//! into `Error from server (NotFound): ...` and `The Service "x" is invalid: ...`.

use http::StatusCode;
use serde_json::{json, Value};

use crate::api::server::{ObjectProblem, Reason};

/// A refusal: the HTTP status and the `Status` body.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: StatusCode,
    pub body: Value,
}

fn status(code: StatusCode, reason: &str, message: String, details: Option<Value>) -> Refusal {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    Refusal { code, body }
}

/// What an object is, for a message and a `details`: its kind's plural and group
/// (`services`, ``), its Kind (`Service`) and its name.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub plural: &'a str,
    pub group: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    /// `services "web"`, or `deployments.apps "web"` outside the core group.
    fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut d = json!({ "name": self.name, "kind": self.plural });
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }
}

pub fn not_found(t: &Target) -> Refusal {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} {:?} not found", t.resource(), t.name),
        Some(t.details()),
    )
}

pub fn already_exists(t: &Target) -> Refusal {
    status(
        StatusCode::CONFLICT,
        "AlreadyExists",
        format!("{} {:?} already exists", t.resource(), t.name),
        Some(t.details()),
    )
}

pub fn conflict(t: &Target, why: &str) -> Refusal {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} {:?}: {why}",
            t.resource(),
            t.name
        ),
        Some(t.details()),
    )
}

pub fn bad_request(message: impl Into<String>) -> Refusal {
    status(StatusCode::BAD_REQUEST, "BadRequest", message.into(), None)
}

pub fn forbidden(message: impl Into<String>) -> Refusal {
    status(StatusCode::FORBIDDEN, "Forbidden", message.into(), None)
}

pub fn unauthorized() -> Refusal {
    status(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Unauthorized".into(),
        None,
    )
}

pub fn method_not_allowed(message: impl Into<String>) -> Refusal {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        message.into(),
        None,
    )
}

/// A patch of a type this server does not take (server-side apply among them: it
/// is not served, and kubectl says so).
pub fn unsupported_media_type(got: &str) -> Refusal {
    let why = if got.starts_with("application/apply-patch") {
        "server-side apply is not served by this testbed (use kubectl's client-side apply, the default); "
    } else {
        ""
    };
    status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        format!("{why}the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json; got {got:?}"),
        None,
    )
}

pub fn not_acceptable(message: impl Into<String>) -> Refusal {
    status(
        StatusCode::NOT_ACCEPTABLE,
        "NotAcceptable",
        message.into(),
        None,
    )
}

pub fn too_large(message: impl Into<String>) -> Refusal {
    status(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        message.into(),
        None,
    )
}

/// A path this server does not serve (the API server's plain 404).
pub fn no_such_path() -> Refusal {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource".into(),
        Some(json!({})),
    )
}

/// 410 Gone: a watch from a resource version older than the changes kept.
pub fn gone(since: u64, oldest: u64) -> Refusal {
    status(
        StatusCode::GONE,
        "Expired",
        format!("too old resource version: {since} ({oldest})"),
        None,
    )
}

/// Admission's refusal of one object, as the API server words it: 422 with a cause
/// per field, or the 404/409/403 its reason is.
pub fn from_problems(t: &Target, problems: &[ObjectProblem]) -> Refusal {
    let first = problems.first().map(|p| p.reason).unwrap_or_default();
    match first {
        Reason::NotFound => return not_found(t),
        Reason::AlreadyExists => return already_exists(t),
        Reason::Conflict => {
            return conflict(
                t,
                problems.first().map(|p| p.message.as_str()).unwrap_or(""),
            )
        }
        Reason::Forbidden => {
            let why = problems
                .iter()
                .map(cause_text)
                .collect::<Vec<_>>()
                .join(", ");
            let mut details = t.details();
            details["causes"] = causes(problems);
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("{} {:?} is forbidden: {why}", t.resource(), t.name),
                Some(details),
            );
        }
        Reason::Invalid => {}
    }
    let list = problems
        .iter()
        .map(cause_text)
        .collect::<Vec<_>>()
        .join(", ");
    let list = if problems.len() > 1 {
        format!("[{list}]")
    } else {
        list
    };
    let mut details = t.details();
    details["kind"] = json!(t.kind);
    details["causes"] = causes(problems);
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{} {:?} is invalid: {list}", t.kind, t.name),
        Some(details),
    )
}

/// A cause per problem, with its field.
fn causes(problems: &[ObjectProblem]) -> Value {
    problems
        .iter()
        .map(|p| {
            json!({
                "reason": cause_reason(&p.message),
                "message": p.message,
                "field": p.path,
            })
        })
        .collect()
}

/// `field: message`, as a field.Error prints.
fn cause_text(p: &ObjectProblem) -> String {
    if p.path.is_empty() {
        p.message.clone()
    } else {
        format!("{}: {}", p.path, p.message)
    }
}

/// The cause's reason from the words its message starts with, as field.ErrorType
/// names them.
fn cause_reason(message: &str) -> &'static str {
    for (prefix, reason) in [
        ("Required value", "FieldValueRequired"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too many", "FieldValueTooMany"),
        ("Too long", "FieldValueTooLong"),
    ] {
        if message.starts_with(prefix) {
            return reason;
        }
    }
    "FieldValueInvalid"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str) -> Target<'_> {
        Target {
            plural: "services",
            group: "",
            kind: "Service",
            name,
        }
    }

    #[test]
    fn an_invalid_object_is_worded_as_the_api_server_words_it() {
        let p = ObjectProblem {
            index: None,
            object: "Service default/x".into(),
            path: "spec.ports[0].port".into(),
            message: "Invalid value: 70000: must be between 1 and 65535, inclusive".into(),
            reason: Reason::Invalid,
        };
        let r = from_problems(&svc("x"), &[p]);
        assert_eq!(r.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            r.body["message"],
            "Service \"x\" is invalid: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            r.body["details"]["causes"][0]["field"],
            "spec.ports[0].port"
        );
        assert_eq!(
            r.body["details"]["causes"][0]["reason"],
            "FieldValueInvalid"
        );
        assert_eq!(r.body["details"]["kind"], "Service");
    }

    #[test]
    fn a_missing_object_names_its_resource_and_group() {
        let t = Target {
            plural: "deployments",
            group: "apps",
            kind: "Deployment",
            name: "web",
        };
        let r = not_found(&t);
        assert_eq!(r.code, StatusCode::NOT_FOUND);
        assert_eq!(r.body["message"], "deployments.apps \"web\" not found");
        assert_eq!(r.body["details"]["group"], "apps");
    }
}

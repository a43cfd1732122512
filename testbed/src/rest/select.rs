//! Label and field selectors as list and watch take them (`labelSelector=app=web,tier
//! in (a,b),!canary`, `fieldSelector=metadata.name=web`), with the API server's errors
//! for what it cannot parse or does not support.

use std::collections::BTreeMap;

use crate::api::{Kind, Object};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(Vec<(String, Op)>);

/// Splits on commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn set(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set of values, got {s:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl Labels {
    pub fn parse(s: &str) -> Result<Labels, String> {
        let mut reqs = Vec::new();
        for t in terms(s) {
            let req = if let Some(k) = t.strip_prefix('!') {
                (k.trim().to_string(), Op::NotExists)
            } else if let Some((k, v)) = t.split_once("!=") {
                (k.trim().to_string(), Op::NotEq(v.trim().to_string()))
            } else if let Some((k, v)) = t.split_once("==") {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = t.split_once('=') {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = t.split_once(" notin ") {
                (k.trim().to_string(), Op::NotIn(set(v)?))
            } else if let Some((k, v)) = t.split_once(" in ") {
                (k.trim().to_string(), Op::In(set(v)?))
            } else {
                (t.to_string(), Op::Exists)
            };
            if req.0.is_empty() || req.0.contains(char::is_whitespace) {
                return Err(format!("unable to parse requirement: {t:?}"));
            }
            reqs.push(req);
        }
        Ok(Labels(reqs))
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.0.iter().all(|(k, op)| {
            let v = labels.and_then(|l| l.get(k));
            match op {
                Op::Eq(want) => v == Some(want),
                Op::NotEq(want) => v != Some(want),
                Op::In(set) => v.is_some_and(|v| set.contains(v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.contains(v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }
}

/// A field selector: `field=value`, `field!=value`, joined by commas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, bool, String)>);

/// The fields a kind may be selected by, as the API server's field label conversion
/// allows them (every kind has `metadata.name` and `metadata.namespace`).
fn field_value(o: &Object, field: &str) -> Option<Option<String>> {
    Some(match field {
        "metadata.name" => Some(o.name().to_string()),
        "metadata.namespace" => Some(o.namespace().to_string()),
        _ => match (o, field) {
            (Object::Pod(p), "spec.nodeName") => p.spec.as_ref().and_then(|s| s.node_name.clone()),
            (Object::Pod(p), "status.phase") => p.status.as_ref().and_then(|s| s.phase.clone()),
            (Object::Pod(p), "status.podIP") => p.status.as_ref().and_then(|s| s.pod_ip.clone()),
            (Object::Pod(p), "spec.restartPolicy") => {
                p.spec.as_ref().and_then(|s| s.restart_policy.clone())
            }
            (Object::Service(s), "spec.clusterIP") => {
                s.spec.as_ref().and_then(|s| s.cluster_ip.clone())
            }
            (Object::Service(s), "spec.type") => s.spec.as_ref().and_then(|s| s.type_.clone()),
            (Object::Event(e), f) => {
                let o = &e.involved_object;
                match f {
                    "involvedObject.kind" => o.kind.clone(),
                    "involvedObject.namespace" => o.namespace.clone(),
                    "involvedObject.name" => o.name.clone(),
                    "involvedObject.uid" => o.uid.clone(),
                    "involvedObject.apiVersion" => o.api_version.clone(),
                    "involvedObject.resourceVersion" => o.resource_version.clone(),
                    "involvedObject.fieldPath" => o.field_path.clone(),
                    "reason" => e.reason.clone(),
                    "reportingComponent" => e.reporting_component.clone(),
                    "source" => e.source.as_ref().and_then(|s| s.component.clone()),
                    "type" => e.type_.clone(),
                    _ => return None,
                }
            }
            _ => return None,
        },
    })
}

impl Fields {
    /// Parses a field selector for `kind`; a field it cannot be selected by is an
    /// error, as upstream's `field label not supported`.
    pub fn parse(s: &str, kind: Kind) -> Result<Fields, String> {
        let probe = super::table::blank(kind);
        let mut reqs = Vec::new();
        for t in terms(s) {
            let (f, neg, v) = if let Some((f, v)) = t.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = t.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!("invalid selector: '{t}'; can't understand '{t}'"));
            };
            let f = f.trim();
            if field_value(&probe, f).is_none() {
                return Err(format!("field label not supported: {f}"));
            }
            reqs.push((f.to_string(), neg, v.trim().to_string()));
        }
        Ok(Fields(reqs))
    }

    pub fn matches(&self, o: &Object) -> bool {
        self.0.iter().all(|(f, neg, want)| {
            let got = field_value(o, f).flatten().unwrap_or_default();
            (got == *want) != *neg
        })
    }

    /// The name this selector pins (`metadata.name=web`), if it pins one.
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, neg, _)| f == "metadata.name" && !neg)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors_take_every_operator() {
        let l = labels(&[("app", "web"), ("tier", "a")]);
        for (sel, want) in [
            ("app=web", true),
            ("app==web,tier=a", true),
            ("app!=web", false),
            ("tier in (a, b)", true),
            ("tier notin (a)", false),
            ("canary", false),
            ("!canary", true),
            ("app,tier in (b)", false),
            ("", true),
        ] {
            assert_eq!(Labels::parse(sel).unwrap().matches(Some(&l)), want, "{sel}");
        }
        assert!(Labels::parse("a b").is_err());
        assert!(Labels::parse("x in a").is_err());
    }

    #[test]
    fn field_selectors_know_their_fields() {
        let f = Fields::parse("metadata.name=web", Kind::Service).unwrap();
        assert_eq!(f.name(), Some("web"));
        assert_eq!(
            Fields::parse("spec.nodeName=n1", Kind::Service).unwrap_err(),
            "field label not supported: spec.nodeName"
        );
        assert!(Fields::parse("spec.nodeName=n1,status.phase!=Failed", Kind::Pod).is_ok());
        // What kubectl describe asks for a Service's events.
        assert!(Fields::parse(
            "involvedObject.name=web,involvedObject.namespace=default,involvedObject.kind=Service,involvedObject.uid=x",
            Kind::Event
        )
        .is_ok());
    }
}

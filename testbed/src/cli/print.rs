//! Objects printed as kubectl prints them: `get`'s tables (its columns, `-o wide`,
//! ages, endpoint lists cut at three) and `-o yaml`.

use serde_json::Value;

use crate::api::{Kind, Object};

/// YAML for `-o yaml`: JSON values written as block YAML.
pub(super) fn to_yaml(v: &Value) -> String {
    fn scalar(s: &str) -> String {
        let plain = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
            && !matches!(
                s,
                "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
            )
            && s.parse::<f64>().is_err()
            && !s.starts_with(['-', ':', '@']);
        if plain {
            s.to_string()
        } else {
            serde_json::to_string(s).expect("strings serialize")
        }
    }
    fn emit(v: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(m) => {
                for (k, val) in m {
                    match val {
                        Value::Object(c) if !c.is_empty() => {
                            out.push_str(&format!("{pad}{}:\n", scalar(k)));
                            emit(val, indent + 2, out);
                        }
                        Value::Array(a) if !a.is_empty() => {
                            out.push_str(&format!("{pad}{}:\n", scalar(k)));
                            emit(val, indent, out);
                        }
                        _ => out.push_str(&format!("{pad}{}: {}\n", scalar(k), inline(val))),
                    }
                }
            }
            Value::Array(a) => {
                for item in a {
                    match item {
                        Value::Object(m) if !m.is_empty() => {
                            let mut inner = String::new();
                            emit(item, indent + 2, &mut inner);
                            let inner =
                                inner.replacen(&" ".repeat(indent + 2), &format!("{pad}- "), 1);
                            out.push_str(&inner);
                        }
                        _ => out.push_str(&format!("{pad}- {}\n", inline(item))),
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", inline(other))),
        }
    }
    fn inline(v: &Value) -> String {
        match v {
            Value::String(s) => scalar(s),
            Value::Object(m) if m.is_empty() => "{}".into(),
            Value::Array(a) if a.is_empty() => "[]".into(),
            other => other.to_string(),
        }
    }
    let mut out = String::new();
    emit(v, 0, &mut out);
    out
}

pub(super) fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// The items joined by commas, or `empty` (`<none>`) as kubectl shows no items.
fn joined(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(",")
    }
}

/// Endpoints as kubectl lists them: the first three, then how many more
/// (`formatEndpoints` in kubectl's printers), so a row stays short however many.
fn first_three(items: &[String], empty: &str) -> String {
    match items.len() {
        0..=3 => joined(items, empty),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
    }
}

fn age(o: &Object) -> String {
    let Some(t) = &o.meta().creation_timestamp else {
        return "<unknown>".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - t.0.as_second()).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

// Long because it is one table of kubectl's columns per kind (and -o wide), which is
// compared with kubectl's printers whole.
pub(super) fn table(kind: Kind, items: &[Object], wide: bool) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let header: &[&str] = match (kind, wide) {
        (Kind::Pod, false) => &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        (Kind::Pod, true) => &[
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "CONDITIONS",
        ],
        (Kind::Service, false) => &[
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        (Kind::Service, true) => &[
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR",
        ],
        (Kind::Endpoints, _) => &["NAME", "ENDPOINTS", "AGE"],
        (Kind::EndpointSlice, _) => &["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        (Kind::Deployment, false) => &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        (Kind::Deployment, true) => &[
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "SELECTOR",
        ],
        (Kind::Event, _) => &["NAME", "TYPE", "REASON", "OBJECT", "MESSAGE"],
    };
    rows.push(header.iter().map(|s| s.to_string()).collect());
    for o in items {
        let mut r = vec![o.name().to_string()];
        match o {
            Object::Event(e) => {
                r.push(e.type_.clone().unwrap_or_default());
                r.push(e.reason.clone().unwrap_or_default());
                r.push(format!(
                    "{}/{}",
                    e.involved_object
                        .kind
                        .as_deref()
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                    e.involved_object.name.as_deref().unwrap_or_default()
                ));
                r.push(e.message.clone().unwrap_or_default());
            }
            Object::Pod(p) => {
                let st = p.status.clone().unwrap_or_default();
                let containers = p.spec.as_ref().map_or(0, |s| s.containers.len());
                let ready = crate::api::labels::pod_ready(p);
                r.push(format!(
                    "{}/{containers}",
                    if ready { containers } else { 0 }
                ));
                r.push(st.phase.clone().unwrap_or_else(|| "Pending".into()));
                r.push("0".into());
                r.push(age(o));
                if wide {
                    r.push(st.pod_ip.clone().unwrap_or_else(|| "<none>".into()));
                    r.push(
                        p.spec
                            .as_ref()
                            .and_then(|s| s.node_name.clone())
                            .unwrap_or_else(|| "<none>".into()),
                    );
                    let conds: Vec<String> = st
                        .conditions
                        .iter()
                        .flatten()
                        .map(|c| format!("{}={}", c.type_, c.status))
                        .collect();
                    r.push(joined(&conds, "<none>"));
                }
            }
            Object::Service(s) => {
                let spec = s.spec.clone().unwrap_or_default();
                r.push(spec.type_.clone().unwrap_or_default());
                r.push(spec.cluster_ip.clone().unwrap_or_else(|| "<none>".into()));
                r.push(
                    spec.external_name
                        .clone()
                        .unwrap_or_else(|| "<none>".into()),
                );
                let ports: Vec<String> = spec
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP")))
                    .collect();
                r.push(joined(&ports, "<none>"));
                r.push(age(o));
                if wide {
                    let sel: Vec<String> = spec
                        .selector
                        .iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    r.push(joined(&sel, "<none>"));
                }
            }
            Object::Endpoints(e) => {
                let mut eps = Vec::new();
                for s in e.subsets.iter().flatten() {
                    for a in s.addresses.iter().flatten() {
                        for p in s.ports.iter().flatten() {
                            eps.push(format!("{}:{}", a.ip, p.port));
                        }
                    }
                }
                r.push(first_three(&eps, "<none>"));
                r.push(age(o));
            }
            Object::EndpointSlice(s) => {
                r.push(s.address_type.clone());
                let ports: Vec<String> = s
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.port.map(|n| n.to_string()))
                    .collect();
                r.push(joined(&ports, "<unset>"));
                let eps: Vec<String> = s
                    .endpoints
                    .iter()
                    .flat_map(|e| e.addresses.clone())
                    .collect();
                r.push(first_three(&eps, "<unset>"));
                r.push(age(o));
            }
            Object::Deployment(d) => {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                r.push(format!("{}/{want}", st.ready_replicas.unwrap_or(0)));
                r.push(st.updated_replicas.unwrap_or(0).to_string());
                r.push(st.available_replicas.unwrap_or(0).to_string());
                r.push(age(o));
                if wide {
                    let sel: Vec<String> = d
                        .spec
                        .iter()
                        .flat_map(|s| s.selector.match_labels.iter().flatten())
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    r.push(sel.join(","));
                }
            }
        }
        rows.push(r);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::first_three;

    #[test]
    fn endpoints_show_three_and_how_many_more_as_kubectl_does() {
        let eps: Vec<String> = (1..=2000).map(|i| format!("10.244.1.{i}:8080")).collect();
        assert_eq!(
            first_three(&eps, "<none>"),
            "10.244.1.1:8080,10.244.1.2:8080,10.244.1.3:8080 + 1997 more..."
        );
        assert_eq!(
            first_three(&eps[..2], "<none>"),
            "10.244.1.1:8080,10.244.1.2:8080"
        );
        assert_eq!(first_three(&[], "<none>"), "<none>");
    }
}

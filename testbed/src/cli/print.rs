//! Objects printed as kubectl prints them: the API server's Tables (kubectl's columns,
//! `-o wide`) and `-o yaml`.

use serde_json::Value;

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

/// A `meta.k8s.io/v1` Table's rows as kubectl prints them: its columns' names in
/// capitals, the columns of priority 0 (all of them with `-o wide`), and a NAMESPACE
/// column first when the rows are from every namespace.
pub(super) fn table_rows(table: &Value, wide: bool, namespace_column: bool) -> Vec<Vec<String>> {
    let defs = table["columnDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shown: Vec<usize> = (0..defs.len())
        .filter(|&i| wide || defs[i]["priority"].as_i64().unwrap_or(0) == 0)
        .collect();
    let mut header: Vec<String> = shown
        .iter()
        .map(|&i| defs[i]["name"].as_str().unwrap_or_default().to_uppercase())
        .collect();
    if namespace_column {
        header.insert(0, "NAMESPACE".into());
    }
    let mut rows = vec![header];
    for r in table["rows"].as_array().into_iter().flatten() {
        let cells = r["cells"].as_array().cloned().unwrap_or_default();
        let mut row: Vec<String> = shown
            .iter()
            .map(|&i| match cells.get(i) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            })
            .collect();
        if namespace_column {
            let ns = r["object"]["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default();
            row.insert(0, ns.to_string());
        }
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn a_table_prints_its_columns_by_priority_with_the_namespace_first_for_all() {
        let t = json!({
            "columnDefinitions": [
                {"name": "Name", "priority": 0}, {"name": "Ready", "priority": 0},
                {"name": "IP", "priority": 1}, {"name": "Last Seen", "priority": 0},
            ],
            "rows": [{"cells": ["web-1", "1/1", "10.244.1.2", 3],
                      "object": {"metadata": {"namespace": "shop"}}}],
        });
        assert_eq!(
            super::table_rows(&t, false, false),
            [["NAME", "READY", "LAST SEEN"], ["web-1", "1/1", "3"]]
        );
        assert_eq!(
            super::table_rows(&t, true, true)[1],
            ["shop", "web-1", "1/1", "10.244.1.2", "3"]
        );
    }
}

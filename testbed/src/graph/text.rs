//! The picture as Mermaid (`flowchart`) or Graphviz (`digraph`) text, for READMEs,
//! wikis and `dot -Tpng`: a subgraph per node with its pods, the Services, and an
//! edge from each Service to each endpoint (dashed when not ready).

use super::Picture;

/// An identifier both languages take: letters, digits and `_`.
fn id(prefix: &str, key: &str) -> String {
    let body: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}_{body}")
}

/// A label with quotes made safe.
fn label(s: &str) -> String {
    s.replace('"', "'")
}

pub fn mermaid(p: &Picture) -> String {
    let mut out = String::from("flowchart TB\n");
    for s in &p.services {
        let dns = if s.dns { " (cluster DNS)" } else { "" };
        out += &format!(
            "  {}([\"{}{dns}<br/>{}\"])\n",
            id("svc", &s.key),
            label(&s.key),
            label(&s.detail)
        );
    }
    for n in &p.nodes {
        out += &format!(
            "  subgraph {}[\"{} {}\"]\n",
            id("node", &n.name),
            label(&n.name),
            label(&n.detail)
        );
        for pod in &n.pods {
            let state = if pod.ready { "ready" } else { "not ready" };
            out += &format!(
                "    {}[\"{}<br/>{} · {state}\"]\n",
                id("pod", &pod.key),
                label(&pod.key),
                pod.ip
            );
        }
        out += "  end\n";
    }
    for s in &p.services {
        for (pod, ready) in &s.endpoints {
            let arrow = if *ready { "-->" } else { "-.->" };
            out += &format!("  {} {arrow} {}\n", id("svc", &s.key), id("pod", pod));
        }
    }
    out
}

pub fn dot(p: &Picture) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\"];\n",
        label(&p.title)
    );
    for s in &p.services {
        let dns = if s.dns { " (cluster DNS)" } else { "" };
        out += &format!(
            "  {} [label=\"{}{dns}\\n{}\", shape=ellipse];\n",
            id("svc", &s.key),
            label(&s.key),
            label(&s.detail)
        );
    }
    for n in &p.nodes {
        out += &format!(
            "  subgraph cluster_{} {{\n    label=\"{}\\n{}\";\n",
            id("node", &n.name),
            label(&n.name),
            label(&n.detail)
        );
        for pod in &n.pods {
            let state = if pod.ready { "ready" } else { "not ready" };
            out += &format!(
                "    {} [label=\"{}\\n{} · {state}\"];\n",
                id("pod", &pod.key),
                label(&pod.key),
                pod.ip
            );
        }
        out += "  }\n";
    }
    for s in &p.services {
        for (pod, ready) in &s.endpoints {
            let style = if *ready { "" } else { " [style=dashed]" };
            out += &format!("  {} -> {}{style};\n", id("svc", &s.key), id("pod", pod));
        }
    }
    out + "}\n"
}

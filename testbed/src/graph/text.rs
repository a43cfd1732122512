//! The picture as Mermaid (`flowchart`) or Graphviz (`digraph`) text, for READMEs,
//! wikis and `dot -Tpng`: a subgraph per node with its pods, the Services, and an
//! edge from each Service to each endpoint (dashed when not ready). One walk over
//! the picture; each language is the few lines a [`Syntax`] says.

use super::Picture;

/// How a language writes each part: `(id, label, detail)` of a Service or a pod,
/// `(id, label)` of a node, `(from, to, ready)` of an edge.
struct Syntax {
    head: fn(&Picture) -> String,
    service: fn(&str, &str, &str) -> String,
    open_node: fn(&str, &str) -> String,
    pod: fn(&str, &str, &str) -> String,
    close_node: &'static str,
    edge: fn(&str, &str, bool) -> String,
    tail: &'static str,
}

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

fn walk(p: &Picture, s: &Syntax) -> String {
    let mut out = (s.head)(p);
    for svc in &p.services {
        let dns = if svc.dns { " (cluster DNS)" } else { "" };
        let name = format!("{}{dns}", label(&svc.key));
        out += &(s.service)(&id("svc", &svc.key), &name, &label(&svc.detail));
    }
    for n in &p.nodes {
        let title = format!("{} {}", label(&n.name), label(&n.detail));
        out += &(s.open_node)(&id("node", &n.name), &title);
        for pod in &n.pods {
            let state = if pod.ready { "ready" } else { "not ready" };
            let detail = format!("{} · {state}", pod.ip);
            out += &(s.pod)(&id("pod", &pod.key), &label(&pod.key), &detail);
        }
        out += s.close_node;
    }
    for svc in &p.services {
        for (pod, ready) in &svc.endpoints {
            out += &(s.edge)(&id("svc", &svc.key), &id("pod", pod), *ready);
        }
    }
    out + s.tail
}

pub fn mermaid(p: &Picture) -> String {
    walk(
        p,
        &Syntax {
            head: |_| "flowchart TB\n".into(),
            service: |id, name, detail| format!("  {id}([\"{name}<br/>{detail}\"])\n"),
            open_node: |id, title| format!("  subgraph {id}[\"{title}\"]\n"),
            pod: |id, name, detail| format!("    {id}[\"{name}<br/>{detail}\"]\n"),
            close_node: "  end\n",
            edge: |from, to, ready| {
                let arrow = if ready { "-->" } else { "-.->" };
                format!("  {from} {arrow} {to}\n")
            },
            tail: "",
        },
    )
}

pub fn dot(p: &Picture) -> String {
    walk(
        p,
        &Syntax {
            head: |p| {
                format!(
                    "digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"Helvetica\"];\n",
                    label(&p.title)
                )
            },
            service: |id, name, detail| {
                format!("  {id} [label=\"{name}\\n{detail}\", shape=ellipse];\n")
            },
            open_node: |id, title| format!("  subgraph cluster_{id} {{\n    label=\"{title}\";\n"),
            pod: |id, name, detail| format!("    {id} [label=\"{name}\\n{detail}\"];\n"),
            close_node: "  }\n",
            edge: |from, to, ready| {
                let style = if ready { "" } else { " [style=dashed]" };
                format!("  {from} -> {to}{style};\n")
            },
            tail: "}\n",
        },
    )
}

//! The layer check: the crate's top-level modules must import one another without a
//! cycle, so the folder tree reads as the architecture (the lower layers, `yaml` and
//! `api`, never depend on the scenario format, the runner or the CLI).
//!
//! It reads `src/` as text: every `crate::module` path (including `use crate::{a, b}`
//! groups) in non-test code is an edge from the file's top-level module to `module`.
//! Test code (`tests.rs` files and everything after a `#[cfg(test)]`) is left out, as
//! tests may reach across layers. It needs no root and runs in `.ci/run` with the rest.
//!
//! `TESTBED_LAYERS_SRC=DIR` points it at another source tree (to show that it fails
//! on a back-edge added on purpose without touching this one).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// The layers, lowest first. A module may import modules of its own layer or below;
/// an import upward is a back-edge. A new top-level module must be placed here.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &["names", "limits", "input", "yaml", "tools", "errors"],
    ),
    ("kernel and the API's core", &["netns", "kernel", "api"]),
    ("the controller runtime", &["informer"]),
    (
        "the API's consumers",
        &["controllers", "dns", "proxy", "probe", "manifest"],
    ),
    ("the address plan", &["plan"]),
    ("tracing and pictures of a cluster", &["trace", "graph"]),
    ("the machine", &["state", "topology", "clean", "impair"]),
    (
        "pods and the scenario format",
        &["kubelet", "exec", "scenario"],
    ),
    ("the Kubernetes REST API", &["rest"]),
    ("the cluster", &["lifecycle", "control", "cluster"]),
    ("the runner", &["run"]),
    ("the command line", &["cli"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

#[test]
fn the_modules_import_one_another_without_a_cycle() {
    let src = src_dir();
    let graph = graph(&src);
    assert!(
        graph.len() > 10,
        "read only {} modules under {}",
        graph.len(),
        src.display()
    );
    let cycles: Vec<_> = components(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    let mut report = String::new();
    for cycle in &cycles {
        report += &format!("a cycle among {}:\n", cycle.join(", "));
        for from in cycle {
            for (to, places) in &graph[from] {
                if cycle.contains(to) {
                    report += &format!("  {from} -> {to}  ({})\n", places.join(", "));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "{report}");
}

#[test]
fn every_import_goes_down_the_layers() {
    let src = src_dir();
    let mut report = String::new();
    for (from, edges) in graph(&src) {
        let Some(at) = layer_of(&from) else {
            report += &format!(
                "module `{from}` is in no layer: add it to LAYERS in {}\n",
                file!()
            );
            continue;
        };
        for (to, places) in edges {
            match layer_of(&to) {
                Some(l) if l > at => {
                    report += &format!(
                        "{from} ({}) imports {to} ({}), a layer above it: {}\n",
                        LAYERS[at].0,
                        LAYERS[l].0,
                        places.join(", ")
                    )
                }
                _ => {}
            }
        }
    }
    assert!(report.is_empty(), "{report}");
}

#[test]
fn the_reader_sees_grouped_and_nested_imports() {
    let text = "#[cfg(test)]\nmod tests;\n\
                use crate::{api::{Kind, Object}, dns::records,\n plan};\n\
                #[cfg(test)]\nuse crate::run;\n\
                // crate::ignored in a comment\n\
                fn f() { crate::state::dir(\"x\"); }\n\
                #[cfg(test)]\nmod tests { use crate::cli; }\n";
    let found: BTreeSet<_> = references(text).into_iter().map(|(m, _)| m).collect();
    let want: BTreeSet<_> = ["api", "dns", "plan", "state"]
        .map(String::from)
        .into_iter()
        .collect();
    assert_eq!(found, want);
}

#[test]
fn a_back_edge_makes_a_cycle_and_the_check_names_it() {
    let mut graph = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), vec![format!("{a}.rs:1")]);
        g.entry(b.into()).or_default();
    };
    edge(&mut graph, "cli", "runner");
    edge(&mut graph, "runner", "api");
    edge(&mut graph, "scenario", "api");
    assert!(components(&graph).iter().all(|c| c.len() == 1));
    edge(&mut graph, "api", "runner");
    let cyclic: Vec<_> = components(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    assert_eq!(cyclic, vec![vec!["api".to_string(), "runner".to_string()]]);
}

fn src_dir() -> PathBuf {
    std::env::var_os("TESTBED_LAYERS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// Module -> (module it imports -> the places that import it, as `file:line`).
fn graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if matches!(module.as_str(), "lib" | "main") {
            continue;
        }
        let node = graph.entry(module.clone()).or_default();
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        for (to, line) in references(&text) {
            if to != module {
                node.entry(to)
                    .or_default()
                    .push(format!("{}:{line}", rel.display()));
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Every top-level module a `crate::` path in `text` names, with its line. Test code
/// is left out: an inline `#[cfg(test)] mod tests { .. }` ends the scan, and the one
/// line after any other `#[cfg(test)]` (`mod tests;`, a `use`) is skipped. Line
/// comments are skipped.
fn references(text: &str) -> Vec<(String, usize)> {
    let mut code = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            match lines.next() {
                Some(next) if next.trim_end().ends_with('{') => break,
                _ => code.push_str("\n\n"),
            }
            continue;
        }
        code += line.split("//").next().unwrap_or("");
        code.push('\n');
    }
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = &code[..code.len() - rest.len() + at];
        let line = before.matches('\n').count() + 1;
        let boundary = before
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        rest = &rest[at + "crate::".len()..];
        if !boundary {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            for name in group_heads(group) {
                out.push((name, line));
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.push((name, line));
            }
        }
    }
    out
}

/// The first path segment of each item of a `{a::b, c, d::{e}}` group (text after `{`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && (c.is_alphabetic() || c == '_') => {
                heads.push(ident(&group[i..]));
                start = false;
            }
            _ => {}
        }
    }
    heads.retain(|h| h != "self");
    heads
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Strongly connected components (Tarjan), each sorted, in a stable order.
fn components(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on_stack.insert(v);
        let graph = w.graph;
        for to in graph[v].keys().filter(|t| graph.contains_key(*t)) {
            let to = to.as_str();
            if !w.index.contains_key(to) {
                visit(w, to);
                let low = w.low[v].min(w.low[to]);
                w.low.insert(v, low);
            } else if w.on_stack.contains(to) {
                let low = w.low[v].min(w.index[to]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut component = Vec::new();
            while let Some(top) = w.stack.pop() {
                w.on_stack.remove(top);
                component.push(top.to_string());
                if top == v {
                    break;
                }
            }
            component.sort();
            w.out.push(component);
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            visit(&mut walk, v);
        }
    }
    walk.out.sort();
    walk.out
}

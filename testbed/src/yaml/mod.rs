//! YAML to JSON values, remembering where every value came from.
//!
//! serde's YAML crates drop positions once a document is parsed, but every error a
//! user sees must name the file and line. This loader (written here because no YAML
//! crate hands out a position per path) turns one YAML document into a
//! `serde_json::Value` plus a table from each path (`pods[1].metadata.name`) to the
//! line and column of its key and of its value.

mod located;

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

pub use located::{from_value, Located};

/// A position in a source file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// Where each path of a document starts.
#[derive(Debug, Default, Clone)]
pub struct Spans {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
}

impl Spans {
    /// The position of the value at `path`, else of its key, else of the nearest parent.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.values.get(&p).or_else(|| self.keys.get(&p)) {
                return Some(*pos);
            }
            p = parent(&p)?;
        }
    }

    /// The position of the value or key at exactly `path`, if the document has it.
    pub fn exact(&self, path: &str) -> Option<Pos> {
        self.values
            .get(path)
            .or_else(|| self.keys.get(path))
            .copied()
    }

    /// The position of the key that names `path` (falls back like [`Spans::find`]).
    pub fn key(&self, path: &str) -> Option<Pos> {
        self.keys.get(path).copied().or_else(|| self.find(path))
    }
}

fn parent(path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(path[..cut].to_string())
}

/// Joins a parent path and a map key the way error paths are written.
pub fn child_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

pub fn child_index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

enum Frame {
    Seq {
        path: String,
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        path: String,
        map: Map<String, Value>,
        pending_key: Option<(String, Pos)>,
        first_key: Option<Pos>,
        anchor: usize,
    },
}

/// Values that aliases may add to one stream, all aliases together: a "billion
/// laughs" file (aliases of aliases, each doubling the document) stops here. go-yaml,
/// which kubectl uses, refuses such files the same way.
pub const ALIAS_VALUES_MAX: usize = 100_000;
/// How deep lists and maps may nest (a Kubernetes object is a dozen levels deep).
pub const DEPTH_MAX: usize = 128;

/// The number of values in `v`, itself included.
fn count_values(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(count_values).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(count_values).sum::<usize>(),
        _ => 1,
    }
}

#[derive(Default)]
struct Receiver {
    stack: Vec<Frame>,
    docs: Vec<(Value, Spans)>,
    /// Each anchor's value and how many values it holds.
    anchors: HashMap<usize, (Value, usize)>,
    alias_values: usize,
    spans: Spans,
    error: Option<YamlError>,
}

impl Receiver {
    /// The path the next value will have, and whether it is a map key.
    fn next_path(&self) -> (String, bool) {
        match self.stack.last() {
            None => (String::new(), false),
            Some(Frame::Seq { path, items, .. }) => (child_index(path, items.len()), false),
            Some(Frame::Map {
                path, pending_key, ..
            }) => match pending_key {
                Some((k, _)) => (child_key(path, k), false),
                None => (path.clone(), true),
            },
        }
    }

    fn fail(&mut self, pos: Pos, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { pos, message });
        }
    }

    fn push_value(&mut self, value: Value, pos: Pos, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (value.clone(), 1));
        }
        let (path, is_key) = self.next_path();
        match self.stack.last_mut() {
            None => self.docs.push((value, std::mem::take(&mut self.spans))),
            Some(Frame::Seq { items, .. }) => {
                self.spans.values.insert(path, pos);
                items.push(value);
            }
            Some(Frame::Map {
                map,
                pending_key,
                first_key,
                ..
            }) => {
                if is_key {
                    first_key.get_or_insert(pos);
                    let key = match value {
                        Value::String(s) => s,
                        Value::Null => "null".to_string(),
                        other => other.to_string(),
                    };
                    if map.contains_key(&key) {
                        self.fail(pos, format!("duplicate key `{key}`"));
                        return;
                    }
                    *pending_key = Some((key, pos));
                } else {
                    let (key, key_pos) = pending_key.take().expect("value follows a key");
                    self.spans.keys.insert(path.clone(), key_pos);
                    self.spans.values.insert(path, pos);
                    map.insert(key, value);
                }
            }
        }
    }
}

impl MarkedEventReceiver for Receiver {
    // Long because it is the YAML event state machine, one arm per event, as the parser
    // sends them.
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::from(mark);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let value = scalar(&text, style, tag.as_ref());
                self.push_value(value, pos, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let (path, is_key) = self.next_path();
                if is_key {
                    return self.fail(pos, "a list cannot be a map key".into());
                }
                if self.stack.len() >= DEPTH_MAX {
                    return self.fail(
                        pos,
                        format!("lists and maps nest more than {DEPTH_MAX} deep"),
                    );
                }
                self.stack.push(Frame::Seq {
                    path,
                    items: Vec::new(),
                    anchor,
                });
                self.spans.values.insert(self.next_path_of_top(), pos);
            }
            Event::MappingStart(anchor, _) => {
                let (path, is_key) = self.next_path();
                if is_key {
                    return self.fail(pos, "a map cannot be a map key".into());
                }
                if self.stack.len() >= DEPTH_MAX {
                    return self.fail(
                        pos,
                        format!("lists and maps nest more than {DEPTH_MAX} deep"),
                    );
                }
                self.stack.push(Frame::Map {
                    path,
                    map: Map::new(),
                    pending_key: None,
                    first_key: None,
                    anchor,
                });
                self.spans.values.insert(self.next_path_of_top(), pos);
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { items, anchor, .. }) = self.stack.pop() {
                    self.finish(Value::Array(items), anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map {
                    path,
                    map,
                    anchor,
                    first_key,
                    ..
                }) = self.stack.pop()
                {
                    // A block map's start event is marked after its first key; the
                    // first key is where a reader sees the map begin.
                    if let Some(pos) = first_key {
                        self.spans.values.insert(path, pos);
                    }
                    self.finish(Value::Object(map), anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((v, n)) => {
                    self.alias_values += n;
                    if self.alias_values > ALIAS_VALUES_MAX {
                        return self.fail(
                            pos,
                            format!(
                                "aliases expand to more than {ALIAS_VALUES_MAX} values: \
                                 too much aliasing (a \"billion laughs\" file?)"
                            ),
                        );
                    }
                    let v = v.clone();
                    self.push_value(v, pos, 0)
                }
                None => self.fail(pos, "alias to an unknown anchor".into()),
            },
            _ => {}
        }
    }
}

impl Receiver {
    fn next_path_of_top(&self) -> String {
        match self.stack.last() {
            Some(Frame::Seq { path, .. }) | Some(Frame::Map { path, .. }) => path.clone(),
            None => String::new(),
        }
    }

    /// Attaches a finished collection to its parent; its position was recorded at its start.
    fn finish(&mut self, value: Value, anchor: usize) {
        if anchor > 0 {
            let n = count_values(&value);
            self.anchors.insert(anchor, (value.clone(), n));
        }
        let (path, _) = self.next_path();
        match self.stack.last_mut() {
            None => self.docs.push((value, std::mem::take(&mut self.spans))),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map {
                map, pending_key, ..
            }) => {
                let (key, key_pos) = pending_key.take().expect("value follows a key");
                self.spans.keys.insert(path, key_pos);
                map.insert(key, value);
            }
        }
    }
}

/// Resolves a scalar by the YAML 1.2 core schema (quoted scalars stay strings).
fn scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag {
        if tag.suffix == "str" {
            return Value::String(text.to_string());
        }
    }
    if style != TScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    match Yaml::from_str(text) {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(r) => match r.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Value::Number(n),
            None => Value::String(text.to_string()),
        },
        _ => Value::String(text.to_string()),
    }
}

/// Parses exactly one YAML document.
pub fn load(source: &str) -> Result<(Value, Spans), YamlError> {
    let docs = load_all(source)?;
    match docs.len() {
        1 => Ok(docs.into_iter().next().expect("one document")),
        0 => Err(YamlError {
            pos: Pos { line: 1, col: 1 },
            message: "the file is empty: expected one YAML document".into(),
        }),
        n => Err(YamlError {
            pos: Pos { line: 1, col: 1 },
            message: format!("expected one YAML document, found {n}"),
        }),
    }
}

/// Parses every document of a YAML stream (`---` separated), each with its own spans.
pub fn load_all(source: &str) -> Result<Vec<(Value, Spans)>, YamlError> {
    let mut parser = Parser::new_from_str(source);
    let mut recv = Receiver::default();
    let parsed = parser.load(&mut recv, true);
    // Our own refusal (aliasing, depth) comes first: the parser may fail later on.
    if let Some(err) = recv.error {
        return Err(err);
    }
    parsed.map_err(|e| YamlError {
        pos: Pos::from(*e.marker()),
        message: e.info().to_string(),
    })?;
    Ok(recv.docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_bomb_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let start = std::time::Instant::now();
        let e = load(&bomb).unwrap_err();
        assert!(e.message.contains("too much aliasing"), "{e:?}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        // A few aliases are fine.
        let (v, _) = load("a: &x {k: v}\nb: *x\nc: *x\n").unwrap();
        assert_eq!(v["c"]["k"], "v");
        // Flow collections hit the parser's own limit; block ones ours.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = load(&deep).unwrap_err();
        assert!(e.message.contains("recursion limit"), "{e:?}");
        let block: String = (0..200)
            .map(|i| format!("{}a:\n", "  ".repeat(i)))
            .collect();
        let e = load(&format!("{block}{}x\n", "  ".repeat(200))).unwrap_err();
        assert!(e.message.contains("nest more than 128 deep"), "{e:?}");
    }

    #[test]
    fn values_and_positions() {
        let src = "name: a\ncluster:\n  nodes: 2\npods:\n  - metadata:\n      name: x\n  - 'y'\n";
        let (v, spans) = load(src).unwrap();
        assert_eq!(v["cluster"]["nodes"], 2);
        assert_eq!(v["pods"][1], "y");
        assert_eq!(spans.find("cluster.nodes"), Some(Pos { line: 3, col: 10 }));
        assert_eq!(spans.key("cluster.nodes"), Some(Pos { line: 3, col: 3 }));
        assert_eq!(
            spans.find("pods[0].metadata.name"),
            Some(Pos { line: 6, col: 13 })
        );
        assert_eq!(spans.find("pods[1]"), Some(Pos { line: 7, col: 5 }));
        // an unknown path falls back to its nearest known parent
        assert_eq!(
            spans.find("pods[0].metadata.nope"),
            spans.find("pods[0].metadata")
        );
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let (v, _) = load("a: yes\nb: true\nc: '1'\nd: 1.5\ne: ~\nf: 0x10\n").unwrap();
        assert_eq!(v["a"], "yes");
        assert_eq!(v["b"], true);
        assert_eq!(v["c"], "1");
        assert_eq!(v["d"], 1.5);
        assert_eq!(v["e"], Value::Null);
        assert_eq!(v["f"], 16);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = load("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("duplicate key `a`"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = load("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
    }

    #[test]
    fn anchors_and_aliases() {
        let (v, _) = load("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(v["other"]["x"], 1);
    }

    #[test]
    fn each_document_has_its_own_positions() {
        let docs = load_all("a: 1\n---\nb:\n  c: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].1.find("a"), Some(Pos { line: 1, col: 4 }));
        assert_eq!(docs[1].1.find("b.c"), Some(Pos { line: 4, col: 6 }));
        assert_eq!(docs[1].1.exact("a"), None);
    }

    #[test]
    fn empty_and_multiple_documents() {
        assert!(load("").unwrap_err().message.contains("empty"));
        assert!(load("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .message
            .contains("found 2"));
    }
}

//! The steps of a scenario. Each kind of step (`apply`, `wait`, `connect`, ...) is one
//! file here: the shape it is written in (which is also the JSON Schema editors
//! see), how it is checked, told in a few words, and run against a cluster through
//! [`Context`]. The [`registry!`] line below lists them; a new kind of step is a new
//! file and its name in that line. This module checks a step as a whole (one action,
//! a name, what it expects), each problem at its line.

mod context;
pub mod expect;
mod probes;
pub mod views;

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use super::{from_value, Located};
use crate::api::server::Api;
use crate::yaml::{child_key, Pos, Spans};

pub use connect::Connect;
pub use context::{Background, Context, Seen, StepMark};
pub use dns::DnsQuery;
pub use expect::{Expect, Mismatch};
pub use probes::{next_revision, pod};

/// Declares the kinds of step, in the order the schema and the messages list them.
macro_rules! registry {
    ($($kind:ident),* $(,)?) => {
        $(pub mod $kind;)*
        /// Every kind of step.
        pub const KINDS: &[StepKind] = &[$($kind::KIND),*];
    };
}

registry!(
    apply, delete, scale, wait, dns, connect, exec, snapshot, kill, readiness, node, link, flush,
    trace, fault, heal, traffic, stop, sleep
);

/// One kind of step: its key, its shape, and how a value of that shape becomes an action.
pub struct StepKind {
    /// The step's key: `connect`.
    pub key: &'static str,
    /// What it does, for the schema.
    pub about: &'static str,
    /// The schema of its value ([`schema_of`] its file type).
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// The keys of `expect` it takes.
    pub expects: &'static [&'static str],
    /// Checks its value: the action, or `None` with the problems told to `cx`.
    pub parse: fn(&mut Ctx, &At, Value) -> Option<Box<dyn Action>>,
}

/// The schema of a step's value of type `T`.
pub fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<Option<T>>()
}

/// Where the value being checked is.
pub struct At<'a> {
    /// `steps[3].connect`.
    pub path: &'a str,
    /// The step's index (0-based).
    pub index: usize,
    /// The step's `name`.
    pub name: Option<&'a str>,
}

impl At<'_> {
    /// The path of `key` in the value: `steps[3].connect.port`.
    pub fn key(&self, key: &str) -> String {
        child_key(self.path, key)
    }
}

/// A checked step's action: what it is called, what it acts on, and how it runs.
#[async_trait::async_trait(?Send)]
pub trait Action: fmt::Debug + Send + Sync {
    /// The action in a few words: `connect client -> web:80/TCP x10`.
    fn title(&self) -> String;

    /// Whether it looks at the cluster (asks DNS, connects, runs a command, takes a
    /// view): it then starts once the DNS and every node's rules have caught up
    /// with every change before it.
    fn probes(&self) -> bool {
        false
    }

    /// The pods and nodes it acts on or from, each with what it calls them (`pod`,
    /// `node`), checked before the cluster is built.
    fn targets(&self) -> Vec<(&'static str, &str)> {
        Vec::new()
    }

    /// Its API request, made against a scratch API server before the cluster is
    /// built; a problem with the request itself is placed at the step by `here`.
    fn dry_run(&self, _api: &Api, _here: &dyn Fn(String) -> Located) -> Vec<Located> {
        Vec::new()
    }

    /// The name of the snapshot it takes.
    fn snapshot_name(&self) -> Option<&str> {
        None
    }

    /// Runs it: what it saw (the expectations in `expect` already compared), or why
    /// it could not do what it says.
    async fn run(&self, cx: &mut dyn Context, expect: &Expect) -> Result<Seen, String>;
}

/// One step as written: exactly one action key (`apply`, `delete`, `scale`, `wait`,
/// `dns`, `connect`, `exec`, `snapshot`, `kill`, `readiness`, `node`, `link`), with an
/// optional `name` and, for `dns`, `connect` and `exec`, an optional `expect`. Its
/// schema is made from [`KINDS`].
pub struct StepFile;

impl JsonSchema for StepFile {
    fn schema_name() -> Cow<'static, str> {
        "StepFile".into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let described = |mut s: Schema, about: &str| {
            s.insert("description".into(), about.into());
            s
        };
        let mut properties = serde_json::Map::new();
        properties.insert(
            "name".into(),
            described(
                schema_of::<String>(g),
                "Names the step in reports, and its snapshot (`snapshots/<scenario>@<name>.snap`).",
            )
            .into(),
        );
        for k in KINDS {
            properties.insert(k.key.into(), described((k.schema)(g), k.about).into());
        }
        properties.insert(
            "immediately".into(),
            described(
                schema_of::<bool>(g),
                "A probing step starts at once, without waiting for the DNS and the nodes' rules to catch up.",
            )
            .into(),
        );
        properties.insert(
            "expect".into(),
            described(schema_of::<Expect>(g), "What the step must see.").into(),
        );
        json_schema!({
            "description": "One step as written. Exactly one action key (`apply`, `delete`, `scale`, `wait`,\n`dns`, `connect`, `exec`, `snapshot`, `kill`, `readiness`, `node`, `link`), with an\noptional `name` and, for `dns`, `connect` and `exec`, an optional `expect`.",
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        })
    }
}

/// The keys a step may have: `name`, every kind's, `expect`.
fn step_keys() -> Vec<&'static str> {
    let mut keys = vec!["name", "immediately"];
    keys.extend(KINDS.iter().map(|k| k.key));
    keys.push("expect");
    keys
}

/// A step's keys and values, with an unknown key refused as serde would refuse a
/// field (so the message and its position read the same as everywhere else).
struct Fields(serde_json::Map<String, Value>);

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("struct StepFile")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields, A::Error> {
                let keys = step_keys();
                let mut out = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !keys.contains(&key.as_str()) {
                        let known: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
                        return Err(serde::de::Error::custom(format!(
                            "unknown field `{key}`, expected one of {}",
                            known.join(", ")
                        )));
                    }
                    let value: Value = map.next_value()?;
                    // `key: null` is as if the key were not there.
                    if !value.is_null() {
                        out.insert(key, value);
                    }
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A checked step.
#[derive(Debug, Clone)]
pub struct Step {
    /// 0-based.
    pub index: usize,
    pub pos: Option<Pos>,
    pub name: Option<String>,
    pub action: Arc<dyn Action>,
    pub expect: Expect,
    /// A probing step that starts at once, without waiting for the DNS and the
    /// nodes' rules to catch up: to see the propagation delay itself.
    pub immediately: bool,
}

impl Step {
    pub fn snapshot_name(&self) -> Option<&str> {
        self.action.snapshot_name()
    }
}

/// `30s`, `500ms`, `2m`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{text:?} is not a duration like 30s, 500ms or 2m")),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{text:?} is out of range (at most an hour)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `web` → (`default`, `web`); `kube-system/kube-dns` → (`kube-system`, `kube-dns`).
pub fn ns_name(text: &str) -> (String, String) {
    match text.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => ("default".to_string(), text.to_string()),
    }
}

/// What checking the steps needs, and the problems found so far.
pub struct Ctx<'a> {
    spans: &'a Arc<Spans>,
    /// The scenario's directory, for manifest files named relative to it.
    dir: &'a Path,
    problems: Vec<Located>,
    /// The faults declared so far, by id, and whether a `heal` undid them.
    faults: Vec<(Arc<fault::Declared>, bool)>,
    /// The traffic steps so far, and whether a `stop` ended them.
    traffics: Vec<(traffic::Declared, bool)>,
}

impl Ctx<'_> {
    /// A problem with the value at `path`.
    pub fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Located {
            file: None,
            pos: self.spans.find(path),
            message: format!("{path}: {}", message.into()),
        });
    }

    /// `value` (at `path`) as a `T`, or `None` with the problem told.
    pub fn value<T: serde::de::DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match from_value(value, self.spans, path) {
            Ok(v) => Some(v),
            Err(p) => {
                self.problems.push(p);
                None
            }
        }
    }

    pub fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        match text.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.fail(path, e);
                default
            }
        }
    }

    /// `TCP` (false, the default) or `UDP` (true).
    pub fn protocol(&mut self, path: &str, text: Option<&str>) -> bool {
        match text.map(str::to_ascii_uppercase).as_deref() {
            None | Some("TCP") => false,
            Some("UDP") => true,
            Some(other) => {
                self.fail(path, format!("{other:?} is not TCP or UDP"));
                false
            }
        }
    }

    pub fn rtype(&mut self, path: &str, text: Option<&str>) -> hickory_proto::rr::RecordType {
        use hickory_proto::rr::RecordType;
        let t = text.unwrap_or("A").to_ascii_uppercase();
        match t.parse::<RecordType>() {
            Ok(r) if !matches!(r, RecordType::Unknown(_)) => r,
            _ => {
                self.fail(
                    path,
                    format!("{t:?} is not a DNS record type like A, SRV or PTR"),
                );
                RecordType::A
            }
        }
    }

    /// Declares a fault step's fault: refused when its id is taken, or when it would
    /// put a second qdisc on a link that has one in force.
    pub(super) fn declare_fault(&mut self, d: Arc<fault::Declared>) -> Result<(), String> {
        use crate::impair::{Effect, Scope};
        let shapes = |f: &crate::impair::Fault| !matches!(f.effect, Effect::Loss(_));
        for (other, healed) in &self.faults {
            if other.fault.id == d.fault.id {
                return Err(format!("a fault named {:?} is declared before", d.fault.id));
            }
            let same_link = matches!((&other.fault.scope, &d.fault.scope), (Scope::Link(a), Scope::Link(b)) if a == b);
            if !healed && same_link && shapes(&other.fault) && shapes(&d.fault) {
                return Err(format!(
                    "fault {:?} already shapes this link ({}); heal it first",
                    other.fault.id,
                    other.fault.describe()
                ));
            }
        }
        self.faults.push((d, false));
        Ok(())
    }

    /// The fault a `heal` step names, now healed.
    pub(super) fn heal_fault(&mut self, id: &str) -> Result<Arc<fault::Declared>, String> {
        let names = ["fault", "healed", "faults"];
        end_named(&mut self.faults, id, |d| &d.fault.id, names)
    }

    pub(super) fn declare_traffic(&mut self, d: traffic::Declared) {
        self.traffics.push((d, false));
    }

    /// The traffic a `stop` step names, now stopped.
    pub(super) fn stop_traffic(&mut self, id: &str) -> Result<traffic::Declared, String> {
        let names = ["traffic", "stopped", "traffic"];
        end_named(&mut self.traffics, id, |d| &d.id, names)
    }

    /// `up` (true) or `down`.
    pub fn state(&mut self, path: &str, text: &str) -> bool {
        match text {
            "up" => true,
            "down" => false,
            other => {
                self.fail(path, format!("{other:?} is not up or down"));
                true
            }
        }
    }
}

/// Checks the steps at `steps` of a scenario in `dir` (for relative manifest files).
pub(super) fn steps_from(
    raw: Vec<Value>,
    spans: &Arc<Spans>,
    dir: &Path,
) -> Result<Vec<Step>, Vec<Located>> {
    let mut cx = Ctx {
        spans,
        dir,
        problems: Vec::new(),
        faults: Vec::new(),
        traffics: Vec::new(),
    };
    let mut out = Vec::new();
    let mut names = std::collections::HashMap::new();
    for (i, value) in raw.into_iter().enumerate() {
        let path = format!("steps[{i}]");
        let Some(Fields(fields)) = cx.value(value, &path) else {
            continue;
        };
        if let Some(step) = step_from(&mut cx, i, &path, fields) {
            if let Some(name) = step.snapshot_name() {
                if let Some(first) = names.insert(name.to_string(), i) {
                    cx.fail(
                        &path,
                        format!("the snapshot name {name:?} is taken by step {}", first + 1),
                    );
                }
            }
            out.push(step);
        }
    }
    let unstopped: Vec<String> = cx
        .traffics
        .iter()
        .filter(|(_, stopped)| !stopped)
        .map(|(t, _)| t.id.clone())
        .collect();
    for id in unstopped {
        cx.fail(
            "steps",
            format!("traffic {id:?} is never stopped: add a step `stop: {id}` to report it"),
        );
    }
    if cx.problems.is_empty() {
        Ok(out)
    } else {
        Err(cx.problems)
    }
}

fn step_from(
    cx: &mut Ctx,
    index: usize,
    path: &str,
    mut fields: serde_json::Map<String, Value>,
) -> Option<Step> {
    let at = |key: &str| child_key(path, key);
    let name: Option<String> = match fields.remove("name") {
        Some(v) => Some(cx.value(v, &at("name"))?),
        None => None,
    };
    let immediately: bool = match fields.remove("immediately") {
        Some(v) => cx.value(v, &at("immediately"))?,
        None => false,
    };
    let expect_file: Option<Expect> = match fields.remove("expect") {
        Some(v) => Some(cx.value(v, &at("expect"))?),
        None => None,
    };
    let mut present: Vec<(&StepKind, Value)> = KINDS
        .iter()
        .filter_map(|k| fields.remove(k.key).map(|v| (k, v)))
        .collect();
    match present.len() {
        0 => {
            let all: Vec<&str> = KINDS.iter().map(|k| k.key).collect();
            cx.fail(path, format!("a step needs one action: {}", all.join(", ")));
            return None;
        }
        1 => {}
        _ => {
            let keys: Vec<&str> = present.iter().map(|(k, _)| k.key).collect();
            cx.fail(
                path,
                format!(
                    "a step has one action, this one has {}; make them separate steps",
                    keys.join(", ")
                ),
            );
            return None;
        }
    }
    let (kind, value) = present.pop().expect("one action");
    if let Some(name) = &name {
        if let Err(why) = crate::names::check_dns1123_label(name, 63) {
            cx.fail(&at("name"), format!("step name {name:?} {why}"));
        }
    }
    let before = cx.problems.len();
    let action = (kind.parse)(
        cx,
        &At {
            path: &at(kind.key),
            index,
            name: name.as_deref(),
        },
        value,
    )?;
    let expect = expect::check(cx, path, kind, expect_file);
    if cx.problems.len() > before {
        return None;
    }
    Some(Step {
        index,
        pos: cx.spans.find(path),
        name,
        action: Arc::from(action),
        expect,
        immediately,
    })
}

/// The latest of `list` named `id`, marked ended: what a `heal` or a `stop` step
/// names. `[kind, ended, list]` word the errors: a second end, an unknown name
/// (with the names there are).
fn end_named<T: Clone>(
    list: &mut [(T, bool)],
    id: &str,
    name: impl Fn(&T) -> &str,
    [kind, ended, listed]: [&str; 3],
) -> Result<T, String> {
    let known: Vec<String> = list.iter().map(|(d, _)| name(d).to_string()).collect();
    match list.iter_mut().rev().find(|(d, _)| name(d) == id) {
        Some((_, true)) => Err(format!("{kind} {id:?} is {ended} by an earlier step")),
        Some((d, done)) => {
            *done = true;
            Ok(d.clone())
        }
        None => Err(format!(
            "no {kind} step before this one is named {id:?} ({listed}: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )),
    }
}

#[cfg(test)]
mod tests;

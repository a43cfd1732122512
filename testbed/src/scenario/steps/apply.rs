//! `apply`: create or update objects through the API server, as `kubectl apply`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};
use crate::api::server::{Api, ObjectProblem};
use crate::api::{Kind, Object};
use crate::scenario::objects::{self, Manifest};
use crate::scenario::Located;

pub const KIND: StepKind = StepKind {
    key: "apply",
    about: "Create or update objects: a file of manifests beside the scenario, or manifests inline.",
    schema: schema_of::<ManifestsFile>,
    expects: &[],
    parse,
};

/// Manifests: a file path (relative to the scenario), `{file: PATH}`, one manifest, or a list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ManifestsFile {
    /// A file of manifests beside the scenario (several YAML documents allowed).
    File(String),
    /// Manifests written inline (or `{file: PATH}` entries).
    List(Vec<Value>),
    /// One manifest written inline, or `{file: PATH}`.
    One(serde_json::Map<String, Value>),
}

#[derive(Debug)]
struct Apply(Vec<Manifest>);

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let m: ManifestsFile = cx.value(value, at.path)?;
    let entries: Vec<(Value, String)> = match m {
        ManifestsFile::File(f) => vec![(Value::String(f), at.path.to_string())],
        ManifestsFile::One(map) => vec![(Value::Object(map), at.path.to_string())],
        ManifestsFile::List(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v, format!("{}[{i}]", at.path)))
            .collect(),
    };
    let mut out = Vec::new();
    for (value, path) in entries {
        match objects::entry(value, cx.spans, &path, cx.dir) {
            Ok(mut ms) => out.append(&mut ms),
            Err(mut p) => cx.problems.append(&mut p),
        }
    }
    Some(Box::new(Apply(out)))
}

#[async_trait::async_trait(?Send)]
impl Action for Apply {
    fn title(&self) -> String {
        let mut files: Vec<String> = self
            .0
            .iter()
            .filter_map(|m| m.file.as_ref().map(|f| f.display().to_string()))
            .collect();
        files.dedup();
        let inline = self.0.iter().filter(|m| m.file.is_none()).count();
        let mut parts = files;
        if inline > 0 {
            parts.push(format!(
                "{inline} inline manifest{}",
                if inline == 1 { "" } else { "s" }
            ));
        }
        format!("apply {}", parts.join(" + "))
    }

    fn dry_run(&self, api: &Api, _here: &dyn Fn(String) -> Located) -> Vec<Located> {
        dry_run(api, &self.0)
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        Ok(Seen {
            lines: objects::apply(cx.api(), cx.file(), &self.0)?,
            ..Default::default()
        })
    }
}

/// Applies `manifests` to `api` (a scratch one): admission's problems, each at its
/// manifest's line.
pub fn dry_run(api: &Api, manifests: &[Manifest]) -> Vec<Located> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for m in manifests {
        let kind = m
            .value
            .get("kind")
            .and_then(|k| k.as_str())
            .and_then(Kind::parse);
        match kind.map(|k| Object::from_value(k, m.value.clone())) {
            Some(Ok(o)) => objects.push(o),
            Some(Err(e)) => problems.push(m.problem("", e)),
            None => problems.push(m.problem("kind", "not a kind the testbed serves".into())),
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    match api.apply(objects) {
        Ok(_) => Vec::new(),
        Err(ps) => ps
            .iter()
            .map(
                |p: &ObjectProblem| match p.index.and_then(|i| manifests.get(i)) {
                    Some(m) => m.problem(&p.path, p.to_string()),
                    None => Located {
                        file: None,
                        pos: None,
                        message: p.to_string(),
                    },
                },
            )
            .collect(),
    }
}

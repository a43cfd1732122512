//! Kubernetes manifests a scenario applies: written inline, or in files beside it
//! (`manifests/web.yaml`, several documents allowed), each remembered with the file
//! and line it came from so that admission's complaints point there too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::Located;
use crate::api::server::{Action, Api};
use crate::api::{Kind, Object};
use crate::yaml::{self, child_key, Pos, Spans};

/// One manifest and where it was written.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub value: Value,
    /// The manifest's file, or `None` for the scenario itself.
    pub file: Option<PathBuf>,
    spans: Arc<Spans>,
    /// The manifest's path within its document (`steps[2].apply[0]`, or empty).
    base: String,
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value && self.file == other.file && self.base == other.base
    }
}

impl Manifest {
    /// Where field `path` of the manifest (`spec.ports[0].port`, empty for the whole)
    /// was written.
    pub fn pos(&self, path: &str) -> Option<Pos> {
        let full = if path.is_empty() {
            self.base.clone()
        } else {
            child_key(&self.base, path)
        };
        self.spans.find(&full)
    }

    /// A problem with field `path` of this manifest.
    pub fn problem(&self, path: &str, message: String) -> Located {
        Located {
            file: self.file.clone(),
            pos: self.pos(path),
            message,
        }
    }
}

/// An entry of `objects` or of an `apply` step at `path`: a file name (`"web.yaml"`
/// or `{file: web.yaml}`, relative to `dir`) or a manifest written inline.
pub(super) fn entry(
    value: Value,
    spans: &Arc<Spans>,
    path: &str,
    dir: &Path,
) -> Result<Vec<Manifest>, Vec<Located>> {
    let file = match &value {
        Value::String(f) => Some(f.clone()),
        Value::Object(m) if m.len() == 1 && m.contains_key("file") => match &m["file"] {
            Value::String(f) => Some(f.clone()),
            _ => {
                return Err(vec![Located {
                    file: None,
                    pos: spans.find(&child_key(path, "file")),
                    message: format!("{path}.file: expected a file name"),
                }])
            }
        },
        _ => None,
    };
    match file {
        Some(f) => from_file(&dir.join(&f), spans.find(path)),
        None => {
            let problems = crate::manifest::check(&value, spans, path);
            if problems.is_empty() {
                Ok(vec![Manifest {
                    value,
                    file: None,
                    spans: spans.clone(),
                    base: path.to_string(),
                }])
            } else {
                Err(problems)
            }
        }
    }
}

/// The manifests of a file; `named_at` is where the scenario names it.
fn from_file(file: &Path, named_at: Option<Pos>) -> Result<Vec<Manifest>, Vec<Located>> {
    let here = |message: String| {
        vec![Located {
            file: None,
            pos: named_at,
            message,
        }]
    };
    let text = crate::input::read(file).map_err(|e| match e.at {
        Some((line, col)) => vec![Located {
            file: Some(file.to_path_buf()),
            pos: Some(Pos { line, col }),
            message: e.message,
        }],
        None => here(format!("cannot read {}: {}", file.display(), e.message)),
    })?;
    let docs = yaml::load_all(&text).map_err(|e| {
        vec![Located {
            file: Some(file.to_path_buf()),
            pos: Some(e.pos),
            message: format!("invalid YAML: {}", e.message),
        }]
    })?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (value, spans) in docs.into_iter().filter(|(v, _)| !v.is_null()) {
        for mut p in crate::manifest::check(&value, &spans, "") {
            p.file = Some(file.to_path_buf());
            problems.push(p);
        }
        out.push(Manifest {
            value,
            file: Some(file.to_path_buf()),
            spans: Arc::new(spans),
            base: String::new(),
        });
    }
    if out.is_empty() && problems.is_empty() {
        return Err(here(format!("{} has no manifests", file.display())));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
/// Applies manifests (of the scenario `file`) through the API server: a line per
/// object, or admission's problems at their files and lines.
pub fn apply(api: &Api, file: &Path, manifests: &[Manifest]) -> Result<Vec<String>, String> {
    let at = |l: &Located| {
        let f = l.file.as_deref().unwrap_or(file);
        match l.pos {
            Some(p) => format!("{}:{}:{}: {}", f.display(), p.line, p.col, l.message),
            None => format!("{}: {}", f.display(), l.message),
        }
    };
    if manifests.is_empty() {
        return Ok(Vec::new());
    }
    let mut objects = Vec::new();
    for m in manifests {
        let kind = m
            .value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        let k = Kind::parse(kind).ok_or_else(|| format!("unknown kind {kind:?}"))?;
        let o = Object::from_value(k, m.value.clone()).map_err(|e| at(&m.problem("", e)))?;
        objects.push(o);
    }
    match api.apply(objects) {
        Ok(applied) => Ok(applied
            .into_iter()
            .map(|a| {
                let action = match a.action {
                    Action::Created => "created",
                    Action::Configured => "configured",
                    Action::Unchanged => "unchanged",
                };
                let ip = a
                    .cluster_ip
                    .map(|ip| format!(" (clusterIP {ip})"))
                    .unwrap_or_default();
                format!(
                    "{} {}/{} {action}{ip}",
                    a.key.kind.singular(),
                    a.key.namespace,
                    a.key.name
                )
            })
            .collect()),
        Err(problems) => Err(problems
            .iter()
            .map(|p| match p.index.and_then(|i| manifests.get(i)) {
                Some(m) => at(&m.problem(&p.path, p.to_string())),
                None => p.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

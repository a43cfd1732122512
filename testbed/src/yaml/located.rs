//! A problem at a place in a YAML file, and serde errors turned into one.

use std::path::PathBuf;

use serde_json::Value;

use super::{Pos, Spans};

/// A problem found in a YAML file: the message and, when known, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Another file than the scenario (a manifest it names).
    pub file: Option<PathBuf>,
    pub pos: Option<Pos>,
    pub message: String,
}

/// Deserializes `value` (found at `base`) and turns a failure into a located problem.
pub fn from_value<T: serde::de::DeserializeOwned>(
    value: Value,
    spans: &Spans,
    base: &str,
) -> Result<T, Located> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let mut path = base.to_string();
        for seg in err.path().iter() {
            path = match seg {
                serde_path_to_error::Segment::Seq { index } => super::child_index(&path, *index),
                serde_path_to_error::Segment::Map { key } => super::child_key(&path, key),
                serde_path_to_error::Segment::Enum { variant } => super::child_key(&path, variant),
                serde_path_to_error::Segment::Unknown => path,
            };
        }
        let inner = err.into_inner().to_string();
        // serde names an unknown field in its message, not in the path: point at its key.
        let pos = match inner.strip_prefix("unknown field `") {
            Some(rest) => {
                let field = rest.split('`').next().unwrap_or_default();
                if !path.ends_with(field) {
                    path = super::child_key(&path, field);
                }
                spans.key(&path)
            }
            None => spans.find(&path),
        };
        let shown = if path.is_empty() { "the file" } else { &path };
        Located {
            file: None,
            pos,
            message: format!("{shown}: {inner}"),
        }
    })
}

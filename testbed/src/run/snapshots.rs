//! Snapshot files in insta's format (`snapshots/<scenario>@<step>.snap`), so that the
//! CLI and `cargo test` (which uses insta itself) read and write the same files, and
//! `cargo insta review` accepts what either left pending (`.snap.new`).

use std::path::{Path, PathBuf};

/// What became of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The stored snapshot has this content.
    Matched,
    /// There was none, or it differed, and it was written (accepted).
    Written(PathBuf),
    /// There was none: the new one waits beside it for review.
    New(PathBuf),
    /// It differs from the stored one: a line diff; the new one waits for review.
    Changed { diff: String, pending: PathBuf },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Matched | Outcome::Written(_))
    }
}

/// Where the snapshots of a run go, and how they are checked.
pub trait Snapshots {
    /// Checks `content` against the snapshot `name` (`<scenario>@<step>`).
    fn check(&mut self, name: &str, description: &str, source: &str, content: &str) -> Outcome;
}

/// Snapshot files in a directory, compared by this program.
pub struct Files {
    pub dir: PathBuf,
    /// Write new and changed snapshots instead of failing.
    pub accept: bool,
}

/// The stored content of a `.snap` file (what follows its header).
pub fn read(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let body = text.strip_prefix("---\n")?;
    let end = body.find("\n---\n")?;
    Some(body[end + 5..].to_string())
}

fn normalize(s: &str) -> String {
    s.trim_end().replace("\r\n", "\n")
}

/// A snapshot file as insta writes it.
pub fn render(description: &str, source: &str, content: &str) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "---\nsource: {}\ndescription: {}\n---\n{}\n",
        quote(source),
        quote(description),
        normalize(content)
    )
}

/// A plain line diff: `-` stored, `+` seen (common lines kept for context).
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence, fine for snapshots of a few hundred lines.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("- {}\n", a[i]);
            i += 1;
        } else {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        }
    }
    out
}

impl Snapshots for Files {
    fn check(&mut self, name: &str, description: &str, source: &str, content: &str) -> Outcome {
        let path = self.dir.join(format!("{name}.snap"));
        let pending = self.dir.join(format!("{name}.snap.new"));
        let file = render(description, source, content);
        let stored = read(&path);
        if stored.as_deref().map(normalize) == Some(normalize(content)) {
            let _ = std::fs::remove_file(&pending);
            return Outcome::Matched;
        }
        let _ = std::fs::create_dir_all(&self.dir);
        if self.accept {
            let _ = std::fs::write(&path, file);
            let _ = std::fs::remove_file(&pending);
            return Outcome::Written(path);
        }
        let _ = std::fs::write(&pending, file);
        match stored {
            None => Outcome::New(pending),
            Some(old) => Outcome::Changed {
                diff: diff(&normalize(&old), &normalize(content)),
                pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_match_write_and_wait_for_review() {
        let dir = std::env::temp_dir().join(format!("snaps-{}", std::process::id()));
        let mut s = Files {
            dir: dir.clone(),
            accept: false,
        };
        let new = s.check("demo@one", "d", "demo.yaml", "a\nb\n");
        assert_eq!(new, Outcome::New(dir.join("demo@one.snap.new")));
        s.accept = true;
        assert_eq!(
            s.check("demo@one", "d", "demo.yaml", "a\nb\n"),
            Outcome::Written(dir.join("demo@one.snap"))
        );
        assert!(!dir.join("demo@one.snap.new").exists());
        assert_eq!(read(&dir.join("demo@one.snap")).unwrap(), "a\nb\n");
        s.accept = false;
        assert_eq!(s.check("demo@one", "d", "x", "a\nb"), Outcome::Matched);
        match s.check("demo@one", "d", "x", "a\nc\n") {
            Outcome::Changed { diff, .. } => assert_eq!(diff, "  a\n- b\n+ c\n"),
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! The code's shape, checked as text without root: no source file over about 600
//! lines, and no function over 80 lines unless a comment in it or above it says why
//! (`Long because ...`). Long files and functions are where jobs pile up; a reason
//! written down is one a reviewer can disagree with.

use std::fs;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;
const WHY: &str = "Long because";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    files.sort();
    files
}

/// The functions of `text` longer than `MAX_FN_LINES`: (first line, name, lines,
/// whether a comment says why). A function starts at a line `fn NAME` (after any
/// visibility, `async`, `const`) and ends at the first line that closes it at its
/// indentation.
fn long_functions(text: &str) -> Vec<(usize, String, usize, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "fn");
        let is_fn = at.is_some_and(|at| {
            words[..at]
                .iter()
                .all(|w| w.starts_with("pub") || ["async", "const", "unsafe"].contains(w))
        }) && !line.trim_end().ends_with(';');
        if !is_fn {
            i += 1;
            continue;
        }
        let name = words[at.unwrap() + 1]
            .split(['(', '<'])
            .next()
            .unwrap_or_default()
            .to_string();
        let close = format!("{}}}", " ".repeat(indent));
        let end = (i..lines.len())
            .find(|&j| lines[j].trim_end() == close)
            .unwrap_or(lines.len() - 1);
        let len = end - i + 1;
        if len > MAX_FN_LINES {
            let mut above = i;
            while above > 0 && {
                let t = lines[above - 1].trim_start();
                t.starts_with("///") || t.starts_with("//") || t.starts_with("#[")
            } {
                above -= 1;
            }
            let why = lines[above..=end].iter().any(|l| {
                let t = l.trim_start();
                (t.starts_with("//")) && t.contains(WHY)
            });
            out.push((i + 1, name, len, why));
        }
        i = end + 1;
    }
    out
}

#[test]
fn no_file_is_over_about_600_lines() {
    let mut report = String::new();
    for f in sources() {
        let n = fs::read_to_string(&f).unwrap().lines().count();
        if n > MAX_FILE_LINES {
            report += &format!("{}: {n} lines\n", f.display());
        }
    }
    assert!(
        report.is_empty(),
        "files over {MAX_FILE_LINES} lines:\n{report}"
    );
}

#[test]
fn a_function_over_80_lines_says_why() {
    let mut report = String::new();
    let mut long = 0;
    for f in sources() {
        for (line, name, len, why) in long_functions(&fs::read_to_string(&f).unwrap()) {
            long += 1;
            if !why {
                report += &format!("{}:{line}: fn {name} is {len} lines\n", f.display());
            }
        }
    }
    assert!(
        report.is_empty(),
        "functions over {MAX_FN_LINES} lines with no comment that says why (`{WHY} ...`):\n{report}"
    );
    assert!(long < 40, "{long} long functions: the count only goes down");
}

#[test]
fn the_check_finds_a_long_function_and_its_reason() {
    let body = "    x();\n".repeat(MAX_FN_LINES);
    let text = format!("/// Does x.\npub async fn f() {{\n{body}}}\n\nfn short() {{\n}}\n");
    assert_eq!(long_functions(&text), [(2, "f".to_string(), 82, false)]);
    let text = format!("/// Does x. Long because it is a table.\nfn g() {{\n{body}}}\n");
    assert_eq!(long_functions(&text), [(2, "g".to_string(), 82, true)]);
}

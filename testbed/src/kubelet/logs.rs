//! Container logs, as a container runtime keeps them: each line a container writes
//! to stdout or stderr goes into its log file with the time and the stream
//! (`2026-12-04T21:00:00.123456789Z stdout F text`, the CRI format), so `kubectl logs`
//! can print it, with `--timestamps`, `--tail` and `--since`. A file past
//! [`MAX_BYTES`] is rotated once (`.1`), as the kubelet rotates at 10 MiB.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::state;

/// A log file's size before it is rotated.
pub const MAX_BYTES: u64 = 10 << 20;

/// The log file of container `container` of pod `namespace/pod` in testbed `testbed`.
pub fn path(testbed: &str, namespace: &str, pod: &str, container: &str) -> PathBuf {
    state::pod_dir(testbed, namespace, pod)
        .join("logs")
        .join(format!("{container}.log"))
}

/// Appends lines to one container's log.
#[derive(Clone)]
pub struct Log {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl Log {
    pub fn open(path: PathBuf) -> Log {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        Log {
            path,
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// Writes one line from `stream` (`stdout` or `stderr`).
    pub fn line(&self, stream: &str, text: &str) {
        let _held = self.lock.lock().expect("log lock");
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > MAX_BYTES) {
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| {
                k8s_openapi::jiff::Timestamp::new(d.as_secs() as i64, d.subsec_nanos() as i32).ok()
            })
            .unwrap_or_default();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = writeln!(f, "{} {stream} F {}", now, text.trim_end_matches('\r'));
        }
    }

    /// Copies a process's output into the log, line by line, until it ends.
    pub fn copy(&self, from: impl AsyncRead + Unpin + Send + 'static, stream: &'static str) {
        let log = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(from).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                log.line(stream, &l);
            }
        });
    }
}

/// One line of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub text: &'a str,
}

pub fn parse(l: &str) -> Option<Line<'_>> {
    let (time, rest) = l.split_once(' ')?;
    let (stream, rest) = rest.split_once(' ')?;
    let (_tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Line { time, stream, text })
}

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub tail_lines: Option<usize>,
    pub timestamps: bool,
    /// Lines at or after this time (RFC 3339), from `sinceTime` or `sinceSeconds`.
    pub since: Option<k8s_openapi::jiff::Timestamp>,
    pub limit_bytes: Option<usize>,
}

/// The log's text as `q` asks for it (the rotated file first, then the current one).
pub fn read(path: &Path, q: &Query) -> String {
    let mut text = std::fs::read_to_string(path.with_extension("log.1")).unwrap_or_default();
    text += &std::fs::read_to_string(path).unwrap_or_default();
    render(&text, q)
}

pub fn render(text: &str, q: &Query) -> String {
    let lines: Vec<Line> = text
        .lines()
        .filter_map(parse)
        .filter(|l| {
            q.since.is_none_or(|since| {
                l.time
                    .parse::<k8s_openapi::jiff::Timestamp>()
                    .is_ok_and(|t| t >= since)
            })
        })
        .collect();
    let skip = q.tail_lines.map_or(0, |n| lines.len().saturating_sub(n));
    let mut out = String::new();
    for l in &lines[skip..] {
        if q.timestamps {
            out += l.time;
            out.push(' ');
        }
        out += l.text;
        out.push('\n');
    }
    if let Some(max) = q.limit_bytes {
        let mut cut = max.min(out.len());
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "2026-12-04T21:00:00.1Z stdout F one\n\
                        2026-12-04T21:00:01.2Z stderr F two\n\
                        2026-12-04T21:00:02.3Z stdout F three words\n";

    #[test]
    fn logs_read_as_kubectl_logs_prints_them() {
        assert_eq!(render(TEXT, &Query::default()), "one\ntwo\nthree words\n");
        let tail = Query {
            tail_lines: Some(2),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            render(TEXT, &tail),
            "2026-12-04T21:00:01.2Z two\n2026-12-04T21:00:02.3Z three words\n"
        );
        let since = Query {
            since: Some("2026-12-04T21:00:01Z".parse().unwrap()),
            limit_bytes: Some(5),
            ..Default::default()
        };
        assert_eq!(render(TEXT, &since), "two\nt");
    }
}

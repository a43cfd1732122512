//! The reliability corpus: malformed inputs of every kind, under tests/malformed/
//! (scenario files, manifests, command lines, API requests), each refused with the
//! error its corpus file names, leaving nothing behind, in bounded memory.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::running::Running;
use common::*;
use serde_json::{json, Value};

/// What no refusal may take: the acceptance bound of issue 11.
const RSS_MAX_MIB: u64 = 100;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed")
}

/// The cases of a corpus file: `INPUT  =>  EXPECTED` lines, `#` comments.
fn corpus(file: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(corpus_dir().join(file)).unwrap();
    let cases: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (input, want) = l
                .split_once("  =>  ")
                .unwrap_or_else(|| panic!("{file}: no `  =>  ` in {l:?}"));
            (input.trim().to_string(), want.trim().to_string())
        })
        .collect();
    assert!(cases.len() >= 15, "{file}: only {} cases", cases.len());
    cases
}

/// The largest resident set any child of this process has had, in MiB.
fn children_max_rss_mib() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss as u64 / 1024
}

fn assert_rss_bounded() {
    let rss = children_max_rss_mib();
    assert!(
        rss < RSS_MAX_MIB,
        "a refusal took {rss} MiB, more than {RSS_MAX_MIB}"
    );
}

/// A scratch directory holding what the generated cases need.
fn scratch(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name(what));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(repo().join("scenarios/two-nodes.yaml"), dir.join("ok.yaml")).unwrap();
    std::fs::copy(
        repo().join("scenarios/manifests/web.yaml"),
        dir.join("web.yaml"),
    )
    .unwrap();
    // Over the 16 MiB read from one file: refused before it is read.
    let huge = std::fs::File::create(dir.join("huge.yaml")).unwrap();
    huge.set_len(17 << 20).unwrap();
    dir
}

/// The scenario cases, with the generated ones: (file, what stderr says after it).
fn scenario_cases(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut cases: Vec<(PathBuf, String)> = corpus("scenarios.txt")
        .into_iter()
        .map(|(f, want)| (corpus_dir().join("scenarios").join(f), want))
        .collect();
    cases.push((
        dir.join("huge.yaml"),
        ": is larger than 16 MiB, the most testbed reads from one file".into(),
    ));
    cases.push((
        "/dev/zero".into(),
        ": is not a regular file (a device, a socket or a pipe): give a file".into(),
    ));
    cases.push((dir.to_path_buf(), ": is a directory, not a file".into()));
    cases
}

/// `out` is a refusal of `file` (exit 1) whose error, after the file's path, says `want`.
fn assert_refused(file: &Path, out: &Output, want: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{}: {err}", file.display());
    let want = format!("{}{want}", file.display());
    assert!(
        err.contains(&want),
        "{}:\n{err}\nwants {want}",
        file.display()
    );
}

#[test]
fn every_malformed_scenario_is_refused_by_validate_with_its_place() {
    let dir = scratch("validate");
    for (file, want) in scenario_cases(&dir) {
        let out = testbed_bin().arg("validate").arg(&file).output().unwrap();
        assert_refused(&file, &out, &want);
    }
    assert_rss_bounded();
    std::fs::remove_dir_all(dir).unwrap();
}

/// The namespaces and records on the host whose names hold `mark`.
fn host_traces(mark: &str) -> BTreeSet<String> {
    let records = std::fs::read_dir(testbed::state::STATE_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned());
    testbed::netns::list()
        .into_iter()
        .chain(testbed::netns::list_etc())
        .chain(records)
        .filter(|n| n.contains(mark))
        .collect()
}

#[test]
fn every_malformed_scenario_is_refused_by_up_and_builds_nothing() {
    if !root() {
        return;
    }
    let dir = scratch("up");
    for (file, want) in scenario_cases(&dir) {
        let out = testbed_bin().arg("up").arg(&file).output().unwrap();
        assert_refused(&file, &out, &want);
        // Every corpus scenario's name starts `mf-` (or is not a name at all).
        assert_eq!(host_traces("mf-"), BTreeSet::new(), "{}", file.display());
    }
    assert!(Path::new("/etc/passwd").exists());
    assert_rss_bounded();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every object in the testbed, by kind, namespace and name.
fn objects(api: &Path) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for (kind, path) in [
        ("Pod", "/api/v1/pods"),
        ("Service", "/api/v1/services"),
        ("Endpoints", "/api/v1/endpoints"),
        ("EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices"),
        ("Deployment", "/apis/apps/v1/deployments"),
    ] {
        let get = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let (status, got) = ask(api, get.as_bytes());
        assert_eq!(status, 200, "{got}");
        for o in got["items"].as_array().unwrap() {
            all.insert(format!(
                "{kind} {}/{}",
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            ));
        }
    }
    all
}

/// An HTTP request of a corpus line, `METHOD PATH [BODY]`.
fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let ct = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Sends one request to the API socket and reads the one answer: its status and its
/// body (`Null` when it has none).
fn ask(api: &Path, request: &[u8]) -> (u16, Value) {
    let mut conn = UnixStream::connect(api).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server stops reading a body over its limit, answers and closes: the rest
    // of the write fails, and the answer is there to read.
    let _ = conn.write_all(request);
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {line:?}"));
    let mut length = 0;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, v)
}

/// Writes the generated manifests into `dir`: (file, what stderr says after it).
fn generated_manifests(dir: &Path) -> Vec<(PathBuf, String)> {
    let write = |name: &str, v: Value| {
        let path = dir.join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path
    };
    let annotations = write(
        "annotations.yaml",
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "mf-ann", "annotations": {"big": "x".repeat(300_000)}},
            "spec": {"ports": [{"port": 80}]}}),
    );
    let ports: Vec<Value> = (0..101)
        .map(|i| json!({"name": format!("p{i}"), "port": 1000 + i}))
        .collect();
    let ports = write(
        "ports.yaml",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mf-ports"},
            "spec": {"ports": ports}}),
    );
    let env: Vec<Value> = (0..2000)
        .map(|i| json!({"name": format!("E{i}"), "value": "v".repeat(1000)}))
        .collect();
    let object = write(
        "object.yaml",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mf-obj"},
            "spec": {"containers": [{"name": "m", "image": "agnhost", "env": env}]}}),
    );
    vec![
        (
            annotations,
            ":1:64: Service default/mf-ann: metadata.annotations: 300,003 bytes of annotations \
             are more than Kubernetes' 262,144 (256 KiB)"
                .into(),
        ),
        (
            ports,
            ":1:84: Service default/mf-ports: spec.ports: 101 ports are more than the 100 a \
             Service may have here (testbed::limits::PORTS_PER_SERVICE)"
                .into(),
        ),
        (
            object,
            ":1:2: Pod default/mf-obj: the object is 2,055,036 bytes of JSON, more than the \
             1,572,864 (1.5 MiB) an API server stores"
                .into(),
        ),
        (
            dir.join("huge.yaml"),
            ": is larger than 16 MiB, the most testbed reads from one file".into(),
        ),
        (
            "/dev/zero".into(),
            ": is not a regular file (a device, a socket or a pipe): give a file".into(),
        ),
    ]
}

/// The arguments of a corpus command line.
fn args(line: &str, tb: &str, dir: &Path) -> Vec<String> {
    line.split_whitespace()
        .map(|a| match a {
            "''" => String::new(),
            a => a
                .replace("$TB", tb)
                .replace("$DIR", &dir.display().to_string()),
        })
        .collect()
}

#[test]
// Long because it is one running testbed fed every malformed input, checking after each
// that nothing changed.
fn malformed_manifests_command_lines_and_api_requests_change_nothing() {
    if !root() {
        return;
    }
    let tb = Running::up("malformed");
    let api = testbed::state::api_socket(&tb.0);
    let dir = scratch("apply");
    let before = objects(&api);
    assert!(before.contains("Pod default/client-1"), "{before:?}");

    // Manifests: `testbed apply -f FILE`.
    let mut manifests: Vec<(PathBuf, String)> = corpus("manifests.txt")
        .into_iter()
        .map(|(f, want)| (corpus_dir().join("manifests").join(f), want))
        .collect();
    manifests.extend(generated_manifests(&dir));
    for (file, want) in manifests {
        let out = tb.cli(&["apply", "-f", &file.display().to_string()]);
        assert_refused(&file, &out, &want);
        assert_eq!(
            objects(&api),
            before,
            "{} changed the store",
            file.display()
        );
    }

    // Command lines.
    let host = (host_traces("tb."), host_traces(""));
    for (line, want) in corpus("cli.txt") {
        let out = testbed_bin()
            .args(args(&line, &tb.0, &dir))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "testbed {line}: {:?}: {err}",
            out.status
        );
        assert!(err.contains(&want), "testbed {line}:\n{err}\nwants {want}");
        assert_eq!(
            (host_traces("tb."), host_traces("")),
            host,
            "testbed {line}"
        );
        assert_eq!(objects(&api), before, "testbed {line} changed the store");
    }

    // API requests, one connection each.
    let mut requests: Vec<(Vec<u8>, String)> = corpus("api.txt")
        .into_iter()
        .map(|(line, want)| {
            let mut parts = line.splitn(3, ' ');
            let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
            let body = parts.next().unwrap_or("").as_bytes();
            (request(method, path, body), want)
        })
        .collect();
    let services = "/api/v1/namespaces/default/services";
    let mut invalid_utf8 = br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":""#.to_vec();
    invalid_utf8.extend(b"\xff\"}}");
    requests.push((
        request("POST", services, &invalid_utf8),
        "the request body is not JSON: invalid unicode code point".into(),
    ));
    let mut huge = br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":""#.to_vec();
    huge.resize(17 << 20, b'x');
    requests.push((
        request("POST", services, &huge),
        "the request body is larger than 3 MiB, the most this server reads".into(),
    ));
    for (request, want) in requests {
        let shown = String::from_utf8_lossy(&request[..request.len().min(120)]).into_owned();
        let (status, answer) = ask(&api, &request);
        assert!(status >= 400, "{shown}: {status} {answer}");
        assert_eq!(answer["kind"], "Status", "{shown}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(&want), "{shown}:\n{message}\nwants {want}");
        assert_eq!(objects(&api), before, "{shown} changed the store");
    }
    // Bytes that are not HTTP: a 4xx or 5xx answer (hyper's), and the connection closed.
    for junk in [
        &b"not http at all\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        &[0xff; 4096],
    ] {
        let mut conn = UnixStream::connect(&api).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = conn.write_all(junk);
        let mut answer = String::new();
        let _ = BufReader::new(conn).read_line(&mut answer);
        let code: u16 = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert!(code >= 400, "{junk:?}: {answer:?}");
    }
    let (_, nodes) = ask(&api, b"GET /testbed/v1/nodes HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(nodes[1]["name"], "node-2");

    assert_rss_bounded();
    std::fs::remove_dir_all(dir).unwrap();
}

//! The machine's real kubectl against a testbed's Kubernetes API, as a user runs it
//! with `export KUBECONFIG=$(testbed kubeconfig)`. Needs root.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kubectl::Kubectl;
use common::running::Running;
use common::*;
use serde_json::Value;

fn manifest(name: &str) -> String {
    repo().join(name).display().to_string()
}

fn ready_replicas(v: &Value) -> i64 {
    v.pointer("/status/readyReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

#[test]
// Long because it walks one testbed through a kubectl session, as the issue's list goes;
// split, each part would build its own testbed.
fn kubectl_applies_gets_watches_scales_reapplies_and_deletes() {
    if !root() {
        return;
    }
    let tb = Running::up("kubectl");
    let k = Kubectl::for_testbed(&tb);
    let mode = std::fs::metadata(&k.kubeconfig)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", k.kubeconfig);

    // apply, with kubectl's validation (OpenAPI v3 and fieldValidation=Strict).
    let web = manifest("scenarios/manifests/web.yaml");
    assert_eq!(
        k.ok(&["apply", "-f", &web]),
        "deployment.apps/web created\nservice/web created\n"
    );
    k.wait(&["get", "deployment", "web"], "3 ready", |v| {
        ready_replicas(v) == 3
    });

    // get -o wide prints kubectl's columns, from the server's Table.
    let wide = k.ok(&["get", "pods", "-o", "wide", "-l", "app=web"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ],
        "{wide}"
    );
    let rows: Vec<Vec<&str>> = wide
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows.len(),
        5,
        "web-1, web-2 and three of the Deployment's: {wide}"
    );
    for r in &rows {
        assert_eq!((r[1], r[2], r[3]), ("1/1", "Running", "0"), "{wide}");
        assert!(r[5].starts_with("10.244."), "{wide}");
        assert!(r[6].starts_with("node-"), "{wide}");
    }
    let all = k.ok(&["get", "svc,endpoints,endpointslices", "-o", "yaml"]);
    for want in [
        "kind: Service",
        "kind: Endpoints",
        "kind: EndpointSlice",
        "clusterIP: 10.96.",
        "addressType: IPv4",
    ] {
        assert!(all.contains(want), "{want}: {all}");
    }

    // A watch sees the pods go while the Deployment is scaled down.
    let mut watch = k
        .cmd()
        .args([
            "get",
            "pods",
            "-l",
            "app=web",
            "-w",
            "--output-watch-events",
            "--no-headers",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the watch prints a line within 20 s")
    };
    for _ in 0..5 {
        let l = next();
        assert!(l.starts_with("ADDED"), "{l}");
    }
    assert_eq!(
        k.ok(&["scale", "deployment/web", "--replicas=1"]),
        "deployment.apps/web scaled\n"
    );
    let mut deleted = 0;
    while deleted < 2 {
        let l = next();
        if l.starts_with("DELETED") {
            deleted += 1;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    k.wait(&["get", "deployment", "web"], "1 replica", |v| {
        v.pointer("/status/replicas").and_then(Value::as_i64) == Some(1)
    });

    // A changed manifest re-applied: kubectl sends a strategic merge patch with a
    // `$patch: delete` for the removed port; the label set by hand stays.
    k.ok(&[
        "apply",
        "-f",
        &manifest("testbed/tests/kubectl/web-changed.yaml"),
    ]);
    k.ok(&["label", "svc", "web", "by-hand=yes"]);
    assert_eq!(
        k.ok(&[
            "apply",
            "-f",
            &manifest("testbed/tests/kubectl/web-changed-2.yaml")
        ]),
        "service/web configured\n"
    );
    let svc = k.json(&["get", "svc", "web"]);
    assert_eq!(
        svc["metadata"]["labels"],
        serde_json::json!({"by-hand": "yes", "keep": "x", "tier": "b"})
    );
    assert_eq!(
        svc["spec"]["ports"],
        serde_json::json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}])
    );
    assert_eq!(
        k.ok(&[
            "apply",
            "-f",
            &manifest("testbed/tests/kubectl/web-changed-2.yaml")
        ]),
        "service/web unchanged\n"
    );

    // Errors read as a real cluster's.
    let mut bad = k.cmd();
    bad.args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = bad.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"},"spec":{"ports":[{"port":70000}]}}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        stderr(&out).trim(),
        "The Service \"x\" is invalid: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
    );
    let out = k.out(&["get", "svc", "nope"]);
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (NotFound): services \"nope\" not found"
    );

    // Discovery, OpenAPI and describe.
    let resources = k.ok(&["api-resources"]);
    let row = |name: &str| -> Vec<String> {
        resources
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {resources}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        row("deployments"),
        ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(
        row("services"),
        ["services", "svc", "v1", "true", "Service"]
    );
    let explain = k.ok(&["explain", "service.spec"]);
    assert!(explain.contains("FIELD: spec <ServiceSpec>"), "{explain}");
    assert!(explain.contains("clusterIP\t<string>"), "{explain}");
    let describe = k.ok(&["describe", "svc", "web"]);
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    for want in [
        "Name:                     web",
        "Selector:                 app=web",
        &format!("IP:                       {ip}"),
    ] {
        assert!(describe.contains(want), "{want}: {describe}");
    }

    // Events: the registration flow as it happened, and describe's Events.
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(
        events.contains(&format!("admitted and stored; ClusterIP {ip} allocated")),
        "{events}"
    );
    assert!(events.contains("EndpointsChanged"), "{events}");
    assert!(describe.contains("Events:"), "{describe}");
    assert!(describe.contains("kube-apiserver"), "{describe}");
    let warnings = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "type=Warning,involvedObject.name=x",
    ]);
    assert!(
        warnings.contains("FailedAdmission   service/x   refused, nothing was changed: Service default/x: spec.ports[0].port: Invalid value: 70000"),
        "{warnings}"
    );
    let nodes = k.ok(&["get", "events", "--field-selector", "reason=Synced"]);
    assert!(
        nodes.contains("node/node-1") && nodes.contains("node/node-2"),
        "{nodes}"
    );
    let pods = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Pod",
    ]);
    for reason in ["Scheduled", "Started", "Ready", "Killing"] {
        assert!(pods.contains(reason), "{reason}: {pods}");
    }

    // delete -f, and kubectl's wait for the objects to be gone.
    assert_eq!(
        k.ok(&["delete", "-f", &web]),
        "deployment.apps \"web\" deleted\nservice \"web\" deleted\n"
    );
    let out = k.out(&["get", "deployment", "web"]);
    assert!(stderr(&out).contains("(NotFound)"), "{}", stderr(&out));
    k.wait(
        &["get", "pods", "-l", "app=web"],
        "the Deployment's pods gone",
        |v| v["items"].as_array().unwrap().len() == 2,
    );
}

#[test]
fn callers_without_the_owners_certificate_are_refused() {
    if !root() {
        return;
    }
    let tb = Running::up("kubectl-anon");
    let k = Kubectl::for_testbed(&tb);
    let server = k.server();
    // Another user cannot read the kubeconfig, and without a certificate the API
    // answers 401 on every path, as an API server with anonymous access off.
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .env("HOME", "/tmp")
            .output()
            .unwrap()
    };
    let out = as_nobody(&["cat", &k.kubeconfig]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    for path in [
        "/api",
        "/api/v1/namespaces/default/pods",
        "/version",
        "/openapi/v3",
        "/apis/apps/v1/deployments",
    ] {
        let out = as_nobody(&[
            "curl",
            "-sk",
            "-w",
            "\n%{http_code}",
            &format!("{server}{path}"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.ends_with("\n401"), "{path}: {text}");
        assert!(
            text.contains(r#""reason":"Unauthorized""#),
            "{path}: {text}"
        );
    }
    let out = as_nobody(&[
        "curl",
        "-sk",
        "-X",
        "POST",
        "-d",
        "{}",
        &format!("{server}/api/v1/namespaces/default/services"),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""code":401"#));
    // Nothing was created, and the refusals are in the testbed's log.
    assert!(!k.ok(&["get", "svc"]).contains("x "));
    let log = std::fs::read_to_string(testbed::state::log_path(&tb.0)).unwrap();
    assert!(
        log.contains("api: refused GET /api from 127.0.0.1:"),
        "{log}"
    );
}

#[test]
// Long because exec (plain, with stdin, with a terminal) and logs share one testbed.
fn kubectl_exec_and_logs_reach_the_pods_processes() {
    if !root() {
        return;
    }
    let tb = Running::up("kubectl-exec");
    let k = Kubectl::for_testbed(&tb);
    k.ok(&["apply", "-f", &manifest("scenarios/manifests/web.yaml")]);
    k.ok(&[
        "apply",
        "-f",
        &manifest("testbed/tests/kubectl/talker.yaml"),
    ]);
    let v = k.wait(&["get", "deployment", "web"], "3 ready", |v| {
        ready_replicas(v) == 3
    });
    assert_eq!(ready_replicas(&v), 3);
    let pods = k.json(&["get", "pods", "-l", "app=web"]);
    let pod = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .find(|n| n.starts_with("web-") && n.len() > 6)
        .unwrap();
    let ip = k.json(&["get", "svc", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();

    // The pod's resolver, through the node's rules to the cluster DNS (dig asks
    // for `web.` without +search, as in any pod).
    assert_eq!(
        k.ok(&["exec", &pod, "--", "dig", "+short", "+search", "web"]),
        format!("{ip}\n")
    );
    assert_eq!(k.ok(&["exec", &pod, "--", "id", "-u"]), "65534\n");
    let out = k.out(&[
        "exec",
        &pod,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(stderr(&out).starts_with("err\n"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("command terminated with exit code 3"),
        "{}",
        stderr(&out)
    );
    let mut cat = k
        .cmd()
        .args(["exec", "-i", &pod, "--", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    cat.stdin.take().unwrap().write_all(b"12345").unwrap();
    let out = cat.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");

    // -it: a terminal of the size kubectl's own has, and the shell's exit code.
    let out = Command::new("script")
        .args([
            "-qec",
            &format!(
                "stty cols 100 rows 30; kubectl exec -it {pod} -- sh -c 'tty; stty size; exit 5'"
            ),
            "/dev/null",
        ])
        .env("KUBECONFIG", &k.kubeconfig)
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("30 100"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");

    // logs: a command's stdout and stderr in order, --tail, --timestamps, -f.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !k.ok(&["logs", "talker"]).contains("tick 3") {
        assert!(Instant::now() < deadline, "talker never ticked");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each stream in its order (stdout and stderr are two pipes, as with a
    // container runtime: lines of one may pass lines of the other).
    let logs = k.ok(&["logs", "talker"]);
    let stdout: Vec<&str> = logs.lines().filter(|l| *l != "oops").take(3).collect();
    assert_eq!(stdout, ["hello", "tick 1", "tick 2"], "{logs}");
    assert!(logs.lines().any(|l| l == "oops"), "{logs}");
    let last = k.ok(&["logs", "talker", "--tail=1", "--timestamps"]);
    let (time, text) = last.trim().split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.len() > 20, "{last}");
    assert!(text.starts_with("tick "), "{last}");
    let mut follow = k
        .cmd()
        .args(["logs", "-f", "talker", "--tail=1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first: u32 = lines.next().unwrap().unwrap()["tick ".len()..]
        .parse()
        .unwrap();
    let later: u32 = lines.next().unwrap().unwrap()["tick ".len()..]
        .parse()
        .unwrap();
    assert_eq!(later, first + 1);
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(k.ok(&["logs", &pod]), "Started HTTP server on port 8080\n");
    // kubectl words this one itself, from the server's NotFound.
    let out = k.out(&["logs", "nope"]);
    assert_eq!(
        stderr(&out).trim(),
        "error: error from server (NotFound): pods \"nope\" not found in namespace \"default\""
    );
}

#[test]
fn a_server_dry_run_stores_nothing_and_ignored_fields_come_back_as_warnings() {
    if !root() {
        return;
    }
    let tb = Running::up("kdry");
    let k = Kubectl::for_testbed(&tb);
    let dir = std::env::temp_dir().join(&tb.0);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pod.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: dry}\nspec:\n  priorityClassName: high\n  containers: [{name: c, image: agnhost}]\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let apply = |extra: &[&str]| {
        let out = k
            .cmd()
            .args(["apply", "-f", &file])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    // Admission's answer, with the field it does not act on, and nothing stored.
    let (out, err) = apply(&["--dry-run=server"]);
    assert_eq!(out, "pod/dry created (server dry run)\n");
    assert!(
        err.contains("Warning: spec.priorityClassName is accepted but not emulated (ignored)"),
        "{err}"
    );
    let missing = k.out(&["get", "pod", "dry"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("(NotFound)"),
        "{missing:?}"
    );
    // An invalid object is refused by the dry run as by the write.
    let bad = k
        .cmd()
        .args(["apply", "--dry-run=server", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    bad.stdin
        .as_ref()
        .unwrap()
        .write_all(
            b"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 70000}]}\n",
        )
        .unwrap();
    let bad = bad.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("The Service \"x\" is invalid: spec.ports[0].port: Invalid value: 70000"),
        "{bad:?}"
    );
    // The write itself, with the same warning.
    let (out, err) = apply(&[]);
    assert_eq!(out, "pod/dry created\n");
    assert!(err.contains("spec.priorityClassName is accepted"), "{err}");
    k.ok(&["get", "pod", "dry"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn server_side_apply_is_refused_and_kubectl_says_so() {
    if !root() {
        return;
    }
    let tb = Running::up("kssa");
    let k = Kubectl::for_testbed(&tb);
    let ssa = k.out(&[
        "apply",
        "--server-side",
        "-f",
        &manifest("scenarios/manifests/web.yaml"),
    ]);
    let err = String::from_utf8_lossy(&ssa.stderr);
    assert!(!ssa.status.success());
    assert!(
        err.contains("Server-side apply not available on the server")
            && err.contains("server-side apply is not served by this testbed"),
        "{err}"
    );
    assert!(k.out(&["get", "svc", "web"]).status.code() != Some(0));
}

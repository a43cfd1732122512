//! The `testbed` command as a user runs it. Needs root.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn up_named(name: &str) -> String {
    run(testbed_bin().args(["up", &two_nodes(), "--name", name]))
}

fn exec(name: &str, target: &str, cmd: &[&str]) -> std::process::Output {
    testbed_bin()
        .args(["exec", "--testbed", name, target, "--"])
        .args(cmd)
        .output()
        .unwrap()
}

fn pid_of(name: &str) -> u32 {
    testbed::state::Record::load(name).unwrap().pid
}

#[test]
// Long because it brings one testbed up once and walks through the commands a user would
// run on it; split, each part would build its own.
fn up_exec_tcp_across_nodes_and_down() {
    if !root() {
        return;
    }
    let name = unique_name("cli");
    let out = up_named(&name);
    assert!(
        out.contains(&format!("testbed {name}: 2 nodes, 4 pods ready in")),
        "{out}"
    );
    assert!(out.contains("client-1             10.244.1.2"), "{out}");

    let routes = exec(&name, "client-1", &["ip", "route"]);
    assert!(routes.status.success());
    assert_eq!(
        String::from_utf8_lossy(&routes.stdout),
        "default via 10.244.1.1 dev eth0 \n10.244.1.0/24 dev eth0 proto kernel scope link src 10.244.1.2 \n"
    );
    let node = exec(
        &name,
        "node/node-2",
        &["ip", "-br", "-4", "addr", "show", "cbr0"],
    );
    assert!(String::from_utf8_lossy(&node.stdout).contains("10.244.2.1/24"));

    // A real TCP connection between pods on different nodes, with nc on both ends
    // (on 9000: web-2's own server has 8080, the port its manifest declares).
    let server = testbed_bin()
        .args([
            "exec",
            "--testbed",
            &name,
            "web-2",
            "--",
            "nc",
            "-l",
            "9000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = testbed_bin()
            .args([
                "exec",
                "--testbed",
                &name,
                "client-1",
                "--",
                "nc",
                "-N",
                "-w",
                "2",
                "10.244.2.3",
                "9000",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        client
            .stdin
            .take()
            .unwrap()
            .write_all(b"hello across nodes\n")
            .unwrap();
        if client.wait().unwrap().success() {
            break;
        }
        assert!(Instant::now() < deadline, "nc never connected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = server.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "hello across nodes\n");

    // Exit codes pass through; a missing program is 127.
    assert_eq!(
        exec(&name, "web-1", &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    assert_eq!(
        exec(&name, "web-1", &["no-such-program"]).status.code(),
        Some(127)
    );
    let unknown = exec(&name, "nobody", &["true"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("has no pod default/nobody"));

    let ls = run(testbed_bin().arg("ls"));
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&name) && l.contains("running")),
        "{ls}"
    );
    let down = run(testbed_bin().args(["down", &name]));
    assert!(down.contains(&format!("testbed {name} down")), "{down}");
    assert_eq!(traces(&name), Vec::<String>::new());
}

#[test]
fn kill_9_then_clean_leaves_nothing() {
    if !root() {
        return;
    }
    let name = unique_name("kill");
    up_named(&name);
    let pid = pid_of(&name);
    run(Command::new("kill").args(["-9", &pid.to_string()]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while testbed::state::process_start(pid).is_some() {
        assert!(Instant::now() < deadline, "pid {pid} outlived kill -9");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The killed process could not clean up.
    // 2 nodes, 4 pods and 2 coredns pods (up waits for the cluster DNS).
    assert_eq!(traces(&name).len(), 16, "{:?}", traces(&name));
    let ls = run(testbed_bin().arg("ls"));
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&name) && l.contains("dead")),
        "{ls}"
    );
    let out = run(testbed_bin().arg("clean"));
    assert!(
        out.contains(&format!("removed testbed {name}: 9 network namespaces")),
        "{out}"
    );
    assert_eq!(traces(&name), Vec::<String>::new());
}

#[test]
fn sigint_and_sighup_tear_down_too() {
    if !root() {
        return;
    }
    for signal in ["-INT", "-HUP"] {
        let name = unique_name("sig");
        up_named(&name);
        let pid = pid_of(&name);
        run(Command::new("kill").args([signal, &pid.to_string()]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while testbed::state::process_start(pid).is_some() {
            assert!(Instant::now() < deadline, "pid {pid} ignored {signal}");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(traces(&name), Vec::<String>::new(), "after {signal}");
    }
}

#[test]
fn two_ups_of_one_scenario_with_different_names() {
    if !root() {
        return;
    }
    let (a, b) = (unique_name("one"), unique_name("two"));
    up_named(&a);
    up_named(&b);
    for name in [&a, &b] {
        let out = exec(name, "web-2", &["ip", "-4", "-br", "addr", "show", "eth0"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("10.244.2.3/24"));
    }
    // The same name twice is refused, and the running one is untouched.
    let again = testbed_bin()
        .args(["up", &two_nodes(), "--name", &a])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));
    // 2 nodes, 4 pods and the 2 coredns pods: a namespace and an /etc/netns entry each.
    assert_eq!(traces(&a).len(), 16);
    run(testbed_bin().args(["down", &a]));
    run(testbed_bin().args(["down", &b]));
    assert_eq!(traces(&a), Vec::<String>::new());
    assert_eq!(traces(&b), Vec::<String>::new());
}

#[test]
fn malformed_scenarios_get_a_file_and_line_and_create_nothing() {
    if !root() {
        return;
    }
    let dir = std::env::temp_dir().join(unique_name("bad"));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("yaml.yaml", "name: bad-yaml\ncluster: [1, 2\n", "yaml.yaml:3:1: invalid YAML"),
        (
            "field.yaml",
            "name: bad-field\ncluster:\n  nodes: 2\n  podCidr: 10.0.0.0/16\n",
            "field.yaml:4:3: cluster.podCidr: unknown field `podCidr`",
        ),
        (
            "overlap.yaml",
            "name: bad-overlap\ncluster:\n  podCIDR: 10.0.0.0/8\n  serviceCIDR: 10.96.0.0/12\n",
            "overlap.yaml:4:16: cluster.serviceCIDR: 10.96.0.0/12 overlaps cluster.podCIDR 10.0.0.0/8",
        ),
        (
            "long.yaml",
            "name: bad-long\ncluster:\n  nodes: [node-1, node-with-a-long-name]\n",
            "long.yaml:3:19: cluster.nodes[1]: node name \"node-with-a-long-name\" is 21 characters long, at most 15",
        ),
    ];
    for (file, text, want) in cases {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let out = testbed_bin().arg("up").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(
            stderr.contains(&format!("{}/{want}", dir.display())),
            "{file}: {stderr}"
        );
        let name = text.lines().next().unwrap().trim_start_matches("name: ");
        assert_eq!(
            traces(name),
            Vec::<String>::new(),
            "{file} created something"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();

    let bad_name = testbed_bin()
        .args(["up", &two_nodes(), "--name", "Not_A_Label"])
        .output()
        .unwrap();
    assert_eq!(bad_name.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_name.stderr)
        .contains("testbed name \"Not_A_Label\" contains 'N'"));
}

#[test]
fn validate_names_every_problem_and_builds_nothing_and_run_reports_the_step() {
    // validate needs no root: it builds nothing.
    let dir = std::env::temp_dir().join(format!("validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.yaml");
    std::fs::write(
        &bad,
        "name: broken\nsteps:\n  - wait: {endpoints: web}\n  - conect: {from: a}\n  - scale: {deployment: nope, replicas: 1}\n",
    )
    .unwrap();
    let out = testbed_bin().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let shown = bad.display().to_string();
    assert!(
        err.contains(&format!(
            "{shown}:3:12: steps[0].wait.ready: endpoints needs ready"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{shown}:4:5: steps[1].conect: unknown field `conect`"
        )),
        "{err}"
    );
    // The shape is wrong, so admission's dry run waits: fix it, and it speaks.
    std::fs::write(
        &bad,
        "name: broken\nsteps:\n  - scale: {deployment: nope, replicas: 1}\n",
    )
    .unwrap();
    let out = testbed_bin().arg("validate").arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{shown}:3:5: steps[0]: Deployment default/nope: not found"
        )),
        "{err}"
    );
    if root() {
        // run checks first too: nothing is built for a bad file.
        let out = testbed_bin().arg("run").arg(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was run"));
        // (Other tests build testbeds meanwhile: look for this one's namespaces only.)
        assert!(
            !testbed::netns::list()
                .iter()
                .any(|n| n.starts_with("tb.broken")),
            "a namespace of the broken scenario exists"
        );
    }

    // The schema names every step.
    let schema = run(testbed_bin().arg("schema"));
    let v: serde_json::Value = serde_json::from_str(&schema).unwrap();
    let step = &v["$defs"]["StepFile"]["properties"];
    for key in [
        "apply", "wait", "dns", "connect", "exec", "snapshot", "kill", "node", "link", "expect",
    ] {
        assert!(step.get(key).is_some(), "{key} in {step}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_prints_each_step_and_a_wrong_expectation_with_its_line() {
    if !root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("run-{}", std::process::id()));
    let file = repo().join("scenarios/err_wrong-backend.yaml");
    let out = testbed_bin()
        .arg("run")
        .arg(&file)
        .args(["--name", &unique_name("run"), "--snapshots"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("✓  1 "), "{stdout}");
    assert!(stdout.contains("✗  2 "), "{stdout}");
    assert!(
        stdout.contains("FAILED: err-wrong-backend, 1 steps not run"),
        "{stdout}"
    );
    let shown = file.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{shown}:31:5: step 2 (connect client -> web:80/TCP x5) failed\n  backends:\n    expected: [web-2]\n    seen:     [web-1]"
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_benchmarks_bring_their_clusters_up_and_report() {
    if !root() {
        return;
    }
    // Small: this checks that the benchmarks' clusters start (their pods pass
    // admission like any pod) and that they report, not how fast they are.
    let up = run(testbed_bin().args(["bench", "up", "--nodes", "2", "--pods", "4", "--runs", "1"]));
    assert!(up.contains("median: up"), "{up}");
    let services = run(testbed_bin().args([
        "bench",
        "services",
        "--nodes",
        "2",
        "--services",
        "20",
        "--endpoints",
        "1",
        "--runs",
        "1",
        "--full-runs",
        "0",
    ]));
    assert!(
        services.contains("Service create to rules on every node"),
        "{services}"
    );
}

#[test]
// Long because it walks one pod and one Service through the updates kubectl users make,
// checking what apply prints and what the store then holds after each.
fn apply_updates_as_kubectl_users_expect() {
    if !root() {
        return;
    }
    let tb = common::running::Running::up("apply");
    let dir = std::env::temp_dir().join(&tb.0);
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        f.display().to_string()
    };
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {role: a}}\nspec:\n  containers:\n  - {name: main, image: registry.k8s.io/e2e-test-images/agnhost:2.52, ports: [{containerPort: 8080}]}\n";
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  selector: {role: b}\n  ports: [{port: 80, targetPort: 8080}]\n";
    let version = || tb.json(&["get", "pod", "p"])["metadata"]["resourceVersion"].clone();
    let f = write("pod.yaml", pod);
    assert_eq!(tb.ok(&["apply", "-f", &f]), "pod/p created\n");
    tb.ok(&["apply", "-f", &write("svc.yaml", svc)]);
    // Once the kubelet has written its status, the pod stays as it is.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tb.json(&["get", "pod", "p"])["status"]["conditions"]
        .as_array()
        .is_none_or(|c| {
            !c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    {
        assert!(Instant::now() < deadline, "pod p never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = version();
    assert_eq!(tb.ok(&["apply", "-f", &f]), "pod/p unchanged\n");
    assert_eq!(version(), before, "an unchanged apply writes nothing");

    // New labels on the running pod: taken, and the pod joins the Service that
    // selects them.
    let f = write("pod.yaml", &pod.replace("role: a", "role: b"));
    assert_eq!(tb.ok(&["apply", "-f", &f]), "pod/p configured\n");
    assert_ne!(version(), before);
    tb.wait_ready("b", 1);

    // ClusterIP -> ExternalName -> ClusterIP, as Kubernetes does it.
    let external = "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  type: ExternalName\n  externalName: www.example.com\n";
    assert_eq!(
        tb.ok(&["apply", "-f", &write("svc.yaml", external)]),
        "service/b configured\n"
    );
    let spec = tb.json(&["get", "svc", "b"])["spec"].clone();
    assert!(spec.get("clusterIP").is_none(), "{spec}");
    let back = tb.ok(&["apply", "-f", &write("svc.yaml", svc)]);
    assert!(
        back.starts_with("service/b configured (clusterIP 10.96."),
        "{back}"
    );

    // The API server's own Service comes back when deleted.
    tb.ok(&["delete", "service/kubernetes"]);
    assert_eq!(
        tb.json(&["get", "svc", "kubernetes"])["spec"]["clusterIP"],
        "10.96.0.1"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

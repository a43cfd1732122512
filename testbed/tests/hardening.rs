//! Hostile and careless use of the `testbed` command: names that are paths, forged
//! records, two `up`s of one name at once, signals during a bring-up, missing tools,
//! namespaces no testbed made. Needs root.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use testbed::state::{self, Record};

/// Tests that make or clean records by hand don't run beside each other.
static RECORDS: Mutex<()> = Mutex::new(());

fn testbed(args: &[&str]) -> Output {
    testbed_bin().args(args).output().unwrap()
}

#[test]
fn names_that_are_paths_are_refused_and_touch_nothing() {
    if !root() {
        return;
    }
    let name = unique_name("names");
    run(testbed_bin().args(["up", &two_nodes(), "--name", &name]));
    let victim = std::env::temp_dir().join(format!("tb-victim-{}", std::process::id()));
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), "x").unwrap();
    let victim_s = victim.display().to_string();
    let up_path = format!("../../..{victim_s}");
    let scenario = two_nodes();
    let cases: Vec<Vec<&str>> = vec![
        vec!["down", "../x"],
        vec!["down", ""],
        vec!["down", "/"],
        vec!["down", ".."],
        vec!["down", &victim_s],
        vec!["down", &up_path],
        vec!["get", "pods", "-t", ".."],
        vec!["get", "pods", "-t", ""],
        vec!["exec", "-t", "..", "web-1", "--", "true"],
        vec!["exec", "-t", &name, "../../x", "--", "true"],
        vec!["delete", "-t", "/", "pod", "web-1"],
        vec!["up", &scenario, "--name", ".."],
        vec!["up", &scenario, "--name", "a/b"],
    ];
    for args in &cases {
        let out = testbed(args);
        assert!(!out.status.success(), "testbed {args:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains("testbed name") || err.contains("name \""),
            "testbed {args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "testbed {args:?}: {err}");
    }
    assert!(
        victim.join("keep").exists(),
        "a path given as a name was removed"
    );
    assert!(Path::new("/run").is_dir() && Path::new(state::STATE_DIR).is_dir());
    // The running testbed is untouched: its namespaces, /etc/netns entries, record.
    assert_eq!(traces(&name).len(), 16, "{:?}", traces(&name));
    run(testbed_bin().args(["down", &name]));
    std::fs::remove_dir_all(&victim).unwrap();
}

/// A record written by hand at `/run/testbed/<name>` for the process `pid`.
fn forge(name: &str, pid: u32) -> std::path::PathBuf {
    let plan = scenario("two-nodes.yaml").plan(name);
    let mut r = Record::for_this_process(plan, None);
    r.pid = pid;
    r.pid_start = state::process_start(pid).unwrap();
    let dir = state::dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("state.json"), serde_json::to_vec(&r).unwrap()).unwrap();
    dir
}

fn sleeper() -> Child {
    Command::new("sleep").arg("60").spawn().unwrap()
}

fn still_running(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

#[test]
fn a_forged_record_never_gets_a_process_signalled() {
    if !root() {
        return;
    }
    let _one = RECORDS.lock().unwrap();
    // A record naming an unrelated process, with no claim held: not running.
    let name = unique_name("forged");
    let mut victim = sleeper();
    forge(&name, victim.id());
    let ls = run(testbed_bin().arg("ls"));
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&name) && l.contains("dead")),
        "{ls}"
    );
    let out = testbed(&["down", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("was not running"));
    assert!(
        still_running(&mut victim),
        "down signalled an unrelated process"
    );
    assert!(!state::dir(&name).exists());

    // The claim locked (by this test), but the process it names does not hold it.
    let dir = forge(&name, victim.id());
    let claim = std::fs::File::create(dir.join("claim")).unwrap();
    let held = nix::fcntl::Flock::lock(claim, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let out = testbed(&["down", &name]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not hold the testbed's claim: nothing was signalled"),
        "{}",
        stderr(&out)
    );
    assert!(
        still_running(&mut victim),
        "down signalled an unrelated process"
    );
    drop(held);

    // A record anyone may write is not a testbed's: ignored, and not removed.
    std::fs::remove_file(dir.join("claim")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = testbed(&["down", &name]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is writable by others"),
        "{}",
        stderr(&out)
    );
    assert!(dir.join("state.json").exists());
    let ls = run(testbed_bin().arg("ls"));
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&name) && l.contains("unreadable")),
        "{ls}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn two_concurrent_ups_of_one_name_one_wins_and_the_other_touches_nothing() {
    if !root() {
        return;
    }
    for round in 0..3 {
        let name = unique_name("race");
        let spawn = || {
            testbed_bin()
                .args(["up", &two_nodes(), "--name", &name])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let won: Vec<&Output> = [&a, &b]
            .into_iter()
            .filter(|o| o.status.success())
            .collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: {} and {}",
            stderr(&a),
            stderr(&b)
        );
        let lost = if a.status.success() { &b } else { &a };
        assert!(
            stderr(lost).contains(&format!("a testbed named {name} is already running")),
            "round {round}: {}",
            stderr(lost)
        );
        // The winner is whole and works.
        assert_eq!(
            traces(&name).len(),
            16,
            "round {round}: {:?}",
            traces(&name)
        );
        let out = testbed(&[
            "exec", "-t", &name, "web-2", "--", "ip", "-4", "-br", "addr",
        ]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("10.244.2.3/24"));
        run(testbed_bin().args(["down", &name]));
        assert_eq!(
            traces(&name),
            Vec::<String>::new(),
            "{}",
            run(Command::new("find").arg(state::dir(&name)))
        );
    }
}

/// A scenario big enough that its bring-up takes a while (300 pods on 2 nodes).
fn big_scenario(dir: &Path) -> String {
    let mut yaml = String::from("name: big\ncluster: {nodes: 2}\npods:\n");
    for i in 0..300 {
        yaml.push_str(&format!(
            "  - {{apiVersion: v1, kind: Pod, metadata: {{name: p{i}}}, spec: {{containers: [{{name: c, image: busybox}}]}}}}\n"
        ));
    }
    let file = dir.join("big.yaml");
    std::fs::write(&file, yaml).unwrap();
    file.display().to_string()
}

/// Starts `up`, waits for the testbed's record to appear (the bring-up has begun)
/// and returns the `up` process and the background process's pid.
#[allow(clippy::zombie_processes)] // the caller waits for it
fn up_until_claimed(file: &str, name: &str) -> (Child, u32) {
    let child = testbed_bin()
        .args(["up", file, "--name", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = Record::load(name) {
            return (child, r.pid);
        }
        assert!(
            Instant::now() < deadline,
            "testbed {name} never claimed its name"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_signal_during_the_bring_up_stops_it_and_up_says_so() {
    if !root() {
        return;
    }
    let dir = tempdir("signal");
    let file = big_scenario(&dir);
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let name = unique_name("bringup");
        let (up, daemon) = up_until_claimed(&file, &name);
        unsafe { libc::kill(daemon as i32, signal) };
        let out = up.wait_with_output().unwrap();
        let (stdout, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(!out.status.success(), "signal {signal}: up said {stdout}");
        assert!(!stdout.contains("ready in"), "signal {signal}: {stdout}");
        assert!(
            err.contains("during the bring-up"),
            "signal {signal}: {err}"
        );
        assert!(
            err.contains(&format!("testbed {name} did not come up")),
            "{err}"
        );
        assert_eq!(traces(&name), Vec::<String>::new(), "signal {signal}");
    }
    // Ctrl-C to `up` itself: it stops the background process and exits 130.
    let name = unique_name("bringup");
    let (up, _) = up_until_claimed(&file, &name);
    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let out = up.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(traces(&name), Vec::<String>::new());
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir(what: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tb-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_missing_tool_is_named_before_anything_is_built() {
    if !root() {
        return;
    }
    // A PATH with every tool but iptables-restore.
    let bin = tempdir("path");
    for t in testbed::tools::TOOLS {
        if t.program == "iptables-restore" {
            continue;
        }
        if let Some(p) = testbed::tools::find(t.program) {
            let _ = std::os::unix::fs::symlink(p, bin.join(t.program));
        }
    }
    let name = unique_name("tools");
    let out = testbed_bin()
        .args(["up", &two_nodes(), "--name", &name])
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("iptables-restore (package iptables)") && err.contains("nothing was built"),
        "{err}"
    );
    assert!(!err.contains("iptables-save"), "{err}");
    assert_eq!(traces(&name), Vec::<String>::new());
    let doctor = testbed_bin()
        .arg("doctor")
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert!(!doctor.status.success());
    let table = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("iptables-restore") && l.contains("MISSING (needed)")),
        "{table}"
    );
    assert!(run(testbed_bin().arg("doctor")).contains("every tool `testbed up` needs is there"));
    std::fs::remove_dir_all(bin).unwrap();
}

#[test]
fn namespaces_no_testbed_made_are_not_cleaned_or_taken() {
    if !root() {
        return;
    }
    let _one = RECORDS.lock().unwrap();
    let name = unique_name("foreign");
    let ns = format!("tb.{name}");
    run(Command::new("ip").args(["netns", "add", &ns]));
    let out = run(testbed_bin().arg("clean"));
    assert!(
        out.contains("left alone, as no testbed made them") && out.contains(&ns),
        "{out}"
    );
    assert!(testbed::netns::list().contains(&ns), "clean removed {ns}");
    let up = testbed(&["up", &two_nodes(), "--name", &name]);
    assert!(!up.status.success());
    assert!(
        stderr(&up).contains("in use by network namespaces no testbed made"),
        "{}",
        stderr(&up)
    );
    assert_eq!(traces(&name), vec![ns.clone()]);
    run(Command::new("ip").args(["netns", "del", &ns]));
}

/// A directory anyone may write, for what pods report.
fn shared_dir(what: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = Path::new("/var/tmp").join(format!("tb-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    std::fs::read_to_string(path).unwrap()
}

#[test]
// Long because it is one non-root testbed and every way a pod could reach root's files,
// tried in turn.
fn a_pod_of_a_non_root_owner_cannot_read_shadow_or_write_roots_files() {
    if !root() {
        return;
    }
    let name = unique_name("priv");
    // As `sudo testbed up` by an ordinary user (uid 65534 here) would start it.
    run(testbed_bin()
        .args(["up", &two_nodes(), "--name", &name])
        .env("SUDO_UID", "65534"));
    // Brought down when the test ends, whether it passes or not.
    let testbed_up = common::running::Running(name.clone());
    let dir = shared_dir("priv");
    let d = dir.display();
    let forbidden = Path::new("/etc").join(format!("tb-written-by-a-pod-{}", std::process::id()));
    let script = format!(
        "id -u > {d}/$0.uid; id -G > {d}/$0.groups; grep CapEff /proc/self/status > {d}/$0.caps; \
         cat /etc/shadow > {d}/$0.shadow 2> {d}/$0.shadow-err; \
         touch {f} 2> {d}/$0.touch-err; \
         (nc -l 80 & sleep 0.3; kill $!) 2> {d}/$0.bind-err; echo done > {d}/$0.done; sleep 30",
        f = forbidden.display()
    );
    let pod = |pod: &str, security: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}}}\nspec:\n  {security}\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, {script:?}, {pod}]\n"
        )
    };
    let manifest = dir.join("pods.yaml");
    std::fs::write(
        &manifest,
        [
            pod("plain", "nodeName: node-1"),
            pod(
                "as-1234",
                "securityContext: {runAsUser: 1234, runAsGroup: 5678}",
            ),
            pod("as-root", "securityContext: {runAsUser: 0}"),
        ]
        .join("---\n"),
    )
    .unwrap();
    run(testbed_bin().args(["apply", "-t", &name, "-f", &manifest.display().to_string()]));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();

    assert_eq!(wait_for_file(&dir.join("plain.done")).trim(), "done");
    assert_eq!(read("plain.uid").trim(), "65534");
    assert_eq!(read("plain.groups").trim(), "65534");
    assert_eq!(
        read("plain.caps").split_whitespace().nth(1),
        Some("0000000000000000")
    );
    assert_eq!(read("plain.shadow"), "", "a pod read /etc/shadow");
    assert!(
        read("plain.shadow-err").contains("Permission denied"),
        "{}",
        read("plain.shadow-err")
    );
    assert!(!forbidden.exists(), "a pod wrote {}", forbidden.display());
    assert!(read("plain.touch-err").contains("Permission denied"));
    // Port 80 is its own to bind, with no capability.
    assert_eq!(read("plain.bind-err"), "");

    assert_eq!(wait_for_file(&dir.join("as-1234.done")).trim(), "done");
    assert_eq!(read("as-1234.uid").trim(), "1234");
    assert_eq!(read("as-1234.groups").trim(), "5678");

    // runAsUser 0 is refused for this owner: the container waits, as kubelet's
    // CreateContainerConfigError, saying why, and ran nothing.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (reason, message, phase) = loop {
        let out = testbed(&["get", "pod", "as-root", "-t", &name, "-o", "json"]);
        let pod: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
        if let Some(m) = waiting["message"].as_str() {
            let reason = waiting["reason"].as_str().unwrap_or_default().to_string();
            let phase = pod["status"]["phase"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            break (reason, m.to_string(), phase);
        }
        assert!(Instant::now() < deadline, "as-root has no message: {pod}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(reason, "CreateContainerConfigError");
    assert_eq!(phase, "Pending");
    assert!(
        message.contains("runAsUser 0 is refused: this testbed's owner (uid 65534) is not root"),
        "{message}"
    );
    assert!(!dir.join("as-root.uid").exists());
    drop(testbed_up);
    let _ = std::fs::remove_file(&forbidden);
    std::fs::remove_dir_all(dir).unwrap();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn floods_and_huge_requests_leave_the_api_answering_with_memory_bounded() {
    if !root() {
        return;
    }
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let name = unique_name("flood");
    run(testbed_bin().args(["up", &two_nodes(), "--name", &name]));
    let pid = Record::load(&name).unwrap().pid;
    let sock = testbed::state::api_socket(&name);

    // replicas: 100000 is refused, and nothing grows.
    let dir = tempdir("flood");
    let rep = dir.join("rep.yaml");
    std::fs::write(&rep, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: big}\nspec:\n  replicas: 100000\n  selector: {matchLabels: {app: big}}\n  template:\n    metadata: {labels: {app: big}}\n    spec: {containers: [{name: c, image: x}]}\n").unwrap();
    let out = testbed(&["apply", "-t", &name, "-f", &rep.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("more than the 2,000 it runs (testbed::limits::PODS)"),
        "{}",
        stderr(&out)
    );

    // (A body over the 3 MiB the API reads is in malformed.rs's corpus.)

    // 2,000 idle API connections, and 2,000 TCP connections to the cluster DNS from
    // a pod: `get` still answers.
    let idle: Vec<UnixStream> = (0..2000)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let script = "import socket,sys,time\ncs=[socket.create_connection(('10.96.0.10',53),timeout=5) for _ in range(2000)]\nprint(len(cs),flush=True)\ntime.sleep(30)\n";
    let mut dns = testbed_bin()
        .args([
            "exec", "-t", &name, "client-1", "--", "python3", "-c", script,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut opened = String::new();
    BufReader::new(dns.stdout.as_mut().unwrap())
        .read_line(&mut opened)
        .unwrap();
    assert_eq!(opened.trim(), "2000");
    let out = testbed(&["get", "pods", "-t", &name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("client-1"));
    let dig = testbed(&[
        "exec",
        "-t",
        &name,
        "client-2",
        "--",
        "dig",
        "+tcp",
        "+short",
        "kubernetes.default.svc.cluster.local",
    ]);
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), "10.96.0.1");
    let rss = rss_kib(pid);
    assert!(rss < 100 << 10, "the testbed's process holds {rss} KiB");
    dns.kill().unwrap();
    dns.wait().unwrap();
    drop(idle);
    run(testbed_bin().args(["down", &name]));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `testbed ARGS` with stdout a pipe whose reader is already gone, as in
/// `testbed ARGS | true`.
fn into_a_closed_pipe(args: &[&str]) -> Output {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    testbed_bin()
        .args(args)
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_the_cli_as_sigpipe_does_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    if !root() {
        return;
    }
    let name = unique_name("pipe");
    let up = into_a_closed_pipe(&["up", &two_nodes(), "--name", &name]);
    let get = into_a_closed_pipe(&["get", "pods", "-t", &name]);
    let ls = into_a_closed_pipe(&["ls"]);
    for (what, out) in [("up", &up), ("get", &get), ("ls", &ls)] {
        assert!(!stderr(out).contains("panicked"), "{what}: {}", stderr(out));
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{what}: {:?} {}",
            out.status,
            stderr(out)
        );
    }
    // The testbed came up all the same, and goes down as usual.
    let down = testbed(&["down", &name]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(traces(&name), Vec::<String>::new());
}

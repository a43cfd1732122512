//! Faults are made in the testbed's own namespaces: a run interrupted while they are
//! in force leaves none of them (no namespace, so no qdisc and no nf_tables table),
//! and nothing of them on the host. Needs root.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The host's own qdiscs and nf_tables tables (its interfaces, its ruleset).
fn host_faults() -> (String, String) {
    (
        run(Command::new("tc").args(["qdisc", "show"])),
        run(Command::new("nft").args(["list", "tables"])),
    )
}

fn in_netns(netns: &str, argv: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(argv)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_run_interrupted_while_faults_are_in_force_leaves_nothing_of_them() {
    if !root() {
        return;
    }
    let before = host_faults();
    let name = unique_name("faulty");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("faulty.yaml");
    std::fs::write(
        &file,
        "name: faulty\ncluster: {nodes: 2}\nsteps:\n  \
         - fault: {link: node/node-2, rate: 1mbit}\n  \
         - fault: {link: node/node-1, loss: 50%}\n  \
         - sleep: 60s\n",
    )
    .unwrap();
    let mut child = testbed_bin()
        .args(["run", &file.display().to_string(), "--name", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both faults in force: the tbf on node-2's eth0, the bridge table on the fabric.
    let (node2, fabric) = (format!("tb.{name}.node-2"), format!("tb.{name}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let qdisc = in_netns(&node2, &["tc", "qdisc", "show", "dev", "eth0"]);
        let tables = in_netns(&fabric, &["nft", "list", "tables"]);
        if qdisc.contains("tbf") && tables.contains("bridge") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the faults never came: {qdisc} {tables}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the run did not end at SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "an interrupted run fails: {err}");
    let left: Vec<String> = run(Command::new("ip").args(["netns", "list"]))
        .lines()
        .filter(|l| l.starts_with(&format!("{fabric} ")) || l.starts_with(&format!("{fabric}.")))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}\n{err}");
    assert_eq!(host_faults(), before, "the host's qdiscs and tables");
    std::fs::remove_dir_all(dir).unwrap();
}

//! `testbed down` leaves the host's `ip netns list`, `ip link` and `iptables-save`
//! exactly as they were before `up`. Needs root. Alone in its file: it compares the
//! whole host, so no other test may make namespaces meanwhile.

mod common;

use std::process::Command;

use common::*;

fn host() -> [String; 4] {
    let ipt = Command::new("iptables-save")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string());
    [
        run(Command::new("ip").args(["netns", "list"])),
        run(Command::new("ip").args(["-d", "link"])),
        run(Command::new("ip").args(["route", "show", "table", "all"])),
        // iptables-save prints dates in comments; compare the rules.
        ipt.unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    ]
}

#[test]
fn up_then_down_leaves_the_host_exactly_as_it_was() {
    if !root() {
        return;
    }
    let before = host();
    let name = unique_name("host");
    let out = run(testbed_bin().args([
        "up",
        &repo()
            .join("scenarios/two-nodes.yaml")
            .display()
            .to_string(),
        "--name",
        &name,
    ]));
    assert!(out.contains("ready in"));
    let during = host();
    assert_ne!(
        during[0], before[0],
        "the testbed's namespaces are listed while it runs"
    );
    assert_eq!(during[1], before[1], "no link is made on the host");
    run(testbed_bin().args(["down", &name]));
    assert_eq!(host(), before);
}

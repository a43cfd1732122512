//! The system tools a testbed runs, the Debian/Ubuntu package of each, and a check
//! that they are on the PATH before anything is built (`testbed doctor` lists them).

use std::path::{Path, PathBuf};

/// A program the testbed (or its users, inside pods) runs.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
    /// What it is for, as `doctor` says it.
    pub used_for: &'static str,
    /// Needed to bring a cluster up (`up`, `run`, `bench`); the others are the
    /// clients a user runs in pods, and the tests' and benchmarks' helpers.
    pub needed: bool,
}

const fn tool(
    program: &'static str,
    package: &'static str,
    used_for: &'static str,
    needed: bool,
) -> Tool {
    Tool {
        program,
        package,
        used_for,
        needed,
    }
}

/// Every tool, the needed ones first.
pub const TOOLS: &[Tool] = &[
    tool(
        "iptables-restore",
        "iptables",
        "kube-proxy writes each node's rules",
        true,
    ),
    tool(
        "iptables-save",
        "iptables",
        "snapshots and `testbed exec` read the rules",
        true,
    ),
    tool(
        "conntrack",
        "conntrack",
        "kube-proxy flushes UDP flows of removed endpoints",
        true,
    ),
    tool(
        "nsenter",
        "util-linux",
        "kube-proxy runs iptables inside a node",
        true,
    ),
    tool(
        "ip",
        "iproute2",
        "faults (node down, link cut) and the tour's commands",
        true,
    ),
    tool(
        "tc",
        "iproute2",
        "fault steps' rate limits and delays (qdiscs)",
        false,
    ),
    tool(
        "nft",
        "nftables",
        "the flush step, and fault steps' loss and partitions",
        false,
    ),
    tool("curl", "curl", "HTTP from inside pods", false),
    tool("nc", "netcat-openbsd", "TCP/UDP from inside pods", false),
    tool(
        "dig",
        "dnsutils",
        "DNS questions from inside pods; the DNS tests",
        false,
    ),
    tool("python3", "python3", "the DNS tests' small servers", false),
    tool(
        "hostname",
        "hostname",
        "pods' hostnames; the DNS tests",
        false,
    ),
    tool("dnsperf", "dnsperf", "`testbed bench dns`", false),
    tool(
        "nsd",
        "nsd",
        "`testbed bench dns` (the reference server)",
        false,
    ),
];

/// Where `program` is on the PATH, if it is.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The needed tools that are not on the PATH.
pub fn missing_needed() -> Vec<Tool> {
    missing(TOOLS.iter().filter(|t| t.needed))
}

/// Of `tools`, the ones not on the PATH.
pub fn missing<'a>(tools: impl IntoIterator<Item = &'a Tool>) -> Vec<Tool> {
    tools
        .into_iter()
        .filter(|t| find(t.program).is_none())
        .copied()
        .collect()
}

/// An error naming each missing tool and the package that brings it, or `Ok` when
/// every needed tool is there.
pub fn require(missing: &[Tool]) -> Result<(), String> {
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    packages.sort();
    packages.dedup();
    let lines: Vec<String> = missing
        .iter()
        .map(|t| format!("  {} (package {}): {}", t.program, t.package, t.used_for))
        .collect();
    Err(format!(
        "{} not on the PATH:\n{}\ninstall with `sudo apt-get install {}` \
         (or run ./scripts/setup); `testbed doctor` lists every tool",
        if missing.len() == 1 {
            "a tool testbed needs is".to_string()
        } else {
            format!("{} tools testbed needs are", missing.len())
        },
        lines.join("\n"),
        packages.join(" ")
    ))
}

/// Checks the needed tools before a cluster is built.
pub fn check_needed() -> Result<(), String> {
    require(&missing_needed()).map_err(|e| format!("{e}\nnothing was built"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let gone = [TOOLS[0], TOOLS[2]];
        let e = require(&gone).unwrap_err();
        assert!(
            e.starts_with("2 tools testbed needs are not on the PATH"),
            "{e}"
        );
        assert!(e.contains("iptables-restore (package iptables)"), "{e}");
        assert!(e.contains("conntrack (package conntrack)"), "{e}");
        assert!(e.contains("sudo apt-get install conntrack iptables"), "{e}");
        assert_eq!(require(&[]), Ok(()));
    }

    #[test]
    fn tools_are_found_on_the_path_only() {
        assert!(find("sh").is_some());
        assert!(find("no-such-tool-anywhere").is_none());
    }
}

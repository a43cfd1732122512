//! Every name the testbed gives to a kernel object, in one place.
//!
//! Network namespaces carry the testbed's name so that two testbeds never meet and
//! `testbed clean` can find what a killed one left:
//!
//! | object | netns name            | example                    |
//! |--------|-----------------------|----------------------------|
//! | fabric | `tb.<testbed>`        | `tb.demo`                  |
//! | node   | `tb.<testbed>.<node>` | `tb.demo.node-1`           |
//! | pod    | `tb.<testbed>.<ns>.<pod>` | `tb.demo.default.web-1` |
//!
//! Node, namespace and pod names are DNS-1123 labels (no dots), so the number of dots
//! tells a node from a pod. Interface names are at most 15 bytes (`IFNAMSIZ - 1`).

use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;

/// Every netns and state directory of a testbed starts with this.
pub const PREFIX: &str = "tb";
/// The bridge in the fabric namespace that joins the nodes.
pub const UNDERLAY_BRIDGE: &str = "underlay";
/// The bridge in each node that is its pods' gateway (kubenet's name).
pub const NODE_BRIDGE: &str = "cbr0";
/// The interface of a node on the underlay, and of a pod on its node's bridge.
pub const ETH0: &str = "eth0";
/// Longest interface name Linux accepts.
pub const IFNAME_MAX: usize = 15;
/// Longest testbed name; it appears in every netns name.
pub const TESTBED_NAME_MAX: usize = 32;

pub fn fabric_netns(testbed: &str) -> String {
    format!("{PREFIX}.{testbed}")
}

pub fn node_netns(testbed: &str, node: &str) -> String {
    format!("{PREFIX}.{testbed}.{node}")
}

/// ```
/// use testbed::names;
/// assert_eq!(names::pod_netns("demo", "default", "web-1"), "tb.demo.default.web-1");
/// assert!(names::netns_belongs_to("tb.demo.default.web-1", "demo"));
/// ```
pub fn pod_netns(testbed: &str, namespace: &str, pod: &str) -> String {
    format!("{PREFIX}.{testbed}.{namespace}.{pod}")
}

/// The testbed a namespace made by the testbed belongs to (`tb.<testbed>[.…]`).
pub fn testbed_of_netns(netns: &str) -> Option<&str> {
    let rest = netns.strip_prefix(PREFIX)?.strip_prefix('.')?;
    let name = rest.split('.').next()?;
    (!name.is_empty()).then_some(name)
}

/// True when `netns` belongs to testbed `testbed` (its fabric, a node or a pod).
pub fn netns_belongs_to(netns: &str, testbed: &str) -> bool {
    let fabric = fabric_netns(testbed);
    netns == fabric
        || netns
            .strip_prefix(&fabric)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The node-side end of a pod's veth pair: `veth` + 8 hex digits of a hash of
/// `namespace/pod`, like the CNI plugins' host-side names (stable and short).
pub fn pod_host_veth(namespace: &str, pod: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{pod}").as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("veth{hex}")
}

/// A locally administered MAC address that embeds an IPv4 address, so that MACs are
/// the same on every run (snapshots stay stable, and a bridge keeps the address it
/// was given instead of taking its lowest port's). `kind` keeps the two ends of a
/// link apart.
pub fn mac_for(kind: MacKind, ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, kind as u8, o[0], o[1], o[2], o[3]]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MacKind {
    /// An interface that owns the address (pod eth0, node eth0, a bridge).
    Owner = 0x42,
    /// The peer port of a veth pair on a bridge.
    Port = 0x43,
}

/// Checks a DNS-1123 label (RFC 1123): lowercase alphanumerics and '-', starting and
/// ending alphanumeric, 1..=max bytes. Returns what is wrong.
pub fn check_dns1123_label(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > max {
        return Err(format!(
            "is {} characters long, at most {max} are allowed",
            name.len()
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if let Some(bad) = name.chars().find(|c| !ok_char(*c)) {
        return Err(format!(
            "contains {bad:?}: only lowercase letters, digits and '-' are allowed (a DNS-1123 label)"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or digit (a DNS-1123 label)".into());
    }
    Ok(())
}

/// Kubernetes label syntax: an optional DNS prefix and '/', a name of at most 63
/// characters, and a value of at most 63 characters (both alphanumeric at the ends,
/// with '-', '_' and '.' inside).
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let part_ok = |s: &str| {
        s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
            && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
    };
    let name = key.rsplit_once('/').map_or(key, |(prefix, name)| {
        if prefix.is_empty() || prefix.len() > 253 {
            ""
        } else {
            name
        }
    });
    if name.is_empty() || !part_ok(name) {
        return Err(format!(
            "label key {key:?} is invalid: at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit, with an optional DNS prefix and '/'"
        ));
    }
    if !part_ok(value) {
        return Err(format!(
            "label value {value:?} of {key:?} is invalid: at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// `n` characters for a generated name from `bytes` (a hash), in the alphabet
/// Kubernetes uses for name suffixes (no vowels, no look-alikes).
pub fn k8s_suffix(bytes: &[u8], n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    bytes
        .iter()
        .take(n)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_names() {
        assert_eq!(fabric_netns("demo"), "tb.demo");
        assert_eq!(node_netns("demo", "node-1"), "tb.demo.node-1");
        assert_eq!(
            pod_netns("demo", "default", "web-1"),
            "tb.demo.default.web-1"
        );
    }

    #[test]
    fn ownership_by_prefix() {
        assert!(netns_belongs_to("tb.demo", "demo"));
        assert!(netns_belongs_to("tb.demo.node-1", "demo"));
        assert!(!netns_belongs_to("tb.demo2.node-1", "demo"));
        assert!(!netns_belongs_to("tb.dem", "demo"));
        assert!(!netns_belongs_to("other", "demo"));
    }

    #[test]
    fn host_veth_is_pinned_and_short() {
        // A pinned value: changing the hash changes every node's interface names.
        assert_eq!(pod_host_veth("default", "web-1"), "veth96603d4d");
        assert_ne!(
            pod_host_veth("default", "web-1"),
            pod_host_veth("other", "web-1")
        );
        assert!(pod_host_veth("default", &"a".repeat(63)).len() <= IFNAME_MAX);
    }

    #[test]
    fn macs_embed_the_address() {
        let ip = Ipv4Addr::new(10, 244, 1, 2);
        assert_eq!(mac_for(MacKind::Owner, ip), [0x02, 0x42, 10, 244, 1, 2]);
        assert_ne!(mac_for(MacKind::Port, ip), mac_for(MacKind::Owner, ip));
    }

    #[test]
    fn the_testbed_of_a_namespace() {
        assert_eq!(testbed_of_netns("tb.demo"), Some("demo"));
        assert_eq!(testbed_of_netns("tb.demo.node-1"), Some("demo"));
        assert_eq!(
            testbed_of_netns("tb.demo.kube-system.coredns-x"),
            Some("demo")
        );
        assert_eq!(testbed_of_netns("tbx.demo"), None);
        assert_eq!(testbed_of_netns("tb."), None);
        assert_eq!(testbed_of_netns("other"), None);
    }

    #[test]
    fn dns1123_labels() {
        assert!(check_dns1123_label("web-1", 63).is_ok());
        assert!(check_dns1123_label("", 63).is_err());
        assert!(check_dns1123_label("Web", 63).unwrap_err().contains("'W'"));
        assert!(check_dns1123_label("a.b", 63).is_err());
        assert!(check_dns1123_label("-a", 63).is_err());
        assert!(check_dns1123_label(&"a".repeat(64), 63)
            .unwrap_err()
            .contains("64 characters"));
    }
}

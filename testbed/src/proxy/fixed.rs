//! The part of kube-proxy's iptables layout that no Service changes: its shared
//! chains and their fixed rules, the 14 jumps from the kernel's built-in chains into
//! them, and the canary chains whose absence tells that someone flushed the tables.
//! Upstream ensures the jumps with `iptables -C`/`-I` outside its restores and watches
//! `KUBE-PROXY-CANARY` in mangle, nat and filter every sync period.

use std::collections::BTreeSet;

use super::render::{Config, MASQ_MARK};

/// The filter table's chains kube-proxy owns (`KUBE-FIREWALL` is the kubelet's,
/// written by kube-proxy as well).
pub const FILTER_CHAINS: [&str; 6] = [
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FORWARD",
    "KUBE-NODEPORTS",
    "KUBE-PROXY-FIREWALL",
    "KUBE-FIREWALL",
];

/// The nat table's chains kube-proxy owns.
pub const NAT_CHAINS: [&str; 4] = [
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
];

/// The chain whose absence means the tables were flushed.
pub const CANARY: &str = "KUBE-PROXY-CANARY";
/// The tables that hold a canary, as upstream's `ipt.Monitor` watches them.
pub const CANARY_TABLES: [&str; 3] = ["mangle", "nat", "filter"];

/// Rules of the fixed filter chains: `KUBE-FIREWALL`'s guard of localhost node
/// ports and `KUBE-FORWARD`.
pub fn filter_fixed_rules(cfg: &Config) -> Vec<String> {
    let invalid = if cfg.nfacct {
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP"
    } else {
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
    };
    let mut v = Vec::new();
    if cfg.localhost_node_ports {
        v.push("-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP".into());
    }
    v.extend([
        invalid.into(),
        format!("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"),
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
    ]);
    v
}

/// Rules of the fixed nat chains other than `KUBE-SERVICES`. The MASQUERADE has
/// `--random-fully`, as kube-proxy writes it when iptables has the option (1.6.2 and
/// later: every iptables this runs on), so that two pods' flows through one node do
/// not race for one source port.
pub fn nat_fixed_rules() -> Vec<String> {
    vec![
        format!("-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
        format!("-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}"),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
        format!("-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}"),
    ]
}

/// The last rule of nat `KUBE-SERVICES`: node ports on every local address, but
/// 127.0.0.0/8 when localhost node ports are off.
pub fn nodeports_jump(cfg: &Config) -> &'static str {
    if cfg.localhost_node_ports {
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    } else {
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"
    }
}

/// A jump from a built-in chain, as `iptables -S` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    pub table: &'static str,
    pub rule: &'static str,
}

impl Jump {
    /// The built-in chain it is in.
    pub fn chain(&self) -> &'static str {
        self.rule.split(' ').nth(1).unwrap_or_default()
    }

    /// The restore line that puts it first in its chain (upstream's
    /// `EnsureRule(Prepend, ...)`).
    pub fn prepend(&self) -> String {
        let spec = self
            .rule
            .split_once(' ')
            .map(|(_, r)| r)
            .unwrap_or_default();
        let (chain, rest) = spec.split_once(' ').unwrap_or((spec, ""));
        format!("-I {chain} 1 {rest}")
    }
}

/// Every jump, in the order they are ensured: the kubelet's two into `KUBE-FIREWALL`
/// (the kubelet starts first), then kube-proxy's `iptablesJumpChains`. Each is
/// prepended when missing, so a node's chains read as a real node's do: INPUT is
/// `KUBE-PROXY-FIREWALL`, `KUBE-NODEPORTS`, `KUBE-EXTERNAL-SERVICES`, `KUBE-FIREWALL`.
pub const JUMPS: [Jump; 14] = [
    Jump { table: "filter", rule: "-A INPUT -j KUBE-FIREWALL" },
    Jump { table: "filter", rule: "-A OUTPUT -j KUBE-FIREWALL" },
    Jump { table: "filter", rule: "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES" },
    Jump { table: "filter", rule: "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES" },
    Jump { table: "filter", rule: "-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS" },
    Jump { table: "filter", rule: "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" },
    Jump { table: "filter", rule: "-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" },
    Jump { table: "filter", rule: "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD" },
    Jump { table: "filter", rule: "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL" },
    Jump { table: "filter", rule: "-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL" },
    Jump { table: "filter", rule: "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL" },
    Jump { table: "nat", rule: "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" },
    Jump { table: "nat", rule: "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" },
    Jump { table: "nat", rule: "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING" },
];

/// The script that lists what a node holds outside the restores: a line
/// `no-canary TABLE` for each canary missing, then `*TABLE` and `iptables -S` of each
/// built-in chain a jump is in.
pub fn check_script() -> String {
    let mut s = String::new();
    for t in CANARY_TABLES {
        s.push_str(&format!(
            "iptables -w -t {t} -S {CANARY} >/dev/null 2>&1 || echo no-canary {t}\n"
        ));
    }
    for table in ["filter", "nat"] {
        s.push_str(&format!("echo '*{table}'\n"));
        let chains: BTreeSet<&str> = JUMPS
            .iter()
            .filter(|j| j.table == table)
            .map(|j| j.chain())
            .collect();
        for c in chains {
            s.push_str(&format!("iptables -w -t {table} -S {c} 2>/dev/null\n"));
        }
    }
    s
}

/// What a node's check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Tables whose canary is gone: the tables were flushed.
    pub canaries_gone: Vec<String>,
    /// Jumps not in their chains.
    pub missing: Vec<Jump>,
}

/// Reads the output of [`check_script`].
pub fn read_check(output: &str) -> Found {
    let mut found = Found::default();
    let mut table = "";
    let mut present: BTreeSet<(&str, &str)> = BTreeSet::new();
    for line in output.lines() {
        if let Some(t) = line.strip_prefix("no-canary ") {
            found.canaries_gone.push(t.to_string());
        } else if let Some(t) = line.strip_prefix('*') {
            table = t;
        } else {
            present.insert((table, line.trim_end()));
        }
    }
    found.missing = JUMPS
        .iter()
        .filter(|j| !present.contains(&(j.table, j.rule)))
        .copied()
        .collect();
    found
}

/// Restore input that prepends `missing` in order, one section per table.
pub fn ensure_text(missing: &[Jump]) -> String {
    let mut out = String::new();
    for table in ["filter", "nat"] {
        let lines: Vec<String> = missing
            .iter()
            .filter(|j| j.table == table)
            .map(Jump::prepend)
            .collect();
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("*{table}\n"));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_finds_the_missing_jumps_and_canaries() {
        let mut out = String::from("no-canary nat\n*filter\n-P INPUT ACCEPT\n");
        for j in JUMPS.iter().filter(|j| j.table == "filter") {
            out.push_str(j.rule);
            out.push('\n');
        }
        out.push_str("*nat\n-P PREROUTING ACCEPT\n");
        out.push_str(JUMPS[11].rule);
        out.push('\n');
        let found = read_check(&out);
        assert_eq!(found.canaries_gone, vec!["nat".to_string()]);
        assert_eq!(found.missing, vec![JUMPS[12], JUMPS[13]]);
        assert_eq!(
            ensure_text(&found.missing),
            "*nat\n-I PREROUTING 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-I POSTROUTING 1 -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\nCOMMIT\n"
        );
        // A jump in the other table's chain of the same name does not count.
        let found = read_check("*nat\n-A OUTPUT -j KUBE-FIREWALL\n");
        assert!(found.missing.contains(&JUMPS[1]));
        assert!(found.canaries_gone.is_empty());
    }

    #[test]
    fn the_fourteen_jumps_are_kube_proxys_and_the_kubelets() {
        assert_eq!(JUMPS.len(), 14);
        let into = |c: &str| {
            JUMPS
                .iter()
                .filter(|j| j.rule.ends_with(&format!("-j {c}")))
                .count()
        };
        assert_eq!(into("KUBE-PROXY-FIREWALL"), 3);
        assert_eq!(into("KUBE-EXTERNAL-SERVICES"), 2);
        assert_eq!(into("KUBE-FIREWALL"), 2);
        assert_eq!(JUMPS[0].prepend(), "-I INPUT 1 -j KUBE-FIREWALL");
    }
}

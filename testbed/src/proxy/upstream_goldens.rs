//! Comparing our restore input with kube-proxy's goldens
//! (`tests/kube-proxy/iptables-goldens.yaml`, run by `upstream_tests`): both
//! normalised as upstream's `assertIPTablesRulesEqual` does.

use std::collections::BTreeMap;

/// One table of restore input: its chains in declaration order, rules by chain.
type Table = (Vec<String>, BTreeMap<String, Vec<String>>);

#[derive(Default)]
struct Dump {
    tables: BTreeMap<String, Table>,
}

fn parse(text: &str) -> Dump {
    let mut d = Dump::default();
    let mut table = String::new();
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
            d.tables.entry(table.clone()).or_default();
        } else if l == "COMMIT" {
            continue;
        } else if let Some(c) = l.strip_prefix(':') {
            let name = c.split(' ').next().unwrap().to_string();
            let t = d.tables.get_mut(&table).unwrap();
            if !t.0.contains(&name) {
                t.0.push(name);
            }
        } else {
            let chain = l.split(' ').nth(1).unwrap().to_string();
            let t = d.tables.get_mut(&table).unwrap();
            t.1.entry(chain).or_default().push(l.to_string());
        }
    }
    d
}

/// The service name of a rule's comment (up to a space or a colon), as upstream's
/// `orderByCommentServiceName`.
fn comment_service(rule: &str) -> String {
    let Some(i) = rule.find("--comment ") else {
        return String::new();
    };
    let c = rule[i + 10..].trim_start_matches('"');
    c.split([' ', ':', '"'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Upstream's `sortIPTablesRules`: tables by name; KUBE-NODEPORTS, KUBE-SERVICES,
/// the other KUBE- chains by name, then the rest; the rules of KUBE-NODEPORTS and
/// KUBE-SERVICES (stably) by service name, the "must be the last rule" rule last.
fn normalise(text: &str) -> String {
    let d = parse(text);
    let mut out = String::new();
    for (name, (mut chains, mut rules)) in d.tables {
        let rank = |c: &str| match c {
            "KUBE-NODEPORTS" => 0,
            "KUBE-SERVICES" => 1,
            c if c.starts_with("KUBE-") => 2,
            _ => 3,
        };
        chains.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
        for c in ["KUBE-NODEPORTS", "KUBE-SERVICES"] {
            if let Some(r) = rules.get_mut(c) {
                r.sort_by_key(|l| (l.contains("must be the last rule"), comment_service(l)));
            }
        }
        out.push_str(&format!("*{name}\n"));
        for c in &chains {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for c in &chains {
            for r in rules.get(c).into_iter().flatten() {
                out.push_str(r);
                out.push('\n');
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Our differences from upstream on purpose, taken out of our output (see the file).
fn without_intended_differences(ours: &str) -> String {
    let mut out = String::new();
    let mut skip_table = false;
    for l in ours.lines() {
        if l == "*mangle" {
            skip_table = true;
        }
        if !skip_table && l != ":KUBE-PROXY-CANARY - [0:0]" {
            out.push_str(&l.replace(" -j MASQUERADE --random-fully", " -j MASQUERADE"));
            out.push('\n');
        }
        if l == "COMMIT" {
            skip_table = false;
        }
    }
    out
}

/// Our restore input equals upstream's golden once both are normalised and our
/// intended differences are taken out.
pub(super) fn assert_golden(what: &str, expected: &str, ours: &str) {
    let ours = normalise(&without_intended_differences(ours));
    pretty_eq(normalise(expected), ours, what);
}

/// The rules of one chain of one table of restore input, in order.
pub(super) fn chain_rules<'a>(text: &'a str, table: &str, chain: &str) -> Vec<&'a str> {
    let mut in_table = false;
    let prefix = format!("-A {chain} ");
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix('*') {
            in_table = t == table;
        } else if in_table && l.starts_with(&prefix) {
            out.push(l);
        }
    }
    out
}

/// Equal, or a panic that shows the lines each side lacks.
fn pretty_eq(theirs: String, ours: String, what: &str) {
    if theirs == ours {
        return;
    }
    let t: Vec<&str> = theirs.lines().collect();
    let o: Vec<&str> = ours.lines().collect();
    let only_theirs: Vec<&&str> = t.iter().filter(|l| !o.contains(l)).collect();
    let only_ours: Vec<&&str> = o.iter().filter(|l| !t.contains(l)).collect();
    panic!(
        "{what}: our rules differ from upstream's\nonly upstream's:\n{}\nonly ours:\n{}\nours in full:\n{ours}",
        only_theirs.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
        only_ours.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
    );
}

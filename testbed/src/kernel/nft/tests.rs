use super::*;

/// Every rule shape kube-proxy's nftables mode writes, and the rarer ones its
/// options bring (several source ranges, merged where they touch; a range at either
/// end of the address space; node ports on every address; SCTP; a drop verdict).
const SHAPES: &str = r#"add table ip kube-proxy { comment "rules for kube-proxy" ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy firewall
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip kube-proxy services
add chain ip kube-proxy ep-a
add chain ip kube-proxy ep-b
add chain ip kube-proxy svc
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add set ip kube-proxy aff-a { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy filter-forward ct state new jump firewall
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy firewall ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy firewall ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy firewall ip saddr != { 203.0.113.0/25 , 198.51.100.7 , 10.0.0.0/8 , 11.0.0.0/8 } drop
add rule ip kube-proxy firewall ip saddr != { 0.0.0.0/1 , 255.255.255.255 } drop
add rule ip kube-proxy firewall ip saddr != { 192.168.0.0/16 } drop
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
add rule ip kube-proxy svc ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy svc ip saddr 10.0.0.0/8 goto ep-a comment "short-circuit pod traffic"
add rule ip kube-proxy svc fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy svc ip saddr @aff-a goto ep-a
add rule ip kube-proxy svc numgen random mod 2 vmap { 0 : goto ep-a , 1 : goto ep-b }
add rule ip kube-proxy ep-a ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy ep-a update @aff-a { ip saddr }
add rule ip kube-proxy ep-a meta l4proto tcp dnat to 10.180.0.1:80
add rule ip kube-proxy ep-b meta l4proto sctp dnat to 10.180.0.2:9999
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto svc }
add element ip kube-proxy service-ips { 172.30.0.42 . udp . 53 comment "ns/name:dns : odd" : drop }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 8080 : jump reject-chain }
add element ip kube-proxy service-nodeports { sctp . 30001 : goto svc }
"#;

/// Then a partial sync: a flush, a delete of each kind, and new rules.
const CHANGES: &str = r#"flush chain ip kube-proxy ep-b
delete element ip kube-proxy service-ips { 172.30.0.42 . udp . 53 }
delete element ip kube-proxy cluster-ips { 172.30.0.41 }
add rule ip kube-proxy ep-b meta l4proto udp dnat to 10.180.0.3:53
flush chain ip kube-proxy svc
flush chain ip kube-proxy ep-a
delete set ip kube-proxy aff-a
add rule ip kube-proxy svc numgen random mod 1 vmap { 0 : goto ep-b }
delete chain ip kube-proxy ep-a
"#;

/// A Service of `n` endpoints: its map takes several messages.
fn many_endpoints(n: usize) -> String {
    let mut text = String::new();
    let chain = |i: usize| {
        format!(
            "endpoint-{i:08}-a-namespace/a-service-of-many-pods/tcp/http__10.244.{}.{}/8080",
            i / 250,
            i % 250
        )
    };
    for i in 0..n {
        text += &format!("add chain ip kube-proxy {}\n", chain(i));
    }
    let picks: Vec<String> = (0..n).map(|i| format!("{i} : goto {}", chain(i))).collect();
    text += &format!(
        "add chain ip kube-proxy big\nadd rule ip kube-proxy big numgen random mod {n} vmap {{ {} }}\n",
        picks.join(" , ")
    );
    text
}

fn netns(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/run/netns/{name}"))
}

/// Runs a command, feeding it `stdin`: its stdout; it must succeed.
pub(crate) fn sh(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Namespaces made for a root test, removed when dropped.
pub(crate) struct Scratch(pub Vec<String>);

impl Scratch {
    /// `tbunit-WHAT-PID-NAME` for each name; none when not root (outside CI only:
    /// in CI a root test may not be skipped).
    pub(crate) fn new(what: &str, names: &[&str]) -> Option<Scratch> {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").is_err(),
                "needs root, and CI=true: may not be skipped"
            );
            return None;
        }
        let pid = std::process::id();
        let s = Scratch(
            names
                .iter()
                .map(|n| format!("tbunit-{what}-{pid}-{n}"))
                .collect(),
        );
        for n in &s.0 {
            sh(&["ip", "netns", "add", n], None);
        }
        Some(s)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", n])
                .status();
        }
    }
}

#[test]
fn every_shape_lists_as_nft_writes_it() {
    let Some(scratch) = Scratch::new("nl", &["nft", "ours"]) else {
        return;
    };
    let ns = &scratch.0;
    let list = |n: &str| sh(&["ip", "netns", "exec", n, "nft", "list", "ruleset"], None);
    for text in [SHAPES, CHANGES, &many_endpoints(300)] {
        sh(
            &["ip", "netns", "exec", &ns[0], "nft", "-f", "-"],
            Some(text),
        );
        socket::apply(&netns(&ns[1]), &compile(text).unwrap()).unwrap();
        let (theirs, ours) = (list(&ns[0]), list(&ns[1]));
        assert_eq!(theirs, ours, "after:\n{text}");
    }
    // The kernel refuses a chain that does not exist; the error names its line and
    // nothing of the batch is applied.
    let before = list(&ns[1]);
    let bad = "add chain ip kube-proxy new-one\nadd rule ip kube-proxy nowhere jump services\n";
    let err = socket::apply(&netns(&ns[1]), &compile(bad).unwrap()).unwrap_err();
    assert_eq!(
        err,
        "the kernel refused line 2: No such file or directory (os error 2)"
    );
    assert_eq!(list(&ns[1]), before);
}

#[test]
fn a_service_of_two_thousand_endpoints_fits_in_its_messages() {
    let tx = compile(&many_endpoints(2000)).unwrap();
    // 2,000 chains, then a chain and its rule (a map of 2,000 in 16 messages).
    assert_eq!(tx.lines.len(), 2002);
    assert!(tx.bytes.len() > 2000 * 150, "{}", tx.bytes.len());
}

#[test]
fn a_line_it_cannot_write_is_named() {
    let err = compile("add table ip kube-proxy\nadd rule ip kube-proxy c tcp dport 80 accept\n")
        .err()
        .unwrap();
    assert_eq!(
        err,
        "line 2: unknown word \"tcp\": add rule ip kube-proxy c tcp dport 80 accept"
    );
    let err = compile("add chain inet t c").err().unwrap();
    assert_eq!(
        err,
        "line 1: only the ip family is written: add chain inet t c"
    );
    let err = compile("add element ip t s { 1.2.3.4 . gre }")
        .err()
        .unwrap();
    assert!(err.contains("element key field \"gre\""), "{err}");
    let err = compile("add rule ip t c ip saddr != { } drop")
        .err()
        .unwrap();
    assert!(err.contains("an empty set"), "{err}");
    let long = format!("add chain ip t c {{ comment \"{}\" ; }}", "x".repeat(129));
    assert!(compile(&long).err().unwrap().contains("129 bytes"));
    // A comment may hold what separates a key from its verdict.
    assert!(
        compile("add element ip t m { 1.2.3.4 . tcp . 80 comment \"a : b\" : goto c }").is_ok()
    );
}

#[test]
fn interval_sets_start_with_an_end_and_merge_what_touches() {
    let r = |a: [u8; 4], b: [u8; 4]| (u32::from_be_bytes(a), u32::from_be_bytes(b));
    // 10.0.0.0/8 and 11.0.0.0/8 touch: one range, then its end.
    let rule = rule::parse("ip saddr != { 11.0.0.0/8 , 10.0.0.0/8 , 1.2.3.4 } drop").unwrap();
    let Some(Anon::Ranges { ranges, .. }) = rule.anon else {
        panic!("{rule:?}")
    };
    assert_eq!(
        ranges,
        [
            r([1, 2, 3, 4], [1, 2, 3, 4]),
            r([10, 0, 0, 0], [11, 255, 255, 255])
        ]
    );
    assert_eq!(
        range_elements(&ranges),
        [
            (0, true, false),
            (r([1, 2, 3, 4], [0; 4]).0, false, false),
            (r([1, 2, 3, 5], [0; 4]).0, true, false),
            (r([10, 0, 0, 0], [0; 4]).0, false, false),
            (r([12, 0, 0, 0], [0; 4]).0, true, false),
        ]
    );
    // One prefix is a comparison, on whole bytes a shorter load.
    let rule = rule::parse("ip saddr 10.0.0.0/8 drop").unwrap();
    assert_eq!(rule.anon, None);
    assert!(matches!(rule.exprs[0], expr::Expr::Payload { len: 1, .. }));
}

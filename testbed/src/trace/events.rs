//! What `nft monitor trace` prints, read back: each line is one event of one traced
//! packet (`trace id 74952688 ip nat KUBE-SERVICES rule ... (verdict jump X)`), and a
//! `packet:` line opens the packet's pass through one base chain. This file turns
//! the lines into [`Pass`]es and picks those of one packet.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// One packet's pass through one base chain and the chains it jumped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub id: String,
    /// `ip nat PREROUTING`: where the pass began.
    pub table: String,
    pub chain: String,
    pub packet: Packet,
    /// Each rule it matched (or the policy it fell to), in order.
    pub steps: Vec<Step>,
}

/// A rule the packet matched, or the policy of a base chain it fell to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub table: String,
    pub chain: String,
    /// The rule as nft prints it, without counters; empty for a policy.
    pub rule: String,
    /// `jump KUBE-SERVICES`, `accept`, `drop`, `continue`, `return`.
    pub verdict: String,
}

/// The header fields of a traced packet that a trace needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packet {
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub saddr: Option<Ipv4Addr>,
    pub daddr: Option<Ipv4Addr>,
    /// The IP header's id: the same in every pass of one packet.
    pub ip_id: Option<u32>,
    pub protocol: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// `syn`, `ack`, ... as nft prints them, for TCP.
    pub flags: Option<String>,
}

impl Packet {
    fn parse(text: &str) -> Packet {
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut p = Packet::default();
        let after = |i: usize| words.get(i + 1).copied();
        for (i, w) in words.iter().enumerate() {
            let prev = if i > 0 { words[i - 1] } else { "" };
            match (prev, *w) {
                (_, "iif") => p.iif = after(i).map(unquote),
                (_, "oif") => p.oif = after(i).map(unquote),
                ("ip", "saddr") => p.saddr = after(i).and_then(|v| v.parse().ok()),
                ("ip", "daddr") => p.daddr = after(i).and_then(|v| v.parse().ok()),
                ("ip", "id") => p.ip_id = after(i).and_then(|v| v.parse().ok()),
                ("tcp" | "udp" | "sctp", "sport") => {
                    p.protocol = Some(prev.to_string());
                    p.sport = after(i).and_then(|v| v.parse().ok());
                }
                ("tcp" | "udp" | "sctp", "dport") => {
                    p.dport = after(i).and_then(|v| v.parse().ok())
                }
                ("tcp", "flags") => {
                    // `tcp flags == syn` or `tcp flags 0x18`.
                    let v = match after(i) {
                        Some("==") => words.get(i + 2).copied(),
                        v => v,
                    };
                    p.flags = v.map(str::to_string);
                }
                _ => {}
            }
        }
        p
    }
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').to_string()
}

/// One line of `nft monitor trace`, if it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Packet(Packet),
    Step(Step),
}

/// `trace id ID FAMILY TABLE CHAIN REST`: the id and the event.
fn parse_line(line: &str) -> Option<(String, String, String, Line)> {
    let rest = line.trim().strip_prefix("trace id ")?;
    let mut it = rest.splitn(5, ' ');
    let (id, _family, table, chain, rest) =
        (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    let (table, chain) = (table.to_string(), chain.to_string());
    let event = if let Some(p) = rest.strip_prefix("packet: ") {
        Line::Packet(Packet::parse(p))
    } else if let Some(r) = rest.strip_prefix("rule ") {
        let (rule, verdict) = match r.rfind(" (verdict ") {
            Some(at) => (&r[..at], r[at + 10..].trim_end_matches(')')),
            None => (r, ""),
        };
        Line::Step(Step {
            table: table.clone(),
            chain: chain.clone(),
            rule: without_counters(rule),
            verdict: verdict.to_string(),
        })
    } else if let Some(v) = rest
        .strip_prefix("policy ")
        .or(rest.strip_prefix("verdict "))
    {
        Line::Step(Step {
            table: table.clone(),
            chain: chain.clone(),
            rule: String::new(),
            verdict: v.trim().to_string(),
        })
    } else {
        return None;
    };
    Some((id.to_string(), table, chain, event))
}

/// A rule's text without its `counter packets N bytes M` (which change with every
/// packet) and with single spaces.
pub fn without_counters(rule: &str) -> String {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
            i += 5;
            continue;
        }
        out.push(words[i]);
        i += 1;
    }
    out.join(" ")
}

/// The passes in `text`, in the order they began. A step belongs to the latest pass
/// of its trace id.
pub fn passes(text: &str) -> Vec<Pass> {
    let mut out: Vec<Pass> = Vec::new();
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        let Some((id, table, chain, event)) = parse_line(line) else {
            continue;
        };
        match event {
            Line::Packet(packet) => {
                // nft prints the packet again at each base chain of one hook; a
                // pass is one hook's traversal, so a packet line in a chain of the
                // same pass (same table, a new base chain) opens a new pass too.
                open.insert(id.clone(), out.len());
                out.push(Pass {
                    id,
                    table,
                    chain,
                    packet,
                    steps: Vec::new(),
                });
            }
            Line::Step(step) => {
                if let Some(&at) = open.get(&id) {
                    out[at].steps.push(step);
                }
            }
        }
    }
    out
}

/// The passes of the first packet `from` sent from source port `sport` (any
/// destination, as DNAT rewrites it): those with that packet's IP id.
pub fn first_packet(passes: &[Pass], from: Ipv4Addr, sport: u16) -> Vec<Pass> {
    let ours = |p: &&Pass| p.packet.saddr == Some(from) && p.packet.sport == Some(sport);
    let Some(first) = passes.iter().find(ours) else {
        return Vec::new();
    };
    let id = first.packet.ip_id;
    passes
        .iter()
        .filter(ours)
        .filter(|p| p.packet.ip_id == id)
        .cloned()
        .collect()
}

/// The passes of packets from `from` to `to` on `port` (a DNS question to the
/// cluster DNS, whose source port is the resolver's): the first such packet's.
pub fn first_to(passes: &[Pass], from: Ipv4Addr, to: Ipv4Addr, port: u16) -> Vec<Pass> {
    let first = passes.iter().find(|p| {
        p.packet.saddr == Some(from) && p.packet.daddr == Some(to) && p.packet.dport == Some(port)
    });
    match first.and_then(|p| p.packet.sport) {
        Some(sport) => first_packet(passes, from, sport),
        None => Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Captured from node-1 of a two-node testbed (iptables mode): the DNS question,
    /// then the SYN of a connection to the Service web's ClusterIP.
    pub(crate) const CAPTURED: &str = r#"trace id f917ec35 ip testbed-trace pre packet: iif "cbr0" ether saddr 02:42:0a:f4:01:02 ether daddr 02:42:0a:f4:01:01 ip saddr 10.244.1.2 ip daddr 10.96.0.10 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 6212 ip length 75 udp sport 41740 udp dport 53 udp length 55 @th,64,96 0xebf101000001000000000000
trace id f917ec35 ip testbed-trace pre rule ip saddr 10.244.1.2 meta nftrace set 1 (verdict continue)
trace id f917ec35 ip testbed-trace pre policy accept
trace id f917ec35 ip nat PREROUTING packet: iif "cbr0" ether saddr 02:42:0a:f4:01:02 ether daddr 02:42:0a:f4:01:01 ip saddr 10.244.1.2 ip daddr 10.96.0.10 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 6212 ip length 75 udp sport 41740 udp dport 53 udp length 55 @th,64,96 0xebf101000001000000000000
trace id f917ec35 ip nat PREROUTING rule  counter packets 1 bytes 40 jump KUBE-SERVICES (verdict jump KUBE-SERVICES)
trace id f917ec35 ip nat KUBE-SERVICES rule meta l4proto udp ip daddr 10.96.0.10  udp dport 53 counter packets 0 bytes 0 jump KUBE-SVC-TCOU7JCQXEZGVUNU (verdict jump KUBE-SVC-TCOU7JCQXEZGVUNU)
trace id f917ec35 ip nat KUBE-SVC-TCOU7JCQXEZGVUNU rule  counter packets 0 bytes 0 jump KUBE-SEP-ZHICQ2ODADGCY7DS (verdict jump KUBE-SEP-ZHICQ2ODADGCY7DS)
trace id f917ec35 ip nat KUBE-SEP-ZHICQ2ODADGCY7DS rule meta l4proto udp   counter packets 0 bytes 0 dnat to 10.244.2.3:53 (verdict accept)
trace id 74952688 ip testbed-trace pre packet: iif "cbr0" ether saddr 02:42:0a:f4:01:02 ether daddr 02:42:0a:f4:01:01 ip saddr 10.244.1.2 ip daddr 10.96.0.2 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 59984 ip length 60 tcp sport 48338 tcp dport 80 tcp flags == syn tcp window 64240
trace id 74952688 ip nat PREROUTING packet: iif "cbr0" ether saddr 02:42:0a:f4:01:02 ether daddr 02:42:0a:f4:01:01 ip saddr 10.244.1.2 ip daddr 10.96.0.2 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 59984 ip length 60 tcp sport 48338 tcp dport 80 tcp flags == syn tcp window 64240
trace id 74952688 ip nat PREROUTING rule  counter packets 1 bytes 40 jump KUBE-SERVICES (verdict jump KUBE-SERVICES)
trace id 74952688 ip nat KUBE-SEP-4EX2N4PG4ASNZOBF rule meta l4proto tcp   counter packets 0 bytes 0 dnat to 10.244.2.2:8080 (verdict accept)
trace id 17e1a22f ip filter FORWARD packet: iif "cbr0" oif "eth0" ether saddr 02:42:0a:f4:01:02 ether daddr 02:42:0a:f4:01:01 ip saddr 10.244.1.2 ip daddr 10.244.2.2 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 59984 ip length 60 tcp sport 48338 tcp dport 8080 tcp flags == syn tcp window 64240
trace id 17e1a22f ip filter FORWARD policy accept
trace id 74952688 ip testbed-trace pre packet: iif "cbr0" ether saddr 02:42:0a:f4:01:02 ether daddr 02:42:0a:f4:01:01 ip saddr 10.244.1.2 ip daddr 10.96.0.2 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 59986 ip length 127 tcp sport 48338 tcp dport 80 tcp flags == 0x18 tcp window 63
trace id 74952688 ip testbed-trace pre policy accept
"#;

    #[test]
    fn reads_passes_and_the_packet_fields() {
        let all = passes(CAPTURED);
        assert_eq!(all.len(), 6);
        let dns = &all[1];
        assert_eq!(
            (dns.table.as_str(), dns.chain.as_str()),
            ("nat", "PREROUTING")
        );
        assert_eq!(dns.packet.daddr, Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(dns.packet.protocol.as_deref(), Some("udp"));
        assert_eq!(
            (dns.packet.sport, dns.packet.dport),
            (Some(41740), Some(53))
        );
        assert_eq!(dns.steps.len(), 4);
        assert_eq!(
            dns.steps[1].rule,
            "meta l4proto udp ip daddr 10.96.0.10 udp dport 53 jump KUBE-SVC-TCOU7JCQXEZGVUNU"
        );
        assert_eq!(dns.steps[3].verdict, "accept");
        assert_eq!(all[0].steps[1].verdict, "accept");
        assert_eq!(all[0].steps[1].rule, "");
        assert_eq!(all[3].packet.flags.as_deref(), Some("syn"));
        assert_eq!(all[4].packet.oif.as_deref(), Some("eth0"));
        // The id 74952688 came back for a later packet: its steps go to the new pass.
        assert_eq!(all[5].steps.len(), 1);
    }

    #[test]
    fn picks_the_first_packet_of_a_connection_across_hooks() {
        let all = passes(CAPTURED);
        let first = first_packet(&all, Ipv4Addr::new(10, 244, 1, 2), 48338);
        let chains: Vec<String> = first
            .iter()
            .map(|p| format!("{} {}", p.table, p.chain))
            .collect();
        assert_eq!(
            chains,
            ["testbed-trace pre", "nat PREROUTING", "filter FORWARD"]
        );
        let dns = first_to(
            &all,
            Ipv4Addr::new(10, 244, 1, 2),
            Ipv4Addr::new(10, 96, 0, 10),
            53,
        );
        assert_eq!(dns.len(), 2);
        assert!(first_packet(&all, Ipv4Addr::new(10, 244, 1, 9), 48338).is_empty());
    }
}

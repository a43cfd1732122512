//! A small packet tracer: runs a new connection `{src, dst, proto, port}` through rules
//! as `iptables-restore` takes them or `iptables-save` prints them, the way a node's
//! kernel would (nat PREROUTING, filter FORWARD, nat POSTROUTING), and says where it
//! can end up: which endpoint and with what probability, masqueraded or not, or
//! rejected. It knows the matches kube-proxy uses, and says so when it meets another.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;

use super::render::Protocol;

/// One new connection, as it enters a node from a pod.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Sent on to this address (rewritten by DNAT, or untouched).
    Forward(SocketAddrV4),
    Rejected,
    Dropped,
}

/// One way the packet can go.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub probability: f64,
    pub verdict: Verdict,
    pub masquerade: bool,
    /// A `recent` match (ClientIP affinity) was passed over: a client seen before
    /// would go back to its endpoint instead.
    pub affinity: bool,
    /// Delivered to the node itself, let in by an ACCEPT rule (a health check port).
    pub accepted: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("rule {rule:?}: {message}")]
    Unsupported { rule: String, message: String },
    #[error("chain {0} does not exist")]
    NoChain(String),
}

#[derive(Debug, Clone)]
struct Rule {
    text: String,
    words: Vec<String>,
}

/// Tables parsed from restore or save text: table -> chain -> rules.
#[derive(Debug, Default)]
pub struct Tables {
    tables: HashMap<String, HashMap<String, Vec<Rule>>>,
}

const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Splits a rule into words, honouring double quotes as iptables-save writes them.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => cur.extend(chars.next()),
            ' ' | '\t' if !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unclosed quote".into());
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

impl Tables {
    pub fn parse(text: &str) -> Result<Tables, TraceError> {
        let mut t = Tables::default();
        let mut table: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let err = |message: String| TraceError::Parse {
                line: i + 1,
                message,
            };
            if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                t.tables.entry(name.to_string()).or_default();
                table = Some(name.to_string());
                continue;
            }
            let Some(tname) = table.clone() else {
                return Err(err(format!("{line:?} comes before any *table line")));
            };
            let chains = t.tables.entry(tname).or_default();
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                chains.insert(name.to_string(), Vec::new());
                continue;
            }
            let w = words(line).map_err(&err)?;
            match w.first().map(String::as_str) {
                Some("-A") if w.len() >= 2 => {
                    chains.entry(w[1].clone()).or_default().push(Rule {
                        text: line.to_string(),
                        words: w[2..].to_vec(),
                    });
                }
                Some("-I") if w.len() >= 2 => {
                    // `-I CHAIN [N] spec`: before the Nth rule (the first by default).
                    let (at, spec) = match w.get(2).and_then(|n| n.parse::<usize>().ok()) {
                        Some(n) => (n.max(1) - 1, 3),
                        None => (0, 2),
                    };
                    let rules = chains.entry(w[1].clone()).or_default();
                    let rule = Rule {
                        text: line.to_string(),
                        words: w[spec.min(w.len())..].to_vec(),
                    };
                    rules.insert(at.min(rules.len()), rule);
                }
                Some("-X") if w.len() == 2 => {
                    chains.remove(&w[1]);
                }
                _ => return Err(err(format!("{line:?} is not a chain, -A or -X line"))),
            }
        }
        Ok(t)
    }

    fn chain(&self, table: &str, chain: &str) -> Option<&Vec<Rule>> {
        self.tables.get(table).and_then(|t| t.get(chain))
    }
}

#[derive(Debug, Clone, Copy)]
struct State {
    dst: Ipv4Addr,
    port: u16,
    mark: u32,
    affinity: bool,
    /// The connection's destination was rewritten (conntrack's `DNAT` state).
    dnat: bool,
}

/// The node a packet is traced in: its own addresses (`addrtype LOCAL`, with
/// 127.0.0.0/8).
#[derive(Debug, Clone, Copy)]
struct Node<'a> {
    local: &'a [Ipv4Addr],
}

impl Node<'_> {
    fn is_local(&self, ip: Ipv4Addr) -> bool {
        ip.is_loopback() || self.local.contains(&ip)
    }
}

enum End {
    /// Fell off the chain or hit RETURN.
    Continue,
    Accept,
    Reject,
    Drop,
}

type Paths = Vec<(f64, State, End)>;

/// Where a new connection from a pod can end up after a node's rules.
pub fn trace(tables: &Tables, pkt: Packet) -> Result<Vec<Outcome>, TraceError> {
    trace_at(tables, &[], pkt)
}

/// Where a new connection can end up after the rules of a node whose addresses are
/// `local`: one from the node itself (its source is local) goes through nat and filter
/// OUTPUT, any other through nat PREROUTING; then, as routing decides, filter INPUT
/// when its destination is local (delivered there), else filter FORWARD and nat
/// POSTROUTING.
pub fn trace_at(
    tables: &Tables,
    local: &[Ipv4Addr],
    pkt: Packet,
) -> Result<Vec<Outcome>, TraceError> {
    let node = Node { local };
    let start = State {
        dst: pkt.dst,
        port: pkt.port,
        mark: 0,
        affinity: false,
        dnat: false,
    };
    let from_node = node.is_local(pkt.src);
    let first = if from_node { "OUTPUT" } else { "PREROUTING" };
    let mut outcomes = Vec::new();
    for (p1, s1, e1) in run(tables, node, "nat", first, &pkt, start, 1.0, 0)? {
        let delivered_here = node.is_local(s1.dst);
        let mut paths = vec![(p1, s1, e1)];
        if matches!(paths[0].2, End::Continue | End::Accept) {
            let filter = if from_node {
                "OUTPUT"
            } else if delivered_here {
                "INPUT"
            } else {
                "FORWARD"
            };
            paths = run(tables, node, "filter", filter, &pkt, s1, p1, 0)?;
            if from_node && delivered_here {
                let mut input = Vec::new();
                for (p, s, e) in paths {
                    match e {
                        End::Continue | End::Accept => {
                            input.extend(run(tables, node, "filter", "INPUT", &pkt, s, p, 0)?)
                        }
                        e => input.push((p, s, e)),
                    }
                }
                paths = input;
            }
        }
        for (p2, s2, e2) in paths {
            let accepted = delivered_here && matches!(e2, End::Accept);
            let verdict = match e2 {
                End::Reject => Verdict::Rejected,
                End::Drop => Verdict::Dropped,
                End::Continue | End::Accept => Verdict::Forward(SocketAddrV4::new(s2.dst, s2.port)),
            };
            if verdict != Verdict::Forward(SocketAddrV4::new(s2.dst, s2.port)) || delivered_here {
                outcomes.push(Outcome {
                    probability: p2,
                    verdict,
                    masquerade: false,
                    affinity: s2.affinity,
                    accepted,
                });
                continue;
            }
            let post = run(tables, node, "nat", "POSTROUTING", &pkt, s2, p2, 0)?;
            for (p3, s3, _) in post {
                outcomes.push(Outcome {
                    probability: p3,
                    verdict,
                    masquerade: s3.mark & 0x4000 != 0 || s3.mark & MASQUERADED != 0,
                    affinity: s3.affinity,
                    accepted: false,
                });
            }
        }
    }
    Ok(outcomes)
}

/// A bit of the tracer's own, set when a MASQUERADE target is reached.
const MASQUERADED: u32 = 1 << 31;

#[allow(clippy::too_many_arguments)]
fn run(
    tables: &Tables,
    node: Node,
    table: &str,
    chain: &str,
    pkt: &Packet,
    state: State,
    prob: f64,
    depth: usize,
) -> Result<Paths, TraceError> {
    if depth > 32 {
        return Err(TraceError::Unsupported {
            rule: chain.into(),
            message: "jumps nest deeper than 32 chains (a loop?)".into(),
        });
    }
    let rules = match tables.chain(table, chain) {
        Some(r) => r.as_slice(),
        None if BUILTIN.contains(&chain) => &[],
        None => return Err(TraceError::NoChain(format!("{table}/{chain}"))),
    };
    // Paths still walking this chain, and paths that have left it.
    let mut live = vec![(prob, state)];
    let mut done: Paths = Vec::new();
    for rule in rules {
        let mut next = Vec::new();
        let rcheck = rule.words.iter().any(|w| w == "--rcheck");
        for (p, mut s) in live {
            s.affinity |= rcheck;
            let (m, target) = matches(rule, node, pkt, &s)?;
            let p_match = p * m;
            if p - p_match > 1e-12 {
                next.push((p - p_match, s));
            }
            if p_match <= 1e-12 {
                continue;
            }
            let at = (tables, node, table);
            apply(
                at, rule, &target, pkt, s, p_match, depth, &mut next, &mut done,
            )?;
        }
        live = next;
    }
    done.extend(live.into_iter().map(|(p, s)| (p, s, End::Continue)));
    Ok(done)
}

#[allow(clippy::too_many_arguments)]
// Long because it is the match of one rule against a packet, criterion by criterion, as the
// kernel checks them.
fn apply(
    (tables, node, table): (&Tables, Node, &str),
    rule: &Rule,
    target: &[String],
    pkt: &Packet,
    mut s: State,
    p: f64,
    depth: usize,
    next: &mut Vec<(f64, State)>,
    done: &mut Paths,
) -> Result<(), TraceError> {
    let unsupported = |message: &str| TraceError::Unsupported {
        rule: rule.text.clone(),
        message: message.into(),
    };
    let Some(name) = target.first() else {
        next.push((p, s));
        return Ok(());
    };
    let arg = |flag: &str| {
        target
            .windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].as_str())
    };
    match name.as_str() {
        "ACCEPT" => done.push((p, s, End::Accept)),
        "RETURN" => done.push((p, s, End::Continue)),
        "DROP" => done.push((p, s, End::Drop)),
        "REJECT" => done.push((p, s, End::Reject)),
        "MARK" => {
            if let Some(v) = arg("--set-xmark") {
                // iptables-save's form of both: (mark & ~mask) ^ value.
                let (value, mask) = v.split_once('/').unwrap_or((v, "0xffffffff"));
                let value = parse_mark(value).ok_or_else(|| unsupported("bad mark"))?;
                let mask = parse_mark(mask).ok_or_else(|| unsupported("bad mark"))?;
                s.mark = (s.mark & !mask) ^ value;
                next.push((p, s));
                return Ok(());
            }
            let (op, val) = if let Some(v) = arg("--or-mark") {
                ("or", v)
            } else if let Some(v) = arg("--xor-mark") {
                ("xor", v)
            } else {
                return Err(unsupported("MARK without --or-mark or --xor-mark"));
            };
            let v = parse_mark(val).ok_or_else(|| unsupported("bad mark"))?;
            s.mark = if op == "or" { s.mark | v } else { s.mark ^ v };
            next.push((p, s));
        }
        "MASQUERADE" => {
            s.mark |= MASQUERADED;
            done.push((p, s, End::Accept));
        }
        "DNAT" => {
            let to = arg("--to-destination")
                .ok_or_else(|| unsupported("DNAT without --to-destination"))?;
            let sa: SocketAddrV4 = to
                .parse()
                .or_else(|_| {
                    to.parse::<Ipv4Addr>()
                        .map(|ip| SocketAddrV4::new(ip, s.port))
                })
                .map_err(|_| unsupported("bad --to-destination"))?;
            s.dst = *sa.ip();
            s.port = sa.port();
            s.dnat = true;
            done.push((p, s, End::Accept));
        }
        chain => {
            for (p2, s2, end) in run(tables, node, table, chain, pkt, s, p, depth + 1)? {
                match end {
                    End::Continue => next.push((p2, s2)),
                    other => done.push((p2, s2, other)),
                }
            }
        }
    }
    Ok(())
}

fn parse_mark(v: &str) -> Option<u32> {
    let v = v.split('/').next()?;
    match v.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn in_net(ip: Ipv4Addr, spec: &str) -> Option<bool> {
    let net: Ipv4Net = if spec.contains('/') {
        spec.parse().ok()?
    } else {
        Ipv4Net::new(spec.parse().ok()?, 32).ok()?
    };
    Some(net.contains(&ip))
}

/// The probability that `rule` matches in `s`, and its target words (`-j` onward).
// Long because it is one arm per match option kube-proxy writes, as the kernel checks them
// one after another.
fn matches<'a>(
    rule: &'a Rule,
    node: Node,
    pkt: &Packet,
    s: &State,
) -> Result<(f64, Vec<String>), TraceError> {
    let unsupported = |message: String| TraceError::Unsupported {
        rule: rule.text.clone(),
        message,
    };
    let w = &rule.words;
    let mut p = 1.0;
    let mut i = 0;
    let mut negate = false;
    while i < w.len() {
        let word = w[i].as_str();
        let val = w.get(i + 1).map(String::as_str);
        let need =
            |v: Option<&'a str>| v.ok_or_else(|| unsupported(format!("{word} needs a value")));
        let mut hit: Option<bool> = None;
        let mut step = 2;
        match word {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-j" => return Ok((p, w[i + 1..].to_vec())),
            "-m" | "--comment" | "--mode" | "--name" | "--seconds" | "--to-destination" => {}
            "--mask" => {}
            "--reap" | "--set" | "--rsource" => step = 1,
            "-s" => hit = in_net(pkt.src, need(val)?),
            "-d" => hit = in_net(s.dst, need(val)?),
            "-p" => hit = Some(need(val)?.eq_ignore_ascii_case(pkt.protocol.lower())),
            "--dport" => hit = Some(need(val)?.parse::<u16>().ok() == Some(s.port)),
            "--probability" => {
                let q: f64 = need(val)?
                    .parse()
                    .map_err(|_| unsupported("bad --probability".into()))?;
                p *= if negate { 1.0 - q } else { q };
                negate = false;
            }
            // A new connection from a client never seen before.
            "--rcheck" => {
                hit = Some(false);
                step = 1;
            }
            // A new connection's first packet: NEW, and DNAT once rewritten.
            "--ctstate" => {
                hit = Some(
                    need(val)?
                        .split(',')
                        .any(|st| st == "NEW" || (st == "DNAT" && s.dnat)),
                )
            }
            "--dst-type" | "--src-type" => {
                let ip = if word == "--dst-type" { s.dst } else { pkt.src };
                hit = Some(match need(val)? {
                    "LOCAL" => node.is_local(ip),
                    other => {
                        return Err(unsupported(format!(
                            "the tracer does not know addrtype {other}"
                        )))
                    }
                });
            }
            // Counters (kube-proxy's nfacct metrics) match every packet.
            "--nfacct-name" => {}
            "--mark" => {
                let v = need(val)?;
                let (value, mask) = v.split_once('/').unwrap_or((v, "0xffffffff"));
                let value = parse_mark(value).ok_or_else(|| unsupported("bad mark".into()))?;
                let mask = parse_mark(mask).ok_or_else(|| unsupported("bad mark".into()))?;
                hit = Some(s.mark & mask == value);
            }
            other => return Err(unsupported(format!("the tracer does not know {other}"))),
        }
        if let Some(h) = hit {
            if h == negate {
                return Ok((0.0, Vec::new()));
            }
            negate = false;
        }
        i += step;
    }
    Ok((p, Vec::new()))
}

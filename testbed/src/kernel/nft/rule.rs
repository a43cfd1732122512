//! A rule's text, as kube-proxy's nftables mode writes it, turned into the
//! expressions `nft` would send for it, with nft's own rewrites: a set of one
//! element is a comparison, a prefix on a byte boundary a shorter load, and a set of
//! several prefixes an anonymous interval set (merged where they touch).

use std::net::Ipv4Addr;

use super::expr::{Expr, Verdict, REG1};

/// The anonymous set a rule brings with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anon {
    /// `numgen ... vmap { 0 : goto A , 1 : goto B }`.
    Map(Vec<(u32, Verdict)>),
    /// `ip saddr|daddr [!=] { PREFIX , ... }`: inclusive ranges, sorted and merged.
    Ranges {
        daddr: bool,
        ranges: Vec<(u32, u32)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub exprs: Vec<Expr>,
    pub anon: Option<Anon>,
    pub comment: Option<String>,
}

/// The name a rule's anonymous set is sent under (the kernel picks the number).
pub const ANON_MAP: &str = "__map%d";
pub const ANON_SET: &str = "__set%d";

/// A lookup of register 1 in `set` (its verdict taken when `vmap`; a match when
/// absent when `inv`).
fn lookup(set: &str, vmap: bool, inv: bool) -> Expr {
    Expr::Lookup {
        set: set.to_string(),
        id: None,
        vmap,
        inv,
    }
}

fn payload(network: bool, offset: u32, len: u32, dreg: u32) -> Expr {
    Expr::Payload {
        base: if network { 1 } else { 2 },
        offset,
        len,
        dreg,
    }
}

/// `ip daddr . meta l4proto . th dport` (or without the address) into registers 1,
/// 9 and 10.
fn concat(exprs: &mut Vec<Expr>, with_address: bool) {
    let mut reg = REG1;
    if with_address {
        exprs.push(payload(true, 16, 4, reg));
        reg = 9;
    }
    exprs.push(Expr::Meta { key: 16, dreg: reg });
    exprs.push(payload(false, 2, 2, if with_address { 10 } else { 9 }));
}

/// An address or prefix (`10.0.0.0/8`): its first and last address.
fn prefix(s: &str) -> Result<(u32, u32), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (
            a,
            l.parse::<u32>().map_err(|_| format!("bad prefix {s:?}"))?,
        ),
        None => (s, 32),
    };
    let ip: Ipv4Addr = addr.parse().map_err(|_| format!("bad address {s:?}"))?;
    if len > 32 {
        return Err(format!("bad prefix {s:?}"));
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let first = u32::from(ip) & mask;
    Ok((first, first | !mask))
}

/// Compares the address at `offset` with one prefix, as nft does: whole bytes are
/// loaded and compared, anything else is masked first.
fn match_prefix(exprs: &mut Vec<Expr>, offset: u32, (first, last): (u32, u32), neq: bool) {
    let len = 32 - (last - first).count_ones();
    let bytes = first.to_be_bytes();
    if len % 8 == 0 && len > 0 {
        let n = len / 8;
        exprs.push(payload(true, offset, n, REG1));
        exprs.push(Expr::Cmp {
            neq,
            data: bytes[..n as usize].to_vec(),
        });
    } else {
        exprs.push(payload(true, offset, 4, REG1));
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        exprs.push(Expr::Bitwise {
            len: 4,
            mask: mask.to_be_bytes().to_vec(),
            xor: vec![0; 4],
        });
        exprs.push(Expr::Cmp {
            neq,
            data: bytes.to_vec(),
        });
    }
}

/// Whether a range is one prefix (aligned, of a power of two addresses).
fn is_prefix((first, last): (u32, u32)) -> bool {
    let size = (last - first).wrapping_add(1);
    size == 0 || (size.is_power_of_two() && first & (size - 1) == 0)
}

/// Sorted ranges, merged where they overlap or touch (as nft merges them).
fn merge(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

struct Tokens<'a> {
    words: Vec<&'a str>,
    at: usize,
}

impl<'a> Tokens<'a> {
    fn next(&mut self) -> Result<&'a str, String> {
        let w = self.words.get(self.at).ok_or("the rule ends too soon")?;
        self.at += 1;
        Ok(w)
    }

    fn expect(&mut self, want: &str) -> Result<(), String> {
        match self.next()? {
            w if w == want => Ok(()),
            w => Err(format!("expected {want:?}, found {w:?}")),
        }
    }

    fn peek(&self) -> Option<&'a str> {
        self.words.get(self.at).copied()
    }

    /// The words up to the closing `}` (the `{` already taken), commas dropped.
    fn braced(&mut self) -> Result<Vec<&'a str>, String> {
        let mut out = Vec::new();
        loop {
            match self.next()? {
                "}" => return Ok(out),
                "," => {}
                w => out.push(w),
            }
        }
    }
}

fn verdict(word: &str, t: &mut Tokens) -> Result<Option<Verdict>, String> {
    Ok(Some(match word {
        "jump" => Verdict::Jump(t.next()?.to_string()),
        "goto" => Verdict::Goto(t.next()?.to_string()),
        "return" => Verdict::Return,
        "drop" => Verdict::Drop,
        _ => return Ok(None),
    }))
}

fn number(s: &str) -> Result<u32, String> {
    let n = match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    n.map_err(|_| format!("bad number {s:?}"))
}

/// Parses one rule (the text after `add rule ip TABLE CHAIN`).
pub fn parse(text: &str) -> Result<Rule, String> {
    let (body, comment) = match text.find(" comment \"") {
        Some(i) => {
            let c = &text[i + 10..];
            let c = c
                .strip_suffix('"')
                .ok_or("a comment without its closing quote")?;
            (&text[..i], Some(c.to_string()))
        }
        None => (text, None),
    };
    let mut t = Tokens {
        words: body.split_whitespace().collect(),
        at: 0,
    };
    let mut rule = Rule {
        exprs: Vec::new(),
        anon: None,
        comment,
    };
    let e = &mut rule.exprs;
    while let Some(word) = t.peek() {
        t.at += 1;
        if let Some(v) = verdict(word, &mut t)? {
            e.push(Expr::Verdict(v));
            continue;
        }
        match word {
            "ct" => ct_state_new(&mut t, e)?,
            "reject" => e.push(Expr::Reject),
            "masquerade" => {
                let fully_random = t.peek() == Some("fully-random");
                t.at += fully_random as usize;
                e.push(Expr::Masq { fully_random });
            }
            "mark" => mark(&mut t, e)?,
            "ip" => rule.anon = ip(&mut t, e)?.or(rule.anon),
            "meta" => meta(&mut t, e)?,
            "dnat" => dnat(&mut t, e)?,
            "fib" => fib(&mut t, e)?,
            "update" => {
                let set = t.next()?.strip_prefix('@').ok_or("update needs @SET")?;
                for w in ["{", "ip", "saddr", "}"] {
                    t.expect(w)?;
                }
                e.push(payload(true, 12, 4, REG1));
                e.push(Expr::Update {
                    set: set.to_string(),
                    id: None,
                });
            }
            "numgen" => rule.anon = Some(numgen(&mut t, e)?),
            w => return Err(format!("unknown word {w:?}")),
        }
    }
    Ok(rule)
}

/// `ct state new`: the state's NEW bit is set.
fn ct_state_new(t: &mut Tokens, e: &mut Vec<Expr>) -> Result<(), String> {
    t.expect("state")?;
    t.expect("new")?;
    e.push(Expr::CtState);
    e.push(Expr::Bitwise {
        len: 4,
        mask: 8u32.to_ne_bytes().to_vec(),
        xor: vec![0; 4],
    });
    e.push(Expr::Cmp {
        neq: true,
        data: vec![0; 4],
    });
    Ok(())
}

/// `meta l4proto PROTO`, or `meta l4proto . th dport vmap @MAP`.
fn meta(t: &mut Tokens, e: &mut Vec<Expr>) -> Result<(), String> {
    t.expect("l4proto")?;
    match t.next()? {
        "." => {
            for w in ["th", "dport", "vmap"] {
                t.expect(w)?;
            }
            concat(e, false);
            vmap(t, e)
        }
        proto => {
            e.push(Expr::Meta {
                key: 16,
                dreg: REG1,
            });
            e.push(Expr::Cmp {
                neq: false,
                data: vec![protocol(proto)?],
            });
            Ok(())
        }
    }
}

/// `dnat to IP:PORT`.
fn dnat(t: &mut Tokens, e: &mut Vec<Expr>) -> Result<(), String> {
    t.expect("to")?;
    let to = t.next()?;
    let (ip, port) = to
        .split_once(':')
        .ok_or(format!("bad dnat target {to:?}"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| format!("bad address {ip:?}"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    e.push(Expr::Immediate {
        dreg: 1,
        data: ip.octets().to_vec(),
    });
    e.push(Expr::Immediate {
        dreg: 2,
        data: port.to_be_bytes().to_vec(),
    });
    e.push(Expr::Dnat);
    Ok(())
}

/// `fib saddr|daddr type local`.
fn fib(t: &mut Tokens, e: &mut Vec<Expr>) -> Result<(), String> {
    let daddr = match t.next()? {
        "saddr" => false,
        "daddr" => true,
        w => return Err(format!("fib {w:?}")),
    };
    t.expect("type")?;
    t.expect("local")?;
    e.push(Expr::FibType { daddr });
    e.push(Expr::Cmp {
        neq: false,
        data: 2u32.to_ne_bytes().to_vec(), // RTN_LOCAL
    });
    Ok(())
}

/// `numgen random mod N vmap { 0 : goto A , ... }`: its anonymous map.
fn numgen(t: &mut Tokens, e: &mut Vec<Expr>) -> Result<Anon, String> {
    for w in ["random", "mod"] {
        t.expect(w)?;
    }
    let modulus = number(t.next()?)?;
    t.expect("vmap")?;
    t.expect("{")?;
    let words = t.braced()?;
    let mut picks = Vec::new();
    let mut w = words.iter();
    while let Some(k) = w.next() {
        if w.next() != Some(&":") {
            return Err("numgen map: expected KEY : VERDICT".into());
        }
        let v = match (w.next(), w.next()) {
            (Some(&"goto"), Some(c)) => Verdict::Goto(c.to_string()),
            (Some(&"jump"), Some(c)) => Verdict::Jump(c.to_string()),
            _ => return Err("numgen map: expected goto or jump CHAIN".into()),
        };
        picks.push((number(k)?, v));
    }
    e.push(Expr::Numgen { modulus });
    e.push(lookup(ANON_MAP, true, false));
    Ok(Anon::Map(picks))
}

fn protocol(p: &str) -> Result<u8, String> {
    match p {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "sctp" => Ok(132),
        _ => Err(format!("unknown protocol {p:?}")),
    }
}

/// `vmap @MAP`, the key already in registers.
fn vmap(t: &mut Tokens, e: &mut Vec<Expr>) -> Result<(), String> {
    let set = t.next()?.strip_prefix('@').ok_or("vmap needs @MAP")?;
    e.push(lookup(set, true, false));
    Ok(())
}

/// `mark set mark or|xor V`, `mark and V == W`.
fn mark(t: &mut Tokens, e: &mut Vec<Expr>) -> Result<(), String> {
    e.push(Expr::Meta { key: 3, dreg: REG1 });
    match t.next()? {
        "set" => {
            t.expect("mark")?;
            let op = t.next()?;
            let v = number(t.next()?)?;
            let mask = match op {
                "or" => !v,
                "xor" => u32::MAX,
                _ => return Err(format!("mark set mark {op:?}")),
            };
            e.push(Expr::Bitwise {
                len: 4,
                mask: mask.to_ne_bytes().to_vec(),
                xor: v.to_ne_bytes().to_vec(),
            });
            e.push(Expr::SetMark);
        }
        "and" => {
            let v = number(t.next()?)?;
            t.expect("==")?;
            let w = number(t.next()?)?;
            e.push(Expr::Bitwise {
                len: 4,
                mask: v.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            });
            e.push(Expr::Cmp {
                neq: false,
                data: w.to_ne_bytes().to_vec(),
            });
        }
        w => return Err(format!("mark {w:?}")),
    }
    Ok(())
}

/// `ip saddr|daddr ...`: a set lookup, a concatenation into a map, or an address,
/// prefix or set of prefixes (with `!=`).
fn ip(t: &mut Tokens, e: &mut Vec<Expr>) -> Result<Option<Anon>, String> {
    let daddr = match t.next()? {
        "saddr" => false,
        "daddr" => true,
        w => return Err(format!("ip {w:?}")),
    };
    let offset = if daddr { 16 } else { 12 };
    let mut word = t.next()?;
    if word == "." {
        for w in ["meta", "l4proto", ".", "th", "dport", "vmap"] {
            t.expect(w)?;
        }
        concat(e, true);
        vmap(t, e)?;
        return Ok(None);
    }
    if let Some(set) = word.strip_prefix('@') {
        e.push(payload(true, offset, 4, REG1));
        e.push(lookup(set, false, false));
        return Ok(None);
    }
    let neq = word == "!=";
    if neq {
        word = t.next()?;
    }
    let prefixes: Vec<&str> = if word == "{" { t.braced()? } else { vec![word] };
    if prefixes.is_empty() {
        return Err("an empty set".into());
    }
    let ranges = merge(
        prefixes
            .iter()
            .map(|p| prefix(p))
            .collect::<Result<_, _>>()?,
    );
    match ranges.as_slice() {
        [one] if is_prefix(*one) => {
            match_prefix(e, offset, *one, neq);
            Ok(None)
        }
        _ => {
            e.push(payload(true, offset, 4, REG1));
            e.push(lookup(ANON_SET, false, neq));
            Ok(Some(Anon::Ranges { daddr, ranges }))
        }
    }
}

//! An `nft -f` transaction written into a namespace's kernel without `nft`: each
//! line (the commands kube-proxy's nftables mode writes: tables, chains, sets, maps,
//! elements, rules) becomes the nf_tables netlink messages `nft` would send for it
//! ([`msg`], [`expr`], [`rule`]), all in one batch the kernel commits at once
//! ([`socket`]). `nft` reads the whole table before it writes anything (300 to 500 ms
//! at 10,000 Services); this does not. `nft list table` reads the same either way,
//! comments included (a root test compares them).

pub mod expr;
pub mod msg;
pub mod rule;
pub mod socket;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use expr::Verdict;
use msg::{Batch, Kind, Udata, NLM_F_APPEND, NLM_F_CREATE};
use rule::Anon;

/// A transaction ready to send: its bytes, and the line each message came from.
pub struct Compiled {
    pub bytes: Vec<u8>,
    /// The first sequence number of each line's messages, in order.
    pub lines: Vec<(u32, usize)>,
}

impl Compiled {
    /// The line (from 1) of the message with sequence number `seq`.
    pub fn line_of(&self, seq: u32) -> Option<usize> {
        let i = self.lines.partition_point(|(s, _)| *s <= seq);
        i.checked_sub(1).map(|i| self.lines[i].1 + 1)
    }
}

/// What is being written: the batch and the sets it creates (their IDs).
struct Writer {
    b: Batch,
    ids: HashMap<String, u32>,
    next_id: u32,
}

impl Writer {
    fn new_id(&mut self, name: &str) -> u32 {
        self.next_id += 1;
        self.ids.insert(name.to_string(), self.next_id);
        self.next_id
    }
}

/// Compiles a transaction. An error names the line and what is wrong with it.
pub fn compile(text: &str) -> Result<Compiled, String> {
    let mut w = Writer {
        b: Batch::new(),
        ids: HashMap::new(),
        next_id: 0,
    };
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        lines.push((w.b.next_seq(), i));
        command(&mut w, line).map_err(|e| format!("line {}: {e}: {line}", i + 1))?;
    }
    Ok(Compiled {
        bytes: w.b.finish(),
        lines,
    })
}

/// The part of `s` inside `{ ... }` (after a name), split at ` ; `.
fn options(s: &str) -> Vec<&str> {
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    inner
        .split(';')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect()
}

/// A quoted comment's text.
fn quoted(s: &str) -> Result<&str, String> {
    let c = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| format!("expected a quoted comment, found {s:?}"))?;
    comment_text(c)
}

/// A comment's text: at most 128 bytes, as nft allows.
fn comment_text(c: &str) -> Result<&str, String> {
    if c.len() > 128 {
        return Err(format!("a comment of {} bytes (128 at most)", c.len()));
    }
    Ok(c)
}

/// One command line.
fn command(w: &mut Writer, line: &str) -> Result<(), String> {
    let mut words = line.splitn(5, ' ');
    let verb = words.next().unwrap_or_default();
    let what = words.next().ok_or("no object")?;
    if words.next() != Some("ip") {
        return Err("only the ip family is written".into());
    }
    let table = words.next().ok_or("no table")?;
    let rest = words.next().unwrap_or_default();
    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    match (verb, what) {
        ("add", "table") => add_table(w, table, rest),
        ("delete", "table") => one(w, Kind::DelTable, 0, table, None),
        ("add", "chain") => add_chain(w, table, name, tail),
        ("delete", "chain") => one(w, Kind::DelChain, 0, table, Some((3, name))),
        ("flush", "chain") => one(w, Kind::DelRule, 0, table, Some((2, name))),
        ("add", "set" | "map") => add_set(w, table, name, tail),
        ("delete", "set" | "map") => one(w, Kind::DelSet, 0, table, Some((2, name))),
        ("add" | "delete", "element") => element(w, verb == "add", table, name, tail),
        ("add", "rule") => add_rule(w, table, name, tail),
        _ => Err(format!("{verb} {what} is not written here")),
    }
}

/// A message with just the table and one name.
fn one(
    w: &mut Writer,
    kind: Kind,
    flags: u16,
    table: &str,
    name: Option<(u16, &str)>,
) -> Result<(), String> {
    w.b.begin(kind, flags, table);
    if let Some((ty, n)) = name {
        w.b.str(ty, n);
    }
    w.b.end_message();
    Ok(())
}

fn add_table(w: &mut Writer, table: &str, rest: &str) -> Result<(), String> {
    w.b.begin(Kind::NewTable, 0, table);
    w.b.u32(2, 0);
    for o in options(rest) {
        let c = o
            .strip_prefix("comment ")
            .ok_or(format!("table option {o:?}"))?;
        w.b.bytes(6, &Udata::comment(0, quoted(c)?).0);
    }
    w.b.end_message();
    Ok(())
}

fn hook(name: &str) -> Result<u32, String> {
    Ok(match name {
        "prerouting" => 0,
        "input" => 1,
        "forward" => 2,
        "output" => 3,
        "postrouting" => 4,
        _ => return Err(format!("unknown hook {name:?}")),
    })
}

fn add_chain(w: &mut Writer, table: &str, name: &str, tail: &str) -> Result<(), String> {
    w.b.begin(Kind::NewChain, NLM_F_CREATE, table);
    w.b.str(3, name);
    for o in options(tail) {
        let parts: Vec<&str> = o.split_whitespace().collect();
        match parts.as_slice() {
            ["type", kind, "hook", h, "priority", p] => {
                let p: i32 = p.parse().map_err(|_| format!("bad priority {p:?}"))?;
                w.b.str(7, kind);
                w.b.nest(4);
                w.b.u32(1, hook(h)?);
                w.b.u32(2, p as u32);
                w.b.close();
            }
            ["comment", ..] => {
                let c = quoted(o.trim_start_matches("comment").trim())?;
                w.b.bytes(12, &Udata::comment(0, c).0);
            }
            _ => return Err(format!("chain option {o:?}")),
        }
    }
    w.b.end_message();
    Ok(())
}

/// The userdata nft 1.0.6 gives a set of addresses and a concatenation map.
const ADDRESSES: &[u8] = &[0, 4, 2, 0, 0, 0];
const CONCAT_MAP: &[u8] = &[
    0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0,
];

/// `add set|map ip T NAME { type ... ; [flags ... ;] [timeout Ns ;] [comment "C" ;] }`.
fn add_set(w: &mut Writer, table: &str, name: &str, tail: &str) -> Result<(), String> {
    let (mut key_type, mut key_len, mut map, mut flags) = (0u32, 0u32, false, 0u32);
    let (mut timeout, mut comment) = (None, None);
    for o in options(tail) {
        if let Some(t) = o.strip_prefix("type ") {
            let (key, data) = match t.split_once(" : ") {
                Some((k, d)) => (k, Some(d)),
                None => (t, None),
            };
            if data.is_some_and(|d| d != "verdict") {
                return Err(format!("map data {data:?}"));
            }
            map = data.is_some();
            for field in key.split(" . ") {
                let (ty, len) = match field {
                    "ipv4_addr" => (7, 4),
                    "inet_proto" => (12, 4),
                    "inet_service" => (13, 4),
                    _ => return Err(format!("set type {field:?}")),
                };
                key_type = (key_type << 6) | ty;
                key_len += len;
            }
        } else if let Some(f) = o.strip_prefix("flags ") {
            for f in f.split(',') {
                flags |= match f.trim() {
                    "dynamic" => 0x20,
                    "timeout" => 0x10,
                    f => return Err(format!("set flag {f:?}")),
                };
            }
        } else if let Some(t) = o.strip_prefix("timeout ") {
            let s = t.strip_suffix('s').and_then(|s| s.parse::<u64>().ok());
            timeout = Some(s.ok_or(format!("timeout {t:?}"))? * 1000);
        } else if let Some(c) = o.strip_prefix("comment ") {
            comment = Some(quoted(c)?);
        } else {
            return Err(format!("set option {o:?}"));
        }
    }
    let id = w.new_id(name);
    let b = &mut w.b;
    b.begin(Kind::NewSet, NLM_F_CREATE, table);
    b.str(2, name);
    b.u32(3, flags | if map { 0x8 } else { 0 });
    b.u32(4, key_type);
    b.u32(5, key_len);
    if map {
        b.u32(6, 0xffff_ff00);
        b.u32(7, 0);
    }
    b.u32(10, id);
    if let Some(ms) = timeout {
        b.u64(11, ms);
    }
    let mut udata = Udata(if map { CONCAT_MAP } else { ADDRESSES }.to_vec());
    if let Some(c) = comment {
        let mut v = c.as_bytes().to_vec();
        v.push(0);
        udata.put(7, &v);
    }
    b.bytes(13, &udata.0);
    b.end_message();
    Ok(())
}

/// An element's key: an address, a protocol or a port, joined by ` . `, each field
/// in a 4-byte register.
fn key(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for field in text.split(" . ") {
        let field = field.trim();
        if let Ok(ip) = field.parse::<Ipv4Addr>() {
            out.extend_from_slice(&ip.octets());
        } else if let Ok(port) = field.parse::<u16>() {
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            let p = match field {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                _ => return Err(format!("element key field {field:?}")),
            };
            out.extend_from_slice(&[p, 0, 0, 0]);
        }
    }
    Ok(out)
}

/// `add|delete element ip T SET { KEY [comment "C"] [: VERDICT] }`.
fn element(w: &mut Writer, add: bool, table: &str, set: &str, tail: &str) -> Result<(), String> {
    let inner = tail
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim();
    // KEY [comment "C"] [: VERDICT]: the comment may hold anything but a quote.
    let (k, comment, verdict) = match inner.split_once(" comment \"") {
        Some((k, rest)) => {
            let end = rest
                .find('"')
                .ok_or("a comment without its closing quote")?;
            let c = comment_text(&rest[..end])?;
            let after = rest[end + 1..].trim();
            (k, Some(c), after.strip_prefix(':').map(str::trim))
        }
        None => match inner.split_once(" : ") {
            Some((k, v)) => (k, None, Some(v)),
            None => (inner, None, None),
        },
    };
    let verdict = match verdict.map(|v| v.split_whitespace().collect::<Vec<_>>()) {
        None => None,
        Some(v) => Some(match v.as_slice() {
            ["goto", c] => Verdict::Goto(c.to_string()),
            ["jump", c] => Verdict::Jump(c.to_string()),
            ["drop"] => Verdict::Drop,
            _ => return Err(format!("element verdict {v:?}")),
        }),
    };
    let key = key(k)?;
    let id = w.ids.get(set).copied();
    let b = &mut w.b;
    let kind = if add {
        Kind::NewSetElem
    } else {
        Kind::DelSetElem
    };
    b.begin(kind, if add { NLM_F_CREATE } else { 0 }, table);
    b.str(2, set);
    if let (true, Some(id)) = (add, id) {
        b.u32(4, id);
    }
    b.nest(3);
    b.nest(1);
    b.value(1, &key);
    if let Some(v) = verdict {
        v.write(b, 2);
    }
    if let Some(c) = comment {
        b.bytes(6, &Udata::comment(0, c).0);
    }
    b.close();
    b.close();
    b.end_message();
    Ok(())
}

/// A rule, after the anonymous set it brings (its set, then its elements).
fn add_rule(w: &mut Writer, table: &str, chain: &str, text: &str) -> Result<(), String> {
    let mut r = rule::parse(text)?;
    if let Some(anon) = &r.anon {
        let id = anon_set(w, table, anon);
        for e in &mut r.exprs {
            if let expr::Expr::Lookup { set, id: i, .. } = e {
                if set.starts_with("__") {
                    *i = Some(id);
                }
            }
        }
    }
    for e in &mut r.exprs {
        match e {
            expr::Expr::Lookup { set, id, .. } | expr::Expr::Update { set, id } if id.is_none() => {
                *id = w.ids.get(set.as_str()).copied();
            }
            _ => {}
        }
    }
    let b = &mut w.b;
    b.begin(Kind::NewRule, NLM_F_CREATE | NLM_F_APPEND, table);
    b.str(2, chain);
    b.nest(4);
    for e in &r.exprs {
        e.write(b);
    }
    b.close();
    if let Some(c) = &r.comment {
        b.bytes(7, &Udata::comment(0, c).0);
    }
    b.end_message();
    Ok(())
}

/// A rule's anonymous set and its elements; its ID.
fn anon_set(w: &mut Writer, table: &str, anon: &Anon) -> u32 {
    let (name, elements) = match anon {
        Anon::Map(picks) => (rule::ANON_MAP, picks.len()),
        Anon::Ranges { ranges, .. } => (rule::ANON_SET, range_elements(ranges).len()),
    };
    w.next_id += 1;
    let id = w.next_id;
    let b = &mut w.b;
    b.begin(Kind::NewSet, NLM_F_CREATE, table);
    b.str(2, name);
    let udata: Vec<u8> = match anon {
        Anon::Map(_) => {
            // Anonymous, constant, a map; of integers, to verdicts.
            for (ty, v) in [(3, 0xb), (4, 4), (5, 4), (6, 0xffff_ff00), (7, 0)] {
                b.u32(ty, v);
            }
            vec![
                0, 4, 1, 0, 0, 0, 1, 4, 0, 0, 0, 0, 4, 8, 0, 4, 1, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0,
            ]
        }
        Anon::Ranges { daddr, .. } => {
            // Anonymous, constant, intervals; of addresses (typeof ip saddr|daddr).
            for (ty, v) in [(3, 0x7), (4, 7), (5, 4)] {
                b.u32(ty, v);
            }
            vec![
                0,
                4,
                2,
                0,
                0,
                0,
                2,
                4,
                1,
                0,
                0,
                0,
                3,
                20,
                0,
                4,
                7,
                0,
                0,
                0,
                1,
                12,
                0,
                4,
                12,
                0,
                0,
                0,
                1,
                4,
                if *daddr { 12 } else { 11 },
                0,
                0,
                0,
            ]
        }
    };
    b.u32(10, id);
    b.nest(9);
    b.u32(1, elements as u32);
    b.close();
    b.bytes(13, &udata);
    b.end_message();
    anon_elements(b, table, name, id, anon);
    id
}

/// How many elements one message carries: a netlink attribute measures at most
/// 65,535 bytes, and an element with a chain's name takes at most about 300.
const PER_MESSAGE: usize = 128;

/// The elements of a rule's anonymous set, in messages of [`PER_MESSAGE`].
fn anon_elements(b: &mut Batch, table: &str, name: &str, id: u32, anon: &Anon) {
    let count = match anon {
        Anon::Map(picks) => picks.len(),
        Anon::Ranges { ranges, .. } => range_elements(ranges).len(),
    };
    let ranges = match anon {
        Anon::Ranges { ranges, .. } => range_elements(ranges),
        Anon::Map(_) => Vec::new(),
    };
    for first in (0..count).step_by(PER_MESSAGE) {
        b.begin(Kind::NewSetElem, NLM_F_CREATE, table);
        b.str(2, name);
        b.u32(4, id);
        b.nest(3);
        for i in first..count.min(first + PER_MESSAGE) {
            b.nest((i - first) as u16 + 1);
            match anon {
                Anon::Map(picks) => {
                    b.value(1, &picks[i].0.to_ne_bytes());
                    picks[i].1.write(b, 2);
                }
                Anon::Ranges { .. } => {
                    let (addr, end, open) = ranges[i];
                    if end {
                        b.u32(3, 1); // NFT_SET_ELEM_INTERVAL_END
                    }
                    b.value(1, &addr.to_be_bytes());
                    if open {
                        b.bytes(6, &[1, 4, 1, 0, 0, 0]); // NFTNL_SET_ELEM_F_INTERVAL_OPEN
                    }
                }
            }
            b.close();
        }
        b.close();
        b.end_message();
    }
}

/// The elements of an interval set as nft sends them: an end at 0.0.0.0 unless a
/// range starts there, then each range's start and the address after it (an end),
/// or the start marked open when the range reaches 255.255.255.255.
fn range_elements(ranges: &[(u32, u32)]) -> Vec<(u32, bool, bool)> {
    let mut out = Vec::new();
    if ranges.first().is_some_and(|r| r.0 != 0) {
        out.push((0, true, false));
    }
    for &(first, last) in ranges {
        match last.checked_add(1) {
            Some(next) => {
                out.push((first, false, false));
                out.push((next, true, false));
            }
            None => out.push((first, false, true)),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;

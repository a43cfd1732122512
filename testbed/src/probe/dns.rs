//! A stub resolver like glibc's: reads a pod's resolv.conf, tries the name through
//! the search path as `ndots` says, and asks the nameservers from inside the pod.
//! Written here because it must make its sockets in the pod's namespace and report
//! every step (which name answered, the rcode), which resolver crates hide.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::dns::client::{ask_tcp, ask_udp};

/// What a resolv.conf says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolv {
    pub nameservers: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub ndots: usize,
    pub timeout: Duration,
    pub attempts: u32,
}

impl Resolv {
    pub fn parse(text: &str) -> Resolv {
        let mut r = Resolv {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(2),
            attempts: 2,
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        r.nameservers.push(ip);
                    }
                }
                Some("search") | Some("domain") => {
                    r.search = words.map(|w| w.trim_end_matches('.').to_string()).collect()
                }
                Some("options") => {
                    for o in words {
                        let (k, v) = o.split_once(':').unwrap_or((o, ""));
                        match (k, v.parse::<u64>()) {
                            ("ndots", Ok(n)) => r.ndots = n.min(15) as usize,
                            ("timeout", Ok(n)) => r.timeout = Duration::from_secs(n.clamp(1, 30)),
                            ("attempts", Ok(n)) => r.attempts = n.clamp(1, 5) as u32,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        r
    }

    /// The names tried for `name`, in glibc's order: an absolute name only as it is;
    /// with fewer than `ndots` dots the search domains first, else the name first.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(abs) = name.strip_suffix('.') {
            return vec![format!("{abs}.")];
        }
        let searched = self.search.iter().map(|d| format!("{name}.{d}."));
        let itself = std::iter::once(format!("{name}."));
        if name.matches('.').count() >= self.ndots {
            itself.chain(searched).collect()
        } else {
            searched.chain(itself).collect()
        }
    }
}

/// A file of the pod's `/etc` (`resolv.conf`, `hosts`), or why it cannot be read.
pub fn pod_etc(netns_name: &str, file: &str) -> Result<String, String> {
    let path = std::path::Path::new(crate::netns::ETC_NETNS_DIR)
        .join(netns_name)
        .join(file);
    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The address `name` has in a hosts file, if any (as libc's `files` source).
pub fn hosts_lookup(hosts: &str, name: &str) -> Option<Ipv4Addr> {
    let name = name.trim_end_matches('.');
    hosts.lines().find_map(|l| {
        let l = l.split('#').next()?;
        let mut words = l.split_whitespace();
        let ip = words.next()?.parse().ok()?;
        words.any(|w| w.eq_ignore_ascii_case(name)).then_some(ip)
    })
}

/// The final answer, and the names tried on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: String,
    /// The name whose answer this is (`web.default.svc.cluster.local.`).
    pub name: String,
    /// The answer section's data (`10.96.0.2`, `0 100 80 web...`), sorted.
    pub data: Vec<String>,
    /// The answer section, `name TTL TYPE data`, in order.
    pub records: Vec<String>,
    /// The authority section, the same way.
    pub authority: Vec<String>,
    /// Each name tried and its rcode (with the number of answers).
    pub tried: Vec<String>,
    /// The server that answered.
    pub server: SocketAddr,
    pub flags: String,
}

/// `NOERROR`, `NXDOMAIN`, ... to a code; `None` for a name that is not one.
pub fn rcode_from_name(name: &str) -> Option<ResponseCode> {
    let code = match name.to_ascii_uppercase().as_str() {
        "NOERROR" => ResponseCode::NoError,
        "FORMERR" => ResponseCode::FormErr,
        "SERVFAIL" => ResponseCode::ServFail,
        "NXDOMAIN" => ResponseCode::NXDomain,
        "NOTIMP" => ResponseCode::NotImp,
        "REFUSED" => ResponseCode::Refused,
        _ => return None,
    };
    Some(code)
}

/// The name dig prints for a code.
pub fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

/// Resolves `name` as the pod's resolver would, asking from namespace `netns`.
pub async fn resolve(
    netns: Option<&str>,
    resolv: &Resolv,
    name: &str,
    rtype: RecordType,
    tcp: bool,
) -> Result<Answer, String> {
    if resolv.nameservers.is_empty() {
        return Err("the pod's resolv.conf has no nameserver".into());
    }
    let mut tried = Vec::new();
    let mut nodata: Option<Answer> = None;
    let mut last: Option<Answer> = None;
    for candidate in resolv.candidates(name) {
        let qname = Name::from_ascii(&candidate)
            .map_err(|e| format!("{candidate:?} is not a name: {e}"))?;
        let (server, m) = ask_servers(netns, resolv, &qname, rtype, tcp).await?;
        let answer = summarize(&candidate, server, &m, &mut tried);
        match m.metadata.response_code {
            ResponseCode::NoError if !m.answers.is_empty() => {
                return Ok(Answer { tried, ..answer })
            }
            ResponseCode::NoError => {
                nodata.get_or_insert(answer);
            }
            ResponseCode::NXDomain => last = Some(answer),
            // SERVFAIL, REFUSED: glibc gives up on the name here.
            _ => return Ok(Answer { tried, ..answer }),
        }
    }
    let answer = nodata.or(last).expect("at least one name was tried");
    Ok(Answer { tried, ..answer })
}

fn summarize(name: &str, server: SocketAddr, m: &Message, tried: &mut Vec<String>) -> Answer {
    let rcode = rcode_name(m.metadata.response_code);
    tried.push(format!("{name} {rcode} ({} answers)", m.answers.len()));
    let line = |r: &hickory_proto::rr::Record| {
        format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data)
    };
    let mut data: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    data.sort();
    let meta = &m.metadata;
    let flags: Vec<&str> = [
        ("qr", meta.message_type == MessageType::Response),
        ("aa", meta.authoritative),
        ("tc", meta.truncation),
        ("rd", meta.recursion_desired),
        ("ra", meta.recursion_available),
    ]
    .into_iter()
    .filter_map(|(f, on)| on.then_some(f))
    .collect();
    Answer {
        rcode,
        name: name.to_string(),
        data,
        records: m.answers.iter().map(line).collect(),
        authority: m.authorities.iter().map(line).collect(),
        tried: Vec::new(),
        server,
        flags: flags.join(" "),
    }
}

async fn ask_servers(
    netns: Option<&str>,
    resolv: &Resolv,
    name: &Name,
    rtype: RecordType,
    tcp: bool,
) -> Result<(SocketAddr, Message), String> {
    let mut errors = Vec::new();
    for _ in 0..resolv.attempts {
        for ip in &resolv.nameservers {
            let server = SocketAddr::from((*ip, 53));
            let id = rand_id();
            let mut q = Message::new(id, MessageType::Query, OpCode::Query);
            q.metadata.recursion_desired = true;
            q.add_query(Query::query(name.clone(), rtype));
            let raw = q.to_vec().map_err(|e| e.to_string())?;
            let asked = if tcp {
                ask_tcp(netns, server, &raw, resolv.timeout).await
            } else {
                match ask_udp(netns, server, &raw, resolv.timeout).await {
                    // Truncated: ask again over TCP, as resolvers do.
                    Ok(m) if m.metadata.truncation => {
                        ask_tcp(netns, server, &raw, resolv.timeout).await
                    }
                    other => other,
                }
            };
            match asked {
                Ok(m) if m.metadata.id == id => return Ok((server, m)),
                Ok(_) => errors.push(format!("{server}: an answer to another question")),
                Err(e) => errors.push(format!("{server}: {e}")),
            }
        }
    }
    errors.dedup();
    Err(format!("no nameserver answered: {}", errors.join("; ")))
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n";

    #[test]
    fn reads_a_kubelet_resolv_conf() {
        let r = Resolv::parse(POD);
        assert_eq!(r.nameservers, [Ipv4Addr::new(10, 96, 0, 10)]);
        assert_eq!(r.search.len(), 3);
        assert_eq!(r.ndots, 5);
    }

    #[test]
    fn search_order_follows_ndots() {
        let r = Resolv::parse(POD);
        assert_eq!(
            r.candidates("web"),
            [
                "web.default.svc.cluster.local.",
                "web.svc.cluster.local.",
                "web.cluster.local.",
                "web."
            ]
        );
        // Fewer than 5 dots: still the search path first.
        assert_eq!(
            r.candidates("www.example.com")[0],
            "www.example.com.default.svc.cluster.local."
        );
        assert_eq!(r.candidates("www.example.com")[3], "www.example.com.");
        // An absolute name is only itself.
        assert_eq!(
            r.candidates("web.default.svc.cluster.local."),
            ["web.default.svc.cluster.local."]
        );
        let one =
            Resolv::parse("search a.b\nnameserver 1.1.1.1\noptions ndots:1 timeout:1 attempts:1\n");
        assert_eq!(one.candidates("x.y"), ["x.y.", "x.y.a.b."]);
        assert_eq!(one.timeout, Duration::from_secs(1));
    }

    #[test]
    fn rcode_names_round_trip() {
        for n in [
            "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP",
        ] {
            assert_eq!(rcode_name(rcode_from_name(n).unwrap()), n);
        }
        assert_eq!(rcode_from_name("nxdomain"), Some(ResponseCode::NXDomain));
        assert_eq!(rcode_from_name("OK"), None);
    }
}

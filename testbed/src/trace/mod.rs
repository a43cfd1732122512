//! `testbed trace`: one real connection from a pod, followed hop by hop with the
//! kernel's own evidence. While the pod resolves the name and connects, every node
//! traces the pod's packets (`meta nftrace`, see [`monitor`]); then the conntrack
//! entry, the routes and the links are read ([`gather`]), and [`explain`] tells
//! each hop in words: the names the resolver tried, the chains and rules the first
//! packet passed in each node, the DNAT and why that endpoint, masquerade or not,
//! the underlay crossing, the pod that answered, or where and why it failed.

pub mod events;
mod explain;
mod explain_failure;
pub mod gather;
pub mod monitor;
mod netfilter;
pub mod world;

#[cfg(test)]
mod explain_tests;

use serde::Serialize;

pub use gather::Request;
pub use world::World;

/// A trace, hop by hop.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// `default/client (10.244.1.2 on node-1)`.
    pub from: String,
    /// `web:80/TCP`.
    pub target: String,
    /// Whether a pod answered.
    pub ok: bool,
    /// The pod that answered (`default/web-b`), when one did.
    pub answered: Option<String>,
    /// How the connection failed (`refused`, `timeout`, `unreachable`), when it did.
    pub error: Option<String>,
    /// The outcome in one sentence.
    pub result: String,
    pub hops: Vec<Hop>,
    /// The places the connection went through, in order (`pod/default/client`,
    /// `node/node-1`, `service/default/web`, ...), for a picture.
    pub path: Vec<String>,
    /// The traced source port, which varies from run to run.
    #[serde(skip)]
    pub sport: u16,
}

/// One hop: where, what happened there, and the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    /// `pod default/client`, `node node-1`.
    pub at: String,
    pub what: String,
    pub lines: Vec<String>,
    /// Which lines change from run to run (which DNS pod answered, a state).
    #[serde(skip)]
    pub varying: Vec<bool>,
}

impl Hop {
    pub fn new(at: impl Into<String>, what: impl Into<String>) -> Hop {
        Hop {
            at: at.into(),
            what: what.into(),
            lines: Vec::new(),
            varying: Vec::new(),
        }
    }

    pub fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
        self.varying.push(false);
    }

    /// A line that changes from run to run: left out of snapshots.
    pub fn varying(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
        self.varying.push(true);
    }
}

/// Traces `req` in `world`'s cluster.
pub async fn trace(world: &World, req: &Request) -> Result<Trace, String> {
    let src = gather::source(world, &req.from)?;
    let ev = gather::gather(world, &src, req).await?;
    Ok(explain::explain(world, &src, req, &ev))
}

impl Trace {
    /// The trace as text, every line.
    pub fn text(&self) -> String {
        self.render(false)
    }

    /// The parts that do not change from run to run (no ports, counters, times or
    /// the DNS pod that happened to answer), for snapshots.
    pub fn stable_text(&self) -> String {
        self.render(true)
    }

    fn render(&self, stable: bool) -> String {
        let mut out = format!("trace {} -> {}\n", self.from, self.target);
        for (i, h) in self.hops.iter().enumerate() {
            out += &format!("{:>2}. {}: {}\n", i + 1, h.at, h.what);
            for (l, varying) in h.lines.iter().zip(&h.varying) {
                if stable && *varying {
                    continue;
                }
                out += &format!("      {l}\n");
            }
        }
        out += &format!("result: {}\n", self.result);
        if stable {
            mask_port(&out, self.sport)
        } else {
            out
        }
    }
}

/// `text` with the port `port` (after `:` or `=`) shown as `*`.
fn mask_port(text: &str, port: u16) -> String {
    let p = port.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&p) {
        let before = rest[..at].chars().last();
        let after = rest[at + p.len()..].chars().next();
        let whole = matches!(before, Some(':' | '=')) && !after.is_some_and(|c| c.is_ascii_digit());
        out += &rest[..at];
        out += if whole { "*" } else { &p };
        rest = &rest[at + p.len()..];
    }
    out + rest
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks_the_source_port_only_where_it_is_a_port() {
        let t = "src=10.244.1.2 sport=20417 10.244.1.2:20417 id 204170 :204171";
        assert_eq!(
            super::mask_port(t, 20417),
            "src=10.244.1.2 sport=* 10.244.1.2:* id 204170 :204171"
        );
    }
}

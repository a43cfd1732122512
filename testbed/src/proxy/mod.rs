//! kube-proxy: per node, the change tracker ([`tracker`]) turns Services and their
//! EndpointSlices into service ports and deltas, and a backend writes them into the
//! node's kernel. The iptables backend renders rules as text ([`render`]), writes them
//! with partial syncs ([`sync`]), and has a tracer that follows a packet through them
//! without a kernel ([`tracer`]). The node's loop ([`node`]) runs on the controller
//! runtime, over any [`ProxyBackend`] and any [`NodeExec`](crate::kernel::exec::NodeExec).

pub mod config;
pub mod fake;
pub mod fixed;
pub mod hash;
pub mod healthcheck;
pub mod iptables;
pub mod nftables;
pub mod node;
pub mod render;
pub mod sync;
pub mod tracer;
pub mod tracker;

#[cfg(test)]
mod node_repair_tests;
#[cfg(test)]
mod node_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upstream_goldens;
#[cfg(test)]
mod upstream_tests;

use tracker::{Changes, Tracker};

/// kube-proxy's mode: which backend writes a node's rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `iptables-restore`, as kube-proxy's default mode.
    #[default]
    Iptables,
    /// `nft -f`, as kube-proxy's nftables mode (GA in 1.33).
    Nftables,
}

impl Mode {
    /// The mode as kube-proxy's `--proxy-mode` names it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
        }
    }

    pub fn is_default(&self) -> bool {
        *self == Mode::default()
    }

    /// The mode named as kube-proxy's `--proxy-mode` (and its configuration's
    /// `mode`) names it, or why this testbed does not run it.
    pub fn parse(name: &str) -> Result<Mode, String> {
        match name {
            "" | "iptables" => Ok(Mode::Iptables),
            "nftables" => Ok(Mode::Nftables),
            "ipvs" => Err(
                "\"ipvs\" cannot run here: this kernel has no IPVS; iptables and nftables can"
                    .into(),
            ),
            other => Err(format!(
                "{other:?} is not a kube-proxy mode: iptables, ipvs or nftables"
            )),
        }
    }

    /// A backend of this mode for a node, with `cfg`.
    pub fn backend(self, cfg: render::Config) -> Box<dyn ProxyBackend> {
        match self {
            Mode::Iptables => Box::new(iptables::Backend::new(cfg)),
            Mode::Nftables => Box::new(nftables::Backend::new(cfg)),
        }
    }
}

/// How an update's texts reach a node's kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// A program fed each text on its standard input (`iptables-restore`).
    Program(&'static str, &'static [&'static str]),
    /// Each text an nf_tables transaction, written by the node's
    /// [`crate::kernel::exec::NodeExec::nft`] (one netlink batch).
    Nftables,
}

impl Writer {
    /// What the node's sync event says the update went through.
    pub fn name(self) -> &'static str {
        match self {
            Writer::Program(program, _) => program,
            Writer::Nftables => "netlink",
        }
    }
}

/// What turns the tracker's changes into one update of a node's rules, and keeps
/// what the node holds. An update is prepared, applied by its
/// [`ProxyBackend::writer`], then committed or marked failed.
pub trait ProxyBackend: Send {
    /// The mode's name, as kube-proxy's `--proxy-mode` says it.
    fn name(&self) -> &'static str;

    /// How an update is applied.
    fn writer(&self) -> Writer;

    /// Whether the node is known to hold what was committed last. It is not at first
    /// and after a failure: the next update is then a full one.
    fn in_sync(&self) -> bool;

    /// The inputs that take the node from what it holds to what `tracker` has, given
    /// the `changes` since the last update, each one run of [`command`](Self::command)
    /// in order; none when nothing changed. They are kept as pending until committed
    /// (all taken) or failed (one refused).
    fn prepare(&mut self, changes: Changes, tracker: &Tracker) -> Vec<String>;

    /// The node took the pending update.
    fn commit(&mut self);

    /// The node refused the pending update.
    fn failed(&mut self);

    /// A check of what the node must hold outside the updates (the jumps from the
    /// built-in chains, the canary chains): a program and its arguments, run before a
    /// full update and at every periodic sync.
    fn check(&self) -> Option<(&'static str, Vec<String>)> {
        None
    }

    /// Takes the check's output: what is gone is put back by the next update, and a
    /// flush (a canary gone) makes it a full one.
    fn checked(&mut self, _output: &str) {}

    /// Whether the last check found something to put back: an update is due even
    /// with no change.
    fn needs_repair(&self) -> bool {
        false
    }
}

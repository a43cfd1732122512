//! kube-proxy's nftables mode: the table `ip kube-proxy` rendered as upstream's
//! `pkg/proxy/nftables/proxier.go` writes it ([`render`], with upstream's chain names
//! in [`names`]), written by full and partial syncs as `nft -f` transactions
//! ([`sync`]), a model of the table that takes those transactions ([`state`]) and a
//! tracer that follows a packet through it without a kernel ([`tracer`]).

pub mod names;
pub mod render;
pub mod state;
pub mod sync;
pub mod tracer;

#[cfg(test)]
mod repeated_tests;
#[cfg(test)]
mod tests;

use super::render::Config;
use super::tracker::{Changes, Tracker};
use super::ProxyBackend;
use sync::{Proxier, Update};

pub struct Backend {
    proxier: Proxier,
    pending: Option<Update>,
}

impl Backend {
    pub fn new(cfg: Config) -> Self {
        Backend {
            proxier: Proxier::new(cfg),
            pending: None,
        }
    }
}

/// What the check prints when the table is there.
const PRESENT: &str = "kube-proxy-table-present";

/// Whether the check found kube-proxy's table.
fn has_table(output: &str) -> bool {
    output.lines().any(|l| l.trim() == PRESENT)
}

impl ProxyBackend for Backend {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn command(&self) -> (&'static str, &'static [&'static str]) {
        ("nft", &["-f", "-"])
    }

    fn in_sync(&self) -> bool {
        self.proxier.in_sync()
    }

    fn prepare(&mut self, changes: Changes, tracker: &Tracker) -> Vec<String> {
        let mut update = if self.proxier.in_sync() {
            self.proxier.partial(changes.upserts, changes.removed)
        } else {
            self.proxier.full_sync(&tracker.all())
        };
        // The texts go to the node; what the update keeps is what commit needs.
        let texts = std::mem::take(&mut update.transactions);
        self.pending = Some(update);
        texts
    }

    fn commit(&mut self) {
        if let Some(update) = self.pending.take() {
            self.proxier.commit(update);
        }
    }

    fn failed(&mut self) {
        self.pending = None;
        self.proxier.failed();
    }

    /// The table is there: `nft flush ruleset` (or `nft delete table`) removes it,
    /// and the next sync is then a full one. One small set is listed, not the
    /// tables: `nft list tables` reads the whole ruleset first (1.4 s at 10,000
    /// Services), a set alone about 20 ms.
    fn check(&self) -> Option<(&'static str, Vec<String>)> {
        let probe = format!(
            "if nft list set {} nodeport-ips >/dev/null 2>&1; then echo {PRESENT}; fi",
            render::TABLE
        );
        Some(("sh", vec!["-c".into(), probe]))
    }

    fn checked(&mut self, output: &str) {
        if !has_table(output) && self.proxier.in_sync() {
            tracing::warn!("kube-proxy's nftables table is gone: syncing in full");
            self.proxier.table_gone();
        }
    }

    /// Stale chains are due to be deleted.
    fn needs_repair(&self) -> bool {
        self.proxier.stale_due()
    }
}

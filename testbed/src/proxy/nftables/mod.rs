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

/// What the check prints when the table is there, and when nft says it is not.
const PRESENT: &str = "kube-proxy-table-present";
const ABSENT: &str = "kube-proxy-table-absent";

/// What the check found: the table is there (`Some(true)`), nft said it is not
/// (`Some(false)`: no such table or set), or nft failed otherwise (`None`: a busy or
/// starved node is no reason to rewrite everything).
fn has_table(output: &str) -> Option<bool> {
    let said = |w: &str| output.lines().any(|l| l.trim() == w);
    if said(PRESENT) {
        Some(true)
    } else if said(ABSENT) {
        Some(false)
    } else {
        None
    }
}

impl ProxyBackend for Backend {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn writer(&self) -> super::Writer {
        super::Writer::Nftables
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
    /// Services), a set alone about 20 ms. `cluster-ips` is in every table
    /// (`nodeport-ips` is not when node ports take every address).
    fn check(&self) -> Option<(&'static str, Vec<String>)> {
        let probe = format!(
            "if e=$(nft list set {} cluster-ips 2>&1 >/dev/null); then echo {PRESENT}; \
             else case $e in *'No such file or directory'*) echo {ABSENT};; *) echo \"$e\";; esac; fi",
            render::TABLE
        );
        Some(("sh", vec!["-c".into(), probe]))
    }

    fn checked(&mut self, output: &str) {
        match has_table(output) {
            Some(false) if self.proxier.in_sync() => {
                tracing::warn!("kube-proxy's nftables table is gone: syncing in full");
                self.proxier.table_gone();
            }
            None => tracing::warn!(
                "kube-proxy's check of its nftables table failed: {}",
                output.trim()
            ),
            _ => {}
        }
    }

    /// Stale chains are due to be deleted.
    fn needs_repair(&self) -> bool {
        self.proxier.stale_due()
    }
}

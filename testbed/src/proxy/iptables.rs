//! The iptables backend: the [`Proxier`]'s partial syncs, applied with
//! `iptables-restore --noflush`, and the jumps from the built-in chains put back
//! whenever a check finds them gone (see [`fixed`]).

use super::fixed::{self, Jump};
use super::render::Config;
use super::sync::{Proxier, Update};
use super::tracker::{Changes, Tracker};
use super::ProxyBackend;

pub struct Backend {
    proxier: Proxier,
    pending: Option<Update>,
    /// The jumps the last check did not find (all of them before the first).
    missing: Vec<Jump>,
}

impl Backend {
    pub fn new(cfg: Config) -> Self {
        Backend {
            proxier: Proxier::new(cfg),
            pending: None,
            missing: fixed::JUMPS.to_vec(),
        }
    }
}

impl ProxyBackend for Backend {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn writer(&self) -> super::Writer {
        super::Writer::Program("iptables-restore", &["-w", "--noflush"])
    }

    fn in_sync(&self) -> bool {
        self.proxier.in_sync()
    }

    fn prepare(&mut self, changes: Changes, tracker: &Tracker) -> Vec<String> {
        let mut update = if self.proxier.in_sync() {
            self.proxier
                .prepare_changes(changes.upserts, changes.removed)
        } else {
            // The first sync, or one after a failure: everything, from the whole state.
            self.proxier.prepare(&tracker.all())
        };
        // The jumps after the chains they lead to exist.
        let text = std::mem::take(&mut update.text) + &fixed::ensure_text(&self.missing);
        self.pending = Some(update);
        if text.is_empty() {
            Vec::new()
        } else {
            vec![text]
        }
    }

    fn commit(&mut self) {
        if let Some(update) = self.pending.take() {
            self.proxier.commit(update);
        }
        self.missing.clear();
    }

    fn failed(&mut self) {
        self.pending = None;
        self.proxier.failed();
    }

    fn check(&self) -> Option<(&'static str, Vec<String>)> {
        Some(("sh", vec!["-c".into(), fixed::check_script()]))
    }

    fn checked(&mut self, output: &str) {
        let found = fixed::read_check(output);
        if !found.canaries_gone.is_empty() && self.proxier.in_sync() {
            tracing::warn!(
                tables = found.canaries_gone.join(","),
                "kube-proxy's canary chains are gone: the tables were flushed, syncing in full"
            );
            self.proxier.failed();
        }
        self.missing = found.missing;
    }

    fn needs_repair(&self) -> bool {
        !self.missing.is_empty()
    }
}

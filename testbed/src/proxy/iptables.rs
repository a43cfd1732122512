//! The iptables backend: the [`Proxier`]'s partial syncs, applied with
//! `iptables-restore --noflush`.

use super::render::Config;
use super::sync::{Proxier, Update};
use super::tracker::{Changes, Tracker};
use super::ProxyBackend;

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

impl ProxyBackend for Backend {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn command(&self) -> (&'static str, &'static [&'static str]) {
        ("iptables-restore", &["-w", "--noflush"])
    }

    fn in_sync(&self) -> bool {
        self.proxier.in_sync()
    }

    fn prepare(&mut self, changes: Changes, tracker: &Tracker) -> String {
        let update = if self.proxier.in_sync() {
            self.proxier
                .prepare_changes(changes.upserts, changes.removed)
        } else {
            // The first sync, or one after a failure: everything, from the whole state.
            self.proxier.prepare(&tracker.all())
        };
        let text = update.text.clone();
        self.pending = Some(update);
        text
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
}

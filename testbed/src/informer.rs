//! The controller runtime that every watch loop runs on (the endpoints and
//! Deployment controllers, the cluster DNS, each node's kube-proxy, the kubelets), as
//! kube-rs's `reflector` + `Controller` and kube-proxy's shared informer do it.
//!
//! A controller says which kinds it reads, takes each change into its own caches
//! (marking the keys it dirties), and reconciles the dirty keys in a batch. The
//! runtime owns the rest, once: the initial list, watching only those kinds, draining
//! every waiting change before acting once, retrying keys that failed after a
//! back-off, and publishing the **synced revision**: the store revision up to which
//! every change the controller reads has been acted on. Waits (`ControlPlane::
//! wait_synced`, the runner's steps) wait on these revisions instead of sleeping.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::{Event, Kind, Store};

/// A controller: its caches and what it does with their changes.
#[async_trait::async_trait]
pub trait Reconcile: Send {
    /// What one unit of work is about: a Service, a Deployment, a pod; `()` for a
    /// controller that rebuilds everything it owns at once.
    type Key: Ord + Clone + Send + Sync;

    /// The kinds it reads: it is sent changes of these only.
    fn kinds(&self) -> &'static [Kind];

    /// Takes one change into its caches and adds the keys it makes dirty.
    fn observe(&mut self, event: Event, dirty: &mut BTreeSet<Self::Key>);

    /// Whether it has work due with no key dirty (a first sync, a retry of a whole
    /// sync): it is then reconciled with an empty set.
    fn unfinished(&self) -> bool {
        false
    }

    /// Acts on the dirty keys, at store revision `revision` (every change up to it
    /// has been observed). On failure, the keys it could not finish are handed back
    /// (or none, when [`Reconcile::unfinished`] says what is due), to be tried again
    /// after a back-off or with the next change, whichever comes first.
    async fn reconcile(
        &mut self,
        dirty: BTreeSet<Self::Key>,
        revision: u64,
    ) -> Result<(), BTreeSet<Self::Key>>;

    /// How long it may go without a reconcile: past that it is reconciled with an
    /// empty set (a periodic sync, as kube-proxy's `syncPeriod`). None: never.
    fn resync_period(&self) -> Option<Duration> {
        None
    }

    /// Told each time the synced revision is published.
    fn synced(&mut self, _revision: u64) {}
}

/// The first wait before a failed reconcile is retried; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `controller` until the store's watch ends, publishing its synced revision
/// on `synced`.
pub async fn run<R: Reconcile>(store: Arc<Store>, mut controller: R, synced: &watch::Sender<u64>) {
    let mut revision = store.subscribe();
    // The revision before the list: every write up to it is in the list or queued.
    let mut seen = *revision.borrow_and_update();
    let (initial, mut events) = store.watch(controller.kinds(), None);
    let mut dirty = BTreeSet::new();
    for object in initial {
        let event = Event {
            kind: crate::api::EventType::Added,
            object,
        };
        controller.observe(event, &mut dirty);
    }
    let mut backoff = FIRST_BACKOFF;
    // After a failure: not before this, whatever changes meanwhile.
    let mut retry_at: Option<Instant> = None;
    let period = controller.resync_period();
    let mut last = Instant::now();
    loop {
        while let Ok(event) = events.try_recv() {
            controller.observe(event, &mut dirty);
        }
        let due = retry_at.is_none_or(|t| Instant::now() >= t);
        let resync = period.is_some_and(|p| last.elapsed() >= p);
        if due && (!dirty.is_empty() || controller.unfinished() || resync) {
            last = Instant::now();
            match controller.reconcile(std::mem::take(&mut dirty), seen).await {
                Ok(()) => {
                    retry_at = None;
                    backoff = FIRST_BACKOFF;
                }
                Err(again) => {
                    dirty.extend(again);
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if retry_at.is_none() && *synced.borrow() < seen {
            synced.send_replace(seen);
            controller.synced(seen);
        }
        // Wait for a change, the revision moving on (a write's events may have been
        // drained above before its revision was published), or the retry.
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let periodic = async {
            match period {
                Some(p) => tokio::time::sleep_until(last + p).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = periodic => {}
            event = events.recv() => match event {
                Some(event) => controller.observe(event, &mut dirty),
                None => return,
            },
            r = revision.changed() => if r.is_err() { return },
            _ = retry => {}
        }
        // The revision first: every write up to it has its events queued already.
        seen = *revision.borrow_and_update();
    }
}

/// Starts `controller` as a task: its handle and its synced revision.
pub fn spawn<R: Reconcile + 'static>(
    store: Arc<Store>,
    controller: R,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<u64>) {
    let (tx, rx) = watch::channel(0);
    let task = tokio::spawn(async move { run(store, controller, &tx).await });
    (task, rx)
}

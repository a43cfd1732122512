//! Faults a scenario injects into the kubelets: a pod killed (its processes die;
//! its `restartPolicy` says whether they start again), a pod whose readiness fails whatever its probes say, a node
//! down (the node lifecycle controller marks its pods not ready), a node whose
//! kubelet is silent. The kubelets watch
//! this state and act on every change.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::watch;

/// `(namespace, name)`.
pub type PodKey = (String, String);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// How many times each pod's processes were killed.
    pub kills: HashMap<PodKey, u32>,
    pub unready: HashSet<PodKey>,
    pub nodes_down: HashSet<String>,
    /// Nodes whose kubelet has lost the API server: it neither reports nor acts on
    /// changes; its pods keep running.
    pub silent: HashSet<String>,
}

impl State {
    /// Whether the pod on `node` must be reported not ready.
    pub fn forced_unready(&self, key: &PodKey, node: &str) -> bool {
        self.unready.contains(key) || self.nodes_down.contains(node)
    }
}

#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
        }
    }
}

impl Faults {
    pub fn get(&self) -> State {
        self.state.lock().expect("faults lock").clone()
    }

    /// Changes the state and wakes every kubelet.
    pub fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().expect("faults lock"));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Whether node `node`'s kubelet is silent (without copying the state).
    pub fn silent(&self, node: &str) -> bool {
        self.state
            .lock()
            .expect("faults lock")
            .silent
            .contains(node)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

//! What a kubelet decides when a container ends, as upstream's kubelet decides it:
//! whether it restarts (the pod's `restartPolicy`), after how long (the crash-loop
//! back-off), and the container statuses and pod phase the API then shows.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A pod's `restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Always,
    OnFailure,
    Never,
}

impl Policy {
    /// The pod's policy (`Always` when unset, as admission defaults it).
    pub fn of(spec: &PodSpec) -> Policy {
        match spec.restart_policy.as_deref() {
            Some("Never") => Policy::Never,
            Some("OnFailure") => Policy::OnFailure,
            _ => Policy::Always,
        }
    }

    /// Whether a container that exited with `code` is started again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            Policy::Always => true,
            Policy::OnFailure => code != 0,
            Policy::Never => false,
        }
    }
}

/// The crash-loop back-off's bounds. Upstream's kubelet waits 10 s before the second
/// restart and doubles that up to 300 s; its `crashLoopBackOff.maxContainerRestartPeriod`
/// (KubeletConfiguration, feature KubeletCrashLoopBackOffMax) lowers the cap, and the
/// initial wait with it when the cap is below 10 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackOffSpec {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackOffSpec {
    fn default() -> Self {
        BackOffSpec {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl BackOffSpec {
    /// The bounds with the cap `max`.
    pub fn with_max(max: Duration) -> Self {
        BackOffSpec {
            initial: BackOffSpec::default().initial.min(max),
            max,
        }
    }
}

/// One container's back-off, as kubelet's `flowcontrol.Backoff` keeps it: the first
/// restart is at once; each later one waits the current period from the last start,
/// which then doubles up to the cap; a container that ran twice the cap starts over.
#[derive(Debug, Clone)]
pub struct BackOff {
    spec: BackOffSpec,
    current: Option<Duration>,
    /// The period the last wait counted from.
    pub period: Duration,
}

impl BackOff {
    pub fn new(spec: BackOffSpec) -> Self {
        BackOff {
            spec,
            current: None,
            period: Duration::ZERO,
        }
    }

    /// How long to wait before starting again a container that ran for `ran`.
    pub fn next(&mut self, ran: Duration) -> Duration {
        if ran >= self.spec.max * 2 {
            self.current = None;
        }
        match self.current {
            None => {
                self.current = Some(self.spec.initial);
                Duration::ZERO
            }
            Some(d) => {
                self.period = d;
                self.current = Some((d * 2).min(self.spec.max));
                d.saturating_sub(ran)
            }
        }
    }
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub exit_code: i32,
    /// `Completed` (exit 0), `Error`, or `StartError` (it could not start).
    pub reason: String,
    pub message: Option<String>,
    pub started: Option<Time>,
    pub finished: Time,
}

impl Ended {
    /// A container that exited with `code`.
    pub fn exited(code: i32, started: Option<Time>, finished: Time) -> Self {
        Ended {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started,
            finished,
        }
    }
}

/// Where a container is.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        since: Time,
        /// Its startup probe passed (or it has none).
        started: bool,
        /// Its readiness probe passes (or it has none).
        ready: bool,
    },
    Terminated(Ended),
}

/// One container's status, as the kubelet keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub name: String,
    pub image: String,
    pub restarts: i32,
    pub state: State,
    pub last: Option<Ended>,
}

impl Status {
    /// A container not started yet.
    pub fn creating(name: &str, image: &str) -> Self {
        Status {
            name: name.into(),
            image: image.into(),
            restarts: 0,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
        }
    }

    pub fn ready(&self) -> bool {
        matches!(self.state, State::Running { ready: true, .. })
    }

    /// As the API shows it.
    pub fn to_api(&self) -> ContainerStatus {
        let ended = |e: &Ended| ContainerStateTerminated {
            exit_code: e.exit_code,
            reason: Some(e.reason.clone()),
            message: e.message.clone(),
            started_at: e.started.clone(),
            finished_at: Some(e.finished.clone()),
            ..Default::default()
        };
        let state = match &self.state {
            State::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            State::Running { since, .. } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(since.clone()),
                }),
                ..Default::default()
            },
            State::Terminated(e) => ContainerState {
                terminated: Some(ended(e)),
                ..Default::default()
            },
        };
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: String::new(),
            ready: self.ready(),
            restart_count: self.restarts,
            started: Some(matches!(self.state, State::Running { started: true, .. })),
            state: Some(state),
            last_state: self.last.as_ref().map(|e| ContainerState {
                terminated: Some(ended(e)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The pod's phase from its containers, as upstream's kubelet `getPhase` computes it
/// (without init containers).
pub fn phase(policy: Policy, containers: &[Status]) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(e) => {
                stopped += 1;
                if e.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if c.last.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 || policy == Policy::Always {
        "Running"
    } else if stopped == succeeded {
        "Succeeded"
    } else if policy == Policy::Never {
        "Failed"
    } else {
        "Running"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + s).unwrap())
    }

    #[test]
    fn the_back_off_is_at_once_then_doubles_to_its_cap_and_starts_over_after_a_long_run() {
        let mut b = BackOff::new(BackOffSpec::default());
        let s = Duration::from_secs;
        let waits: Vec<u64> = (0..8).map(|_| b.next(s(1)).as_secs()).collect();
        assert_eq!(waits, [0, 9, 19, 39, 79, 159, 299, 299]);
        // Ran 10 minutes (twice the cap): forgotten.
        assert_eq!(b.next(s(600)), Duration::ZERO);
        assert_eq!(b.next(s(0)), s(10));
        // A cap below 10 s lowers the first wait too.
        let mut b = BackOff::new(BackOffSpec::with_max(s(2)));
        let waits: Vec<u64> = (0..4).map(|_| b.next(s(0)).as_secs()).collect();
        assert_eq!(waits, [0, 2, 2, 2]);
    }

    #[test]
    fn the_phase_follows_upstream_get_phase() {
        let running = State::Running {
            since: time(0),
            started: true,
            ready: true,
        };
        let ended = |code| State::Terminated(Ended::exited(code, Some(time(0)), time(1)));
        let c = |state: State, last: bool| Status {
            name: "c".into(),
            image: "i".into(),
            restarts: 0,
            state,
            last: last.then(|| Ended::exited(1, None, time(1))),
        };
        let back_off = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        };
        let cases = [
            (
                Policy::Always,
                vec![c(Status::creating("c", "i").state, false)],
                "Pending",
            ),
            (Policy::Always, vec![c(running.clone(), false)], "Running"),
            (Policy::Always, vec![c(back_off.clone(), true)], "Running"),
            (
                Policy::Never,
                vec![c(ended(0), false), c(ended(0), false)],
                "Succeeded",
            ),
            (
                Policy::Never,
                vec![c(ended(0), false), c(ended(2), false)],
                "Failed",
            ),
            (
                Policy::Never,
                vec![c(running, false), c(ended(2), false)],
                "Running",
            ),
            (Policy::OnFailure, vec![c(ended(0), false)], "Succeeded"),
            (Policy::OnFailure, vec![c(back_off, true)], "Running"),
        ];
        for (policy, containers, want) in cases {
            assert_eq!(
                phase(policy, &containers),
                want,
                "{policy:?} {containers:?}"
            );
        }
        assert!(Policy::OnFailure.restarts(1) && !Policy::OnFailure.restarts(0));
        assert!(Policy::Always.restarts(0) && !Policy::Never.restarts(1));
    }
}

//! One container's life, as kubelet runs it: started, its startup probe, then its
//! liveness and readiness probes; when it ends (it exits, a probe fails, a scenario
//! kills it) the pod's `restartPolicy` says whether it starts again, after the
//! crash-loop back-off; when the pod is deleted, its `preStop` hook, SIGTERM, the
//! grace period, SIGKILL. Its status goes to the pod's task through a watch.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use tokio::sync::watch;
use tokio::time::Instant;

use super::probe::{self, Kind};
use super::restart::{BackOff, BackOffSpec, Ended, Policy, State, Status};
use super::runtime::{Processes, StartError, KILLED};
use super::PodRuntime;
use crate::api::events::Type;
use crate::plan::PodPlan;

/// What the pod's task tells its containers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Orders {
    /// How many times a scenario has killed the pod's processes.
    pub kills: u32,
    /// The pod is deleted: stop by then.
    pub terminate: Option<Instant>,
    /// The pod goes: stop now.
    pub stop: bool,
}

/// What every container of a pod shares.
pub struct Pod<'a> {
    pub runtime: &'a dyn PodRuntime,
    pub plan: &'a PodPlan,
    pub spec: &'a PodSpec,
    pub target: &'a probe::Target,
    pub backoff: BackOffSpec,
    /// The pod's `name_namespace(uid)`, as kubelet names it in messages.
    pub full_name: String,
    pub statuses: &'a watch::Sender<Vec<Status>>,
    /// Records an event about the pod from the kubelet.
    pub event: &'a (dyn Fn(Type, &str, String) + Sync),
}

impl Pod<'_> {
    fn set(&self, i: usize, f: impl FnOnce(&mut Status)) {
        self.statuses.send_modify(|s| f(&mut s[i]));
    }
}

/// Why a running container stopped.
enum Stopped {
    Exited(i32),
    Probe(Kind, String),
    Killed,
    Terminate(Instant),
    Stop,
}

/// Container `i` may not run as its spec says: it waits, as kubelet's
/// `CreateContainerConfigError`.
fn config_error(pod: &Pod<'_>, i: usize, e: String) {
    (pod.event)(Type::Warning, "Failed", format!("Error: {e}"));
    pod.set(i, |s| {
        s.state = State::Waiting {
            reason: "CreateContainerConfigError".into(),
            message: Some(e),
        }
    });
}

/// A container that failed to start ends as `StartError`, exit code 128.
fn start_error(pod: &Pod<'_>, e: String) -> Ended {
    (pod.event)(Type::Warning, "Failed", format!("Error: {e}"));
    Ended {
        exit_code: 128,
        reason: "StartError".into(),
        message: Some(e),
        started: None,
        finished: super::now(),
    }
}

/// Runs container `i` until the pod goes or it ends for good.
pub async fn life(pod: &Pod<'_>, i: usize, mut orders: watch::Receiver<Orders>) {
    let c = &pod.spec.containers[i];
    let policy = Policy::of(pod.spec);
    let mut backoff = BackOff::new(pod.backoff);
    let mut kills = orders.borrow().kills;
    loop {
        let since = super::now();
        let began = Instant::now();
        let stopped = match pod.runtime.start_container(pod.plan, pod.spec, c).await {
            Ok(mut proc) => {
                let ip = pod.target.ip;
                (pod.event)(
                    Type::Normal,
                    "Started",
                    format!("Started container {} at {ip}", c.name),
                );
                let startup = probe::startup(c);
                pod.set(i, |s| {
                    s.state = State::Running {
                        since: since.clone(),
                        started: startup.is_none(),
                        ready: probe::readiness(c).is_none(),
                    }
                });
                let stopped = tokio::select! {
                    code = proc.wait() => Stopped::Exited(code),
                    (kind, e) = probing(pod, i, c) => Stopped::Probe(kind, e),
                    o = order(&mut orders, &mut kills) => o,
                };
                end(pod, c, proc.as_mut(), stopped).await
            }
            Err(StartError::Config(e)) => {
                // It cannot start until the spec changes, which it cannot.
                config_error(pod, i, e);
                wait_end(&mut orders).await;
                return;
            }
            Err(StartError::Start(e)) => Err(start_error(pod, e)),
        };
        let ended = match stopped {
            Ok(ended) => ended,
            Err(ended) => {
                let ran = began.elapsed();
                let code = ended.exit_code;
                pod.set(i, |s| s.state = State::Terminated(ended.clone()));
                if !policy.restarts(code) {
                    // It stays terminated: the pod waits to go.
                    let _ = wait_end(&mut orders).await;
                    return;
                }
                if !back_off(pod, i, c, backoff.next(ran), &backoff, &ended, &mut orders).await {
                    return;
                }
                pod.set(i, |s| {
                    s.restarts += 1;
                    s.last = Some(ended);
                });
                continue;
            }
        };
        // Deleted or gone: it does not start again.
        pod.set(i, |s| s.state = State::Terminated(ended));
        return;
    }
}

/// Waits out the back-off `wait` before a restart, the pod showing CrashLoopBackOff:
/// false when the pod goes meanwhile.
async fn back_off(
    pod: &Pod<'_>,
    i: usize,
    c: &Container,
    wait: Duration,
    backoff: &BackOff,
    ended: &Ended,
    orders: &mut watch::Receiver<Orders>,
) -> bool {
    if wait.is_zero() {
        return true;
    }
    let message = format!(
        "back-off {} restarting failed container={} pod={}",
        seconds(backoff.period),
        c.name,
        pod.full_name
    );
    let event = format!(
        "Back-off restarting failed container {} in pod {}",
        c.name, pod.full_name
    );
    (pod.event)(Type::Warning, "BackOff", event);
    pod.set(i, |s| {
        s.state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some(message),
        };
        s.last = Some(ended.clone());
    });
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = wait_end(orders) => false,
    }
}

/// Stops a running container as `stopped` says: `Err` when it ended (to restart by
/// the policy), `Ok` when the pod is deleted or goes.
async fn end(
    pod: &Pod<'_>,
    c: &Container,
    proc: &mut dyn Processes,
    stopped: Stopped,
) -> Result<Ended, Ended> {
    let started = match &pod.statuses.borrow().iter().find(|s| s.name == c.name) {
        Some(Status {
            state: State::Running { since, .. },
            ..
        }) => Some(since.clone()),
        _ => None,
    };
    let grace = Duration::from_secs(
        pod.spec
            .termination_grace_period_seconds
            .unwrap_or(30)
            .clamp(0, 3600) as u64,
    );
    let code = match stopped {
        Stopped::Exited(code) => code,
        Stopped::Probe(kind, e) => {
            let what = if kind == Kind::Startup {
                "Startup"
            } else {
                "Liveness"
            };
            (pod.event)(
                Type::Warning,
                "Unhealthy",
                format!("{what} probe failed: {e}"),
            );
            let msg = format!(
                "Container {} failed {} probe, will be restarted",
                c.name,
                what.to_lowercase()
            );
            (pod.event)(Type::Normal, "Killing", msg);
            proc.terminate(grace).await
        }
        Stopped::Killed => {
            let msg = format!("Container {} killed (a scenario's fault)", c.name);
            (pod.event)(Type::Warning, "Killing", msg);
            proc.kill().await;
            KILLED
        }
        Stopped::Terminate(deadline) => {
            let code = terminate(pod, c, proc, deadline).await;
            return Ok(Ended::exited(code, started, super::now()));
        }
        Stopped::Stop => {
            proc.kill().await;
            return Ok(Ended::exited(KILLED, started, super::now()));
        }
    };
    Err(Ended::exited(code, started, super::now()))
}

/// A deleted pod's container: its `preStop` hook, then SIGTERM and what is left of
/// the grace period, then SIGKILL.
async fn terminate(
    pod: &Pod<'_>,
    c: &Container,
    proc: &mut dyn Processes,
    deadline: Instant,
) -> i32 {
    let left = || deadline.saturating_duration_since(Instant::now());
    let grace = left().as_secs();
    let msg = format!("Stopping container {} (grace period {grace} s)", c.name);
    (pod.event)(Type::Normal, "Killing", msg);
    if let Some(hook) = probe::pre_stop(c, left()) {
        let ran = tokio::time::timeout(left(), pod.runtime.probe(pod.target, &hook)).await;
        let failed = match ran {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("did not end within the grace period ({grace} s)")),
        };
        if let Some(e) = failed {
            let msg = format!("PreStopHook failed for container {}: {e}", c.name);
            (pod.event)(Type::Warning, "FailedPreStopHook", msg);
        }
    }
    proc.terminate(left()).await
}

/// Runs the container's probes: the startup probe until it passes, then liveness and
/// readiness; returns when the startup or liveness probe fails its threshold.
async fn probing(pod: &Pod<'_>, i: usize, c: &Container) -> (Kind, String) {
    let (rt, target) = (pod.runtime, pod.target);
    if let Some(p) = probe::startup(c) {
        if let Err(e) = probe::run(rt, target, &p, Kind::Startup, &mut |_| {}).await {
            return (Kind::Startup, e);
        }
        pod.set(i, |s| {
            if let State::Running { started, .. } = &mut s.state {
                *started = true;
            }
        });
    }
    let liveness = async {
        match probe::liveness(c) {
            Some(p) => match probe::run(rt, target, &p, Kind::Liveness, &mut |_| {}).await {
                Err(e) => e,
                Ok(()) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    let readiness = async {
        if let Some(p) = probe::readiness(c) {
            let mut report = |ok: bool| {
                pod.set(i, |s| {
                    if let State::Running { ready, .. } = &mut s.state {
                        *ready = ok;
                    }
                })
            };
            let _ = probe::run(rt, target, &p, Kind::Readiness, &mut report).await;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        e = liveness => (Kind::Liveness, e),
        _ = readiness => unreachable!("readiness probing never ends"),
    }
}

/// The next order that stops a running container.
async fn order(orders: &mut watch::Receiver<Orders>, kills: &mut u32) -> Stopped {
    loop {
        {
            let o = orders.borrow_and_update();
            if o.stop {
                return Stopped::Stop;
            }
            if let Some(at) = o.terminate {
                return Stopped::Terminate(at);
            }
            if o.kills > *kills {
                *kills = o.kills;
                return Stopped::Killed;
            }
        }
        if orders.changed().await.is_err() {
            return Stopped::Stop;
        }
    }
}

/// Waits until the pod is deleted or goes.
async fn wait_end(orders: &mut watch::Receiver<Orders>) {
    let mut ignored = u32::MAX;
    order(orders, &mut ignored).await;
}

/// `10s`, `1m20s`, as kubelet's message prints a back-off.
fn seconds(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

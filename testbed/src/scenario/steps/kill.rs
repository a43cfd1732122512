//! `kill`: kill a pod's processes (SIGKILL, exit code 137). Its `restartPolicy`
//! says what follows: `Always` and `OnFailure` start them again (at once the first
//! time, then after the crash-loop back-off), `Never` leaves the pod Failed, out of
//! every Service's endpoints.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use serde_json::Value;

use super::context::settle;
use super::probes::{pod, pod_object};
use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};

pub const KIND: StepKind = StepKind {
    key: "kill",
    about: "Kill a pod's processes: they restart as its restartPolicy says (Never: the pod fails and leaves its Service's endpoints).",
    schema: schema_of::<String>,
    expects: &[],
    parse,
};

#[derive(Debug)]
struct Kill(String);

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    Some(Box::new(Kill(cx.value(value, at.path)?)))
}

#[async_trait::async_trait(?Send)]
impl Action for Kill {
    fn title(&self) -> String {
        format!("kill pod {}", self.0)
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        vec![("pod", &self.0)]
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        let (key, _) = pod(cx, &self.0)?;
        let (ns, name) = key.clone();
        let before = pod_object(cx, &key).ok_or(format!("pod {ns}/{name} is gone"))?;
        let running: Vec<(String, i32)> = statuses(&before)
            .iter()
            .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            .map(|c| (c.name.clone(), c.restart_count))
            .collect();
        if running.is_empty() {
            return Err(format!("pod {ns}/{name} has no running container to kill"));
        }
        cx.faults().update(|s| {
            *s.kills.entry(key.clone()).or_default() += 1;
        });
        // Each killed container has restarted, waits out its back-off, or has ended.
        let shown = |p: &Pod| {
            running.iter().all(|(c, restarts)| {
                statuses(p).iter().any(|s| {
                    let state = s.state.clone().unwrap_or_default();
                    s.name == *c
                        && (s.restart_count > *restarts
                            || state.terminated.is_some()
                            || state.waiting.is_some())
                })
            })
        };
        settle(cx, &format!("pod {ns}/{name}'s containers ending"), |cx| {
            pod_object(cx, &key).is_none_or(|p| shown(&p))
        })
        .await?;
        let after = pod_object(cx, &key).ok_or(format!("pod {ns}/{name} is gone"))?;
        let policy = after
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let (status, _) = crate::api::labels::pod_status_column(&after);
        let restarts: i32 = statuses(&after).iter().map(|c| c.restart_count).sum();
        let phase = after.status.and_then(|s| s.phase).unwrap_or_default();
        Ok(Seen::line(format!(
            "pod {ns}/{name} killed (exit code 137): restartPolicy {policy}, now {status} \
             (phase {phase}, RESTARTS {restarts})"
        )))
    }
}

fn statuses(p: &Pod) -> Vec<ContainerStatus> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
}

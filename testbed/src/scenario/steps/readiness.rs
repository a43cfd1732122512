//! `readiness`: make a pod's readiness fail or recover, whatever its probes say.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::context::settle;
use super::probes::{pod, pod_object};
use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};
use crate::api::labels::pod_ready;

pub const KIND: StepKind = StepKind {
    key: "readiness",
    about: "Make a pod's readiness fail (`ready: false`) or recover (`ready: true`).",
    schema: schema_of::<ReadinessFile>,
    expects: &[],
    parse,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReadinessFile {
    pub pod: String,
    pub ready: bool,
}

#[derive(Debug)]
struct Readiness {
    pod: String,
    ready: bool,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let r: ReadinessFile = cx.value(value, at.path)?;
    Some(Box::new(Readiness {
        pod: r.pod,
        ready: r.ready,
    }))
}

#[async_trait::async_trait(?Send)]
impl Action for Readiness {
    fn title(&self) -> String {
        format!(
            "make pod {}'s readiness {}",
            self.pod,
            if self.ready { "recover" } else { "fail" }
        )
    }

    fn targets(&self) -> Vec<(&'static str, &str)> {
        vec![("pod", &self.pod)]
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        let (key, _) = pod(cx, &self.pod)?;
        let ready = self.ready;
        cx.faults().update(|s| {
            if ready {
                s.unready.remove(&key);
            } else {
                s.unready.insert(key.clone());
            }
        });
        let (ns, name) = &key;
        let state = if ready { "ready" } else { "not ready" };
        settle(cx, &format!("pod {ns}/{name} becoming {state}"), |cx| {
            pod_object(cx, &key).is_some_and(|p| pod_ready(&p) == ready)
        })
        .await?;
        Ok(Seen::line(format!("pod {ns}/{name} is {state}")))
    }
}

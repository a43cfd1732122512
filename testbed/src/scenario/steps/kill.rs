//! `kill`: kill a pod's processes. They are not restarted: the pod's phase becomes
//! Failed and it leaves every Service's endpoints.

use serde_json::Value;

use super::context::settle;
use super::probes::{pod, pod_object};
use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};

pub const KIND: StepKind = StepKind {
    key: "kill",
    about: "Kill a pod's processes: it stops serving and leaves its Service's endpoints.",
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
        cx.faults().update(|s| {
            s.killed.insert(key.clone());
        });
        let (ns, name) = &key;
        settle(cx, &format!("pod {ns}/{name} stopping"), |cx| {
            pod_object(cx, &key)
                .is_none_or(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Failed"))
        })
        .await?;
        Ok(Seen::line(format!(
            "pod {ns}/{name} killed: phase Failed, out of every Service's endpoints"
        )))
    }
}

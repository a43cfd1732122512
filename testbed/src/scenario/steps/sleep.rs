//! `sleep`: let time pass (`2s`, `500ms`), as traffic runs or a fault stays in force.

use std::time::Duration;

use serde_json::Value;

use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};

pub const KIND: StepKind = StepKind {
    key: "sleep",
    about: "Let time pass (`2s`, `500ms`, at most 5m), as traffic runs or a fault stays in force.",
    schema: schema_of::<String>,
    expects: &[],
    parse,
};

#[derive(Debug)]
struct Sleep(Duration);

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let text: String = cx.value(value, at.path)?;
    let d = cx.duration(at.path, Some(&text), Duration::ZERO);
    if d > Duration::from_secs(300) {
        cx.fail(at.path, format!("{text:?} is more than 5m"));
    }
    Some(Box::new(Sleep(d)))
}

#[async_trait::async_trait(?Send)]
impl Action for Sleep {
    fn title(&self) -> String {
        format!("sleep {:.1} s", self.0.as_secs_f64())
    }

    async fn run(&self, _: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        tokio::time::sleep(self.0).await;
        Ok(Seen::line(format!("{:.1} s passed", self.0.as_secs_f64())))
    }
}

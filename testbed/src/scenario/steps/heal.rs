//! `heal`: undo a `fault` step, by its name: every table and qdisc it added goes,
//! and the step says how many packets its tables dropped while it was in force.

use std::sync::Arc;

use serde_json::Value;

use super::fault::Declared;
use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};

pub const KIND: StepKind = StepKind {
    key: "heal",
    about: "Undo a `fault` step, named by its step's name.",
    schema: schema_of::<String>,
    expects: &[],
    parse,
};

#[derive(Debug)]
struct Heal(Arc<Declared>);

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let name: String = cx.value(value, at.path)?;
    match cx.heal_fault(&name) {
        Ok(d) => Some(Box::new(Heal(d))),
        Err(why) => {
            cx.fail(at.path, why);
            None
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Action for Heal {
    fn title(&self) -> String {
        format!("heal {}: {}", self.0.fault.id, self.0.fault.describe())
    }

    async fn run(&self, _: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        let changes = std::mem::take(&mut *self.0.applied.lock().expect("fault lock"));
        let dropped = crate::impair::apply::remove(&changes).await;
        let what = if changes
            .iter()
            .any(|c| matches!(c, crate::impair::Change::Table { .. }))
        {
            format!("; its tables dropped {dropped} packets")
        } else {
            String::new()
        };
        Ok(Seen::line(format!(
            "{} removed ({} change{} undone){what}",
            self.0.fault.describe(),
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        )))
    }
}

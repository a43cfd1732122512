//! `scale`: set a Deployment's replicas, as `kubectl scale`.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{ns_name, schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};
use crate::api::server::Api;
use crate::scenario::Located;

pub const KIND: StepKind = StepKind {
    key: "scale",
    about: "Set a Deployment's replicas.",
    schema: schema_of::<ScaleFile>,
    expects: &[],
    parse,
};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleFile {
    /// `web` or `NAMESPACE/web`.
    pub deployment: String,
    pub replicas: i32,
}

#[derive(Debug)]
struct Scale {
    namespace: String,
    name: String,
    replicas: i32,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let s: ScaleFile = cx.value(value, at.path)?;
    if s.replicas < 0 {
        cx.fail(&at.key("replicas"), "must not be negative");
    }
    let (namespace, name) = ns_name(&s.deployment);
    Some(Box::new(Scale {
        namespace,
        name,
        replicas: s.replicas,
    }))
}

#[async_trait::async_trait(?Send)]
impl Action for Scale {
    fn title(&self) -> String {
        format!(
            "scale deployment {}/{} to {}",
            self.namespace, self.name, self.replicas
        )
    }

    fn dry_run(&self, api: &Api, here: &dyn Fn(String) -> Located) -> Vec<Located> {
        match api.scale(&self.namespace, &self.name, 0) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| here(p.to_string())).collect(),
        }
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        cx.api()
            .scale(&self.namespace, &self.name, self.replicas)
            .map_err(|p| crate::api::server::joined(&p))?;
        Ok(Seen::line(format!(
            "deployment {}/{} scaled to {}",
            self.namespace, self.name, self.replicas
        )))
    }
}

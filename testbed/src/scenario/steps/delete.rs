//! `delete`: delete an object through the API server (`service/web`, `pod/client-1`,
//! `deployment/kube-system/coredns`). A running pod ends gracefully: the step waits
//! until it is gone, unless `wait: false` (`delete: {object: pod/web, wait: false}`),
//! so that later steps see it terminating.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{schema_of, Action, At, Context, Ctx, Expect, Seen, StepKind};
use crate::api::server::Api;
use crate::api::{Key, Kind};
use crate::scenario::Located;

pub const KIND: StepKind = StepKind {
    key: "delete",
    about: "Delete an object: `service/web`, `pod/client-1`, `deployment/kube-system/coredns`.",
    schema: schema_of::<DeleteFile>,
    expects: &[],
    parse,
};

/// `KIND/NAME`, or that with whether to wait for a pod to be gone.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
enum DeleteFile {
    Object(String),
    Long(LongDelete),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LongDelete {
    object: String,
    /// Wait until a pod deleted gracefully is gone (the default).
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
struct Delete {
    kind: Kind,
    namespace: String,
    name: String,
    wait: bool,
}

fn parse(cx: &mut Ctx, at: &At, value: Value) -> Option<Box<dyn Action>> {
    let (d, wait) = match cx.value::<DeleteFile>(value, at.path)? {
        DeleteFile::Object(d) => (d, true),
        DeleteFile::Long(l) => (l.object, l.wait),
    };
    let parts: Vec<&str> = d.split('/').collect();
    let (kind, namespace, name) = match parts.as_slice() {
        [k, n] => (*k, "default", *n),
        [k, ns, n] => (*k, *ns, *n),
        _ => ("", "", ""),
    };
    match Kind::parse(kind).filter(|k| k.user_writable()) {
        Some(k) if !name.is_empty() => Some(Box::new(Delete {
            kind: k,
            namespace: namespace.into(),
            name: name.into(),
            wait,
        })),
        _ => {
            cx.fail(
                at.path,
                format!("{d:?} is not KIND/NAME or KIND/NAMESPACE/NAME of a pod, service or deployment"),
            );
            None
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Action for Delete {
    fn title(&self) -> String {
        format!(
            "delete {} {}/{}",
            self.kind.singular(),
            self.namespace,
            self.name
        )
    }

    fn dry_run(&self, api: &Api, here: &dyn Fn(String) -> Located) -> Vec<Located> {
        // Pods come and go with Deployments and the kubelets: not checked here.
        if self.kind == Kind::Pod {
            return Vec::new();
        }
        match api.delete(&Key::new(self.kind, &self.namespace, &self.name)) {
            Ok(_) => Vec::new(),
            Err(p) => vec![here(format!(
                "{p} (no step before it creates it, and the cluster does not have it)"
            ))],
        }
    }

    async fn run(&self, cx: &mut dyn Context, _: &Expect) -> Result<Seen, String> {
        let key = Key::new(self.kind, &self.namespace, &self.name);
        let marked = cx.api().delete(&key).map_err(|p| p.to_string())?;
        // A pod deleted gracefully is gone once its kubelet has stopped it: waited
        // for, as `kubectl delete` waits.
        let grace = marked
            .meta()
            .deletion_grace_period_seconds
            .filter(|_| self.wait);
        if let Some(grace) = grace {
            let deadline = std::time::Instant::now()
                + std::time::Duration::from_secs(grace.clamp(0, 3600) as u64 + 10);
            while cx.store().get(&key).is_some() {
                if std::time::Instant::now() > deadline {
                    return Err(format!(
                        "pod {}/{} is still terminating after its grace period of {grace} s",
                        self.namespace, self.name
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        Ok(Seen::line(format!(
            "{} {}/{} deleted",
            self.kind.singular(),
            self.namespace,
            self.name
        )))
    }
}

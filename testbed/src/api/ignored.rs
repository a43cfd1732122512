//! The fields admission accepts without the testbed acting on them: reported as
//! ignored (in `testbed apply`'s output and the API's warnings), never misread.

use serde_json::Value;

use super::object::Object;

/// A container's `env` entries, numbered.
fn env_entries(c: &Value) -> impl Iterator<Item = (usize, &Value)> {
    c.get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// Fields the testbed accepts without acting on them, as paths.
// Long because it is one table, per kind, of the fields the testbed acts on; whole, it can
// be checked against the product's list at a glance.
pub(super) fn fields(obj: &Object) -> Vec<String> {
    let v = obj.to_value();
    let mut out = Vec::new();
    let mut check = |at: &str, value: Option<&Value>, known: &[&str]| {
        if let Some(Value::Object(m)) = value {
            for (k, v) in m {
                let empty = v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
                if !empty && !known.contains(&k.as_str()) {
                    out.push(format!("{at}.{k}"));
                }
            }
        }
    };
    let pod_known: &[&str] = &[
        "containers",
        "nodeName",
        "hostname",
        "subdomain",
        "setHostnameAsFQDN",
        "dnsPolicy",
        "dnsConfig",
        "restartPolicy",
        "terminationGracePeriodSeconds",
        "securityContext",
        "automountServiceAccountToken",
        "serviceAccountName",
        "serviceAccount",
        "tolerations",
    ];
    // Of a securityContext, who runs (see kubelet::identity); the rest is reported.
    let security_known: &[&str] = &["runAsUser", "runAsGroup", "runAsNonRoot"];
    // Of an env entry, a literal value (see kubelet::env); valueFrom is reported.
    let env_known: &[&str] = &["name", "value"];
    let container_known: &[&str] = &[
        "name",
        "image",
        "command",
        "args",
        "ports",
        "readinessProbe",
        "env",
        "imagePullPolicy",
        "resources",
        "securityContext",
    ];
    match obj {
        Object::Service(_) => check(
            "spec",
            v.get("spec"),
            &[
                "type",
                "ports",
                "selector",
                "clusterIP",
                "clusterIPs",
                "externalName",
                "sessionAffinity",
                "sessionAffinityConfig",
                "publishNotReadyAddresses",
                "internalTrafficPolicy",
                "externalTrafficPolicy",
                "externalIPs",
                "loadBalancerSourceRanges",
                "loadBalancerIP",
                "loadBalancerClass",
                "allocateLoadBalancerNodePorts",
                "healthCheckNodePort",
                "ipFamilies",
                "ipFamilyPolicy",
            ],
        ),
        Object::Pod(_) => {
            check("spec", v.get("spec"), pod_known);
            check(
                "spec.securityContext",
                v.pointer("/spec/securityContext"),
                security_known,
            );
            for (i, c) in v
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("spec.containers[{i}]");
                check(&at, Some(c), container_known);
                check(
                    &format!("{at}.securityContext"),
                    c.get("securityContext"),
                    security_known,
                );
                for (j, e) in env_entries(c) {
                    check(&format!("{at}.env[{j}]"), Some(e), env_known);
                }
            }
        }
        Object::Deployment(_) => {
            check(
                "spec",
                v.get("spec"),
                &[
                    "replicas",
                    "selector",
                    "template",
                    "strategy",
                    "revisionHistoryLimit",
                ],
            );
            check(
                "spec.template.spec",
                v.pointer("/spec/template/spec"),
                pod_known,
            );
            check(
                "spec.template.spec.securityContext",
                v.pointer("/spec/template/spec/securityContext"),
                security_known,
            );
            for (i, c) in v
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("spec.template.spec.containers[{i}]");
                check(&at, Some(c), container_known);
                check(
                    &format!("{at}.securityContext"),
                    c.get("securityContext"),
                    security_known,
                );
                for (j, e) in env_entries(c) {
                    check(&format!("{at}.env[{j}]"), Some(e), env_known);
                }
            }
        }
        _ => {}
    }
    out
}

//! A Deployment's admission: its replicas, selector and template, and its
//! `strategy` as upstream's `ValidateDeploymentStrategy` checks it.

use k8s_openapi::api::apps::v1::Deployment;

use super::{check_selector, pod_spec, problem, Problem};

pub(super) fn deployment(mut d: Deployment, problems: &mut Vec<Problem>) -> Deployment {
    let Some(spec) = &mut d.spec else {
        problems.push(problem("spec", "Required value"));
        return d;
    };
    let replicas = *spec.replicas.get_or_insert(1);
    if replicas < 0 {
        problems.push(problem("spec.replicas", format!("{replicas} is negative")));
    }
    let sel = spec.selector.match_labels.clone().unwrap_or_default();
    if spec
        .selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        problems.push(problem(
            "spec.selector.matchExpressions",
            "are not emulated: use matchLabels",
        ));
    }
    if sel.is_empty() {
        problems.push(problem(
            "spec.selector.matchLabels",
            "Required value: may not be empty",
        ));
    }
    check_selector("spec.selector.matchLabels", &sel, problems);
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        problems.push(problem(
            "spec.template.metadata.labels",
            "`selector` does not match template `labels`",
        ));
    }
    match &mut spec.template.spec {
        None => problems.push(problem("spec.template.spec", "Required value")),
        Some(ps) => pod_spec("spec.template.spec", ps, problems),
    }
    if let Some(strategy) = &spec.strategy {
        check_strategy(strategy, problems);
    }
    d.status = None;
    d
}

/// `spec.strategy` as upstream's `ValidateDeploymentStrategy` checks it.
fn check_strategy(s: &k8s_openapi::api::apps::v1::DeploymentStrategy, problems: &mut Vec<Problem>) {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let at = "spec.strategy.rollingUpdate";
    match s.type_.as_deref() {
        None | Some("RollingUpdate") => {}
        Some("Recreate") => {
            if s.rolling_update.is_some() {
                problems.push(problem(
                    at,
                    "Forbidden: may not be specified when strategy `type` is 'Recreate'",
                ));
            }
            return;
        }
        Some(other) => {
            problems.push(problem(
                "spec.strategy.type",
                format!("Unsupported value: {other:?}: supported values: \"Recreate\", \"RollingUpdate\""),
            ));
            return;
        }
    }
    let Some(ru) = &s.rolling_update else { return };
    // Each is a count or a percent; zero when unset only for the both-zero check.
    let mut zero = [false, false];
    for (i, (field, v)) in [
        ("maxUnavailable", &ru.max_unavailable),
        ("maxSurge", &ru.max_surge),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("{at}.{field}");
        match v {
            None => {}
            Some(IntOrString::Int(n)) if *n < 0 => problems.push(problem(
                path,
                format!("Invalid value: {n}: must be greater than or equal to 0"),
            )),
            Some(IntOrString::Int(n)) => zero[i] = *n == 0,
            Some(IntOrString::String(p)) => match p.strip_suffix('%').and_then(|n| n.parse::<u32>().ok()) {
                None => problems.push(problem(
                    path,
                    format!("Invalid value: {p:?}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
                )),
                Some(n) if i == 0 && n > 100 => problems.push(problem(
                    path,
                    format!("Invalid value: {p:?}: must not be greater than 100%"),
                )),
                Some(n) => zero[i] = n == 0,
            },
        }
    }
    if zero == [true, true] {
        problems.push(problem(
            format!("{at}.maxUnavailable"),
            "Invalid value: 0: may not be 0 when `maxSurge` is 0",
        ));
    }
}

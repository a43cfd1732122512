//! Well-known labels and the small predicates on pods that several consumers share, as
//! Kubernetes keeps them apart from any one controller (`discovery.LabelServiceName`,
//! `podutil.IsPodReady`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Who manages an EndpointSlice, and the value the control plane's controller sets.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Whether `pod` is Ready: running, with an address, its Ready condition true, and
/// not being deleted.
pub fn pod_ready(pod: &Pod) -> bool {
    let Some(st) = &pod.status else { return false };
    st.phase.as_deref() == Some("Running")
        && st.pod_ip.is_some()
        && pod.metadata.deletion_timestamp.is_none()
        && ready_condition(pod)
}

/// Whether `pod`'s Ready condition is true (upstream's `IsPodReady`), whatever else:
/// a terminating pod whose probes still pass is ready by it, and so still serving.
pub fn ready_condition(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Whether the non-empty selector `sel` matches `pod`'s labels.
pub fn selects(sel: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    !sel.is_empty()
        && sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The pod's STATUS and READY columns as `kubectl get pods` prints them (upstream's
/// `printPod`): a waiting container's reason (`CrashLoopBackOff`), a terminated one's
/// (`Error`, `Completed`), else the phase; `Terminating` while it is deleted.
pub fn pod_status_column(pod: &Pod) -> (String, usize) {
    let st = pod.status.clone().unwrap_or_default();
    let mut reason = st
        .reason
        .clone()
        .or(st.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let statuses = st.container_statuses.clone().unwrap_or_default();
    let (mut ready, mut running) = (0, false);
    for c in statuses.iter().rev() {
        let state = c.state.clone().unwrap_or_default();
        if let Some(r) = state
            .waiting
            .and_then(|w| w.reason)
            .filter(|r| !r.is_empty())
        {
            reason = r;
        } else if let Some(t) = state.terminated {
            reason = match (t.reason.filter(|r| !r.is_empty()), t.signal) {
                (Some(r), _) => r,
                (None, Some(s)) if s != 0 => format!("Signal:{s}"),
                (None, _) => format!("ExitCode:{}", t.exit_code),
            };
        } else if c.ready && state.running.is_some() {
            running = true;
            ready += 1;
        }
    }
    if statuses.is_empty() && pod_ready(pod) {
        ready = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    }
    if reason == "Completed" && running {
        reason = if ready_condition(pod) {
            "Running"
        } else {
            "NotReady"
        }
        .into();
    }
    if pod.metadata.deletion_timestamp.is_some() {
        reason = "Terminating".into();
    }
    (reason, ready)
}

/// A node's STATUS as `kubectl get nodes` shows it (printNode): Ready or NotReady
/// from its Ready condition (Unknown without one), then SchedulingDisabled when
/// it is cordoned.
pub fn node_status_column(n: &k8s_openapi::api::core::v1::Node) -> String {
    let conditions = n.status.as_ref().and_then(|s| s.conditions.as_ref());
    let ready = conditions
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready");
    let mut state = match ready {
        Some(c) if c.status == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        state.push_str(",SchedulingDisabled");
    }
    state
}

/// The annotation `key` of an object, parsed; `None` when it is missing or does not
/// parse.
pub fn annotation<T: std::str::FromStr>(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<T> {
    meta.annotations.as_ref()?.get(key)?.parse().ok()
}

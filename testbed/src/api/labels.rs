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

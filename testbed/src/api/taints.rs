//! Taints and tolerations, as the scheduler and the taint eviction controller read
//! them (k8s.io/api/core/v1 `Toleration.ToleratesTaint`), and the tolerations the
//! DefaultTolerationSeconds admission plugin gives every pod.

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

/// The taint the node lifecycle controller puts on a node it stopped hearing from.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint it puts on a node whose kubelet reports it not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// How long a pod stays on an unreachable or not-ready node unless it says otherwise
/// (the DefaultTolerationSeconds plugin's `--default-unreachable-toleration-seconds`).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// Whether `t` tolerates `taint`: same key (or an empty key with `Exists`), same
/// effect (or none), and `Exists` or an equal value.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        _ => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Whether `pod` may be scheduled onto a node with `taints`: every NoSchedule taint
/// is tolerated (NoExecute ones too: a pod that would be evicted is not placed).
pub fn schedulable(pod: &Pod, taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations(pod).iter().any(|t| tolerates(t, taint)))
}

/// How long `pod` may stay on a node with these NoExecute `taints`: `Some(0)` when
/// one is not tolerated, the least `tolerationSeconds` of those that tolerate them,
/// `None` (for ever) when they tolerate without a limit.
pub fn stay_seconds(pod: &Pod, taints: &[Taint]) -> Option<i64> {
    let mut least = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> = tolerations(pod)
            .iter()
            .filter(|t| tolerates(t, taint))
            .collect();
        if matching.is_empty() {
            return Some(0);
        }
        for t in matching {
            if let Some(s) = t.toleration_seconds {
                let s = s.max(0);
                least = Some(least.map_or(s, |l: i64| l.min(s)));
            }
        }
    }
    least
}

/// Adds the DefaultTolerationSeconds plugin's tolerations to `pod`'s spec: for the
/// not-ready and unreachable NoExecute taints, 300 s, unless it tolerates them
/// already.
pub fn add_default_tolerations(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    for key in [NOT_READY, UNREACHABLE] {
        let taint = Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        let list = spec.tolerations.get_or_insert_with(Vec::new);
        if !list.iter().any(|t| tolerates(t, &taint)) {
            list.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
                ..Default::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}}))
            .unwrap()
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_toleration_matches_by_key_effect_and_operator() {
        let t = |v: serde_json::Value| serde_json::from_value::<Toleration>(v).unwrap();
        let unreachable = taint(UNREACHABLE, "NoExecute");
        assert!(tolerates(
            &t(json!({"key": UNREACHABLE, "operator": "Exists"})),
            &unreachable
        ));
        assert!(
            tolerates(&t(json!({"operator": "Exists"})), &unreachable),
            "an empty key with Exists tolerates all"
        );
        assert!(!tolerates(
            &t(json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"})),
            &unreachable
        ));
        assert!(!tolerates(
            &t(json!({"key": NOT_READY, "operator": "Exists"})),
            &unreachable
        ));
        assert!(
            tolerates(&t(json!({"key": UNREACHABLE})), &unreachable),
            "Equal to an empty value"
        );
        assert!(!tolerates(
            &t(json!({"key": UNREACHABLE, "value": "x"})),
            &unreachable
        ));
    }

    #[test]
    fn a_pod_stays_as_long_as_its_least_toleration_says() {
        let both = [
            taint(UNREACHABLE, "NoExecute"),
            taint(UNREACHABLE, "NoSchedule"),
        ];
        assert_eq!(
            stay_seconds(&pod(json!([])), &both),
            Some(0),
            "untolerated: at once"
        );
        let mut spec = pod(json!([])).spec.unwrap();
        add_default_tolerations(&mut spec);
        let defaulted = Pod {
            spec: Some(spec),
            ..Default::default()
        };
        assert_eq!(stay_seconds(&defaulted, &both), Some(300));
        assert!(
            !schedulable(&defaulted, &both),
            "NoSchedule is not tolerated"
        );
        assert!(schedulable(&defaulted, &[]));
        let own = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
        );
        let mut spec = own.spec.clone().unwrap();
        add_default_tolerations(&mut spec);
        assert_eq!(
            spec.tolerations.as_ref().unwrap().len(),
            2,
            "its own unreachable toleration is kept, not-ready added"
        );
        assert_eq!(stay_seconds(&own, &both), Some(5));
        let ever = pod(json!([{"key": UNREACHABLE, "operator": "Exists"}]));
        assert_eq!(
            stay_seconds(&ever, &both),
            None,
            "no tolerationSeconds: for ever"
        );
        assert!(schedulable(&ever, &both));
    }
}

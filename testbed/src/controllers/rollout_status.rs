//! A Deployment's status from its ReplicaSets (upstream's `calculateStatus`), its
//! `Available` and `Progressing` conditions (`syncRolloutStatus`), and how
//! `kubectl rollout status` reads it.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What the ReplicaSets say, summed.
pub struct Observed {
    /// Their pods (`status.replicas`).
    pub replicas: i32,
    /// The new ReplicaSet's pods.
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
    /// The pods they are asked for (`spec.replicas`).
    pub asked: i32,
    /// The replicas less `maxUnavailable`.
    pub min_available: i32,
    pub new_name: Option<String>,
    /// The new ReplicaSet was made in this pass.
    pub created: bool,
}

/// The status a pass leaves on Deployment `d`.
pub fn calculate(d: &Deployment, want: i32, o: &Observed, now: &Time) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(o.replicas),
        updated_replicas: Some(o.updated),
        ready_replicas: Some(o.ready),
        available_replicas: Some(o.available),
        unavailable_replicas: Some((o.asked - o.available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let (t, f) = ("True", "False");
    if o.available >= o.min_available {
        let m = "Deployment has minimum availability.";
        set_condition(
            &mut status,
            "Available",
            t,
            "MinimumReplicasAvailable",
            m,
            now,
        );
    } else {
        let m = "Deployment does not have minimum availability.";
        set_condition(
            &mut status,
            "Available",
            f,
            "MinimumReplicasUnavailable",
            m,
            now,
        );
    }
    let Some(name) = &o.new_name else {
        return status;
    };
    if o.created {
        let m = format!("Created new replica set \"{name}\"");
        set_condition(
            &mut status,
            "Progressing",
            t,
            "NewReplicaSetCreated",
            &m,
            now,
        );
    } else if complete(d, want, &status) {
        let m = format!("ReplicaSet \"{name}\" has successfully progressed.");
        set_condition(
            &mut status,
            "Progressing",
            t,
            "NewReplicaSetAvailable",
            &m,
            now,
        );
    } else if progressing(&old, &status) {
        let m = format!("ReplicaSet \"{name}\" is progressing.");
        set_condition(&mut status, "Progressing", t, "ReplicaSetUpdated", &m, now);
    }
    status
}

/// `DeploymentComplete`.
pub fn complete(d: &Deployment, want: i32, s: &DeploymentStatus) -> bool {
    s.updated_replicas == Some(want)
        && s.replicas == Some(want)
        && s.available_replicas == Some(want)
        && s.observed_generation >= d.metadata.generation
}

/// `DeploymentProgressing`: more new, ready or available pods, or fewer old ones.
fn progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// `SetDeploymentCondition`: unchanged when status and reason are; the transition
/// time kept when only the reason changes.
fn set_condition(
    s: &mut DeploymentStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let conditions = s.conditions.get_or_insert_with(Vec::new);
    let current = conditions.iter().find(|c| c.type_ == type_).cloned();
    if current
        .as_ref()
        .is_some_and(|c| c.status == status && c.reason.as_deref() == Some(reason))
    {
        return;
    }
    let transition = match &current {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    conditions.retain(|c| c.type_ != type_);
    conditions.push(DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: transition,
    });
}

/// `kubectl rollout status deployment/NAME`: done, and what it prints.
pub fn status(d: &Deployment) -> (bool, String) {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let st = d.status.clone().unwrap_or_default();
    if d.metadata.generation > st.observed_generation {
        return (
            false,
            "Waiting for deployment spec update to be observed...".into(),
        );
    }
    let progressing = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return (
            false,
            format!("deployment {name:?} exceeded its progress deadline"),
        );
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let (updated, replicas, available) = (
        st.updated_replicas.unwrap_or(0),
        st.replicas.unwrap_or(0),
        st.available_replicas.unwrap_or(0),
    );
    let waiting = "Waiting for deployment";
    if updated < want {
        return (false, format!("{waiting} {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."));
    }
    if replicas > updated {
        return (
            false,
            format!(
                "{waiting} {name:?} rollout to finish: {} old replicas are pending termination...",
                replicas - updated
            ),
        );
    }
    if available < updated {
        return (false, format!("{waiting} {name:?} rollout to finish: {available} of {updated} updated replicas are available..."));
    }
    (true, format!("deployment {name:?} successfully rolled out"))
}

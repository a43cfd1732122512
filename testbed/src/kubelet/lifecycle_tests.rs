//! Containers' lives over the recording fake, in paused time: restarts by policy
//! with the crash-loop back-off, the phase an exit gives, liveness and startup probes
//! that restart, a deleted pod's `preStop` hook before SIGTERM, a container its spec
//! forbids.

use std::time::Duration;

use serde_json::json;

use super::tests::{pod, start, Fake, Kubelets};
use crate::api::labels::pod_status_column;
use crate::api::{Key, Kind, Object};

/// Pod `default/NAME` on node-1 with `spec` merged into its spec and `container`
/// into its container.
fn pod_with(name: &str, spec: serde_json::Value, container: serde_json::Value) -> Object {
    let Object::Pod(p) = pod(name, Some("node-1"), false) else {
        unreachable!()
    };
    let mut v = serde_json::to_value(p).unwrap();
    for (k, x) in spec.as_object().unwrap() {
        v["spec"][k] = x.clone();
    }
    for (k, x) in container.as_object().unwrap() {
        v["spec"]["containers"][0][k] = x.clone();
    }
    Object::Pod(serde_json::from_value(v).unwrap())
}

impl Kubelets {
    fn status_column(&self, name: &str) -> String {
        self.get(name)
            .map(|p| pod_status_column(&p).0)
            .unwrap_or_default()
    }

    fn events(&self, reason: &str) -> Vec<String> {
        self.store
            .list(Kind::Event, Some("default"))
            .into_iter()
            .filter_map(|o| match o {
                Object::Event(e) if e.reason.as_deref() == Some(reason) => e.message,
                _ => None,
            })
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_crashing_container_restarts_at_once_then_after_a_doubling_back_off() {
    let fake = Fake::new();
    fake.with(|s| {
        s.exits
            .insert("default/web".into(), (Duration::from_secs(1), 1))
    });
    let k = start(&fake);
    k.put(pod("web", Some("node-1"), false));
    // When each run starts, sampled every 10 ms of paused time.
    let mut starts = Vec::new();
    let t0 = tokio::time::Instant::now();
    let mut seen_back_off = None;
    while starts.len() < 5 {
        let runs = k.fake.with(|s| s.runs);
        if runs > starts.len() {
            starts.push(t0.elapsed());
        }
        if starts.len() == 3
            && seen_back_off.is_none()
            && k.status_column("web") == "CrashLoopBackOff"
        {
            seen_back_off = k.get("web");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gaps: Vec<u64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis().div_ceil(1000) as u64)
        .collect();
    // It ran 1 s each time: at once, then 10 s, 20 s, 40 s from one start to the next.
    assert_eq!(gaps, [1, 10, 20, 40]);
    let p = seen_back_off.expect("CrashLoopBackOff shown while it waits");
    let c = &p.status.unwrap().container_statuses.unwrap()[0];
    let waiting = c.state.clone().unwrap().waiting.unwrap();
    assert_eq!(
        waiting.message.as_deref(),
        Some("back-off 20s restarting failed container=main pod=web_default(00000000-0000-4000-8000-000000000001)")
    );
    assert_eq!(c.restart_count, 2);
    assert_eq!(
        c.last_state.clone().unwrap().terminated.unwrap().exit_code,
        1
    );
    assert!(!c.ready);
    assert!(!k.events("BackOff").is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_exit_gives_the_phase_its_policy_says() {
    let fake = Fake::new();
    for (name, code) in [("done", 0), ("broke", 1), ("retried", 0)] {
        fake.with(|s| {
            s.exits
                .insert(format!("default/{name}"), (Duration::from_secs(1), code))
        });
    }
    let k = start(&fake);
    k.put(pod_with(
        "done",
        json!({"restartPolicy": "OnFailure"}),
        json!({}),
    ));
    k.put(pod_with(
        "broke",
        json!({"restartPolicy": "Never"}),
        json!({}),
    ));
    k.put(pod_with(
        "retried",
        json!({"restartPolicy": "Always"}),
        json!({}),
    ));
    k.until("done and broke ended", |k| {
        k.phase("done").as_deref() == Some("Succeeded")
            && k.phase("broke").as_deref() == Some("Failed")
    })
    .await;
    assert_eq!(
        (k.status_column("done"), k.status_column("broke")),
        ("Completed".into(), "Error".into())
    );
    assert_eq!((k.restarts("done"), k.restarts("broke")), (0, 0));
    // Always restarts even a container that exited 0.
    k.until("retried restarted", |k| k.restarts("retried") >= 1)
        .await;
    assert_eq!(k.phase("retried").as_deref(), Some("Running"));
}

#[tokio::test(start_paused = true)]
async fn a_failing_liveness_probe_restarts_the_container() {
    let k = start(&Fake::new());
    let probe = json!({"tcpSocket": {"port": 80}, "periodSeconds": 1, "failureThreshold": 3});
    k.put(pod_with("web", json!({}), json!({"livenessProbe": probe})));
    k.until("web ready", |k| k.ready("web")).await;
    let t0 = tokio::time::Instant::now();
    k.until("web restarted", |k| k.restarts("web") == 1).await;
    // Three failures one second apart (the first at once).
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(
        k.events("Killing"),
        ["Container main failed liveness probe, will be restarted"]
    );
    assert_eq!(
        k.events("Unhealthy"),
        ["Liveness probe failed: connection refused"]
    );
    // The probes pass: it stays.
    k.fake.with(|s| s.probe_ok = true);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(k.restarts("web") <= 2, "restarts {}", k.restarts("web"));
    let settled = k.restarts("web");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(k.restarts("web"), settled);
    assert!(k.ready("web"));
}

#[tokio::test(start_paused = true)]
async fn a_startup_probe_holds_the_others_back_and_fails_a_never_pod() {
    let k = start(&Fake::new());
    let probe = json!({"tcpSocket": {"port": 80}, "periodSeconds": 1, "failureThreshold": 2});
    let readiness = json!({"tcpSocket": {"port": 80}, "periodSeconds": 1});
    let c = json!({"startupProbe": probe, "readinessProbe": readiness});
    k.put(pod_with(
        "slow",
        json!({"restartPolicy": "Never"}),
        c.clone(),
    ));
    k.until("slow failed", |k| {
        k.phase("slow").as_deref() == Some("Failed")
    })
    .await;
    assert_eq!(
        k.events("Unhealthy"),
        ["Startup probe failed: connection refused"]
    );
    // Only the startup probe ran: two failures.
    assert_eq!(k.fake.with(|s| s.probes), 2);

    k.fake.with(|s| s.probe_ok = true);
    k.put(pod_with("fine", json!({}), c));
    k.until("fine ready", |k| k.ready("fine")).await;
    let st = k.get("fine").unwrap().status.unwrap();
    assert_eq!(st.container_statuses.unwrap()[0].started, Some(true));
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_runs_its_pre_stop_hook_then_stops_its_containers() {
    let k = start(&Fake::new());
    let hook = json!({"preStop": {"exec": {"command": ["sh", "-c", "sleep 1"]}}});
    k.put(pod_with("web", json!({}), json!({"lifecycle": hook})));
    k.until("web ready", |k| k.ready("web")).await;
    crate::api::graceful::mark_terminating(
        &k.store,
        &Key::new(Kind::Pod, "default", "web"),
        Some(5),
    );
    k.until("web removed", |k| {
        k.fake.calls().last().map(String::as_str) == Some("remove default/web")
    })
    .await;
    assert_eq!(
        k.fake.calls()[2..],
        [
            "exec sh -c sleep 1",
            "kill default/web",
            "remove default/web"
        ]
    );
    assert!(k.get("web").is_none(), "the pod object is gone");
    assert_eq!(
        k.events("Killing"),
        ["Stopping container main (grace period 5 s)"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_container_its_spec_forbids_waits_with_a_config_error_and_never_runs() {
    let k = start(&Fake::new());
    let root = json!({"securityContext": {"runAsUser": 0, "runAsNonRoot": true}});
    k.put(pod_with("web", json!({}), root));
    k.until("web waits", |k| {
        k.status_column("web") == "CreateContainerConfigError"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let st = k.get("web").unwrap().status.unwrap();
    let c = &st.container_statuses.unwrap()[0];
    let waiting = c.state.clone().unwrap().waiting.unwrap();
    assert_eq!(
        waiting.message.as_deref(),
        Some("container has runAsNonRoot and image will run as root")
    );
    // It is not retried: nothing ran, no restarts, still Pending.
    assert_eq!(k.fake.with(|s| s.runs), 0);
    assert_eq!((c.restart_count, st.phase.as_deref()), (0, Some("Pending")));
    assert_eq!(
        k.events("Failed"),
        ["Error: container has runAsNonRoot and image will run as root"]
    );
}

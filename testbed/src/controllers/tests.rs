use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};

use super::endpoints::endpoints_for;
use crate::api::server::{Action, Api, Expect};
use crate::api::{Key, Kind, Object, Store};

fn api() -> Api {
    Api::new(Arc::new(Store::default()), "10.96.0.0/12".parse().unwrap())
}

pub(super) fn objects(yaml: &str) -> Vec<Object> {
    let docs = crate::yaml::load_all(yaml).unwrap();
    docs.into_iter()
        .map(|(v, _)| serde_json::from_value(v).unwrap())
        .collect()
}

pub(super) fn pod(name: &str, ip: &str, labels: &str, ready: bool) -> Pod {
    let mut p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "labels": serde_json::from_str::<serde_json::Value>(labels).unwrap()},
        "spec": {"nodeName": "node-1", "containers": [{"name": "main", "ports": [{"name": "http", "containerPort": 8080}]}]},
    }))
    .unwrap();
    p.status = Some(PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some(ip.into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    p
}

const WEB: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n  - {name: alt, port: 81, targetPort: 9090, protocol: UDP}\n";

#[test]
fn admission_defaults_and_allocates_in_order() {
    let api = api();
    let got = api.apply(objects(WEB)).unwrap();
    assert_eq!(got[0].action, Action::Created);
    assert_eq!(got[0].cluster_ip.as_deref(), Some("10.96.0.2"));
    let Some(Object::Service(s)) = api.store.get(&Key::new(Kind::Service, "default", "web")) else {
        panic!()
    };
    let spec = s.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(
        spec.ports.as_ref().unwrap()[0].protocol.as_deref(),
        Some("TCP")
    );
    // Applying the same again changes nothing; the kubernetes Service has .1.
    assert_eq!(
        api.apply(objects(WEB)).unwrap()[0].action,
        Action::Unchanged
    );
    let k = api
        .store
        .get(&Key::new(Kind::Service, "default", "kubernetes"))
        .unwrap();
    assert!(k
        .to_value()
        .to_string()
        .contains("\"clusterIP\":\"10.96.0.1\""));
}

#[test]
fn admission_refuses_with_field_paths_and_changes_nothing() {
    let api = api();
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec:\n  ports:\n  - {port: 70000}\n  - {port: 80, name: x}\n";
    let err = api.apply(objects(bad)).unwrap_err();
    let text: Vec<String> = err.iter().map(|p| p.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("metadata.name") && t.contains("Bad_Name")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains(
            "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        )),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("spec.ports[0].name: Required value")),
        "{text:?}"
    );
    assert!(err.iter().all(|p| p.index == Some(1)));
    assert!(
        api.store
            .get(&Key::new(Kind::Service, "default", "ok"))
            .is_none(),
        "the valid one is not created either"
    );
    // The address the refused request would have had is still free.
    assert_eq!(
        api.apply(objects(WEB)).unwrap()[0].cluster_ip.as_deref(),
        Some("10.96.0.2")
    );
}

#[test]
fn cluster_ip_requests_immutability_and_release() {
    let api = api();
    let with_ip = |name: &str, ip: &str| {
        objects(&format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"))
    };
    assert_eq!(
        api.apply(with_ip("a", "10.96.0.50")).unwrap()[0]
            .cluster_ip
            .as_deref(),
        Some("10.96.0.50")
    );
    let e = api.apply(with_ip("b", "10.96.0.50")).unwrap_err();
    assert!(
        e[0].to_string().contains("10.96.0.50 is already allocated"),
        "{}",
        e[0]
    );
    let e = api.apply(with_ip("b", "10.96.0.10")).unwrap_err();
    assert!(
        e[0].to_string()
            .contains("reserved for the kube-system/kube-dns"),
        "{}",
        e[0]
    );
    let e = api.apply(with_ip("b", "192.168.0.1")).unwrap_err();
    assert!(
        e[0].to_string().contains("not in the service CIDR"),
        "{}",
        e[0]
    );
    let e = api.apply(with_ip("a", "10.96.0.51")).unwrap_err();
    assert!(
        e[0].to_string()
            .contains("spec.clusterIP: field is immutable"),
        "{}",
        e[0]
    );
    api.delete(&Key::new(Kind::Service, "default", "a"))
        .unwrap();
    assert!(!api.cluster_ip_in_use("10.96.0.50".parse().unwrap()));
    assert_eq!(
        api.apply(with_ip("b", "10.96.0.50")).unwrap()[0]
            .cluster_ip
            .as_deref(),
        Some("10.96.0.50")
    );
    let e = api
        .delete(&Key::new(Kind::Endpoints, "default", "b"))
        .unwrap_err();
    assert!(e.message.contains("endpoints controller"));
}

#[test]
fn endpoints_split_ready_and_resolve_named_ports() {
    let api = api();
    api.apply(objects(WEB)).unwrap();
    let Some(Object::Service(svc)) = api.store.get(&Key::new(Kind::Service, "default", "web"))
    else {
        panic!()
    };
    let pods = [
        pod("web-b", "10.244.1.3", r#"{"app":"web"}"#, true),
        pod("web-a", "10.244.1.2", r#"{"app":"web"}"#, false),
        pod("other", "10.244.1.4", r#"{"app":"db"}"#, true),
    ];
    let (ep, slices) = endpoints_for(&svc, &pods).unwrap();
    assert_eq!(slices.len(), 1, "one set of ports");
    let slice = &slices[0];
    let v = serde_json::to_value(&ep).unwrap();
    let subset = &v["subsets"][0];
    assert_eq!(subset["addresses"][0]["ip"], "10.244.1.3");
    assert_eq!(subset["notReadyAddresses"][0]["ip"], "10.244.1.2");
    assert_eq!(subset["addresses"].as_array().unwrap().len(), 1);
    let ports: Vec<(String, i64)> = subset["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["port"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [("http".to_string(), 8080), ("alt".to_string(), 9090)]
    );
    assert_eq!(slice.endpoints.len(), 2);
    assert_eq!(slice.endpoints[0].addresses, ["10.244.1.2"]);
    assert_eq!(
        slice.endpoints[0].conditions.as_ref().unwrap().ready,
        Some(false)
    );
    // publishNotReadyAddresses: every matching pod is an address.
    let mut svc2 = svc.clone();
    svc2.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let (ep, _) = endpoints_for(&svc2, &pods).unwrap();
    assert_eq!(ep.subsets.unwrap()[0].addresses.as_ref().unwrap().len(), 2);
}

#[test]
fn watchers_see_every_change_in_order() {
    let api = api();
    let (now, mut rx) = api.store.watch(&[Kind::Service], None);
    assert_eq!(now.len(), 1, "the kubernetes Service");
    api.apply(objects(WEB)).unwrap();
    api.delete(&Key::new(Kind::Service, "default", "web"))
        .unwrap();
    let a = rx.try_recv().unwrap();
    let b = rx.try_recv().unwrap();
    assert_eq!(a.kind, crate::api::EventType::Added);
    assert_eq!(b.kind, crate::api::EventType::Deleted);
    assert!(b.object.resource_version() > a.object.resource_version());
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_watcher_that_does_not_read_is_dropped_not_buffered() {
    let api = api();
    let (now, mut rx) = api.store.watch_bounded(&[Kind::Service], None, 3);
    assert_eq!(now.len(), 1);
    for i in 0..5 {
        let svc = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{ports: [{{port: 80}}]}}\n");
        api.apply(objects(&svc)).unwrap();
    }
    // The three that fit, then the end: the store let it go at the fourth.
    for _ in 0..3 {
        assert!(rx.try_recv().is_ok());
    }
    assert_eq!(
        rx.try_recv().unwrap_err(),
        tokio::sync::mpsc::error::TryRecvError::Disconnected
    );
    // The controllers' own watches see everything.
    let (_, mut all) = api.store.watch(&[Kind::Service], None);
    api.delete(&Key::new(Kind::Service, "default", "s0"))
        .unwrap();
    assert!(all.try_recv().is_ok());
}

#[test]
fn limits_refuse_what_would_be_too_big_and_name_the_limit() {
    let api = api();
    let deployment = |replicas: u64| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: big}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: big}}}}\n  template:\n    metadata: {{labels: {{app: big}}}}\n    spec: {{containers: [{{name: c, image: x}}]}}\n"
        )
    };
    let err = api.apply(objects(&deployment(100_000))).unwrap_err();
    assert_eq!(err[0].path, "spec.replicas");
    assert!(
        err[0].message.contains(
            "would run 100,000 pods, more than the 2,000 it runs (testbed::limits::PODS)"
        ),
        "{err:?}"
    );
    assert!(api
        .store
        .get(&Key::new(Kind::Deployment, "default", "big"))
        .is_none());
    api.apply(objects(&deployment(2_000))).unwrap();
    // One pod more than the limit, with the Deployment's 2,000.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: one}\nspec: {containers: [{name: c, image: x}]}\n";
    assert!(api.apply(objects(pod)).unwrap_err()[0]
        .message
        .contains("2,001 pods"));

    let ports: Vec<String> = (1..=101)
        .map(|p| format!("{{name: p{p}, port: {p}}}"))
        .collect();
    let svc = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: wide}}\nspec: {{ports: [{}]}}\n",
        ports.join(", ")
    );
    let err = api.apply(objects(&svc)).unwrap_err();
    assert!(
        err[0].message.contains("101 ports are more than the 100"),
        "{err:?}"
    );

    let big = "x".repeat(300 << 10);
    let svc = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: noted, annotations: {{a: {big}}}}}\nspec: {{ports: [{{port: 80}}]}}\n");
    let err = api.apply(objects(&svc)).unwrap_err();
    assert_eq!(err[0].path, "metadata.annotations");
    assert!(
        err[0].message.contains("more than Kubernetes' 262,144"),
        "{err:?}"
    );
    let arg = "z".repeat(2 << 20);
    let pod = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: heavy}}\nspec: {{containers: [{{name: c, image: x, command: [echo, {arg}]}}]}}\n");
    let objs = objects(&pod);
    let err = api.apply(objs).unwrap_err();
    assert!(
        err.iter().any(|p| p
            .message
            .contains("more than the 1,572,864 (1.5 MiB) an API server stores")),
        "{err:?}"
    );
}

#[test]
fn reapplying_a_pod_changes_nothing_and_its_labels_may_change() {
    let api = api();
    let p = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {a: b}}\nspec:\n  containers: [{name: main, image: agnhost, ports: [{containerPort: 80}]}]\n";
    assert_eq!(api.apply(objects(p)).unwrap()[0].action, Action::Created);
    let key = Key::new(Kind::Pod, "default", "p");
    let version = |api: &Api| api.store.get(&key).unwrap().meta().resource_version.clone();
    let before = version(&api);
    assert_eq!(api.apply(objects(p)).unwrap()[0].action, Action::Unchanged);
    assert_eq!(version(&api), before, "an unchanged apply writes nothing");
    let relabelled = p.replace("a: b", "a: c");
    assert_eq!(
        api.apply(objects(&relabelled)).unwrap()[0].action,
        Action::Configured
    );
    assert_ne!(version(&api), before);
    let Some(Object::Pod(stored)) = api.store.get(&key) else {
        panic!()
    };
    assert_eq!(stored.metadata.labels.unwrap()["a"], "c");
    // The spec stays as it was made.
    let problems = api
        .apply(objects(
            &relabelled.replace("containerPort: 80", "containerPort: 81"),
        ))
        .unwrap_err();
    assert_eq!(problems[0].path, "spec");
}

#[test]
fn a_service_that_becomes_external_name_gives_its_address_back() {
    let api = api();
    let cluster_ip = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  selector: {a: b}\n  ports: [{port: 80}]\n";
    let external = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: ExternalName\n  externalName: www.example.com\n";
    let ip = api.apply(objects(cluster_ip)).unwrap()[0]
        .cluster_ip
        .clone()
        .unwrap();
    let applied = api.apply(objects(external)).unwrap();
    assert_eq!(applied[0].action, Action::Configured);
    assert_eq!(applied[0].cluster_ip, None);
    let Some(Object::Service(s)) = api.store.get(&Key::new(Kind::Service, "default", "s")) else {
        panic!()
    };
    let spec = s.spec.unwrap();
    assert_eq!(
        (spec.cluster_ip, spec.cluster_ips, spec.ip_families),
        (None, None, None)
    );
    assert!(!api.cluster_ip_in_use(ip.parse().unwrap()), "released");
    // Back to ClusterIP: an address again.
    let again = api.apply(objects(cluster_ip)).unwrap();
    assert!(again[0].cluster_ip.is_some());
    // An ExternalName may not ask for an address.
    let asks = external.replace(
        "type: ExternalName",
        "type: ExternalName\n  clusterIP: 10.96.0.9",
    );
    assert_eq!(
        api.apply(objects(&asks)).unwrap_err()[0].path,
        "spec.clusterIP"
    );
}

#[test]
fn the_kubernetes_service_comes_back_when_deleted() {
    let api = api();
    let key = Key::new(Kind::Service, "default", "kubernetes");
    let before = api.store.get(&key).unwrap().meta().uid.clone();
    api.delete(&key).unwrap();
    let Some(Object::Service(s)) = api.store.get(&key) else {
        panic!("recreated")
    };
    assert_ne!(s.metadata.uid, before, "a new object");
    assert_eq!(s.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.1"));
    // Its type and ports are the API server's: a change to them does not stay.
    let edited = "apiVersion: v1\nkind: Service\nmetadata: {name: kubernetes, labels: {mine: yes}}\nspec:\n  type: ExternalName\n  externalName: example.com\n  ports: [{name: web, port: 8443}]\n";
    api.apply(objects(edited)).unwrap();
    let Some(Object::Service(s)) = api.store.get(&key) else {
        panic!()
    };
    let spec = s.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.1"));
    let port = &spec.ports.unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("https"), 443));
    assert_eq!(
        s.metadata.labels.unwrap()["mine"],
        "yes",
        "the rest is the user's"
    );
}

#[test]
fn fields_not_acted_on_are_reported_by_path() {
    let api = api();
    let p = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  setHostnameAsFQDN: true\n  hostname: h\n  subdomain: s\n  priority: 5\n  containers:\n  - name: main\n    image: agnhost\n    env:\n    - {name: A, value: one}\n    - {name: B, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n";
    let applied = api.apply(objects(p)).unwrap();
    assert_eq!(
        applied[0].ignored,
        ["spec.priority", "spec.containers[0].env[1].valueFrom"],
        "setHostnameAsFQDN and literal env values are acted on"
    );
}

#[test]
fn a_dry_run_checks_everything_and_stores_allocates_and_records_nothing() {
    let api = api();
    let rev = *api.store.subscribe().borrow();
    let events = api.store.list(Kind::Event, None).len();
    let expect = [Expect::Absent, Expect::Absent];
    let tried = api.try_write(objects(WEB), &expect).unwrap();
    let svc = tried.iter().find(|a| a.key.kind == Kind::Service).unwrap();
    assert_eq!(svc.cluster_ip.as_deref(), Some("10.96.0.2"));
    assert_eq!(svc.action, Action::Created);
    assert_eq!(*api.store.subscribe().borrow(), rev, "nothing was written");
    assert!(api.store.list(Kind::Service, Some("default")).len() == 1);
    assert!(!api.cluster_ip_in_use("10.96.0.2".parse().unwrap()));
    // Refused as the write would be, and no event of it.
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 0}]}\n";
    let e = api.try_write(objects(bad), &[Expect::Any]).unwrap_err();
    assert!(e[0].to_string().contains("Invalid value: 0"), "{}", e[0]);
    assert_eq!(api.store.list(Kind::Event, None).len(), events);
    assert_eq!(*api.store.subscribe().borrow(), rev);
    // The write itself then takes the address the dry run showed.
    let done = api.write(objects(WEB), &expect).unwrap();
    let svc = done.iter().find(|a| a.key.kind == Kind::Service).unwrap();
    assert_eq!(svc.cluster_ip.as_deref(), Some("10.96.0.2"));
}

#[test]
fn node_ports_are_given_kept_released_and_not_taken_by_a_dry_run() {
    let api = api();
    let np = |name: &str| {
        objects(&format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{type: NodePort, ports: [{{port: 80}}]}}\n"))
    };
    let node_port = |a: &crate::api::server::Applied| match a.stored.as_ref() {
        Some(Object::Service(s)) => s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
        _ => None,
    };
    let tried = api.try_write(np("a"), &[Expect::Absent]).unwrap();
    assert_eq!(node_port(&tried[0]), Some(30000));
    let a = api.apply(np("a")).unwrap();
    assert_eq!(node_port(&a[0]), Some(30000), "the dry run took nothing");
    assert_eq!(node_port(&api.apply(np("b")).unwrap()[0]), Some(30001));
    api.delete(&Key::new(Kind::Service, "default", "a"))
        .unwrap();
    assert_eq!(
        node_port(&api.apply(np("c")).unwrap()[0]),
        Some(30000),
        "released"
    );
}

#[test]
fn a_deployment_strategy_is_checked_as_upstream_checks_it() {
    let api = api();
    let with = |strategy: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  strategy: {strategy}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: x}}]}}\n")
    };
    for (strategy, path, message) in [
        (
            "{rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}",
            "spec.strategy.rollingUpdate.maxUnavailable",
            "Invalid value: 0: may not be 0 when `maxSurge` is 0",
        ),
        (
            "{rollingUpdate: {maxSurge: \"ten\"}}",
            "spec.strategy.rollingUpdate.maxSurge",
            "a valid percent string must be a numeric string followed by an ending '%'",
        ),
        (
            "{rollingUpdate: {maxUnavailable: \"150%\"}}",
            "spec.strategy.rollingUpdate.maxUnavailable",
            "must not be greater than 100%",
        ),
        (
            "{type: Recreate, rollingUpdate: {maxSurge: 1}}",
            "spec.strategy.rollingUpdate",
            "Forbidden: may not be specified when strategy `type` is 'Recreate'",
        ),
        (
            "{type: Blue}",
            "spec.strategy.type",
            "Unsupported value: \"Blue\"",
        ),
    ] {
        let err = api.apply(objects(&with(strategy))).unwrap_err();
        assert_eq!(err[0].path, path, "{strategy}");
        assert!(err[0].message.contains(message), "{strategy}: {err:?}");
    }
    api.apply(objects(&with(
        "{rollingUpdate: {maxSurge: 0, maxUnavailable: \"50%\"}}",
    )))
    .unwrap();
}

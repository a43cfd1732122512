//! kube-rs, a Rust client library, against a testbed's Kubernetes API from its
//! kubeconfig: list, watch, create, patch (strategic, merge, JSON), replace with a
//! stale resourceVersion, scale, delete. Needs root.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use serde_json::json;

use common::running::Running;
use common::*;

async fn client(tb: &Running) -> kube::Client {
    let path = run(testbed_bin().args(["kubeconfig", &tb.0]));
    let kc = Kubeconfig::read_from(path.trim()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "alt", "port": 81, "targetPort": 8081},
        ]},
    }))
    .unwrap()
}

#[test]
// Long because one testbed serves every verb, in the order a controller uses them.
fn kube_rs_lists_watches_creates_patches_scales_and_deletes() {
    if !root() {
        return;
    }
    let tb = Running::up("kube-rs");
    runtime().block_on(async {
        let client = client(&tb).await;
        let svcs: Api<Service> = Api::default_namespaced(client.clone());
        let names: Vec<String> = svcs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        assert_eq!(names, ["kubernetes"]);

        // A watcher (list, then watch from its resourceVersion) sees a create.
        let mut events = watcher(svcs.clone(), watcher::Config::default())
            .map_ok(|e| format!("{e:?}"))
            .boxed();
        let listed = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(e) = events.next().await {
                if e.unwrap() == "InitDone" {
                    return;
                }
            }
        });
        listed.await.expect("the watcher's list ends within 20 s");
        let created = svcs.create(&PostParams::default(), &service("kr")).await.unwrap();
        let ip = created.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
        assert!(ip.starts_with("10.96."), "{ip}");
        let seen = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(e) = events.next().await {
                let e = e.unwrap();
                if e.starts_with("Apply") && e.contains("\"kr\"") {
                    return e;
                }
            }
            panic!("the watch ended");
        })
        .await
        .expect("the watcher saw the new Service within 20 s");
        assert!(seen.contains(&ip), "{seen}");

        // A second create of the name is AlreadyExists (409).
        let err = svcs.create(&PostParams::default(), &service("kr")).await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"), "{err:?}");

        // Patches: strategic (the port list merged by port), merge (the list replaced),
        // JSON patch.
        let pp = PatchParams::default();
        let s = svcs
            .patch("kr", &pp, &Patch::Strategic(json!({"spec": {"ports": [{"port": 81, "targetPort": 9091}]}})))
            .await
            .unwrap();
        let ports: Vec<(i32, String)> = s.spec.unwrap().ports.unwrap().into_iter()
            .map(|p| (p.port, format!("{:?}", p.target_port.unwrap()))).collect();
        assert_eq!(ports, [(80, "Int(8080)".to_string()), (81, "Int(9091)".to_string())]);
        let s = svcs
            .patch("kr", &pp, &Patch::Merge(json!({"metadata": {"labels": {"tier": "a"}}, "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})))
            .await
            .unwrap();
        assert_eq!(s.spec.as_ref().unwrap().ports.as_ref().unwrap().len(), 1);
        let ops: json_patch::Patch = serde_json::from_value(json!([
            {"op": "replace", "path": "/metadata/labels/tier", "value": "b"}
        ]))
        .unwrap();
        let s = svcs.patch("kr", &pp, &Patch::Json::<()>(ops)).await.unwrap();
        assert_eq!(s.metadata.labels.unwrap()["tier"], "b");

        // An update from a stale resourceVersion is a Conflict.
        let mut stale = created.clone();
        stale.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
        let err = svcs.replace("kr", &PostParams::default(), &stale).await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"), "{err:?}");

        // Invalid objects are 422 with the field.
        let mut bad = service("bad");
        bad.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 0;
        let err = svcs.create(&PostParams::default(), &bad).await.unwrap_err();
        match &err {
            kube::Error::Api(s) => {
                assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
                assert!(s.message.contains("spec.ports[0].port: Invalid value: 0"), "{}", s.message);
            }
            other => panic!("{other:?}"),
        }

        // The scale subresource.
        let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
        let web: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "agnhost", "ports": [{"containerPort": 8080}]}]}}},
        }))
        .unwrap();
        deploys.create(&PostParams::default(), &web).await.unwrap();
        let scale = deploys
            .patch_scale("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 2}})))
            .await
            .unwrap();
        assert_eq!(scale.spec.unwrap().replicas, Some(2));
        assert_eq!(deploys.get("web").await.unwrap().spec.unwrap().replicas, Some(2));

        // Delete, and the object is gone.
        svcs.delete("kr", &DeleteParams::default()).await.unwrap();
        let err = svcs.get("kr").await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 404), "{err:?}");
        deploys.delete("web", &DeleteParams::default()).await.unwrap();
    });
}

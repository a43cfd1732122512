//! The EndpointSlices and Endpoints of a Service as the control plane's controllers
//! write them: per set of ports, 100 endpoints a slice, with conditions, hostnames and
//! labels.

use k8s_openapi::api::core::v1::{ContainerPort, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::endpoints::{change_message, endpoints_for, MAX_PER_SLICE};
use super::tests::{objects, pod};
use crate::api::Object;

fn service(yaml: &str) -> Service {
    match objects(yaml).remove(0) {
        Object::Service(s) => s,
        _ => panic!("a Service"),
    }
}

/// A slice as `name:port ... | address(ready,serving,terminating) ...`.
fn shape(s: &EndpointSlice) -> String {
    let ports: Vec<String> = s
        .ports
        .iter()
        .flatten()
        .map(|p| format!("{}:{}", p.name.clone().unwrap_or_default(), p.port.unwrap()))
        .collect();
    let eps: Vec<String> = s
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap();
            let flag = |b: Option<bool>| if b == Some(true) { "1" } else { "0" };
            format!(
                "{}({}{}{})",
                e.addresses[0],
                flag(c.ready),
                flag(c.serving),
                flag(c.terminating)
            )
        })
        .collect();
    format!("{} | {}", ports.join(" "), eps.join(" "))
}

/// The conformance test "should serve multiport endpoints from pods": pods that serve
/// different named ports are in different slices, each with its own ports.
#[test]
fn pods_with_different_ports_get_a_slice_and_a_subset_each() {
    let svc = service("apiVersion: v1\nkind: Service\nmetadata: {name: multi}\nspec:\n  selector: {app: m}\n  ports:\n  - {name: a, port: 80, targetPort: port-a}\n  - {name: b, port: 81, targetPort: port-b}\n");
    let mut one = pod("one", "10.244.1.2", r#"{"app":"m"}"#, true);
    let mut two = pod("two", "10.244.1.3", r#"{"app":"m"}"#, true);
    let none = pod("none", "10.244.1.4", r#"{"app":"m"}"#, true);
    let port = |name: &str, n: i32| ContainerPort {
        name: Some(name.into()),
        container_port: n,
        ..Default::default()
    };
    one.spec.as_mut().unwrap().containers[0].ports = Some(vec![port("port-a", 8080)]);
    two.spec.as_mut().unwrap().containers[0].ports = Some(vec![port("port-b", 9090)]);
    let (ep, slices) = endpoints_for(&svc, &[one, two, none]).unwrap();
    let mut shapes: Vec<String> = slices.iter().map(shape).collect();
    shapes.sort();
    assert_eq!(
        shapes,
        [
            " | 10.244.1.4(110)",
            "a:8080 | 10.244.1.2(110)",
            "b:9090 | 10.244.1.3(110)"
        ],
        "the pod that serves neither port is in a slice without ports, as upstream's"
    );
    let names: std::collections::BTreeSet<_> = slices
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names
        .iter()
        .all(|n| n.starts_with("multi-") && n.len() == "multi-".len() + 5));
    // Endpoints: a subset per set of ports; a pod that serves none is in none.
    let subsets = ep.subsets.unwrap();
    assert_eq!(subsets.len(), 2);
    for s in &subsets {
        assert_eq!(s.addresses.as_ref().unwrap().len(), 1);
        assert_eq!(s.ports.as_ref().unwrap().len(), 1);
    }
}

#[test]
fn a_slice_holds_at_most_100_endpoints() {
    let svc = service(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big}\nspec:\n  selector: {app: big}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n",
    );
    let pods: Vec<_> = (0..250)
        .map(|i| {
            pod(
                &format!("big-{i}"),
                &format!("10.244.{}.{}", 1 + i / 200, 2 + i % 200),
                r#"{"app":"big"}"#,
                true,
            )
        })
        .collect();
    let (ep, slices) = endpoints_for(&svc, &pods).unwrap();
    let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes, [MAX_PER_SLICE, MAX_PER_SLICE, 50]);
    for s in &slices {
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "big");
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(
            s.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Service"
        );
    }
    let names: std::collections::BTreeSet<_> =
        slices.iter().map(|s| s.metadata.name.clone()).collect();
    assert_eq!(names.len(), 3);
    // One Endpoints object holds them all.
    assert_eq!(
        ep.subsets.unwrap()[0].addresses.as_ref().unwrap().len(),
        250
    );
}

#[test]
fn conditions_hostnames_nodes_and_the_headless_label() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: None\n  selector: {app: db}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n";
    let svc = service(yaml);
    let mut named = pod("db-0", "10.244.1.2", r#"{"app":"db"}"#, true);
    let spec = named.spec.as_mut().unwrap();
    spec.hostname = Some("db-0".into());
    spec.subdomain = Some("db".into());
    let mut other_sub = pod("db-1", "10.244.1.3", r#"{"app":"db"}"#, true);
    let spec = other_sub.spec.as_mut().unwrap();
    spec.hostname = Some("db-1".into());
    spec.subdomain = Some("elsewhere".into());
    let unready = pod("db-2", "10.244.1.4", r#"{"app":"db"}"#, false);
    let mut leaving = pod("db-3", "10.244.1.5", r#"{"app":"db"}"#, true);
    leaving.metadata.deletion_timestamp = Some(crate::api::store::now());
    let pods = [named, other_sub, unready, leaving];

    let (ep, slices) = endpoints_for(&svc, &pods).unwrap();
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    assert_eq!(
        shape(slice),
        "http:8080 | 10.244.1.2(110) 10.244.1.3(110) 10.244.1.4(000) 10.244.1.5(011)",
        "a terminating pod stays, not ready but serving"
    );
    let hostnames: Vec<Option<&str>> = slice
        .endpoints
        .iter()
        .map(|e| e.hostname.as_deref())
        .collect();
    assert_eq!(
        hostnames,
        [Some("db-0"), None, None, None],
        "only with this subdomain"
    );
    assert!(slice
        .endpoints
        .iter()
        .all(|e| e.node_name.as_deref() == Some("node-1")));
    assert_eq!(
        slice.metadata.labels.as_ref().unwrap()["service.kubernetes.io/headless"],
        ""
    );
    assert_eq!(
        ep.metadata.labels.as_ref().unwrap()["service.kubernetes.io/headless"],
        ""
    );
    // Endpoints: the terminating pod is left out; the not-ready one is not ready.
    let subset = &ep.subsets.as_ref().unwrap()[0];
    let ips = |a: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
        a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ips(&subset.addresses), ["10.244.1.2", "10.244.1.3"]);
    assert_eq!(ips(&subset.not_ready_addresses), ["10.244.1.4"]);

    // publishNotReadyAddresses: every pod is ready, the terminating one too.
    let mut all = svc.clone();
    all.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let (ep, slices) = endpoints_for(&all, &pods).unwrap();
    assert_eq!(
        shape(&slices[0]),
        "http:8080 | 10.244.1.2(110) 10.244.1.3(110) 10.244.1.4(100) 10.244.1.5(111)"
    );
    assert_eq!(ep.subsets.unwrap()[0].addresses.as_ref().unwrap().len(), 4);
}

#[test]
fn a_service_without_pods_has_one_empty_slice() {
    let svc = service(
        "apiVersion: v1\nkind: Service\nmetadata: {name: lonely}\nspec:\n  selector: {app: none}\n  ports:\n  - {port: 80}\n",
    );
    let (ep, slices) = endpoints_for(&svc, &[]).unwrap();
    assert_eq!(slices.len(), 1);
    assert_eq!(shape(&slices[0]), " | ");
    assert!(ep.subsets.is_none());
}

#[test]
fn the_change_event_counts_terminating_pods_that_endpoints_leave_out() {
    let svc = service(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: a, port: 80, targetPort: 8080}\n  - {name: b, port: 81, targetPort: 8080, protocol: UDP}\n",
    );
    let web = r#"{"app":"web"}"#;
    let message = |pods: &[k8s_openapi::api::core::v1::Pod]| {
        let (ep, slices) = endpoints_for(&svc, pods).unwrap();
        change_message(Some(&ep), &slices)
    };
    assert_eq!(message(&[]), "no endpoints: no pod matches the selector");
    let mut serving = pod("web-1", "10.244.1.2", web, true);
    serving.metadata.deletion_timestamp = Some(crate::api::store::now());
    let mut stopped = pod("web-2", "10.244.1.3", web, false);
    stopped.metadata.deletion_timestamp = Some(crate::api::store::now());
    // Two slices (TCP and UDP): each pod counted once.
    assert_eq!(
        message(&[serving.clone()]),
        "0 ready, 1 terminating (1 serving)"
    );
    let ready = pod("web-3", "10.244.1.4", web, true);
    let unready = pod("web-4", "10.244.1.5", web, false);
    assert_eq!(
        message(&[serving, stopped, ready, unready]),
        "2 ready (10.244.1.4:8080, 10.244.1.4:8080), 1 not ready, 2 terminating (1 serving)"
    );
}

//! The cluster DNS as kubeadm installs it: the `kube-system/kube-dns` Service on the
//! reserved ClusterIP, and the `kube-system/coredns` Deployment behind it, whose
//! pods the kubelet runs as this process's DNS server.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::Object;

pub const NAMESPACE: &str = "kube-system";
pub const IMAGE: &str = "registry.k8s.io/coredns/coredns:v1.11.3";
/// The coredns pods, as kubeadm makes them.
pub const REPLICAS: i32 = 2;
/// The DNS port, on the Service and in the pods.
pub const PORT: u16 = 53;

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())])
}

fn meta(name: &str, extra: &[(&str, &str)]) -> ObjectMeta {
    let mut l = labels();
    for (k, v) in extra {
        l.insert(k.to_string(), v.to_string());
    }
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NAMESPACE.into()),
        labels: Some(l),
        ..Default::default()
    }
}

/// The kube-dns Service (at `ip`) and the coredns Deployment (`replicas` pods).
pub fn objects(ip: Ipv4Addr, replicas: i32) -> Vec<Object> {
    let port = |name: &str, proto: &str, n: i32, target: &str| ServicePort {
        name: Some(name.into()),
        protocol: Some(proto.into()),
        port: n,
        target_port: Some(IntOrString::String(target.into())),
        ..Default::default()
    };
    let service = Service {
        metadata: meta(
            "kube-dns",
            &[
                ("kubernetes.io/cluster-service", "true"),
                ("kubernetes.io/name", "CoreDNS"),
            ],
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.to_string()),
            selector: Some(labels()),
            ports: Some(vec![
                port("dns", "UDP", PORT.into(), "dns"),
                port("dns-tcp", "TCP", PORT.into(), "dns-tcp"),
            ]),
            ..Default::default()
        }),
        status: None,
    };
    let cport = |name: &str, proto: &str| ContainerPort {
        name: Some(name.into()),
        protocol: Some(proto.into()),
        container_port: PORT.into(),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta("coredns", &[]),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    dns_policy: Some("Default".into()),
                    containers: vec![Container {
                        name: "coredns".into(),
                        image: Some(IMAGE.into()),
                        ports: Some(vec![cport("dns", "UDP"), cport("dns-tcp", "TCP")]),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    vec![Object::Service(service), Object::Deployment(deployment)]
}

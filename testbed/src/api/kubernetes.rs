//! The API server's own Service, `default/kubernetes`, and its endpoints: the
//! address the API server serves pods at, written by the API server itself (as
//! upstream's endpoint reconciler writes them), not by the endpoints controller,
//! which leaves a Service without a selector alone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ipalloc::API_SERVICE;
use super::object::{Key, Kind, Object};
use super::store::Store;

/// The port the API server serves on, the Service's `targetPort`.
pub const PORT: u16 = 6443;

pub(super) fn key() -> Key {
    Key::new(Kind::Service, API_SERVICE.0, API_SERVICE.1)
}

fn meta(labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(API_SERVICE.1.into()),
        namespace: Some(API_SERVICE.0.into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

/// The `kubernetes` Service's ClusterIP: the first address of the service CIDR, as
/// upstream takes it (10.96.0.1 of 10.96.0.0/12).
pub fn cluster_ip(service_cidr: ipnet::Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(service_cidr.network()) + 1)
}

/// `default/kubernetes` at [`cluster_ip`].
pub(super) fn service(service_cidr: ipnet::Ipv4Net) -> Service {
    let first = cluster_ip(service_cidr);
    Service {
        metadata: meta(&[("component", "apiserver"), ("provider", "kubernetes")]),
        spec: Some(ServiceSpec {
            cluster_ip: Some(first.to_string()),
            ports: Some(vec![ServicePort {
                name: Some("https".into()),
                port: 443,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::Int(PORT.into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The Endpoints and EndpointSlice upstream's reconciler writes for an API server
/// at `ip` (`pkg/controlplane/reconcilers`: the Endpoints skip mirroring, the slice
/// is made from them).
pub fn endpoints(ip: Ipv4Addr) -> (Endpoints, EndpointSlice) {
    let endpoints = Endpoints {
        metadata: meta(&[("endpointslice.kubernetes.io/skip-mirror", "true")]),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: ip.to_string(),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("https".into()),
                port: PORT.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    };
    let slice = EndpointSlice {
        metadata: meta(&[("kubernetes.io/service-name", API_SERVICE.1)]),
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ports: Some(vec![SlicePort {
            name: Some("https".into()),
            port: Some(PORT.into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    (endpoints, slice)
}

/// Records that the API server serves pods at `ip`:[`PORT`].
pub fn register(store: &Store, ip: Ipv4Addr) {
    let (endpoints, slice) = endpoints(ip);
    store.write(|tx| {
        tx.put(Object::Endpoints(endpoints));
        tx.put(Object::EndpointSlice(slice));
    });
}

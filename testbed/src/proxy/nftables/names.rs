//! The names of kube-proxy's nftables chains and sets for a service port, as
//! `pkg/proxy/nftables/proxier.go` makes them: `service-ULMVA6XW-ns1/svc1/tcp/p80`,
//! `endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80`: the first 8 characters of the
//! base32 of a sha256 of the rest, then the rest, cut at 240 characters.

use std::net::SocketAddrV4;

use sha2::{Digest, Sha256};

use crate::proxy::render::ServicePort;

/// nftables' longest name (`NFT_NAME_MAXLEN` - 1) less the longest prefix (16).
const BASE_MAX: usize = 256 - 16;

/// Upstream's `hashAndTruncate`.
pub fn hash_and_truncate(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let encoded = data_encoding::BASE32.encode(&digest);
    let mut out = format!("{}-{name}", &encoded[..8]);
    if out.len() > BASE_MAX {
        out.truncate(BASE_MAX - 3);
        out.push_str("...");
    }
    out
}

/// `ns/name/proto/port-name` with its hash: the base of a service port's chains.
fn port_base(sp: &ServicePort) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}",
        sp.namespace,
        sp.name,
        sp.protocol.lower(),
        sp.port_name
    ))
}

/// `...__ip/port`: the base of an endpoint's chain and affinity set.
fn endpoint_base(sp: &ServicePort, ep: &SocketAddrV4) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}__{}/{}",
        sp.namespace,
        sp.name,
        sp.protocol.lower(),
        sp.port_name,
        ep.ip(),
        ep.port()
    ))
}

/// The chain of the Cluster policy's endpoints.
pub fn service(sp: &ServicePort) -> String {
    format!("service-{}", port_base(sp))
}

/// The chain of the Local policy's endpoints.
pub fn local(sp: &ServicePort) -> String {
    format!("local-{}", port_base(sp))
}

/// Where traffic to a node port, an external IP or a load balancer address goes.
pub fn external(sp: &ServicePort) -> String {
    format!("external-{}", port_base(sp))
}

/// The `loadBalancerSourceRanges` check.
pub fn firewall(sp: &ServicePort) -> String {
    format!("firewall-{}", port_base(sp))
}

pub fn endpoint(sp: &ServicePort, ep: &SocketAddrV4) -> String {
    format!("endpoint-{}", endpoint_base(sp, ep))
}

/// The set of clients stuck to an endpoint (`sessionAffinity: ClientIP`).
pub fn affinity(sp: &ServicePort, ep: &SocketAddrV4) -> String {
    format!("affinity-{}", endpoint_base(sp, ep))
}

/// A chain of one service port (upstream's `isServiceChainName`): only those have
/// a `/` in their name.
pub fn is_service_chain(name: &str) -> bool {
    name.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::render::Protocol;

    #[test]
    fn names_are_upstreams() {
        let ep: SocketAddrV4 = "10.180.0.1:80".parse().unwrap();
        let sp = ServicePort::cluster_ip(
            ("ns1", "svc1", "p80"),
            Protocol::Tcp,
            "172.30.0.41".parse().unwrap(),
            80,
            vec![ep],
        );
        // From upstream's TestOverallNFTablesRules.
        assert_eq!(service(&sp), "service-ULMVA6XW-ns1/svc1/tcp/p80");
        assert_eq!(
            endpoint(&sp, &ep),
            "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
        );
        let long = "a".repeat(300);
        assert_eq!(hash_and_truncate(&long).len(), BASE_MAX);
        assert!(hash_and_truncate(&long).ends_with("..."));
    }
}

//! kube-proxy's chain names: `KUBE-SVC-`/`KUBE-SEP-` and the first 16 characters of
//! the base32 of a sha256 of the service port's name, protocol (and endpoint), exactly
//! as `pkg/proxy/iptables/proxier.go` computes them, so names match a real cluster.

use sha2::{Digest, Sha256};

fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut encoded = data_encoding::BASE32.encode(&digest);
    encoded.truncate(16);
    encoded
}

/// kube-proxy's `portProtoHash`: `servicePortName` is `ns/name:port-name` (`ns/name`
/// when the port has no name), `protocol` is lower case (`tcp`, `udp`, `sctp`).
pub fn port_proto_hash(service_port_name: &str, protocol: &str) -> String {
    hash16(&format!("{service_port_name}{protocol}"))
}

/// `KUBE-SVC-<hash>`: the chain that picks an endpoint for one service port.
pub fn service_chain(service_port_name: &str, protocol: &str) -> String {
    format!("KUBE-SVC-{}", port_proto_hash(service_port_name, protocol))
}

/// `KUBE-SVL-...`: the chain of a service port's node-local endpoints (a
/// `Local` traffic policy); the same hash as its `KUBE-SVC-` chain.
pub fn local_chain(service_port_name: &str, protocol: &str) -> String {
    format!("KUBE-SVL-{}", port_proto_hash(service_port_name, protocol))
}

/// `KUBE-EXT-...`: where traffic to a node port, an external IP or a load
/// balancer address goes first.
pub fn external_chain(service_port_name: &str, protocol: &str) -> String {
    format!("KUBE-EXT-{}", port_proto_hash(service_port_name, protocol))
}

/// `KUBE-FW-...`: the `loadBalancerSourceRanges` check of a load balancer address.
pub fn firewall_chain(service_port_name: &str, protocol: &str) -> String {
    format!("KUBE-FW-{}", port_proto_hash(service_port_name, protocol))
}

/// `KUBE-SEP-<hash>`: the chain that DNATs to one endpoint (`ip:port`).
pub fn endpoint_chain(service_port_name: &str, protocol: &str, endpoint: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!("{service_port_name}{protocol}{endpoint}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from kube-proxy's own tests (`pkg/proxy/iptables/proxier_test.go`):
    /// `ns1/svc1:p80` over tcp is `KUBE-SVC-XPGD46QRK7WJZT7O`, and its endpoint
    /// 10.180.0.1:80 is `KUBE-SEP-SXIVWICOYRO3J4NJ`.
    #[test]
    fn chain_names_match_kube_proxy() {
        assert_eq!(
            service_chain("ns1/svc1:p80", "tcp"),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
    }
}

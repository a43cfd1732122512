//! How big one testbed may get. Each limit is checked where the input enters (the
//! scenario check, admission), before anything is made, and its error names it.
//!
//! The sizes come from what a 2-core, 24 GiB machine builds and runs without
//! trouble: a node is a namespace with kube-proxy's rules to rewrite on every sync
//! (100 nodes come up in about 2 s, but 1,100 took minutes), a pod a namespace, a veth
//! pair and its servers (2,000 come up in about 3 s). Kubernetes' own limits are
//! taken as they are.

/// Nodes in one testbed.
pub const NODES: usize = 100;
/// Pods in one testbed: the scenario's, plus every Deployment's replicas.
pub const PODS: usize = 2_000;
/// Services in one testbed (`testbed bench services` runs 10,000).
pub const SERVICES: usize = 20_000;
/// Ports of one Service (each is a chain per node in kube-proxy's rules).
pub const PORTS_PER_SERVICE: usize = 100;
/// All annotations of one object, keys and values: Kubernetes' `TotalAnnotationSizeLimitB`.
pub const ANNOTATION_BYTES: usize = 256 << 10;
/// One object as JSON: etcd's default request limit, which the API server inherits.
pub const OBJECT_BYTES: usize = 1536 << 10;

/// `n` with thousands separated, as the limits' errors print them.
pub fn count(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_read_well() {
        assert_eq!(super::count(100_000), "100,000");
        assert_eq!(super::count(2000), "2,000");
        assert_eq!(super::count(999), "999");
    }
}

//! A node's kube-proxy putting back what others removed (a jump, a flushed table),
//! and clearing UDP flows at every address of a Service, over the model of a node's
//! iptables.

use crate::api::{EventType, Object};

use super::node_tests::{full_sync_of, service, slice, Node};

#[tokio::test]
async fn a_periodic_sync_puts_back_a_deleted_jump_and_resyncs_after_a_flush() {
    let mut node = Node::new();
    let ports = [("http", 80, "TCP")];
    node.observe(EventType::Added, service("web", 20, &ports));
    node.observe(EventType::Added, slice("web", &ports, &[(2, true)]));
    node.sync().await;
    let whole = node.tables().canonical();
    assert_eq!(whole, full_sync_of(&node).canonical());
    let restores = |node: &Node| {
        node.exec
            .calls()
            .iter()
            .filter(|c| c.program == "iptables-restore")
            .count()
    };
    // Nothing gone: a periodic sync only looks.
    node.exec.clear();
    node.sync().await;
    assert_eq!(restores(&node), 0, "{:?}", node.exec.calls());
    assert_eq!(node.tables().canonical(), whole);

    // Someone deletes the PREROUTING jump: the next periodic sync puts it back,
    // first in its chain, and writes nothing else.
    let jump = "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES";
    assert!(node.model.lock().unwrap().delete("nat", "PREROUTING", jump));
    assert_ne!(node.tables().canonical(), whole);
    node.exec.clear();
    node.sync().await;
    let texts: Vec<String> = node
        .exec
        .calls()
        .iter()
        .filter_map(|c| c.stdin.clone())
        .collect();
    assert_eq!(
        texts,
        vec![format!("*nat\n-I PREROUTING 1 {jump}\nCOMMIT\n")]
    );
    assert_eq!(node.tables().canonical(), whole);

    // Someone flushes nat and mangle (the canaries go with them): a full sync.
    node.model.lock().unwrap().flush("nat");
    node.model.lock().unwrap().flush("mangle");
    node.exec.clear();
    node.sync().await;
    assert_eq!(restores(&node), 1);
    assert_eq!(node.tables().canonical(), whole);
}

#[tokio::test]
async fn udp_conntrack_is_cleared_at_every_address_of_a_node_port_service() {
    let mut node = Node::new();
    let ports = [("dns", 53, "UDP")];
    let mut svc = service("np", 30, &ports);
    if let Object::Service(s) = &mut svc {
        let spec = s.spec.as_mut().unwrap();
        spec.type_ = Some("NodePort".into());
        spec.external_ips = Some(vec!["192.168.99.1".into()]);
        spec.ports.as_mut().unwrap()[0].node_port = Some(30053);
    }
    node.observe(EventType::Added, svc.clone());
    node.sync().await;
    // It gets its first endpoint: every flow to its addresses goes.
    node.exec.clear();
    node.observe(EventType::Added, slice("np", &ports, &[(2, true)]));
    node.sync().await;
    let conntrack = |node: &Node| -> Vec<String> {
        node.exec
            .calls()
            .into_iter()
            .filter(|c| c.program == "conntrack")
            .map(|c| c.args.join(" "))
            .collect()
    };
    assert_eq!(
        conntrack(&node),
        [
            "-D -p udp --orig-dst 10.96.0.30",
            "-D -p udp --orig-dst 192.168.99.1",
            "-D -p udp --orig-port-dst 30053",
        ]
    );
    // Its endpoint goes: its flows, at each address, go with it.
    node.exec.clear();
    node.observe(EventType::Modified, slice("np", &ports, &[]));
    node.sync().await;
    assert_eq!(
        conntrack(&node),
        [
            "-D -p udp --orig-dst 10.96.0.30 --dst-nat 10.244.1.2",
            "-D -p udp --orig-dst 192.168.99.1 --dst-nat 10.244.1.2",
            "-D -p udp --orig-port-dst 30053 --dst-nat 10.244.1.2",
        ]
    );
}

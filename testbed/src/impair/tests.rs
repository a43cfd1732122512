use super::*;

fn pod(n: u8) -> PodEnd {
    PodEnd {
        netns: format!("tb.t.default.p{n}"),
        ip: Ipv4Addr::new(10, 244, 1, n),
        node_netns: "tb.t.node-1".into(),
        host_veth: format!("veth{n}"),
    }
}

fn under(n: &str) -> UnderlayEnd {
    UnderlayEnd {
        port: n.into(),
        netns: format!("tb.t.{n}"),
    }
}

fn fault(effect: Effect) -> Fault {
    Fault {
        id: "f".into(),
        effect,
        scope: Scope::Link(End::parse("node/node-2")),
    }
}

fn text(c: &Change) -> &str {
    match c {
        Change::Table { text, .. } => text,
        Change::Qdisc { .. } => panic!("a qdisc: {c:?}"),
    }
}

#[test]
fn loss_on_a_node_link_drops_at_its_port_on_the_underlay_each_way() {
    let c = changes(
        &fault(Effect::Loss(30)),
        &Resolved::UnderlayLink(under("node-2")),
        "tb.t",
    )
    .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].netns(), "tb.t");
    let t = text(&c[0]);
    assert!(t.starts_with("table bridge testbed-fault-f {"), "{t}");
    assert!(t.contains("hook prerouting priority -300"), "{t}");
    assert!(
        t.contains("iifname \"node-2\" ether type ip numgen random mod 100 < 30 counter drop"),
        "{t}"
    );
    assert!(
        t.contains("oifname \"node-2\" ether type ip numgen random mod 100 < 30 counter drop"),
        "{t}"
    );
}

#[test]
fn a_partition_drops_everything_the_bridge_forwards_from_one_side_to_the_other() {
    let c = changes(
        &fault(Effect::Loss(100)),
        &Resolved::UnderlayBetween(
            vec![under("node-1")],
            vec![under("node-2"), under("node-3")],
        ),
        "tb.t",
    )
    .unwrap();
    let t = text(&c[0]);
    assert!(t.contains("hook forward"), "{t}");
    assert!(
        t.contains("iifname \"node-1\" oifname { \"node-2\", \"node-3\" } counter drop"),
        "{t}"
    );
    assert!(
        t.contains("iifname { \"node-2\", \"node-3\" } oifname \"node-1\" counter drop"),
        "{t}"
    );
    assert!(!t.contains("numgen"), "{t}");
}

#[test]
fn loss_between_pods_is_written_in_each_pod_of_the_second_side() {
    let f = fault(Effect::Loss(50));
    let c = changes(
        &f,
        &Resolved::PodsBetween(vec![pod(1), pod(2)], vec![pod(3), pod(4)]),
        "tb.t",
    )
    .unwrap();
    let where_: Vec<&str> = c.iter().map(Change::netns).collect();
    assert_eq!(where_, ["tb.t.default.p3", "tb.t.default.p4"]);
    let t = text(&c[0]);
    assert!(t.starts_with("table ip testbed-fault-f"), "{t}");
    assert!(
        t.contains("ip saddr { 10.244.1.1, 10.244.1.2 } numgen random mod 100 < 50"),
        "{t}"
    );
    assert!(t.contains("ip daddr { 10.244.1.1, 10.244.1.2 }"), "{t}");
}

#[test]
fn a_rate_limit_is_a_tbf_qdisc_at_both_ends_of_the_link() {
    let bits = parse_rate("1mbit").unwrap();
    let f = fault(Effect::Rate {
        bits,
        text: "1mbit".into(),
    });
    let c = changes(&f, &Resolved::PodLink(pod(7)), "tb.t").unwrap();
    let cmds: Vec<(String, String)> = c
        .iter()
        .map(|c| (c.netns().to_string(), c.command()))
        .collect();
    assert_eq!(
        cmds,
        [
            (
                "tb.t.default.p7".to_string(),
                "tc qdisc add dev eth0 root tbf rate 1000000bit burst 3028 latency 100ms"
                    .to_string()
            ),
            (
                "tb.t.node-1".to_string(),
                "tc qdisc add dev veth7 root tbf rate 1000000bit burst 3028 latency 100ms"
                    .to_string()
            ),
        ]
    );
    let between = Resolved::PodsBetween(vec![pod(1)], vec![pod(2)]);
    assert!(changes(&f, &between, "tb.t")
        .unwrap_err()
        .contains("on one link"));
}

#[test]
fn percentages_rates_and_the_netem_check_read_as_written() {
    assert_eq!(parse_percent("30%"), Ok(30));
    assert_eq!(parse_percent("100"), Ok(100));
    for bad in ["0%", "101%", "2.5%", "lots"] {
        assert!(parse_percent(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_rate("500kbit"), Ok(500_000));
    assert_eq!(parse_rate("2Gbit"), Ok(2_000_000_000));
    for bad in ["1mbps", "1bit", "fast", "20gbit"] {
        assert!(parse_rate(bad).is_err(), "{bad}");
    }
    let without = netem::missing_from(
        "CONFIG_NET_SCH_TBF=y\n# CONFIG_NET_SCH_NETEM is not set\n",
        "6.1",
    );
    assert!(without.unwrap().contains("CONFIG_NET_SCH_NETEM is not set"));
    assert_eq!(netem::missing_from("CONFIG_NET_SCH_NETEM=m\n", "6.1"), None);
}

#[test]
fn the_counters_of_a_listing_add_up() {
    let listing = "table ip t {\n chain a {\n  ip saddr 1.2.3.4 counter packets 7 bytes 420 drop\n }\n chain b {\n  counter packets 5 bytes 300 drop\n }\n}\n";
    assert_eq!(apply::counted(listing), 12);
}

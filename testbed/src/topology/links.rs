//! The few netlink requests the topology needs, each named for the `ip` command it
//! equals. All run over a handle whose socket lives in the namespace to change.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{InfoData, InfoPortKind, InfoVeth, LinkAttribute};
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

/// A failed netlink request and what it was for.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct LinkError {
    pub what: String,
    #[source]
    pub source: rtnetlink::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |source| LinkError { what, source }
}

/// `ip link add NAME address MAC type bridge && ip link set NAME up`; returns its index.
/// A bridge given its own MAC keeps it, instead of taking its lowest port's.
pub async fn add_bridge(nl: &Handle, name: &str, mac: [u8; 6]) -> Result<u32, LinkError> {
    nl.link()
        .add(LinkBridge::new(name).address(mac.to_vec()).up().build())
        .execute()
        .await
        .map_err(err(format!("create bridge {name}")))?;
    index_of(nl, name).await
}

/// One end of a veth pair.
pub struct VethEnd<'a> {
    pub name: &'a str,
    pub mac: [u8; 6],
}

/// `ip link add HOST address MAC master BRIDGE up type veth peer name PEER address
/// MAC netns NS`: the peer is born in its namespace (down: the kernel refuses to bring
/// a peer up in the request that creates it, with ENOTCONN).
pub async fn add_veth_to_bridge(
    nl: &Handle,
    host: VethEnd<'_>,
    bridge: u32,
    peer: VethEnd<'_>,
    peer_netns: RawFd,
) -> Result<(), LinkError> {
    let peer_msg = one_queue(
        LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.name.to_string())
            .address(peer.mac.to_vec())
            .setns_by_fd(peer_netns),
    )
    .build();
    let msg = one_queue(
        LinkVeth::new(host.name, peer.name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .address(host.mac.to_vec())
            .controller(bridge)
            .up(),
    )
    .build();
    nl.link().add(msg).execute().await.map_err(err(format!(
        "create veth pair {} / {}",
        host.name, peer.name
    )))
}

/// One transmit and one receive queue. A veth otherwise gets one of each per possible
/// CPU, each with its own sysfs directory made under the rtnl lock; nothing here
/// spreads a pod's traffic over queues.
fn one_queue<T>(link: LinkMessageBuilder<T>) -> LinkMessageBuilder<T> {
    link.append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
}

/// The index of the interface `name` (`ip link show NAME`).
pub async fn index_of(nl: &Handle, name: &str) -> Result<u32, LinkError> {
    let link = nl
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(err(format!("find interface {name}")))?;
    match link {
        Some(l) => Ok(l.header.index),
        None => Err(LinkError {
            what: format!("find interface {name}"),
            source: rtnetlink::Error::RequestFailed,
        }),
    }
}

/// `ip link del NAME`: gone when this returns, a veth with its peer, and a bridge
/// port with the bridge's entries for it.
pub async fn delete(nl: &Handle, name: &str) -> Result<(), LinkError> {
    let index = index_of(nl, name).await?;
    nl.link()
        .del(index)
        .execute()
        .await
        .map_err(err(format!("delete interface {name}")))
}

/// `ip link set dev INDEX up`.
pub async fn set_up(nl: &Handle, index: u32, what: &str) -> Result<(), LinkError> {
    nl.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(err(format!("bring {what} up")))
}

/// `ip addr add IP/PREFIX dev INDEX`.
pub async fn add_address(
    nl: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
    what: &str,
) -> Result<(), LinkError> {
    nl.address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(err(format!("add address {ip}/{prefix} to {what}")))
}

/// `ip route add TO via GATEWAY` (`default` when `to` is `None`).
pub async fn add_route(nl: &Handle, to: Option<Ipv4Net>, via: Ipv4Addr) -> Result<(), LinkError> {
    // proto boot, like `ip route add`, so `ip route` inside reads as it does in a cluster.
    let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(via)
        .protocol(RouteProtocol::Boot);
    if let Some(net) = to {
        route = route.destination_prefix(net.network(), net.prefix_len());
    }
    let shown = to.map_or("default".to_string(), |n| n.to_string());
    nl.route()
        .add(route.build())
        .execute()
        .await
        .map_err(err(format!("add route {shown} via {via}")))
}

/// `ip link set dev NAME type bridge_slave hairpin on`: the bridge may send a frame
/// back out of the port it came in on, so a pod can reach itself through its Service
/// (kubelet's `hairpin-veth` mode). Set by name: one request, no lookup.
pub async fn set_hairpin(nl: &Handle, port: &str) -> Result<(), LinkError> {
    let msg = LinkMessageBuilder::<LinkBridgePort>::default()
        .name(port.to_string())
        .set_port_kind(InfoPortKind::Bridge)
        .hairpin(true)
        .build();
    // RTM_NEWLINK without NLM_F_CREATE: the kernel ignores port settings in a
    // RTM_SETLINK, silently.
    nl.link()
        .set_port(msg)
        .execute()
        .await
        .map_err(err(format!("turn hairpin on for {port}")))
}

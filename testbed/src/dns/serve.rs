//! The DNS server of a kube-dns pod: hickory-server on UDP and TCP sockets bound
//! inside the pod's network namespace, answering through a shared [`Handler`].

use std::net::{Ipv4Addr, SocketAddr};

use hickory_server::Server;

use super::handler::Handler;
use crate::netns;

/// A DNS server: hickory-server on UDP, ours on TCP (see [`super::tcp`]). Dropping it
/// stops both.
pub struct DnsServer {
    _udp: Server<Handler>,
    tcp: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(t) = &self.tcp {
            t.abort();
        }
    }
}

/// Serves DNS on `port` (UDP and TCP) of every address of the namespace
/// `netns_name` until the returned server is dropped.
pub async fn serve(
    netns_name: &str,
    port: u16,
    udp: bool,
    tcp: bool,
    handler: Handler,
) -> std::io::Result<DnsServer> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let (udp_socket, tcp_listener) = netns::run_in(netns_name, move || {
        let u = if udp {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Some(s)
        } else {
            None
        };
        let t = if tcp {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Some(l)
        } else {
            None
        };
        Ok((u, t))
    })?;
    let handler = handler.in_netns(netns_name);
    let mut server = Server::new(handler.clone());
    if let Some(s) = udp_socket {
        server.register_socket(tokio::net::UdpSocket::from_std(s)?);
    }
    let tcp = match tcp_listener {
        Some(l) => Some(tokio::spawn(super::tcp::serve(
            tokio::net::TcpListener::from_std(l)?,
            handler,
        ))),
        None => None,
    };
    Ok(DnsServer { _udp: server, tcp })
}

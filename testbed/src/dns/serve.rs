//! The DNS server of a kube-dns pod: hickory-server on UDP and TCP sockets bound
//! inside the pod's network namespace, answering through a shared [`Handler`].

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_server::Server;

use super::handler::Handler;
use crate::netns;

/// A TCP connection that sends no request for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Serves DNS on `port` (UDP and TCP) of every address of the namespace
/// `netns_name` until the returned server is dropped or shut down.
pub async fn serve(
    netns_name: &str,
    port: u16,
    udp: bool,
    tcp: bool,
    handler: Handler,
) -> std::io::Result<Server<Handler>> {
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
    let mut server = Server::new(handler.in_netns(netns_name));
    if let Some(s) = udp_socket {
        server.register_socket(tokio::net::UdpSocket::from_std(s)?);
    }
    if let Some(l) = tcp_listener {
        server.register_listener(tokio::net::TcpListener::from_std(l)?, TCP_IDLE, 64 * 1024);
    }
    Ok(server)
}

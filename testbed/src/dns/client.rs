//! One DNS question, asked over UDP or TCP, from a namespace or from here: what the
//! cluster DNS uses to forward to upstreams and what scenario probes ask from pods.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::Message;

/// One question over UDP from namespace `netns` (here for `None`): the answer.
pub async fn ask_udp(
    netns: Option<&str>,
    server: SocketAddr,
    raw: &[u8],
    timeout: Duration,
) -> std::io::Result<Message> {
    let s = crate::netns::in_netns_or_here(netns, || {
        let s = std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)))?;
        s.set_nonblocking(true)?;
        Ok(s)
    })?;
    let s = tokio::net::UdpSocket::from_std(s)?;
    s.connect(server).await?;
    s.send(raw).await?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(timeout, s.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
    Message::from_vec(&buf[..n]).map_err(std::io::Error::other)
}

/// One question over TCP (length-prefixed) from namespace `netns`: the answer.
pub async fn ask_tcp(
    netns: Option<&str>,
    server: SocketAddr,
    raw: &[u8],
    timeout: Duration,
) -> std::io::Result<Message> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = crate::netns::in_netns_or_here(netns, tokio::net::TcpSocket::new_v4)?;
    let talk = async {
        let mut stream = socket.connect(server).await?;
        let len = u16::try_from(raw.len()).map_err(std::io::Error::other)?;
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(raw);
        stream.write_all(&out).await?;
        let n = stream.read_u16().await?;
        let mut buf = vec![0u8; n as usize];
        stream.read_exact(&mut buf).await?;
        Message::from_vec(&buf).map_err(std::io::Error::other)
    };
    tokio::time::timeout(timeout, talk)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

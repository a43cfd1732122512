//! Connections from inside a pod that learn which pod answered: each one asks
//! `hostname` of the server (the built-in netexec server answers with its pod's
//! name, over TCP or UDP), from a new socket and so a new source port.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What one connection got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A pod answered with its name.
    Answered(String),
    Refused,
    /// The connection was made and then reset (its server went away mid-answer).
    Reset,
    Timeout,
    Unreachable,
    /// The name did not resolve: the DNS answer's rcode (`nxdomain`, `servfail`), or
    /// `dns-timeout` when no nameserver answered.
    NoName(String),
    Failed(String),
}

impl Outcome {
    /// `refused`, `reset`, `timeout`, `unreachable`, `nxdomain`, or the error's text.
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Answered(_) => None,
            Outcome::Refused => Some("refused".into()),
            Outcome::Reset => Some("reset".into()),
            Outcome::NoName(rcode) => Some(rcode.clone()),
            Outcome::Timeout => Some("timeout".into()),
            Outcome::Unreachable => Some("unreachable".into()),
            Outcome::Failed(e) => Some(e.clone()),
        }
    }
}

pub(super) fn from_error(e: std::io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::ConnectionRefused => Outcome::Refused,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => Outcome::Reset,
        ErrorKind::TimedOut => Outcome::Timeout,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Outcome::Unreachable,
        _ => Outcome::Failed(e.to_string()),
    }
}

/// One connection from namespace `netns` to `to`, from `source_port` or a new port,
/// asking `hostname`.
pub async fn once(
    netns: Option<&str>,
    to: SocketAddr,
    udp: bool,
    timeout: Duration,
    source_port: Option<u16>,
) -> Outcome {
    ask(netns, to, udp, timeout, source_port, "hostname").await
}

/// One connection that sends the line `request` (`hostname`, `clientip`): the
/// first line of the answer.
pub async fn ask(
    netns: Option<&str>,
    to: SocketAddr,
    udp: bool,
    timeout: Duration,
    source_port: Option<u16>,
    request: &str,
) -> Outcome {
    let from = SocketAddr::from(([0, 0, 0, 0], source_port.unwrap_or(0)));
    let line = format!("{request}\n");
    let began = std::time::Instant::now();
    let attempt = async {
        loop {
            let r = if udp {
                udp_once(netns, from, to, &line).await
            } else {
                tcp_once(netns, from, to, &line).await
            };
            // A fixed source port the last attempt closed can still be held for a
            // moment by a process forked meanwhile (until it execs): bind again, for
            // half a second, before saying the port is taken.
            match r {
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && from.port() != 0
                        && began.elapsed() < Duration::from_millis(500) =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                r => break r,
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(e)) => from_error(e),
        Ok(Ok(text)) => {
            let name = text.trim().to_string();
            if name.is_empty() {
                Outcome::Failed("the server closed without an answer".into())
            } else {
                Outcome::Answered(name)
            }
        }
    }
}

async fn tcp_once(
    netns: Option<&str>,
    from: SocketAddr,
    to: SocketAddr,
    line: &str,
) -> std::io::Result<String> {
    let socket = crate::netns::in_netns_or_here(netns, tokio::net::TcpSocket::new_v4)?;
    if from.port() != 0 {
        socket.set_reuseaddr(true)?;
        socket.bind(from)?;
    }
    let mut stream = socket.connect(to).await?;
    stream.write_all(line.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.contains(&b'\n') {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

async fn udp_once(
    netns: Option<&str>,
    from: SocketAddr,
    to: SocketAddr,
    line: &str,
) -> std::io::Result<String> {
    let s = crate::netns::in_netns_or_here(netns, || {
        let s = std::net::UdpSocket::bind(from)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })?;
    let s = tokio::net::UdpSocket::from_std(s)?;
    s.connect(to).await?;
    s.send(line.as_bytes()).await?;
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf[..n]).to_string())
}

//! The built-in server a container runs when it has no `command`: on each declared
//! port it answers like Kubernetes' `agnhost netexec`, so tests can tell which pod
//! served them and what client address it saw.
//!
//! - HTTP over TCP: `GET /` and `/hostname` give the pod's name, `/clientip` the
//!   client's `ip:port`, `/echo?msg=X` gives `X`, `/healthz` gives `ok`.
//! - Plain TCP or UDP: a line `hostname`, `clientip` or `echo X` is answered the same
//!   way; anything else, or nothing within a moment, gets the pod's name.
//!
//! Written by hand: a few lines of request parsing, where an HTTP crate would bring
//! far more than these answers need.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::netns;

/// The answer to a plain command (`hostname`, `clientip`, `echo X`).
pub fn answer(pod: &str, client: SocketAddr, request: &str) -> String {
    let req = request.trim();
    if req == "clientip" {
        client.to_string()
    } else if let Some(msg) = req.strip_prefix("echo ") {
        msg.to_string()
    } else {
        pod.to_string()
    }
}

/// The status and body for an HTTP request line such as `GET /clientip HTTP/1.1`.
pub fn http_answer(pod: &str, client: SocketAddr, request_line: &str) -> (u16, String) {
    let mut parts = request_line.split_whitespace();
    let _method = parts.next();
    let target = parts.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/" | "/hostname" => (200, pod.to_string()),
        "/clientip" => (200, client.to_string()),
        "/healthz" => (200, "ok".to_string()),
        "/echo" => {
            let msg = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("msg="))
                .unwrap_or_default();
            (200, percent_decode(msg))
        }
        _ => (404, format!("404 page not found: {path}")),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const METHODS: [&str; 6] = ["GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS "];

/// How long a kept-alive HTTP connection may sit idle, as a Go server's clients see it.
const IDLE: Duration = Duration::from_secs(120);

/// Reads one request. The first of a connection: what the client sends within a
/// moment (a client that sends nothing gets the name); a later one (HTTP keep-alive):
/// `None` when the client closes or stays idle.
async fn read_request(conn: &mut tokio::net::TcpStream, first: bool) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    loop {
        let wait = if first || got > 0 {
            Duration::from_millis(200)
        } else {
            IDLE
        };
        match tokio::time::timeout(wait, conn.read(&mut buf[got..])).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                got += n;
                let text = String::from_utf8_lossy(&buf[..got]);
                let http = METHODS.iter().any(|m| text.starts_with(m));
                if (http && text.contains("\r\n\r\n"))
                    || (!http && text.contains('\n'))
                    || got == buf.len()
                {
                    break;
                }
            }
            Ok(Err(_)) => return None,
        }
    }
    (first || got > 0).then(|| String::from_utf8_lossy(&buf[..got]).into_owned())
}

/// Whether an HTTP request keeps its connection open: HTTP/1.1 without
/// `Connection: close`, as Go's server (agnhost's) reads it.
fn keep_alive(request: &str) -> bool {
    let mut lines = request.lines();
    let http11 = lines.next().is_some_and(|l| l.ends_with("HTTP/1.1"));
    http11
        && !lines.any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
            })
        })
}

/// A connection: one line answered, or HTTP requests until the client closes (or
/// asks to).
async fn serve_tcp_conn(pod: String, mut conn: tokio::net::TcpStream, client: SocketAddr) {
    let mut first = true;
    while let Some(text) = read_request(&mut conn, first).await {
        first = false;
        let http = METHODS.iter().any(|m| text.starts_with(m));
        let keep = http && keep_alive(&text);
        let reply = if http {
            let line = text.lines().next().unwrap_or_default();
            let (status, body) = http_answer(&pod, client, line);
            let reason = if status == 200 { "OK" } else { "Not Found" };
            let body = if text.starts_with("HEAD ") {
                String::new()
            } else {
                body
            };
            let connection = if keep { "" } else { "Connection: close\r\n" };
            format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{connection}\r\n{body}",
                body.len()
            )
        } else {
            format!(
                "{}\n",
                answer(&pod, client, text.lines().next().unwrap_or_default())
            )
        };
        if conn.write_all(reply.as_bytes()).await.is_err() || !keep {
            break;
        }
    }
    let _ = conn.shutdown().await;
}

/// A container's server socket, bound in the pod's namespace: the kubelet binds it
/// before it reports the container started, so that a probe sent once the pod is
/// ready never finds the port closed.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Binds `port` (UDP when `udp`, else TCP) on every address inside the namespace
/// `netns_name`, non-blocking, for [`serve`] to take.
pub fn bind(netns_name: &str, port: u16, udp: bool) -> std::io::Result<Bound> {
    netns::run_in(netns_name, || {
        if udp {
            let s = std::net::UdpSocket::bind(("0.0.0.0", port))?;
            s.set_nonblocking(true)?;
            Ok(Bound::Udp(s))
        } else {
            let l = std::net::TcpListener::bind(("0.0.0.0", port))?;
            l.set_nonblocking(true)?;
            Ok(Bound::Tcp(l))
        }
    })
}

/// Serves `bound` as agnhost netexec does, as pod `pod`, until aborted.
pub async fn serve(pod: String, bound: Bound) -> std::io::Result<()> {
    match bound {
        Bound::Tcp(l) => serve_tcp(pod, l).await,
        Bound::Udp(s) => serve_udp(pod, s).await,
    }
}

/// Serves connections until dropped. The connections are this server's own: when
/// the container stops (the future is dropped), they close with it, as a process's
/// sockets do when it exits.
async fn serve_tcp(pod: String, std_listener: std::net::TcpListener) -> std::io::Result<()> {
    let listener = TcpListener::from_std(std_listener)?;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (conn, client) = accepted?;
                conns.spawn(serve_tcp_conn(pod.clone(), conn, client));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_udp(pod: String, std_socket: std::net::UdpSocket) -> std::io::Result<()> {
    let socket = UdpSocket::from_std(std_socket)?;
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = socket.recv_from(&mut buf).await?;
        let request = String::from_utf8_lossy(&buf[..n]);
        let reply = answer(&pod, client, request.lines().next().unwrap_or_default());
        let _ = socket
            .send_to(format!("{reply}\n").as_bytes(), client)
            .await;
    }
}

/// agnhost netexec's `--delay-shutdown`: how many seconds its servers keep serving
/// after SIGTERM (0, its default, ends them at once).
pub fn delay_shutdown(c: &k8s_openapi::api::core::v1::Container) -> std::time::Duration {
    let args: Vec<&str> = c.args.iter().flatten().map(String::as_str).collect();
    let seconds =
        args.iter()
            .enumerate()
            .find_map(|(i, a)| match a.strip_prefix("--delay-shutdown") {
                Some(rest) if rest.starts_with('=') => rest[1..].parse::<u64>().ok(),
                Some("") => args.get(i + 1)?.parse::<u64>().ok(),
                _ => None,
            });
    std::time::Duration::from_secs(seconds.unwrap_or(0).min(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_like_netexec() {
        let c: SocketAddr = "10.244.1.2:40000".parse().unwrap();
        assert_eq!(
            http_answer("web-1", c, "GET /hostname HTTP/1.1"),
            (200, "web-1".into())
        );
        assert_eq!(
            http_answer("web-1", c, "GET / HTTP/1.1"),
            (200, "web-1".into())
        );
        assert_eq!(
            http_answer("web-1", c, "GET /clientip HTTP/1.1"),
            (200, "10.244.1.2:40000".into())
        );
        assert_eq!(
            http_answer("web-1", c, "GET /echo?msg=hi%20there HTTP/1.1"),
            (200, "hi there".into())
        );
        assert_eq!(http_answer("web-1", c, "GET /nope HTTP/1.1").0, 404);
        assert_eq!(answer("web-1", c, "clientip\n"), "10.244.1.2:40000");
        assert_eq!(answer("web-1", c, "echo hello"), "hello");
        assert_eq!(answer("web-1", c, ""), "web-1");
    }

    #[test]
    fn delay_shutdown_is_read_from_the_args_as_agnhost_reads_it() {
        let c = |args: &[&str]| k8s_openapi::api::core::v1::Container {
            args: Some(args.iter().map(|a| a.to_string()).collect()),
            ..Default::default()
        };
        let secs = |args: &[&str]| super::delay_shutdown(&c(args)).as_secs();
        assert_eq!(secs(&["netexec", "--delay-shutdown=8"]), 8);
        assert_eq!(secs(&["netexec", "--delay-shutdown", "5"]), 5);
        assert_eq!(secs(&["netexec"]), 0);
        assert_eq!(secs(&["netexec", "--delay-shutdown=x"]), 0);
    }
}

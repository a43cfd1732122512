//! Names outside the cluster domain: sent to the upstream servers in order, over the
//! protocol they were asked in; SERVFAIL when none answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_server::net::xfer::Protocol;

use super::tests::{ask_dns, ask_udp, cfg, lines, query};
use super::Dns;

/// An upstream server on 127.0.0.1 (UDP and TCP on the same port) that answers every
/// A question with `answer`, and counts the questions.
async fn upstream(answer: std::net::Ipv4Addr) -> (SocketAddr, Arc<Mutex<usize>>) {
    stub(move |q: &Message| {
        let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_available = true;
        let name = q.queries[0].name().clone();
        m.add_query(q.queries[0].clone());
        m.add_answer(Record::from_rdata(name, 60, RData::A(answer.into())));
        m
    })
    .await
}

/// An upstream server on 127.0.0.1 (UDP and TCP on the same port) that answers every
/// question with what `reply` makes of it, and counts the questions.
pub(super) async fn stub<F>(reply: F) -> (SocketAddr, Arc<Mutex<usize>>)
where
    F: Fn(&Message) -> Message + Send + Sync + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let asked = Arc::new(Mutex::new(0));
    let reply =
        Arc::new(move |raw: &[u8]| reply(&Message::from_vec(raw).unwrap()).to_vec().unwrap());
    let count = asked.clone();
    let answer = reply.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            *count.lock().unwrap() += 1;
            udp.send_to(&answer(&buf[..n]), from).await.unwrap();
        }
    });
    let count = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = tcp.accept().await {
            *count.lock().unwrap() += 1;
            let n = conn.read_u16().await.unwrap();
            let mut buf = vec![0u8; n as usize];
            conn.read_exact(&mut buf).await.unwrap();
            let out = reply(&buf);
            conn.write_u16(out.len() as u16).await.unwrap();
            conn.write_all(&out).await.unwrap();
        }
    });
    (addr, asked)
}

/// A local port where nothing listens: UDP gets "connection refused" at once.
fn dead_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

#[tokio::test]
async fn outside_names_go_to_the_upstream_servers_in_order() {
    let (live, asked) = upstream("192.0.2.7".parse().unwrap()).await;
    let dns = Dns::new(&cfg(), vec![dead_port(), live]);
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let m = ask_dns(
            &dns,
            query("www.example.com.", RecordType::A),
            protocol,
            512,
        )
        .await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{protocol}"
        );
        assert_eq!(m.metadata.id, 7);
        assert!(m.metadata.recursion_available);
        assert!(!m.metadata.authoritative, "not our name");
        assert_eq!(lines(&m.answers), ["www.example.com. 60 A 192.0.2.7"]);
    }
    assert_eq!(*asked.lock().unwrap(), 2, "once over UDP, once over TCP");
    // Cluster names are still answered here, not upstream.
    let m = ask_udp(&dns, "web.default.svc.cluster.local.", RecordType::A).await;
    assert!(m.metadata.authoritative);
    assert_eq!(*asked.lock().unwrap(), 2);
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_gives_servfail() {
    let dns = Dns::new(&cfg(), vec![dead_port()]);
    let m = ask_udp(&dns, "www.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty());
}

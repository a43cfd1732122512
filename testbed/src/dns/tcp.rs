//! DNS over TCP (RFC 7766), served by us rather than by hickory-server's listener,
//! which accepts without a bound and, out of descriptors, retries `accept()` in a
//! tight loop. Here a server holds at most [`CONNECTIONS`] connections (when all are
//! taken, the one idle longest makes room for the next), closes a connection idle for
//! [`IDLE`], and backs off when `accept()` fails. Each message is answered by the same
//! [`Handler`] as over UDP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::MessageType;
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::handler::Handler;

/// Connections one DNS server holds at once. CoreDNS has no such bound, but runs in a
/// pod of its own; here every pod's connections share the testbed's process.
pub const CONNECTIONS: usize = 1024;
/// A connection that sends no complete question for this long is closed (CoreDNS's
/// default idle timeout for TCP is 10 s).
pub const IDLE: Duration = Duration::from_secs(10);

/// Serves DNS over TCP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, handler: Handler) {
    serve_with(listener, handler, CONNECTIONS).await
}

/// The open connections, oldest first, each with the switch that closes it while it
/// waits for its next question.
#[derive(Default)]
struct Open {
    next: u64,
    idle: std::collections::BTreeMap<u64, tokio::sync::oneshot::Sender<()>>,
}

/// [`serve`] with at most `cap` connections. When all are taken, the one that has
/// waited longest for its next question is closed to let the new one in (RFC 7766
/// 6.2.2: a server under pressure closes idle connections, and clients reconnect), so
/// a pod holding many idle connections cannot lock out the others. A connection in the
/// middle of a question or an answer is never closed for a newcomer.
async fn serve_with(listener: TcpListener, handler: Handler, cap: usize) {
    let permits = Arc::new(tokio::sync::Semaphore::new(cap));
    let open = Arc::new(Mutex::new(Open::default()));
    let mut backoff = Duration::from_millis(5);
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => {
                backoff = Duration::from_millis(5);
                c
            }
            Err(e) => {
                tracing::warn!("dns: accept: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let oldest = open.lock().expect("open lock").idle.pop_first();
                // Its task ends and gives its permit back at once.
                let told = oldest.is_some_and(|(_, close)| close.send(()).is_ok());
                let freed = if told {
                    let wait = permits.clone().acquire_owned();
                    tokio::time::timeout(Duration::from_secs(1), wait)
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                match freed {
                    Some(p) => p,
                    None => {
                        // Every connection is busy: closing this one at once tells the
                        // client to try again later.
                        drop(conn);
                        continue;
                    }
                }
            }
        };
        let id = {
            let mut o = open.lock().expect("open lock");
            o.next += 1;
            o.next
        };
        let handler = handler.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let _ = connection(conn, peer, &handler, id, &open).await;
            open.lock().expect("open lock").idle.remove(&id);
            drop(permit);
        });
    }
}

async fn connection(
    mut conn: TcpStream,
    peer: SocketAddr,
    handler: &Handler,
    id: u64,
    open: &Mutex<Open>,
) -> std::io::Result<()> {
    loop {
        // Waiting for a question: this connection may be closed for a newcomer.
        let (close, closed) = tokio::sync::oneshot::channel();
        open.lock().expect("open lock").idle.insert(id, close);
        let first = tokio::select! {
            _ = closed => return Ok(()),
            r = tokio::time::timeout(IDLE, conn.read_u16()) => r,
        };
        // Busy until its answer is sent.
        if open.lock().expect("open lock").idle.remove(&id).is_none() {
            // Chosen for closing just as its question began.
            return Ok(());
        }
        let len = match first {
            Ok(Ok(len)) => len as usize,
            // Idle, or the client went away.
            _ => return Ok(()),
        };
        let question = tokio::time::timeout(IDLE, async {
            let mut buf = vec![0u8; len];
            conn.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        })
        .await;
        let question = match question {
            Ok(Ok(q)) => q,
            _ => return Ok(()),
        };
        if let Some(answer) = answer(handler, question, peer).await {
            let mut out = Vec::with_capacity(answer.len() + 2);
            out.extend_from_slice(&(answer.len() as u16).to_be_bytes());
            out.extend_from_slice(&answer);
            tokio::time::timeout(IDLE, conn.write_all(&out))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        }
    }
}

/// The answer to one message as bytes; `None` for no answer (shorter than a header,
/// or a response), FORMERR for a header that the rest of the message breaks, as
/// hickory-server answers over UDP.
pub async fn answer(handler: &Handler, question: Vec<u8>, peer: SocketAddr) -> Option<Vec<u8>> {
    if question.len() < 12 {
        return None;
    }
    let header = [question[0], question[1], question[2]];
    let request = match Request::from_bytes(question, peer, Protocol::Tcp) {
        Ok(r) => r,
        Err(_) => {
            // id, QR + the question's opcode and RD, FORMERR, no records.
            let flags = 0x80 | (header[2] & 0x79);
            return Some(vec![header[0], header[1], flags, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return None;
    }
    let captured = Capture::default();
    handler
        .handle_request::<_, TokioTime>(&request, captured.clone())
        .await;
    let bytes = std::mem::take(&mut *captured.0.lock().expect("capture lock"));
    (!bytes.is_empty()).then_some(bytes)
}

/// Keeps the encoded answer for the connection to send.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut out = Vec::new();
        let mut enc = BinEncoder::new(&mut out);
        enc.set_max_size(u16::MAX);
        let info = response.destructive_emit(&mut enc)?;
        *self.0.lock().expect("capture lock") = out;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RecordType;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::dns::tests::{cfg, query, zone};
    use crate::dns::Dns;

    async fn ask(conn: &mut TcpStream) -> std::io::Result<Message> {
        let q = query("web.default.svc.cluster.local", RecordType::A)
            .to_vec()
            .unwrap();
        conn.write_all(&(q.len() as u16).to_be_bytes()).await?;
        conn.write_all(&q).await?;
        let len = conn.read_u16().await? as usize;
        let mut buf = vec![0u8; len];
        conn.read_exact(&mut buf).await?;
        Ok(Message::from_vec(&buf).unwrap())
    }

    /// The flake this fixes: 2,000 idle connections spread over two servers of 1,024
    /// left one full now and then, and a `dig +tcp` from another pod was reset.
    #[tokio::test]
    async fn when_full_the_connection_idle_longest_makes_room_for_a_new_one() {
        let dns = Dns::new(&cfg(), Vec::new());
        dns.zone.store(Arc::new(zone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let server = tokio::spawn(super::serve_with(listener, dns.handler(), 3));
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut c = TcpStream::connect(at).await.unwrap();
            // Each is served (so the server has taken it) and then left idle.
            assert_eq!(
                ask(&mut c).await.unwrap().metadata.response_code,
                ResponseCode::NoError
            );
            held.push(c);
        }
        // A fourth client is answered, on its first connection.
        let mut late = TcpStream::connect(at).await.unwrap();
        let a = ask(&mut late).await.expect("the newcomer is answered");
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        // The oldest was closed for it; the two younger ones still answer.
        let mut byte = [0u8; 1];
        assert_eq!(
            held[0].read(&mut byte).await.unwrap(),
            0,
            "the oldest is closed"
        );
        for c in &mut held[1..] {
            assert_eq!(
                ask(c).await.unwrap().metadata.response_code,
                ResponseCode::NoError
            );
        }
        server.abort();
    }
}

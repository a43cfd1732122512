//! DNS over TCP (RFC 7766), served by us rather than by hickory-server's listener,
//! which accepts without a bound and, out of descriptors, retries `accept()` in a
//! tight loop. Here a server holds at most [`CONNECTIONS`] connections (the next ones
//! are closed at once), closes a connection idle for [`IDLE`], and backs off when
//! `accept()` fails. Each message is answered by the same [`Handler`] as over UDP.

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
    let open = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
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
        let Ok(permit) = open.clone().try_acquire_owned() else {
            // Full: closing it at once tells the client to try again later.
            drop(conn);
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = connection(conn, peer, &handler).await;
            drop(permit);
        });
    }
}

async fn connection(
    mut conn: TcpStream,
    peer: SocketAddr,
    handler: &Handler,
) -> std::io::Result<()> {
    loop {
        let question = tokio::time::timeout(IDLE, async {
            let len = conn.read_u16().await? as usize;
            let mut buf = vec![0u8; len];
            conn.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        })
        .await;
        let question = match question {
            Ok(Ok(q)) => q,
            // Idle, or the client went away.
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

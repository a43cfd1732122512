//! The request handler hickory-server calls for every query: it reads the current
//! [`Zone`] snapshot (a lock-free load; updates swap in a new one) and answers from it,
//! or forwards names outside the cluster to the upstream server, or refuses them when
//! there is none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::records::{Outcome, Zone};

/// The largest UDP answer we send to a client that asks for more (RFC 9715's advice);
/// larger answers are truncated and the client retries over TCP.
const MAX_UDP_PAYLOAD: u16 = 1232;

/// How long the upstream server gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Handler {
    zone: Arc<ArcSwap<Zone>>,
    upstream: Option<SocketAddr>,
}

impl Handler {
    pub fn new(zone: Arc<ArcSwap<Zone>>, upstream: Option<SocketAddr>) -> Self {
        Handler { zone, upstream }
    }

    /// Asks the upstream server the same question (the client's own bytes, over
    /// UDP); `None` when it does not answer in time.
    async fn forward(&self, upstream: SocketAddr, raw: &[u8]) -> Option<Message> {
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
        socket.send_to(raw, upstream).await.ok()?;
        let mut buf = vec![0u8; 65535];
        let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Message::from_vec(&buf[..n]).ok()
    }
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = hickory_proto::op::Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut builder = MessageResponseBuilder::from_message_request(request);
        let edns = request.edns.as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(e.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            ours
        });
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let mut metadata = hickory_proto::op::Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = self.upstream.is_some();
        let refuse = |code: ResponseCode| {
            let mut m = metadata;
            m.response_code = code;
            m
        };
        let queries = request.queries.queries();
        let sent = if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            let b = builder.build_no_records(refuse(ResponseCode::NotImp));
            response.send_response(b).await
        } else if queries.len() != 1 {
            let b = builder.build_no_records(refuse(ResponseCode::FormErr));
            response.send_response(b).await
        } else if queries[0].query_class() != DNSClass::IN {
            let b = builder.build_no_records(refuse(ResponseCode::Refused));
            response.send_response(b).await
        } else {
            let q = &queries[0];
            let zone = self.zone.load();
            match zone.lookup(q.name(), q.query_type()) {
                Outcome::Answer {
                    answers,
                    additionals,
                } => {
                    metadata.authoritative = true;
                    let none: [&Record; 0] = [];
                    let b = builder.build(metadata, answers.iter(), none, none, additionals.iter());
                    response.send_response(b).await
                }
                Outcome::NoData { soa } => {
                    metadata.authoritative = true;
                    let none: [&Record; 0] = [];
                    let b = builder.build(metadata, none, none, [&soa], none);
                    response.send_response(b).await
                }
                Outcome::NxDomain { soa } => {
                    metadata.authoritative = true;
                    metadata.response_code = ResponseCode::NXDomain;
                    let none: [&Record; 0] = [];
                    let b = builder.build(metadata, none, none, [&soa], none);
                    response.send_response(b).await
                }
                Outcome::NotOurs => match self.upstream {
                    None => {
                        // No upstream (these machines have no internet): say so at once.
                        let b = builder.build_no_records(refuse(ResponseCode::Refused));
                        response.send_response(b).await
                    }
                    Some(up) => match self.forward(up, request.as_slice()).await {
                        Some(m) => {
                            let mut meta = metadata;
                            meta.response_code = m.metadata.response_code;
                            meta.recursion_available = m.metadata.recursion_available;
                            let b = builder.build(
                                meta,
                                m.answers.iter(),
                                m.authorities.iter(),
                                [],
                                m.additionals.iter(),
                            );
                            response.send_response(b).await
                        }
                        None => {
                            let b = builder.build_no_records(refuse(ResponseCode::ServFail));
                            response.send_response(b).await
                        }
                    },
                },
            }
        };
        sent.unwrap_or_else(|e| {
            tracing::debug!("dns: cannot send an answer: {e}");
            failed(request, ResponseCode::ServFail)
        })
    }
}

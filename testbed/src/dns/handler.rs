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
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::client::{ask_tcp, ask_udp};
use super::records::{Outcome, Zone};

/// The largest UDP answer we send to a client that asks for more (RFC 9715's advice);
/// larger answers are truncated and the client retries over TCP.
const MAX_UDP_PAYLOAD: u16 = 1232;

/// How long the upstream server gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Handler {
    zone: Arc<ArcSwap<Zone>>,
    upstream: Arc<[SocketAddr]>,
    /// The namespace the upstream servers are asked from (the DNS pod's); `None` is
    /// the calling thread's own.
    netns: Option<Arc<str>>,
}

impl Handler {
    pub fn new(zone: Arc<ArcSwap<Zone>>, upstream: Vec<SocketAddr>) -> Self {
        Handler {
            zone,
            upstream: upstream.into(),
            netns: None,
        }
    }

    /// The same handler, asking upstream servers from inside namespace `name`.
    pub fn in_netns(self, name: &str) -> Self {
        Handler {
            netns: Some(name.into()),
            ..self
        }
    }

    /// Asks the upstream servers, in order, the same question (the client's own
    /// bytes, over the client's protocol); `None` when none answers in time.
    async fn forward(&self, raw: &[u8], tcp: bool) -> Option<Message> {
        let id = Message::from_vec(raw).ok()?.metadata.id;
        let netns = self.netns.as_deref();
        for &up in self.upstream.iter() {
            let asked = if tcp {
                ask_tcp(netns, up, raw, UPSTREAM_TIMEOUT).await
            } else {
                ask_udp(netns, up, raw, UPSTREAM_TIMEOUT).await
            };
            match asked {
                Ok(m)
                    if m.metadata.id == id && m.metadata.message_type == MessageType::Response =>
                {
                    return Some(m)
                }
                Ok(_) => tracing::debug!("dns: upstream {up} answered another question"),
                Err(e) => tracing::debug!("dns: upstream {up}: {e}"),
            }
        }
        None
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
    // Long because it is the request's path through CoreDNS's checks in their order
    // (opcode, class, EDNS, the zone or the upstream, truncation), which is the behaviour
    // under test.
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
        metadata.recursion_available = !self.upstream.is_empty();
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
                Outcome::NotOurs if self.upstream.is_empty() => {
                    // No upstream (these machines have no internet): say so at once.
                    let b = builder.build_no_records(refuse(ResponseCode::Refused));
                    response.send_response(b).await
                }
                Outcome::NotOurs => {
                    let tcp = request.protocol() == Protocol::Tcp;
                    match self.forward(request.as_slice(), tcp).await {
                        Some(m) => {
                            let mut meta = metadata;
                            meta.response_code = m.metadata.response_code;
                            meta.recursion_available = m.metadata.recursion_available;
                            meta.authentic_data = m.metadata.authentic_data;
                            // Over UDP the builder truncates to the client's size itself;
                            // an upstream that truncated is passed on as truncated.
                            meta.truncation = m.metadata.truncation;
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
                    }
                }
            }
        };
        sent.unwrap_or_else(|e| {
            tracing::debug!("dns: cannot send an answer: {e}");
            failed(request, ResponseCode::ServFail)
        })
    }
}

//! The request handler hickory-server calls for every query: it reads the current
//! [`Zone`] snapshot (a lock-free load; updates swap in a new one) and answers from it,
//! or forwards names outside the cluster to the upstream server, or refuses them when
//! there is none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::Query;
use hickory_proto::op::{Edns, Header, HeaderCounts, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::answer::{Outcome, Part};
use super::client::{ask_tcp, ask_udp};
use super::zone::Zone;

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

    /// The upstream servers' answer to `name` `qtype`, asked as a recursive question
    /// of our own.
    async fn resolve(&self, name: &Name, qtype: RecordType, tcp: bool) -> Option<Message> {
        let mut q = Message::new(question_id(), MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(name.clone(), qtype));
        self.forward(&q.to_vec().ok()?, tcp).await
    }

    /// The answer section with every CNAME chain that leaves the cluster completed by
    /// the upstream servers (without them, the CNAME alone), and whether one of them
    /// truncated its answer.
    async fn complete(&self, parts: Vec<Part>, tcp: bool) -> (Vec<Record>, bool) {
        let mut out = Vec::with_capacity(parts.len());
        let mut truncated = false;
        for part in parts {
            match part {
                Part::Record(r) => out.push(r),
                Part::Upstream { .. } if self.upstream.is_empty() => {}
                Part::Upstream { name, qtype } => {
                    if let Some(m) = self.resolve(&name, qtype, tcp).await {
                        truncated |= m.metadata.truncation;
                        out.extend(m.answers);
                    }
                }
            }
        }
        (out, truncated)
    }
}

/// An id for a question of our own: hard to guess from outside (the clock's
/// nanoseconds) and different for questions asked together (a counter).
fn question_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    (nanos as u16) ^ NEXT.fetch_add(0x9e37, Ordering::Relaxed)
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
        // Recursion is not offered (CoreDNS's answers have no `ra`; `dig` warns so);
        // forwarded answers carry the upstream's flag.
        let mut metadata = hickory_proto::op::Metadata::response_from_request(&request.metadata);
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
            let q = queries[0].original();
            let zone = self.zone.load();
            match zone.lookup(q.name(), q.query_type()) {
                Outcome::Reply(reply) => {
                    metadata.authoritative = true;
                    metadata.response_code = reply.rcode;
                    let tcp = request.protocol() == Protocol::Tcp;
                    let (answers, truncated) = self.complete(reply.answers, tcp).await;
                    metadata.truncation = truncated;
                    let b = builder.build(
                        metadata,
                        answers.iter(),
                        [],
                        reply.authority.iter(),
                        reply.additionals.iter(),
                    );
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

//! Traffic over time from inside a pod: requests at a steady rate, each a new
//! connection (resolving the name again each time, as a client without a cache does)
//! or all over one long HTTP/1.1 connection, each recorded with when it started and
//! what it got, until stopped.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect::{ask, Outcome};
use super::dns::{resolve, Resolv};

/// At most this many requests wait for an answer at once; the schedule waits for one
/// to end rather than pile up more.
const IN_FLIGHT: usize = 256;

/// Where the traffic goes.
#[derive(Debug, Clone)]
pub enum Target {
    Address(SocketAddr),
    /// Resolved through the pod's resolv.conf for each new connection.
    Name {
        name: String,
        port: u16,
        resolv: Resolv,
    },
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The pod's network namespace.
    pub netns: String,
    pub target: Target,
    pub udp: bool,
    /// Requests a second.
    pub rate: u32,
    /// How long each waits for its answer.
    pub timeout: Duration,
    /// All requests over one HTTP/1.1 connection, opened again after it fails.
    pub long: bool,
}

/// One request: when it started (since the traffic began) and what it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub at: Duration,
    pub outcome: Outcome,
}

/// Traffic under way.
pub struct Running {
    pub started: Instant,
    records: Arc<Mutex<Vec<Record>>>,
    /// Tells the sender to stop starting requests.
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("started", &self.started)
            .finish()
    }
}

impl Drop for Running {
    /// Dropped unstopped: the sender and every request in flight end at once.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    /// Stops sending, waits for the requests in flight (their timeout at most, then
    /// they are cut off), and gives every record in the order they started.
    pub async fn stop(mut self, timeout: Duration) -> Vec<Record> {
        let _ = self.stop.send(true);
        let grace = timeout + Duration::from_millis(200);
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
        let mut out = self.records.lock().expect("records").clone();
        out.sort_by_key(|r| r.at);
        out
    }
}

/// Starts sending as `spec` says.
pub fn start(spec: Spec) -> Running {
    let records = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = if spec.long {
        tokio::spawn(long(spec, records.clone(), started, stopped))
    } else {
        tokio::spawn(each_new(spec, records.clone(), started, stopped))
    };
    Running {
        started,
        records,
        stop,
        task,
    }
}

/// The next tick, or None once told to stop.
async fn next_tick(
    tick: &mut tokio::time::Interval,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<()> {
    tokio::select! {
        _ = stopped.wait_for(|s| *s) => None,
        _ = tick.tick() => Some(()),
    }
}

fn period(rate: u32) -> Duration {
    Duration::from_secs_f64(1.0 / f64::from(rate.max(1)))
}

/// The address to use now: the name resolved again, or why it did not resolve.
async fn address(spec: &Spec) -> Result<SocketAddr, Outcome> {
    match &spec.target {
        Target::Address(a) => Ok(*a),
        Target::Name { name, port, resolv } => {
            let answer = tokio::time::timeout(
                spec.timeout,
                resolve(Some(&spec.netns), resolv, name, RecordType::A, false),
            )
            .await;
            match answer {
                Err(_) | Ok(Err(_)) => Err(Outcome::NoName("dns-timeout".into())),
                Ok(Ok(a)) => a
                    .data
                    .iter()
                    .find_map(|d| d.parse::<Ipv4Addr>().ok())
                    .map(|ip| SocketAddr::from((ip, *port)))
                    .ok_or_else(|| Outcome::NoName(a.rcode.to_ascii_lowercase())),
            }
        }
    }
}

/// A new connection (or datagram) for each request, at most [`IN_FLIGHT`] at once;
/// when told to stop, it waits for the ones in flight (cut off if it is aborted).
async fn each_new(
    spec: Spec,
    records: Arc<Mutex<Vec<Record>>>,
    started: Instant,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let spec = Arc::new(spec);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(period(spec.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while next_tick(&mut tick, &mut stopped).await.is_some() {
        while in_flight.try_join_next().is_some() {}
        // As many as it keeps open: the schedule waits for one to end.
        while in_flight.len() >= IN_FLIGHT && in_flight.join_next().await.is_some() {}
        let (spec, records) = (spec.clone(), records.clone());
        let at = started.elapsed();
        in_flight.spawn(async move {
            let outcome = match address(&spec).await {
                Ok(to) => {
                    ask(
                        Some(&spec.netns),
                        to,
                        spec.udp,
                        spec.timeout,
                        None,
                        "hostname",
                    )
                    .await
                }
                Err(o) => o,
            };
            records
                .lock()
                .expect("records")
                .push(Record { at, outcome });
        });
    }
    while in_flight.join_next().await.is_some() {}
}

/// Every request over one HTTP/1.1 connection, kept alive; after a failure the next
/// request opens a new one.
async fn long(
    spec: Spec,
    records: Arc<Mutex<Vec<Record>>>,
    started: Instant,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(period(spec.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<tokio::net::TcpStream> = None;
    while next_tick(&mut tick, &mut stopped).await.is_some() {
        let at = started.elapsed();
        let outcome = match tokio::time::timeout(spec.timeout, request(&spec, &mut conn)).await {
            Ok(Ok(name)) => Outcome::Answered(name),
            Ok(Err(o)) => {
                conn = None;
                o
            }
            Err(_) => {
                conn = None;
                Outcome::Timeout
            }
        };
        records
            .lock()
            .expect("records")
            .push(Record { at, outcome });
    }
}

/// `GET /hostname` over the open connection, or a new one.
async fn request(spec: &Spec, conn: &mut Option<tokio::net::TcpStream>) -> Result<String, Outcome> {
    let io = |e: std::io::Error| super::connect::from_error(e);
    if conn.is_none() {
        let to = address(spec).await?;
        let socket =
            crate::netns::in_netns_or_here(Some(&spec.netns), tokio::net::TcpSocket::new_v4)
                .map_err(io)?;
        *conn = Some(socket.connect(to).await.map_err(io)?);
    }
    let c = conn.as_mut().expect("a connection");
    c.write_all(b"GET /hostname HTTP/1.1\r\nHost: testbed\r\n\r\n")
        .await
        .map_err(io)?;
    read_response(c).await
}

/// One HTTP response's body (by its Content-Length).
async fn read_response(c: &mut tokio::net::TcpStream) -> Result<String, Outcome> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = c
            .read(&mut chunk)
            .await
            .map_err(super::connect::from_error)?;
        if n == 0 {
            return Err(Outcome::Reset);
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return Ok(body[..len].trim().to_string());
            }
        }
        if buf.len() > 64 * 1024 {
            return Err(Outcome::Failed("an answer over 64 KiB".into()));
        }
    }
}

/// Requests grouped by when they started: `interval` wide, from the start.
pub fn by_interval(records: &[Record], interval: Duration) -> Vec<Vec<&Record>> {
    let mut out: Vec<Vec<&Record>> = Vec::new();
    for r in records {
        let i = (r.at.as_secs_f64() / interval.as_secs_f64()) as usize;
        if out.len() <= i {
            out.resize_with(i + 1, Vec::new);
        }
        out[i].push(r);
    }
    out
}

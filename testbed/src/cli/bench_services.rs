//! `testbed bench services`: kube-proxy's costs in a cluster with many Services.
//!
//! Builds a cluster in this process with `endpoints` serving pods and its control
//! plane, creates `services` Services that all select those pods, then measures per
//! node: a full sync (rendering from scratch and one `iptables-restore`) next to a
//! raw `iptables-restore` of the same text; the time from one endpoint's change in
//! the API to the rules of every node; and the time from a Service's creation to its
//! rules on every node.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::bench::{median, ms};
use crate::api::{Key, Kind, Object};
use crate::cluster::{Cluster, Options};
use crate::control::ControlPlane;
use crate::lifecycle::Testbed;
use crate::proxy::node::run_in_netns;
use crate::proxy::render;
use crate::proxy::sync::Proxier;
use crate::proxy::tracker::service_ports;
use crate::proxy::Mode;
use crate::scenario::{ClusterSpec, PodDecl};

fn service(name: &str, app: &str) -> Object {
    Object::Service(Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
            ports: Some(vec![ServicePort {
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// The modes `--mode` names: one, or `both`.
pub(super) fn modes(name: &str) -> Result<Vec<Mode>> {
    if name == "both" {
        return Ok(vec![Mode::Iptables, Mode::Nftables]);
    }
    Mode::parse(name)
        .map(|m| vec![m])
        .map_err(|e| anyhow::anyhow!("--mode: {e}, or both"))
}

pub(super) fn run(
    nodes: usize,
    services: usize,
    endpoints: usize,
    runs: usize,
    full_runs: usize,
    modes: &[Mode],
) -> Result<ExitCode> {
    if nodes == 0 || endpoints == 0 || runs == 0 {
        bail!("--nodes, --endpoints and --runs must be at least 1");
    }
    let pod_spec = PodSpec {
        containers: vec![Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut pods: Vec<PodDecl> = (0..endpoints)
        .map(|i| PodDecl {
            labels: BTreeMap::from([("app".to_string(), "bench".to_string())]),
            spec: Some(pod_spec.clone()),
            ..PodDecl::new(format!("bench-{i}"))
        })
        .collect();
    // `target` has two endpoints; target-0's readiness is flipped, so one endpoint
    // comes and goes while the Service keeps the other.
    for i in 0..2 {
        pods.push(PodDecl {
            labels: BTreeMap::from([("app".to_string(), "target".to_string())]),
            spec: Some(pod_spec.clone()),
            ..PodDecl::new(format!("target-{i}"))
        });
    }
    let rt = super::bench::runtime()?;
    let name = format!("bench-svc-{}", std::process::id());
    for mode in modes {
        let mut scenario = super::bench::scenario("bench-services", nodes, pods.clone());
        scenario.cluster.proxy_mode = *mode;
        rt.block_on(async {
            let cluster =
                Cluster::start(&name, &scenario, Options::bare()?, std::future::pending())
                    .await
                    .map_err(|f| f.error)
                    .context("bring the cluster up")?;
            let sizes = Sizes {
                services,
                endpoints,
                runs,
                full_runs,
            };
            let result = measure(cluster.control(), cluster.testbed(), *mode, sizes).await;
            cluster.shutdown().await;
            result
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn settle(cp: &ControlPlane) -> Result<()> {
    // Quiet first: the controllers answer the last write, then the proxies catch up.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rev = *cp.store.subscribe().borrow();
        if rev == last {
            break;
        }
        last = rev;
    }
    if !cp.wait_synced(last, Duration::from_secs(3600)).await {
        bail!(
            "the nodes did not catch up with the store: {:?}",
            cp.node_status()
                .iter()
                .map(|n| n.last_error.clone())
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// How big a run is.
#[derive(Clone, Copy)]
struct Sizes {
    services: usize,
    endpoints: usize,
    runs: usize,
    full_runs: usize,
}

// Long because it is one benchmark run top to bottom (set-up, the raw tool, our partial and
// full syncs, the figures), which reads best in order.
async fn measure(cp: &ControlPlane, tb: &Testbed, mode: Mode, sizes: Sizes) -> Result<()> {
    let Sizes {
        services,
        endpoints,
        runs,
        full_runs,
    } = sizes;
    println!(
        "bench services, {} mode: {} nodes, {services} Services x {endpoints} endpoints, {runs} runs (testbed {})",
        mode.name(),
        tb.plan().nodes.len(),
        tb.name()
    );
    // One request: every node then makes one full sync of it (iptables-nft 1.8.9
    // takes time quadratic in the number of chains for it, a minute at 10,000).
    // With more than 1,000 Services, the first 1,000 first: the first-packet latency
    // is measured there too.
    let start = Instant::now();
    let first = if services > LATENCY_AT {
        LATENCY_AT
    } else {
        services
    };
    create_services(cp, 0..first, true).await?;
    let mut latencies = vec![(first, connect_latency(cp, tb).await?)];
    if services > first {
        create_services(cp, first..services, false).await?;
        latencies.push((services, connect_latency(cp, tb).await?));
    }
    println!("created and synced everywhere in {}", ms(start.elapsed()));
    println!(
        "first-packet latency, {LATENCY_CONNECTS} fresh TCP connections one after another from pod bench-0 to a ClusterIP (connect, SYN to SYN-ACK):"
    );
    let (_, (base50, base99)) = latencies[0];
    for (n, (p50, p99)) in &latencies {
        println!(
            "  at {n:>6} Services: p50 {:.3} ms, p99 {:.3} ms ({:+.1}% / {:+.1}% against {first})",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            (p50.as_secs_f64() / base50.as_secs_f64() - 1.0) * 100.0,
            (p99.as_secs_f64() / base99.as_secs_f64() - 1.0) * 100.0,
        );
    }

    // 1. Full sync against the raw tool applying the same text, per node.
    full_syncs(cp, tb, mode, full_runs).await?;

    // 2. One endpoint changes (target-0 becomes not ready, then ready again, as its
    // kubelet would report): from the write in the API to every node's rules.
    let mut per_node: Vec<Vec<Sample>> = vec![Vec::new(); tb.plan().nodes.len()];
    let target = Key::new(Kind::Pod, "default", "target-0");
    // One watch for every run: starting one copies every slice in the store, and
    // freeing that copy would be timed in the next write.
    let (initial, mut events) = cp.store.watch(&[Kind::EndpointSlice], None);
    drop(initial);
    for i in 0..runs * 2 {
        let ready = i % 2 == 1;
        while events.try_recv().is_ok() {}
        let t = Instant::now();
        cp.store.write(|tx| {
            if let Some(Object::Pod(mut p)) = tx.get(&target).cloned() {
                for c in p
                    .status
                    .iter_mut()
                    .flat_map(|s| s.conditions.iter_mut().flatten())
                {
                    if c.type_ == "Ready" {
                        c.status = if ready { "True" } else { "False" }.into();
                    }
                }
                tx.put(Object::Pod(p));
            }
        });
        let rev = loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await?
                .context("store closed")?;
            if ev.object.name().starts_with("target-") {
                break ev.object.resource_version();
            }
        };
        let slice = t.elapsed();
        wait_each(cp, rev, t, slice, &mut per_node).await?;
    }
    println!(
        "one endpoint change, API write to rules (median / max of {}):",
        runs * 2
    );
    report(tb, &mut per_node);

    // 3. A new Service: from the API's answer to its rules, with endpoints, everywhere.
    let mut per_node: Vec<Vec<Sample>> = vec![Vec::new(); tb.plan().nodes.len()];
    for i in 0..runs {
        let name = format!("new-{i}");
        while events.try_recv().is_ok() {}
        let t = Instant::now();
        cp.api
            .apply(vec![service(&name, "bench")])
            .map_err(|p| anyhow::anyhow!("{}", p[0]))?;
        let rev = loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await?
                .context("store closed")?;
            if ev.object.name().starts_with(&format!("{name}-")) {
                break ev.object.resource_version();
            }
        };
        let slice = t.elapsed();
        wait_each(cp, rev, t, slice, &mut per_node).await?;
    }
    println!("Service create to rules on every node (median / max of {runs}):");
    report(tb, &mut per_node);
    Ok(())
}

/// The number of Services the first-packet latency is compared at.
const LATENCY_AT: usize = 1000;
/// Connections per first-packet latency measure.
const LATENCY_CONNECTS: usize = 3000;

/// Creates Services `svc-N` for N in `range` (and `target`, with `target`) in one
/// request, and waits for every node to sync them.
async fn create_services(
    cp: &ControlPlane,
    range: std::ops::Range<usize>,
    target: bool,
) -> Result<()> {
    let mut batch: Vec<Object> = range
        .map(|i| service(&format!("svc-{i}"), "bench"))
        .collect();
    if target {
        batch.push(service("target", "target"));
    }
    cp.api
        .apply(batch)
        .map_err(|p| anyhow::anyhow!("{}", p[0]))?;
    settle(cp).await
}

/// First-packet latency: fresh TCP connections from pod `bench-0` to the ClusterIP
/// of `target`, one after another, each timed from `connect` to its answer (the
/// first packet goes through the node's rules; conntrack takes the rest). The
/// median and the 99th percentile, after a warm-up.
async fn connect_latency(cp: &ControlPlane, tb: &Testbed) -> Result<(Duration, Duration)> {
    let key = Key::new(Kind::Service, "default", "target");
    let Some(Object::Service(svc)) = cp.store.get(&key) else {
        bail!("no Service target");
    };
    let ip: std::net::Ipv4Addr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("Service target has no ClusterIP")?
        .parse()?;
    let netns = tb
        .plan()
        .pod("bench-0")
        .context("no pod bench-0")?
        .netns
        .clone();
    let addr = std::net::SocketAddr::from((ip, 80));
    let mut times = tokio::task::spawn_blocking(move || {
        crate::netns::run_in(&netns, || {
            let mut times = Vec::with_capacity(LATENCY_CONNECTS);
            for i in 0..LATENCY_CONNECTS + 100 {
                let t = Instant::now();
                let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                if i >= 100 {
                    times.push(t.elapsed());
                }
                drop(stream);
            }
            Ok(times)
        })
    })
    .await?
    .with_context(|| format!("connect to {addr} from pod bench-0"))?;
    times.sort();
    Ok((times[times.len() / 2], times[times.len() * 99 / 100]))
}

/// Every service port in the store, as a node sees it (no Service here has a Local
/// traffic policy: every node sees the same).
fn all_ports(cp: &ControlPlane) -> Vec<crate::proxy::render::ServicePort> {
    let slices = cp.store.list(Kind::EndpointSlice, None);
    let mut out = Vec::new();
    for s in &cp.store.list(Kind::Service, None) {
        let Object::Service(svc) = s else { continue };
        let of: Vec<_> = slices
            .iter()
            .filter_map(|o| match o {
                Object::EndpointSlice(sl)
                    if sl
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(crate::api::labels::SERVICE_NAME_LABEL))
                        .map(String::as_str)
                        == svc.metadata.name.as_deref() =>
                {
                    Some(sl)
                }
                _ => None,
            })
            .collect();
        out.extend(service_ports(svc, &of, ""));
    }
    out
}

/// A full sync's transactions in `mode`, as a node's kube-proxy renders it at its
/// start (nftables: in chunks when there are many Services).
fn full_texts(
    mode: Mode,
    cfg: &render::Config,
    ports: &[crate::proxy::render::ServicePort],
) -> Vec<String> {
    match mode {
        Mode::Iptables => vec![Proxier::new(cfg.clone()).prepare(ports).text],
        Mode::Nftables => {
            crate::proxy::nftables::sync::Proxier::new(cfg.clone())
                .full_sync(ports)
                .transactions
        }
    }
}

/// Applies `text` in a node as `mode`'s kube-proxy does (`ours`: `iptables-restore
/// --noflush`, or our netlink batch), or as the raw tool does (`nft -f -`).
async fn apply(ns: &std::path::Path, mode: Mode, text: &str, ours: bool) -> Result<()> {
    use crate::kernel::exec::NodeExec;
    let (program, args): (&str, &[&str]) = match mode {
        Mode::Iptables => ("iptables-restore", &["-w", "--noflush"]),
        Mode::Nftables if ours => {
            let node = crate::kernel::exec::Nsenter {
                netns: ns.to_path_buf(),
            };
            return node.nft(text).await.map(drop).map_err(anyhow::Error::new);
        }
        Mode::Nftables => ("nft", &["-f", "-"]),
    };
    run_in_netns(ns, program, args, Some(text))
        .await
        .map(drop)
        .map_err(anyhow::Error::new)
}

/// Per node's configuration: a cold full sync (rendering from scratch, then the
/// mode's tool, into a new namespace) next to the raw tool applying the same text
/// there, alternating which goes first.
async fn full_syncs(cp: &ControlPlane, tb: &Testbed, mode: Mode, full_runs: usize) -> Result<()> {
    let ports = all_ports(cp);
    let tool = match mode {
        Mode::Iptables => "iptables-restore",
        Mode::Nftables => "nft -f",
    };
    for node in tb.plan().nodes.iter().filter(|_| full_runs > 0) {
        let cfg = render::Config {
            cluster_cidr: Some(ClusterSpec::default().pod_cidr),
            node_ip: Some(node.ip),
            service_cidr: Some(ClusterSpec::default().service_cidr),
            node_port_addresses: vec![node.ip],
            ..Default::default()
        };
        let texts = full_texts(mode, &cfg, &ports);
        if node.name == tb.plan().nodes[0].name {
            println!(
                "full sync: {} service ports, {} lines of {tool} input in {} transaction(s)",
                ports.len(),
                texts.iter().map(|t| t.lines().count()).sum::<usize>(),
                texts.len()
            );
        }
        let (mut full, mut raw, mut rendering) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..full_runs {
            for ours in [i % 2 == 0, i % 2 == 1] {
                let t = Instant::now();
                let texts = if ours {
                    let texts = full_texts(mode, &cfg, &ports);
                    rendering.push(t.elapsed());
                    texts
                } else {
                    texts.clone()
                };
                let applied = apply_cold(tb, mode, &texts, ours).await?;
                [&mut raw, &mut full][ours as usize].push(t.elapsed() - applied.1);
            }
        }
        let (f, r) = (median(&mut full), median(&mut raw));
        let writer = match mode {
            Mode::Iptables => tool,
            Mode::Nftables => "our netlink batches",
        };
        println!(
            "  {:<8} full sync {} (render {} + {writer}), raw {tool} {}: {:.2}x (median of {full_runs})",
            node.name,
            ms(f),
            ms(median(&mut rendering)),
            ms(r),
            f.as_secs_f64() / r.as_secs_f64()
        );
        if mode == Mode::Nftables && texts.len() > 1 && node.name == tb.plan().nodes[0].name {
            // Upstream's way, for comparison: the same table in one transaction.
            let one = crate::proxy::nftables::sync::Proxier::new(cfg.clone()).full_in_one(&ports);
            let (took, _) = apply_cold(tb, mode, &one.transactions, false).await?;
            println!(
                "  {:<8} the same in one nft -f transaction (upstream's way): {}",
                node.name,
                ms(took)
            );
        }
    }
    Ok(())
}

/// Applies `texts` in order in a new namespace of the testbed that goes after: a
/// cold full sync, into a node with no table yet and no kube-proxy beside. Returns
/// the time the tool took, and the time spent making and removing the namespace.
async fn apply_cold(
    tb: &Testbed,
    mode: Mode,
    texts: &[String],
    ours: bool,
) -> Result<(Duration, Duration)> {
    let name = crate::names::node_netns(tb.name(), "cold-sync");
    let t = Instant::now();
    let made = tokio::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .await?;
    anyhow::ensure!(made.success(), "ip netns add {name}: {made}");
    let set_up = t.elapsed();
    let t = Instant::now();
    let mut result = Ok(());
    for text in texts {
        result = apply(&crate::netns::netns_path(&name), mode, text, ours).await;
        if result.is_err() {
            break;
        }
    }
    let took = t.elapsed();
    let t = Instant::now();
    crate::netns::remove(&name);
    // The kernel frees the namespace's tables in the background: let it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    result.map(|()| (took, set_up + t.elapsed()))
}

/// One node's time to reach a revision: in all, of it in its last sync, and of that
/// in `iptables-restore`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    total: Duration,
    /// Until the endpoints controller wrote the slice.
    slice: Duration,
    sync: Duration,
    restore: Duration,
}

/// Waits for each node to reach `rev`, recording when it did.
async fn wait_each(
    cp: &ControlPlane,
    rev: u64,
    t: Instant,
    slice: Duration,
    per_node: &mut [Vec<Sample>],
) -> Result<()> {
    let waits = cp.proxies.iter().map(|(_, rx)| {
        let mut rx = rx.clone();
        async move {
            let (took, restore) = match rx.wait_for(|s| s.revision >= rev).await {
                Ok(s) => (s.last_took, s.last_restore),
                Err(_) => Default::default(),
            };
            Sample {
                total: t.elapsed(),
                slice,
                sync: took,
                restore,
            }
        }
    });
    let times = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(waits))
        .await
        .context("a node did not sync within 30 s")?;
    for (i, d) in times.into_iter().enumerate() {
        per_node[i].push(d);
    }
    Ok(())
}

fn report(tb: &Testbed, per_node: &mut [Vec<Sample>]) {
    for (node, v) in tb.plan().nodes.iter().zip(per_node.iter_mut()) {
        let mut total: Vec<Duration> = v.iter().map(|s| s.total).collect();
        let mut sync: Vec<Duration> = v.iter().map(|s| s.sync).collect();
        let mut restore: Vec<Duration> = v.iter().map(|s| s.restore).collect();
        let mut slice: Vec<Duration> = v.iter().map(|s| s.slice).collect();
        let max = *total.iter().max().unwrap_or(&Duration::ZERO);
        println!(
            "  {:<8} {} / {}  (median: slice written after {}; sync {}, of it the apply {})",
            node.name,
            ms(median(&mut total)),
            ms(max),
            ms(median(&mut slice)),
            ms(median(&mut sync)),
            ms(median(&mut restore))
        );
    }
}

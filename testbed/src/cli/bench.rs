//! `testbed bench`: how fast clusters come up and go down.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::cluster::{Cluster, Options};
use crate::lifecycle::Testbed;
use crate::netns;
use crate::scenario::{ClusterSpec, PodDecl, Scenario};

#[derive(Subcommand)]
pub(super) enum BenchCommand {
    /// Bring a cluster up and tear it down, and report the times per pod
    Up {
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        /// How many times to repeat
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The cluster DNS under dnsperf, beside NSD serving the same names
    Dns {
        /// Services (one A record each) in the zone and in the query file
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// How long each dnsperf run lasts, in seconds
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Queries dnsperf keeps in flight
        #[arg(long, default_value_t = 100)]
        outstanding: u32,
    },
    /// The Kubernetes REST API beside the testbed CLI: kubectl get pods against
    /// testbed get pods, and an apply to its watch event and to rules on every node
    Api {
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// kube-proxy in a cluster with many Services: full and partial syncs, per node
    Services {
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        #[arg(long, default_value_t = 10000)]
        services: usize,
        /// Endpoints (serving pods) behind every Service
        #[arg(long, default_value_t = 3)]
        endpoints: usize,
        /// Runs of the partial measures (an endpoint change, a Service created)
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Runs of the full sync next to a raw iptables-restore or nft -f (0 skips them;
        /// each pair takes about 12 s at 10,000 Services in iptables mode)
        #[arg(long, default_value_t = 3)]
        full_runs: usize,
        /// kube-proxy's mode: iptables, nftables, or both (one cluster each, in turn)
        #[arg(long, default_value = "iptables")]
        mode: String,
    },
}

// Long because it is the dispatch of every benchmark's arguments, one arm each.
pub(super) fn run(cmd: BenchCommand) -> Result<ExitCode> {
    let (nodes, pods, runs) = match cmd {
        BenchCommand::Up { nodes, pods, runs } => (nodes, pods, runs),
        BenchCommand::Services {
            nodes,
            services,
            endpoints,
            runs,
            full_runs,
            mode,
        } => {
            let modes = super::bench_services::modes(&mode)?;
            return super::bench_services::run(nodes, services, endpoints, runs, full_runs, &modes);
        }
        BenchCommand::Api { nodes, pods, runs } => return super::bench_api::run(nodes, pods, runs),
        BenchCommand::Dns {
            services,
            seconds,
            outstanding,
        } => return super::bench_dns::run(services, seconds, outstanding),
    };
    let scenario = scenario("bench", nodes, numbered_pods(pods));
    let rt = runtime()?;
    let name = format!("bench-{}", std::process::id());
    // A one-node testbed whose node answers netlink requests while the kernel frees
    // what a teardown released (see `kernel_settled`).
    let probe_tb = rt
        .block_on(Testbed::up(
            &format!("{name}-probe"),
            &Scenario {
                cluster: ClusterSpec::with_nodes(1),
                pods: vec![],
                ..scenario.clone()
            },
            None,
        ))
        .context("start the probe")?;
    let probe = netns::open_netlink(&probe_tb.plan().nodes[0].netns, rt.handle())?;
    println!("bench up: {nodes} nodes, {pods} pods, {runs} runs (testbed {name})");
    let (mut ups, mut downs, mut settles) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        // The whole cluster comes up; "up" is its topology (namespaces, links and
        // addresses), "ready" adds the control plane and the cluster DNS serving.
        let start = Instant::now();
        let cluster = rt
            .block_on(Cluster::start(
                &name,
                &scenario,
                Options::bare()?,
                std::future::pending(),
            ))
            .map_err(|f| f.error)
            .context("bring the cluster up")?;
        let ready = start.elapsed();
        let t = cluster.testbed().times.clone();
        let down = rt.block_on(cluster.shutdown());
        let settled = rt.block_on(kernel_settled(&probe));
        println!(
            "run {run}: up {} (nodes {}, then pods {}) = {:.3} ms/pod, {:.0} pods/s, ready {}; \
             down {} = {:.3} ms/pod; kernel done freeing after {} = {:.3} ms/pod",
            super::ms(t.total),
            super::ms(t.nodes),
            super::ms(t.pods),
            per_pod(t.total, pods),
            pods as f64 / t.total.as_secs_f64(),
            super::ms(ready),
            super::ms(down.took),
            per_pod(down.took, pods),
            super::ms(down.took + settled),
            per_pod(down.took + settled, pods),
        );
        ups.push(t.total);
        downs.push(down.took);
        settles.push(down.took + settled);
    }
    drop(probe_tb);
    let (up, down, settle) = (median(&mut ups), median(&mut downs), median(&mut settles));
    println!(
        "median: up {} = {:.3} ms/pod ({:.0} pods/s); down {} = {:.3} ms/pod; with the kernel's freeing {} = {:.3} ms/pod",
        super::ms(up),
        per_pod(up, pods),
        pods as f64 / up.as_secs_f64(),
        super::ms(down),
        per_pod(down, pods),
        super::ms(settle),
        per_pod(settle, pods),
    );
    Ok(ExitCode::SUCCESS)
}

/// How long after a teardown the kernel went on freeing the namespaces.
///
/// Removing a namespace's mount only drops a reference: the kernel frees namespaces
/// later, in a batch, and unregisters their interfaces under the rtnl lock. A probe
/// that needs that lock (setting `lo` up in the probe node) waits while it is held.
/// The kernel is taken to be done once probes have gone through quickly for 300 ms;
/// the time returned is when the last slow probe ended (at most 20 s).
async fn kernel_settled(probe: &rtnetlink::Handle) -> Duration {
    let start = Instant::now();
    let mut last_slow = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(20) {
        let t = Instant::now();
        let _ = probe
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await;
        if t.elapsed() > Duration::from_millis(2) {
            last_slow = start.elapsed();
        }
        if start.elapsed() - last_slow > Duration::from_millis(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    last_slow
}

/// A benchmark's scenario: `nodes` nodes and `pods`.
pub(super) fn scenario(name: &str, nodes: usize, pods: Vec<PodDecl>) -> Scenario {
    Scenario {
        name: name.into(),
        description: String::new(),
        cluster: ClusterSpec::with_nodes(nodes),
        pods,
        ..Default::default()
    }
}

/// `n` pods, `pod-0` and on, placed by the scheduler.
pub(super) fn numbered_pods(n: usize) -> Vec<PodDecl> {
    (0..n).map(|i| PodDecl::new(format!("pod-{i}"))).collect()
}

/// The runtime a benchmark runs on: two workers, as the machines it runs on have.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The median of a benchmark's runs.
pub(super) fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A measured time in milliseconds, to a tenth.
pub(super) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn per_pod(d: Duration, pods: usize) -> f64 {
    d.as_secs_f64() * 1e3 / pods.max(1) as f64
}

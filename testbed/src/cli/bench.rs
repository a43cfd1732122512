//! `testbed bench`: how fast clusters come up and go down.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::lifecycle::Testbed;
use crate::scenario::{Cluster, PodDecl, Scenario};

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
}

pub(super) fn run(cmd: BenchCommand) -> Result<ExitCode> {
    let BenchCommand::Up { nodes, pods, runs } = cmd;
    let scenario = Scenario {
        name: "bench".into(),
        description: String::new(),
        cluster: Cluster::with_nodes(nodes),
        pods: (0..pods).map(|i| PodDecl::new(format!("pod-{i}"))).collect(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let name = format!("bench-{}", std::process::id());
    println!("bench up: {nodes} nodes, {pods} pods, {runs} runs (testbed {name})");
    let mut ups = Vec::new();
    let mut downs = Vec::new();
    for run in 1..=runs {
        let tb = rt
            .block_on(Testbed::up(&name, &scenario, None))
            .context("bring the cluster up")?;
        let t = tb.times.clone();
        let down = tb.down();
        println!(
            "run {run}: up {} (namespaces {}, nodes {}, pods {}) = {:.3} ms/pod, {:.0} pods/s; down {} = {:.3} ms/pod",
            super::ms(t.total),
            super::ms(t.namespaces),
            super::ms(t.fabric_and_nodes),
            super::ms(t.pods),
            per_pod(t.total, pods),
            pods as f64 / t.total.as_secs_f64(),
            super::ms(down.took),
            per_pod(down.took, pods),
        );
        ups.push(t.total);
        downs.push(down.took);
        // Let the kernel finish freeing the namespaces before the next run.
        std::thread::sleep(Duration::from_millis(500));
    }
    ups.sort();
    downs.sort();
    let (up, down) = (ups[ups.len() / 2], downs[downs.len() / 2]);
    println!(
        "median: up {} = {:.3} ms/pod ({:.0} pods/s); down {} = {:.3} ms/pod",
        super::ms(up),
        per_pod(up, pods),
        pods as f64 / up.as_secs_f64(),
        super::ms(down),
        per_pod(down, pods)
    );
    Ok(ExitCode::SUCCESS)
}

fn per_pod(d: Duration, pods: usize) -> f64 {
    d.as_secs_f64() * 1e3 / pods.max(1) as f64
}

//! The background process behind `testbed up`: builds the cluster, reports ready on
//! stdout, then holds the testbed until SIGTERM, SIGINT or SIGHUP, and tears it down.
//! A panic or an error tears it down too (the testbed is dropped).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use super::up::{Ready, PROGRESS, READY};
use crate::cluster::{self, Cluster};
use crate::state;

pub(super) fn run(file: &Path, name: &str) -> Result<ExitCode> {
    let scenario = crate::scenario::validate::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the runtime")?;
    rt.block_on(async {
        let mut signals = Signals::new()?;
        let pods = scenario.pods.len();
        let step = (pods / 50).max(1);
        let progress = move |wired: usize| {
            if wired.is_multiple_of(step) || wired == pods {
                report(&format!("{PROGRESS}{wired} {pods}"));
            }
        };
        // A signal during the bring-up stops it: what was made is removed and `up`
        // hears that the testbed did not come up (never "ready").
        let opts = cluster::Options {
            exe: std::env::current_exe().context("find the testbed executable")?,
            file: Some(file),
            serve_api: true,
            progress: &progress,
        };
        let cluster = Cluster::start(name, &scenario, opts, signals.recv())
            .await
            .map_err(|f| anyhow::Error::new(f.error))?;
        let t = &cluster.testbed().times;
        let ready = Ready {
            nodes_ms: t.nodes.as_secs_f64() * 1e3,
            pods_ms: t.pods.as_secs_f64() * 1e3,
            total_ms: t.total.as_secs_f64() * 1e3,
            objects: cluster.objects.clone(),
        };
        report(&format!("{READY}{}", serde_json::to_string(&ready)?));
        detach_output(name)?;
        eprintln!(
            "testbed {name} ready: {} nodes, {} pods in {:.1} ms",
            cluster.plan().nodes.len(),
            cluster.plan().pods.len(),
            ready.total_ms
        );
        let why = signals.recv().await;
        let report = cluster.shutdown().await;
        eprintln!(
            "{why}: testbed {name} down, {} namespaces removed in {:.1} ms",
            report.namespaces,
            report.took.as_secs_f64() * 1e3
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGTERM, SIGINT and SIGHUP, caught: they end a testbed's life by taking it down.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Catches them from now on (within a tokio runtime).
    pub(super) fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next of SIGTERM, SIGINT and SIGHUP, by name.
    pub(super) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// A line for the waiting `up`. If it is gone (killed), the testbed carries on:
/// `testbed ls` shows it.
fn report(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// Once `up` has its answer, stdout and stderr go to the testbed's log.
fn detach_output(name: &str) -> Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state::log_path(name))
        .context("open the log")?;
    for fd in [1, 2] {
        nix::unistd::dup2(log.as_raw_fd(), fd).context("redirect output to the log")?;
    }
    Ok(())
}

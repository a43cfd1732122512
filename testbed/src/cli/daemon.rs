//! The background process behind `testbed up`: builds the cluster, reports ready on
//! stdout, then holds the testbed until SIGTERM, SIGINT or SIGHUP, and tears it down.
//! A panic or an error tears it down too (the testbed is dropped).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use std::sync::Arc;

use super::up::{Ready, PROGRESS, READY};
use crate::api::socket;
use crate::control::ControlPlane;
use crate::lifecycle::Testbed;
use crate::state;

pub(super) fn run(file: &Path, name: &str) -> Result<ExitCode> {
    let scenario = crate::run::dry::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the runtime")?;
    rt.block_on(async {
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        let hup = signal(SignalKind::hangup())?;
        let pods = scenario.pods.len();
        let step = (pods / 50).max(1);
        let progress = move |wired: usize| {
            if wired.is_multiple_of(step) || wired == pods {
                report(&format!("{PROGRESS}{wired} {pods}"));
            }
        };
        // A signal during the bring-up stops it: what was made is removed and `up`
        // hears that the testbed did not come up (never "ready").
        let mut signals = Signals { term, int, hup };
        let tb = tokio::select! {
            tb = Testbed::up_with_progress(name, &scenario, Some(file.to_path_buf()), &progress) => tb?,
            why = signals.recv() => return Err(stopped(name, why)),
        };
        let cp = ControlPlane::start(tb.plan(), &scenario, state::dir(name).join("etc"))?;
        let cp = Arc::new(cp);
        let started = async {
            cp.wait_dns(Duration::from_secs(20)).await?;
            // The scenario's objects, through the API server (its steps are `testbed run`'s).
            crate::run::apply(&cp.api, file, &scenario.objects).map_err(|e| anyhow::anyhow!("{e}"))
        };
        let objects = tokio::select! {
            objects = started => objects,
            why = signals.recv() => Err(stopped(name, why)),
        };
        let objects = match objects {
            Ok(lines) => lines,
            Err(e) => {
                cp.stop().await;
                return Err(e);
            }
        };
        let listener = socket::bind(&socket::socket_path(name)).context("bind the API socket")?;
        let nodes: socket::NodesFn = {
            let cp = cp.clone();
            Arc::new(move || cp.node_status())
        };
        let server = tokio::spawn(socket::serve(
            listener,
            tb.owner_uid(),
            cp.api.clone(),
            nodes,
        ));
        let t = &tb.times;
        let ready = Ready {
            nodes_ms: t.nodes.as_secs_f64() * 1e3,
            pods_ms: t.pods.as_secs_f64() * 1e3,
            total_ms: t.total.as_secs_f64() * 1e3,
            objects,
        };
        report(&format!("{READY}{}", serde_json::to_string(&ready)?));
        detach_output(name)?;
        eprintln!(
            "testbed {name} ready: {} nodes, {} pods in {:.1} ms",
            tb.plan().nodes.len(),
            tb.plan().pods.len(),
            ready.total_ms
        );
        let why = signals.recv().await;
        server.abort();
        let _ = server.await;
        cp.stop().await;
        let report = tb.down();
        eprintln!(
            "{why}: testbed {name} down, {} namespaces removed in {:.1} ms",
            report.namespaces,
            report.took.as_secs_f64() * 1e3
        );
        Ok(ExitCode::SUCCESS)
    })
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// The next of SIGTERM, SIGINT and SIGHUP, by name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// The error of a bring-up a signal stopped (what it made is removed by then, or as
/// the error returns: the testbed is dropped).
fn stopped(name: &str, why: &str) -> anyhow::Error {
    anyhow::anyhow!("{why} during the bring-up: testbed {name} was stopped before it was ready")
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

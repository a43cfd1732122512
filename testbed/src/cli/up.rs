//! `testbed up`: check the scenario here, then start the background process that
//! builds and hosts the cluster, and return once it reports the cluster ready.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::lifecycle;
use crate::plan::Plan;
use crate::state::{self, Record};

/// What the background process reports on its stdout once the cluster is ready.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Ready {
    pub nodes_ms: f64,
    pub pods_ms: f64,
    pub total_ms: f64,
    /// What applying the scenario's `objects` did, a line per object.
    #[serde(default)]
    pub objects: Vec<String>,
}

pub(super) const READY: &str = "READY ";
/// `PROGRESS <pods wired> <pods>`, now and then during a bring-up.
pub(super) const PROGRESS: &str = "PROGRESS ";

pub(super) fn up(file: &Path, name: Option<String>) -> Result<ExitCode> {
    let start = Instant::now();
    let scenario = crate::scenario::validate::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = name.unwrap_or_else(|| scenario.name.clone());
    // Checked here too, so the answer comes before a process is started.
    lifecycle::check_name(&name)?;
    crate::tools::check_needed().map_err(anyhow::Error::msg)?;
    if let Some(pid) = lifecycle::running(&name) {
        return Err(lifecycle::UpError::Running { name, pid }.into());
    }
    let file = std::fs::canonicalize(file).with_context(|| format!("{}", file.display()))?;
    let exe = std::env::current_exe().context("find the testbed executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__daemon")
        .arg(&file)
        .arg("--name")
        .arg(&name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // The background process gets a session of its own, so the terminal's Ctrl-C and
    // hang-up don't reach it. setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().context("start the testbed process")?;
    let stdout = child.stdout.take().expect("piped stdout");
    forward_interrupts(child.id());
    let mut ready = None;
    let bar = indicatif::ProgressBar::hidden();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("read from the testbed process")?;
        if let Some((done, total)) = line
            .strip_prefix(PROGRESS)
            .and_then(|p| p.split_once(' '))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        {
            if bar.is_hidden() && total >= 100 {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} pods {pos}/{len} {wide_bar} {elapsed}",
                    )
                    .expect("valid template"),
                );
            }
            bar.set_length(total);
            bar.set_position(done);
            continue;
        }
        if let Some(json) = line.strip_prefix(READY) {
            bar.finish_and_clear();
            ready = Some(serde_json::from_str::<Ready>(json).context("read the ready report")?);
            break;
        }
        println!("{line}");
    }
    if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
        bar.finish_and_clear();
        child.wait().context("wait for the testbed process")?;
        eprintln!("interrupted: testbed {name} was stopped and everything it made removed");
        return Ok(ExitCode::from(130));
    }
    let Some(ready) = ready else {
        let status = child.wait().context("wait for the testbed process")?;
        // It removes what it made on any error; if it was killed, that is done here,
        // for its own record only (another `up` of this name may have won it).
        if Record::load(&name).is_ok_and(|r| r.pid == child.id() && !r.alive()) {
            crate::clean::remove_testbed(&name);
        }
        bail!("testbed {name} did not come up ({status}); nothing was left behind");
    };
    let record = Record::load(&name).context("read the testbed's record")?;
    print_ready(&record.plan, &ready, start.elapsed(), record.pid);
    Ok(ExitCode::SUCCESS)
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ctrl-C (or a hang-up) while `up` waits stops the bring-up: the background process
/// gets SIGTERM, removes what it made, and exits.
fn forward_interrupts(child: u32) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    use std::sync::atomic::{AtomicI32, Ordering};
    static CHILD: AtomicI32 = AtomicI32::new(0);
    extern "C" fn forward(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::Relaxed);
        let pid = CHILD.load(Ordering::Relaxed);
        if pid > 0 {
            // kill(2) is async-signal-safe.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    CHILD.store(child as i32, Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGTERM] {
        // Safe: the handler only reads an atomic and calls kill(2).
        unsafe {
            let _ = sigaction(sig, &action);
        }
    }
}

fn print_ready(plan: &Plan, ready: &Ready, wall: Duration, pid: u32) {
    println!(
        "testbed {}: {} nodes, {} pods ready in {} (nodes {:.0} ms, then pods {:.0} ms; {} with start-up)",
        plan.testbed,
        plan.nodes.len(),
        plan.pods.len(),
        super::ms(Duration::from_secs_f64(ready.total_ms / 1000.0)),
        ready.nodes_ms,
        ready.pods_ms,
        super::ms(wall),
    );
    print!("{}", super::ops::render_plan(plan, 20));
    if !ready.objects.is_empty() {
        println!("objects:");
        for o in &ready.objects {
            println!("  {o}");
        }
    }
    let first = plan.pods.first().map_or("POD", |p| p.name.as_str());
    let node = plan.nodes.first().map_or("node-1", |n| n.name.as_str());
    println!(
        "\nThe cluster runs in the background (pid {pid}, log {}).\n\
         Try:\n  \
         testbed exec {first} -- ip route\n  \
         testbed exec node/{node} -- ip -br addr\n  \
         ip netns exec {} ip -br link\n  \
         testbed down {}",
        state::log_path(&plan.testbed).display(),
        plan.pods
            .first()
            .map_or(plan.nodes[0].netns.as_str(), |p| p.netns.as_str()),
        plan.testbed
    );
}

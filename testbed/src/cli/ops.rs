//! `testbed down`, `ls`, `clean`, `exec`, `check` and `plan`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::clean;
use crate::exec;
use crate::names;
use crate::netns;
use crate::plan::Plan;
use crate::scenario;
use crate::state::{self, Record};

pub(super) fn down(name: Option<String>) -> Result<ExitCode> {
    let name = super::pick_testbed(name)?;
    let start = Instant::now();
    let record = match Record::load(&name) {
        Ok(r) if r.owns_its_process() => r,
        Ok(r) if r.alive() => bail!(
            "testbed {name}'s record names pid {}, which does not hold the testbed's claim: \
             nothing was signalled",
            r.pid
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no testbed named {name} (see `testbed ls`)")
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!("{e}"),
        _ => {
            let namespaces = clean::remove_testbed(&name);
            println!(
                "testbed {name} was not running (killed?); removed its {namespaces} namespaces in {}",
                super::ms(start.elapsed())
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    kill(Pid::from_raw(record.pid as i32), Signal::SIGTERM)
        .with_context(|| format!("stop testbed {name} (pid {})", record.pid))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Its end is its process's exit (its record goes a moment before).
    while state::process_start(record.pid) == Some(record.pid_start) {
        if Instant::now() > deadline {
            bail!(
                "testbed {name} (pid {}) did not stop within 60 s; see {}",
                record.pid,
                state::log_path(&name).display()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // The process removes its record last; if it died half-way, finish its work.
    if Record::load(&name).is_ok_and(|r| r.pid == record.pid) {
        clean::remove_testbed(&name);
    }
    println!(
        "testbed {name} down: {} nodes, {} pods removed in {}",
        record.plan.nodes.len(),
        record.plan.pods.len(),
        super::ms(start.elapsed())
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn ls() -> Result<ExitCode> {
    let names = state::names();
    if names.is_empty() {
        println!("no testbeds");
        return Ok(ExitCode::SUCCESS);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "PID".into(),
        "NODES".into(),
        "PODS".into(),
        "AGE".into(),
        "SCENARIO".into(),
    ]];
    for name in names {
        match Record::load(&name) {
            Ok(r) => rows.push([
                name,
                if r.alive() {
                    "running"
                } else {
                    "dead (run `testbed clean`)"
                }
                .into(),
                r.pid.to_string(),
                r.plan.nodes.len().to_string(),
                r.plan.pods.len().to_string(),
                age(now.saturating_sub(r.created)),
                r.scenario
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ]),
            Err(_) => rows.push([
                name,
                "unreadable (run `testbed clean`)".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]),
        }
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

pub(super) fn clean() -> Result<ExitCode> {
    let cleaned = clean::clean_dead();
    let foreign = clean::foreign();
    if cleaned.is_empty() {
        println!("nothing to clean");
    }
    if !foreign.is_empty() {
        println!(
            "left alone, as no testbed made them: {}",
            foreign.join(", ")
        );
    }
    for c in cleaned {
        println!(
            "removed testbed {}: {} network namespaces",
            c.name, c.namespaces
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn exec(
    testbed: Option<String>,
    user: Option<&str>,
    target: &str,
    command: &[String],
) -> Result<ExitCode> {
    let user = user
        .map(crate::kubelet::identity::Identity::parse)
        .transpose()
        .map_err(|e| anyhow!("--user: {e}"))?;
    let name = super::pick_testbed(testbed)?;
    let record =
        Record::load(&name).map_err(|_| anyhow!("no testbed named {name} (see `testbed ls`)"))?;
    let plan = &record.plan;
    let mut pod_dir = None;
    let netns = match target.strip_prefix("node/") {
        None if target.starts_with("host/") => {
            let host = &target[5..];
            let Some(netns) = plan.host_netns(host) else {
                return Err(anyhow!(
                    "testbed {name} has no host {host:?} (hosts: {})",
                    plan.host_names().join(", ")
                ));
            };
            netns.to_string()
        }
        Some(node) => plan.node(node).map(|n| n.netns.clone()).ok_or_else(|| {
            let known: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
            anyhow!(
                "testbed {name} has no node {node:?} (nodes: {})",
                known.join(", ")
            )
        })?,
        None => {
            let (ns, pod) = target.split_once('/').unwrap_or(("default", target));
            for (what, part) in [("namespace", ns), ("pod", pod)] {
                names::check_dns1123_label(part, 63)
                    .map_err(|why| anyhow!("{target:?}: the {what} name {part:?} {why}"))?;
            }
            let netns = names::pod_netns(&name, ns, pod);
            if !netns::netns_path(&netns).exists() {
                let prefix = format!("{}.", names::fabric_netns(&name));
                let known: Vec<String> = netns::list()
                    .into_iter()
                    .filter_map(|n| {
                        let rest = n.strip_prefix(&prefix)?;
                        let (ns, pod) = rest.split_once('.')?;
                        Some(format!("{ns}/{pod}"))
                    })
                    .collect();
                return Err(anyhow!(
                    "testbed {name} has no pod {ns}/{pod} (pods: {})",
                    known.join(", ")
                ));
            }
            pod_dir = Some(state::pod_dir(&name, ns, pod));
            netns
        }
    };
    match exec::exec_in(&netns, pod_dir.as_deref(), user, command) {
        Ok(never) => match never {},
        Err(e @ (exec::ExecError::Setup { .. } | exec::ExecError::NoCommand)) => Err(e.into()),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

pub(super) fn doctor() -> Result<ExitCode> {
    let mut rows = vec![[
        "TOOL".to_string(),
        "PACKAGE".into(),
        "STATUS".into(),
        "USED FOR".into(),
    ]];
    for t in crate::tools::TOOLS {
        let status = match crate::tools::find(t.program) {
            Some(p) => p.display().to_string(),
            None if t.needed => "MISSING (needed)".into(),
            None => "missing".into(),
        };
        rows.push([
            t.program.into(),
            t.package.into(),
            status,
            t.used_for.into(),
        ]);
    }
    print!("{}", table(&rows));
    let root = nix::unistd::geteuid().is_root();
    println!(
        "root: {}",
        if root {
            "yes"
        } else {
            "no (up, down, run, exec, clean and bench need sudo)"
        }
    );
    match crate::tools::require(&crate::tools::missing_needed()) {
        Ok(()) => {
            println!("every tool `testbed up` needs is there");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(super) fn plan(file: &Path, name: Option<String>) -> Result<ExitCode> {
    let s = scenario::load(file).map_err(|e| anyhow!("{e}"))?;
    let plan = s.plan(name.as_deref().unwrap_or(&s.name));
    print!("{}", render_plan(&plan, usize::MAX));
    Ok(ExitCode::SUCCESS)
}

/// The plan as a reader wants it: nodes, their pods and addresses (at most
/// `max_pods` pods listed per node).
pub fn render_plan(plan: &Plan, max_pods: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "underlay {} (netns {}, gateway {})",
        plan.fabric.network, plan.fabric.netns, plan.fabric.gateway
    );
    for node in &plan.nodes {
        let _ = writeln!(
            out,
            "  {:<10} {:<15} pods {:<18} netns {}",
            node.name, node.ip, node.pod_cidr, node.netns
        );
        let pods: Vec<_> = plan.pods.iter().filter(|p| p.node == node.name).collect();
        for pod in pods.iter().take(max_pods) {
            let name = if pod.namespace == "default" {
                pod.name.clone()
            } else {
                format!("{}/{}", pod.namespace, pod.name)
            };
            let _ = writeln!(out, "    {:<20} {:<15} {}", name, pod.ip, pod.host_veth);
        }
        if pods.len() > max_pods {
            let _ = writeln!(out, "    ... and {} more", pods.len() - max_pods);
        }
    }
    out
}

/// `testbed kubeconfig [NAME]`: the path of the testbed's kubeconfig, once it is
/// there and readable by the caller.
pub fn kubeconfig(name: Option<String>) -> Result<ExitCode> {
    let name = super::pick_testbed(name)?;
    if !crate::state::Record::load(&name).is_ok_and(|r| r.alive()) {
        anyhow::bail!("testbed {name} is not running (`testbed ls` lists the testbeds)");
    }
    let path = crate::state::kubeconfig_path(&name);
    if let Err(e) = std::fs::File::open(&path) {
        anyhow::bail!(
            "cannot read {}: {e} (it is readable by the testbed's owner and root)",
            path.display()
        );
    }
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

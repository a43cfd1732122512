//! `testbed bench api`: the Kubernetes REST API beside the testbed CLI, side by side
//! in one run: `kubectl get pods` against `testbed get pods` with many pods, and a
//! Service written with `kubectl apply` or `testbed apply`, timed to the write's
//! return, to its first watch event (seen by `kubectl get svc -w`) and to its rules
//! on every node (with the cluster DNS's records).

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use super::bench::{median, ms, numbered_pods, runtime, scenario};
use crate::api::{Key, Kind};
use crate::cluster::{Cluster, Options};
use crate::state;

pub(super) fn run(nodes: usize, pods: usize, runs: usize) -> Result<ExitCode> {
    if nodes == 0 || runs == 0 {
        bail!("--nodes and --runs must be at least 1");
    }
    if crate::tools::find("kubectl").is_none() {
        bail!("kubectl is not on the PATH: bench api compares it with the testbed CLI");
    }
    let scenario = scenario("bench-api", nodes, numbered_pods(pods));
    let rt = runtime()?;
    let name = format!("bench-api-{}", std::process::id());
    rt.block_on(async {
        let opts = Options {
            serve_api: true,
            ..Options::bare()?
        };
        let cluster = Cluster::start(&name, &scenario, opts, std::future::pending())
            .await
            .map_err(|f| f.error)
            .context("bring the cluster up")?;
        println!("bench api: {nodes} nodes, {pods} pods, {runs} runs (testbed {name})");
        let result = async {
            lists(&name, pods, runs).await?;
            writes(&cluster, runs).await
        }
        .await;
        cluster.shutdown().await;
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

fn kubectl(name: &str) -> Command {
    let mut c = Command::new("kubectl");
    c.env("KUBECONFIG", state::kubeconfig_path(name))
        .env("HOME", std::env::temp_dir())
        .kill_on_drop(true);
    c
}

fn testbed() -> Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.kill_on_drop(true);
    Ok(c)
}

/// Runs `cmd` to its end: how long it took and how many lines it printed.
async fn timed(mut cmd: Command, what: &str) -> Result<(Duration, usize)> {
    let start = Instant::now();
    let out = cmd.output().await.with_context(|| format!("run {what}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((took, out.stdout.iter().filter(|b| **b == b'\n').count()))
}

/// `kubectl get pods` (a Table from the REST API) against `testbed get pods` (the
/// API socket), each a whole process as a user runs it.
async fn lists(name: &str, pods: usize, runs: usize) -> Result<()> {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut lines = (0, 0);
    for _ in 0..runs {
        let mut k = kubectl(name);
        k.args(["get", "pods"]);
        let (t, n) = timed(k, "kubectl get pods").await?;
        theirs.push(t);
        lines.0 = n;
        let mut c = testbed()?;
        c.args(["get", "pods", "-t", name]);
        let (t, n) = timed(c, "testbed get pods").await?;
        ours.push(t);
        lines.1 = n;
    }
    println!("list {pods} pods, process start to exit (median of {runs}):");
    println!(
        "  kubectl get pods  {:>10}  ({} lines)",
        ms(median(&mut theirs)),
        lines.0
    );
    println!(
        "  testbed get pods  {:>10}  ({} lines)",
        ms(median(&mut ours)),
        lines.1
    );
    Ok(())
}

/// Waits for the line `service/NAME` from the watcher.
async fn event(watch: &mut Lines<BufReader<ChildStdout>>, name: &str) -> Result<()> {
    let want = format!("service/{name}");
    while let Some(line) = watch.next_line().await? {
        if line.trim() == want {
            return Ok(());
        }
    }
    bail!("the watch ended before {want} appeared")
}

/// Waits until Service `name` is in the store and every node and the DNS have
/// synced it.
async fn rules(cluster: &Cluster, name: &str) -> Result<()> {
    let cp = cluster.control();
    let key = Key::new(Kind::Service, "default", name);
    let mut changes = cp.store.subscribe();
    let rv = loop {
        if let Some(o) = cp.store.get(&key) {
            break o
                .meta()
                .resource_version
                .as_deref()
                .and_then(|r| r.parse::<u64>().ok())
                .unwrap_or(0);
        }
        changes.changed().await?;
    };
    if !cp.wait_synced(rv, Duration::from_secs(60)).await {
        bail!("the nodes did not sync Service {name} within 60 s");
    }
    Ok(())
}

/// One Service written by `tool`: (write returned, first watch event, rules).
async fn one_write(
    cluster: &Cluster,
    watch: &mut Lines<BufReader<ChildStdout>>,
    tool: &str,
    svc: &str,
    dir: &std::path::Path,
) -> Result<[Duration; 3]> {
    let file = dir.join(format!("{svc}.yaml"));
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}}}\nspec:\n  selector: {{app: {svc}}}\n  ports: [{{port: 80}}]\n"
        ),
    )?;
    let file = file.display().to_string();
    let name = cluster.name();
    let mut cmd = if tool == "kubectl" {
        kubectl(name)
    } else {
        testbed()?
    };
    cmd.args(["apply", "-f", &file]).stdout(Stdio::null());
    if tool != "kubectl" {
        cmd.args(["-t", name]);
    }
    let start = Instant::now();
    let write = async {
        timed(cmd, &format!("{tool} apply")).await?;
        Ok::<_, anyhow::Error>(start.elapsed())
    };
    let seen = async {
        event(watch, svc).await?;
        Ok::<_, anyhow::Error>(start.elapsed())
    };
    let synced = async {
        rules(cluster, svc).await?;
        Ok::<_, anyhow::Error>(start.elapsed())
    };
    let (w, e, r) = tokio::try_join!(write, seen, synced)?;
    Ok([w, e, r])
}

/// A Service written through each door, `runs` times, with one watcher open.
async fn writes(cluster: &Cluster, runs: usize) -> Result<()> {
    let mut watcher = kubectl(cluster.name())
        .args(["get", "svc", "--watch-only", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start kubectl get svc -w")?;
    let mut watch = BufReader::new(watcher.stdout.take().context("the watch's output")?).lines();
    // The watch is open once a change reaches it: Services are written until one
    // does (one written before kubectl started watching is never an event).
    let dir = state::dir(cluster.name()).join("bench");
    std::fs::create_dir_all(&dir)?;
    for n in 0.. {
        let svc = format!("warm-up-{n}");
        let file = dir.join(format!("{svc}.yaml"));
        std::fs::write(
            &file,
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}}}\nspec:\n  ports: [{{port: 80}}]\n"),
        )?;
        let mut k = kubectl(cluster.name());
        k.args(["apply", "-f", &file.display().to_string()]);
        timed(k, "kubectl apply").await?;
        match tokio::time::timeout(Duration::from_secs(2), event(&mut watch, &svc)).await {
            Ok(seen) => {
                seen?;
                break;
            }
            Err(_) if n < 10 => continue,
            Err(_) => bail!("kubectl get svc -w saw none of 10 Services written"),
        }
    }
    let mut times: [[Vec<Duration>; 3]; 2] = Default::default();
    for i in 0..runs {
        for (t, tool) in ["kubectl", "testbed"].iter().enumerate() {
            let got = one_write(cluster, &mut watch, tool, &format!("{tool}-{i}"), &dir).await?;
            for (k, d) in got.into_iter().enumerate() {
                times[t][k].push(d);
            }
        }
    }
    let _ = watcher.kill().await;
    println!("a Service applied, from the start of the apply (median of {runs}):");
    println!("  {:<40}{:>14}{:>14}", "", "kubectl apply", "testbed apply");
    for (k, what) in [
        "the apply returned",
        "its first watch event (kubectl get -w)",
        "its rules on every node, DNS records",
    ]
    .iter()
    .enumerate()
    {
        let [a, b] = &mut times;
        println!(
            "  {what:<40}{:>14}{:>14}",
            ms(median(&mut a[k])),
            ms(median(&mut b[k]))
        );
    }
    Ok(())
}

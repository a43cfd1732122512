//! `testbed bench dns`: dnsperf against the cluster DNS inside a testbed, beside NSD
//! serving the same names from a zone file on the same machine in the same run.
//!
//! A 2-node cluster runs in this process with `services` Services; `dnsperf` runs in a
//! pod of node-1 and asks for every Service's A record, for `seconds`, of: a coredns
//! pod (on node-2, by its IP), the kube-dns ClusterIP (through node-1's DNAT), and
//! `nsd` in a pod of node-2 (by its IP).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{Kind, Object};
use crate::cluster::{Cluster, Options};
use crate::control::ControlPlane;
use crate::lifecycle::Testbed;
use crate::netns;
use crate::scenario::PodDecl;

fn service(i: usize) -> Object {
    Object::Service(Service {
        metadata: ObjectMeta {
            name: Some(format!("svc-{i}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// What dnsperf reported.
#[derive(Debug, Default)]
struct Perf {
    sent: u64,
    completed: u64,
    lost: u64,
    qps: f64,
    noerror: u64,
}

fn parse(out: &str) -> Result<Perf> {
    let mut p = Perf::default();
    let num = |l: &str| -> u64 {
        l.split(':')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for l in out.lines().map(str::trim) {
        if l.starts_with("Queries sent:") {
            p.sent = num(l);
        } else if l.starts_with("Queries completed:") {
            p.completed = num(l);
        } else if l.starts_with("Queries lost:") {
            p.lost = num(l);
        } else if l.starts_with("Response codes:") {
            p.noerror = l
                .split("NOERROR")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if l.starts_with("Queries per second:") {
            p.qps = l
                .split(':')
                .nth(1)
                .and_then(|r| r.trim().parse().ok())
                .unwrap_or(0.0);
        }
    }
    if p.sent == 0 {
        bail!("cannot read dnsperf's output:\n{out}");
    }
    Ok(p)
}

pub(super) fn run(services: usize, seconds: u32, outstanding: u32) -> Result<ExitCode> {
    for tool in ["dnsperf", "nsd"] {
        if std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            bail!("{tool} is not installed: apt-get install -y dnsperf nsd");
        }
    }
    let mut pods = vec![PodDecl::new("dnsperf".to_string())];
    pods[0].node = Some("node-1".into());
    let mut nsd = PodDecl::new("nsd".to_string());
    nsd.node = Some("node-2".into());
    pods.push(nsd);
    let scenario = super::bench::scenario("bench-dns", 2, pods);
    let rt = super::bench::runtime()?;
    let name = format!("bench-dns-{}", std::process::id());
    rt.block_on(async {
        let cluster = Cluster::start(&name, &scenario, Options::bare()?, std::future::pending())
            .await
            .map_err(|f| f.error)
            .context("bring the cluster up")?;
        let result = measure(
            cluster.control(),
            cluster.testbed(),
            services,
            seconds,
            outstanding,
        )
        .await;
        cluster.shutdown().await;
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

// Long because it is one benchmark run top to bottom (set-up, the reference server, the
// load, the figures), which reads best in order.
async fn measure(
    cp: &ControlPlane,
    tb: &Testbed,
    services: usize,
    seconds: u32,
    outstanding: u32,
) -> Result<()> {
    cp.api
        .apply((0..services).map(service).collect())
        .map_err(|p| anyhow::anyhow!("{}", p[0]))?;
    // Every Service in the records the server answers from.
    let last = hickory_proto::rr::Name::from_ascii(format!(
        "svc-{}.default.svc.cluster.local.",
        services.saturating_sub(1)
    ))?;
    for _ in 0..200 {
        let z = cp.dns.zone.load();
        if matches!(
            z.lookup(&last, hickory_proto::rr::RecordType::A),
            crate::dns::answer::Outcome::Reply(ref r) if !r.answers.is_empty()
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ips: BTreeMap<String, String> = cp
        .store
        .list(Kind::Service, Some("default"))
        .into_iter()
        .filter_map(|o| match o {
            Object::Service(s) => Some((
                s.metadata.name.clone()?,
                s.spec.as_ref()?.cluster_ip.clone()?,
            )),
            _ => None,
        })
        .filter(|(n, _)| n.starts_with("svc-"))
        .collect();

    let dir = crate::state::dir(tb.name()).join("bench-dns");
    std::fs::create_dir_all(&dir)?;
    let mut queries = String::new();
    let mut zone = String::from(
        "$ORIGIN cluster.local.\n$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n@ IN NS ns.dns.cluster.local.\nns.dns IN A 10.96.0.10\n",
    );
    for (n, ip) in &ips {
        writeln!(queries, "{n}.default.svc.cluster.local A")?;
        writeln!(zone, "{n}.default.svc IN A {ip}")?;
    }
    std::fs::write(dir.join("queries"), &queries)?;
    std::fs::write(dir.join("cluster.local.zone"), &zone)?;

    let plan = tb.plan();
    let pod_ip = |n: &str| plan.pods.iter().find(|p| p.name == n).map(|p| p.ip);
    let nsd_ip = pod_ip("nsd").context("the nsd pod")?;
    let client = plan
        .pods
        .iter()
        .find(|p| p.name == "dnsperf")
        .context("the dnsperf pod")?
        .netns
        .clone();
    let coredns_ip = cp
        .store
        .list(Kind::Pod, Some(crate::dns::addon::NAMESPACE))
        .into_iter()
        .filter_map(|o| match o {
            Object::Pod(p) => {
                let st = p.status?;
                (st.host_ip.as_deref() == Some(&plan.nodes[1].ip.to_string()))
                    .then_some(st.pod_ip)
                    .flatten()
            }
            _ => None,
        })
        .next()
        .context("a coredns pod on node-2")?;

    let conf = format!(
        "server:\n  ip-address: {nsd_ip}\n  port: 53\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: \"cluster.local\"\n  zonefile: \"cluster.local.zone\"\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nsd.conf"), conf)?;
    let mut nsd = tokio::process::Command::new("nsenter")
        .arg(format!(
            "--net={}",
            netns::netns_path(&plan.pods[1].netns).display()
        ))
        .args(["--", "nsd", "-d", "-c"])
        .arg(dir.join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start nsd")?;
    // NSD answers once it has loaded the zone.
    let mut up = false;
    for _ in 0..100 {
        if dig(
            &client,
            &nsd_ip.to_string(),
            "svc-0.default.svc.cluster.local",
        )
        .await
        .is_some_and(|a| !a.is_empty())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !up {
        stop(&mut nsd).await;
        let out = nsd.wait_with_output().await?;
        bail!(
            "nsd did not answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    println!(
        "bench dns: {} Services, dnsperf in a pod of node-1 for {seconds} s per target, {outstanding} queries in flight (testbed {})",
        ips.len(),
        tb.name()
    );
    let targets = [
        ("testbed DNS, a coredns pod on node-2", coredns_ip.clone()),
        ("testbed DNS, kube-dns ClusterIP", plan.dns_ip.to_string()),
        ("NSD 4.6, a pod on node-2", nsd_ip.to_string()),
    ];
    let mut results = Vec::new();
    for (what, server) in &targets {
        let out = dnsperf(&client, server, &dir.join("queries"), seconds, outstanding).await?;
        let p = parse(&out)?;
        println!(
            "  {what:<38} {:>9.0} queries/s, {} sent, {} lost, {} NOERROR",
            p.qps, p.sent, p.lost, p.noerror
        );
        results.push(p);
    }
    stop(&mut nsd).await;
    let (ours, theirs) = (&results[0], &results[2]);
    println!(
        "  testbed DNS / NSD: {:.2}x the queries per second (target: at least 0.5x, none lost)",
        ours.qps / theirs.qps
    );
    Ok(())
}

/// Stops NSD as its init script does (SIGTERM: it stops its server processes and
/// waits for them), killing it only if it does not end in 5 s.
async fn stop(nsd: &mut tokio::process::Child) {
    if let Some(pid) = nsd.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(5), nsd.wait())
        .await
        .is_err()
    {
        let _ = nsd.start_kill();
        let _ = nsd.wait().await;
    }
}

async fn dig(client_netns: &str, server: &str, name: &str) -> Option<String> {
    let out = tokio::process::Command::new("nsenter")
        .arg(format!(
            "--net={}",
            netns::netns_path(client_netns).display()
        ))
        .args(["--", "dig", "+short", "+time=1", "+tries=1"])
        .arg(format!("@{server}"))
        .arg(name)
        .output()
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn dnsperf(
    client_netns: &str,
    server: &str,
    queries: &Path,
    seconds: u32,
    outstanding: u32,
) -> Result<String> {
    let out = tokio::process::Command::new("nsenter")
        .arg(format!(
            "--net={}",
            netns::netns_path(client_netns).display()
        ))
        .args(["--", "dnsperf", "-s", server, "-d"])
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-q", &outstanding.to_string()])
        .output()
        .await
        .context("run dnsperf")?;
    if !out.status.success() {
        bail!(
            "dnsperf failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dnsperfs_statistics() {
        let out = "Statistics:\n\n  Queries sent:         419667\n  Queries completed:    419660 (100.00%)\n  Queries lost:         7 (0.00%)\n\n  Response codes:       NOERROR 419660 (100.00%)\n  Average packet size:  request 49, response 65\n  Run time (s):         10.003\n  Queries per second:   41951.200000\n";
        let p = parse(out).unwrap();
        assert_eq!(
            (p.sent, p.completed, p.lost, p.noerror),
            (419667, 419660, 7, 419660)
        );
        assert!((p.qps - 41951.2).abs() < 1e-6);
        assert!(parse("dnsperf: error").is_err());
    }
}

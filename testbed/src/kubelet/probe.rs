//! Readiness probes, run for real the way kubelet runs them: `tcpSocket` and
//! `httpGet` connect to the pod's IP from its node's namespace (kubelet lives on the
//! node), `exec` runs the command inside the pod.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::netns;

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Tcp {
        port: u16,
    },
    Http {
        port: u16,
        path: String,
    },
    Exec {
        command: Vec<String>,
    },
    /// A `preStop` hook's `sleep`.
    Sleep(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    pub container: String,
    pub check: Check,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// Where a probe runs.
#[derive(Debug, Clone)]
pub struct Target {
    pub testbed: String,
    pub node_netns: String,
    pub pod: String,
    pub namespace: String,
    pub ip: Ipv4Addr,
    pub exe: PathBuf,
    /// Who exec probes run as (the pod's identity); `None` when it may not run.
    pub user: Option<super::identity::Identity>,
}

fn port_of(port: &IntOrString, c: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// The readiness probe of `c`, if it has one admission accepted.
pub fn readiness(c: &Container) -> Option<ProbeSpec> {
    of(c.readiness_probe.as_ref()?, c)
}

/// The liveness probe of `c`.
pub fn liveness(c: &Container) -> Option<ProbeSpec> {
    of(c.liveness_probe.as_ref()?, c)
}

/// The startup probe of `c`.
pub fn startup(c: &Container) -> Option<ProbeSpec> {
    of(c.startup_probe.as_ref()?, c)
}

/// What `c`'s `preStop` hook runs (`exec` or `httpGet`; a `sleep` is [`Check::Sleep`]),
/// within `grace`.
pub fn pre_stop(c: &Container, grace: Duration) -> Option<ProbeSpec> {
    let h = c.lifecycle.as_ref()?.pre_stop.as_ref()?;
    let check = if let Some(e) = &h.exec {
        Check::Exec {
            command: e.command.clone().unwrap_or_default(),
        }
    } else if let Some(g) = &h.http_get {
        Check::Http {
            port: port_of(&g.port, c)?,
            path: g.path.clone().unwrap_or_else(|| "/".into()),
        }
    } else if let Some(s) = &h.sleep {
        Check::Sleep(Duration::from_secs(s.seconds.max(0) as u64))
    } else {
        return None;
    };
    Some(ProbeSpec {
        container: c.name.clone(),
        check,
        initial_delay: Duration::ZERO,
        period: grace,
        timeout: grace,
        success_threshold: 1,
        failure_threshold: 1,
    })
}

fn of(p: &Probe, c: &Container) -> Option<ProbeSpec> {
    let check = if let Some(t) = &p.tcp_socket {
        Check::Tcp {
            port: port_of(&t.port, c)?,
        }
    } else if let Some(h) = &p.http_get {
        Check::Http {
            port: port_of(&h.port, c)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
        }
    } else if let Some(e) = &p.exec {
        Check::Exec {
            command: e.command.clone().unwrap_or_default(),
        }
    } else {
        return None;
    };
    let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
    Some(ProbeSpec {
        container: c.name.clone(),
        check,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_millis(100)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_millis(100)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}

/// What a probe is for, which decides when running it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ends when it passes (`Ok`) or fails its threshold (`Err`).
    Startup,
    /// Ends when it fails its threshold; it passes until then.
    Liveness,
    /// Never ends; it reports each change.
    Readiness,
}

/// Runs probe `p` on its period from its initial delay, as kubelet's prober worker:
/// `report` is told each change of its result (`successThreshold` passes in a row
/// make it pass, `failureThreshold` failures fail it; a readiness probe fails until it
/// first passes). Returns as its [`Kind`] says, with the last error.
pub async fn run(
    runtime: &dyn super::PodRuntime,
    target: &Target,
    p: &ProbeSpec,
    kind: Kind,
    report: &mut (dyn FnMut(bool) + Send),
) -> Result<(), String> {
    let (mut passing, mut successes, mut failures) = (kind == Kind::Liveness, 0, 0);
    let mut next = tokio::time::Instant::now() + p.initial_delay;
    loop {
        tokio::time::sleep_until(next).await;
        next += p.period;
        match runtime.probe(target, p).await {
            Ok(()) => {
                (successes, failures) = (successes + 1, 0);
                if successes >= p.success_threshold && !passing {
                    passing = true;
                    report(true);
                }
                if passing && kind == Kind::Startup {
                    return Ok(());
                }
            }
            Err(e) => {
                (successes, failures) = (0, failures + 1);
                if failures >= p.failure_threshold {
                    if passing {
                        passing = false;
                        report(false);
                    }
                    if kind != Kind::Readiness {
                        return Err(e);
                    }
                }
            }
        }
    }
}

async fn connect(t: &Target, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let socket = netns::run_in(&t.node_netns, tokio::net::TcpSocket::new_v4)?;
    socket.connect(SocketAddrV4::new(t.ip, port).into()).await
}

async fn check(t: &Target, c: &Check) -> Result<(), String> {
    match c {
        Check::Tcp { port } => connect(t, *port)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Check::Http { port, path } => {
            let mut s = connect(t, *port).await.map_err(|e| e.to_string())?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {}:{port}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n",
                t.ip
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 256];
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            let line = String::from_utf8_lossy(&buf[..n]);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
        Check::Sleep(d) => {
            tokio::time::sleep(*d).await;
            Ok(())
        }
        Check::Exec { command } => {
            let user = t
                .user
                .ok_or("the pod's securityContext does not let its commands run")?;
            let status = tokio::process::Command::new(&t.exe)
                .args(["exec", "-t", &t.testbed, "--user", &user.arg()])
                .args([&format!("{}/{}", t.namespace, t.pod), "--"])
                .args(command)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| e.to_string())?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("command {command:?} exited with {status}"))
            }
        }
    }
}

/// Runs the probe once, within its timeout.
pub async fn run_once(t: &Target, spec: &ProbeSpec) -> Result<(), String> {
    match tokio::time::timeout(spec.timeout, check(t, &spec.check)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", spec.timeout)),
    }
}

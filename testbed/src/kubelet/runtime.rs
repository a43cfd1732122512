//! What a kubelet asks of the machine to run a pod, behind one trait (upstream's
//! kubelet has the CRI for this): make the pod's sandbox (its namespace, veth,
//! address and files), start its containers, run a probe, remove the sandbox. The
//! real [`Machine`] does it with netlink, namespaces and processes; the kubelet's
//! tests use a recording fake, so the pod lifecycle runs without root.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use tokio::task::JoinHandle;

use super::{env, identity, logs, netexec, probe, Config};
use crate::plan::PodPlan;
use crate::{names, netns, state, topology};

/// The pod runtime.
#[async_trait::async_trait]
pub trait PodRuntime: Send + Sync + 'static {
    /// Whether pod `namespace/name`'s sandbox exists already (a pod made with the
    /// cluster, which the kubelet adopts).
    fn sandbox_exists(&self, namespace: &str, name: &str) -> bool;

    /// Makes the pod's sandbox on node `node` (an index into [`Config::nodes`]).
    async fn create_sandbox(&self, node: usize, pod: &PodPlan) -> Result<(), SandboxError>;

    /// Readies the pod's files for its containers (its /tmp, its ServiceAccount
    /// token): a line per problem.
    async fn prepare(&self, pod: &PodPlan, spec: &PodSpec) -> Vec<String>;

    /// Starts container `c` of the pod in its sandbox.
    async fn start_container(
        &self,
        pod: &PodPlan,
        spec: &PodSpec,
        c: &Container,
    ) -> Result<Box<dyn Processes>, StartError>;

    /// Runs one probe once.
    async fn probe(&self, target: &probe::Target, spec: &probe::ProbeSpec) -> Result<(), String>;

    /// Removes the pod's sandbox on node `node` (an index into the nodes) and its files.
    async fn remove_sandbox(&self, node: usize, pod: &PodPlan);
}

/// Why a pod's sandbox could not be made: the runtime's own error, its causes kept.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SandboxError(pub Box<dyn std::error::Error + Send + Sync>);

/// What runs of one container; dropping it stops it too.
#[async_trait::async_trait]
pub trait Processes: Send {
    /// Stops it (SIGKILL) and waits until it has ended.
    async fn kill(&mut self);

    /// Stops it as a kubelet stops a container: SIGTERM, then up to `grace` for it
    /// to end, then SIGKILL. Its exit code.
    async fn terminate(&mut self, grace: std::time::Duration) -> i32 {
        let _ = grace;
        self.kill().await;
        KILLED
    }

    /// Waits until it ends by itself: its exit code. A server runs until stopped.
    async fn wait(&mut self) -> i32 {
        std::future::pending().await
    }
}

/// Why a container did not start.
#[derive(Debug, Clone, PartialEq)]
pub enum StartError {
    /// Its configuration may not run (kubelet's `CreateContainerConfigError`): it
    /// waits, and is not tried again, as the pod's spec cannot change.
    Config(String),
    /// It was tried and failed (`StartError`, exit code 128).
    Start(String),
}

impl From<String> for StartError {
    fn from(e: String) -> Self {
        StartError::Start(e)
    }
}

/// The exit code of a process ended by SIGKILL, as runtimes report it.
pub const KILLED: i32 = 137;
/// ... and by SIGTERM.
pub const TERMINATED: i32 = 143;

/// The real runtime: netlink handles in each node's namespace.
pub struct Machine {
    cfg: Arc<Config>,
    netlink: Vec<rtnetlink::Handle>,
}

impl Machine {
    /// Starts a container that has a `command`: a real process in the pod, as the
    /// container's user, its output into the container's log.
    fn start_command(
        &self,
        pod: &PodPlan,
        spec: &PodSpec,
        c: &k8s_openapi::api::core::v1::Container,
        log: &logs::Log,
    ) -> Result<tokio::process::Child, StartError> {
        let cfg = &self.cfg;
        let who = identity::of(spec, Some(c), cfg.owner_uid).map_err(StartError::Config)?;
        let env = env::container(c, who.uid, cfg.api_service_ip());
        let argv: Vec<String> = c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .map(|a| env::expand(a, &env))
            .collect();
        let mut child = tokio::process::Command::new(&cfg.exe)
            .args(["exec", "-t", &cfg.testbed, "--user", &who.arg()])
            .args([&format!("{}/{}", pod.namespace, pod.name), "--"])
            .args(&argv)
            .env_clear()
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {argv:?}: {e}"))?;
        if let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) {
            log.copy(out, "stdout");
            log.copy(err, "stderr");
        }
        Ok(child)
    }

    /// Opens a netlink handle in every node's namespace.
    pub async fn open(cfg: Arc<Config>) -> Result<Self, String> {
        let rt = tokio::runtime::Handle::current();
        let mut netlink = Vec::new();
        for n in &cfg.nodes {
            let (name, rt) = (n.netns.clone(), rt.clone());
            let opened = tokio::task::spawn_blocking(move || netns::open_netlink(&name, &rt))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| crate::errors::chain(&e)));
            match opened {
                Ok(h) => netlink.push(h),
                Err(e) => return Err(format!("cannot open netlink in {}: {e}", n.netns)),
            }
        }
        Ok(Machine { cfg, netlink })
    }
}

#[async_trait::async_trait]
impl PodRuntime for Machine {
    fn sandbox_exists(&self, namespace: &str, name: &str) -> bool {
        netns::netns_path(&names::pod_netns(&self.cfg.testbed, namespace, name)).exists()
    }

    async fn create_sandbox(&self, node: usize, pod: &PodPlan) -> Result<(), SandboxError> {
        let cfg = &self.cfg;
        topology::add_pod(pod, &self.netlink[node], &cfg.shared_etc, &cfg.cluster_dns)
            .await
            .map_err(|e| SandboxError(Box::new(e)))
    }

    async fn prepare(&self, pod: &PodPlan, spec: &PodSpec) -> Vec<String> {
        let pod_dir = state::pod_dir(&self.cfg.testbed, &pod.namespace, &pod.name);
        let _ = std::fs::create_dir_all(pod_dir.join("tmp"));
        // Its /tmp, as a container's: anyone may write, no one may remove another's files.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(
                pod_dir.join("tmp"),
                std::fs::Permissions::from_mode(0o1777),
            );
        }
        match self.mount_service_account(pod, spec, &pod_dir) {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!("the ServiceAccount token: {e}")],
        }
    }

    async fn start_container(
        &self,
        pod: &PodPlan,
        spec: &PodSpec,
        c: &Container,
    ) -> Result<Box<dyn Processes>, StartError> {
        let mut running = Running::default();
        self.start_one(pod, spec, c, &mut running).await?;
        Ok(Box::new(running))
    }

    async fn probe(&self, target: &probe::Target, spec: &probe::ProbeSpec) -> Result<(), String> {
        probe::run_once(target, spec).await
    }

    async fn remove_sandbox(&self, node: usize, pod: &PodPlan) {
        topology::remove_pod(pod, &self.netlink[node]).await;
        let _ =
            std::fs::remove_dir_all(state::pod_dir(&self.cfg.testbed, &pod.namespace, &pod.name));
        let _ = std::fs::remove_dir_all(self.cfg.shared_etc.join(&pod.namespace).join(&pod.name));
    }
}

impl Machine {
    /// Writes the pod's ServiceAccount files (a token, the CA, the namespace) where
    /// `testbed exec` shows them to its containers, unless the pod opts out or the
    /// API serves no pods. Only root can read them on the machine.
    fn mount_service_account(
        &self,
        pod: &PodPlan,
        spec: &PodSpec,
        pod_dir: &std::path::Path,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let Some(accounts) = &self.cfg.service_accounts else {
            return Ok(());
        };
        if spec.automount_service_account_token == Some(false) {
            return Ok(());
        }
        let account = spec
            .service_account_name
            .as_deref()
            .or(spec.service_account.as_deref())
            .unwrap_or("default");
        let dir = pod_dir.join("serviceaccount");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let token = accounts.tokens.issue(&pod.namespace, account, &pod.name);
        for (name, text) in [
            ("token", token.as_str()),
            ("ca.crt", accounts.ca_pem.as_str()),
            ("namespace", pod.namespace.as_str()),
        ] {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join(name))?;
            std::io::Write::write_all(&mut f, text.as_bytes())?;
        }
        Ok(())
    }

    /// Starts container `c`: its `command` as a real process inside the pod, the
    /// cluster DNS for a DNS image, or else the netexec server on each of its ports.
    async fn start_one(
        &self,
        pod: &PodPlan,
        spec: &PodSpec,
        c: &k8s_openapi::api::core::v1::Container,
        running: &mut Running,
    ) -> Result<(), StartError> {
        let cfg = &self.cfg;
        let log = logs::Log::open(logs::path(&cfg.testbed, &pod.namespace, &pod.name, &c.name));
        if c.command.as_ref().is_some_and(|c| !c.is_empty()) {
            let child = self.start_command(pod, spec, c, &log)?;
            running.children.push(child);
            return Ok(());
        }
        if let (Some(dns), true) = (
            &cfg.dns,
            c.image.as_deref().is_some_and(crate::dns::is_dns_image),
        ) {
            // The cluster DNS server, on the container's port 53 (UDP and TCP).
            let ports = c.ports.iter().flatten().filter(|p| p.container_port == 53);
            let udp = ports.clone().any(|p| p.protocol.as_deref() == Some("UDP"));
            let tcp = ports.clone().any(|p| p.protocol.as_deref() != Some("UDP"));
            let server = crate::dns::serve::serve(&pod.netns, 53, udp, tcp, dns.handler())
                .await
                .map_err(|e| StartError::Start(format!("DNS server: {e}")))?;
            log.line(
                "stdout",
                &format!(
                    ".:53 on {} ({}): the cluster DNS (hickory-server)",
                    pod.ip,
                    [(udp, "udp"), (tcp, "tcp")]
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, p)| *p)
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            );
            running.dns.push(server);
            return Ok(());
        }
        running.delay_shutdown = running.delay_shutdown.max(netexec::delay_shutdown(c));
        for p in c.ports.iter().flatten() {
            let Ok(port) = u16::try_from(p.container_port) else {
                continue;
            };
            let (pod_name, netns_name) = (pod.name.clone(), pod.netns.clone());
            let udp = p.protocol.as_deref() == Some("UDP");
            let what = format!(
                "container {} port {port}/{}",
                c.name,
                if udp { "UDP" } else { "TCP" }
            );
            // As agnhost netexec logs its servers starting.
            log.line(
                "stderr",
                &format!(
                    "Started {} server on port {port}",
                    if udp { "UDP" } else { "HTTP" }
                ),
            );
            match netexec::bind(&netns_name, port, udp) {
                Ok(bound) => running.servers.push(tokio::spawn(async move {
                    if let Err(e) = netexec::serve(pod_name, bound).await {
                        tracing::error!("{what}: {e}");
                    }
                })),
                // agnhost exits when it cannot listen: the container fails to start.
                Err(e) => return Err(StartError::Start(format!("{what}: {e}"))),
            }
        }
        Ok(())
    }
}

/// A container on this machine: netexec servers, a DNS server, or its process.
#[derive(Default)]
struct Running {
    servers: Vec<JoinHandle<()>>,
    dns: Vec<crate::dns::serve::DnsServer>,
    children: Vec<tokio::process::Child>,
    /// How long the netexec servers keep serving after SIGTERM (agnhost's
    /// `--delay-shutdown`).
    delay_shutdown: std::time::Duration,
}

#[async_trait::async_trait]
impl Processes for Running {
    async fn kill(&mut self) {
        // Their sockets are closed when this returns: a restart can listen again.
        for s in self.servers.drain(..) {
            s.abort();
            let _ = s.await;
        }
        self.dns.clear();
        for c in &mut self.children {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    async fn terminate(&mut self, grace: std::time::Duration) -> i32 {
        let deadline = tokio::time::Instant::now() + grace;
        for c in &self.children {
            if let Some(pid) = c.id() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
        }
        // agnhost netexec ends at SIGTERM, or serves on for its --delay-shutdown
        // and then exits 0.
        let servers = tokio::time::sleep_until(
            deadline.min(tokio::time::Instant::now() + self.delay_shutdown),
        );
        let children = async {
            let mut code = None;
            for c in &mut self.children {
                if let Ok(status) = c.wait().await {
                    code = code.or(Some(exit_code(status)));
                }
            }
            code
        };
        let (_, ended) = tokio::join!(servers, tokio::time::timeout_at(deadline, children));
        self.kill().await;
        match ended {
            Ok(Some(code)) => code,
            Err(_) => KILLED,
            Ok(None) if self.delay_shutdown > std::time::Duration::ZERO => 0,
            Ok(None) => TERMINATED,
        }
    }

    async fn wait(&mut self) -> i32 {
        match self.children.first_mut() {
            Some(c) => c.wait().await.map_or(KILLED, exit_code),
            None => std::future::pending().await,
        }
    }
}

/// A process's exit code as runtimes report it: its own, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .unwrap_or(KILLED)
}

impl Drop for Running {
    fn drop(&mut self) {
        // The processes are killed on drop (`kill_on_drop`), the DNS servers stop.
        for s in &self.servers {
            s.abort();
        }
    }
}

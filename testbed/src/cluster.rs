//! One cluster, started and stopped in one order for `testbed up`'s background
//! process, `testbed run` and the benchmarks: the topology (namespaces, links), the
//! control plane (store, controllers, kubelets, kube-proxies, DNS), the API server's
//! socket, the cluster DNS coming up, the scenario's objects, and the barrier that
//! waits for them to reach the DNS and every node's rules. Shutdown is the reverse:
//! the API socket, the control plane's tasks (pods' processes are killed), then the
//! namespaces.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::api::tokens::{ServiceAccounts, Tokens};
use crate::control::{ControlPlane, ControlPlaneError};
use crate::lifecycle::{Teardown, Testbed, UpError};
use crate::plan::Plan;
use crate::scenario::Scenario;
use crate::{dns, rest, state};

/// How long the cluster DNS, and then the scenario's objects, may take to settle.
pub const SETTLE: Duration = Duration::from_secs(20);

/// How to start.
pub struct Options<'a> {
    /// The `testbed` program: kubelets run container commands and exec probes
    /// through it (a test binary is not one).
    pub exe: PathBuf,
    /// The scenario file: kept in the testbed's record and named by problems with
    /// its objects.
    pub file: Option<&'a Path>,
    /// Serve the API on the testbed's socket, for `testbed get -t NAME` and friends.
    pub serve_api: bool,
    /// Told how many pods are wired, as they are.
    pub progress: &'a (dyn Fn(usize) + Sync),
}

impl Options<'_> {
    /// No file, no API socket, no progress: what the benchmarks start.
    pub fn bare() -> std::io::Result<Options<'static>> {
        Ok(Options {
            exe: std::env::current_exe()?,
            file: None,
            serve_api: false,
            progress: &|_| {},
        })
    }
}

/// Why a cluster did not start. Everything it had made is gone by then.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Topology(#[source] UpError),
    #[error(transparent)]
    ControlPlane(ControlPlaneError),
    #[error("cannot serve the Kubernetes API: {0}")]
    Rest(String),
    #[error("cannot serve the API on {}: {source}", .path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Dns(ControlPlaneError),
    /// Admission's problems with the scenario's objects, at their files and lines.
    #[error("{0}")]
    Objects(String),
    #[error("the objects did not reach the DNS and every node's rules in {} s", .0.as_secs())]
    Settle(Duration),
    #[error("{why} during the bring-up: testbed {name} was stopped before it was ready")]
    Stopped { why: &'static str, name: String },
}

/// A failed start: what it had done, a line each, and why it stopped.
#[derive(Debug)]
pub struct StartFailure {
    pub setup: Vec<String>,
    pub error: StartError,
}

/// The API server's certificates and the pods' tokens.
struct Credentials {
    pki: rest::Pki,
    accounts: Arc<ServiceAccounts>,
}

impl Credentials {
    /// Fresh ones for `plan`: the server's certificate is valid on loopback, at the
    /// `kubernetes` Service's ClusterIP and at the first node's address.
    fn make(plan: &Plan) -> Result<Credentials, String> {
        let service_ip = crate::api::kubernetes::cluster_ip(plan.service_cidr);
        let loopback = std::net::Ipv4Addr::LOCALHOST;
        let mut addresses: Vec<std::net::IpAddr> = vec![loopback.into(), service_ip.into()];
        addresses.extend(plan.nodes.first().map(|n| std::net::IpAddr::from(n.ip)));
        let pki = rest::Pki::make(&plan.testbed, &plan.cluster_domain, &addresses)
            .map_err(|e| format!("certificates: {e}"))?;
        let issuer = format!(
            "https://kubernetes.default.svc.{}",
            plan.cluster_domain.trim_end_matches('.')
        );
        let tokens =
            Tokens::new(&issuer).map_err(|_| "a key for tokens: no randomness".to_string())?;
        let accounts = Arc::new(ServiceAccounts {
            tokens,
            ca_pem: pki.ca_pem.clone(),
            service_ip,
        });
        Ok(Credentials { pki, accounts })
    }
}

/// A running cluster. [`Cluster::shutdown`] stops it in order; dropping it (an
/// error, a panic) aborts the API socket and the control plane's tasks and removes
/// the namespaces, without waiting for the tasks to end.
pub struct Cluster {
    control: Arc<ControlPlane>,
    /// The Kubernetes REST API (on the testbed's socket, and HTTPS on loopback and on
    /// the API server's node).
    rest: Vec<JoinHandle<()>>,
    /// Its certificates and the pods' tokens, made before the kubelets start.
    credentials: Option<Credentials>,
    /// What the start did, a line each: the build, the DNS, each object applied.
    pub setup: Vec<String>,
    /// The lines about the scenario's objects (the end of `setup`).
    pub objects: Vec<String>,
    /// `None` only once shut down.
    testbed: Option<Testbed>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for server in self.rest.drain(..) {
            server.abort();
        }
        self.control.abort();
        // Then the testbed drops, which removes what it made.
    }
}

impl Cluster {
    /// Builds the cluster of `scenario` as testbed `name`, starts its control plane,
    /// waits for the cluster DNS, applies the scenario's objects and waits until they
    /// reach the DNS and every node's rules. `stop` (a signal) ends the start at any
    /// point, with everything made removed.
    pub async fn start(
        name: &str,
        scenario: &Scenario,
        opts: Options<'_>,
        stop: impl Future<Output = &'static str>,
    ) -> Result<Cluster, StartFailure> {
        tokio::pin!(stop);
        let stopped = |why| StartFailure {
            setup: Vec::new(),
            error: StartError::Stopped {
                why,
                name: name.into(),
            },
        };
        let source = opts.file.map(Path::to_path_buf);
        let testbed = tokio::select! {
            tb = Testbed::up_with_progress(name, scenario, source, opts.progress) => tb,
            why = &mut stop => return Err(stopped(why)),
        };
        let fail = |error| StartFailure {
            setup: Vec::new(),
            error,
        };
        let testbed = testbed.map_err(|e| fail(StartError::Topology(e)))?;
        let setup = vec![format!(
            "testbed {name}: {} nodes, {} pods in {:.0} ms",
            testbed.plan().nodes.len(),
            testbed.plan().pods.len(),
            testbed.times.total.as_secs_f64() * 1e3
        )];
        let credentials = if opts.serve_api {
            Some(Credentials::make(testbed.plan()).map_err(|e| fail(StartError::Rest(e)))?)
        } else {
            None
        };
        let control = ControlPlane::start_with(
            testbed.plan(),
            scenario,
            state::dir(name).join("etc"),
            opts.exe.clone(),
            credentials.as_ref().map(|c| c.accounts.clone()),
        )
        .map_err(|e| StartFailure {
            setup: setup.clone(),
            error: StartError::ControlPlane(e),
        })?;
        let mut cluster = Cluster {
            control: Arc::new(control),
            rest: Vec::new(),
            credentials,
            setup,
            objects: Vec::new(),
            testbed: Some(testbed),
        };
        let result = tokio::select! {
            r = cluster.come_up(scenario, &opts) => r,
            why = &mut stop => Err(StartError::Stopped { why, name: name.into() }),
        };
        match result {
            Ok(()) => Ok(cluster),
            Err(error) => {
                let setup = std::mem::take(&mut cluster.setup);
                cluster.shutdown().await;
                Err(StartFailure { setup, error })
            }
        }
    }

    /// The stages after the control plane starts.
    async fn come_up(&mut self, scenario: &Scenario, opts: &Options<'_>) -> Result<(), StartError> {
        if opts.serve_api {
            self.rest = self.serve_rest(&opts.exe).await?;
        }
        self.control
            .wait_dns(SETTLE)
            .await
            .map_err(StartError::Dns)?;
        self.setup.push(format!(
            "cluster DNS ready: {}/kube-dns has {} endpoints",
            dns::addon::NAMESPACE,
            dns::addon::REPLICAS
        ));
        let file = opts.file.unwrap_or(Path::new("the scenario"));
        self.objects = crate::scenario::objects::apply(&self.control.api, file, &scenario.objects)
            .map_err(StartError::Objects)?;
        self.setup.extend(self.objects.iter().cloned());
        // The cluster is ready when it has settled: records and rules in place.
        let rev = *self.control.store.subscribe().borrow();
        if !self.control.wait_synced(rev, SETTLE).await {
            return Err(StartError::Settle(SETTLE));
        }
        Ok(())
    }

    /// Starts the Kubernetes REST API on the testbed's socket (the CLI's door), on a
    /// loopback port and on the first node's address (where pods reach it through
    /// the `kubernetes` Service, as they reach kind's control-plane node), writes the
    /// owner's kubeconfig and registers the node's address as the Service's endpoint.
    async fn serve_rest(&mut self, exe: &Path) -> Result<Vec<JoinHandle<()>>, StartError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| StartError::Rest(format!("{what}: {e}"));
        let Some(Credentials { pki, accounts }) = self.credentials.take() else {
            return Err(StartError::Rest("no certificates were made".into()));
        };
        let path = state::api_socket(self.name());
        let local = rest::local::bind(&path).map_err(|source| StartError::Socket {
            path: path.clone(),
            source,
        })?;
        let listener = rest::bind()
            .await
            .map_err(|e| fail("bind a loopback port", &e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| fail("read the port", &e))?;
        let node = &self.plan().nodes[0];
        let in_cluster = std::net::SocketAddr::from((node.ip, crate::api::kubernetes::PORT));
        let pods = rest::bind_in(&node.netns, in_cluster)
            .map_err(|e| fail(&format!("bind {in_cluster} in {}", node.netns), &e))?;
        let server = format!("https://{addr}");
        let name = self.name();
        rest::pki::write_private(
            &state::kubeconfig_path(name),
            &pki.kubeconfig(name, &server),
            0o600,
            self.testbed().owner_uid(),
        )
        .map_err(|e| fail("write the kubeconfig", &e))?;
        let door = Arc::new(rest::Door::new(
            self.control.api.clone(),
            pki,
            accounts,
            server,
            rest::Testbed {
                name: name.to_string(),
                exe: exe.to_path_buf(),
                owner_uid: self.testbed().owner_uid(),
                nodes: {
                    let cp = self.control.clone();
                    Arc::new(move || cp.node_status())
                },
            },
        ));
        crate::api::kubernetes::register(&self.control.store, node.ip);
        Ok(vec![
            tokio::spawn(rest::local::serve(local, door.clone())),
            tokio::spawn(rest::serve(listener, door.clone())),
            tokio::spawn(rest::serve(pods, door)),
        ])
    }

    pub fn name(&self) -> &str {
        self.testbed().name()
    }

    pub fn plan(&self) -> &Plan {
        self.testbed().plan()
    }

    pub fn testbed(&self) -> &Testbed {
        self.testbed
            .as_ref()
            .expect("a cluster has its testbed until shut down")
    }

    pub fn control(&self) -> &Arc<ControlPlane> {
        &self.control
    }

    /// Stops the API socket, then the control plane's tasks, then removes the
    /// namespaces, links and files.
    pub async fn shutdown(mut self) -> Teardown {
        for server in self.rest.drain(..) {
            server.abort();
            let _ = server.await;
        }
        self.control.stop().await;
        let testbed = self.testbed.take().expect("shut down once");
        testbed.down()
    }
}

//! The scenario runner: builds the scenario's cluster in this process, applies its
//! objects, replays its steps against the same API server the CLI talks to, probes
//! from inside pods, checks each step's expectations and snapshots, and tears it all
//! down. Each step's report says what happened, what was expected and what was seen,
//! at the step's file:line.

pub mod expect;
mod faults;
pub mod snapshots;
pub mod views;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::api::{Key, Kind, Object};
use crate::cluster::{self, Cluster, StartError};
use crate::control::ControlPlane;
use crate::probe::connect::Outcome;
use crate::probe::dns::{Answer, Resolv};
use crate::scenario::objects::Manifest;
use crate::scenario::steps::{ns_name, Action, Connect, DnsQuery, Step, Until, View};
use crate::scenario::Scenario;
use crate::{names, netns};
use expect::Mismatch;
use snapshots::Snapshots;

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `testbed` program: kubelets run container commands through it, and `exec`
    /// steps too.
    pub exe: PathBuf,
    /// The testbed's name (default: the scenario's).
    pub name: Option<String>,
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// 1-based.
    pub number: usize,
    /// `scenarios/x.yaml:12:5`.
    pub at: String,
    pub title: String,
    /// What happened.
    pub lines: Vec<String>,
    pub mismatches: Vec<Mismatch>,
    /// The step could not do what it says.
    pub error: Option<String>,
    pub took: Duration,
}

impl StepReport {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.mismatches.is_empty()
    }

    /// The failure as a user reads it: where, which step, expected and seen.
    pub fn failure(&self) -> Option<String> {
        if self.passed() {
            return None;
        }
        let mut out = format!("{}: step {} ({}) failed", self.at, self.number, self.title);
        if let Some(e) = &self.error {
            out += &format!(":\n  {}", e.replace('\n', "\n  "));
        }
        for m in &self.mismatches {
            out += &format!(
                "\n  {}:\n    expected: {}\n    seen:     {}",
                m.what,
                m.expected,
                m.seen.replace('\n', "\n              ")
            );
        }
        Some(out)
    }
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub file: PathBuf,
    /// How the cluster came up (or why it did not).
    pub setup: Vec<String>,
    pub setup_error: Option<String>,
    pub steps: Vec<StepReport>,
    /// Steps left after a failure.
    pub not_run: usize,
    pub took: Duration,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.setup_error.is_none() && self.steps.iter().all(StepReport::passed)
    }

    /// Every failure, as the user reads them.
    pub fn failures(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        if let Some(e) = &self.setup_error {
            out.push(format!("{}: {e}", self.file.display()));
        }
        out.extend(self.steps.iter().filter_map(StepReport::failure));
        out.join("\n")
    }
}

/// What a run tells as it goes.
pub enum Event<'a> {
    /// A line about the cluster coming up and the scenario's objects.
    Setup(&'a str),
    /// A step ended.
    Step(&'a StepReport),
}

/// Runs `scenario` (read from `file`), telling `progress` of the setup and of each
/// step as it ends.
pub async fn run(
    file: &Path,
    scenario: &Scenario,
    opts: &Options,
    snapshots: &mut dyn Snapshots,
    progress: &mut (dyn FnMut(Event<'_>) + Send),
) -> Report {
    let start = Instant::now();
    let mut report = Report {
        scenario: scenario.name.clone(),
        file: file.to_path_buf(),
        setup: Vec::new(),
        setup_error: None,
        steps: Vec::new(),
        not_run: 0,
        took: Duration::ZERO,
    };
    let name = opts.name.clone().unwrap_or_else(|| scenario.name.clone());
    let started = Cluster::start(
        &name,
        scenario,
        cluster::Options {
            exe: opts.exe.clone(),
            file: Some(file),
            serve_api: true,
            progress: &|_| {},
        },
        std::future::pending(),
    )
    .await;
    let cluster = match started {
        Ok(c) => c,
        Err(failure) => {
            report.setup = failure.setup;
            report.setup_error = Some(match &failure.error {
                StartError::Topology(e) => format!("cannot build the cluster: {e}"),
                StartError::ControlPlane(e) => format!("cannot start the control plane: {e:#}"),
                e => e.to_string(),
            });
            for l in &report.setup {
                progress(Event::Setup(l));
            }
            report.took = start.elapsed();
            return report;
        }
    };
    report.setup = cluster.setup.clone();
    let runner = Runner {
        file,
        scenario,
        plan: cluster.plan().clone(),
        name: name.clone(),
        exe: opts.exe.clone(),
        cp: cluster.control().clone(),
        links: Box::new(crate::kernel::links::Netlink),
    };
    for l in &report.setup {
        progress(Event::Setup(l));
    }
    for (i, step) in scenario.steps.iter().enumerate() {
        let r = runner.step(step, snapshots).await;
        progress(Event::Step(&r));
        let failed = !r.passed();
        report.steps.push(r);
        if failed {
            report.not_run = scenario.steps.len() - i - 1;
            break;
        }
    }
    cluster.shutdown().await;
    report.took = start.elapsed();
    report
}

struct Runner<'a> {
    file: &'a Path,
    scenario: &'a Scenario,
    plan: crate::plan::Plan,
    name: String,
    exe: PathBuf,
    cp: Arc<ControlPlane>,
    links: Box<dyn crate::kernel::links::Links>,
}

/// What a step's action saw, before its expectations are checked.
#[derive(Default)]
struct Seen {
    lines: Vec<String>,
    mismatches: Vec<Mismatch>,
}

impl Runner<'_> {
    async fn step(&self, step: &Step, snapshots: &mut dyn Snapshots) -> StepReport {
        let start = Instant::now();
        let at = match step.pos {
            Some(p) => format!("{}:{}:{}", self.file.display(), p.line, p.col),
            None => self.file.display().to_string(),
        };
        let mut title = title(&step.action);
        if let (Some(n), false) = (&step.name, step.snapshot_name().is_some()) {
            title = format!("{n}: {title}");
        }
        let result = self.act(step, snapshots).await;
        let (lines, mismatches, error) = match result {
            Ok(seen) => (seen.lines, seen.mismatches, None),
            Err(e) => (Vec::new(), Vec::new(), Some(e)),
        };
        StepReport {
            number: step.index + 1,
            at,
            title,
            lines,
            mismatches,
            error,
            took: start.elapsed(),
        }
    }

    async fn act(&self, step: &Step, snapshots: &mut dyn Snapshots) -> Result<Seen, String> {
        let e = &step.expect;
        if matches!(
            step.action,
            Action::Dns(_) | Action::Connect(_) | Action::Snapshot { .. } | Action::Exec { .. }
        ) {
            // Probes see every change made before them: the records and rules are
            // given the moment they take (milliseconds), so runs repeat exactly.
            let rev = *self.cp.store.subscribe().borrow();
            if !self.cp.wait_synced(rev, Duration::from_secs(10)).await {
                return Err("the DNS and the nodes' rules did not catch up in 10 s".into());
            }
        }
        match &step.action {
            Action::Apply(manifests) => Ok(Seen {
                lines: self.apply(manifests)?,
                ..Default::default()
            }),
            Action::Delete {
                kind,
                namespace,
                name,
            } => {
                let key = Key::new(*kind, namespace, name);
                self.cp.api.delete(&key).map_err(|p| p.to_string())?;
                Ok(lines(format!(
                    "{} {namespace}/{name} deleted",
                    kind.singular()
                )))
            }
            Action::Scale {
                namespace,
                name,
                replicas,
            } => {
                self.cp
                    .api
                    .scale(namespace, name, *replicas)
                    .map_err(|p| join(&p))?;
                Ok(lines(format!(
                    "deployment {namespace}/{name} scaled to {replicas}"
                )))
            }
            Action::Wait { until, timeout } => self.wait(until, *timeout).await.map(lines),
            Action::Dns(q) => {
                let a = self.dns(q).await?;
                let mut seen = Seen {
                    lines: dns_lines(&a),
                    ..Default::default()
                };
                seen.mismatches = expect::dns(e, &a);
                Ok(seen)
            }
            Action::Connect(c) => {
                let (target, outcomes) = self.connect(c).await?;
                let (b, errs) = expect::tally(&outcomes);
                Ok(Seen {
                    lines: vec![format!(
                        "{} to {target}: {}",
                        c.times,
                        expect::describe(&b, &errs)
                    )],
                    mismatches: expect::connect(e, &outcomes),
                })
            }
            Action::Exec { target, argv } => {
                let (code, stdout, stderr) = self.exec(target, argv).await?;
                let mut out = vec![format!("exit code {code}")];
                out.extend(stdout.lines().map(|l| format!("| {l}")));
                out.extend(stderr.lines().map(|l| format!("! {l}")));
                Ok(Seen {
                    lines: out,
                    mismatches: expect::exec(e, code, &stdout),
                })
            }
            Action::Snapshot { name, view } => {
                let content = self.view(view).await?;
                let full = format!("{}@{name}", self.scenario.name);
                let desc = format!("{}: {}", self.scenario.name, title(&step.action));
                let source = self.file.display().to_string();
                match snapshots.check(&full, &desc, &source, &content) {
                    snapshots::Outcome::Matched => Ok(lines(format!("{full}: as stored"))),
                    snapshots::Outcome::Written(p) => {
                        Ok(lines(format!("{full}: written to {}", p.display())))
                    }
                    snapshots::Outcome::New(p) => Err(format!(
                        "snapshot {full} is new: review {} (or run with --accept)\n{}",
                        p.display(),
                        content.trim_end()
                    )),
                    snapshots::Outcome::Changed { diff, pending } => Err(format!(
                        "snapshot {full} differs from the stored one (- stored, + seen); the new one is in {}\n{}",
                        pending.display(),
                        diff.trim_end()
                    )),
                }
            }
            Action::Kill(pod) => {
                let (key, _) = self.pod(pod)?;
                self.kill(&key).await.map(lines)
            }
            Action::Readiness { pod, ready } => {
                let (key, _) = self.pod(pod)?;
                self.readiness(&key, *ready).await.map(lines)
            }
            Action::Node { name, up } => self.node(name, *up).await.map(lines),
            Action::Link { of, up } => {
                let target = match of.strip_prefix("node/") {
                    Some(n) => faults::LinkOf::Node(n.to_string()),
                    None => faults::LinkOf::Pod(self.pod(of)?.0),
                };
                self.link(&target, *up).await.map(lines)
            }
        }
    }

    fn apply(&self, manifests: &[Manifest]) -> Result<Vec<String>, String> {
        crate::scenario::objects::apply(&self.cp.api, self.file, manifests)
    }

    /// A pod reference (`client-1`, `NAMESPACE/NAME`, or a selector `app=web` for the
    /// first such pod by name) to its key and namespace.
    fn pod(&self, r: &str) -> Result<((String, String), String), String> {
        let (ns, rest) = match r.split_once('/') {
            Some((ns, rest)) => (ns.to_string(), rest.to_string()),
            None => ("default".to_string(), r.to_string()),
        };
        let name = if rest.contains('=') {
            let want: Vec<(&str, &str)> = rest
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let mut pods: Vec<String> = self
                .cp
                .store
                .list(Kind::Pod, Some(&ns))
                .into_iter()
                .filter(|o| {
                    let labels = o.meta().labels.clone().unwrap_or_default();
                    want.iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|o| o.name().to_string())
                .collect();
            pods.sort();
            pods.into_iter()
                .next()
                .ok_or_else(|| format!("no pod in namespace {ns} has the labels {rest}"))?
        } else {
            rest
        };
        let netns_name = names::pod_netns(&self.name, &ns, &name);
        if !netns::netns_path(&netns_name).exists() {
            return Err(format!("pod {ns}/{name} is not running"));
        }
        Ok(((ns, name), netns_name))
    }

    async fn dns(&self, q: &DnsQuery) -> Result<Answer, String> {
        let (_, netns_name) = self.pod(&q.from)?;
        let path = Path::new(netns::ETC_NETNS_DIR)
            .join(&netns_name)
            .join("resolv.conf");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let resolv = Resolv::parse(&text);
        crate::probe::dns::resolve(Some(&netns_name), &resolv, &q.name, q.rtype, q.tcp).await
    }

    async fn connect(&self, c: &Connect) -> Result<(String, Vec<Outcome>), String> {
        let (_, netns_name) = self.pod(&c.from)?;
        // As libc does (hosts: files dns): the pod's /etc/hosts first, then DNS.
        let hosts = std::fs::read_to_string(
            Path::new(netns::ETC_NETNS_DIR)
                .join(&netns_name)
                .join("hosts"),
        )
        .unwrap_or_default();
        let from_hosts = hosts_lookup(&hosts, &c.to);
        let ip: Ipv4Addr = match c.to.parse().ok().or(from_hosts) {
            Some(ip) => ip,
            None => {
                let q = DnsQuery {
                    from: c.from.clone(),
                    name: c.to.clone(),
                    rtype: RecordType::A,
                    tcp: false,
                };
                let a = self.dns(&q).await?;
                a.data.iter().find_map(|d| d.parse().ok()).ok_or_else(|| {
                    format!("{} does not resolve from {}: {}", c.to, c.from, a.rcode)
                })?
            }
        };
        let to = SocketAddr::from((ip, c.port));
        let mut outcomes = Vec::new();
        for _ in 0..c.times {
            outcomes.push(
                crate::probe::connect::once(Some(&netns_name), to, c.udp, c.timeout, c.source_port)
                    .await,
            );
        }
        Ok((to.to_string(), outcomes))
    }

    /// Runs `argv` in a pod or `node/NAME` through `testbed exec`: exit code, stdout, stderr.
    async fn exec(&self, target: &str, argv: &[String]) -> Result<(i32, String, String), String> {
        let target = match target.strip_prefix("node/") {
            Some(_) => target.to_string(),
            None => {
                let ((ns, name), _) = self.pod(target)?;
                format!("{ns}/{name}")
            }
        };
        let run = tokio::process::Command::new(&self.exe)
            .args(["exec", "-t", &self.name, &target, "--"])
            .args(argv)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .map_err(|_| format!("{argv:?} in {target} ran for more than 60 s"))?
            .map_err(|e| format!("cannot run {}: {e}", self.exe.display()))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    async fn wait(&self, until: &Until, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let start = Instant::now();
        let mut revision = self.cp.store.subscribe();
        loop {
            // Looked at once the cluster has caught up with the store as it is now
            // (a second at most), so a DNS answer or a rule reflects the same writes
            // as the objects.
            let rev = *revision.borrow_and_update();
            let left = deadline.saturating_duration_since(Instant::now());
            self.cp
                .wait_synced(rev, left.min(Duration::from_secs(1)))
                .await;
            let (done, status) = self.check(until).await;
            if done {
                // The rules follow: wait for every node's kube-proxy to catch up.
                let rev = *self.cp.store.subscribe().borrow();
                let left = deadline.saturating_duration_since(Instant::now());
                if !self
                    .cp
                    .wait_synced(rev, left.max(Duration::from_secs(1)))
                    .await
                {
                    return Err(format!(
                        "{status}, but the DNS and the nodes' rules did not catch up with revision {rev} ({} behind)",
                        self.cp.behind(rev)
                    ));
                }
                return Ok(format!(
                    "{status} after {:.1} s",
                    start.elapsed().as_secs_f64()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out after {timeout:?}: {status}"));
            }
            next_revision(&mut revision, deadline).await;
        }
    }

    /// Whether `until` holds now, and what was seen.
    async fn check(&self, until: &Until) -> (bool, String) {
        match until {
            Until::Endpoints {
                service: (ns, name),
                ready,
                not_ready,
            } => {
                let key = Key::new(Kind::Endpoints, ns, name);
                let (r, n) = match self.cp.store.get(&key) {
                    Some(Object::Endpoints(e)) => {
                        let subsets = e.subsets.unwrap_or_default();
                        let count =
                            |f: fn(&k8s_openapi::api::core::v1::EndpointSubset) -> usize| {
                                subsets.iter().map(f).sum::<usize>()
                            };
                        (
                            count(|s| s.addresses.as_ref().map_or(0, Vec::len)),
                            count(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len)),
                        )
                    }
                    _ => (0, 0),
                };
                let done = r == *ready as usize && not_ready.is_none_or(|n2| n == n2 as usize);
                (
                    done,
                    format!("endpoints {ns}/{name} have {r} ready and {n} not-ready addresses"),
                )
            }
            Until::Pod { pod, ready } => {
                let (ns, name) = ns_name(pod);
                let Some(Object::Pod(p)) = self.cp.store.get(&Key::new(Kind::Pod, &ns, &name))
                else {
                    return (false, format!("pod {ns}/{name} does not exist"));
                };
                let is = crate::api::labels::pod_ready(&p);
                (
                    is == *ready,
                    format!(
                        "pod {ns}/{name} is {}",
                        if is { "ready" } else { "not ready" }
                    ),
                )
            }
            Until::Synced => (true, "every node's rules are in sync".into()),
            Until::Rollout((ns, name)) => self.rollout(ns, name),
            Until::Resolves { name, from } => {
                let q = DnsQuery {
                    from: from.clone(),
                    name: name.clone(),
                    rtype: RecordType::A,
                    tcp: false,
                };
                match self.dns(&q).await {
                    Ok(a) if a.rcode == "NOERROR" && !a.data.is_empty() => (
                        true,
                        format!("{name} resolves from {from} to {}", a.data.join(", ")),
                    ),
                    Ok(a) => (false, format!("{name} from {from}: {}", a.rcode)),
                    Err(e) => (false, format!("{name} from {from}: {e}")),
                }
            }
        }
    }

    /// Whether a Deployment's pods are all of its current template, ready, as many as
    /// it wants.
    fn rollout(&self, ns: &str, name: &str) -> (bool, String) {
        use crate::controllers::deployment::{template_hash, TEMPLATE_HASH_LABEL};
        let Some(Object::Deployment(d)) = self.cp.store.get(&Key::new(Kind::Deployment, ns, name))
        else {
            return (false, format!("deployment {ns}/{name} does not exist"));
        };
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
        let hash = template_hash(&d);
        let selector = d
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
            .unwrap_or_default();
        let pods: Vec<_> = self
            .cp
            .store
            .list(Kind::Pod, Some(ns))
            .into_iter()
            .filter_map(|o| match o {
                Object::Pod(p) => Some(p),
                _ => None,
            })
            .filter(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        let current = pods
            .iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(TEMPLATE_HASH_LABEL))
                    == Some(&hash)
            })
            .count();
        let ready = pods
            .iter()
            .filter(|p| crate::api::labels::pod_ready(p))
            .count();
        let old = pods.len() - current;
        (
            current == want && old == 0 && ready == want,
            format!(
                "deployment {ns}/{name}: {current} of {want} pods of the current template, {old} old, {ready} ready"
            ),
        )
    }

    async fn view(&self, view: &View) -> Result<String, String> {
        match view {
            View::Services => {
                let list: Vec<_> = self
                    .cp
                    .store
                    .list(Kind::Service, None)
                    .into_iter()
                    .filter_map(|o| match o {
                        Object::Service(s) => Some(s),
                        _ => None,
                    })
                    .collect();
                Ok(views::services(&list))
            }
            View::Endpoints((ns, name)) => {
                let ep = match self.cp.store.get(&Key::new(Kind::Endpoints, ns, name)) {
                    Some(Object::Endpoints(e)) => Some(e),
                    _ => None,
                };
                Ok(views::endpoints(&format!("{ns}/{name}"), ep.as_ref()))
            }
            View::Dns(q) => Ok(views::dns(q, &self.dns(q).await?)),
            View::Nat(node) => {
                let (code, out, err) = self
                    .exec(
                        &format!("node/{node}"),
                        &["iptables-save".into(), "-t".into(), "nat".into()],
                    )
                    .await?;
                if code != 0 {
                    return Err(format!("iptables-save in node {node}: {err}"));
                }
                Ok(views::nat(&out))
            }
            View::Pod(pod) => {
                let ((ns, name), netns_name) = self.pod(pod)?;
                let (_, routes, _) = self
                    .exec(&format!("{ns}/{name}"), &["ip".into(), "route".into()])
                    .await?;
                let resolv = std::fs::read_to_string(
                    Path::new(netns::ETC_NETNS_DIR)
                        .join(&netns_name)
                        .join("resolv.conf"),
                )
                .unwrap_or_default();
                Ok(views::pod(&format!("{ns}/{name}"), &routes, &resolv))
            }
            View::Backends(c) => {
                let (target, outcomes) = self.connect(c).await?;
                Ok(views::backends(c, &target, &outcomes))
            }
        }
    }
}

/// Waits for the store's next revision, or until `deadline`. Also wakes after a
/// second at most: a condition outside the store (a DNS answer from a pod, which
/// also needs the pod's network) is looked at again even if nothing is written.
async fn next_revision(revision: &mut tokio::sync::watch::Receiver<u64>, deadline: Instant) {
    let at = deadline.min(Instant::now() + Duration::from_secs(1));
    let _ = tokio::time::timeout_at(at.into(), revision.changed()).await;
}

/// The address `name` has in a hosts file, if any.
fn hosts_lookup(hosts: &str, name: &str) -> Option<Ipv4Addr> {
    let name = name.trim_end_matches('.');
    hosts.lines().find_map(|l| {
        let l = l.split('#').next()?;
        let mut words = l.split_whitespace();
        let ip = words.next()?.parse().ok()?;
        words.any(|w| w.eq_ignore_ascii_case(name)).then_some(ip)
    })
}

fn lines(s: String) -> Seen {
    Seen {
        lines: vec![s],
        ..Default::default()
    }
}

fn join(problems: &[crate::api::server::ObjectProblem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn dns_lines(a: &Answer) -> Vec<String> {
    let mut out = vec![format!(
        "{} {} from {} ({})",
        a.name,
        a.rcode,
        a.server,
        if a.data.is_empty() {
            "no answer".to_string()
        } else {
            a.data.join(", ")
        }
    )];
    if a.tried.len() > 1 {
        out.push(format!("tried {}", a.tried.join(", ")));
    }
    out
}

/// A step's action in a few words.
pub fn title(a: &Action) -> String {
    match a {
        Action::Apply(ms) => {
            let mut files: Vec<String> = ms
                .iter()
                .filter_map(|m| m.file.as_ref().map(|f| f.display().to_string()))
                .collect();
            files.dedup();
            let inline = ms.iter().filter(|m| m.file.is_none()).count();
            let mut parts = files;
            if inline > 0 {
                parts.push(format!(
                    "{inline} inline manifest{}",
                    if inline == 1 { "" } else { "s" }
                ));
            }
            format!("apply {}", parts.join(" + "))
        }
        Action::Delete {
            kind,
            namespace,
            name,
        } => format!("delete {} {namespace}/{name}", kind.singular()),
        Action::Scale {
            namespace,
            name,
            replicas,
        } => format!("scale deployment {namespace}/{name} to {replicas}"),
        Action::Wait { until, timeout } => {
            let what = match until {
                Until::Endpoints {
                    service: (ns, n),
                    ready,
                    not_ready,
                } => match not_ready {
                    Some(nr) => format!("endpoints {ns}/{n}: {ready} ready, {nr} not ready"),
                    None => format!("endpoints {ns}/{n}: {ready} ready"),
                },
                Until::Pod { pod, ready } => {
                    format!("pod {pod} {}", if *ready { "ready" } else { "not ready" })
                }
                Until::Synced => "every node's rules in sync".into(),
                Until::Rollout((ns, n)) => format!("deployment {ns}/{n} to roll out"),
                Until::Resolves { name, from } => format!("{name} to resolve from {from}"),
            };
            format!("wait for {what} (timeout {})", secs(*timeout))
        }
        Action::Dns(q) => format!(
            "dns {} {} from {}{}",
            q.rtype,
            q.name,
            q.from,
            if q.tcp { " over TCP" } else { "" }
        ),
        Action::Connect(c) => connect_title(c),
        Action::Exec { target, argv } => format!("exec in {target}: {}", argv.join(" ")),
        Action::Snapshot { name, view } => {
            let what = match view {
                View::Services => "services".to_string(),
                View::Endpoints((ns, n)) => format!("endpoints {ns}/{n}"),
                View::Dns(q) => format!("dns {} {} from {}", q.rtype, q.name, q.from),
                View::Nat(n) => format!("nat table of {n}"),
                View::Pod(p) => format!("routes and resolv.conf of {p}"),
                View::Backends(c) => format!("backends of {}", connect_title(c)),
            };
            format!("snapshot {name}: {what}")
        }
        Action::Kill(p) => format!("kill pod {p}"),
        Action::Readiness { pod, ready } => format!(
            "make pod {pod}'s readiness {}",
            if *ready { "recover" } else { "fail" }
        ),
        Action::Node { name, up } => {
            format!("take node {name} {}", if *up { "up" } else { "down" })
        }
        Action::Link { of, up } => {
            format!("{} the link of {of}", if *up { "restore" } else { "cut" })
        }
    }
}

fn connect_title(c: &Connect) -> String {
    let from = match c.source_port {
        Some(p) => format!("{}:{p}", c.from),
        None => c.from.clone(),
    };
    format!(
        "connect {from} -> {}:{}/{} x{}",
        c.to,
        c.port,
        if c.udp { "UDP" } else { "TCP" },
        c.times
    )
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

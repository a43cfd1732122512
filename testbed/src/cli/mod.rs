//! The `testbed` command line.

mod apply;
mod bench;
mod bench_api;
mod bench_dns;
mod bench_services;
mod client;
mod daemon;
mod objects;
mod ops;
mod print;
mod run;
mod trace;
mod up;

pub use ops::render_plan;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "testbed",
    version,
    about = "Kubernetes service discovery on real network namespaces",
    long_about = "Builds a cluster of real network namespaces (nodes with a cbr0 bridge, pods with \
                  an eth0 on it, an underlay between nodes) from a YAML scenario, keeps it \
                  running in the background, and lets you run real commands inside it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the cluster of a scenario and keep it running in the background
    Up {
        /// The scenario file (see scenarios/)
        file: PathBuf,
        /// Name of the testbed (default: the scenario's name)
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop a testbed and remove everything it made
    Down {
        /// The testbed (may be left out when only one runs)
        name: Option<String>,
    },
    /// List testbeds
    Ls,
    /// Remove what killed testbeds left behind (running ones are not touched)
    Clean,
    /// Run a command inside a pod (POD or NAMESPACE/POD) or a node (node/NAME)
    #[command(
        override_usage = "testbed exec [--testbed NAME] [--user UID[:GID]] POD|node/NODE -- COMMAND [ARGS...]"
    )]
    Exec {
        /// The testbed (may be left out when only one runs)
        #[arg(long, short = 't')]
        testbed: Option<String>,
        /// Run as this user (and group), without capabilities, as a pod's containers
        /// run (they run as 65534:65534 unless their securityContext says otherwise)
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// POD, NAMESPACE/POD or node/NODE
        target: String,
        /// The command and its arguments
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Create or update objects from a file of Kubernetes manifests (`-` for stdin)
    Apply {
        #[arg(long, short = 't')]
        testbed: Option<String>,
        /// The manifests (YAML, several documents allowed)
        #[arg(short = 'f', long = "filename", required = true)]
        file: PathBuf,
    },
    /// Show objects: pods, services, endpoints, endpointslices, deployments, nodes
    Get {
        #[arg(long, short = 't')]
        testbed: Option<String>,
        /// The kind (pods, svc, ep, ...), or KIND/NAME
        kind: String,
        /// One object's name
        name: Option<String>,
        /// The namespace (default: default)
        #[arg(long, short = 'n', value_parser = namespace_arg)]
        namespace: Option<String>,
        /// Every namespace
        #[arg(long, short = 'A')]
        all_namespaces: bool,
        /// Output format
        #[arg(long, short = 'o', value_enum)]
        output: Option<objects::Output>,
        /// Keep printing changes as they happen
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// Follow one real connection from a pod, hop by hop: the names its resolver
    /// tried, the chains and rules its first packet passed in each node, the DNAT,
    /// conntrack, the way to the backend and the pod that answered, or where and
    /// why it failed (exit 1)
    Trace {
        #[arg(long, short = 't')]
        testbed: Option<String>,
        /// The pod that connects (POD or NAMESPACE/POD)
        pod: String,
        /// A name, a ClusterIP, a pod IP or a node address, with :PORT (the
        /// Service's first port when left out)
        target: String,
        /// UDP instead of TCP
        #[arg(long)]
        udp: bool,
        /// How long the connection waits for an answer
        #[arg(long, default_value = "2s", value_parser = duration_arg)]
        timeout: std::time::Duration,
        #[arg(long, short = 'o', value_enum, default_value = "text")]
        output: trace::Output,
    },
    /// Draw the cluster: nodes with their pods, Services with arrows to their
    /// endpoints (SVG laid out by testbed itself, or Mermaid or Graphviz text)
    Graph {
        #[arg(long, short = 't')]
        testbed: Option<String>,
        #[arg(long, short = 'o', value_enum, default_value = "svg")]
        output: trace::GraphOutput,
    },
    /// Delete an object (KIND/NAME or KIND NAME)
    Delete {
        #[arg(long, short = 't')]
        testbed: Option<String>,
        kind: String,
        name: Option<String>,
        #[arg(long, short = 'n', default_value = "default", value_parser = namespace_arg)]
        namespace: String,
    },
    /// Set the replicas of a Deployment (deployment/NAME)
    Scale {
        #[arg(long, short = 't')]
        testbed: Option<String>,
        target: String,
        #[arg(long)]
        replicas: i32,
        #[arg(long, short = 'n', default_value = "default", value_parser = namespace_arg)]
        namespace: String,
    },
    /// Print the path of a testbed's kubeconfig, for kubectl and client libraries:
    /// `export KUBECONFIG=$(testbed kubeconfig)`
    Kubeconfig {
        /// The testbed (may be left out when only one runs)
        name: Option<String>,
    },
    /// Run scenarios: build each cluster, replay its steps, check expectations and snapshots
    Run(run::RunArgs),
    /// Check scenario files without building anything (no root needed)
    #[command(alias = "check")]
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of scenario files (for editors)
    Schema,
    /// Print the address plan of a scenario (no root needed)
    Plan {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    /// List the system tools testbed runs: which are there, which are missing, and
    /// their packages (exit 1 when one that `up` needs is missing)
    Doctor,
    /// Measure how fast clusters come up and go down
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// (internal) the background process of `testbed up`
    #[command(hide = true, name = "__daemon")]
    Daemon {
        file: PathBuf,
        #[arg(long)]
        name: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon { .. }) {
        // A closed stdout (`testbed get pods | head -1`) ends the command quietly, as
        // it ends other Unix tools, instead of a panic in println!. The background
        // process keeps Rust's default (EPIPE is an error it handles): its `up` may
        // be gone while it still reports.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Runs the command.
fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Up { file, name } => need_root("up").and_then(|_| up::up(&file, name)),
        Command::Down { name } => need_root("down").and_then(|_| ops::down(name)),
        Command::Ls => ops::ls(),
        Command::Clean => need_root("clean").and_then(|_| ops::clean()),
        Command::Exec {
            testbed,
            user,
            target,
            command,
        } => need_root("exec").and_then(|_| ops::exec(testbed, user.as_deref(), &target, &command)),
        Command::Apply { testbed, file } => apply::apply(testbed, &file),
        Command::Get {
            testbed,
            kind,
            name,
            namespace,
            all_namespaces,
            output,
            watch,
        } => objects::get(objects::GetArgs {
            testbed,
            what: kind,
            name,
            namespace: if all_namespaces {
                Some("*".into())
            } else {
                namespace
            },
            output,
            watch,
        }),
        Command::Trace {
            testbed,
            pod,
            target,
            udp,
            timeout,
            output,
        } => need_root("trace")
            .and_then(|_| trace::trace(testbed, &pod, &target, udp, timeout, output)),
        Command::Graph { testbed, output } => trace::graph(testbed, output),
        Command::Delete {
            testbed,
            kind,
            name,
            namespace,
        } => objects::delete(testbed, &kind, name.as_deref(), &namespace),
        Command::Scale {
            testbed,
            target,
            replicas,
            namespace,
        } => objects::scale(testbed, &target, replicas, &namespace),
        Command::Run(args) => need_root("run").and_then(|_| run::run(args)),
        Command::Kubeconfig { name } => ops::kubeconfig(name),
        Command::Validate { files } => run::validate(&files),
        Command::Schema => run::schema(),
        Command::Plan { file, name } => ops::plan(&file, name),
        Command::Doctor => ops::doctor(),
        Command::Bench { what } => need_root("bench").and_then(|_| bench::run(what)),
        Command::Daemon { file, name } => daemon::run(&file, &name),
    }
}

/// Prints a command's error; the API server's refusals as kubectl prints them.
fn report(e: &anyhow::Error) {
    if e.downcast_ref::<client::ServerError>().is_some() {
        eprintln!("{e:#}");
    } else {
        eprintln!("error: {e:#}");
    }
}

fn need_root(verb: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("`testbed {verb}` needs root to manage network namespaces: run it with sudo");
    }
    Ok(())
}

/// The testbed a command means: the one named, or the only one running.
fn pick_testbed(name: Option<String>) -> Result<String> {
    if let Some(n) = name {
        crate::state::check_name(&n).map_err(|why| {
            anyhow::anyhow!("testbed name {n:?} {why}; `testbed ls` lists the testbeds")
        })?;
        return Ok(n);
    }
    let running: Vec<String> = crate::state::names()
        .into_iter()
        .filter(|n| crate::state::Record::load(n).is_ok_and(|r| r.alive()))
        .collect();
    match running.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no testbed is running (start one with `testbed up FILE`)"),
        many => bail!(
            "{} testbeds are running ({}); name one with --testbed NAME",
            many.len(),
            many.join(", ")
        ),
    }
}

fn ms(d: std::time::Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// A namespace given on the command line: a DNS-1123 label, as Kubernetes requires.
fn namespace_arg(s: &str) -> std::result::Result<String, String> {
    crate::names::check_dns1123_label(s, 63)
        .map(|()| s.to_string())
        .map_err(|why| format!("namespace {s:?} {why}"))
}

/// A duration on the command line: `2s`, `500ms`.
fn duration_arg(s: &str) -> std::result::Result<std::time::Duration, String> {
    crate::scenario::steps::parse_duration(s)
}

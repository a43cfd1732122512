//! Helpers shared by the privileged tests.
#![allow(dead_code)]

pub mod kubectl;
pub mod running;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use testbed::lifecycle::Testbed;
use testbed::scenario::{self, Scenario};

/// True when the test may go on. Without root it is skipped, except in CI, where a
/// skipped privileged test must fail so that a skipped suite cannot pass.
pub fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("this test needs root, and CI=true: privileged tests may not be skipped in CI");
    }
    eprintln!("skipped: this test needs root (run the suite with `cargo test`, which uses sudo)");
    false
}

/// Two root tests of one body, each on a testbed of its own: `$name` in iptables mode
/// (testbed `$tb`) and `$nft` in nftables mode (`$tb` + "nft"). The body takes the
/// testbed and the mode's name.
#[macro_export]
macro_rules! in_both_modes {
    ($name:ident, $nft:ident, $tb:literal, $body:expr) => {
        #[test]
        fn $name() {
            if $crate::common::root() {
                let body: fn($crate::common::running::Running, &str) = $body;
                body($crate::common::running::Running::up($tb), "iptables");
            }
        }

        #[test]
        fn $nft() {
            if $crate::common::root() {
                let body: fn($crate::common::running::Running, &str) = $body;
                let tb =
                    $crate::common::running::Running::up_in_mode(concat!($tb, "nft"), "nftables");
                body(tb, "nftables");
            }
        }
    };
}

/// A testbed name no other test (or test run) uses at the same time.
pub fn unique_name(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn scenario(file: &str) -> Scenario {
    scenario::load(&repo().join("scenarios").join(file)).expect("the shipped scenario is valid")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn up(rt: &tokio::runtime::Runtime, name: &str, s: &Scenario) -> Testbed {
    rt.block_on(Testbed::up(name, s, None))
        .expect("the testbed comes up")
}

/// Runs `f` on a thread inside the namespace `netns`: sockets it opens stay there.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(testbed::netns::netns_path(netns)).expect("open netns");
            setns(&file, CloneFlags::CLONE_NEWNET).expect("enter netns");
            f()
        })
        .join()
        .expect("no panic in the netns thread")
    })
}

/// A TCP server in `netns` that answers each connection with `reply` and the address
/// it saw the client come from.
pub fn serve(netns: &str, port: u16, reply: &str) -> SocketAddr {
    let listener = in_netns(netns, || {
        TcpListener::bind(("0.0.0.0", port)).expect("bind")
    });
    let addr = listener.local_addr().unwrap();
    let reply = reply.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let peer = conn.peer_addr().unwrap();
            let _ = writeln!(conn, "{reply} {}", peer.ip());
        }
    });
    addr
}

/// Connects from `netns` to `to` and returns what the server said.
pub fn ask(netns: &str, to: SocketAddr) -> std::io::Result<String> {
    let mut stream = in_netns(netns, || {
        TcpStream::connect_timeout(&to, Duration::from_secs(3))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out.trim().to_string())
}

/// Runs a command, returning its stdout; panics with its stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every trace of testbed `name` on the host: its namespaces, /etc/netns entries and
/// state directory.
pub fn traces(name: &str) -> Vec<String> {
    let mut v: Vec<String> = testbed::netns::list()
        .into_iter()
        .chain(testbed::netns::list_etc())
        .filter(|n| testbed::names::netns_belongs_to(n, name))
        .collect();
    if testbed::state::dir(name).exists() {
        v.push(testbed::state::dir(name).display().to_string());
    }
    v.sort();
    v
}

pub fn testbed_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
}

/// The path of `scenarios/two-nodes.yaml`, as an argument.
pub fn two_nodes() -> String {
    repo()
        .join("scenarios/two-nodes.yaml")
        .display()
        .to_string()
}

/// A command's standard error, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

//! Named network namespaces: made, entered and removed.
//!
//! A namespace is entered only on a dedicated OS thread, never on a tokio worker: the
//! thread opens a netlink socket inside it and writes its sysctls, and the socket stays
//! bound to that namespace while the runtime drives it from anywhere.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use netns_rs::Env;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Where `ip netns` and netns-rs keep named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Per-namespace files that `ip netns exec` (and `testbed exec`) bind over `/etc`.
pub const ETC_NETNS_DIR: &str = "/etc/netns";
/// Pods' UTS namespaces (their hostnames), each under its pod's network namespace's
/// name, kept alive by a bind mount as network namespaces are in [`NETNS_DIR`].
pub const UTS_DIR: &str = "/run/testbed-uts";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("prepare {name}")]
    Create {
        name: String,
        #[source]
        source: netns_rs::Error,
    },
    #[error("create network namespace {name}: {what}")]
    Io {
        name: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("set {key} in network namespace {name}")]
    Sysctl {
        name: String,
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("open a netlink socket in network namespace {name}")]
    Netlink {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "network namespace {0} already exists: is a testbed of that name running? (`testbed ls`)"
    )]
    Exists(String),
}

/// A namespace this process made, with a netlink handle that works inside it.
pub struct OpenNs {
    pub name: String,
    /// Kept open so links can be moved into the namespace by file descriptor.
    pub file: File,
    pub netlink: rtnetlink::Handle,
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// The UTS namespace of the pod whose network namespace is `name`.
pub fn uts_path(name: &str) -> PathBuf {
    Path::new(UTS_DIR).join(name)
}

/// Makes the UTS namespace of the pod whose network namespace is `name`, with
/// hostname `hostname`, as kubelet gives every pod one. The calling thread must be a
/// dedicated OS thread that ends soon: it is left inside the new namespace.
pub fn create_uts_on_this_thread(name: &str, hostname: &str) -> io::Result<()> {
    std::fs::create_dir_all(UTS_DIR)?;
    let path = uts_path(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    let made = (|| {
        unshare(CloneFlags::CLONE_NEWUTS)?;
        nix::unistd::sethostname(hostname)?;
        mount(
            Some("/proc/thread-self/ns/uts"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    made.map_err(io::Error::from)
}

fn unmount_uts(name: &str) -> bool {
    let path = uts_path(name);
    let mounted = umount2(&path, MntFlags::MNT_DETACH).is_ok();
    let existed = std::fs::remove_file(&path).is_ok();
    mounted || existed
}

/// Names of the pods' UTS namespaces (their network namespaces' names).
pub fn list_uts() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(UTS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Makes `/run/netns` exist and be a shared mount point, as `ip netns add` does.
pub fn init() -> Result<(), NetnsError> {
    netns_rs::DefaultEnv
        .init()
        .map_err(|source| NetnsError::Create {
            name: NETNS_DIR.into(),
            source,
        })
}

/// Creates the namespace `name` (`ip netns add NAME`), sets `sysctls` (paths under
/// `/proc/sys`) inside it and opens a netlink connection there, driven by the runtime
/// `rt`. Call [`init`] once first.
///
/// The calling thread must be a dedicated OS thread that ends soon: it is left inside
/// the new namespace. This is netns-rs's `NetNs::new` done by hand: that one spawns a
/// thread per namespace and enters it twice more to run code there, which is a third
/// of the time when a testbed makes a thousand namespaces.
pub fn create_on_this_thread(
    name: &str,
    sysctls: &[(&str, &str)],
    rt: &tokio::runtime::Handle,
) -> Result<OpenNs, NetnsError> {
    let path = netns_path(name);
    let io_err = |what: &str, source: io::Error| NetnsError::Io {
        name: name.into(),
        what: what.into(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(NetnsError::Exists(name.into()))
        }
        Err(e) => return Err(io_err("create its mount point", e)),
    }
    let made = (|| {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| io_err("unshare", e.into()))?;
        // The bind mount keeps the namespace alive when no process is inside.
        mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io_err("bind-mount it", e.into()))?;
        for (key, value) in sysctls {
            // /proc/sys/net is resolved in the namespace of the thread that opens it.
            std::fs::write(Path::new("/proc/sys").join(key), value).map_err(|source| {
                NetnsError::Sysctl {
                    name: name.into(),
                    key: key.replace('/', "."),
                    source,
                }
            })?;
        }
        let netlink = connect_here(name, rt)?;
        let file = File::open(&path).map_err(|e| io_err("open it", e))?;
        Ok(OpenNs {
            name: name.into(),
            file,
            netlink,
        })
    })();
    if made.is_err() {
        remove(name);
    }
    made
}

/// Opens a netlink connection inside the existing namespace `name`, driven by `rt`.
/// A short-lived thread enters the namespace, opens the socket and ends; the socket
/// stays in the namespace.
pub fn open_netlink(
    name: &str,
    rt: &tokio::runtime::Handle,
) -> Result<rtnetlink::Handle, NetnsError> {
    let file = File::open(netns_path(name)).map_err(|source| NetnsError::Io {
        name: name.into(),
        what: "open it".into(),
        source,
    })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Io {
                name: name.into(),
                what: "enter it".into(),
                source: e.into(),
            })?;
            connect_here(name, rt)
        })
        .join()
        .expect("the netlink thread does not panic")
    })
}

/// Opens a netlink connection in the namespace of the calling thread (`name`, for
/// errors), registered with and driven by `rt`.
fn connect_here(name: &str, rt: &tokio::runtime::Handle) -> Result<rtnetlink::Handle, NetnsError> {
    let _guard = rt.enter();
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| NetnsError::Netlink {
        name: name.into(),
        source,
    })?;
    rt.spawn(conn);
    Ok(handle)
}

/// Runs `f` on every item on `threads` dedicated OS threads, keeping the input order.
pub fn on_dedicated_threads<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                *out[i].lock().expect("no poisoning") = Some(f(item));
            });
        }
    });
    out.into_iter()
        .map(|m| {
            m.into_inner()
                .expect("no poisoning")
                .expect("every item ran")
        })
        .collect()
}

/// Removes the namespace `name`, its pod's UTS namespace and its `/etc/netns` entry;
/// true if it was there. Equivalent to `ip netns delete NAME`. The kernel frees the
/// namespace, and every interface in it, once no process is left inside.
pub fn remove(name: &str) -> bool {
    remove_etc(name);
    unmount(name)
}

/// Unmounts network namespace `name` and the UTS namespace of the same name.
fn unmount(name: &str) -> bool {
    unmount_uts(name);
    let path = netns_path(name);
    // MNT_DETACH: a lazy unmount never fails because a process still uses the file.
    let mounted = umount2(&path, MntFlags::MNT_DETACH).is_ok();
    let existed = std::fs::remove_file(&path).is_ok();
    mounted || existed
}

/// Removes the namespaces `names` (not their `/etc/netns` entries) a few at a time;
/// returns how many were there.
pub fn remove_all(names: &[String]) -> usize {
    on_dedicated_threads(names, REMOVE_THREADS, |name| unmount(name))
        .into_iter()
        .filter(|removed| *removed)
        .count()
}

/// Unmounting is mostly serialised by the kernel; a few threads still help.
const REMOVE_THREADS: usize = 4;

/// Names of the namespaces in `/run/netns`.
pub fn list() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Names of the directories in `/etc/netns`.
pub fn list_etc() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(ETC_NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Points `/etc/netns/<name>` at `dir`, whose files `testbed exec` and `ip netns exec`
/// bind over `/etc`. Pods of one Kubernetes namespace share one directory: a link is
/// one inode where a directory and a file are two, and many pods are made at once.
pub fn link_etc(name: &str, dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(ETC_NETNS_DIR)?;
    std::os::unix::fs::symlink(dir, Path::new(ETC_NETNS_DIR).join(name))
}

/// Removes `/etc/netns/<name>`, a link or a directory.
pub fn remove_etc(name: &str) {
    let path = Path::new(ETC_NETNS_DIR).join(name);
    if std::fs::remove_file(&path).is_err() {
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// Runs `f` on a short-lived thread inside the namespace `name` and returns what it
/// returns: the way to open a socket there (a socket keeps the namespace it was made
/// in, whichever thread uses it later). Never enters a namespace on a runtime worker.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let file = File::open(netns_path(name))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            f()
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
    })
}

/// A TCP listener on `address` inside the namespace `name` (a node's), for tokio.
pub fn tcp_listener_in(
    name: &str,
    address: std::net::SocketAddr,
) -> io::Result<tokio::net::TcpListener> {
    let listener = run_in(name, || {
        let l = std::net::TcpListener::bind(address)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    tokio::net::TcpListener::from_std(listener)
}

/// Runs `f` inside the namespace `netns` (to make a socket there), or here for `None`.
pub fn in_netns_or_here<T: Send>(
    netns: Option<&str>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    match netns {
        Some(name) => run_in(name, f),
        None => f(),
    }
}

/// Per testbed: whether it is coming down, behind a lock that every namespace made at
/// runtime holds while it is made. Teardown closes the gate (waiting for the ones in
/// flight) before it lists what to remove, so no namespace appears after the list.
static GATES: std::sync::Mutex<BTreeMap<String, Arc<RwLock<bool>>>> =
    std::sync::Mutex::new(BTreeMap::new());

fn gate(testbed: &str) -> Arc<RwLock<bool>> {
    GATES
        .lock()
        .expect("gates lock")
        .entry(testbed.to_string())
        .or_default()
        .clone()
}

/// Lets runtime namespaces of `testbed` be made again (a new testbed of that name).
pub fn open_gate(testbed: &str) {
    *gate(testbed).write().expect("gate lock") = false;
}

/// Waits for the namespaces of `testbed` being made to be done, and refuses new ones.
pub fn close_gate(testbed: &str) {
    *gate(testbed).write().expect("gate lock") = true;
}

/// Runs `make` (which makes the namespace `netns`) unless its testbed is coming down;
/// teardown waits for it to finish.
pub fn through_gate<T>(netns: &str, make: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let testbed = crate::names::testbed_of_netns(netns).unwrap_or_default();
    let gate = gate(testbed);
    let closed = gate.read().expect("gate lock");
    if *closed {
        return Err(io::Error::other(format!(
            "testbed {testbed} is coming down: no new namespace {netns}"
        )));
    }
    make()
}

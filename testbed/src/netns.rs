//! Named network namespaces: made, entered and removed.
//!
//! A namespace is entered only on a dedicated OS thread, never on a tokio worker: the
//! thread opens a netlink socket inside it and writes its sysctls, and the socket stays
//! bound to that namespace while the runtime drives it from anywhere.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use netns_rs::NetNs;
use nix::mount::{umount2, MntFlags};

/// Where `ip netns` and netns-rs keep named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Per-namespace files that `ip netns exec` (and `testbed exec`) bind over `/etc`.
pub const ETC_NETNS_DIR: &str = "/etc/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("create network namespace {name}")]
    Create {
        name: String,
        #[source]
        source: netns_rs::Error,
    },
    #[error("enter network namespace {name}")]
    Enter {
        name: String,
        #[source]
        source: netns_rs::Error,
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
    #[error("network namespace {0} already exists: is a testbed of that name running? (`testbed ls`)")]
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

pub fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Creates the namespace `name`, sets `sysctls` (paths under `/proc/sys`) inside it and
/// opens a netlink connection there, driven by the runtime `rt`. Runs on the calling
/// thread, which must be a dedicated OS thread: it enters the namespace for a moment.
pub fn create(
    name: &str,
    sysctls: &[(&str, &str)],
    rt: &tokio::runtime::Handle,
) -> Result<OpenNs, NetnsError> {
    if exists(name) {
        return Err(NetnsError::Exists(name.into()));
    }
    let ns = NetNs::new(name).map_err(|source| NetnsError::Create {
        name: name.into(),
        source,
    })?;
    let inside = ns
        .run(|_| -> Result<rtnetlink::Handle, NetnsError> {
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
            let _guard = rt.enter();
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|source| NetnsError::Netlink {
                    name: name.into(),
                    source,
                })?;
            rt.spawn(conn);
            Ok(handle)
        })
        .map_err(|source| NetnsError::Enter {
            name: name.into(),
            source,
        });
    let netlink = match inside {
        Ok(Ok(h)) => h,
        Ok(Err(e)) | Err(e) => {
            remove(name);
            return Err(e);
        }
    };
    let file = ns.file().try_clone().map_err(|source| NetnsError::Netlink {
        name: name.into(),
        source,
    })?;
    Ok(OpenNs {
        name: name.into(),
        file,
        netlink,
    })
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
        .map(|m| m.into_inner().expect("no poisoning").expect("every item ran"))
        .collect()
}

/// Removes the namespace `name` and its `/etc/netns` files; true if it was there.
/// Equivalent to `ip netns delete NAME`. The kernel frees the namespace, and every
/// interface in it, once no process is left inside.
pub fn remove(name: &str) -> bool {
    let path = netns_path(name);
    // MNT_DETACH: a lazy unmount never fails because a process still uses the file.
    let mounted = umount2(&path, MntFlags::MNT_DETACH).is_ok();
    let existed = std::fs::remove_file(&path).is_ok();
    let _ = std::fs::remove_dir_all(Path::new(ETC_NETNS_DIR).join(name));
    mounted || existed
}

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

/// Writes `/etc/netns/<name>/<file>`, which `testbed exec` binds over `/etc/<file>`.
pub fn write_etc(name: &str, file: &str, content: &str) -> io::Result<()> {
    let dir = Path::new(ETC_NETNS_DIR).join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(file), content)
}

//! What a running testbed records about itself in `/run/testbed/<name>/`, so that
//! other commands can find it, and `testbed clean` can remove what a killed one left.
//!
//! The record is written before anything is created and removed after everything is
//! gone: a record whose process is dead marks a testbed to clean.
//!
//! A record is trusted only when it is the testbed's own: its name is a valid testbed
//! name (never a path), and the state directory, the testbed's directory and its
//! `state.json` are root's and writable by no one else. A testbed's process holds an
//! exclusive `flock(2)` on its `claim` file for as long as it lives, so "running" is
//! what the kernel says, and a process is signalled only when it has that file open.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::plan::Plan;

pub const STATE_DIR: &str = "/run/testbed";
const RECORD: &str = "state.json";
/// The file a testbed's process keeps locked while it runs.
const CLAIM: &str = "claim";
/// Held while a name is claimed or a dead testbed is cleaned, so two `up`s of one
/// name and a `clean` never act on the same name at once.
const NAMES_LOCK: &str = ".names.lock";
/// A record is a plan: a few hundred bytes per pod. Anything bigger is not ours.
const RECORD_MAX_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    /// The process that owns the testbed, and when it started (to tell a reused PID).
    pub pid: u32,
    pub pid_start: u64,
    /// The uid that may talk to it besides root.
    pub owner_uid: u32,
    pub scenario: Option<PathBuf>,
    /// Seconds since the epoch.
    pub created: u64,
    pub plan: Plan,
}

/// Checks that `name` can name a testbed: a DNS-1123 label of at most
/// [`crate::names::TESTBED_NAME_MAX`] characters. It is part of every namespace's
/// name and of a directory's path, so it is never empty, `.`, `..` or a path.
pub fn check_name(name: &str) -> Result<(), String> {
    crate::names::check_dns1123_label(name, crate::names::TESTBED_NAME_MAX)
}

/// The state directory of testbed `name`; `name` must have passed [`check_name`].
pub fn dir(name: &str) -> PathBuf {
    debug_assert!(check_name(name).is_ok(), "unchecked testbed name {name:?}");
    Path::new(STATE_DIR).join(name)
}

/// The API server's socket of testbed `name`.
pub fn api_socket(name: &str) -> PathBuf {
    dir(name).join("api.sock")
}

/// A pod's own files: `tmp/` (its `/tmp`).
pub fn pod_dir(name: &str, namespace: &str, pod: &str) -> PathBuf {
    dir(name).join("pods").join(namespace).join(pod)
}

/// The owner's kubeconfig for the testbed's Kubernetes API (mode 0600, the owner's).
pub fn kubeconfig_path(name: &str) -> PathBuf {
    dir(name).join("kubeconfig")
}

pub fn log_path(name: &str) -> PathBuf {
    dir(name).join("log")
}

/// The name held by a running testbed's process: dropping it (or the process
/// dying) lets the name go.
#[derive(Debug)]
pub struct Claim {
    _lock: Flock<File>,
}

/// Held while names are claimed and dead testbeds cleaned.
pub struct NamesLock {
    _lock: Flock<File>,
}

/// Takes the lock that claiming a name and cleaning a testbed hold (waits for it).
pub fn lock_names() -> io::Result<NamesLock> {
    make_state_dir()?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(Path::new(STATE_DIR).join(NAMES_LOCK))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
    Ok(NamesLock { _lock: lock })
}

/// Makes `/run/testbed` (root's, mode 0755), or checks the one there.
fn make_state_dir() -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o755).create(STATE_DIR) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => trusted_dir(Path::new(STATE_DIR)),
        Err(e) => Err(e),
    }
}

/// A directory whose contents can be trusted: a real directory (not a link), root's,
/// writable by no one else.
fn trusted_dir(path: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_dir() {
        return Err(untrusted(path, "is not a directory"));
    }
    trusted_owner(path, &meta)
}

fn trusted_owner(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    if meta.uid() != 0 {
        return Err(untrusted(
            path,
            &format!("belongs to uid {}, not root", meta.uid()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(
            path,
            &format!("is writable by others (mode {:o})", meta.mode() & 0o7777),
        ));
    }
    Ok(())
}

fn untrusted(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} {why}: not a testbed's record, ignored", path.display()),
    )
}

fn bad_name(name: &str, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("testbed name {name:?} {why}"),
    )
}

impl Record {
    /// A record for the calling process.
    pub fn for_this_process(plan: Plan, scenario: Option<PathBuf>) -> Record {
        let pid = std::process::id();
        Record {
            name: plan.testbed.clone(),
            pid,
            pid_start: process_start(pid).unwrap_or(0),
            owner_uid: owner_uid(),
            scenario,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            plan,
        }
    }

    /// Claims the name: fails if a record for it exists already. The record appears
    /// whole (written aside, then renamed into place), so `testbed clean` never sees a
    /// half-written one, and with its claim file already locked by this process.
    /// The caller holds [`lock_names`].
    pub fn create(&self, _names: &NamesLock) -> io::Result<Claim> {
        check_name(&self.name).map_err(|why| bad_name(&self.name, why))?;
        make_state_dir()?;
        let aside = Path::new(STATE_DIR).join(format!(".new-{}-{}", self.name, self.pid));
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::DirBuilder::new().mode(0o755).create(&aside)?;
        let made = (|| {
            let mut opts = std::fs::OpenOptions::new();
            opts.create_new(true).write(true).mode(0o644);
            std::io::Write::write_all(
                &mut opts.open(aside.join(RECORD))?,
                &serde_json::to_vec_pretty(self)?,
            )?;
            let claim = opts.open(aside.join(CLAIM))?;
            let lock = Flock::lock(claim, FlockArg::LockExclusiveNonblock)
                .map_err(|(_, e)| io::Error::from(e))?;
            if std::fs::symlink_metadata(dir(&self.name)).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", dir(&self.name).display()),
                ));
            }
            // rename(2) refuses to replace a non-empty directory: a record made meanwhile wins.
            std::fs::rename(&aside, dir(&self.name))?;
            Ok(Claim { _lock: lock })
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&aside);
        }
        made
    }

    /// Reads the record of testbed `name`, if it is the testbed's own (see the module's
    /// doc); an invalid name, a foreign or forged record is an error.
    pub fn load(name: &str) -> io::Result<Record> {
        check_name(name).map_err(|why| bad_name(name, why))?;
        trusted_dir(Path::new(STATE_DIR))?;
        trusted_dir(&dir(name))?;
        let path = dir(name).join(RECORD);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(untrusted(&path, "is not a file"));
        }
        trusted_owner(&path, &meta)?;
        let mut bytes = Vec::new();
        (&mut file)
            .take(RECORD_MAX_BYTES + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > RECORD_MAX_BYTES {
            return Err(untrusted(&path, "is larger than any record"));
        }
        let record: Record = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
        if record.name != name {
            return Err(untrusted(
                &path,
                &format!("names testbed {:?}", record.name),
            ));
        }
        Ok(record)
    }

    /// Is the owning process still running? Its start time matches, and its claim
    /// is locked (by it: the lock goes when its process does).
    pub fn alive(&self) -> bool {
        process_start(self.pid).is_some_and(|s| s == self.pid_start) && claim_held(&self.name)
    }

    /// May the process of this record be signalled? It is alive, and it is the one
    /// that holds the claim: the claim file is among its open files. A record that
    /// names another process (forged, or a reused PID) never gets one signalled.
    pub fn owns_its_process(&self) -> bool {
        self.alive() && holds_claim(self.pid, &self.name)
    }
}

/// Is testbed `name`'s claim locked by some process?
fn claim_held(name: &str) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir(name).join(CLAIM))
    else {
        return false;
    };
    // A shared lock can't be had while the exclusive one is held; testers don't
    // exclude each other.
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_tested) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// Has process `pid` got testbed `name`'s claim file open?
fn holds_claim(pid: u32, name: &str) -> bool {
    let claim = dir(name).join(CLAIM);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == claim))
}

/// Forgets a testbed: removes its state directory. It is first renamed aside, so the
/// name is free at one instant and a new record of it is never removed with the old
/// one's files. An invalid name removes nothing.
pub fn remove(name: &str) {
    if check_name(name).is_err() {
        return;
    }
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let gone = Path::new(STATE_DIR).join(format!(".gone-{name}-{n}-{}", std::process::id()));
    match std::fs::rename(dir(name), &gone) {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&gone);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => {
            let _ = std::fs::remove_dir_all(dir(name));
        }
    }
}

/// Removes records that a process began writing (`.new-<name>-<pid>`) or removing
/// (`.gone-<name>-<n>-<pid>`) and died before it was done.
pub fn remove_dead_asides() {
    let Ok(rd) = std::fs::read_dir(STATE_DIR) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((testbed, pid)) = name
            .strip_prefix(".new-")
            .or_else(|| name.strip_prefix(".gone-"))
            .and_then(|rest| rest.rsplit_once('-'))
            .map(|(rest, pid)| {
                let testbed = if name.starts_with(".gone-") {
                    rest.rsplit_once('-').map_or(rest, |(t, _)| t)
                } else {
                    rest
                };
                (testbed, pid)
            })
            .and_then(|(testbed, pid)| Some((testbed, pid.parse::<u32>().ok()?)))
        else {
            continue;
        };
        if check_name(testbed).is_ok() && process_start(pid).is_none() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Names of every recorded testbed (running or not), sorted. Entries whose name is
/// not a testbed's are left out.
pub fn names() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(STATE_DIR) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| check_name(n).is_ok())
        .collect();
    v.sort();
    v
}
/// The start time of a running process in clock ticks since boot (`/proc/PID/stat`
/// field 22); `None` when there is no such process or it has exited (a zombie).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The user behind `sudo`, else the caller.
pub fn owner_uid() -> u32 {
    std::env::var("SUDO_UID")
        .ok()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| nix::unistd::getuid().as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_labels_never_paths() {
        for bad in [
            "", ".", "..", "../x", "/", "/etc", "a/b", "A", "-a", "a-", "a.b", "a b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_name(&"a".repeat(33)).is_err());
        for good in ["a", "demo", "two-nodes", "x1", &"a".repeat(32)] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
        assert!(Record::load("..").is_err_and(|e| e.kind() == io::ErrorKind::InvalidInput));
        assert!(Record::load("").is_err_and(|e| e.kind() == io::ErrorKind::InvalidInput));
    }

    #[test]
    fn a_start_time_tells_a_reused_pid() {
        let me = std::process::id();
        let start = process_start(me).expect("own stat");
        assert!(start > 0);
        let plan = Plan::new("x", &crate::plan::ClusterSpec::with_nodes(1), &[]);
        let r = Record::for_this_process(plan, None);
        assert_eq!(r.pid_start, start);
        // No claim was made: a record alone does not make a testbed running.
        assert!(!r.alive());
        assert_eq!(process_start(u32::MAX), None);
    }
}

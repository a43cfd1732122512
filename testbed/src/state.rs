//! What a running testbed records about itself in `/run/testbed/<name>/`, so that
//! other commands can find it, and `testbed clean` can remove what a killed one left.
//!
//! The record is written before anything is created and removed after everything is
//! gone: a record whose process is dead marks a testbed to clean.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::Plan;

pub const STATE_DIR: &str = "/run/testbed";
const RECORD: &str = "state.json";

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

pub fn dir(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(name)
}

/// A pod's own files: `tmp/` (its `/tmp`).
pub fn pod_dir(name: &str, namespace: &str, pod: &str) -> PathBuf {
    dir(name).join("pods").join(namespace).join(pod)
}

pub fn log_path(name: &str) -> PathBuf {
    dir(name).join("log")
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
    /// half-written one.
    pub fn create(&self) -> io::Result<()> {
        std::fs::create_dir_all(STATE_DIR)?;
        let aside = Path::new(STATE_DIR).join(format!(".new-{}-{}", self.name, self.pid));
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::create_dir(&aside)?;
        std::fs::write(aside.join(RECORD), serde_json::to_vec_pretty(self)?)?;
        if dir(&self.name).exists() {
            let _ = std::fs::remove_dir_all(&aside);
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", dir(&self.name).display()),
            ));
        }
        // rename(2) refuses to replace a non-empty directory: a record made meanwhile wins.
        std::fs::rename(&aside, dir(&self.name)).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&aside);
        })
    }

    pub fn load(name: &str) -> io::Result<Record> {
        let bytes = std::fs::read(dir(name).join(RECORD))?;
        serde_json::from_slice(&bytes).map_err(io::Error::other)
    }

    /// Is the owning process still running?
    pub fn alive(&self) -> bool {
        process_start(self.pid).is_some_and(|s| s == self.pid_start)
    }
}

/// Forgets a testbed: removes its state directory.
pub fn remove(name: &str) {
    let _ = std::fs::remove_dir_all(dir(name));
}

/// Removes records that a process began writing (`.new-<name>-<pid>`) and died
/// before it could rename them into place.
pub fn remove_dead_asides() {
    let Ok(rd) = std::fs::read_dir(STATE_DIR) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(".new-")
            .and_then(|rest| rest.rsplit('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if process_start(pid).is_none() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Names of every recorded testbed (running or not), sorted.
pub fn names() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(STATE_DIR) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
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
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = std::process::id();
        let start = process_start(me).expect("own stat");
        assert!(start > 0);
        let plan = Plan::new(
            "x",
            &crate::scenario::Scenario {
                name: "x".into(),
                description: String::new(),
                cluster: crate::scenario::Cluster::with_nodes(1),
                pods: vec![],
                ..Default::default()
            },
        );
        let mut r = Record::for_this_process(plan, None);
        assert!(r.alive());
        r.pid_start += 1;
        assert!(!r.alive());
        assert_eq!(process_start(u32::MAX), None);
    }
}

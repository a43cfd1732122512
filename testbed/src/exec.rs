//! `testbed exec`: run a real command inside a pod's or node's namespace.
//!
//! Does what `ip netns exec` does, in this process before it starts any thread:
//! enter the network namespace (and a pod's UTS namespace, with its hostname), take a
//! private mount namespace, mount a `/sys` that
//! shows the namespace's interfaces, bind the namespace's `/etc/netns/<name>/*` files
//! (the pod's `resolv.conf`) over `/etc`, then replace this process with the command,
//! so stdin, stdout and the exit code are the command's own.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::kubelet::identity::Identity;
use crate::netns;

/// What a step of the way into a pod was for, when it fails.
trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, ExecError>;
}

impl<T, E: Into<std::io::Error>> Doing<T> for Result<T, E> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, ExecError> {
        self.map_err(|e| ExecError::Setup {
            what: what(),
            source: e.into(),
        })
    }
}

/// Drops to `who` for good (real, effective and saved ids).
fn become_user(who: Identity) -> Result<(), ExecError> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    // Set before the ids change, and inherited by everything the command starts.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).doing(|| "set no_new_privs".into());
    }
    let (uid, gid) = (Uid::from_raw(who.uid), Gid::from_raw(who.gid));
    setgroups(&[gid]).doing(|| "set the groups".into())?;
    setresgid(gid, gid, gid).doing(|| format!("become group {}", who.gid))?;
    setresuid(uid, uid, uid).doing(|| format!("become user {}", who.uid))?;
    Ok(())
}

/// Why `exec_in` returned.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// No command was given.
    #[error("no command given: testbed exec POD -- COMMAND [ARGS...]")]
    NoCommand,
    /// Entering the namespace or preparing its view failed: what for, and why.
    #[error("{what}")]
    Setup {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The command itself could not be started.
    #[error("cannot run {program:?}: {}", errno.desc())]
    Run { program: String, errno: Errno },
}

impl ExecError {
    /// The shell's exit code for a command that could not run: 127 when it was not
    /// found, 126 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExecError::Run {
                errno: Errno::ENOENT,
                ..
            } => 127,
            _ => 126,
        }
    }
}

/// Enters `netns_name` and executes `argv`; returns only on failure. `pod`, when
/// given, is the pod's directory, whose files make the pod's view as a container's:
/// its `tmp` is bound over `/tmp` (shared by its containers and `exec`s, so `touch
/// /tmp/x` in one pod is not seen in another), `/run` is the pod's own (the
/// machine's is not a container's), and its `serviceaccount` files appear under
/// `/var/run/secrets/kubernetes.io/serviceaccount`, as the kubelet mounts them.
///
/// `user`, when given, is who the command runs as: with its groups set to its gid
/// alone, no capabilities (a change from uid 0 clears them) and `no_new_privs`, so no
/// setuid program takes it back to root. See [`crate::kubelet::identity`].
pub fn exec_in(
    netns_name: &str,
    pod: Option<&Path>,
    user: Option<Identity>,
    argv: &[String],
) -> Result<Infallible, ExecError> {
    let Some(program) = argv.first() else {
        return Err(ExecError::NoCommand);
    };
    let etc_files = enter(netns_name)?;
    if let Some(dir) = pod {
        pod_view(dir, &etc_files)?;
    }
    if let Some(who) = user {
        become_user(who)?;
    }
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .doing(|| "an argument contains a NUL byte".into())?;
    let errno = nix::unistd::execvp(&args[0], &args).unwrap_err();
    Err(ExecError::Run {
        program: program.clone(),
        errno,
    })
}

/// Enters the namespace with a private mount namespace that shows it: its `/sys`,
/// its `/etc/netns/<name>/*` files over `/etc`. Returns those files.
fn enter(netns_name: &str) -> Result<Vec<std::path::PathBuf>, ExecError> {
    let file = File::open(netns::netns_path(netns_name))
        .doing(|| format!("open network namespace {netns_name}"))?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .doing(|| format!("enter network namespace {netns_name}"))?;
    // A pod's hostname (nodes have none of their own: they show the machine's).
    if let Ok(uts) = File::open(netns::uts_path(netns_name)) {
        setns(&uts, CloneFlags::CLONE_NEWUTS)
            .doing(|| format!("enter the UTS namespace of {netns_name}"))?;
    }
    unshare(CloneFlags::CLONE_NEWNS).doing(|| "unshare the mount namespace".into())?;
    // Keep our mounts from propagating back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .doing(|| "make / a slave mount".into())?;
    // /sys shows the interfaces of the namespace that mounted it.
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        mount(
            Some(netns_name),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .doing(|| "mount /sys for the namespace".into())?;
    }
    let etc = Path::new(netns::ETC_NETNS_DIR).join(netns_name);
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&etc)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    for file in &files {
        if let Some(name) = file.file_name() {
            bind(file, &Path::new("/etc").join(name))?;
        }
    }
    Ok(files)
}

fn bind(from: &Path, to: &Path) -> Result<(), ExecError> {
    mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .doing(|| format!("bind {} over {}", from.display(), to.display()))
}

/// A pod's `/tmp`, `/run` and ServiceAccount files (see [`exec_in`]); `etc_files`
/// are the namespace's files bound over `/etc`.
fn pod_view(dir: &Path, etc_files: &[std::path::PathBuf]) -> Result<(), ExecError> {
    let tmp = dir.join("tmp");
    if tmp.is_dir() {
        bind(&tmp, Path::new("/tmp"))?;
        // A working directory under /tmp is hidden now: tools that go back to $PWD by
        // name would fail, so start from / as a container does.
        if std::env::current_dir().is_ok_and(|d| d.starts_with("/tmp")) {
            std::env::set_current_dir("/").doing(|| "change to /".into())?;
            std::env::set_var("PWD", "/");
        }
    }
    // Read before the machine's /run (where the pod's directory is) is covered.
    let secrets: Vec<(std::ffi::OsString, Vec<u8>)> = std::fs::read_dir(dir.join("serviceaccount"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name(), std::fs::read(e.path()).ok()?)))
        .collect();
    let run = Path::new("/run");
    // The pod's files bound over /etc where /etc links into /run (a resolv.conf kept
    // by systemd-resolved) are written again into the pod's /run.
    let linked: Vec<(std::path::PathBuf, Vec<u8>)> = etc_files
        .iter()
        .filter_map(|f| {
            let at = std::fs::canonicalize(Path::new("/etc").join(f.file_name()?)).ok()?;
            at.starts_with(run)
                .then(|| Some((at, std::fs::read(f).ok()?)))?
        })
        .collect();
    if std::env::current_dir().is_ok_and(|d| d.starts_with(run)) {
        std::env::set_current_dir("/").doing(|| "change to /".into())?;
        std::env::set_var("PWD", "/");
    }
    mount(
        Some("tmpfs"),
        run,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=1m"),
    )
    .doing(|| "mount the pod's own /run".into())?;
    for (at, bytes) in linked {
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).doing(|| format!("make {}", parent.display()))?;
        }
        std::fs::write(&at, bytes).doing(|| format!("write {}", at.display()))?;
    }
    if secrets.is_empty() {
        return Ok(());
    }
    // /var/run is a link to /run on the machines this runs on.
    let at = Path::new("/run/secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(at).doing(|| format!("make {}", at.display()))?;
    for (name, bytes) in secrets {
        use std::os::unix::fs::OpenOptionsExt;
        let path = at.join(&name);
        // Readable by whoever the container runs as, as the kubelet's defaultMode 0644.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .doing(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

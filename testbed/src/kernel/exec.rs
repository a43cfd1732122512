//! Running a program inside a node's network namespace (`iptables-restore`,
//! `conntrack`, `nft`): the [`NodeExec`] trait, the real [`Nsenter`], and a
//! [`Recorder`] that keeps what it was asked and answers as told.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;

/// Why a command did not succeed, as a caller can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The program (or `nsenter`) is not installed.
    #[error("cannot run {program}: it is not installed")]
    Missing { program: String },
    #[error("cannot run {program}: {message}")]
    Start { program: String, message: String },
    /// It ran and failed: what the kernel (or the program) refused.
    #[error("{program} {args} failed ({status}): {stderr}")]
    Failed {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
}

/// Runs programs in one node's network namespace.
#[async_trait::async_trait]
pub trait NodeExec: Send + Sync {
    /// Runs `program args`, feeding it `stdin`: its stdout.
    async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, CommandError>;

    /// Writes an nf_tables transaction (an `nft -f` text) in one commit: by default
    /// by running `nft -f -`.
    async fn nft(&self, text: &str) -> Result<String, CommandError> {
        self.run("nft", &["-f", "-"], Some(text)).await
    }
}

/// Whether `TESTBED_NFT_WRITER=nft` asks for the `nft` binary instead of our netlink
/// writer (to compare them, or to rule ours out).
fn nft_binary() -> bool {
    std::env::var("TESTBED_NFT_WRITER").is_ok_and(|v| v == "nft")
}

/// The real one: `nsenter --net=<the namespace's mount> -- program args`. A command
/// without a `pre_exec` hook is started with posix_spawn, so this process (large with
/// many Services) is not forked.
#[derive(Debug, Clone)]
pub struct Nsenter {
    pub netns: PathBuf,
}

#[async_trait::async_trait]
impl NodeExec for Nsenter {
    async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, CommandError> {
        let mut cmd = tokio::process::Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let start = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => CommandError::Missing {
                program: "nsenter".into(),
            },
            _ => CommandError::Start {
                program: program.into(),
                message: e.to_string(),
            },
        };
        let mut child = cmd.spawn().map_err(start)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .map_err(|e| CommandError::Start {
                    program: program.into(),
                    message: format!("write its input: {e}"),
                })?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(start)?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // nsenter's own complaint when it cannot exec the program (exit 127).
        if out.status.code() == Some(127) && stderr.contains("No such file") {
            return Err(CommandError::Missing {
                program: program.into(),
            });
        }
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(CommandError::Failed {
                program: program.into(),
                args: args.join(" "),
                status: out.status.to_string(),
                stderr,
            })
        }
    }

    async fn nft(&self, text: &str) -> Result<String, CommandError> {
        if nft_binary() {
            return self.run("nft", &["-f", "-"], Some(text)).await;
        }
        self.nft_netlink(text).await
    }
}

impl Nsenter {
    /// The transaction written over netlink ([`super::nft`]), on a blocking thread.
    async fn nft_netlink(&self, text: &str) -> Result<String, CommandError> {
        let failed = |stderr: String| CommandError::Failed {
            program: "nf_tables".into(),
            args: "(netlink batch)".into(),
            status: "refused".into(),
            stderr,
        };
        let tx = super::nft::compile(text).map_err(failed)?;
        let netns = self.netns.clone();
        tokio::task::spawn_blocking(move || super::nft::socket::apply(&netns, &tx))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(failed)?;
        Ok(String::new())
    }
}

/// One command a [`Recorder`] was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub program: String,
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

type Answer = dyn Fn(&Call) -> Result<String, CommandError> + Send + Sync;

/// A fake that records every call and answers through a function (success with no
/// output unless told otherwise).
#[derive(Clone)]
pub struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    answer: Arc<Answer>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::answering(|_| Ok(String::new()))
    }
}

impl Recorder {
    pub fn answering(
        answer: impl Fn(&Call) -> Result<String, CommandError> + Send + Sync + 'static,
    ) -> Self {
        Recorder {
            calls: Arc::default(),
            answer: Arc::new(answer),
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// Forgets the calls so far.
    pub fn clear(&self) {
        self.calls.lock().expect("calls lock").clear();
    }
}

#[async_trait::async_trait]
impl NodeExec for Recorder {
    async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, CommandError> {
        let call = Call {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: stdin.map(String::from),
        };
        let answer = (self.answer)(&call);
        self.calls.lock().expect("calls lock").push(call);
        answer
    }
}

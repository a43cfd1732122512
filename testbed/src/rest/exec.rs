//! `pods/exec` over WebSocket (`v5.channel.k8s.io`, and `v4`): the command runs
//! inside the pod as its container runs (the container's user and environment),
//! through `testbed exec`, as the kubelet starts containers. Each binary message
//! starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the final Status, 4 a
//! terminal resize, 255 (v5) "this channel is closed". With `tty=true` the command
//! gets a pseudo-terminal (stderr joins stdout, as with a container's terminal).
//! SPDY (what kubectl before 1.30 speaks) is refused with a message naming it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role};
use tokio_tungstenite::WebSocketStream;

use super::handler::{full, ResourcePath};
use super::status::{self, Refusal, Target};
use super::{Body, Door};
use crate::api::{Key, Kind, Object};
use crate::kubelet::{env, identity};

/// The subprotocols spoken, preferred first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// What an exec asks for, from its query (`command` repeats, one per argument).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub tty: bool,
}

impl Options {
    pub fn parse(query: Option<&str>) -> Options {
        let mut o = Options::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = super::handler::decode(v, true);
            let yes = v == "true" || v == "1";
            match k {
                "command" => o.command.push(v),
                "container" if !v.is_empty() => o.container = Some(v),
                "stdin" => o.stdin = yes,
                "tty" => o.tty = yes,
                _ => {}
            }
        }
        o
    }
}

/// The subprotocol to answer with: the first of the client's that is spoken here.
fn choose(offered: &str) -> Option<&'static str> {
    offered
        .split(',')
        .map(str::trim)
        .find_map(|p| PROTOCOLS.iter().find(|&&s| s == p).copied())
}

/// The final Status on channel 3, as the kubelet words it.
pub fn exit_status(argv: &[String], code: Option<i32>) -> Value {
    match code {
        Some(0) => json!({ "metadata": {}, "status": "Success" }),
        Some(n) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {argv:?}, exit code {n}"),
            "reason": "NonZeroExitCode",
            "details": { "causes": [ { "reason": "ExitCode", "message": n.to_string() } ] },
        }),
        None => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command {argv:?} was killed by a signal"),
            "reason": "InternalError",
        }),
    }
}

pub fn exec(
    door: &Arc<Door>,
    req: Request<Incoming>,
    t: &ResourcePath,
    name: &str,
) -> Result<Response<Body>, Refusal> {
    let opts = Options::parse(req.uri().query());
    let mut run = prepare(door, t, name, &opts)?;
    let (protocol, accept) = handshake(&req)?;
    run.v5 = protocol.starts_with("v5");
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                let ws = WebSocketStream::from_raw_socket(
                    hyper_util::rt::TokioIo::new(up),
                    Role::Server,
                    None,
                )
                .await;
                run.serve(ws).await;
            }
            Err(e) => tracing::warn!("exec: the upgrade failed: {e}"),
        }
    });
    let mut r = full(StatusCode::SWITCHING_PROTOCOLS, "application/json", "");
    let h = r.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a header value"),
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    Ok(r)
}

/// The process an exec runs: the pod and container it names, who runs it, how.
fn prepare(door: &Door, t: &ResourcePath, name: &str, opts: &Options) -> Result<Run, Refusal> {
    let target = Target {
        plural: "pods",
        group: "",
        kind: "Pod",
        name,
    };
    let ns = t.namespace.as_deref().unwrap_or("default");
    let Some(Object::Pod(pod)) = door.api.store.get(&Key::new(Kind::Pod, ns, name)) else {
        return Err(status::not_found(&target));
    };
    if opts.command.is_empty() {
        return Err(status::bad_request("you must specify at least 1 command"));
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let container = match &opts.container {
        Some(c) => spec
            .containers
            .iter()
            .find(|x| &x.name == c)
            .ok_or_else(|| {
                status::bad_request(format!("container {c} is not valid for pod {name}"))
            })?,
        None => spec
            .containers
            .first()
            .ok_or_else(|| status::bad_request(format!("pod {name} has no containers")))?,
    };
    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
        return Err(status::bad_request(format!(
            "pod {name} is not running: cannot exec into a container in a pod that is not running"
        )));
    }
    let who = identity::of(&spec, Some(container), door.owner_uid).map_err(|e| {
        status::forbidden(format!("cannot run in container {}: {e}", container.name))
    })?;
    let mut argv = vec![
        "exec".to_string(),
        "-t".into(),
        door.testbed.clone(),
        "--user".into(),
        who.arg(),
        format!("{ns}/{name}"),
        "--".into(),
    ];
    argv.extend(opts.command.iter().cloned());
    Ok(Run {
        exe: door.exe.clone(),
        argv,
        command: opts.command.clone(),
        env: env::container(container, who.uid, Some(door.accounts.service_ip))
            .into_iter()
            .chain(opts.tty.then(|| ("TERM".to_string(), "xterm".to_string())))
            .collect(),
        stdin: opts.stdin,
        tty: opts.tty,
        v5: false,
    })
}

/// The WebSocket upgrade asked for: the subprotocol chosen and the accept key.
fn handshake(req: &Request<Incoming>) -> Result<(&'static str, String), Refusal> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|u| u.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if upgrade != "websocket" {
        return Err(status::bad_request(format!(
            "this server runs exec over WebSocket (v5.channel.k8s.io, v4.channel.k8s.io), not {:?}: use kubectl 1.30 or newer",
            if upgrade.is_empty() { "a plain request" } else { &upgrade }
        )));
    }
    let offered = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|p| p.to_str().ok())
        .unwrap_or("");
    let protocol = choose(offered).ok_or_else(|| {
        status::bad_request(format!(
            "none of the subprotocols {offered:?} is spoken here: {}",
            PROTOCOLS.join(", ")
        ))
    })?;
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| status::bad_request("a WebSocket upgrade needs Sec-WebSocket-Key"))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok((protocol, accept))
}

/// One exec's process and how it talks.
struct Run {
    exe: std::path::PathBuf,
    argv: Vec<String>,
    command: Vec<String>,
    env: Vec<(String, String)>,
    stdin: bool,
    tty: bool,
    v5: bool,
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Copies a reader's bytes to the WebSocket as messages on `channel`.
fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    channel: u8,
    to: mpsc::Sender<Message>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.send(frame(channel, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// A terminal size from a resize message (`{"Width": 80, "Height": 24}`).
fn set_size(fd: &OwnedFd, msg: &[u8]) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    if let Ok(s) = serde_json::from_slice::<Size>(msg) {
        let ws = libc::winsize {
            ws_row: s.height,
            ws_col: s.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        unsafe {
            libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

impl Run {
    async fn serve<S>(self, ws: WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, incoming) = ws.split();
        let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
            // A normal closure: the client reads it as the end of every stream.
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                })))
                .await;
            let _ = sink.close().await;
        });
        let Spawned {
            mut child,
            pty,
            input,
            pumps,
        } = match self.spawn(&out_tx) {
            Ok(s) => s,
            Err(e) => {
                let st = json!({ "metadata": {}, "status": "Failure",
                    "message": format!("cannot start {:?}: {e}", self.command), "reason": "InternalError" });
                let _ = out_tx.send(frame(ERROR, st.to_string().as_bytes())).await;
                drop(out_tx);
                let _ = writer.await;
                return;
            }
        };
        let status = tokio::select! {
            s = child.wait() => s.ok(),
            _ = read_client(incoming, input, pty.as_ref(), self.v5) => None,
        };
        let code = status.and_then(|s| s.code());
        if status.is_none() {
            // The client went away: the command is stopped.
            let _ = child.kill().await;
        }
        // What the command wrote before it ended goes out before the Status.
        drop(pty);
        for mut p in pumps {
            if tokio::time::timeout(std::time::Duration::from_secs(2), &mut p)
                .await
                .is_err()
            {
                p.abort();
            }
        }
        let st = exit_status(&self.command, code);
        let _ = out_tx.send(frame(ERROR, st.to_string().as_bytes())).await;
        drop(out_tx);
        let _ = writer.await;
    }

    /// Starts the command, on a new terminal or on pipes, with its output pumped
    /// to the client.
    fn spawn(&self, out: &mpsc::Sender<Message>) -> std::io::Result<Spawned> {
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(&self.argv)
            .env_clear()
            .envs(self.env.clone())
            .kill_on_drop(true);
        if !self.tty {
            cmd.stdin(if self.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let mut child = cmd.spawn()?;
            let pumps = vec![
                pump(child.stdout.take().expect("piped"), STDOUT, out.clone()),
                pump(child.stderr.take().expect("piped"), STDERR, out.clone()),
            ];
            let input = child
                .stdin
                .take()
                .map(|i| Box::new(i) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>);
            return Ok(Spawned {
                child,
                pty: None,
                input,
                pumps,
            });
        }
        let p = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
        let slave = p.slave;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // The command holds the terminal's other end now; ours must go, or reading
        // the terminal would never see the command's end.
        drop(cmd);
        let master = p.master;
        let file = |fd: &OwnedFd| -> std::io::Result<tokio::fs::File> {
            Ok(tokio::fs::File::from_std(std::fs::File::from(
                fd.try_clone()?,
            )))
        };
        let pumps = vec![pump(file(&master)?, STDOUT, out.clone())];
        let input = if self.stdin {
            Some(Box::new(file(&master)?) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>)
        } else {
            None
        };
        Ok(Spawned {
            child,
            pty: Some(master),
            input,
            pumps,
        })
    }
}

/// A started exec: the process, its terminal, its input, its output pumps.
struct Spawned {
    child: tokio::process::Child,
    pty: Option<OwnedFd>,
    input: Option<Box<dyn tokio::io::AsyncWrite + Unpin + Send>>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

/// The client's messages: stdin, resizes, and (v5) the close of stdin; returns when
/// the client goes away.
async fn read_client<S>(
    mut incoming: futures::stream::SplitStream<WebSocketStream<S>>,
    mut input: Option<Box<dyn tokio::io::AsyncWrite + Unpin + Send>>,
    pty: Option<&OwnedFd>,
    v5: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(m)) = incoming.next().await {
        let data = match m {
            Message::Binary(b) => b.to_vec(),
            Message::Close(_) => return,
            _ => continue,
        };
        match data.split_first() {
            Some((&STDIN, rest)) => {
                if let Some(i) = input.as_mut() {
                    if i.write_all(rest).await.is_err() {
                        input = None;
                    }
                }
            }
            Some((&RESIZE, rest)) => {
                if let Some(fd) = pty {
                    set_size(fd, rest);
                }
            }
            Some((&CLOSE, [STDIN, ..])) if v5 => {
                // The command sees the end of its input (^D on a terminal).
                if pty.is_none() {
                    input = None;
                } else if let Some(i) = input.as_mut() {
                    let _ = i.write_all(&[4]).await;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_gives_the_command_word_by_word() {
        let o = Options::parse(Some(
            "command=dig&command=%2Bshort&command=web&container=web&stdin=true&stdout=true&tty=false",
        ));
        assert_eq!(o.command, ["dig", "+short", "web"]);
        assert_eq!(o.container.as_deref(), Some("web"));
        assert!(o.stdin && !o.tty);
    }

    #[test]
    fn v5_is_preferred_and_spdy_is_not_spoken() {
        assert_eq!(
            choose("v4.channel.k8s.io, v5.channel.k8s.io"),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            choose("v5.channel.k8s.io,v4.channel.k8s.io"),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(choose("channel.k8s.io, SPDY/3.1"), None);
    }

    #[test]
    fn a_non_zero_exit_is_reported_with_its_code() {
        let argv = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let v = exit_status(&argv, Some(3));
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(&argv, Some(0))["status"], "Success");
    }
}

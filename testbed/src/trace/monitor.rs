//! The kernel side of a trace: in every node, a table of our own (`ip
//! testbed-trace`) whose chain at prerouting priority -400 (before conntrack and
//! every kube-proxy chain) sets `meta nftrace` on the traced pod's packets, and an
//! `nft monitor trace` that prints every chain and rule they pass. The table is
//! deleted and the monitors stopped when the trace ends, also when it fails.
//!
//! A monitor is known to be listening once it has printed a marker packet (a UDP
//! packet to 127.0.0.1:9 in the node, traced by the table's output chain); a second
//! marker at the end tells that every earlier event has been read.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::kernel::exec::{NodeExec, Nsenter};

/// Our table's name; kube-proxy's tables are never touched.
pub const TABLE: &str = "testbed-trace";
/// The marker packets' port (discard).
const MARKER_PORT: u16 = 9;
/// How long a monitor gets to show a marker.
const MARKER_WAIT: Duration = Duration::from_secs(10);

/// The nft text of the table that traces packets from `sources`; it first deletes a
/// table left by a trace that was killed.
pub fn table_text(sources: &[Ipv4Addr]) -> String {
    let set: Vec<String> = sources.iter().map(|a| a.to_string()).collect();
    format!(
        "add table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\
         \tchain pre {{\n\t\ttype filter hook prerouting priority -400; policy accept;\n\
         \t\tip saddr {{ {} }} meta nftrace set 1\n\t}}\n\
         \tchain out {{\n\t\ttype filter hook output priority -400; policy accept;\n\
         \t\tip daddr 127.0.0.1 udp dport {MARKER_PORT} meta nftrace set 1\n\t}}\n}}\n",
        set.join(", ")
    )
}

/// One node's monitor: the lines it printed so far.
struct Watch {
    node: String,
    netns: String,
    exec: Nsenter,
    lines: Arc<Mutex<Vec<String>>>,
    child: Option<tokio::process::Child>,
}

impl Watch {
    fn markers(&self) -> usize {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(&format!(" {TABLE} out packet:")))
            .count()
    }
}

/// The monitors of every node, and their tables; [`Tracing::finish`] removes them
/// (and dropping it does too, should the trace end early).
pub struct Tracing {
    watches: Vec<Watch>,
}

/// What each node's monitor printed.
pub struct Printed {
    /// `(node, lines)`, in the order the nodes were given.
    pub nodes: Vec<(String, String)>,
}

impl Tracing {
    /// Adds the table to each of `nodes` (`(name, netns)`) and starts its monitor;
    /// returns once every monitor has shown a marker.
    pub async fn start(
        nodes: &[(String, String)],
        sources: &[Ipv4Addr],
    ) -> Result<Tracing, String> {
        let mut t = Tracing {
            watches: Vec::new(),
        };
        for (node, netns) in nodes {
            let exec = Nsenter {
                netns: crate::netns::netns_path(netns),
            };
            exec.run("nft", &["-f", "-"], Some(&table_text(sources)))
                .await
                .map_err(|e| format!("cannot add the trace table in {node}: {e}"))?;
            // Kept before the monitor starts, so a failure below still removes the table.
            t.watches.push(Watch {
                node: node.clone(),
                netns: netns.clone(),
                exec,
                lines: Arc::default(),
                child: None,
            });
            let w = t.watches.last_mut().expect("just pushed");
            let child = spawn_monitor(&w.exec.netns, w.lines.clone())
                .map_err(|e| format!("cannot run `nft monitor trace` in {node}: {e}"))?;
            w.child = Some(child);
        }
        for w in &t.watches {
            wait_marker(w, 0).await?;
        }
        Ok(t)
    }

    /// Waits until every monitor has read all it was sent, stops the monitors and
    /// removes the tables.
    pub async fn finish(mut self) -> Result<Printed, String> {
        for w in &self.watches {
            let seen = w.markers();
            wait_marker(w, seen).await?;
        }
        let mut nodes = Vec::new();
        let mut errors = Vec::new();
        for w in &mut self.watches {
            if let Some(mut c) = w.child.take() {
                let _ = c.kill().await;
            }
            if let Err(e) = w
                .exec
                .run("nft", &["delete", "table", "ip", TABLE], None)
                .await
            {
                errors.push(format!("{}: {e}", w.node));
            }
            nodes.push((w.node.clone(), w.lines.lock().unwrap().join("\n")));
        }
        self.watches.clear();
        if !errors.is_empty() {
            return Err(format!(
                "cannot remove the trace table: {}",
                errors.join("; ")
            ));
        }
        Ok(Printed { nodes })
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        for w in &mut self.watches {
            if let Some(c) = w.child.as_mut() {
                let _ = c.start_kill();
            }
            let _ = std::process::Command::new("nsenter")
                .arg(format!("--net={}", w.exec.netns.display()))
                .args(["--", "nft", "delete", "table", "ip", TABLE])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn spawn_monitor(
    netns: &std::path::Path,
    lines: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<tokio::process::Child> {
    let mut child = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "nft", "monitor", "trace"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let out = child.stdout.take().expect("piped");
    tokio::spawn(async move {
        let mut reader = BufReader::new(out).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let mut l = lines.lock().unwrap();
            // A trace prints tens of lines; a runaway one stays bounded.
            if l.len() < 100_000 {
                l.push(line);
            }
        }
    });
    Ok(child)
}

/// Sends marker packets in `w`'s node until its monitor shows more than `seen`.
async fn wait_marker(w: &Watch, seen: usize) -> Result<(), String> {
    let deadline = Instant::now() + MARKER_WAIT;
    let socket = crate::netns::run_in(&w.netns, || std::net::UdpSocket::bind("127.0.0.1:0"))
        .map_err(|e| format!("cannot open a socket in {}: {e}", w.node))?;
    while w.markers() <= seen {
        if Instant::now() >= deadline {
            return Err(format!(
                "`nft monitor trace` in {} showed nothing within {MARKER_WAIT:?}",
                w.node
            ));
        }
        let _ = socket.send_to(b"testbed-trace", ("127.0.0.1", MARKER_PORT));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_replaces_a_stale_one_and_traces_only_the_sources() {
        let t = super::table_text(&["10.244.1.2".parse().unwrap(), "172.18.0.2".parse().unwrap()]);
        assert!(t.starts_with("add table ip testbed-trace\ndelete table ip testbed-trace\n"));
        assert!(t.contains("ip saddr { 10.244.1.2, 172.18.0.2 } meta nftrace set 1"));
        assert!(t.contains("hook prerouting priority -400"));
    }
}

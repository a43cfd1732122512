//! A testbed of `scenarios/two-nodes.yaml` driven through the CLI, as a user would.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// A testbed of `scenarios/two-nodes.yaml`, brought down when dropped.
pub struct Running(pub String);

impl Running {
    pub fn up(what: &str) -> Running {
        Running::up_scenario(what, "two-nodes.yaml")
    }

    /// A testbed of `scenarios/two-nodes.yaml` whose kube-proxies run in `mode`.
    #[allow(dead_code)]
    pub fn up_in_mode(what: &str, mode: &str) -> Running {
        let text = std::fs::read_to_string(repo().join("scenarios/two-nodes.yaml")).unwrap();
        let text = text.replacen(
            "  nodes: 2\n",
            &format!("  nodes: 2\n  kubeProxy: {{mode: {mode}}}\n"),
            1,
        );
        Running::up_text(what, &text)
    }

    /// A testbed of `scenarios/<scenario>`.
    pub fn up_scenario(what: &str, scenario: &str) -> Running {
        let name = unique_name(what);
        let file = repo().join("scenarios").join(scenario);
        run(testbed_bin().args(["up", &file.display().to_string(), "--name", &name]));
        Running(name)
    }

    /// A testbed of a scenario written here (`text`).
    #[allow(dead_code)]
    pub fn up_text(what: &str, text: &str) -> Running {
        let name = unique_name(what);
        let file = std::env::temp_dir().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
        let up = testbed_bin()
            .args(["up", &file.display().to_string(), "--name", &name])
            .output();
        std::fs::remove_file(&file).unwrap();
        let up = up.unwrap();
        assert!(
            up.status.success(),
            "testbed up: {}",
            String::from_utf8_lossy(&up.stderr)
        );
        Running(name)
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        testbed_bin()
            .args(args)
            .args(["-t", &self.0])
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "testbed {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn apply(&self, manifest: &str) -> String {
        let f = repo().join("scenarios/manifests").join(manifest);
        self.ok(&["apply", "-f", &f.display().to_string()])
    }

    pub fn exec(&self, target: &str, cmd: &[&str]) -> Output {
        testbed_bin()
            .args(["exec", "-t", &self.0, target, "--"])
            .args(cmd)
            .output()
            .unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Like [`Running::json`], but an object that is not there yet is `None` (the
    /// endpoints controller writes a Service's endpoints a moment after the apply).
    pub fn json_if_found(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.cli(&a);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("not found") {
            return None;
        }
        assert!(out.status.success(), "testbed {a:?}: {stderr}");
        Some(serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn cluster_ip(&self, svc: &str) -> String {
        self.json(&["get", "svc", svc])["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The ready addresses of a Service's endpoints (`NAME` or `NAMESPACE/NAME`);
    /// none while its Endpoints object is not written yet.
    pub fn ready(&self, svc: &str) -> Vec<String> {
        let ep = match svc.split_once('/') {
            Some((ns, name)) => self.json_if_found(&["get", "endpoints", name, "-n", ns]),
            None => self.json_if_found(&["get", "endpoints", svc]),
        };
        let Some(ep) = ep else {
            return Vec::new();
        };
        let mut out: Vec<String> = ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
            .map(|a| a["ip"].as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    /// Waits until `svc` has `n` ready addresses and every node's rules are in sync.
    pub fn wait_ready(&self, svc: &str, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let ready = self.ready(svc);
            if ready.len() == n && self.in_sync() {
                return ready;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{svc} has {ready:?}, waited for {n}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every node's rules reflect the store as it is now.
    pub fn wait_synced(&self) {
        let start = Instant::now();
        while !self.in_sync() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the nodes did not sync in 30 s: {}",
                self.ok(&["get", "nodes"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn in_sync(&self) -> bool {
        let nodes = self.json(&["get", "nodes"]);
        nodes.as_array().unwrap().iter().all(|n| {
            n["last_error"].is_null()
                && n["synced_revision"].as_u64() >= n["store_revision"].as_u64()
        })
    }

    /// kube-proxy's rules in node `node`, as its mode shows them: `nft list table ip
    /// kube-proxy` in nftables mode, else `iptables-save -t nat`.
    pub fn rules(&self, node: &str, mode: &str) -> String {
        let cmd: &[&str] = match mode {
            "nftables" => &["nft", "list", "table", "ip", "kube-proxy"],
            _ => &["iptables-save", "-t", "nat"],
        };
        let out = self.exec(&format!("node/{node}"), cmd);
        assert!(out.status.success(), "{cmd:?} in {node}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Pod name -> IP, for the pods of the Deployment `deployment`.
    pub fn pods(&self, deployment: &str) -> BTreeMap<String, String> {
        let list = self.json(&["get", "pods"]);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            // Owned by the Deployment's ReplicaSet, `<deployment>-<pod-template-hash>`.
            .filter(|p| {
                let hash = p["metadata"]["labels"]["pod-template-hash"].as_str();
                let owner = &p["metadata"]["ownerReferences"][0];
                owner["kind"] == "ReplicaSet"
                    && hash.is_some_and(|h| owner["name"] == format!("{deployment}-{h}"))
            })
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["status"]["podIP"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    /// Who answers `GET /hostname` on `url` from `client`, `n` times.
    pub fn answers(&self, client: &str, url: &str, n: usize) -> BTreeMap<String, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let out = self.exec(client, &["curl", "-sS", "-m", "3", url]);
            assert!(
                out.status.success(),
                "curl {url}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            *seen
                .entry(String::from_utf8_lossy(&out.stdout).trim().to_string())
                .or_default() += 1;
        }
        seen
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = testbed_bin().args(["down", &self.0]).output();
    }
}

/// Writes `text` as a manifest for `tb` and applies it.
#[allow(dead_code)]
pub fn apply(tb: &Running, name: &str, text: &str) -> String {
    let file = std::env::temp_dir().join(format!("{}-{name}.yaml", tb.0));
    std::fs::write(&file, text).unwrap();
    let out = tb.ok(&["apply", "-f", &file.display().to_string()]);
    std::fs::remove_file(file).unwrap();
    out
}

/// Runs `cmd` in the testbed's underlay namespace: a machine outside the cluster on
/// the node network (the host at 172.18.0.1, as kind's users' machine on its bridge).
#[allow(dead_code)]
pub fn from_outside(tb: &Running, cmd: &[&str]) -> Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", &format!("tb.{}", tb.0)])
        .args(cmd)
        .output()
        .unwrap()
}

/// A command's output, trimmed.
#[allow(dead_code)]
pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

//! The machine's real kubectl, pointed at a testbed with its kubeconfig.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::running::Running;
use super::*;

pub struct Kubectl {
    pub kubeconfig: String,
}

impl Kubectl {
    pub fn for_testbed(tb: &Running) -> Kubectl {
        let out = run(testbed_bin().args(["kubeconfig", &tb.0]));
        Kubectl {
            kubeconfig: out.trim().to_string(),
        }
    }

    /// The API server's address, as the kubeconfig names it (`https://127.0.0.1:PORT`).
    #[allow(dead_code)]
    pub fn server(&self) -> String {
        let config = std::fs::read_to_string(&self.kubeconfig).unwrap();
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap()
            .to_string()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", std::env::temp_dir());
        c
    }

    pub fn out(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("kubectl runs")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.out(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Waits until `f` holds on `kubectl get ARGS -o json`.
    pub fn wait(&self, args: &[&str], what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.json(args);
            if f(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

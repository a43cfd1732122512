//! Whether this kernel has netem (the qdisc behind delay and jitter), read from its
//! configuration before anything is built.

use std::sync::OnceLock;

/// Why delay cannot be had on this kernel, or `None` when it can (or when the
/// kernel's configuration cannot be read, and `tc` will say).
pub fn netem_missing() -> Option<String> {
    static MISSING: OnceLock<Option<String>> = OnceLock::new();
    MISSING
        .get_or_init(|| {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string();
            let config = kernel_config(&release)?;
            missing_from(&config, &release)
        })
        .clone()
}

/// `/boot/config-RELEASE`, or `/proc/config.gz` through `gzip -dc`.
fn kernel_config(release: &str) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(format!("/boot/config-{release}")) {
        return Some(text);
    }
    let out = std::process::Command::new("gzip")
        .args(["-dc", "/proc/config.gz"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why a kernel of this configuration has no netem, or `None`.
pub(super) fn missing_from(config: &str, release: &str) -> Option<String> {
    let has = config
        .lines()
        .any(|l| l == "CONFIG_NET_SCH_NETEM=y" || l == "CONFIG_NET_SCH_NETEM=m");
    (!has).then(|| {
        format!(
            "delay and jitter need the netem qdisc (kernel module sch_netem), and this kernel \
             ({release}) is built without it (CONFIG_NET_SCH_NETEM is not set); loss, \
             partitions and rate limits work without it"
        )
    })
}

//! Who a container's processes run as. Pods share the host's filesystem, so a
//! container that ran as the host's root could read `/etc/shadow` and write any file:
//! processes run as `securityContext.runAsUser`/`runAsGroup` (the container's, else
//! the pod's), by default as `nobody` (65534:65534), with no capabilities and
//! `no_new_privs` (a setuid program such as `sudo` gains nothing). Root (uid 0) is
//! granted only in a testbed whose owner is root: a user who started a testbed
//! through sudo can't get root through anything they apply.
//!
//! Binding ports below 1024 and `ping` need no capability in a pod: its namespace sets
//! `net.ipv4.ip_unprivileged_port_start=0` and `ping_group_range`, as container
//! runtimes do.

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// The user and group of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Who runs a container that asks for no one: `nobody`.
pub const DEFAULT: Identity = Identity {
    uid: 65534,
    gid: 65534,
};

impl Identity {
    /// `UID:GID`, as `testbed exec --user` takes it.
    pub fn arg(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }

    /// Parses `UID` or `UID:GID` (the group defaults to the uid).
    pub fn parse(s: &str) -> Result<Identity, String> {
        let num = |p: &str| {
            p.parse::<u32>()
                .map_err(|_| format!("{s:?} is not UID or UID:GID (numbers)"))
        };
        match s.split_once(':') {
            Some((u, g)) => Ok(Identity {
                uid: num(u)?,
                gid: num(g)?,
            }),
            None => {
                let uid = num(s)?;
                Ok(Identity { uid, gid: uid })
            }
        }
    }
}

/// The identity container `c` of a pod with `spec` runs as, in a testbed owned by
/// `owner_uid`; an error (the pod's status message) when it may not run.
pub fn of(spec: &PodSpec, c: Option<&Container>, owner_uid: u32) -> Result<Identity, String> {
    let pod = spec.security_context.as_ref();
    let own = c.and_then(|c| c.security_context.as_ref());
    let uid = own
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.and_then(|s| s.run_as_user));
    let gid = own
        .and_then(|s| s.run_as_group)
        .or_else(|| pod.and_then(|s| s.run_as_group));
    let non_root = own
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let to_id = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| format!("securityContext.{what}: {v} is not a uid/gid"))
    };
    let uid = match uid {
        Some(u) => to_id(u, "runAsUser")?,
        None => DEFAULT.uid,
    };
    let gid = match gid {
        Some(g) => to_id(g, "runAsGroup")?,
        None if uid == DEFAULT.uid => DEFAULT.gid,
        None => uid,
    };
    if uid == 0 && non_root {
        // The kubelet's own words.
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    if uid == 0 && owner_uid != 0 {
        return Err(format!(
            "runAsUser 0 is refused: this testbed's owner (uid {owner_uid}) is not root, and \
             pods share the host's filesystem"
        ));
    }
    Ok(Identity { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};

    fn spec(uid: Option<i64>, non_root: Option<bool>) -> PodSpec {
        PodSpec {
            security_context: Some(PodSecurityContext {
                run_as_user: uid,
                run_as_non_root: non_root,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn nobody_by_default_the_container_over_the_pod_root_only_for_root() {
        assert_eq!(of(&PodSpec::default(), None, 1000), Ok(DEFAULT));
        assert_eq!(
            of(&spec(Some(1000), None), None, 1000),
            Ok(Identity {
                uid: 1000,
                gid: 1000
            })
        );
        let c = Container {
            security_context: Some(SecurityContext {
                run_as_user: Some(2000),
                run_as_group: Some(3000),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            of(&spec(Some(1000), None), Some(&c), 1000),
            Ok(Identity {
                uid: 2000,
                gid: 3000
            })
        );
        assert!(of(&spec(Some(0), None), None, 1000)
            .unwrap_err()
            .contains("owner (uid 1000) is not root"));
        assert_eq!(of(&spec(Some(0), None), None, 0).map(|i| i.uid), Ok(0));
        assert!(of(&spec(Some(0), Some(true)), None, 0)
            .unwrap_err()
            .contains("runAsNonRoot"));
        assert!(of(&spec(Some(-1), None), None, 0).is_err());
        assert_eq!(Identity::parse("7"), Ok(Identity { uid: 7, gid: 7 }));
        assert_eq!(Identity::parse("7:8"), Ok(Identity { uid: 7, gid: 8 }));
        assert!(Identity::parse("root").is_err());
    }
}

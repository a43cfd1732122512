//! A container's environment as kubelet makes it: its `env` entries with literal
//! values, in order, each able to use the ones before it as `$(NAME)`; and the same
//! `$(NAME)` references expanded in its command and args (kubelet's `expansion`
//! package). `valueFrom` entries are reported as ignored by admission.

use k8s_openapi::api::core::v1::Container;

/// The container's variables, in order, with references to earlier ones expanded.
pub fn of(c: &Container) -> Vec<(String, String)> {
    of_with(c, &[])
}

/// [`of`], where the values may also refer to the variables of `before`.
fn of_with(c: &Container, before: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in c.env.iter().flatten() {
        let Some(value) = &e.value else {
            continue;
        };
        let known: Vec<(String, String)> = before.iter().chain(&out).cloned().collect();
        let value = expand(value, &known);
        out.retain(|(k, _)| k != &e.name);
        out.push((e.name.clone(), value));
    }
    out
}

/// `input` with every `$(NAME)` of a variable in `env` replaced by its value: an
/// unknown `$(NAME)` is left as it is, and `$$` is a literal `$`.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The `kubernetes` Service's variables, as kubelet gives every container (whatever
/// `enableServiceLinks` says): how in-cluster clients find the API server.
pub fn api_service(ip: std::net::Ipv4Addr) -> Vec<(String, String)> {
    let url = format!("tcp://{ip}:443");
    [
        ("KUBERNETES_SERVICE_HOST", ip.to_string()),
        ("KUBERNETES_SERVICE_PORT", "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443".into()),
        ("KUBERNETES_PORT", url.clone()),
        ("KUBERNETES_PORT_443_TCP", url),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".into()),
        ("KUBERNETES_PORT_443_TCP_PORT", "443".into()),
        ("KUBERNETES_PORT_443_TCP_ADDR", ip.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Everything a container's process starts with, as a container runtime and
/// kubelet make it: a `PATH` and `HOME` (the user's, as runc reads it from the
/// passwd file), the `kubernetes` Service's variables when the API serves pods,
/// then the container's own `env`, which may refer to all of them. Nothing of the
/// testbed's own environment (a `KUBECONFIG`, say) leaks in.
pub fn container(
    c: &Container,
    uid: u32,
    api: Option<std::net::Ipv4Addr>,
) -> Vec<(String, String)> {
    let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| "/".to_string(), |u| u.dir.display().to_string());
    let mut base = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOME".into(), home),
    ];
    base.extend(api.map(api_service).into_iter().flatten());
    let own = of_with(c, &base);
    base.retain(|(k, _)| !own.iter().any(|(o, _)| o == k));
    base.extend(own);
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Container {
        let (v, _) = crate::yaml::load(yaml).unwrap();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn variables_use_the_ones_before_them_and_expand_in_commands() {
        let c = container(
            "name: main\nenv:\n- {name: A, value: one}\n- {name: B, value: \"$(A)-two\"}\n- {name: C, value: \"$(LATER) $$(A)\"}\n- {name: LATER, value: x}\n- {name: F, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n",
        );
        let env = of(&c);
        assert_eq!(
            env,
            [
                ("A".to_string(), "one".to_string()),
                ("B".into(), "one-two".into()),
                ("C".into(), "$(LATER) $(A)".into()),
                ("LATER".into(), "x".into()),
            ]
        );
        assert_eq!(
            expand("echo $(B) $(NOPE) $$ $", &env),
            "echo one-two $(NOPE) $ $"
        );
    }
}

//! A container's environment as kubelet makes it: its `env` entries with literal
//! values, in order, each able to use the ones before it as `$(NAME)`; and the same
//! `$(NAME)` references expanded in its command and args (kubelet's `expansion`
//! package). `valueFrom` entries are reported as ignored by admission.

use k8s_openapi::api::core::v1::Container;

/// The container's variables, in order, with references to earlier ones expanded.
pub fn of(c: &Container) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in c.env.iter().flatten() {
        let Some(value) = &e.value else {
            continue;
        };
        let value = expand(value, &out);
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

//! What a step must see (`expect`), checked against the kind of step, and what it
//! saw against that: pure comparisons, each mismatch with the expected and the seen
//! value as a user would write them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Ctx, StepKind, KINDS};
use crate::probe::connect::Outcome;
use crate::probe::dns::Answer;

/// What a `dns`, `connect` or `exec` step must see (all optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// dns: NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...
    pub rcode: Option<String>,
    /// dns: the answer records' data, in any order (`10.96.0.2`, `0 100 80 web.default.svc.cluster.local.`).
    pub answers: Option<Vec<String>>,
    /// dns: the name that was answered, after the search path (`web.default.svc.cluster.local.`).
    pub answered: Option<String>,
    /// connect: exactly these pods answered (names; any order).
    pub backends: Option<Vec<String>>,
    /// connect: this many different pods answered.
    pub backend_count: Option<u32>,
    /// connect: this many connections got an answer.
    pub ok: Option<u32>,
    /// connect: every connection failed this way: `refused`, `reset`, `timeout`, `unreachable`.
    pub error: Option<String>,
    /// exec: the exit code.
    pub exit_code: Option<i32>,
    /// exec: the whole standard output (trailing newlines aside).
    pub stdout: Option<String>,
    /// exec: text the standard output contains.
    pub contains: Option<String>,
    /// stop: how many requests failed: `0`, `<= 3`, `>= 1`.
    pub failures: Option<Count>,
    /// stop: after each named step (its name or number) ended, only these pods
    /// answered: `{web-1-gone: [web-2]}`.
    pub backends_after: Option<BTreeMap<String, Vec<String>>>,
}

/// A count as expected: a number (exactly), or `<= N`, `>= N`, `< N`, `> N`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Count {
    Exactly(u32),
    Compared(String),
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Exactly(n) => write!(f, "{n}"),
            Count::Compared(t) => f.write_str(t.trim()),
        }
    }
}

/// The comparison and number of a count, or why it is not one.
fn count_parts(c: &Count) -> Result<(&'static str, u32), String> {
    let text = match c {
        Count::Exactly(n) => return Ok(("=", *n)),
        Count::Compared(t) => t.trim(),
    };
    let op = ["<=", ">=", "<", ">", "="]
        .into_iter()
        .find(|op| text.starts_with(op))
        .unwrap_or("=");
    text[op.len().min(text.len())..]
        .trim()
        .parse::<u32>()
        .map(|n| (op, n))
        .map_err(|_| format!("{text:?} is not a count like 0, \"<= 3\" or \">= 1\""))
}

/// Whether `n` is as `c` says (a count that does not parse holds for nothing).
pub fn count_holds(c: &Count, n: u32) -> bool {
    match count_parts(c) {
        Ok(("<=", m)) => n <= m,
        Ok((">=", m)) => n >= m,
        Ok(("<", m)) => n < m,
        Ok((">", m)) => n > m,
        Ok((_, m)) => n == m,
        Err(_) => false,
    }
}

/// Checks the `expect` of step `path`, of kind `kind`: every key is one its kind
/// takes, and its values are ones a step can see.
pub(super) fn check(cx: &mut Ctx, path: &str, kind: &StepKind, e: Option<Expect>) -> Expect {
    let Some(e) = e else {
        return Expect::default();
    };
    let at = |key: &str| format!("{path}.expect.{key}");
    let given = [
        ("rcode", e.rcode.is_some()),
        ("answers", e.answers.is_some()),
        ("answered", e.answered.is_some()),
        ("backends", e.backends.is_some()),
        ("backendCount", e.backend_count.is_some()),
        ("ok", e.ok.is_some()),
        ("error", e.error.is_some()),
        ("exitCode", e.exit_code.is_some()),
        ("stdout", e.stdout.is_some()),
        ("contains", e.contains.is_some()),
        ("failures", e.failures.is_some()),
        ("backendsAfter", e.backends_after.is_some()),
    ];
    for (key, present) in given {
        if present && !kind.expects.contains(&key) {
            let owner = KINDS
                .iter()
                .find(|k| k.expects.contains(&key))
                .map_or("no", |k| k.key);
            cx.fail(
                &at(key),
                format!(
                    "{key} is expected of {owner} steps, and this is a {} step",
                    kind.key
                ),
            );
        }
    }
    if let Some(rcode) = &e.rcode {
        if crate::probe::dns::rcode_from_name(rcode).is_none() {
            cx.fail(
                &at("rcode"),
                format!("{rcode:?} is not an rcode like NOERROR, NXDOMAIN, SERVFAIL, REFUSED"),
            );
        }
    }
    if let Some(err) = &e.error {
        if !["refused", "reset", "timeout", "unreachable"].contains(&err.as_str()) {
            cx.fail(
                &at("error"),
                format!("{err:?} is not refused, reset, timeout or unreachable"),
            );
        }
    }
    if let Some(Err(why)) = e.failures.as_ref().map(count_parts) {
        cx.fail(&at("failures"), why);
    }
    Expect {
        rcode: e.rcode.map(|r| r.to_ascii_uppercase()),
        ..e
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The expectation's key: `backends`, `rcode`, ...
    pub what: String,
    pub expected: String,
    pub seen: String,
}

pub fn mismatch(what: &str, expected: impl Into<String>, seen: impl Into<String>) -> Mismatch {
    Mismatch {
        what: what.into(),
        expected: expected.into(),
        seen: seen.into(),
    }
}

/// `[a, b]`, sorted.
pub fn list(items: &[String]) -> String {
    let mut v = items.to_vec();
    v.sort();
    format!("[{}]", v.join(", "))
}

pub fn dns(e: &Expect, a: &Answer) -> Vec<Mismatch> {
    let mut out = Vec::new();
    if let Some(rcode) = &e.rcode {
        if !rcode.eq_ignore_ascii_case(&a.rcode) {
            out.push(mismatch("rcode", rcode, &a.rcode));
        }
    }
    if let Some(answers) = &e.answers {
        let mut want = answers.clone();
        want.sort();
        if want != a.data {
            out.push(mismatch("answers", list(answers), list(&a.data)));
        }
    }
    if let Some(name) = &e.answered {
        let norm = |n: &str| format!("{}.", n.trim_end_matches('.').to_ascii_lowercase());
        if norm(name) != norm(&a.name) {
            out.push(mismatch("answered", name, &a.name));
        }
    }
    out
}

/// How many connections each pod answered, and each kind of failure.
pub fn tally(outcomes: &[Outcome]) -> (BTreeMap<String, u32>, BTreeMap<String, u32>) {
    let mut backends = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for o in outcomes {
        match o {
            Outcome::Answered(pod) => *backends.entry(pod.clone()).or_insert(0) += 1,
            other => *errors.entry(other.error().unwrap_or_default()).or_insert(0) += 1,
        }
    }
    (backends, errors)
}

pub fn connect(e: &Expect, outcomes: &[Outcome]) -> Vec<Mismatch> {
    let (backends, errors) = tally(outcomes);
    let seen: Vec<String> = backends.keys().cloned().collect();
    let answered: u32 = backends.values().sum();
    let mut out = Vec::new();
    if let Some(want) = &e.backends {
        let mut w = want.clone();
        w.sort();
        w.dedup();
        if w != seen {
            out.push(mismatch("backends", list(want), list(&seen)));
        }
    }
    if let Some(n) = e.backend_count {
        if n as usize != seen.len() {
            out.push(mismatch(
                "backendCount",
                n.to_string(),
                format!("{} {}", seen.len(), list(&seen)),
            ));
        }
    }
    if let Some(n) = e.ok {
        if n != answered {
            out.push(mismatch(
                "ok",
                n.to_string(),
                format!("{answered} of {} ({})", outcomes.len(), in_order(outcomes)),
            ));
        }
    }
    if let Some(err) = &e.error {
        let all_this = answered == 0 && errors.len() == 1 && errors.contains_key(err);
        if !all_this {
            out.push(mismatch(
                "error",
                format!("every connection {err}"),
                describe(&backends, &errors),
            ));
        }
    }
    out
}

/// Each connection's outcome in the order made: `web-1, timeout, web-1`.
fn in_order(outcomes: &[Outcome]) -> String {
    let each = outcomes.iter().map(|o| match o {
        Outcome::Answered(pod) => pod.clone(),
        other => other.error().unwrap_or_default(),
    });
    each.collect::<Vec<_>>().join(", ")
}

/// `web-1 ×3, web-2 ×2, refused ×1`.
pub fn describe(backends: &BTreeMap<String, u32>, errors: &BTreeMap<String, u32>) -> String {
    let parts: Vec<String> = backends
        .iter()
        .chain(errors.iter())
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}

/// An exec step: exit code 0 unless `exitCode` says otherwise.
pub fn exec(e: &Expect, code: i32, stdout: &str) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let want = e.exit_code.unwrap_or(0);
    if want != code {
        out.push(mismatch("exitCode", want.to_string(), code.to_string()));
    }
    if let Some(s) = &e.stdout {
        if s.trim_end_matches('\n') != stdout.trim_end_matches('\n') {
            out.push(mismatch("stdout", format!("{s:?}"), format!("{stdout:?}")));
        }
    }
    if let Some(s) = &e.contains {
        if !stdout.contains(s.as_str()) {
            out.push(mismatch(
                "contains",
                format!("{s:?}"),
                format!("{stdout:?}"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(names: &[&str]) -> Vec<Outcome> {
        names
            .iter()
            .map(|n| Outcome::Answered(n.to_string()))
            .collect()
    }

    #[test]
    fn backends_are_a_set() {
        let seen = answered(&["web-2", "web-1", "web-2"]);
        let e = Expect {
            backends: Some(vec!["web-1".into(), "web-2".into()]),
            backend_count: Some(2),
            ok: Some(3),
            ..Default::default()
        };
        assert!(connect(&e, &seen).is_empty());
        let e = Expect {
            backends: Some(vec!["web-1".into(), "web-3".into()]),
            ..Default::default()
        };
        assert_eq!(
            connect(&e, &seen),
            [mismatch("backends", "[web-1, web-3]", "[web-1, web-2]")]
        );
    }

    #[test]
    fn an_error_must_be_every_connections() {
        let e = Expect {
            error: Some("refused".into()),
            ..Default::default()
        };
        assert!(connect(&e, &[Outcome::Refused, Outcome::Refused]).is_empty());
        let mixed = vec![Outcome::Refused, Outcome::Answered("web-1".into())];
        assert_eq!(
            connect(&e, &mixed),
            [mismatch(
                "error",
                "every connection refused",
                "web-1 ×1, refused ×1"
            )]
        );
        assert_eq!(
            connect(
                &Expect {
                    ok: Some(2),
                    ..Default::default()
                },
                &mixed
            ),
            [mismatch("ok", "2", "1 of 2 (refused, web-1)")]
        );
    }

    #[test]
    fn dns_answers_compare_as_sets_and_names_without_case() {
        let a = Answer {
            rcode: "NOERROR".into(),
            name: "web.default.svc.cluster.local.".into(),
            data: vec!["10.244.1.2".into(), "10.244.2.2".into()],
            records: vec![],
            authority: vec![],
            tried: vec![],
            server: "10.96.0.10:53".parse().unwrap(),
            flags: String::new(),
        };
        let e = Expect {
            rcode: Some("NOERROR".into()),
            answers: Some(vec!["10.244.2.2".into(), "10.244.1.2".into()]),
            answered: Some("Web.default.svc.cluster.local".into()),
            ..Default::default()
        };
        assert!(dns(&e, &a).is_empty());
        let e = Expect {
            rcode: Some("NXDOMAIN".into()),
            ..Default::default()
        };
        assert_eq!(dns(&e, &a), [mismatch("rcode", "NXDOMAIN", "NOERROR")]);
    }

    #[test]
    fn exec_expects_success_unless_told() {
        assert!(exec(&Expect::default(), 0, "hi\n").is_empty());
        assert_eq!(
            exec(&Expect::default(), 1, ""),
            [mismatch("exitCode", "0", "1")]
        );
        let e = Expect {
            exit_code: Some(1),
            stdout: Some("hi".into()),
            contains: Some("bye".into()),
            ..Default::default()
        };
        assert_eq!(
            exec(&e, 1, "hi\n"),
            [mismatch("contains", "\"bye\"", "\"hi\\n\"")]
        );
    }
}

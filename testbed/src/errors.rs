//! How the library's errors are told. Each module has typed errors (`thiserror`)
//! that keep their cause as a [`source`](std::error::Error::source), so a caller can
//! tell one cause from another; where an error meets a person (a report, the
//! command line) its chain is written on one line, as `anyhow`'s `{:#}` does.

/// `e` and its sources, joined by `: `.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot start the control plane")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_is_written_on_one_line() {
        let e = Outer(std::io::Error::other("no such file"));
        assert_eq!(
            super::chain(&e),
            "cannot start the control plane: no such file"
        );
    }
}

//! Reading a user's file (a scenario, a manifest, `-` for stdin) with bounds: a size
//! limit, regular files only (`/dev/zero` is not read forever), UTF-8 with the
//! position of the first bad byte, no NUL bytes (YAML forbids them, and a parser that
//! stops at one would silently drop the rest), and a leading byte-order mark dropped
//! as YAML 1.2 says.

use std::io::Read;
use std::path::Path;

/// The largest file read: far above any scenario or manifest a person writes (10,000
/// Services in one manifest are about 2 MiB), far below what hurts the machine.
pub const FILE_MAX_BYTES: u64 = 16 << 20;

/// What is wrong with a file; `line`/`col` (1-based) when it is at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            Some((line, col)) => write!(f, "{line}:{col}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn whole(message: String) -> InputError {
    InputError { at: None, message }
}

/// Reads `path` (`-`: standard input) as text.
pub fn read(path: &Path) -> Result<String, InputError> {
    if path == Path::new("-") {
        return read_from(std::io::stdin().lock(), "standard input");
    }
    let file =
        std::fs::File::open(path).map_err(|e| whole(format!("cannot read the file: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| whole(format!("cannot read the file: {e}")))?;
    if meta.is_dir() {
        return Err(whole("is a directory, not a file".into()));
    }
    if !meta.is_file() {
        return Err(whole(
            "is not a regular file (a device, a socket or a pipe): give a file".into(),
        ));
    }
    if meta.len() > FILE_MAX_BYTES {
        return Err(too_big());
    }
    read_from(file, "the file")
}

fn too_big() -> InputError {
    whole(format!(
        "is larger than {} MiB, the most testbed reads from one file",
        FILE_MAX_BYTES >> 20
    ))
}

/// Reads at most [`FILE_MAX_BYTES`] from `r` and checks the text.
pub fn read_from(r: impl Read, what: &str) -> Result<String, InputError> {
    let mut bytes = Vec::new();
    r.take(FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| whole(format!("cannot read {what}: {e}")))?;
    if bytes.len() as u64 > FILE_MAX_BYTES {
        return Err(too_big());
    }
    text(bytes)
}

/// Checks bytes as the text of a YAML file.
pub fn text(bytes: Vec<u8>) -> Result<String, InputError> {
    let mut s = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        InputError {
            at: Some(position(valid)),
            message: format!(
                "the file is not UTF-8 text: byte 0x{:02x} starts no UTF-8 character",
                e.as_bytes()[valid.len()]
            ),
        }
    })?;
    if let Some(i) = s.find('\0') {
        return Err(InputError {
            at: Some(position(&s.as_bytes()[..i])),
            message: "a NUL byte: YAML text cannot hold one (is this a binary file?)".into(),
        });
    }
    if s.starts_with('\u{feff}') {
        s.drain(..'\u{feff}'.len_utf8());
    }
    Ok(s)
}

/// The line and column (1-based, in characters) just after `before`.
fn position(before: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(before);
    let line = text.matches('\n').count() + 1;
    let col = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bytes_are_named_with_their_place() {
        let e = text(b"name: a\nx: \xff\n".to_vec()).unwrap_err();
        assert_eq!(e.at, Some((2, 4)));
        assert!(e.message.contains("not UTF-8"), "{e}");
        let e = text(b"name: a\ndescription: b\0rest: ignored\n".to_vec()).unwrap_err();
        assert_eq!(e.at, Some((2, 15)));
        assert!(e.message.contains("NUL"), "{e}");
        assert_eq!(text("\u{feff}name: a\n".into()).unwrap(), "name: a\n");
    }

    #[test]
    fn devices_and_big_input_are_refused_without_reading_them() {
        let e = read(Path::new("/dev/zero")).unwrap_err();
        assert!(e.message.contains("not a regular file"), "{e}");
        let e = read(Path::new("/")).unwrap_err();
        assert!(e.message.contains("directory"), "{e}");
        let e = read_from(std::io::repeat(b'a'), "a stream").unwrap_err();
        assert!(e.message.contains("larger than 16 MiB"), "{e}");
    }
}

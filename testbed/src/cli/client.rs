//! Talking to a running testbed's API server: HTTP/1.1 over its local socket, to the
//! same REST API kubectl uses on the HTTPS port (there the kernel vouches for the
//! caller, as the certificate does on the port).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// What `kubectl get` asks for: a Table, else the object.
pub const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
pub const JSON: &str = "application/json";

/// The most of one answer read (a list of every pod of a full testbed is a few MiB).
const MAX_BODY: u64 = 256 << 20;

/// An answer's status, whether its body is chunked, its length and its warnings.
type Head = (u16, bool, Option<u64>, Vec<String>);

pub struct Client {
    testbed: String,
    conn: BufReader<UnixStream>,
}

/// One answer: its status, its `Warning` headers and its JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub warnings: Vec<String>,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A refusal's `Status` reason (`NotFound`, `Invalid`, ...).
    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or_default()
    }

    /// A refusal as kubectl prints it: `Error from server (NotFound): ...`.
    pub fn error(&self) -> anyhow::Error {
        let message = self.body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {}: {}", self.status, self.body));
        match self.reason() {
            "" => anyhow!("{message}"),
            reason => anyhow::Error::new(ServerError(format!(
                "Error from server ({reason}): {message}"
            ))),
        }
    }
}

/// A refusal of the API server, worded as kubectl prints it (and printed so, without
/// the CLI's own `error: `).
#[derive(Debug)]
pub struct ServerError(String);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

/// The request head's method, path and what it sends and accepts.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub accept: &'a str,
    /// The body and its content type.
    pub body: Option<(&'a str, Vec<u8>)>,
}

impl<'a> Call<'a> {
    pub fn get(path: &'a str) -> Call<'a> {
        Call {
            method: "GET",
            path,
            accept: JSON,
            body: None,
        }
    }

    pub fn with(method: &'a str, path: &'a str, content_type: &'a str, body: &Value) -> Call<'a> {
        Call {
            method,
            path,
            accept: JSON,
            body: Some((content_type, body.to_string().into_bytes())),
        }
    }
}

impl Client {
    pub fn connect(testbed: &str) -> Result<Client> {
        let path = crate::state::api_socket(testbed);
        let conn = UnixStream::connect(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                anyhow!(
                    "testbed {testbed} is not running (no API server at {})",
                    path.display()
                )
            }
            std::io::ErrorKind::PermissionDenied => anyhow!(
                "permission denied opening {}: only root and the testbed's owner may use it",
                path.display()
            ),
            _ => anyhow!("connect to {}: {e}", path.display()),
        })?;
        Ok(Client {
            testbed: testbed.into(),
            conn: BufReader::new(conn),
        })
    }

    /// Sends `call` and reads the whole answer. A server that refuses the caller
    /// answers before it reads the body, and may close before it is written: its
    /// answer is read all the same.
    pub fn call(&mut self, call: &Call) -> Result<Reply> {
        let sent = self.send(call);
        let head = match (sent, self.head()) {
            (_, Ok(head)) => head,
            (Err(e), Err(_)) | (Ok(()), Err(e)) => return Err(e),
        };
        self.body(head)
    }

    /// The body after `head`: as long as it says, or its chunks.
    fn body(&mut self, head: Head) -> Result<Reply> {
        let (status, chunked, length, warnings) = head;
        let mut bytes = Vec::new();
        if chunked {
            Chunked::new(&mut self.conn)
                .take(MAX_BODY)
                .read_to_end(&mut bytes)
        } else {
            (&mut self.conn)
                .take(length.unwrap_or(0).min(MAX_BODY))
                .read_to_end(&mut bytes)
        }
        .with_context(|| format!("read an answer from testbed {}", self.testbed))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "testbed {} answered HTTP {status} with no JSON",
                    self.testbed
                )
            })?
        };
        Ok(Reply {
            status,
            warnings,
            body,
        })
    }

    /// Sends a watch and hands each event to `each` as it comes, until the server
    /// ends the stream or `each` says stop. A refusal is the error it carries.
    pub fn watch(
        &mut self,
        call: &Call,
        mut each: impl FnMut(Value) -> Result<bool>,
    ) -> Result<()> {
        self.send(call)?;
        let head = self.head()?;
        if !(200..300).contains(&head.0) || !head.1 {
            return Err(self.body(head)?.error());
        }
        let mut lines = BufReader::new(Chunked::new(&mut self.conn));
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let event: Value = serde_json::from_str(&line).context("a watch event")?;
            if !each(event)? {
                return Ok(());
            }
        }
    }

    fn send(&mut self, call: &Call) -> Result<()> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: testbed\r\nUser-Agent: testbed/{}\r\nAccept: {}\r\n",
            call.method,
            call.path,
            env!("CARGO_PKG_VERSION"),
            call.accept
        );
        let body = match &call.body {
            Some((content_type, body)) => {
                head.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                    body.len()
                ));
                body.as_slice()
            }
            None => &[],
        };
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.conn
            .get_mut()
            .write_all(&request)
            .with_context(|| format!("send a request to testbed {}", self.testbed))
    }

    /// The answer's status line and headers: the status, whether the body is
    /// chunked, its length, and its warnings.
    fn head(&mut self) -> Result<Head> {
        let mut line = String::new();
        let read = |conn: &mut BufReader<UnixStream>, line: &mut String| {
            line.clear();
            conn.by_ref().take(64 << 10).read_line(line)
        };
        if read(&mut self.conn, &mut line)? == 0 {
            bail!("testbed {} closed the connection", self.testbed);
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("testbed {} answered {line:?}", self.testbed))?;
        let (mut chunked, mut length, mut warnings) = (false, None, Vec::new());
        loop {
            if read(&mut self.conn, &mut line)? == 0 {
                bail!("testbed {} closed the connection", self.testbed);
            }
            let l = line.trim_end();
            if l.is_empty() {
                return Ok((status, chunked, length, warnings));
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "content-length" => length = value.parse().ok(),
                "warning" => warnings.push(warning_text(value)),
                _ => {}
            }
        }
    }
}

/// The text of a `Warning: 299 - "text"` header.
fn warning_text(v: &str) -> String {
    let quoted = v.splitn(3, ' ').nth(2).unwrap_or(v);
    serde_json::from_str::<String>(quoted).unwrap_or_else(|_| quoted.to_string())
}

/// A chunked body as one stream of bytes.
struct Chunked<'a, R: BufRead> {
    inner: &'a mut R,
    left: usize,
    done: bool,
}

impl<'a, R: BufRead> Chunked<'a, R> {
    fn new(inner: &'a mut R) -> Self {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Chunked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        while self.left == 0 && !self.done {
            let mut size = String::new();
            self.inner.by_ref().take(1024).read_line(&mut size)?;
            if size.is_empty() {
                return Err(bad("the answer ended inside a chunked body"));
            }
            let size = size.trim_end();
            if size.is_empty() {
                continue; // the CRLF after a chunk's data
            }
            let hex = size.split(';').next().unwrap_or_default().trim();
            self.left = usize::from_str_radix(hex, 16).map_err(|_| bad("a bad chunk size"))?;
            if self.left == 0 {
                self.done = true;
                let mut end = String::new();
                self.inner.read_line(&mut end)?;
            }
        }
        if self.done {
            return Ok(0);
        }
        let n = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..n])?;
        if got == 0 {
            return Err(bad("the answer ended inside a chunk"));
        }
        self.left -= got;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    #[test]
    fn a_chunked_body_reads_as_its_data() {
        let mut wire: &[u8] = b"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\nNEXT";
        let mut out = String::new();
        super::Chunked::new(&mut wire)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello, world");
        assert_eq!(wire, b"NEXT", "the chunked body ends where it says");
    }

    #[test]
    fn a_warning_headers_text_is_unquoted() {
        assert_eq!(
            super::warning_text(r#"299 - "spec.x is accepted but not emulated (ignored)""#),
            "spec.x is accepted but not emulated (ignored)"
        );
    }
}
